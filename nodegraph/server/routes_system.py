"""Nodes, models and the system: `/object_info`, `/models` (and `/experiment/models/{folder}` with
sizes), `/embeddings`, `/extensions`, `/system_stats`, `/features`, `/internal/logs`, the example
workflows as `/workflow_templates`, and the editor's static files at `/`.
"""
from __future__ import annotations

import logging

import asyncio
import mimetypes
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__, resources
from ..folders import MODEL_FOLDERS, UnsafePathError, safe_join
from .middleware import BadRequest

if TYPE_CHECKING:
    from .app import RouteList, ServerState

COMFYUI_VERSION = "0.3.64"  # the ComfyUI API version this server follows
TEMPLATE_MODULE = "nodegraph"  # the shipped examples, as a custom node's templates would be listed

_NO_EDITOR = """<!doctype html><meta charset="utf-8"><title>nodegraph</title>
<h1>nodegraph server</h1><p>The API is up (ComfyUI-compatible, under <code>/</code> and <code>/api/</code>).
The web editor is not installed in this checkout.</p>"""


def _memory() -> tuple[int, int]:
    try:
        import psutil
        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pass
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        kb = lambda key: int(info[key].strip().split()[0]) * 1024  # noqa: E731
        return kb("MemTotal"), kb("MemAvailable")
    except (OSError, KeyError, ValueError):
        return 0, 0


def _torch_version() -> str:
    torch = sys.modules.get("torch")  # never imported here: the server runs without torch
    if torch is not None:
        return str(getattr(torch, "__version__", ""))
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ""


