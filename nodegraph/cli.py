"""The `nodegraph` command: run, validate, convert and list workflows headless; serve the editor.

Exit codes: 0 success, 1 a node failed at run time (or was interrupted), 2 the workflow or the
command line is invalid. User errors print a readable message, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__, allocator, resources
from . import folders as folder_paths
from .cache import DEFAULT_BUDGET, OutputCache, parse_size
from .errors import NodegraphError, ValidationError, WorkflowError
from .executor import Executor, RunResult
from .launch import startup_done
from .model_paths import ExtraFolder, ModelPathsError, extra_folders_by_kind, read_extra_model_paths
from .registry import NodeRegistry, default_registry
from .validation import validate_prompt
from .workflow import load_document
from .workflow.api_format import Prompt

log = logging.getLogger("nodegraph")

EXIT_OK, EXIT_RUNTIME, EXIT_INVALID = 0, 1, 2


class UsageError(NodegraphError):
    """A command-line mistake (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if log.isEnabledFor(logging.DEBUG):  # describe() reads /proc/self/maps
        log.debug("memory allocator: %s", allocator.describe())
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_INVALID
    try:
        _export_memory_options(args)
        return args.handler(args)
    except ValidationError as exc:
        print(f"error: invalid workflow\n{exc.describe()}", file=sys.stderr)
        return EXIT_INVALID
    except (WorkflowError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_RUNTIME


def _common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Options accepted before and after the command. Only the top level sets defaults: argparse
    would otherwise let a sub-command's defaults overwrite `nodegraph --base-dir X run ...`."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-v", "--verbose", action="store_true", default=default(False), help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False), help="only warnings and errors")
    parser.add_argument("--base-dir", type=Path, default=default(None),
                        help="root of models/, input/, output/, temp/, user/ (default: $NODEGRAPH_HOME or .)")
    parser.add_argument("--models-dir", type=Path, action="append", default=default([]),
                        help="a models folder (e.g. an existing ComfyUI models/); repeatable, searched in order")
    parser.add_argument("--extra-model-paths", type=Path, action="append", default=default([]), metavar="FILE",
                        help="ComfyUI's extra_model_paths.yaml: more model folders (repeatable; only read)")
    parser.add_argument("--input-dir", type=Path, default=default(None))
    parser.add_argument("--output-dir", type=Path, default=default(None), help="where Save Image writes")
    parser.add_argument("--custom-nodes", type=Path, default=default(None), help="a folder of custom node packs")
    memory = parser.add_argument_group("memory and speed (docs/performance.md)")
    memory.add_argument("--weights", choices=["lean", "fp32"], default=default(None),
                        help="lean (default): an fp16 file's weights stay fp16 on the CPU, half the memory; "
                             "fp32: all cast at load")
    memory.add_argument("--no-mmap", action="store_true", default=default(False),
                        help="copy .safetensors weights into memory instead of mapping the file (slower loads; "
                             "a model file overwritten in place while in use then cannot crash the process)")
    memory.add_argument("--ram-budget", default=default(None), metavar="SIZE",
                        help="refuse or tile work whose tensors would exceed this, e.g. 8GB (default: free memory)")
    memory.add_argument("--vram-budget", default=default(None), metavar="SIZE",
                        help="what models may hold on the GPU (default: its memory minus 1.5 GB)")
    memory.add_argument("--lowvram", action="store_true", default=default(False),
                        help="stream model blocks onto the GPU one at a time (4 GB cards)")
    memory.add_argument("--compile", action="store_true", default=default(False),
                        help="torch.compile the UNet (faster steps after 1-2 minutes of compiling per model, "
                             "LoRA set and size; docs/performance.md)")


# The memory options reach the model code (which reads them where it decides) as environment variables,
# so they also hold in processes this one starts.
MEMORY_ENV = {"weights": "NODEGRAPH_WEIGHTS", "ram_budget": "NODEGRAPH_RAM_BUDGET",
              "vram_budget": "NODEGRAPH_VRAM_BUDGET", "lowvram": "NODEGRAPH_LOWVRAM",
              "compile": "NODEGRAPH_COMPILE", "no_mmap": "NODEGRAPH_MMAP"}
# A flag that turns something off exports this value instead of "1".
_OFF_FLAGS = {"no_mmap": "0"}


def _export_memory_options(args: argparse.Namespace) -> None:
    for name, env in MEMORY_ENV.items():
        value = getattr(args, name, None)
        if value in (None, False):
            continue
        if name.endswith("budget"):
            try:
                parse_size(value)
            except ValueError:
                raise UsageError(f"--{name.replace('_', '-')} {value!r}: expected a size such as 8GB") from None
        os.environ[env] = _OFF_FLAGS.get(name, "1") if value is True else str(value)


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)

    parser = argparse.ArgumentParser(prog="nodegraph", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nodegraph {__version__}")
    _common_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run a workflow (UI or API JSON, or a PNG)")
    run.add_argument("workflow", type=Path, nargs="?", help="the workflow file (or --example NAME)")
    run.add_argument("--example", metavar="NAME", default=None,
                     help="run a shipped example workflow instead (txt2img, img2img, lora, ...)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override an input; NODE is a node id or title, VALUE is JSON or text")
    run.add_argument("--target", action="append", default=None, metavar="NODE",
                     help="run only what this node needs (repeatable)")
    run.add_argument("--cache-budget", default=None, metavar="SIZE",
                     help=f"memory for cached outputs, e.g. 4GB (default {DEFAULT_BUDGET // 1024**3}GB)")
    run.add_argument("--no-cache", action="store_true", help="cache nothing (same as --cache-budget 0)")
    run.add_argument("--repeat", type=int, default=1, help="run N times in one process (shows the cache)")
    run.set_defaults(handler=_cmd_run)

    validate = sub.add_parser("validate", parents=[common], help="check a workflow without running it")
    validate.add_argument("workflow", type=Path)
    validate.add_argument("--json", action="store_true", help="print ComfyUI's error JSON")
    validate.set_defaults(handler=_cmd_validate)

    convert = sub.add_parser("convert", parents=[common], help="write the API format of a workflow")
    convert.add_argument("workflow", type=Path)
    convert.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: stdout)")
    convert.set_defaults(handler=_cmd_convert)

    nodes = sub.add_parser("nodes", parents=[common], help="list the available nodes")
    nodes.add_argument("names", nargs="*", help="only these nodes")
    nodes.add_argument("--json", action="store_true", help="ComfyUI's /object_info shape")
    nodes.set_defaults(handler=_cmd_nodes)

    serve = sub.add_parser("serve", parents=[common], help="start the HTTP + websocket server and editor")
    serve.add_argument("--listen", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--auth-token", default=None)
    serve.add_argument("--insecure-no-auth", action="store_true",
                       help="allow a non-loopback bind without a token (not recommended)")
    serve.add_argument("--cache-budget", default=None, metavar="SIZE")
    serve.add_argument("--no-cache", action="store_true")
    serve.add_argument("--max-upload-size", type=float, default=100, help="MB")
    serve.add_argument("--history-size", type=int, default=10000)
    serve.add_argument("--preview-method", choices=["none", "latent2rgb"], default="latent2rgb")
    serve.add_argument("--web-root", type=Path, default=None,
                       help="folder of the web editor served at / (default: the one installed with nodegraph)")
    serve.add_argument("--backend", choices=["local", "ray"], default=None,
                       help="who runs the prompts: a worker thread here (default), or Ray worker actors")
    _ray_options(serve)
    serve.add_argument("--keep-workers", action="store_true",
                       help="leave the Ray workers this server made running when it stops (a restart adopts them)")
    serve.set_defaults(handler=_cmd_serve)

    worker = sub.add_parser("worker", parents=[common],
                            help="add this machine's Ray workers to the cluster a `serve --backend ray` uses")
    worker.add_argument("--cache-budget", default=None, metavar="SIZE")
    worker.add_argument("--no-cache", action="store_true")
    _ray_options(worker)
    worker.set_defaults(handler=_cmd_worker)
    return parser


def _ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (docs/scale-out.md)")
    group.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                       help="join this Ray cluster ('auto': the one on this machine); serve without it starts a "
                            "local runtime")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="worker actors (default: one per GPU, or 1 without GPUs)")
    group.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                       help="GPUs each worker reserves (default: 1 when the cluster has GPUs, else 0)")
    group.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                       help="CPUs each worker reserves in Ray's accounting (default 1)")
    group.add_argument("--ray-namespace", default="nodegraph",
                       help="Ray namespace of this deployment's workers (one server per namespace)")
    group.add_argument("--node-library", default=None, metavar="MODULE:FUNCTION",
                       help="the function that builds the node registry (default: the built-in library "
                            "plus custom_nodes/); server and workers must use the same")


