"""The Ray backend: the server's one queue and history in front of many warm worker actors.

One dispatcher thread finds workers (those the server made, and any `nodegraph worker` added to the
namespace), refuses those with another nodegraph version or node library, and hands each pending
prompt to an idle worker, cache-aware (dispatch.py). Each running prompt has a thread here that reads
the worker's event stream, relays it to the hub exactly as the local worker does, stores the shipped
output files and, at the end, the history entry. A worker lost mid-prompt has the prompt re-queued
once; Ray restarts the actor and it is used again once it answers.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import ray

from .. import __version__
from ..cache_keys import compute_cache_keys
from ..errors import NodegraphError, ValidationError
from ..folders import Folders, UnsafePathError
from ..registry import NodeRegistry
from ..validation import validate_prompt
from . import ray_runtime
from .backend import RayOptions
from .dispatch import CostModel, Plan, WorkerView, assign
from .queue import MAX_RESTARTS, PromptQueue, QueueItem, history_entry
from .ray_actor import config_digest, library_signature
from .relay import EventRelay, Listener, NullListener, record_failure
from .shipping import OutputPlacer, rename_in_ui

log = logging.getLogger(__name__)

MAINTAIN_EVERY = 1.0  # seconds between looks for joined, lost and restarted workers
DEFER_RECHECK = 0.05  # seconds before reconsidering prompts that wait for a busy, warm worker
PROBE_POLL = 0.05  # seconds between looks at outstanding describe() calls
CALL_TIMEOUT = 10.0  # seconds for a worker to answer free / cache_stats
PULL_TIMEOUT = 300.0  # seconds for one chunk of a large output file


@dataclass(eq=False)
class Slot:
    """One worker actor as the server sees it."""
    name: str
    handle: Any
    owned: bool  # made by this server (killed when it stops, unless keep_workers)
    state: str = "starting"  # starting | draining | ready | busy | lost | refused
    info: dict[str, Any] = field(default_factory=dict)  # its describe()
    probe: Any = None  # a pending describe() call
    item: QueueItem | None = None
    confirm: list[tuple[str, ...]] = field(default_factory=list)  # stored files to confirm with the next run
    lost_since: float = 0.0
    view: WorkerView = field(init=False)  # what the dispatcher knows of it

    def __post_init__(self) -> None:
        self.view = WorkerView(self.name)


class RayBackend:
    name = "ray"

    def __init__(self, options: RayOptions, queue: PromptQueue, registry: NodeRegistry, layout: Folders,
                 listener: Listener | None = None):
        self.options, self.queue, self.registry, self.layout = options, queue, registry, layout
        self.listener: Listener = listener or NullListener()
        self.started_runtime = ray_runtime.connect(options)
        self.library = library_signature(registry)
        self.model = CostModel()
        self.placer = OutputPlacer(layout)
        self.slots: dict[str, Slot] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runs: set[threading.Thread] = set()
        self._refusals_logged: set[str] = set()
        self.completed = 0
        self.timings: collections.deque[tuple[float, float]] = collections.deque(maxlen=5000)
        self.own_workers = self._own_worker_count()
        self._lost = ray_runtime.lost_errors()
        self._config = self._worker_config()
        self._config_digest = config_digest(self._config)

    def _own_worker_count(self) -> int:
        if self.options.workers is not None:
            return max(0, self.options.workers)
        gpus = ray_runtime.cluster_gpus()
        per = self.options.gpus_per_worker or 1.0
        return max(1, int(gpus // per)) if gpus else 1

    def _worker_config(self) -> dict[str, Any]:
        layout = self.layout
        return {"owner": "server", "registry_factory": self.options.registry_factory,
                "registry_kwargs": self.options.registry_kwargs, "cache_budget": self.options.cache_budget,
                "folders": {"base": str(layout.base), "models": [str(m) for m in layout.models],
                            "input": str(layout.input), "user": str(layout.user), **layout.extra_folders_spec()},
                "prepare_models": self.options.registry_factory.startswith("nodegraph.registry:")}

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nodegraph-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Dispatch nothing more, interrupt what runs (recorded as interrupted, as locally), then kill
        the workers this server made unless `keep_workers`."""
        self._stop.set()
        self.queue.wake()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.interrupt()
        for thread in list(self._runs):
            thread.join(timeout)
        if not self.options.keep_workers:
            for slot in list(self.slots.values()):
                if slot.owned:
                    try:
                        ray.kill(slot.handle, no_restart=True)
                    except Exception as exc:  # already gone
                        log.debug("worker %s not killed: %s", slot.name, exc)
        if self.started_runtime:
            ray.shutdown()

    # -- the Backend interface -------------------------------------------------------------------

    def interrupt(self, prompt_id: str | None = None) -> bool:
        with self._lock:
            targets = [(s.handle, s.item.prompt_id) for s in self.slots.values()
                       if s.item is not None and (prompt_id is None or s.item.prompt_id == prompt_id)]
        for handle, running in targets:
            handle.interrupt.remote(running)  # threaded actor: lands between two steps of the running node
        return bool(targets)

    def request_free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        slots = self._reachable()
        refs = [s.handle.free.remote(unload_models, free_memory) for s in slots]
        for slot, ref in zip(slots, refs):
            try:
                delta = ray.get(ref, timeout=CALL_TIMEOUT)
            except Exception as exc:
                log.warning("worker %s did not take /free: %s", slot.name, exc)
                continue
            if delta is not None:
                with self._lock:
                    self._apply_holdings(slot, delta)

    def cache_stats(self) -> dict[str, Any]:
        slots = self._reachable()
        stats: list[dict[str, Any]] = []
        for slot, ref in zip(slots, [s.handle.cache_stats.remote() for s in slots]):
            try:
                stats.append(ray.get(ref, timeout=CALL_TIMEOUT))
            except Exception as exc:
                log.debug("worker %s: no cache figures: %s", slot.name, exc)
        total = {"policy": stats[0]["policy"] if stats else "lru-bytes", "budget_bytes": 0, "used_bytes": 0,
                 "entries": 0, "hits": 0, "misses": 0, "evictions": 0, "workers": len(stats)}
        for entry in stats:
            for key in ("budget_bytes", "used_bytes", "entries", "hits", "misses", "evictions"):
                total[key] += entry.get(key, 0)
        return total

    def overhead_ms(self) -> list[float]:
        return [t[0] * 1000 for t in list(self.timings)]

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"name": s.name, "state": s.state, "prompt_id": s.item.prompt_id if s.item else None,
                     "host": s.info.get("host"), "pid": s.info.get("pid"), "gpus": s.info.get("gpus", []),
                     "incarnation": s.info.get("incarnation"), "version": s.info.get("version"),
                     "library": s.info.get("library"), "owner": "server" if s.owned else "joined",
                     "completed": s.view.completed, "cached_entries": len(s.view.held),
                     "refused": s.info.get("refused_reason")} for s in self.slots.values()]

    def _reachable(self) -> list[Slot]:
        with self._lock:
            return [s for s in self.slots.values() if s.state in ("ready", "busy")]

    # -- finding workers -------------------------------------------------------------------------

    def _discover(self) -> None:
        """Make missing own workers, notice joined and vanished ones, ask lost ones again."""
        try:
            names = set(ray_runtime.worker_names(self.options.namespace))
        except Exception as exc:
            log.warning("cannot list the workers: %s", exc)
            return
        for index in range(self.own_workers):
            name = f"{ray_runtime.WORKER_PREFIX}{index}"
            if name not in self.slots or (name not in names and self.slots[name].state not in ("busy", "starting")):
                handle = ray_runtime.make_worker(name, self._config, self.options, gpus=self._gpus_per_worker())
                self._add(Slot(name, handle, owned=True))
                names.add(name)
        for name in names - set(self.slots):
            try:
                handle = ray.get_actor(name, namespace=self.options.namespace)
            except ValueError:
                continue  # gone between the listing and now
            self._add(Slot(name, handle, owned=False))
        with self._lock:
            for name, slot in list(self.slots.items()):
                if name not in names and slot.state != "busy" and not slot.owned:
                    log.warning("worker %s left", name)
                    del self.slots[name]
            for slot in self.slots.values():  # Ray restarts lost workers: ask again
                if slot.state in ("lost", "draining") and slot.probe is None:
                    slot.probe = slot.handle.describe.remote(True)

    def _check_probes(self) -> bool:
        """Read the describe() answers that have arrived. True while some are outstanding."""
        with self._lock:
            probing = [s for s in self.slots.values() if s.probe is not None]
        if not probing:
            return False
        done, _ = ray.wait([s.probe for s in probing], num_returns=len(probing), timeout=0)
        arrived = set(done)
        for slot in probing:
            if slot.probe in arrived:
                self._probed(slot)
        with self._lock:
            return any(s.probe is not None for s in self.slots.values())

    def _gpus_per_worker(self) -> float:
        if self.options.gpus_per_worker is not None:
            return self.options.gpus_per_worker
        return 1.0 if ray_runtime.cluster_gpus() else 0.0

    def _add(self, slot: Slot) -> None:
        slot.probe = slot.handle.describe.remote(True)
        with self._lock:
            self.slots[slot.name] = slot

    def _probed(self, slot: Slot) -> None:
        probe, slot.probe = slot.probe, None
        try:
            info = ray.get(probe, timeout=0)
        except Exception as exc:
            with self._lock:
                if slot.state not in ("lost", "refused"):
                    log.warning("worker %s does not answer: %s", slot.name, exc)
                    slot.state, slot.lost_since = "lost", time.monotonic()
            return
        refusal = self._refusal(info)
        with self._lock:
            if refusal is not None:
                slot.state, slot.info = "refused", {**info, "refused_reason": refusal}
                if slot.name not in self._refusals_logged:
                    self._refusals_logged.add(slot.name)
                    log.error("worker %s refused: %s", slot.name, refusal)
                    slot.handle.refuse.remote(refusal)
                return
            if info.get("busy"):  # still running a prompt of a server that is gone: stop it, then use it
                slot.state = "draining"
                slot.handle.interrupt.remote(info["busy"])
                return
            if slot.owned and info.get("config") != self._config_digest:  # adopted, set up for another server
                slot.state, slot.probe = "starting", slot.handle.configure.remote(self._config)
                return
            if slot.info.get("incarnation") != info["incarnation"]:
                slot.view.held = set(info.get("holdings", {}))
                for key, seconds in info.get("holdings", {}).items():
                    self.model.learn(key, None, seconds)
            fresh = slot.state != "ready"
            slot.info, slot.state = info, "ready"
            self._lock.notify_all()
        if fresh:
            log.info("worker %s ready on %s (pid %s, gpus %s, %d cached entries)", slot.name, info["host"],
                     info["pid"], info["gpus"] or "none", len(slot.view.held))

    def _refusal(self, info: dict[str, Any]) -> str | None:
        if info.get("version") == __version__ and info.get("library") == self.library:
            return None
        return (f"worker {info.get('name')} runs nodegraph {info.get('version')} with node library "
                f"{info.get('library')} ({info.get('nodes')} nodes); this server runs nodegraph {__version__} "
                f"with node library {self.library} ({len(self.registry)} nodes). Install the same nodegraph "
                "and node packs on both")

    # -- dispatching -----------------------------------------------------------------------------

    def _loop(self) -> None:
        next_discovery = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_discovery:
                    self._discover()
                    next_discovery = time.monotonic() + MAINTAIN_EVERY
                probing = self._check_probes()
                started, waiting = self._dispatch()
                if started:
                    continue
            except Exception:  # the dispatcher must survive anything one prompt or worker does
                log.exception("dispatch failed")
                probing, waiting = False, False
            wait = max(0.0, next_discovery - time.monotonic())
            if probing:
                wait = min(wait, PROBE_POLL)
            if waiting:  # pending prompts wait for a busy, warm worker: look again when one is free, or soon
                with self._lock:
                    self._lock.wait(min(wait, DEFER_RECHECK))
            elif self._idle():
                self.queue.wait_for_pending(wait)
            else:
                with self._lock:
                    self._lock.wait(wait)

    def _idle(self) -> list[Slot]:
        with self._lock:
            return [s for s in self.slots.values() if s.state == "ready"]

    def _dispatch(self) -> tuple[int, bool]:
        """Start what can start now: (prompts started, whether pending prompts were held back)."""
        idle = self._idle()
        if not idle:
            return 0, False
        candidates = []
        for item in self.queue.peek(max(self.options.lookahead, len(idle))):
            plan = item.plan if isinstance(item.plan, Plan) else self._plan(item)
            if plan is not None:
                candidates.append((item, plan))
        if not candidates:
            return 0, False
        with self._lock:
            busy = [s.view for s in self.slots.values() if s.state == "busy"]
            views = {s.view: s for s in idle}
        started = 0
        for item, view in assign(candidates, list(views), busy, self.model):
            taken = self.queue.take(item.prompt_id)
            if taken is None:
                continue  # deleted meanwhile
            self._start(views[view], taken, item.plan)
            started += 1
        return started, started < len(candidates) and started < len(idle)

    def _plan(self, item: QueueItem) -> Plan | None:
        """The prompt's cache keys, as a worker will compute them; a prompt no longer valid here (a
        model removed since it was queued) fails now, without reaching a worker."""
        try:
            validated = item.validated or validate_prompt(item.prompt, self.registry, targets=item.outputs)
            keys = compute_cache_keys(validated.prompt, validated.definitions, validated.graph, validated.outputs)
        except (ValidationError, NodegraphError) as exc:
            taken = self.queue.take(item.prompt_id)
            if taken is not None:
                record_failure(self.queue, self.listener, taken, f"the prompt is no longer valid: {exc}",
                               "ValidationError")
            return None
        item.validated = None  # the plan is all the dispatcher needs; the worker validates again
        item.plan = Plan.of(validated, keys)
        return item.plan

    def _start(self, slot: Slot, item: QueueItem, plan: Plan) -> None:
        with self._lock:
            slot.state, slot.item, item.worker = "busy", item, slot.name
            slot.view.running, slot.view.running_since = plan, time.monotonic()
            slot.view.expected = self.model.cost(plan, slot.view.held)
            confirm, slot.confirm = slot.confirm, []
        thread = threading.Thread(target=self._run, args=(slot, item, confirm), name=f"run-{slot.name}", daemon=True)
        self._runs.add(thread)
        thread.start()

    # -- one prompt on one worker (its own thread) -----------------------------------------------

    def _run(self, slot: Slot, item: QueueItem, confirm: list[tuple[str, ...]]) -> None:
        started = time.perf_counter()
        relay = EventRelay(self.listener, item)
        request = {"prompt_id": item.prompt_id, "prompt": item.prompt, "outputs": item.outputs,
                   "extra_data": {**item.extra_data, **item.secrets}, "confirm": confirm,
                   "wants_preview": self.listener.wants_preview(item.client_id)}
        placed: dict[str, dict[tuple[str, str, str], str]] = {}
        result: dict[str, Any] | None = None
        begun = False
        try:
            for ref in slot.handle.run.remote(request):
                batch = ray.get(ref)
                begun = True
                for entry in batch:
                    if entry[0] == "result":
                        result = entry[1]
                    elif entry[0] == "executed":
                        relay("executed", self._received_files(slot, item, entry[1], entry[2], placed))
                    else:
                        relay(entry[0], entry[1])
        except self._lost as exc:
            self._worker_lost(slot, item, exc, begun)
            self._runs.discard(threading.current_thread())
            return
        except Exception as exc:
            log.exception("prompt %s: worker %s failed", item.prompt_id, slot.name)
            slot.handle.interrupt.remote(item.prompt_id)  # if it still runs, stop it before it gets the next one
            result = {"status": "failure", "message": f"worker {slot.name} failed: {type(exc).__name__}: {exc}"}
        try:
            self._finish(slot, item, result, relay, placed, started)
        finally:
            with self._lock:
                if slot.state == "busy":
                    slot.state = "ready"
                slot.item, slot.view.running = None, None
                self._runs.discard(threading.current_thread())
                self._lock.notify_all()

    def _received_files(self, slot: Slot, item: QueueItem, data: dict[str, Any], files: list[Any],
                        placed: dict[str, dict[tuple[str, str, str], str]]) -> dict[str, Any]:
        if not files:
            return data
        node = data["node"]

        def fetch(ref: tuple[str, str, str], offset: int, length: int) -> bytes:
            return ray.get(slot.handle.read_chunk.remote(ref, offset, length), timeout=PULL_TIMEOUT)

        try:
            stored = self.placer.place(files, fetch)
        except (OSError, UnsafePathError, *self._lost) as exc:  # a full disk, a path outside, a lost worker
            log.error("prompt %s: files of node %s from worker %s not stored: %s", item.prompt_id, node, slot.name, exc)
            return data
        placed.setdefault(node, {}).update(stored)
        with self._lock:
            slot.confirm.extend((item.prompt_id, node, *ref, final) for ref, final in stored.items())
        return {**data, "output": rename_in_ui(data.get("output"), stored)}

    def _finish(self, slot: Slot, item: QueueItem, result: dict[str, Any] | None, relay: EventRelay,
                placed: dict[str, dict[tuple[str, str, str], str]], started: float) -> None:
        if result is None:
            result = {"status": "failure", "message": f"worker {slot.name} ended the prompt without a result"}
        if result["status"] in ("invalid", "failure"):
            kind = "ValidationError" if result["status"] == "invalid" else "InternalError"
            record_failure(self.queue, self.listener, item, result["message"], kind)
            return
        outputs = {node: rename_in_ui(ui, placed.get(node, {})) for node, ui in result["outputs"].items()}
        self.queue.finish(item, history_entry(item, result["status"], outputs, result["messages"]))
        relay.release()
        with self._lock:
            if slot.info.get("incarnation") != result["incarnation"]:  # restarted between two prompts
                slot.view.held = set()
                slot.info["incarnation"] = result["incarnation"]
            self._apply_holdings(slot, result["holdings"])
            for key, class_type, seconds in result["nodes"].values():
                self.model.learn(key, class_type, seconds)
            slot.view.completed += 1
        self.completed += 1
        self.timings.append((time.perf_counter() - started - result["seconds"], result["seconds"]))
        log.info("prompt %s: %s on %s in %.2fs (%d nodes run, %d cached)", item.prompt_id, result["status"],
                 slot.name, result["seconds"], len(result["executed"]), len(result["cached"]))

    def _apply_holdings(self, slot: Slot, delta: dict[str, Any]) -> None:
        slot.view.held.difference_update(delta["drop"])
        slot.view.held.update(delta["add"])
        for key, seconds in delta["add"].items():
            if key not in self.model.key_seconds:
                self.model.learn(key, None, seconds)

    def _worker_lost(self, slot: Slot, item: QueueItem, exc: BaseException, begun: bool) -> None:
        """Re-queue the prompt of a lost worker once (a prompt that was already running when a worker
        or the server was lost is failed: it may be what kills them). Every loss counts, even before
        the first event arrived: a node that kills its process at once may take its events with it."""
        with self._lock:
            slot.state, slot.lost_since, slot.item, slot.view.running = "lost", time.monotonic(), None, None
            slot.view.held, slot.confirm = set(), []
            self._lock.notify_all()
        log.warning("worker %s lost %s prompt %s: %s", slot.name, "while running" if begun else "as it was given",
                    item.prompt_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if self._stop.is_set():
            return  # shutting down: the prompt stays "running" on disk and is recovered at the next start
        item.attempts += 1
        if item.attempts > MAX_RESTARTS:
            record_failure(self.queue, self.listener, item,
                           f"the worker running this prompt was lost {item.attempts} times (last: {slot.name}); "
                           "it was not run again, as it may be what kills workers", "WorkerLost")
        else:
            self.queue.requeue(item)