def _devices() -> list[dict[str, Any]]:
    torch = sys.modules.get("torch")
    devices = []
    if torch is not None:
        try:
            for index in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(index)
                devices.append({"name": f"cuda:{index} {torch.cuda.get_device_name(index)}", "type": "cuda",
                                "index": index, "vram_total": total, "vram_free": free,
                                "torch_vram_total": torch.cuda.memory_reserved(index),
                                "torch_vram_free": torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)})
        except Exception:  # no driver, no device: report the CPU only
            devices = []
    if not devices:
        total, free = _memory()
        devices.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                        "torch_vram_total": 0, "torch_vram_free": 0})
    return devices


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def routes(state: "ServerState") -> "RouteList":
    registry, layout = state.registry, state.layout

    async def object_info(request: web.Request) -> web.Response:
        # INPUT_TYPES may list model folders: off the event loop.
        info = await asyncio.get_running_loop().run_in_executor(None, registry.object_info)
        return web.json_response(info, dumps=_dumps)

    async def object_info_one(request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        definition = registry.get(name)
        if definition is None:
            return web.json_response({})
        try:
            return web.json_response({name: definition.info()}, dumps=_dumps)
        except Exception as exc:
            raise BadRequest(f"node {name} cannot describe its inputs: {exc}", status=500,
                             type="node_info_failed") from None

    async def models(request: web.Request) -> web.Response:
        return web.json_response(list(MODEL_FOLDERS))

    async def models_in(request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            raise BadRequest(f"unknown model folder {folder[:40]!r}", status=404, type="not_found")
        files = await asyncio.get_running_loop().run_in_executor(None, layout.list_models, folder)
        return web.json_response(files)

    async def embeddings(request: web.Request) -> web.Response:
        files = await asyncio.get_running_loop().run_in_executor(None, layout.list_models, "embeddings")
        return web.json_response([os.path.splitext(f)[0] for f in files])

    async def extensions(request: web.Request) -> web.Response:
        found: list[str] = []
        root = state.web_root
        if root is not None and (root / "extensions").is_dir():
            for path in sorted((root / "extensions").rglob("*.js")):
                found.append("/" + path.relative_to(root).as_posix())
        return web.json_response(found)

    async def system_stats(request: web.Request) -> web.Response:
        total, free = _memory()
        backend = state.backend
        # A remote backend asks its workers: off the event loop.
        cache, workers = await asyncio.get_running_loop().run_in_executor(
            None, lambda: (backend.cache_stats(), backend.workers()))
        overhead = backend.overhead_ms()
        body: dict[str, Any] = {
            "system": {"os": os.name, "platform": platform.platform(), "ram_total": total, "ram_free": free,
                       "comfyui_version": COMFYUI_VERSION, "nodegraph_version": __version__,
                       "required_frontend_version": "", "installed_templates_version": "",
                       "required_templates_version": "", "python_version": sys.version,
                       "pytorch_version": _torch_version(), "embedded_python": False, "argv": sys.argv},
            "devices": _devices(),
            "cache": cache,
            "queue": {"remaining": state.queue.remaining(), "completed": backend.completed,
                      "history_size": state.queue.history_size,
                      "worker_overhead_ms": {"p50": _percentile(overhead, 0.5), "p99": _percentile(overhead, 0.99),
                                             "samples": len(overhead)}},
        }
        if workers is not None:
            body["queue"]["backend"] = backend.name
            body["workers"] = workers
        return web.json_response(body, dumps=_dumps)

    async def features(request: web.Request) -> web.Response:
        return web.json_response({"supports_preview_metadata": True, "max_upload_size": state.max_upload_size})

    async def logs(request: web.Request) -> web.Response:
        return web.json_response("")

    async def logs_raw(request: web.Request) -> web.Response:
        return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})

    async def logs_subscribe(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def workflow_templates(request: web.Request) -> web.Response:
        # ComfyUI's shape, {module: [template names]}: the shipped example workflows.
        return web.json_response({TEMPLATE_MODULE: resources.example_names()})

    async def workflow_template(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if request.match_info["module"] != TEMPLATE_MODULE or not name.endswith(".json"):
            raise BadRequest("no such workflow template", status=404, type="not_found")
        try:
            path = resources.example_path(name)
        except FileNotFoundError as exc:
            raise BadRequest(str(exc), status=404, type="not_found") from None
        return web.FileResponse(path, headers={"Content-Type": "application/json"})

    def model_file_info(folder: str) -> list[dict[str, Any]]:
        dirs = layout.model_dirs(folder)
        found = []
        for name in layout.list_models(folder):
            try:
                path = layout.model_path(folder, name)
                st = path.stat()
            except (FileNotFoundError, OSError):
                continue
            index = next((i for i, d in enumerate(dirs) if path.is_relative_to(d)), None)
            found.append({"name": name, "pathIndex": index, "modified": st.st_mtime, "created": st.st_ctime,
                          "size": st.st_size})
        return found

    async def models_info(request: web.Request) -> web.Response:
        # ComfyUI's /experiment/models/{folder}: the files with their sizes and dates.
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            raise BadRequest(f"unknown model folder {folder[:40]!r}", status=404, type="not_found")
        return web.json_response(await asyncio.get_running_loop().run_in_executor(None, model_file_info, folder))

    return [
        ("GET", "/object_info", object_info), ("GET", "/object_info/{node_class}", object_info_one),
        ("GET", "/models", models), ("GET", "/models/{folder}", models_in),
        ("GET", "/embeddings", embeddings), ("GET", "/extensions", extensions),
        ("GET", "/system_stats", system_stats), ("GET", "/features", features),
        ("GET", "/internal/logs", logs), ("GET", "/internal/logs/raw", logs_raw),
        ("PATCH", "/internal/logs/subscribe", logs_subscribe),
        ("GET", "/workflow_templates", workflow_templates),
        ("GET", "/workflow_templates/{module}/{name}", workflow_template),
        ("GET", "/experiment/models/{folder}", models_info),
    ]


def add_static(app: web.Application, state: "ServerState") -> None:
    """The editor: `web/index.html` at `/` and its files below, never outside the web root."""
    root = state.web_root
    if root is not None and not (root / "node_modules" / "@comfyorg" / "litegraph").is_dir():
        logging.getLogger(__name__).warning(
            "the editor's canvas library is missing from %s/node_modules: run `npm ci --prefix web` "
            "(or ./scripts/test, which does it) and reload the page", root)

    async def static(request: web.Request) -> web.StreamResponse:
        rel = request.match_info.get("path", "")
        if root is None:
            if rel in ("", "index.html"):
                return web.Response(text=_NO_EDITOR, content_type="text/html")
            raise BadRequest("not found", status=404, type="not_found")
        try:
            path = safe_join(root, rel or "index.html")
        except UnsafePathError:
            raise BadRequest("not found", status=404, type="not_found") from None
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file() or any(part.startswith(".") for part in Path(rel).parts):
            raise BadRequest("not found", status=404, type="not_found")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if path.suffix in (".js", ".mjs"):
            content_type = "text/javascript"
        return web.FileResponse(path, headers={"Content-Type": content_type})

    app.router.add_route("GET", "/", static)
    app.router.add_route("GET", "/{path:.+}", static)


def _dumps(value: Any) -> str:
    import json
    return json.dumps(value, separators=(",", ":"), default=str)
