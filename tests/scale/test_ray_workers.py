"""Two Ray worker actors behind one server: every prompt once, history shaped as the local backend's,
cache-aware dispatch, interrupt of a remote prompt, and nothing invalid ever reaching a worker."""
from __future__ import annotations

import collections
import threading
import time

import pytest

from tests.server.live import LiveServer
from tests.server.ray_support import in_workers
from tests.server.server_nodes import make_registry, number_prompt, png_prompt, slow_prompt
from tests.server.wsclient import WS, all_done, done, of_type

from .scale_nodes import blob_prompt

pytestmark = pytest.mark.ray


def _worker_of(live, prompt_id: str) -> str:
    return live.get(f"/jobs/{prompt_id}").json()["worker"]


def test_prompts_from_several_clients_complete_once_across_two_workers(two_workers):
    server, results, errors = two_workers, {}, []

    def client(name: str) -> None:
        try:
            with WS(server.ws_url + f"?clientId={name}") as ws:
                ws.recv()
                ids = [server.queue(slow_prompt(value=float(i + 10 * len(name)), steps=4, delay=0.02),
                                    client_id=name)["prompt_id"] for i in range(5)]
                ws.until(all_done(ids), timeout=150)  # two workers: they may finish out of order
                results[name] = ids
        except Exception as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(f"c{'x' * i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors, errors
    queued = [p for ids in results.values() for p in ids]
    assert len(queued) == 20
    history = server.get("/history").json()
    assert sorted(history) == sorted(queued)  # each once: history keys are unique, and all are there
    assert all(entry["status"]["status_str"] == "success" for entry in history.values())
    jobs = server.get("/jobs", params={"limit": 100}).json()["jobs"]
    assert len(jobs) == 20 and {j["worker"] for j in jobs} == {"worker-0", "worker-1"}
    assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    stats = server.get("/system_stats").json()
    assert stats["queue"]["completed"] == 20 and stats["queue"]["backend"] == "ray"
    assert {w["name"]: w["completed"] for w in stats["workers"]} == collections.Counter(j["worker"] for j in jobs)


def test_history_and_files_have_the_local_backends_shape(two_workers, tmp_path):
    from PIL import Image

    local = LiveServer(tmp_path / "local", make_registry())
    try:
        expected = local.wait_history(local.queue(png_prompt(5.0, size=12), client_id="x")["prompt_id"])
    finally:
        local.stop()
    server = two_workers
    # Both workers number their files from 1 in their own scratch folders: the server keeps them apart.
    ids = [server.queue(png_prompt(float(v), size=12), client_id="x")["prompt_id"] for v in (5.0, 6.0, 7.0, 8.0)]
    entries = [server.wait_history(prompt_id) for prompt_id in ids]
    assert {_worker_of(server, p) for p in ids} == {"worker-0", "worker-1"}
    names = [e["outputs"]["2"]["images"][0]["filename"] for e in entries]
    assert len(set(names)) == 4 and all(n.startswith("test_") and n.endswith("_.png") for n in names)
    for value, entry in zip((5.0, 6.0, 7.0, 8.0), entries):
        image = entry["outputs"]["2"]["images"][0]
        served = server.get("/view", params=image)
        assert served.status_code == 200 and served.content == (server.layout.output / image["filename"]).read_bytes()
        shade = int(value * 37) % 256  # what SavePNG drew for this prompt: the file is this prompt's own
        assert Image.open(server.layout.output / image["filename"]).getpixel((0, 0)) == (shade, 255 - shade, 128)

    def shape(entry):
        outputs = {node: {kind: [{**f, "filename": "*"} for f in files] for kind, files in ui.items()}
                   for node, ui in entry["outputs"].items()}
        return (sorted(entry), entry["prompt"][2:], sorted(entry["status"]), entry["status"]["status_str"],
                [m[0] for m in entry["status"]["messages"]], outputs, entry["meta"])

    assert shape(entries[0]) == shape(expected)
    assert not list(server.layout.temp.glob("**/*.png"))  # outputs land in output/, nothing left behind


def _inline_limit(limit):
    def set_limit(actor):
        from nodegraph.queue import shipping
        previous, shipping.INLINE_LIMIT = shipping.INLINE_LIMIT, limit
        return previous
    return set_limit


def test_a_large_output_file_is_pulled_from_the_worker_in_chunks(two_workers):
    from PIL import Image

    server = two_workers
    previous = set(in_workers(server, _inline_limit(100)).values())  # every file counts as large now
    try:
        entry = server.wait_history(server.queue(png_prompt(3.0, size=64))["prompt_id"])
    finally:
        in_workers(server, _inline_limit(previous.pop()))
    path = server.layout.output / entry["outputs"]["2"]["images"][0]["filename"]
    assert path.stat().st_size > 100  # several chunks
    with Image.open(path) as image:
        assert image.size == (64, 64) and image.getpixel((5, 5)) == (111, 144, 128)


def test_each_worker_loads_one_checkpoint_once(two_workers):
    """Two checkpoints, prompts alternating between them: each worker loads one of them, once."""
    server, load = two_workers, 3.0
    in_workers(server, _clear_loads)
    # Warm up: one of each, one after the other, so the dispatcher has seen how long a load takes. The
    # load is long beside a prompt's own ~0.05 s: the dispatcher rightly sends a prompt to the worker
    # without its checkpoint once the other has run past its estimate by more than a load (a stall), and
    # a busy 2-core machine running the whole suite once stalled a worker for 1.5 s.
    first = server.wait_history(server.queue(blob_prompt("A", 0, load=load))["prompt_id"])
    second = server.wait_history(server.queue(blob_prompt("B", 0, load=load))["prompt_id"])
    assert first["status"]["completed"] and second["status"]["completed"]
    ids = [server.queue(blob_prompt("AB"[i % 2], i + 1, load=load))["prompt_id"] for i in range(8)]
    for prompt_id in ids:
        server.wait_history(prompt_id, timeout=120)

    per_worker = in_workers(server, _loads)
    assert sorted(per_worker.values(), key=str) == [{"A": 1}, {"B": 1}], per_worker
    holder = {checkpoint: name for name, counts in per_worker.items() for checkpoint in counts}
    for i, prompt_id in enumerate(ids):
        assert _worker_of(server, prompt_id) == holder["AB"[i % 2]]


def _loads(actor):
    from tests.scale.scale_nodes import LOADS
    return dict(LOADS)


def _clear_loads(actor):
    from tests.scale.scale_nodes import LOADS
    LOADS.clear()


def test_interrupt_reaches_the_worker_that_runs_the_prompt(two_workers):
    server, delay = two_workers, 0.1
    with WS(server.ws_url + "?clientId=i") as ws:
        ws.recv()
        busy = server.queue(slow_prompt(value=1.0, steps=300, delay=0.02), client_id="i")["prompt_id"]
        target = server.queue(slow_prompt(value=2.0, steps=500, delay=delay), client_id="i")["prompt_id"]
        ws.until(lambda m: m["type"] == "progress" and m["data"]["prompt_id"] == target and m["data"]["value"] >= 2,
                 timeout=60)
        assert server.get("/queue").json()["running_on"] == {busy: _running_worker(server, busy),
                                                             target: _running_worker(server, target)}
        sent = time.monotonic()
        assert server.post("/interrupt", {"prompt_id": target}).status_code == 200
        after = ws.until(lambda m: m["type"] == "execution_interrupted", timeout=30)
        elapsed = time.monotonic() - sent
        ws.until(done(target))
        late = [m["data"]["value"] for m in of_type(after, "progress") if m["data"]["prompt_id"] == target]
        assert len(late) <= 1, late  # at most the step that was running
        assert elapsed < 2 * delay + 1.0  # a round trip to the worker, not the rest of the prompt
        interrupted = of_type(after, "execution_interrupted")[0]["data"]
        assert interrupted["prompt_id"] == target and interrupted["node_id"] == "2"
        assert server.get("/queue").json()["queue_running"][0][1] == busy  # the other prompt runs on
        server.post("/interrupt", {"prompt_id": busy})
        ws.until(done(busy))
    history = server.get("/history").json()
    assert history[target]["status"]["status_str"] == "error"
    assert [m[0] for m in history[target]["status"]["messages"]][-1] == "execution_interrupted"


def _running_worker(server, prompt_id: str) -> str:
    return next(w["name"] for w in server.state.backend.workers() if w["prompt_id"] == prompt_id)


def test_a_validation_error_never_reaches_a_worker(two_workers):
    server = two_workers
    bad = number_prompt()
    bad["2"]["inputs"]["factor"] = 1000
    response = server.post("/prompt", {"prompt": bad})
    assert response.status_code == 400
    assert response.json()["node_errors"]["2"]["errors"][0]["type"] == "value_bigger_than_max"
    unknown = server.post("/prompt", {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}})
    assert unknown.status_code == 400
    assert server.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    assert all(info["runs"] == 0 for info in in_workers(server, lambda actor: actor.describe()).values())
    good = server.wait_history(server.queue(number_prompt(3.0))["prompt_id"])
    assert good["outputs"] == {"3": {"text": ["6.0"]}}
    assert sum(info["runs"] for info in in_workers(server, lambda actor: actor.describe()).values()) == 1
