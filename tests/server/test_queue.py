"""The persistent queue on its own: priority order, durability, the restart policy."""
from __future__ import annotations

import json
import sqlite3

from nodegraph.queue import PromptQueue, history_entry
from nodegraph.queue.queue import MAX_RESTARTS

PROMPT = {"1": {"class_type": "Number", "inputs": {"value": 1}}}


def test_priority_order_and_fifo_ties(tmp_path):
    queue = PromptQueue(tmp_path / "q.sqlite3")
    a = queue.put(PROMPT, {}, ["1"])
    b = queue.put(PROMPT, {}, ["1"], front=True)
    c = queue.put(PROMPT, {}, ["1"], number=5)
    d = queue.put(PROMPT, {}, ["1"], number=5)
    assert [queue.get(0).prompt_id for _ in range(4)] == [b.prompt_id, a.prompt_id, c.prompt_id, d.prompt_id]
    assert queue.get(0.01) is None
    assert queue.remaining() == 4  # all running, none finished


def test_everything_survives_reopening(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = PromptQueue(path)
    done = queue.put(PROMPT, {"client_id": "c", "api_key_comfy_org": "secret"}, ["1"])
    waiting = [queue.put(PROMPT, {}, ["1"]) for _ in range(3)]
    item = queue.get(0)
    assert item.secrets == {"api_key_comfy_org": "secret"} and "api_key_comfy_org" not in item.extra_data
    queue.finish(item, history_entry(item, "success", {"1": {"text": ["x"]}}, []))
    queue.close()

    again = PromptQueue(path)
    assert [i.prompt_id for i in again.snapshot()[1]] == [w.prompt_id for w in waiting]
    history = json.loads(again.history_json())
    assert list(history) == [done.prompt_id] and history[done.prompt_id]["outputs"] == {"1": {"text": ["x"]}}
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("q.sqlite3*"))
    assert b"secret" not in on_disk
    new = again.put(PROMPT, {}, ["1"])
    assert new.number > max(w.number for w in waiting)  # numbering continues


def test_a_prompt_running_at_a_crash_is_requeued_once_then_failed(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = PromptQueue(path)
    crashing = queue.put(PROMPT, {}, ["1"])
    later = queue.put(PROMPT, {}, ["1"])
    assert queue.get(0).prompt_id == crashing.prompt_id
    # no close(): the process dies here
    for attempt in range(1, MAX_RESTARTS + 1):
        queue = PromptQueue(path)
        assert queue.recovered == [(crashing.prompt_id, "requeued")]
        assert queue.get(0).prompt_id == crashing.prompt_id  # first again: it kept its number
    queue = PromptQueue(path)
    assert queue.recovered == [(crashing.prompt_id, "failed")]
    entry = json.loads(queue.history_entry_json(crashing.prompt_id))
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][0][1]["exception_type"] == "ServerRestart"
    assert queue.get(0).prompt_id == later.prompt_id
    job = queue.job(crashing.prompt_id)
    assert job["status"] == "failed"


def test_the_database_is_wal(tmp_path):
    PromptQueue(tmp_path / "q.sqlite3").close()
    mode = sqlite3.connect(tmp_path / "q.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_dispatcher_can_take_prompts_out_of_order_and_give_them_back(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = PromptQueue(path)
    assert queue.wait_for_pending(0.01) is False
    a, b, c = (queue.put(PROMPT, {}, ["1"]) for _ in range(3))
    assert queue.wait_for_pending(0.01) is True
    assert [i.prompt_id for i in queue.peek(2)] == [a.prompt_id, b.prompt_id]
    taken = queue.take(b.prompt_id)  # the second one first (a worker already holds its model)
    assert taken is b and queue.status(b.prompt_id) == "running"
    assert queue.take(b.prompt_id) is None  # no longer pending
    assert [i.prompt_id for i in queue.peek(5)] == [a.prompt_id, c.prompt_id]
    assert queue.get(0).prompt_id == a.prompt_id  # the heap skips what was taken out of order
    taken.attempts += 1
    queue.requeue(taken)  # its worker was lost: back in its place, ahead of c
    assert [i.prompt_id for i in queue.peek(5)] == [b.prompt_id, c.prompt_id]
    queue.close()
    again = PromptQueue(path)  # the attempt is on disk: the poison-prompt rule counts it after a restart
    assert again._pending[b.prompt_id].attempts == 1 and again.status(a.prompt_id) == "pending"
    assert again.recovered == [(a.prompt_id, "requeued")]