# -- shared set-up --------------------------------------------------------------------------

def _setup(args: argparse.Namespace, *, prepare_models: bool = False) -> tuple[folder_paths.Folders, NodeRegistry]:
    base = args.base_dir or Path(os.environ.get("NODEGRAPH_HOME", "."))
    extra: list[ExtraFolder] = []
    for yaml_file in args.extra_model_paths:
        try:
            extra += read_extra_model_paths(yaml_file)
        except ModelPathsError as exc:
            raise UsageError(str(exc)) from None
    first, last = extra_folders_by_kind(extra)
    layout = folder_paths.use(folder_paths.Folders(base, models=args.models_dir, input=args.input_dir,
                                                   output=args.output_dir, extra=last, extra_first=first))
    factory, kwargs = _node_library(args, layout)
    registry = default_registry(**kwargs) if factory == DEFAULT_LIBRARY else _build(factory, kwargs)
    library = sys.modules.get("nodes")
    if prepare_models and hasattr(library, "prepare_default_models"):
        library.prepare_default_models(layout)  # the embedded default checkpoint the examples use
    startup_done()  # the node library is loaded: the collector may run again (nodegraph.launch)
    return layout, registry


DEFAULT_LIBRARY = "nodegraph.registry:default_registry"


def _node_library(args: argparse.Namespace, layout: folder_paths.Folders) -> tuple[str, dict[str, Any]]:
    """The registry factory and its arguments, as the workers of a Ray backend must build it too."""
    factory = getattr(args, "node_library", None) or DEFAULT_LIBRARY
    if factory == DEFAULT_LIBRARY:
        return factory, {"custom_nodes": str(args.custom_nodes or (layout.base / "custom_nodes"))}
    if ":" not in factory:
        raise UsageError(f"--node-library {factory!r}: expected MODULE:FUNCTION")
    return factory, {}


