"""The worker side of the queue as an interface: what the server asks of whatever runs its prompts.

Two implementations: `Worker` (worker.py), the embedded worker thread and the default, and
`RayBackend` (ray_backend.py), warm worker actors on a Ray cluster. Both take prompts from the one
`PromptQueue`, which stays the source of truth; `ray` is imported only when that backend is chosen.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..cache import DEFAULT_BUDGET

if TYPE_CHECKING:
    from ..registry import NodeRegistry


class Backend(Protocol):
    name: str  # "local" | "ray"
    completed: int  # prompts finished since start

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Cancel the running prompt `prompt_id` (every running prompt when None). True if one was."""

    def request_free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """ComfyUI's `/free`, applied by each worker after its running prompt."""

    def cache_stats(self) -> dict[str, Any]:
        """The output cache's figures (summed over workers)."""

    def overhead_ms(self) -> list[float]:
        """Recent per-prompt time spent beyond execution, in milliseconds."""

    def workers(self) -> list[dict[str, Any]] | None:
        """One entry per worker (name, state, running prompt, host, ...); None for the embedded one."""


@dataclass
class RayOptions:
    """How `nodegraph serve --backend ray` runs its workers (see docs/scale-out.md)."""

    address: str | None = None  # None: start a local Ray runtime; else join this cluster ("auto", "host:6379")
    workers: int | None = None  # None: one per GPU of the cluster, or 1 without GPUs
    gpus_per_worker: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_worker: float = 1.0
    namespace: str = "nodegraph"  # workers are named actors here; a restarted server finds them
    # The node library each server-made worker builds: "module:function" and its keyword arguments.
    registry_factory: str = "nodegraph.registry:default_registry"
    registry_kwargs: dict[str, Any] = field(default_factory=dict)
    cache_budget: int = DEFAULT_BUDGET  # per worker
    keep_workers: bool = False  # leave server-made workers running when the server stops
    local_cpus: int | None = None  # logical CPUs of a local runtime (default: enough for the workers)
    object_store_bytes: int = 256 * 1024**2  # a local runtime's object store
    lookahead: int = 8  # pending prompts the dispatcher considers for each idle worker
    connect_timeout: float = 10.0  # seconds to reach --ray-address before giving up


def build_registry(factory: str, kwargs: dict[str, Any]) -> "NodeRegistry":
    """The node registry that `module:function` builds from `kwargs` (paths as strings): how a Ray
    worker builds the same node library as its server."""
    module_name, _, function = factory.partition(":")
    return getattr(importlib.import_module(module_name), function or "default_registry")(**kwargs)
