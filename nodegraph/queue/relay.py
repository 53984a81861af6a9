"""From executor events to what clients see: `progress_state` built alongside `executing` and
`progress`, previews, and the final `executing {node: null}` held back until the history is stored.

Shared by every backend, so a prompt run by the local worker thread or by a remote worker sends the
same messages in the same order.
"""
from __future__ import annotations

import io
import logging
import time
from typing import Any, Protocol

from ..executor import RunResult
from .queue import PromptQueue, QueueItem, history_entry

log = logging.getLogger(__name__)

FINAL_EVENTS = frozenset({"execution_success", "execution_error", "execution_interrupted"})


class Listener(Protocol):
    def publish(self, event: str, data: dict[str, Any], client_id: str | None) -> None: ...

    def preview(self, image: Any, data: dict[str, Any], client_id: str | None) -> None: ...

    def wants_preview(self, client_id: str | None) -> bool: ...


class NullListener:
    def publish(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        pass

    def preview(self, image: Any, data: dict[str, Any], client_id: str | None) -> None:
        pass

    def wants_preview(self, client_id: str | None) -> bool:
        return False


class EventRelay:
    """The event sink of one prompt: forwards to the listener, ComfyUI's way."""

    def __init__(self, listener: Listener, item: QueueItem):
        self.listener, self.item = listener, item
        self.client_id = item.client_id
        self.held: list[dict[str, Any]] = []  # `executing {node: null}`: sent after the history is stored
        self.states: dict[str, dict[str, Any]] = {}

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        listener, client_id, states = self.listener, self.client_id, self.states
        if event == "preview":
            listener.preview(data.pop("image"), data, client_id)
            return
        if event == "executing":
            if data.get("node") is None:
                self.held.append(data)
                return
            for state in states.values():
                if state["state"] == "running":
                    state["state"] = "finished"
            states[data["node"]] = _node_state(self.item.prompt_id, data["node"])
            listener.publish(event, data, client_id)
            listener.publish("progress_state", {"prompt_id": self.item.prompt_id, "nodes": dict(states)}, client_id)
            return
        if event == "progress" and data.get("node") in states:
            states[data["node"]].update(value=data["value"], max=data["max"])
        elif event in FINAL_EVENTS and states:
            for state in states.values():
                if state["state"] == "running":
                    state["state"] = "finished" if event == "execution_success" else "error"
            listener.publish("progress_state", {"prompt_id": self.item.prompt_id, "nodes": states}, client_id)
        listener.publish(event, data, client_id)

    def release(self) -> None:
        """Send what was held back (call once the history entry is stored)."""
        held, self.held = self.held, []
        for data in held:
            self.listener.publish("executing", data, self.client_id)


def record_failure(queue: PromptQueue, listener: Listener, item: QueueItem, message: str,
                   exception_type: str = "InternalError") -> None:
    """Finish a prompt that could not run as an `execution_error` without a node, told to its client
    the way a failing node is."""
    now = int(time.time() * 1000)
    client_id = item.client_id
    start = {"prompt_id": item.prompt_id, "timestamp": now}
    error = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
             "exception_message": message, "exception_type": exception_type, "traceback": [],
             "current_inputs": {}, "current_outputs": [], "timestamp": now}
    listener.publish("execution_start", start, client_id)
    listener.publish("execution_error", error, client_id)
    result = RunResult(item.prompt_id, "error", messages=[("execution_start", start), ("execution_error", error)])
    if queue.is_queued(item.prompt_id):
        queue.finish(item, history_entry(item, "error", {}, result.messages))
    listener.publish("executing", {"node": None, "display_node": None, "prompt_id": item.prompt_id}, client_id)


def _node_state(prompt_id: str, node_id: str) -> dict[str, Any]:
    return {"value": 0, "max": 1, "state": "running", "node_id": node_id, "prompt_id": prompt_id,
            "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id}


def encode_jpeg(image: Any) -> bytes | None:
    """A preview (PIL image) as JPEG bytes; None (logged) if it cannot be encoded: a broken preview
    must not break the run."""
    try:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()
    except Exception as exc:
        log.debug("preview not encoded: %s", exc)
        return None
