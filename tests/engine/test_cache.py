"""The subgraph cache, proven by counting executions."""
import pytest

from nodegraph import Executor, OutputCache, validate_prompt
from nodegraph.cache import parse_size


def chain(value=2.0, factor=3.0, seed=1, template="{}", ids=("n", "m", "s", "f", "o")):
    n, m, s, f, o = ids
    return {n: {"class_type": "Number", "inputs": {"value": value}},
            m: {"class_type": "Multiply", "inputs": {"a": [n, 0], "factor": factor}},
            s: {"class_type": "Seeded", "inputs": {"a": [m, 0], "seed": seed, "steps": 1, "mode": "sum"}},
            f: {"class_type": "Format", "inputs": {"value": [s, 0], "template": template}},
            o: {"class_type": "Show", "inputs": {"value": [f, 0]}}}


def execute(executor, registry, prompt):
    return executor.execute(validate_prompt(prompt, registry))


def test_unchanged_rerun_executes_nothing(registry, calls):
    executor = Executor(OutputCache())
    first = execute(executor, registry, chain())
    calls.clear()
    second = execute(executor, registry, chain())
    assert sum(calls.values()) == 0 and second.executed == []
    assert second.cached == ["n", "m", "s", "f", "o"]
    assert second.outputs == first.outputs, "cached output nodes still report their UI"


def test_changing_one_constant_reruns_that_node_and_descendants(registry, calls):
    executor = Executor(OutputCache())
    execute(executor, registry, chain())
    calls.clear()
    result = execute(executor, registry, chain(seed=2))
    assert result.executed == ["s", "f", "o"] and result.cached == ["n", "m"]
    assert dict(calls) == {"Seeded": 1, "Format": 1, "Show": 1}
    assert result.outputs["o"] == {"text": ["9.0"]}


def test_renumbered_nodes_hit_the_cache(registry, calls):
    executor = Executor(OutputCache())
    execute(executor, registry, chain())
    calls.clear()
    result = execute(executor, registry, chain(ids=("10", "20", "30", "40", "50")))
    assert result.executed == [] and sum(calls.values()) == 0


def test_two_workflows_share_a_subgraph(registry, calls):
    executor = Executor(OutputCache())
    execute(executor, registry, chain())
    calls.clear()
    other = {"x": {"class_type": "Number", "inputs": {"value": 2.0}},
             "y": {"class_type": "Multiply", "inputs": {"a": ["x", 0], "factor": 3.0}},
             "z": {"class_type": "Show", "inputs": {"value": ["y", 0]}}}
    result = execute(executor, registry, other)
    assert result.cached == ["x", "y"] and result.executed == ["z"] and dict(calls) == {"Show": 1}


def test_changed_fingerprint_invalidates(registry, calls, tmp_path):
    path = tmp_path / "n.txt"
    path.write_text("4")
    prompt = {"r": {"class_type": "ReadNumberFile", "inputs": {"path": str(path)}},
              "o": {"class_type": "Show", "inputs": {"value": ["r", 0]}}}
    executor = Executor(OutputCache())
    execute(executor, registry, prompt)
    assert execute(executor, registry, prompt).executed == []
    path.write_text("5")
    result = execute(executor, registry, prompt)
    assert result.executed == ["r", "o"] and result.outputs["o"] == {"text": ["5.0"]}
    path.unlink()  # the fingerprint becomes NaN: always re-run (and fail, loudly)
    result = execute(executor, registry, prompt)
    assert result.status == "error" and result.error.node_id == "r"


def test_v1_is_changed_is_part_of_the_key(registry, calls):
    prompt = {"n": {"class_type": "Number", "inputs": {"value": 1}},
              "v": {"class_type": "V1Scale", "inputs": {"a": ["n", 0], "scale": 2.0, "rounding": "none"}},
              "o": {"class_type": "Show", "inputs": {"value": ["v", 0]}}}
    executor = Executor(OutputCache())
    execute(executor, registry, prompt)
    calls.clear()
    assert execute(executor, registry, prompt).executed == []
    # V1Scale has a hidden UNIQUE_ID input, so its key includes the node id (ComfyUI's rule).
    renamed = {"n": prompt["n"], "w": {**prompt["v"]}, "o": {"class_type": "Show", "inputs": {"value": ["w", 0]}}}
    assert execute(executor, registry, renamed).executed == ["w", "o"]


def test_no_cache_runs_everything(registry, calls):
    executor = Executor(OutputCache(0))
    execute(executor, registry, chain())
    calls.clear()
    assert len(execute(executor, registry, chain()).executed) == 5


def test_budget_evicts_least_recently_used():
    class Blob:
        def __init__(self, n):
            self.n = n

        def memory_parts(self):
            yield ("blob", id(self)), self.n

    cache = OutputCache(budget=250)
    a, b, c = Blob(100), Blob(100), Blob(100)
    cache.put("a", [[a]], None)
    cache.put("b", [[b]], None)
    assert cache.get("a") is not None  # a is now most recent
    cache.put("c", [[c]], None)
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats()["used_bytes"] == 200 and cache.stats()["evictions"] == 1


def test_shared_storage_is_counted_once():
    class Model:
        def memory_parts(self):
            yield ("weights", 1), 1000

    cache = OutputCache(budget=10_000)
    cache.put("k1", [[Model()]], None)
    cache.put("k2", [[Model()]], None)  # a clone sharing the same weights
    assert cache.stats()["used_bytes"] == 1000
    cache._drop("k1")
    assert cache.stats()["used_bytes"] == 1000
    cache._drop("k2")
    assert cache.stats()["used_bytes"] == 0


def test_parse_size():
    assert parse_size("8GB") == 8 * 1024**3 and parse_size("512MB") == 512 * 1024**2 and parse_size("0") == 0
    assert parse_size("1.5g") == int(1.5 * 1024**3)
    with pytest.raises(ValueError):
        parse_size("12 parsecs")