def _build(factory: str, kwargs: dict[str, Any]) -> NodeRegistry:
    from .queue.backend import build_registry
    try:
        return build_registry(factory, kwargs)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--node-library {factory}: {exc}") from None


def _load(args: argparse.Namespace, registry: NodeRegistry) -> tuple[Prompt, dict[str, Any]]:
    document = load_document(args.workflow)
    prompt = document.to_api(registry)
    extra: dict[str, Any] = {"extra_pnginfo": {"workflow": document.ui}} if document.ui else {}
    return prompt, extra


def _cache_budget(args: argparse.Namespace) -> int:
    if args.no_cache:
        return 0
    if args.cache_budget is None:
        return DEFAULT_BUDGET
    try:
        return parse_size(args.cache_budget)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def apply_overrides(prompt: Prompt, overrides: list[str]) -> None:
    """`--set NODE.INPUT=VALUE`: NODE is an id or a node title; VALUE is JSON, else plain text."""
    for item in overrides:
        target, sep, raw = item.partition("=")
        node_ref, dot, input_name = target.rpartition(".")
        if not sep or not dot or not node_ref or not input_name:
            raise UsageError(f"--set {item!r}: expected NODE.INPUT=VALUE, e.g. --set 3.seed=42")
        node_id = _find_node(prompt, node_ref)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        prompt[node_id]["inputs"][input_name] = value


