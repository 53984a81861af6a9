"""Helpers for server tests on the Ray backend: a small local runtime, worker options that build the
test node library, and a view of the node-call counters kept in the worker processes."""
from __future__ import annotations

import collections
import time
import uuid
from typing import Any

from nodegraph.queue import RayOptions

REGISTRY = "tests.server.server_nodes:make_registry"


def start_runtime(cpus: int = 2) -> Any:
    """A local Ray runtime sized for a shared 2-core machine (the caller shuts it down)."""
    import pytest
    ray = pytest.importorskip("ray", reason="the Ray backend's tests need the [ray] extra")
    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=80 * 1024**2, log_to_driver=False,
             configure_logging=False)
    return ray


def ray_options(workers: int, **overrides: Any) -> RayOptions:
    """Workers that build the test node library; by default in a namespace of their own (workers of
    an earlier server are then never adopted)."""
    settings: dict[str, Any] = {"namespace": f"test-{uuid.uuid4().hex[:8]}", "registry_factory": REGISTRY,
                                "cache_budget": 256 * 1024**2, **overrides}
    return RayOptions(workers=workers, cpus_per_worker=0, **settings)


def kill_workers(namespace: str) -> None:
    import ray
    from ray.util import list_named_actors
    for actor in list_named_actors(all_namespaces=True):
        if actor.get("namespace") == namespace:
            try:
                ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=True)
            except ValueError:
                pass


def wait_workers_ready(live: Any, count: int, timeout: float = 120) -> list[dict[str, Any]]:
    """Until `count` workers answer (actor processes start slowly on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [w for w in live.state.backend.workers() if w["state"] in ("ready", "busy")]
        if len(workers) >= count:
            return workers
        time.sleep(0.05)
    raise TimeoutError(f"{count} Ray workers not ready in {timeout}s: {live.state.backend.workers()}")


def worker_handles(live: Any) -> dict[str, Any]:
    return {name: slot.handle for name, slot in live.state.backend.slots.items()}


def in_workers(live: Any, function: Any) -> dict[str, Any]:
    """`function(actor)` run inside each worker process."""
    import ray
    handles = worker_handles(live)
    return dict(zip(handles, ray.get([h.__ray_call__.remote(function) for h in handles.values()], timeout=60)))


def _read_calls(actor: Any) -> dict[str, int]:
    from tests.engine import toy_nodes
    return dict(toy_nodes.CALLS)


def _clear_calls(actor: Any) -> None:
    from tests.engine import toy_nodes
    toy_nodes.CALLS.clear()


class RemoteCalls:
    """`toy_nodes.CALLS` summed over the Ray workers, read when asked (the `calls` fixture)."""

    def __init__(self, live: Any):
        self.live = live

    def _total(self) -> collections.Counter:
        total: collections.Counter = collections.Counter()
        for counts in in_workers(self.live, _read_calls).values():
            total.update(counts)
        return total

    def clear(self) -> None:
        in_workers(self.live, _clear_calls)

    def __getitem__(self, name: str) -> int:
        return self._total()[name]

    def values(self) -> Any:
        return self._total().values()
