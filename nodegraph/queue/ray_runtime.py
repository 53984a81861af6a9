"""Reaching Ray: the import (an optional extra), joining a cluster or starting a local runtime, and
making worker actors. The only module that decides how actors are placed and named.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ..errors import NodegraphError
from .backend import RayOptions

log = logging.getLogger(__name__)

WORKER_PREFIX = "worker-"  # every nodegraph worker actor's name starts so, in the namespace
ACTOR_CONCURRENCY = 4  # run + interrupt / free / describe at the same time


class RayUnavailable(NodegraphError):
    """Ray cannot be used: not installed, or the cluster cannot be reached."""


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("the Ray backend needs the 'ray' package, which is not installed: "
                             "pip install 'nodegraph[ray]'") from None
    return ray


def connect(options: RayOptions) -> bool:
    """Join `options.address`, or start a small local runtime. True if this process started one
    (it then ends with this process). Raises RayUnavailable with what to do."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "configure_logging": False}
    if options.address:
        check_reachable(options.address, options.connect_timeout)
        try:
            ray.init(address=options.address, namespace=options.namespace, **quiet)
        except Exception as exc:
            raise RayUnavailable(f"cannot join the Ray cluster at {options.address}: {exc}") from None
        log.info("joined the Ray cluster at %s (namespace %s)", options.address, options.namespace)
        return False
    workers = options.workers or 1
    cpus = options.local_cpus or max(os.cpu_count() or 1, int(workers * options.cpus_per_worker + 0.999))
    ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=options.object_store_bytes,
             namespace=options.namespace, **quiet)
    log.info("started a local Ray runtime (%d logical CPUs)", cpus)
    return True


def check_reachable(address: str, timeout: float) -> None:
    """Fail fast, before anything starts, when `host:port` does not answer ('auto' and ray:// are
    left to Ray)."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise RayUnavailable(f"--ray-address {address!r}: expected HOST:PORT (the head node's GCS port, "
                             "6379 by default), or 'auto'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}. Start one with "
                             "`ray start --head` (or check the address, e.g. the KubeRay head service), or leave "
                             "out --ray-address to start a local runtime") from None


def cluster_gpus() -> float:
    ray = require_ray()
    return float(ray.cluster_resources().get("GPU", 0))


def make_worker(name: str, config: dict[str, Any], options: RayOptions, *, gpus: float,
                node_id: str | None = None) -> Any:
    """The named, detached worker actor `name` (the existing one if it is alive: a restarted server
    adopts its workers). `node_id` pins it to one machine (`nodegraph worker`)."""
    ray = require_ray()
    from .ray_actor import WorkerActor

    placement: dict[str, Any] = {}
    if node_id is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        placement["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    actor = ray.remote(WorkerActor).options(
        name=name, namespace=options.namespace, get_if_exists=True, lifetime="detached",
        max_restarts=-1, max_task_retries=0,  # Ray restarts a dead worker; its prompt is ours to re-queue
        max_concurrency=ACTOR_CONCURRENCY, num_cpus=options.cpus_per_worker, num_gpus=gpus, **placement)
    return actor.remote({**config, "name": name})


def worker_names(namespace: str) -> list[str]:
    ray = require_ray()
    from ray.util import list_named_actors

    return sorted(a["name"] for a in list_named_actors(all_namespaces=True)
                  if a.get("namespace") == namespace and a["name"].startswith(WORKER_PREFIX))


def lost_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the worker is gone" (dead, restarting, its node lost)."""
    from ray import exceptions as ray_errors

    kinds = [ray_errors.RayActorError, ray_errors.ObjectLostError, ray_errors.OwnerDiedError]
    for name in ("ActorUnavailableError", "ActorDiedError", "NodeDiedError", "WorkerCrashedError"):
        if hasattr(ray_errors, name):
            kinds.append(getattr(ray_errors, name))
    return tuple(kinds)
