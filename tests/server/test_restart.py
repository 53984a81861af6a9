"""Kill the server process hard (SIGKILL) in the middle of a prompt, start it again on the same
user folder: every queued prompt completes, none is lost or run twice into the history."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from .server_nodes import number_prompt, slow_prompt

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(base: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tests.server.toy_server", str(base), str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/prompt", timeout=1)
            return process
        except requests.ConnectionError:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode())
            time.sleep(0.05)
    process.kill()
    raise TimeoutError("server did not start")


def test_kill_9_during_the_first_prompt_loses_nothing(tmp_path):
    base, port = tmp_path / "home", _free_port()
    url = f"http://127.0.0.1:{port}"
    process = _start(base, port)
    try:
        first = requests.post(url + "/prompt", json={"prompt": slow_prompt(steps=400, delay=0.01)}).json()["prompt_id"]
        others = [requests.post(url + "/prompt", json={"prompt": number_prompt(float(i))}).json()["prompt_id"]
                  for i in range(4)]
        deadline = time.monotonic() + 10
        while not requests.get(url + "/queue").json()["queue_running"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # well inside the first prompt
        assert requests.get(url + f"/history/{first}").json() == {}
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        process.stderr.close()

    process = _start(base, port)
    try:
        deadline = time.monotonic() + 30
        while requests.get(url + "/prompt").json()["exec_info"]["queue_remaining"]:
            assert time.monotonic() < deadline, "queue did not drain after the restart"
            time.sleep(0.05)
        history = requests.get(url + "/history").json()
        assert sorted(history) == sorted([first, *others])  # every prompt, each once
        assert all(entry["status"]["status_str"] == "success" for entry in history.values())
        assert list(history)[0] == first  # the interrupted prompt ran again first
        assert requests.get(url + "/queue").json() == {"queue_running": [], "queue_pending": []}
    finally:
        process.terminate()
        process.wait(10)
        process.stderr.close()
