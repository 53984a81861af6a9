"""The prompt queue and the history, kept in memory for speed and in SQLite for durability.

Every change is committed to `<user dir>/nodegraph.sqlite3` (WAL) before the call returns, so a
crash or `kill -9` loses no queued prompt and no finished result. On start-up a prompt found
"running" was interrupted by the crash: it is put back at the front of the queue once; if it was
already retried once (it may be what crashes the server), it is recorded in the history as failed.
Priority is ComfyUI's: lowest `number` first, ties in arrival order.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger(__name__)

MAX_RESTARTS = 1  # times a prompt that was running during a crash is re-queued before it is failed
SECRET_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")  # never written to disk or history

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,              -- 'pending' | 'running'
    item TEXT NOT NULL,               -- JSON [number, prompt_id, prompt, extra_data, outputs]
    created REAL NOT NULL,            -- ms since the epoch
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    entry TEXT NOT NULL,              -- ComfyUI's history entry, JSON
    job TEXT NOT NULL                 -- the /jobs summary, JSON
);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    created: float = field(default_factory=lambda: time.time() * 1000)
    seq: int = 0
    attempts: int = 0
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)  # memory only
    validated: Any = field(default=None, repr=False)  # a ValidatedPrompt, memory only
    started: float | None = None  # ms
    worker: str | None = None  # which worker runs it (a backend with several workers)
    plan: Any = field(default=None, repr=False)  # what a dispatcher knows of it (cache keys), memory only
    overtaken: int = 0  # times a later prompt started first (cache-aware dispatch), memory only

    @property
    def client_id(self) -> str | None:
        client = self.extra_data.get("client_id")
        return client if isinstance(client, str) else None

    def as_list(self) -> list[Any]:
        """ComfyUI's 5-array queue item."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    def sort_key(self) -> tuple[float, int]:
        return (self.number, self.seq)


def history_entry(item: QueueItem, status: str, outputs: dict[str, Any],
                  messages: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """ComfyUI's history entry for a finished prompt. `status`: success | error | interrupted."""
    return {
        "prompt": item.as_list(),
        "outputs": outputs,
        "status": {"status_str": "success" if status == "success" else "error",
                   "completed": status == "success",
                   "messages": [[event, data] for event, data in messages]},
        "meta": {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                           "real_node_id": node_id} for node_id in outputs},
    }


def _job_summary(item: QueueItem, entry: dict[str, Any], finished: float) -> dict[str, Any]:
    """The `/jobs` list item of a finished prompt (stored next to the entry, read without parsing it)."""
    status_str = entry["status"]["status_str"]
    messages = entry["status"]["messages"]
    interrupted = any(event == "execution_interrupted" for event, _ in messages)
    error = next((data for event, data in messages if event == "execution_error"), None)
    previews = [(node_id, kind, file) for node_id, ui in entry["outputs"].items() if isinstance(ui, dict)
                for kind, files in ui.items() if isinstance(files, list)
                for file in files if isinstance(file, dict) and "filename" in file]
    preview = None
    if previews:
        node_id, kind, file = previews[0]
        preview = {"filename": file["filename"], "subfolder": file.get("subfolder", ""),
                   "type": file.get("type", "output"), "nodeId": node_id, "mediaType": kind}
    workflow = (item.extra_data.get("extra_pnginfo") or {}).get("workflow") if isinstance(
        item.extra_data.get("extra_pnginfo"), dict) else None
    job = {"id": item.prompt_id,
           "status": "completed" if status_str == "success" else "cancelled" if interrupted else "failed",
            "priority": item.number, "create_time": int(item.created),
            "execution_start_time": int(item.started) if item.started else None,
           "execution_end_time": int(finished), "outputs_count": len(previews), "preview_output": preview,
           "execution_error": error,
           "workflow_id": workflow.get("id") if isinstance(workflow, dict) and isinstance(workflow.get("id"), str) else None}
    if item.worker is not None:
        job["worker"] = item.worker
    return job


