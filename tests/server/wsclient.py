"""A small synchronous websocket client for the tests (the `websockets` package)."""
from __future__ import annotations

import json
import time
from typing import Any, Callable

from websockets.sync.client import connect


class WS:
    def __init__(self, url: str, **kw: Any):
        self.conn = connect(url, compression=None, max_size=None, open_timeout=10, **kw).__enter__()

    def recv(self, timeout: float = 10) -> Any:
        message = self.conn.recv(timeout=timeout)
        return json.loads(message) if isinstance(message, str) else message

    def until(self, predicate: Callable[[Any], bool], timeout: float = 15) -> list[Any]:
        """Messages up to and including the first one `predicate` accepts."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching message; got {[m.get('type') if isinstance(m, dict) else 'binary' for m in seen]}")
            message = self.recv(remaining)
            seen.append(message)
            if predicate(message):
                return seen

    def send(self, message: Any) -> None:
        self.conn.send(json.dumps(message))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "WS":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def done(prompt_id: str) -> Callable[[Any], bool]:
    """ComfyUI's classic "finished" signal: executing with node null for this prompt."""
    return lambda m: isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None \
        and m["data"]["prompt_id"] == prompt_id


def all_done(prompt_ids: list[str]) -> Callable[[Any], bool]:
    """Every one of these prompts finished, in whatever order: prompts that run on several workers can
    finish out of queue order, so waiting for each in turn would skip (and miss) an earlier finish."""
    pending = set(prompt_ids)

    def predicate(m: Any) -> bool:
        if isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None:
            pending.discard(m["data"]["prompt_id"])
        return not pending

    return predicate


def of_type(messages: list[Any], kind: str) -> list[dict]:
    return [m for m in messages if isinstance(m, dict) and m["type"] == kind]
