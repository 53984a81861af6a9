"""The commands: `nodegraph serve --backend ray` killed hard and started again while its workers live
on, `nodegraph worker` joining and leaving, and the start-up errors (unreachable cluster, no ray)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from nodegraph import __version__
from tests.server.live import LiveServer
from tests.server.ray_support import kill_workers, ray_options, wait_workers_ready
from tests.server.server_nodes import number_prompt, slow_prompt

from . import scale_nodes
from .conftest import REGISTRY

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
HIDE_RAY = """
import sys, importlib.abc
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
sys.meta_path.insert(0, Hide())
from nodegraph.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodegraph(*args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nodegraph.cli", *args], cwd=ROOT, **popen)


def _serve(base: Path, port: int, address: str, namespace: str) -> subprocess.Popen:
    process = _nodegraph("-q", "--base-dir", str(base), "serve", "--port", str(port), "--preview-method", "none",
                         "--backend", "ray", "--ray-address", address, "--ray-namespace", namespace, "--workers", "2",
                         "--cpus-per-worker", "0", "--node-library", REGISTRY,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            workers = requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=5).json()["workers"]
            if sum(w["state"] in ("ready", "busy") for w in workers) == 2:
                return process
        except requests.ConnectionError:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode())
        time.sleep(0.1)
    process.kill()
    raise TimeoutError("server did not start")


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.kill(process.pid, sig)
    process.wait(30)
    if process.stderr:
        process.stderr.close()


def test_kill_9_of_the_server_loses_nothing_and_the_restart_adopts_the_live_workers(ray_runtime, tmp_path):
    import ray
    address, namespace = ray.get_runtime_context().gcs_address, f"test-{uuid.uuid4().hex[:8]}"
    base, port = tmp_path / "home", _free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(base, port, address, namespace)
    try:
        pids = {w["name"]: w["pid"] for w in requests.get(url + "/system_stats").json()["workers"]}
        first = requests.post(url + "/prompt", json={"prompt": slow_prompt(steps=300, delay=0.02)}).json()["prompt_id"]
        others = [requests.post(url + "/prompt", json={"prompt": number_prompt(float(i))}).json()["prompt_id"]
                  for i in range(4)]
        deadline = time.monotonic() + 30
        while first not in requests.get(url + "/queue").json().get("running_on", {}):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # well inside the first prompt
        assert requests.get(url + f"/history/{first}").json() == {}
    finally:
        _stop(process, signal.SIGKILL)

    process = _serve(base, port, address, namespace)
    try:
        deadline = time.monotonic() + 120
        while requests.get(url + "/prompt").json()["exec_info"]["queue_remaining"]:
            assert time.monotonic() < deadline, "queue did not drain after the restart"
            time.sleep(0.1)
        history = requests.get(url + "/history").json()
        assert sorted(history) == sorted([first, *others])  # every prompt, each once
        assert all(entry["status"]["status_str"] == "success" for entry in history.values())
        workers = requests.get(url + "/system_stats").json()["workers"]
        assert {w["name"]: w["pid"] for w in workers} == pids  # the same processes, adopted, not restarted
    finally:
        _stop(process)
    deadline = time.monotonic() + 60  # a clean stop takes the workers it made with it
    from ray.util import list_named_actors
    while [a for a in list_named_actors(all_namespaces=True) if a.get("namespace") == namespace]:
        assert time.monotonic() < deadline, "the server's workers outlived a clean stop"
        time.sleep(0.1)


def test_nodegraph_worker_joins_takes_work_and_leaves(ray_runtime, tmp_path):
    import ray
    options = ray_options(workers=0, registry_factory=REGISTRY)  # a server with no workers of its own
    server = LiveServer(tmp_path / "home", scale_nodes.make_registry(), backend=options)
    address = ray.get_runtime_context().gcs_address
    common = ["--base-dir", str(tmp_path / "remote"), "worker", "--ray-address", address, "--ray-namespace",
              options.namespace, "--workers", "1", "--cpus-per-worker", "0"]
    joined = _nodegraph(*common, "--node-library", REGISTRY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        name = wait_workers_ready(server, 1)[0]["name"]
        assert name.startswith(f"worker-{socket.gethostname()}-") and name.endswith("-0")
        entry = server.wait_history(server.queue(number_prompt(4.0))["prompt_id"], timeout=60)
        assert entry["outputs"] == {"3": {"text": ["8.0"]}}
        assert server.get("/jobs").json()["jobs"][0]["worker"] == name

        # Another node library: the server refuses it and the command says why, naming both.
        mismatched = _nodegraph(*common, "--node-library", "tests.server.server_nodes:make_registry",
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert mismatched.wait(120) == 2
        message = mismatched.stderr.read().decode()
        mismatched.stderr.close()
        assert "refused" in message and f"node library {server.state.backend.library}" in message, message
        assert f"nodegraph {__version__}" in message

        _stop(joined)  # Ctrl-C / SIGTERM: its workers leave with it
        assert joined.returncode == 0
        deadline = time.monotonic() + 60
        while any(w["name"] == name for w in server.state.backend.workers()):
            assert time.monotonic() < deadline, "the server did not notice the worker left"
            time.sleep(0.1)
    finally:
        _stop(joined, signal.SIGKILL)
        server.stop()
        kill_workers(options.namespace)


def test_an_unreachable_cluster_is_a_clear_error_before_anything_listens(tmp_path):
    port, dead = _free_port(), _free_port()
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "nodegraph.cli", "--base-dir", str(tmp_path), "serve", "--port",
                          str(port), "--backend", "ray", "--ray-address", f"127.0.0.1:{dead}",
                          "--node-library", REGISTRY], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert f"cannot reach the Ray cluster at 127.0.0.1:{dead}" in run.stderr and "ray start --head" in run.stderr
    assert "Traceback" not in run.stderr and time.monotonic() - started < 60
    assert "nodegraph server:" not in run.stderr  # it never started serving


@pytest.mark.parametrize("command", [["serve", "--backend", "ray"], ["worker", "--ray-address", "127.0.0.1:1"]])
def test_without_ray_the_backend_names_the_extra_to_install(tmp_path, command):
    run = subprocess.run([sys.executable, "-c", HIDE_RAY, "--base-dir", str(tmp_path), *command,
                          "--node-library", REGISTRY], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "pip install 'nodegraph[ray]'" in run.stderr and "Traceback" not in run.stderr