class PromptQueue:
    """Thread-safe: the server's event loop adds and inspects, the worker thread takes and finishes.

    `on_change()` is called after every change of what is queued or running (the server
    broadcasts the websocket `status` from it).
    """

    def __init__(self, path: str | Path, *, history_size: int = 10000,
                 on_change: Callable[[], None] | None = None):
        self.path = Path(path)
        self.history_size = max(1, int(history_size))
        self.on_change = on_change or (lambda: None)
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str]] = []
        self._pending: dict[str, QueueItem] = {}
        self._running: dict[str, QueueItem] = {}
        self._seq = itertools.count(1)
        self._counter = 0  # next server-assigned number
        self._closed = False
        self._woken = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a process crash
        self._db.executescript(_SCHEMA)
        self.recovered: list[tuple[str, str]] = []  # (prompt_id, "requeued" | "failed")
        self._load()

    # -- start-up -------------------------------------------------------------------------------

    def _load(self) -> None:
        rows = self._db.execute("SELECT prompt_id, number, seq, state, item, created, attempts FROM queue "
                                "ORDER BY seq").fetchall()
        top = self._db.execute("SELECT MAX(seq) FROM queue").fetchone()[0] or 0
        self._seq = itertools.count(top + 1)
        numbers = [r[1] for r in rows]
        for (text,) in self._db.execute("SELECT entry FROM history ORDER BY seq DESC LIMIT 1"):
            numbers.append(json.loads(text)["prompt"][0])
        self._counter = int(max((abs(n) for n in numbers if isinstance(n, (int, float))), default=-1)) + 1
        for prompt_id, number, seq, state, text, created, attempts in rows:
            data = json.loads(text)
            number = int(number) if float(number).is_integer() else number
            item = QueueItem(number, prompt_id, data[2], data[3], data[4], created, seq, attempts)
            if state == "running":
                item.attempts += 1
                if item.attempts > MAX_RESTARTS:
                    self._fail_recovered(item)
                    continue
                log.warning("prompt %s was running when the server stopped; queued again", prompt_id)
                self.recovered.append((prompt_id, "requeued"))
                with self._db:
                    self._db.execute("UPDATE queue SET state='pending', attempts=? WHERE prompt_id=?",
                                     (item.attempts, prompt_id))
            self._pending[prompt_id] = item
            heapq.heappush(self._heap, (item.number, item.seq, prompt_id))

    def _fail_recovered(self, item: QueueItem) -> None:
        log.error("prompt %s stopped the server %d times; recorded as failed", item.prompt_id, item.attempts)
        now = time.time() * 1000
        message = (f"the server stopped while this prompt was running ({item.attempts} times); "
                   "it was not run again")
        error = {"prompt_id": item.prompt_id, "node_id": None, "node_type": None, "executed": [],
                 "exception_message": message, "exception_type": "ServerRestart", "traceback": [],
                 "current_inputs": {}, "current_outputs": [], "timestamp": int(now)}
        entry = history_entry(item, "error", {}, [("execution_error", error)])
        self._store_finished(item, entry, now)
        self.recovered.append((item.prompt_id, "failed"))

    # -- queue ----------------------------------------------------------------------------------

    def put(self, prompt: dict[str, Any], extra_data: dict[str, Any], outputs: list[str], *,
            prompt_id: str | None = None, number: float | None = None, front: bool = False,
            validated: Any = None) -> QueueItem:
        """Queue a prompt; it is on disk when this returns. Raises ValueError for a duplicate id."""
        extra = {k: v for k, v in extra_data.items() if k not in SECRET_KEYS}
        secrets = {k: extra_data[k] for k in SECRET_KEYS if k in extra_data}
        with self._cond:
            if self._closed:
                raise RuntimeError("the queue is closed")
            prompt_id = prompt_id or str(uuid.uuid4())
            if prompt_id in self._pending or prompt_id in self._running:
                raise ValueError(f"prompt id {prompt_id!r} is already queued")
            if number is None:
                number = -self._counter if front else self._counter
                self._counter += 1
            item = QueueItem(number, prompt_id, prompt, extra, list(outputs), seq=next(self._seq),
                             secrets=secrets, validated=validated)
            with self._db:
                self._db.execute("INSERT INTO queue (prompt_id, number, seq, state, item, created) "
                                 "VALUES (?, ?, ?, 'pending', ?, ?)",
                                 (prompt_id, number, item.seq, _dumps(item.as_list()), item.created))
            self._pending[prompt_id] = item
            heapq.heappush(self._heap, (number, item.seq, prompt_id))
            self._cond.notify()
        self.on_change()
        return item

    def get(self, timeout: float | None = None) -> QueueItem | None:
        """The next prompt by priority, now marked running; None on timeout or when closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed or self._woken:
                    self._woken = False
                    return None
                head = self._head()
                if head is not None:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._mark_running(head)
        self.on_change()
        return item

    def _head(self) -> str | None:
        while self._heap and self._heap[0][2] not in self._pending:
            heapq.heappop(self._heap)  # deleted (or taken out of order) while pending
        return self._heap[0][2] if self._heap else None

    def _mark_running(self, prompt_id: str) -> QueueItem:
        item = self._pending[prompt_id]
        item.started = time.time() * 1000
        with self._db:
            self._db.execute("UPDATE queue SET state='running' WHERE prompt_id=?", (prompt_id,))
        self._running[prompt_id] = item
        del self._pending[prompt_id]
        return item

    # -- for a dispatcher that chooses among pending prompts (several workers) ------------------

    def wait_for_pending(self, timeout: float) -> bool:
        """Wait until a prompt is pending (True), or timeout, `wake()` or close (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._closed or self._woken):
                if self._head() is not None:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            self._woken = False
            return False

    def peek(self, n: int) -> list[QueueItem]:
        """The first `n` pending prompts in run order (they stay pending)."""
        with self._cond:
            # The heap may hold stale entries (deleted, taken out of order, requeued twice): skip them.
            ids = [p for _, _, p in heapq.nsmallest(n + len(self._heap) - len(self._pending), self._heap)
                   if p in self._pending]
            return [self._pending[p] for p in dict.fromkeys(ids)][:n]

    def take(self, prompt_id: str) -> QueueItem | None:
        """Mark this pending prompt running (it may be behind others); None if it is no longer pending."""
        with self._cond:
            if prompt_id not in self._pending:
                return None
            item = self._mark_running(prompt_id)
        self.on_change()
        return item

    def requeue(self, item: QueueItem) -> None:
        """Put a running prompt back, keeping its place (its number and arrival), with its `attempts`
        stored: its worker was lost. The caller decides whether it may run again (MAX_RESTARTS)."""
        with self._cond:
            if self._running.pop(item.prompt_id, None) is None:
                return
            item.started, item.worker = None, None
            with self._db:
                self._db.execute("UPDATE queue SET state='pending', attempts=? WHERE prompt_id=?",
                                 (item.attempts, item.prompt_id))
            self._pending[item.prompt_id] = item
            heapq.heappush(self._heap, (item.number, item.seq, item.prompt_id))
            self._cond.notify_all()
        self.on_change()

    def finish(self, item: QueueItem, entry: dict[str, Any]) -> None:
        """Record the history entry of a running prompt and take it off the queue (one transaction)."""
        with self._cond:
            self._store_finished(item, entry, time.time() * 1000)
            self._running.pop(item.prompt_id, None)
        self.on_change()

    def _store_finished(self, item: QueueItem, entry: dict[str, Any], finished: float) -> None:
        text, job = _dumps(entry), _dumps(_job_summary(item, entry, finished))
        with self._db:
            self._db.execute("DELETE FROM queue WHERE prompt_id=?", (item.prompt_id,))
            self._db.execute("DELETE FROM history WHERE prompt_id=?", (item.prompt_id,))
            cursor = self._db.execute("INSERT INTO history (prompt_id, entry, job) VALUES (?, ?, ?)",
                                      (item.prompt_id, text, job))
            self._db.execute("DELETE FROM history WHERE seq <= ?", (cursor.lastrowid - self.history_size,))

    def delete(self, prompt_ids: Iterable[str]) -> list[str]:
        """Remove pending prompts (running ones are stopped with an interrupt, not here)."""
        with self._cond:
            gone = [p for p in dict.fromkeys(prompt_ids) if isinstance(p, str) and p in self._pending]
            if gone:
                with self._db:
                    self._db.executemany("DELETE FROM queue WHERE prompt_id=? AND state='pending'",
                                         [(p,) for p in gone])
                for p in gone:
                    del self._pending[p]
        if gone:
            self.on_change()
        return gone

    def clear(self) -> int:
        return len(self.delete(list(self._pending)))

    def snapshot(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """(running, pending in run order)."""
        with self._cond:
            return list(self._running.values()), sorted(self._pending.values(), key=QueueItem.sort_key)

    def remaining(self) -> int:
        """Pending + running: ComfyUI's `queue_remaining`. Under the lock: a prompt moving from pending
        to running must never read as 0 (clients take 0 for "my prompt is done")."""
        with self._cond:
            return len(self._pending) + len(self._running)

    def is_queued(self, prompt_id: str) -> bool:
        with self._cond:
            return prompt_id in self._pending or prompt_id in self._running

    def status(self, prompt_id: str) -> str | None:
        with self._cond:
            if prompt_id in self._running:
                return "running"
            if prompt_id in self._pending:
                return "pending"
            return None

    # -- history --------------------------------------------------------------------------------

    def history_json(self, max_items: int | None = None, offset: int = -1) -> str:
        """`GET /history` as JSON text, built from the stored entries without parsing them."""
        with self._cond:
            if offset is None or offset < 0:
                if max_items is None:
                    rows = self._db.execute("SELECT prompt_id, entry FROM history ORDER BY seq").fetchall()
                else:
                    rows = self._db.execute("SELECT prompt_id, entry FROM (SELECT seq, prompt_id, entry FROM "
                                            "history ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                                            (max(0, max_items),)).fetchall()
            else:
                rows = self._db.execute("SELECT prompt_id, entry FROM history ORDER BY seq LIMIT ? OFFSET ?",
                                        (-1 if max_items is None else max(0, max_items), offset)).fetchall()
        return "{" + ",".join(f"{json.dumps(pid)}:{entry}" for pid, entry in rows) + "}"

    def history_entry_json(self, prompt_id: str) -> str | None:
        with self._cond:
            row = self._db.execute("SELECT entry FROM history WHERE prompt_id=?", (prompt_id,)).fetchone()
        return row[0] if row else None

    def history_ids(self) -> list[str]:
        with self._cond:
            return [r[0] for r in self._db.execute("SELECT prompt_id FROM history ORDER BY seq")]

    def delete_history(self, prompt_ids: Iterable[str]) -> None:
        ids = [(p,) for p in prompt_ids if isinstance(p, str)]
        with self._cond, self._db:
            self._db.executemany("DELETE FROM history WHERE prompt_id=?", ids)

    def clear_history(self) -> None:
        with self._cond, self._db:
            self._db.execute("DELETE FROM history")

    # -- jobs (the newer frontend's unified view of queue and history) --------------------------

    def jobs(self, statuses: set[str] | None = None) -> list[dict[str, Any]]:
        """Every job, newest first: running, pending, then finished ones."""
        running, pending = self.snapshot()
        jobs = [self._live_job(item, "in_progress") for item in running]
        jobs += [self._live_job(item, "pending") for item in pending]
        with self._cond:
            rows = self._db.execute("SELECT job FROM history ORDER BY seq DESC").fetchall()
        jobs += [json.loads(job) for (job,) in rows]
        return [j for j in jobs if not statuses or j["status"] in statuses]

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        with self._cond:
            item = self._running.get(prompt_id) or self._pending.get(prompt_id)
            if item is not None:
                detail = self._live_job(item, "in_progress" if prompt_id in self._running else "pending")
                detail["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
                return detail
            row = self._db.execute("SELECT job, entry FROM history WHERE prompt_id=?", (prompt_id,)).fetchone()
        if row is None:
            return None
        job, entry = json.loads(row[0]), json.loads(row[1])
        job.update(workflow={"prompt": entry["prompt"][2], "extra_data": entry["prompt"][3]},
                   outputs=entry["outputs"], execution_status=entry["status"],
                   execution_meta=entry.get("meta", {}), update_time=job["execution_end_time"])
        return job

    @staticmethod
    def _live_job(item: QueueItem, status: str) -> dict[str, Any]:
        job = {"id": item.prompt_id, "status": status, "priority": item.number, "create_time": int(item.created),
               "execution_start_time": int(item.started) if item.started else None,
               "execution_end_time": None, "outputs_count": 0, "preview_output": None, "execution_error": None,
               "workflow_id": None}
        if item.worker is not None:
            job["worker"] = item.worker
        return job

    # -- life cycle -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Make a waiting `get()` return None now (the worker is stopping)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover - closing twice
                pass


def finite_number(value: Any) -> float | None:
    """A JSON number usable as a priority, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
