"""The dispatch policy and the placing of shipped files on their own (pure Python, no Ray)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from nodegraph.folders import Folders, UnsafePathError
from nodegraph.queue.dispatch import DEFAULT_NODE_SECONDS, CostModel, Plan, WorkerView, assign
from nodegraph.queue.shipping import OutputPlacer, next_free_name, rename_in_ui


def plan(checkpoint: str, seed: int) -> Plan:
    """load(checkpoint) -> sample(seed) -> save: the keys stand in for content hashes."""
    return Plan({"1": (f"load-{checkpoint}", "Load", ()), "2": (f"sample-{checkpoint}-{seed}", "Sample", ("1",)),
                 "3": (f"save-{checkpoint}-{seed}", "Save", ("2",))}, ("3",))


def model() -> CostModel:
    costs = CostModel()
    costs.learn("load-A", "Load", 3.0)
    costs.learn("load-B", "Load", 3.0)
    costs.learn("x", "Sample", 0.5)
    costs.learn("y", "Save", 0.1)
    return costs


def item(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, overtaken=0)


def test_the_cost_walk_stops_at_what_a_worker_holds():
    costs = model()
    assert costs.cost(plan("A", 1), set()) == pytest.approx(3.0 + 0.5 + 0.1)
    assert costs.cost(plan("A", 1), {"load-A"}) == pytest.approx(0.6)
    assert costs.cost(plan("A", 1), {"save-A-1"}) == 0  # the output is cached: nothing runs, not even the load
    assert CostModel().cost(plan("C", 1), set()) == pytest.approx(3 * DEFAULT_NODE_SECONDS)  # never seen: a default


def test_an_idle_worker_that_holds_the_checkpoint_is_preferred_then_the_least_loaded():
    costs, warm, cold = model(), WorkerView("w1", {"load-A"}, completed=5), WorkerView("w0", set(), completed=0)
    chosen = assign([(item("a"), plan("A", 1))], [cold, warm], [], costs)
    assert [(i.name, w.name) for i, w in chosen] == [("a", "w1")]
    chosen = assign([(item("b"), plan("B", 1))], [warm, cold], [], costs)
    assert [(i.name, w.name) for i, w in chosen] == [("b", "w0")]  # neither holds B: fewest prompts run
    # Two prompts, two idle workers: both start now, each where it is cheapest.
    chosen = assign([(item("b"), plan("B", 1)), (item("a"), plan("A", 2))], [warm, cold], [], costs)
    assert sorted((i.name, w.name) for i, w in chosen) == [("a", "w1"), ("b", "w0")]


def test_a_prompt_waits_for_its_warm_worker_when_that_is_sooner_and_a_later_one_takes_the_idle_worker():
    costs = model()
    busy = WorkerView("wA", {"load-A"}, running=plan("A", 1), running_since=100.0, expected=0.6)
    idle = WorkerView("wB", {"load-B"})
    head, second = item("a2"), item("b2")
    chosen = assign([(head, plan("A", 2)), (second, plan("B", 2))], [idle], [busy], costs, now=100.2)
    assert [(i.name, w.name) for i, w in chosen] == [("b2", "wB")]
    assert head.overtaken == 1 and second.overtaken == 0
    # ... but not past max_overtakes: priorities hold up to a bounded reordering.
    head.overtaken = 8
    chosen = assign([(head, plan("A", 2)), (second, plan("B", 2))], [idle], [busy], costs, now=100.2,
                    max_overtakes=8)
    assert [(i.name, w.name) for i, w in chosen] == [("a2", "wB")]


def test_no_waiting_for_a_warm_worker_that_is_far_from_done():
    costs = model()
    # Running for 10 s on a prompt expected to take 0.6 s: assume about as long again; loading is cheaper.
    busy = WorkerView("wA", {"load-A"}, running=plan("A", 1), running_since=90.0, expected=0.6)
    chosen = assign([(item("a2"), plan("A", 2))], [WorkerView("wB")], [busy], costs, now=100.0)
    assert [(i.name, w.name) for i, w in chosen] == [("a2", "wB")]


def test_a_busy_worker_counts_as_holding_what_its_running_prompt_loads():
    costs = model()
    # wA started A cold a moment ago: it will hold load-A; a second A prompt waits for it, B goes to wB.
    busy = WorkerView("wA", set(), running=plan("A", 1), running_since=100.0, expected=3.6)
    head = item("a2")
    chosen = assign([(head, plan("A", 2)), (item("b1"), plan("B", 1))], [WorkerView("wB")], [busy], costs,
                    now=103.4)
    assert [(i.name, w.name) for i, w in chosen] == [("b1", "wB")] and head.overtaken == 1


def test_files_from_workers_never_overwrite_each_other(tmp_path):
    layout = Folders(tmp_path)
    layout.ensure()
    placer = OutputPlacer(layout)
    assert placer.place([("output", "", "img_00001_.png", b"one")]) == {("output", "", "img_00001_.png"): "img_00001_.png"}
    # Another worker numbered its file 1 too: the next free counter, ComfyUI's pattern.
    assert placer.place([("output", "", "img_00001_.png", b"two")]) == {("output", "", "img_00001_.png"): "img_00002_.png"}
    # The same bytes again (a cached output shown once more): the same file.
    assert placer.place([("output", "", "img_00001_.png", b"one")]) == {("output", "", "img_00001_.png"): "img_00001_.png"}
    placed = placer.place([("temp", "sub/dir", "clip.webp", b"a"), ("temp", "sub/dir", "clip.webp", b"b")])
    assert placed == {("temp", "sub/dir", "clip.webp"): "clip (1).webp"}
    assert (layout.temp / "sub/dir/clip.webp").read_bytes() == b"a"
    assert (layout.temp / "sub/dir/clip (1).webp").read_bytes() == b"b"
    assert (layout.output / "img_00002_.png").read_bytes() == b"two"
    for bad in [("output", "", "../x.png", b""), ("output", "../..", "x.png", b""), ("output", "/etc", "x.png", b"")]:
        with pytest.raises(UnsafePathError):
            placer.place([bad])
    assert next_free_name(layout.output, "plain") == "plain (1)"


def test_large_files_are_pulled_in_chunks(tmp_path, monkeypatch):
    from nodegraph.queue import shipping
    worker, server = Folders(tmp_path / "worker"), Folders(tmp_path / "server")
    worker.ensure()
    server.ensure()
    monkeypatch.setattr(shipping, "INLINE_LIMIT", 1000)
    data = bytes(range(256)) * 20  # 5120 bytes: six chunks
    (worker.output / "sub").mkdir()
    (worker.output / "sub" / "model_00001_.safetensors").write_bytes(data)
    (worker.output / "small.txt").write_bytes(b"tiny")
    ui = {"models": [{"filename": "model_00001_.safetensors", "subfolder": "sub", "type": "output"}],
          "text": [{"filename": "small.txt", "subfolder": "", "type": "output"}]}
    files = shipping.collect(ui, worker)
    assert files == [("output", "sub", "model_00001_.safetensors", 5120), ("output", "", "small.txt", b"tiny")]
    pulls = []

    def fetch(ref, offset, length):
        pulls.append(offset)
        return shipping.read_chunk(ref, offset, length, worker)

    placer = OutputPlacer(server)
    placed = placer.place(files, fetch)
    assert placed == {("output", "sub", "model_00001_.safetensors"): "model_00001_.safetensors",
                      ("output", "", "small.txt"): "small.txt"}
    assert (server.output / "sub" / "model_00001_.safetensors").read_bytes() == data
    assert pulls == [0, 1000, 2000, 3000, 4000, 5000]
    assert placer.place(files, fetch)[("output", "sub", "model_00001_.safetensors")] == "model_00001_.safetensors"
    (worker.output / "sub" / "model_00001_.safetensors").write_bytes(data[::-1])  # another worker's file 1
    assert placer.place(files, fetch)[("output", "sub", "model_00001_.safetensors")] == "model_00002_.safetensors"
    assert (server.output / "sub" / "model_00002_.safetensors").read_bytes() == data[::-1]
    assert not list((server.output / "sub").glob(".*.part"))


def test_references_are_renamed_only_where_a_file_was_stored_under_another_name():
    ui = {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"},
                     {"filename": "b.png", "subfolder": "", "type": "output"}], "text": ["hello"]}
    renamed = rename_in_ui(ui, {("output", "", "a_00001_.png"): "a_00007_.png"})
    assert renamed["images"][0]["filename"] == "a_00007_.png" and renamed["images"][1] == ui["images"][1]
    assert renamed["text"] == ["hello"] and ui["images"][0]["filename"] == "a_00001_.png"  # a copy