def _find_node(prompt: Prompt, ref: str) -> str:
    if ref in prompt:
        return ref
    titled = [nid for nid, node in prompt.items()
              if (node.get("_meta") or {}).get("title") == ref or node.get("class_type") == ref]
    if len(titled) == 1:
        return titled[0]
    if titled:
        raise UsageError(f"--set: '{ref}' matches nodes {', '.join(titled)}; use a node id")
    raise UsageError(f"--set: no node with id or title '{ref}' (ids: {', '.join(list(prompt)[:20])})")


# -- commands -------------------------------------------------------------------------------

def _cmd_run(args: argparse.Namespace) -> int:
    if (args.workflow is None) == (args.example is None):
        raise UsageError("give a workflow file or --example NAME (one of: "
                         f"{', '.join(resources.example_names()) or 'none installed'})")
    if args.example is not None:
        try:
            args.workflow = resources.example_path(args.example)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
    layout, registry = _setup(args, prepare_models=True)
    prompt, extra = _load(args, registry)
    apply_overrides(prompt, args.overrides)
    validated = validate_prompt(prompt, registry, targets=args.target)
    for node_id, entry in validated.node_errors.items():
        log.warning("output %s skipped: node %s (%s) is invalid", ", ".join(entry["dependent_outputs"]),
                    node_id, entry["class_type"])
    executor = Executor(OutputCache(_cache_budget(args)))
    result: RunResult | None = None
    for attempt in range(max(1, args.repeat)):
        with _ProgressDisplay(prompt, quiet=args.quiet) as display:
            result = executor.execute(validated, extra_data=extra, sink=display.handle)
        log.info("run %d: %s in %.2fs — %d nodes executed, %d from cache", attempt + 1, result.status,
                 result.seconds, len(result.executed), len(result.cached))
        if not result.ok:
            break
    assert result is not None
    if result.status == "interrupted":
        print("interrupted", file=sys.stderr)
        return EXIT_RUNTIME
    if result.error is not None:
        error = result.error
        print(f"error: node {error.node_id} ({error.node_type}) failed\n  {error.exception_type}: "
              f"{error.exception_message}", file=sys.stderr)
        log.debug("".join(error.traceback))
        return EXIT_RUNTIME
    for path in output_files(result, layout):
        print(path)
    return EXIT_OK


def output_files(result: RunResult, layout: folder_paths.Folders) -> list[Path]:
    """Files that output nodes reported (ComfyUI's `{images: [{filename, subfolder, type}]}`, and the
    same shape under other keys: `latents`, `models`)."""
    roots = {"output": layout.output, "temp": layout.temp, "input": layout.input}
    files = []
    for ui in result.outputs.values():
        entries = [item for value in ui.values() if isinstance(value, list) for item in value] if isinstance(ui, dict) else []
        for item in entries:
            if isinstance(item, dict) and "filename" in item:
                files.append(roots.get(item.get("type", "output"), layout.output) / item.get("subfolder", "") / item["filename"])
    return files


def _cmd_validate(args: argparse.Namespace) -> int:
    _, registry = _setup(args, prepare_models=True)
    prompt, _ = _load(args, registry)
    try:
        validated = validate_prompt(prompt, registry)
    except ValidationError as exc:
        if args.json:
            print(json.dumps(exc.to_json(), indent=2))
            return EXIT_INVALID
        raise
    if args.json:
        print(json.dumps({"ok": True, "outputs": validated.outputs, "node_errors": validated.node_errors}, indent=2))
    else:
        print(f"ok: {len(prompt)} nodes, outputs {', '.join(validated.outputs)}")
    return EXIT_OK


