"""Executor: order, events, progress, cancellation, errors, list semantics."""
import threading

from nodegraph import CancellationToken, Executor, OutputCache, validate_prompt
from nodegraph.errors import NodeExecutionError


def graph(**nodes):
    return {k: {"class_type": v[0], "inputs": v[1]} for k, v in nodes.items()}


def run(registry, prompt, **kwargs):
    events = []
    executor = kwargs.pop("executor", None) or Executor(OutputCache(0))
    result = executor.execute(validate_prompt(prompt, registry, targets=kwargs.pop("targets", None)),
                              sink=lambda e, d: events.append((e, d)), **kwargs)
    return result, events


def test_only_ancestors_of_outputs_run(registry, calls):
    prompt = graph(n=("Number", {"value": 1}), unused=("Multiply", {"a": ["n", 0], "factor": 2}),
                   o=("Show", {"value": ["n", 0]}))
    result, _ = run(registry, prompt)
    assert result.ok and set(result.executed) == {"n", "o"} and calls["Multiply"] == 0


def test_targets_restrict_what_runs(registry, calls):
    prompt = graph(n=("Number", {"value": 1}), m=("Multiply", {"a": ["n", 0], "factor": 2}),
                   o=("Show", {"value": ["m", 0]}))
    result, _ = run(registry, prompt, targets=["m"])
    assert result.executed == ["n", "m"] and calls["Show"] == 0


def test_topological_order_prefers_nodes_that_feed_outputs(registry):
    # Two branches: the short one (into output o1) finishes before the long chain starts.
    prompt = graph(a=("Number", {"value": 1}), b=("Multiply", {"a": ["a", 0], "factor": 2}),
                   c=("Multiply", {"a": ["b", 0], "factor": 2}), d=("Multiply", {"a": ["c", 0], "factor": 2}),
                   o2=("Show", {"value": ["d", 0]}), x=("Number", {"value": 5}), o1=("Show", {"value": ["x", 0]}))
    result, _ = run(registry, prompt)
    order = result.executed
    assert order.index("o1") < order.index("b"), order
    for before, after in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "o2"), ("x", "o1")]:
        assert order.index(before) < order.index(after)


def test_event_sequence(registry):
    prompt = graph(n=("Number", {"value": 1}), s=("Slow", {"a": ["n", 0], "steps": 3, "delay": 0}),
                   o=("Show", {"value": ["s", 0]}))
    result, events = run(registry, prompt, prompt_id="p1")
    names = [e for e, _ in events]
    assert names[:2] == ["execution_start", "execution_cached"]
    assert names[-2:] == ["execution_success", "executing"] and events[-1][1] == {"node": None, "display_node": None,
                                                                                 "prompt_id": "p1"}
    progress = [d for e, d in events if e == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "s"), (2, 3, "s"), (3, 3, "s")]
    executed = [d for e, d in events if e == "executed"]
    assert executed == [{"node": "o", "display_node": "o", "output": {"text": ["1.0"]}, "prompt_id": "p1"}]
    assert [m for m, _ in result.messages] == ["execution_start", "execution_cached", "execution_success"]


def test_failing_node_reports_and_stops(registry, calls):
    prompt = graph(n=("Number", {"value": 1}), f=("Fail", {"a": ["n", 0], "message": "kaput"}),
                   after=("Multiply", {"a": ["f", 0], "factor": 2}), o=("Show", {"value": ["after", 0]}))
    result, events = run(registry, prompt)
    assert result.status == "error" and calls["Multiply"] == 0
    error = result.error
    assert isinstance(error, NodeExecutionError)
    assert (error.node_id, error.node_type, error.exception_type, error.exception_message) == \
        ("f", "Fail", "RuntimeError", "kaput")
    assert error.current_inputs == {"a": ["1.0"], "message": ["'kaput'"]}
    assert any("raise RuntimeError(message)" in line for line in error.traceback)
    data = dict(events)["execution_error"]
    assert data["node_id"] == "f" and data["executed"] == ["n"]


