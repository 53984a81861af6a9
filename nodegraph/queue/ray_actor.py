"""A Ray worker: an ordinary executor with its own output cache and node registry, kept warm in its
own process, running one prompt at a time and streaming the executor's events back to the server.

Made by the server (`nodegraph serve --backend ray`) or by `nodegraph worker` on another machine, as
a named, detached actor (so a restarted server finds it). Output files are written to a scratch
folder and sent to the server as bytes (see shipping.py). The actor is threaded: `interrupt`, `free`
and `describe` are answered while `run` streams.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import queue as queue_module
import shutil
import socket
import sys
import tempfile
import threading
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import ray

from .. import __version__
from .. import folders as folder_paths
from ..cache import OutputCache
from ..errors import NodegraphError, ValidationError
from ..executor import Executor
from ..progress import CancellationToken
from ..registry import NodeRegistry
from ..validation import validate_prompt
from .backend import build_registry
from .relay import encode_jpeg
from .shipping import FileRef, collect, file_refs, read_chunk, ref_of, remove_scratch
from .worker import free_resources, set_preview_method

log = logging.getLogger(__name__)

MAX_EARLY_INTERRUPTS = 256  # interrupts remembered for prompts that have not started here yet


def library_signature(registry: NodeRegistry) -> str:
    """A short digest of the node library (names, modules, output types): two processes with the same
    digest run a prompt the same way."""
    parts = sorted(f"{d.name}|{d.python_module}|{','.join(d.return_types)}" for d in registry)
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=6).hexdigest()


def _scratch_folder(name: str) -> Path:
    """A fresh private folder for this worker's output files; those of dead worker processes go."""
    parent = Path(tempfile.gettempdir()) / "nodegraph-workers"
    parent.mkdir(exist_ok=True)
    for old in parent.glob("*.pid*"):
        pid = old.name.rsplit(".pid", 1)[-1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}.pid{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_folders(spec: dict[str, Any] | None, scratch: Path) -> folder_paths.Folders:
    """The server's models and input folders (same paths on every machine: a shared volume), or the
    worker's own; outputs always go to a private scratch folder and travel to the server as bytes."""
    spec = spec or {}
    base = spec.get("base") or os.environ.get("NODEGRAPH_HOME", ".")
    return folder_paths.Folders(Path(base), models=[Path(m) for m in spec.get("models", [])],
                                input=spec.get("input"), user=spec.get("user"),
                                output=scratch / "output", temp=scratch / "temp",
                                extra=spec.get("extra") or {}, extra_first=spec.get("extra_first") or {})


def config_digest(config: dict[str, Any]) -> str:
    """What a server-made worker was set up with (its name aside): a restarted server with another
    set-up re-configures the workers it adopts instead of using them as they are."""
    text = json.dumps({k: v for k, v in config.items() if k != "name"}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


class WorkerActor:
    def __init__(self, config: dict[str, Any]):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        # The run thread holds the GIL while Python-level node code runs; a short switch interval lets
        # the streaming thread send progress and answer interrupt promptly (as the server does).
        sys.setswitchinterval(0.001)
        self.name = config["name"]
        self.owner = config.get("owner", "server")
        self._lock = threading.Lock()
        self._current: tuple[str, CancellationToken] | None = None
        self.refused: str | None = None
        self._setup(config)

    def _setup(self, config: dict[str, Any]) -> None:
        self.config = config_digest(config)
        self.incarnation = uuid.uuid4().hex[:12]  # a restarted or re-configured worker has a cold cache
        self.scratch = _scratch_folder(self.name)
        self.layout = folder_paths.use(worker_folders(config.get("folders"), self.scratch))
        self.layout.output.mkdir(parents=True, exist_ok=True)
        self.layout.temp.mkdir(parents=True, exist_ok=True)
        self.registry = build_registry(config["registry_factory"], config.get("registry_kwargs") or {})
        if config.get("prepare_models"):
            library = importlib.import_module("nodes")
            if hasattr(library, "prepare_default_models"):
                library.prepare_default_models(self.layout)
        self.executor = Executor(OutputCache(int(config["cache_budget"])))
        self.library = library_signature(self.registry)
        self._early_interrupts: dict[str, None] = {}
        self._free = {"unload_models": False, "free_memory": False}
        self._key_seconds: dict[str, float] = {}  # what each key this cache holds took to compute here
        self._reported: set[str] = set()  # held keys the server was last told of
        # Files sent but not yet confirmed stored: id(file dict) -> (prompt, node, the dict, kept alive here)
        self._unconfirmed: dict[int, tuple[str, str, dict[str, Any]]] = {}
        self.runs = 0
        log.info("worker %s ready: nodegraph %s, node library %s (%d nodes), scratch %s", self.name, __version__,
                 self.library, len(self.registry), self.scratch)

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Set up again as a (restarted) server wants it, keeping the process; returns describe()."""
        with self._lock:
            if self._current is not None:
                raise RuntimeError(f"worker {self.name} is running prompt {self._current[0]}")
        shutil.rmtree(self.scratch, ignore_errors=True)
        self._setup({**config, "name": self.name})
        return self.describe(True)

    # -- answered while a prompt runs ------------------------------------------------------------

    def describe(self, holdings: bool = False) -> dict[str, Any]:
        current = self._current
        info = {"name": self.name, "incarnation": self.incarnation, "config": self.config,
                "version": __version__, "library": self.library,
                "nodes": len(self.registry), "host": socket.gethostname(), "pid": os.getpid(),
                "gpus": [str(g) for g in ray.get_gpu_ids()], "owner": self.owner,
                "busy": current[0] if current else None, "runs": self.runs, "refused": self.refused}
        if holdings:
            with self._lock:
                self._reported = self._held()
                info["holdings"] = {k: self._key_seconds[k] for k in self._reported}
        return info

    def interrupt(self, prompt_id: str | None = None) -> bool:
        with self._lock:
            current = self._current
            if current is not None and (prompt_id is None or current[0] == prompt_id):
                current[1].cancel()
                return True
            if prompt_id is not None:  # dispatched but not started here yet: cancel it when it starts
                self._early_interrupts[prompt_id] = None
                while len(self._early_interrupts) > MAX_EARLY_INTERRUPTS:
                    self._early_interrupts.pop(next(iter(self._early_interrupts)))
        return False

    def free(self, unload_models: bool = False, free_memory: bool = False) -> dict[str, Any] | None:
        """`/free`: now when idle (returns the holdings change), else after the running prompt."""
        with self._lock:
            self._free["unload_models"] |= unload_models
            self._free["free_memory"] |= free_memory
            if self._current is not None:
                return None
        self._apply_free()
        with self._lock:
            return self._holdings_delta()

    def cache_stats(self) -> dict[str, Any]:
        return self.executor.cache.stats()

    def read_chunk(self, ref: FileRef, offset: int, length: int) -> bytes:
        """Part of a large output file the server is pulling (a saved checkpoint)."""
        return read_chunk(tuple(ref), offset, length, self.layout)  # type: ignore[arg-type]

    def refuse(self, reason: str) -> None:
        """The server will not use this worker (another nodegraph version or node library)."""
        log.error("worker %s refused by the server: %s", self.name, reason)
        self.refused = reason

    # -- running a prompt ------------------------------------------------------------------------

    @ray.method(num_returns="streaming")
    def run(self, request: dict[str, Any]) -> Iterator[list[tuple[Any, ...]]]:
        """Run one prompt; yields batches of events: (event, data), ("executed", data, files), and
        last ("result", summary)."""
        self._confirm(request.get("confirm") or [])
        prompt_id, token = request["prompt_id"], CancellationToken()
        with self._lock:
            if self._current is not None:
                raise RuntimeError(f"worker {self.name} is already running prompt {self._current[0]}")
            self._current = (prompt_id, token)
            if prompt_id in self._early_interrupts:
                del self._early_interrupts[prompt_id]
                token.cancel()
        events: queue_module.Queue = queue_module.Queue()
        thread = threading.Thread(target=self._execute, args=(request, token, events.put),
                                  name=f"run-{prompt_id[:8]}", daemon=True)
        thread.start()
        try:
            while True:
                batch = [events.get()]
                while True:  # whatever else is ready goes in the same message
                    try:
                        batch.append(events.get_nowait())
                    except queue_module.Empty:
                        break
                yield batch
                if batch[-1][0] == "result":
                    return
        finally:
            token.cancel()  # the server went away mid-run (or the run is over): stop, then free the worker
            thread.join()
            with self._lock:
                self._current = None

    def _execute(self, request: dict[str, Any], token: CancellationToken, put: Callable[[Any], None]) -> None:
        prompt_id = request["prompt_id"]
        try:
            try:
                validated = validate_prompt(request["prompt"], self.registry, targets=request["outputs"])
            except (ValidationError, NodegraphError) as exc:
                put(("result", {"status": "invalid", "message": f"the prompt is not valid on worker {self.name}: {exc}"}))
                return
            set_preview_method(bool(request.get("wants_preview")))
            result = self.executor.execute(validated, prompt_id=prompt_id, extra_data=request.get("extra_data") or {},
                                           sink=self._sink(prompt_id, put), token=token)
            self.runs += 1
            self._apply_free()
            classes = {n: validated.prompt[n]["class_type"] for n in result.executed}
            with self._lock:
                for node, seconds in result.node_seconds.items():
                    self._key_seconds[result.cache_keys[node]] = seconds
                delta = self._holdings_delta()
            put(("result", {"status": result.status, "outputs": result.outputs, "messages": result.messages,
                            "seconds": result.seconds, "executed": result.executed, "cached": result.cached,
                            "nodes": {n: (result.cache_keys[n], classes[n], result.node_seconds[n])
                                      for n in result.executed},
                            "holdings": delta, "incarnation": self.incarnation}))
        except BaseException as exc:  # never leave the server waiting for a result
            log.exception("prompt %s: unexpected failure in worker %s", prompt_id, self.name)
            put(("result", {"status": "failure", "message": f"internal error in worker {self.name}: "
                            f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))

    def _sink(self, prompt_id: str, put: Callable[[Any], None]) -> Callable[[str, dict[str, Any]], None]:
        cached: set[str] = set()

        def sink(event: str, data: dict[str, Any]) -> None:
            if event == "execution_cached":
                cached.update(data.get("nodes") or [])
            elif event == "preview":
                jpeg = encode_jpeg(data.pop("image"))
                if jpeg is not None:
                    put((event, {**data, "image": jpeg}))
                return
            elif event == "executed":
                put((event, data, self._ship(prompt_id, data["node"], data.get("output"), data["node"] in cached)))
                return
            put((event, data))
        return sink

    def _ship(self, prompt_id: str, node: str, ui: Any, revisit: bool) -> list[Any]:
        """The files a node's UI names, to send with its `executed` event. A cached node shown again
        names files the server already has, unless their arrival was never confirmed."""
        with self._lock:
            files = [f for f in file_refs(ui) if not revisit or id(f) in self._unconfirmed]
            for f in files:
                self._unconfirmed[id(f)] = (prompt_id, node, f)
        return collect({"files": files}, self.layout) if files else []

    def _confirm(self, placed: list[tuple[str, str, str, str, str, str]]) -> None:
        """The server stored these files (prompt, node, type, subfolder, name sent, name stored): the
        cached UI dicts now name the server's files, and the scratch copies go."""
        if not placed:
            return
        names = {(p, n, k, s, f): final for p, n, k, s, f, final in placed}
        prompts = {p for p, *_ in placed}
        done: list[tuple[str, str, str]] = []
        with self._lock:
            for ident, (prompt_id, node, file) in list(self._unconfirmed.items()):
                if prompt_id not in prompts:
                    continue
                del self._unconfirmed[ident]
                ref = ref_of(file)
                final = names.get((prompt_id, node, *ref))
                if final is not None:
                    done.append(ref)
                    file["filename"] = final
        remove_scratch(done, self.layout)

    # -- cache bookkeeping -----------------------------------------------------------------------

    def _held(self) -> set[str]:
        cache = self.executor.cache
        held = {k for k in self._key_seconds if k in cache}
        for gone in set(self._key_seconds) - held:
            del self._key_seconds[gone]
        return held

    def _holdings_delta(self) -> dict[str, Any]:
        held = self._held()
        added, dropped = held - self._reported, self._reported - held
        self._reported = held
        return {"add": {k: self._key_seconds[k] for k in added}, "drop": sorted(dropped)}

    def _apply_free(self) -> None:
        with self._lock:
            flags, self._free = self._free, {"unload_models": False, "free_memory": False}
        free_resources(self.executor, **flags)
        if flags["free_memory"]:
            with self._lock:
                self._unconfirmed.clear()