def _cmd_convert(args: argparse.Namespace) -> int:
    _, registry = _setup(args)
    prompt, _ = _load(args, registry)
    text = json.dumps(prompt, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return EXIT_OK


def _cmd_nodes(args: argparse.Namespace) -> int:
    _, registry = _setup(args)
    info = registry.object_info()
    if args.names:
        unknown = [n for n in args.names if n not in info]
        if unknown:
            raise UsageError(f"unknown node(s): {', '.join(unknown)}")
        info = {n: info[n] for n in args.names}
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    for name, entry in sorted(info.items(), key=lambda kv: (kv[1]["category"], kv[0])):
        print(f"{entry['category']:<28} {name:<32} {entry['display_name']}")
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .server.app import serve
    except ImportError as exc:
        raise UsageError(f"the server is not available: {exc}") from None
    ray = args.backend == "ray" or (args.backend is None and args.ray_address is not None)
    if args.backend == "local" and args.ray_address is not None:
        raise UsageError("--ray-address needs --backend ray")
    if ray:
        _require_ray()
    layout, registry = _setup(args, prepare_models=True)
    args.ray_options = _make_ray_options(args, layout) if ray else None
    return serve(args, layout, registry, OutputCache(_cache_budget(args)))


def _cmd_worker(args: argparse.Namespace) -> int:
    startup_done()  # no node library here (the workers load it): a long-running process, collector on
    _require_ray()
    from .queue.ray_join import run_workers
    from .queue.ray_runtime import RayUnavailable
    if not args.ray_address:
        raise UsageError("nodegraph worker needs --ray-address HOST:PORT (the cluster the server uses)")
    base = args.base_dir or Path(os.environ.get("NODEGRAPH_HOME", "."))
    layout = folder_paths.Folders(base, models=args.models_dir, input=args.input_dir, output=args.output_dir)
    try:
        return run_workers(_make_ray_options(args, layout), layout, args.workers)
    except RayUnavailable as exc:
        raise UsageError(str(exc)) from None


def _require_ray() -> None:
    from .queue.ray_runtime import RayUnavailable, require_ray
    try:
        require_ray()
    except RayUnavailable as exc:
        raise UsageError(f"--backend ray: {exc}") from None


def _make_ray_options(args: argparse.Namespace, layout: folder_paths.Folders) -> Any:
    from .queue import RayOptions
    if args.workers is not None and args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    factory, kwargs = _node_library(args, layout)
    return RayOptions(address=args.ray_address, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                      cpus_per_worker=args.cpus_per_worker, namespace=args.ray_namespace,
                      registry_factory=factory, registry_kwargs=kwargs, cache_budget=_cache_budget(args),
                      keep_workers=getattr(args, "keep_workers", False))


class _ProgressDisplay:
    """Renders executor events: a log line per node, a tqdm bar for nodes that report progress."""

    def __init__(self, prompt: Prompt, quiet: bool):
        self.prompt, self.quiet = prompt, quiet
        self.bar: Any = None

    def __enter__(self) -> "_ProgressDisplay":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def handle(self, event: str, data: dict[str, Any]) -> None:
        if event == "executing":
            self._close_bar()
            if data.get("node") is not None and not self.quiet:
                node = self.prompt.get(data["node"], {})
                title = (node.get("_meta") or {}).get("title") or node.get("class_type")
                log.info("running node %s (%s)", data["node"], title)
        elif event == "execution_cached" and data.get("nodes"):
            log.info("from cache: nodes %s", ", ".join(data["nodes"]))
        elif event == "progress" and not self.quiet:
            if self.bar is None:
                from tqdm import tqdm
                node = self.prompt.get(data["node"], {})
                self.bar = tqdm(total=data["max"], desc=str(node.get("class_type", data["node"])),
                                unit="step", file=sys.stderr, leave=False)
            self.bar.total = data["max"]
            self.bar.n = data["value"]
            self.bar.refresh()


if __name__ == "__main__":
    sys.exit(main())
