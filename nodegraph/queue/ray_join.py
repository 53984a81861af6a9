"""`nodegraph worker`: add this machine's workers to a Ray cluster that a nodegraph server uses.

The workers are actors pinned to this machine's Ray node, with this machine's folders and node
library; the server finds them in its namespace and refuses them (this command then exits 2) if
their nodegraph version or node library differs from its own. Ctrl-C (or SIGTERM) takes them out.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from ..folders import Folders
from . import ray_runtime
from .backend import RayOptions

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
READY_TIMEOUT = 600.0  # a worker that loads a large node library on a slow disk


def run_workers(options: RayOptions, layout: Folders, count: int | None) -> int:
    """Join, start the workers, keep them until interrupted. Returns the exit code."""
    ray = ray_runtime.require_ray()
    if not options.address:
        raise ray_runtime.RayUnavailable("nodegraph worker needs --ray-address (the cluster the server uses)")
    ray_runtime.connect(options)
    node_id = ray.get_runtime_context().get_node_id()
    gpus_here = _node_gpus(ray, node_id)
    per_worker = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus_here else 0.0)
    count = count or (max(1, int(gpus_here // per_worker)) if per_worker else 1)
    config = {"owner": "joined", "registry_factory": options.registry_factory,
              "registry_kwargs": options.registry_kwargs, "cache_budget": options.cache_budget,
              "folders": {"base": str(layout.base), "models": [str(m) for m in layout.models],
                          "input": str(layout.input), "user": str(layout.user), **layout.extra_folders_spec()},
              "prepare_models": options.registry_factory.startswith("nodegraph.registry:")}
    stem = f"{ray_runtime.WORKER_PREFIX}{socket.gethostname()}-{os.getpid()}"
    handles = {f"{stem}-{i}": ray_runtime.make_worker(f"{stem}-{i}", config, options, gpus=per_worker, node_id=node_id)
               for i in range(count)}
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        infos = ray.get([h.describe.remote() for h in handles.values()], timeout=READY_TIMEOUT)
        for info in infos:
            print(f"worker {info['name']} joined namespace '{options.namespace}' (nodegraph {info['version']}, "
                  f"node library {info['library']}, gpus {info['gpus'] or 'none'})", file=sys.stderr)
        return _watch(ray, handles)
    except KeyboardInterrupt:
        print("leaving: workers stopped", file=sys.stderr)
        return 0
    finally:
        for handle in handles.values():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # already gone
                pass


def _stop_on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _watch(ray: Any, handles: dict[str, Any]) -> int:
    """Until interrupted; 2 as soon as the server refuses a worker."""
    lost = ray_runtime.lost_errors()
    while True:
        time.sleep(POLL_SECONDS)
        for name, handle in handles.items():
            try:
                info = ray.get(handle.describe.remote(), timeout=60)
            except lost:
                continue  # Ray restarts it
            if info.get("refused"):
                print(f"error: the server refused worker {name}: {info['refused']}", file=sys.stderr)
                return 2


def _node_gpus(ray: Any, node_id: str) -> float:
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return float(node.get("Resources", {}).get("GPU", 0))
    return 0.0
