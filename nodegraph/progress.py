"""Progress reports and cancellation from inside a running node.

The executor sets a context (prompt, node, event sink, cancellation token) around each node call;
long nodes call `ProgressBar.update` / `check_cancelled()` without knowing who listens. Each
progress report also polls the token, so a cancel lands within one sampler step.
"""
from __future__ import annotations

import contextlib
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import ExecutionInterrupted

EventSink = Callable[[str, dict[str, Any]], None]


class CancellationToken:
    """Per-prompt cancel flag, set from any thread, polled by the executor and by long nodes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise ExecutionInterrupted("the run was interrupted")


@dataclass
class NodeContext:
    prompt_id: str
    node_id: str
    emit: EventSink
    token: CancellationToken


_current: ContextVar[NodeContext | None] = ContextVar("nodegraph_node_context", default=None)


@contextlib.contextmanager
def node_context(context: NodeContext) -> Iterator[NodeContext]:
    reset = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(reset)


def current_node() -> NodeContext | None:
    return _current.get()


def check_cancelled() -> None:
    """Raise ExecutionInterrupted if the running prompt was cancelled; a no-op outside a run."""
    context = _current.get()
    if context is not None:
        context.token.raise_if_cancelled()


def report_progress(value: int, total: int, preview: Any = None) -> None:
    """Send a `progress` event for the running node (and a `preview` event with an image)."""
    context = _current.get()
    if context is None:
        return
    context.token.raise_if_cancelled()
    context.emit("progress", {"value": int(value), "max": int(total), "prompt_id": context.prompt_id,
                              "node": context.node_id})
    if preview is not None:
        context.emit("preview", {"image": preview, "prompt_id": context.prompt_id, "node": context.node_id})
    context.token.raise_if_cancelled()


class ProgressBar:
    """Same shape as ComfyUI's `comfy.utils.ProgressBar`, so ported nodes keep working."""

    def __init__(self, total: int, node_id: str | None = None):
        self.total = int(total)
        self.current = 0

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = int(total)
        self.current = min(int(value), self.total) if self.total else int(value)
        report_progress(self.current, self.total, preview)

    def update(self, value: int = 1) -> None:
        self.update_absolute(self.current + value, self.total)
