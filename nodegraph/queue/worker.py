"""The worker: one thread that takes prompts from the queue by priority and runs them, one at a
time, on the executor, forwarding the executor's events to a listener (the websocket hub).

Per prompt: `execution_start` ... `execution_success|error|interrupted`, then the history entry
is stored, then the queue `status`, then `executing {node: null}` — ComfyUI's order, so a client
that sees "done" can read the history right away.
"""
from __future__ import annotations

import collections
import gc
import logging
import sys
import threading
import time
from typing import Any

from ..errors import NodegraphError, ValidationError
from ..executor import Executor
from ..progress import CancellationToken
from ..registry import NodeRegistry
from ..validation import validate_prompt
from .queue import PromptQueue, QueueItem, history_entry
from .relay import EventRelay, Listener, NullListener, record_failure

log = logging.getLogger(__name__)


class Worker:
    """The embedded backend (see backend.Backend): one thread, one executor, in the server process."""

    name = "local"

    def __init__(self, queue: PromptQueue, registry: NodeRegistry, executor: Executor,
                 listener: Listener | None = None):
        self.queue, self.registry, self.executor = queue, registry, executor
        self.listener: Listener = listener or NullListener()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[QueueItem, CancellationToken] | None = None
        self._free = {"unload_models": False, "free_memory": False}
        # (seconds in the worker beyond execution, execution seconds) of recent prompts
        self.timings: collections.deque[tuple[float, float]] = collections.deque(maxlen=5000)
        self.completed = 0

    # -- control (any thread) -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nodegraph-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.interrupt()
        self.queue.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Cancel the running prompt (only if it is `prompt_id`, when given). True if one was."""
        with self._lock:
            current = self._current
        if current is None or (prompt_id is not None and current[0].prompt_id != prompt_id):
            return False
        current[1].cancel()
        return True

    def request_free(self, *, unload_models: bool = False, free_memory: bool = False) -> None:
        """ComfyUI's `/free`: applied after the running prompt (right away when idle)."""
        with self._lock:
            self._free["unload_models"] |= unload_models
            self._free["free_memory"] |= free_memory
            idle = self._current is None
        if idle:
            self._apply_free()

    def cache_stats(self) -> dict[str, Any]:
        return self.executor.cache.stats()

    def overhead_ms(self) -> list[float]:
        return [t[0] * 1000 for t in list(self.timings)]

    def workers(self) -> list[dict[str, Any]] | None:
        return None

    @property
    def current(self) -> QueueItem | None:
        current = self._current
        return current[0] if current else None

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.5)
            if item is None:
                continue
            try:
                self._run(item)
            except Exception:  # never let one prompt kill the worker
                log.exception("prompt %s: unexpected failure in the worker", item.prompt_id)
                self._record_failure(item, "internal error in the worker; see the server log")
            finally:
                with self._lock:
                    self._current = None
            self._apply_free()

    def _run(self, item: QueueItem) -> None:
        started = time.perf_counter()
        token = CancellationToken()
        with self._lock:
            self._current = (item, token)
        client_id = item.client_id
        try:
            validated = item.validated or validate_prompt(item.prompt, self.registry, targets=item.outputs)
        except (ValidationError, NodegraphError) as exc:
            # Queued before a restart and no longer valid (a model file was removed, a node pack is gone).
            self._record_failure(item, f"the prompt is no longer valid: {exc}", "ValidationError")
            return
        item.validated = None  # the queue item outlives the run only as data
        relay = EventRelay(self.listener, item)
        set_preview_method(self.listener.wants_preview(client_id))
        extra = {**item.extra_data, **item.secrets}
        result = self.executor.execute(validated, prompt_id=item.prompt_id, extra_data=extra, sink=relay,
                                       token=token)
        self.queue.finish(item, history_entry(item, result.status, result.outputs, result.messages))
        relay.release()
        self.completed += 1
        self.timings.append((time.perf_counter() - started - result.seconds, result.seconds))
        log.info("prompt %s: %s in %.2fs (%d nodes run, %d cached)", item.prompt_id, result.status,
                 result.seconds, len(result.executed), len(result.cached))

    def _record_failure(self, item: QueueItem, message: str, exception_type: str = "InternalError") -> None:
        record_failure(self.queue, self.listener, item, message, exception_type)

    def _apply_free(self) -> None:
        with self._lock:
            flags, self._free = self._free, {"unload_models": False, "free_memory": False}
        free_resources(self.executor, **flags)


def free_resources(executor: Executor, *, unload_models: bool, free_memory: bool) -> None:
    """What `/free` does in a worker: `free_memory` empties the output cache, both unload models."""
    if free_memory:
        executor.reset()
        log.info("freed memory: caches cleared")
    if unload_models or free_memory:
        unload = getattr(sys.modules.get("nodes"), "unload_models", None)
        if callable(unload):
            unload()
        gc.collect()


def set_preview_method(wanted: bool) -> None:
    """Sampler previews cost time: the node library makes them only while someone watches."""
    previews = sys.modules.get("nodes.sd.previews")  # never imported here (it needs torch)
    if previews is not None and hasattr(previews, "set_method"):
        previews.set_method("latent2rgb" if wanted else "none")

