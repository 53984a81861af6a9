"""The ComfyUI-compatible server: `create_app()` builds the aiohttp application (tests use it
directly), `serve()` is what `nodegraph serve` runs.

Every route is served under `/` and under `/api/`. A backend runs the queued prompts: the embedded
worker thread, or worker actors on Ray (`backend=RayOptions(...)`); queue and history live in SQLite
under the user folder either way (see nodegraph.queue).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from .. import folders as folder_paths
from .. import resources
from ..cache import OutputCache
from ..errors import NodegraphError
from ..executor import Executor
from ..queue import Backend, PromptQueue, RayOptions, Worker
from ..registry import NodeRegistry
from . import routes_files, routes_prompt, routes_system, routes_user
from .hub import Hub
from .middleware import cache_headers, errors_as_json, is_loopback_host, security

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass
class ServerState:
    layout: folder_paths.Folders
    registry: NodeRegistry
    queue: PromptQueue
    backend: Backend
    hub: Hub
    max_upload_size: int
    auth_token: str | None = None
    web_root: Path | None = None
    started: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("nodegraph", ServerState)

RouteList = list[tuple[str, str, Callable]]


def create_app(layout: folder_paths.Folders, registry: NodeRegistry, *, cache: OutputCache | None = None,
               auth_token: str | None = None, loopback_only: bool = True, max_upload_size: int = 100 * MB,
               history_size: int = 10000, preview_method: str = "latent2rgb", web_root: Path | None = None,
               start_worker: bool = True, backend: RayOptions | None = None) -> web.Application:
    """The application. Its backend starts with the app and stops with it (the embedded worker
    thread, or Ray workers with `backend=RayOptions(...)`); the queue database is
    `<user dir>/nodegraph.sqlite3`."""
    import time

    folder_paths.use(layout)
    layout.ensure()
    (layout.user / "default" / "workflows").mkdir(parents=True, exist_ok=True)
    hub_ref: list[Hub] = []
    queue = PromptQueue(layout.user / "nodegraph.sqlite3", history_size=history_size,
                        on_change=lambda: hub_ref[0].broadcast_status() if hub_ref else None)
    hub = Hub(queue_remaining=queue.remaining, max_upload_size=max_upload_size,
              previews_enabled=preview_method != "none")
    hub_ref.append(hub)
    runner: Backend
    if backend is None:
        runner = Worker(queue, registry, Executor(cache if cache is not None else OutputCache()), hub)
    else:
        from ..queue.ray_runtime import require_ray
        require_ray()  # a clear error (which extra to install) rather than an ImportError
        from ..queue.ray_backend import RayBackend  # imports ray: only when chosen
        try:
            runner = RayBackend(backend, queue, registry, layout, hub)
        except BaseException:
            queue.close()
            raise
    root = web_root if web_root is not None else resources.web_root()  # the package's, else the checkout's
    state = ServerState(layout, registry, queue, runner, hub, max_upload_size, auth_token, root,
                        started=time.time())
    for prompt_id, action in queue.recovered:
        log.warning("recovered prompt %s after a restart: %s", prompt_id, action)

    app = web.Application(client_max_size=max_upload_size,
                          middlewares=[errors_as_json, security(auth_token=auth_token, loopback_only=loopback_only),
                                       cache_headers])
    app[STATE] = state
    routes: RouteList = [("GET", "/ws", hub.handle)]
    for module in (routes_prompt, routes_files, routes_system, routes_user):
        routes += module.routes(state)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    routes_system.add_static(app, state)

    async def on_startup(app: web.Application) -> None:
        import asyncio
        hub.attach(asyncio.get_running_loop())
        if start_worker:
            runner.start()

    async def on_shutdown(app: web.Application) -> None:
        await hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        import asyncio
        await asyncio.get_running_loop().run_in_executor(None, runner.stop)
        queue.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(args: argparse.Namespace, layout: folder_paths.Folders, registry: NodeRegistry,
          cache: OutputCache) -> int:
    """Run the server until interrupted. Refuses a non-loopback bind without an auth token unless
    `--insecure-no-auth`. Returns the process exit code."""
    hosts = [h.strip() for h in str(args.listen or "127.0.0.1").split(",") if h.strip()] or ["127.0.0.1"]
    loopback = all(is_loopback_host(h) for h in hosts)
    token = getattr(args, "auth_token", None) or os.environ.get("NODEGRAPH_AUTH_TOKEN") or None
    if not loopback and not token and not getattr(args, "insecure_no_auth", False):
        print(f"error: --listen {','.join(hosts)} makes the server reachable from other machines; "
              "give it an --auth-token (or set NODEGRAPH_AUTH_TOKEN), or pass --insecure-no-auth "
              "if you really want an open server", file=sys.stderr)
        return 2
    if not loopback and not token:
        log.warning("serving on %s WITHOUT authentication: anyone who can reach it can run workflows",
                    ",".join(hosts))
    library = sys.modules.get("nodes")
    if library is not None and hasattr(library, "prepare_default_models"):
        try:
            library.prepare_default_models(layout)
        except Exception as exc:  # a missing default model must not keep the server down
            log.warning("default model not prepared: %s", exc)
    web_root = getattr(args, "web_root", None)
    backend: RayOptions | None = getattr(args, "ray_options", None)
    try:
        app = create_app(layout, registry, cache=cache, auth_token=token, loopback_only=loopback,
                         max_upload_size=int(float(args.max_upload_size) * MB), history_size=args.history_size,
                         preview_method=args.preview_method, web_root=Path(web_root) if web_root else None,
                         backend=backend)
    except NodegraphError as exc:  # the Ray backend cannot start: nothing is listening yet
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The worker thread holds the GIL while Python-level node code runs; a shorter switch interval
    # (default 5 ms) keeps HTTP and websocket answers prompt meanwhile.
    sys.setswitchinterval(0.001)
    shown = hosts[0] if ":" not in hosts[0] else f"[{hosts[0]}]"
    where = "" if backend is None else f", prompts run by Ray workers in namespace '{backend.namespace}'"
    print(f"nodegraph server: http://{shown}:{args.port}/ (user data in {layout.user}{where})", file=sys.stderr)
    web.run_app(app, host=hosts, port=args.port, print=None,
                access_log=None if getattr(args, "quiet", False) else logging.getLogger("aiohttp.access"))
    return 0
