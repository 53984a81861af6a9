"""Workers that die, join, leave or do not match: no prompt lost or run twice into the history, a
prompt that kills two workers failed with a clear error, mismatched workers refused by name."""
from __future__ import annotations

import os
import signal
import time

import pytest

from nodegraph import __version__
from nodegraph.queue import ray_runtime as runtime
from tests.server.ray_support import wait_workers_ready
from tests.server.server_nodes import number_prompt, slow_prompt
from tests.server.wsclient import WS, done

from .conftest import REGISTRY, start_server
from .scale_nodes import kill_prompt

pytestmark = pytest.mark.ray


def _worker(server, name: str) -> dict:
    return next(w for w in server.state.backend.workers() if w["name"] == name)


def _wait(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_worker_killed_mid_prompt_loses_nothing(ray_runtime, tmp_path):
    server = start_server(tmp_path)
    try:
        with WS(server.ws_url + "?clientId=k") as ws:
            ws.recv()
            victim_prompt = server.queue(slow_prompt(1.0, steps=150, delay=0.02), client_id="k")["prompt_id"]
            ws.until(lambda m: m["type"] == "progress" and m["data"]["value"] >= 3, timeout=60)
            others = [server.queue(number_prompt(float(i)), client_id="k")["prompt_id"] for i in range(4)]
            victim = server.get("/queue").json()["running_on"][victim_prompt]
            old = _worker(server, victim)
            os.kill(old["pid"], signal.SIGKILL)
            ws.until(done(victim_prompt), timeout=120)
            for prompt_id in others:
                server.wait_history(prompt_id, timeout=60)
        history = server.get("/history").json()
        assert sorted(history) == sorted([victim_prompt, *others])  # every prompt, each once
        assert all(entry["status"]["status_str"] == "success" for entry in history.values())
        survivor = server.get(f"/jobs/{victim_prompt}").json()["worker"]
        assert survivor != victim  # it ran again, on the other worker
        assert [m[0] for m in history[victim_prompt]["status"]["messages"]].count("execution_start") == 1

        # Ray restarts the killed actor; it answers as a new incarnation and takes work again.
        _wait(lambda: _worker(server, victim)["state"] == "ready" and _worker(server, victim)["pid"] != old["pid"],
              what="the killed worker to come back")
        assert _worker(server, victim)["incarnation"] != old["incarnation"]
        ids = [server.queue(slow_prompt(float(10 + i), steps=10, delay=0.05))["prompt_id"] for i in range(2)]
        for prompt_id in ids:
            server.wait_history(prompt_id)
        assert {server.get(f"/jobs/{p}").json()["worker"] for p in ids} == {victim, survivor}
    finally:
        server.stop()


def test_a_prompt_that_kills_two_workers_is_failed_with_a_clear_error(ray_runtime, tmp_path):
    server = start_server(tmp_path)
    try:
        poison = server.queue(kill_prompt(), client_id="p")["prompt_id"]
        entry = server.wait_history(poison, timeout=120)
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        error = dict(entry["status"]["messages"])["execution_error"]
        assert error["exception_type"] == "WorkerLost"
        assert "lost 2 times" in error["exception_message"] and "not run again" in error["exception_message"]
        assert server.get(f"/jobs/{poison}").json()["status"] == "failed"
        # The queue goes on once Ray has restarted the workers.
        after = server.wait_history(server.queue(number_prompt(2.0))["prompt_id"], timeout=120)
        assert after["outputs"] == {"3": {"text": ["4.0"]}}
        assert len(server.get("/history").json()) == 2
    finally:
        server.stop()


def _joined_config(server, factory: str) -> dict:
    layout = server.layout
    return {"owner": "joined", "registry_factory": factory, "registry_kwargs": {}, "cache_budget": 64 * 1024**2,
            "folders": {"base": str(layout.base), "models": [str(m) for m in layout.models],
                        "input": str(layout.input), "user": str(layout.user)}}


def test_a_worker_that_joins_later_gets_work_and_a_mismatched_one_is_refused(ray_runtime, tmp_path, monkeypatch):
    import ray

    from nodegraph.queue import ray_backend
    server = start_server(tmp_path, workers=1)
    options = server.state.backend.options
    extra = runtime.make_worker("worker-elsewhere-0", _joined_config(server, REGISTRY), options, gpus=0)
    other = runtime.make_worker("worker-old-0", _joined_config(server, "tests.server.server_nodes:make_registry"),
                                    options, gpus=0)
    try:
        wait_workers_ready(server, 2)
        ids = [server.queue(slow_prompt(float(i), steps=20, delay=0.05))["prompt_id"] for i in range(2)]
        for prompt_id in ids:
            server.wait_history(prompt_id)
        assert {server.get(f"/jobs/{p}").json()["worker"] for p in ids} == {"worker-0", "worker-elsewhere-0"}

        _wait(lambda: any(w["name"] == "worker-old-0" and w["state"] == "refused" for w in server.state.backend.workers()),
              what="the mismatched worker to be refused")
        refused = _worker(server, "worker-old-0")
        reason = ray.get(other.describe.remote(), timeout=60)["refused"]
        assert reason == refused["refused"]
        library = server.state.backend.library
        assert f"node library {refused['library']}" in reason and f"node library {library}" in reason
        assert f"nodegraph {__version__}" in reason  # both versions named (the same here; the libraries differ)
        for i in range(3):
            server.wait_history(server.queue(number_prompt(float(i)))["prompt_id"])
        assert ray.get(other.describe.remote(), timeout=60)["runs"] == 0

        # Another nodegraph version (the server pretends to be newer): refused, both versions named.
        monkeypatch.setattr(ray_backend, "__version__", "9.9.9")
        older = runtime.make_worker("worker-older-0", _joined_config(server, REGISTRY), options, gpus=0)
        _wait(lambda: any(w["name"] == "worker-older-0" and w["state"] == "refused"
                          for w in server.state.backend.workers()), what="the older worker to be refused")
        reason = _worker(server, "worker-older-0")["refused"]
        assert f"worker-older-0 runs nodegraph {__version__}" in reason
        assert "this server runs nodegraph 9.9.9" in reason
        ray.kill(older, no_restart=True)

        ray.kill(extra, no_restart=True)  # it leaves: the server stops counting on it
        _wait(lambda: all(w["name"] != "worker-elsewhere-0" for w in server.state.backend.workers()),
              what="the server to notice the worker left")
        assert server.wait_history(server.queue(number_prompt(9.0))["prompt_id"])["status"]["completed"]
    finally:
        for handle in (extra, other):
            try:
                ray.kill(handle, no_restart=True)
            except Exception:
                pass
        server.stop()