def test_cancellation_between_nodes_and_inside_a_node(registry):
    token = CancellationToken()
    prompt = graph(n=("Number", {"value": 1}), s=("Slow", {"a": ["n", 0], "steps": 1000, "delay": 0.005}),
                   o=("Show", {"value": ["s", 0]}))
    seen = []

    def sink(event, data):
        seen.append(event)
        if event == "progress" and data["value"] == 3:
            threading.Thread(target=token.cancel).start()

    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry), sink=sink, token=token)
    assert result.status == "interrupted"
    assert seen.count("progress") < 50, "cancel lands within a few steps"
    assert "execution_interrupted" in seen and seen[-1] == "executing"

    token = CancellationToken()
    token.cancel()
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry), token=token)
    assert result.status == "interrupted" and result.executed == []


def test_v1_node_gets_hidden_inputs_and_optional_defaults(registry, calls):
    prompt = graph(n=("Number", {"value": 1.5}), v=("V1Scale", {"a": ["n", 0], "scale": 2.0, "rounding": "floor"}),
                   o=("Show", {"value": ["v", 0]}))
    result, _ = run(registry, prompt)
    assert result.outputs["o"] == {"text": ["3.0"]} and calls["V1Scale"] == 1


def test_list_semantics_map_over_lists(registry):
    from nodegraph import NodeRegistry

    class Many:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"n": ("INT", {"default": 3})}}
        RETURN_TYPES = ("FLOAT",)
        OUTPUT_IS_LIST = (True,)
        FUNCTION = "go"

        def go(self, n):
            return ([float(i) for i in range(n)],)

    class Total:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"values": ("FLOAT", {"forceInput": True})}}
        RETURN_TYPES = ()
        INPUT_IS_LIST = True
        OUTPUT_NODE = True
        FUNCTION = "go"

        def go(self, values):
            return {"ui": {"text": [str(sum(values))]}}

    reg = NodeRegistry()
    reg.register_all({"Many": Many, "Total": Total})
    reg.register_all({"Multiply": registry.get("Multiply").cls, "Show": registry.get("Show").cls})
    prompt = graph(m=("Many", {"n": 4}), x=("Multiply", {"a": ["m", 0], "factor": 10}),
                   t=("Total", {"values": ["x", 0]}), s=("Show", {"value": ["x", 0]}))
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, reg))
    assert result.outputs["t"] == {"text": ["60.0"]}
    assert result.outputs["s"] == {"text": ["0.0", "10.0", "20.0", "30.0"]}, "Show ran once per item"


def test_wrong_number_of_outputs_is_a_node_error(registry):
    from nodegraph import Node, Output

    class Liar(Node):
        outputs = (Output("FLOAT"), Output("FLOAT"))

        def run(self):
            return (1.0,)

    reg = toy_registry_with(registry, Liar)
    result = Executor(OutputCache(0)).execute(validate_prompt(
        graph(l=("Liar", {}), o=("Show", {"value": ["l", 1]})), reg))
    assert result.status == "error" and "returned 1 outputs but declares 2" in result.error.exception_message


def toy_registry_with(registry, *classes):
    from nodegraph import NodeRegistry
    reg = NodeRegistry()
    reg.register_all({d.name: d.cls for d in registry})
    reg.register_all(classes)
    return reg


def test_node_instances_are_reused_across_prompts(registry):
    executor = Executor(OutputCache(0))
    seen = []

    from nodegraph import Node, Output

    class Remember(Node):
        outputs = (Output("FLOAT"),)

        def run(self):
            seen.append(id(self))
            return (1.0,)

    reg = toy_registry_with(registry, Remember)
    prompt = graph(r=("Remember", {}), o=("Show", {"value": ["r", 0]}))
    for _ in range(2):
        executor.execute(validate_prompt(prompt, reg))
    assert len(seen) == 2 and seen[0] == seen[1]
