"""Validation: ComfyUI's error types and shape, every problem at once, coerced constants."""
import pytest

from nodegraph import ValidationError, validate_prompt


def graph(**nodes):
    return {k: {"class_type": v[0], "inputs": v[1]} for k, v in nodes.items()}


def errors_of(exc):
    return {(nid, e["type"], e["extra_info"].get("input_name")) for nid, entry in exc.node_errors.items()
            for e in entry["errors"]}


def test_valid_prompt_coerces_constants(registry):
    prompt = graph(n=("Number", {"value": "2.5"}), s=("Seeded", {"a": ["n", 0], "seed": "7", "steps": 3.0, "mode": "sum"}),
                   o=("Show", {"value": ["s", 0]}))
    validated = validate_prompt(prompt, registry)
    assert validated.outputs == ["o"]
    assert validated.prompt["n"]["inputs"]["value"] == 2.5
    assert validated.prompt["s"]["inputs"]["seed"] == 7 and isinstance(validated.prompt["s"]["inputs"]["steps"], int)
    assert prompt["n"]["inputs"]["value"] == "2.5", "the caller's prompt is not modified"


def test_every_problem_is_reported_at_once(registry):
    prompt = graph(
        n=("Number", {"value": 1e12}),                                   # too big
        m=("Multiply", {"factor": -1000}),                               # required 'a' missing, too small
        s=("Seeded", {"a": ["n", 0], "seed": -1, "steps": "many", "mode": "summ"}),
        f=("Format", {"value": ["s", 0], "template": "{}"}),
        bad=("Add", {"a": ["n"], "b": ["f", 0]}),                        # bad link, type mismatch
        o1=("Show", {"value": ["m", 0]}), o2=("Show", {"value": ["bad", 0]}), o3=("Show", {"value": ["s", 0]}))
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    exc = info.value
    assert exc.error.type == "prompt_outputs_failed_validation"
    assert errors_of(exc) == {
        ("n", "value_bigger_than_max", "value"), ("m", "required_input_missing", "a"),
        ("m", "value_smaller_than_min", "factor"), ("s", "value_smaller_than_min", "seed"),
        ("s", "invalid_input_type", "steps"), ("s", "value_not_in_list", "mode"),
        ("bad", "bad_linked_input", "a"), ("bad", "return_type_mismatch", "b")}
    assert exc.node_errors["n"]["class_type"] == "Number"
    assert set(exc.node_errors["n"]["dependent_outputs"]) == {"o2", "o3"}
    mode_error = next(e for e in exc.node_errors["s"]["errors"] if e["type"] == "value_not_in_list")
    assert "closest: 'sum'" in mode_error["details"]
    text = exc.describe()
    assert "node s (Seeded), input 'mode'" in text and "node bad (Add), input 'b'" in text


def test_invalid_outputs_are_dropped_when_another_is_valid(registry):
    prompt = graph(n=("Number", {"value": 1}), ok=("Show", {"value": ["n", 0]}),
                   m=("Multiply", {"a": ["n", 0], "factor": 500}), bad=("Show", {"value": ["m", 0]}))
    validated = validate_prompt(prompt, registry)
    assert validated.outputs == ["ok"]
    assert validated.node_errors["m"]["dependent_outputs"] == ["bad"]


def test_unknown_classes_are_named(registry):
    prompt = graph(a=("Numbr", {}), b=("Frobnicate", {}), o=("Show", {"value": ["a", 0]}))
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    assert info.value.error.type == "invalid_prompt"
    assert "Frobnicate" in info.value.error.message and "Numbr" in info.value.error.message
    assert "did you mean 'Number'" in info.value.node_errors["a"]["errors"][0]["details"]


def test_missing_class_type(registry):
    with pytest.raises(ValidationError) as info:
        validate_prompt({"1": {"inputs": {}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}, registry)
    assert info.value.error.message == "Cannot execute because a node is missing the class_type property."


def test_no_outputs(registry):
    with pytest.raises(ValidationError) as info:
        validate_prompt(graph(n=("Number", {"value": 1})), registry)
    assert info.value.error.type == "prompt_no_outputs"


def test_cycle_is_reported(registry):
    prompt = graph(a=("Add", {"a": ["b", 0], "b": ["n", 0]}), b=("Add", {"a": ["a", 0], "b": ["n", 0]}),
                   n=("Number", {"value": 1}), o=("Show", {"value": ["b", 0]}))
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    assert {(nid, t) for nid, t, _ in errors_of(info.value)} == {("a", "dependency_cycle"), ("b", "dependency_cycle")}


def test_links_to_missing_nodes_and_slots(registry):
    prompt = graph(n=("Number", {"value": 1}), a=("Add", {"a": ["ghost", 0], "b": ["n", 3]}), o=("Show", {"value": ["a", 0]}))
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    details = [e["details"] for e in info.value.node_errors["a"]["errors"]]
    assert any("'ghost' is not in the prompt" in d for d in details)
    assert any("has 1 outputs, slot 3" in d for d in details)


def test_constant_where_a_link_is_needed(registry):
    with pytest.raises(ValidationError) as info:
        validate_prompt(graph(o=("Show", {"value": 1.0})), registry)  # FLOAT,STRING is a socket, not a widget
    assert errors_of(info.value) == {("o", "invalid_input_type", "value")}


def test_custom_validation_and_v1_validate_inputs(registry):
    prompt = graph(n=("Number", {"value": 1}), r=("ReadNumberFile", {"path": ""}),
                   v=("V1Scale", {"a": ["n", 0], "scale": 3.0, "rounding": "none"}),
                   o1=("Show", {"value": ["r", 0]}), o2=("Show", {"value": ["v", 0]}))
    with pytest.raises(ValidationError) as info:
        validate_prompt(prompt, registry)
    found = {nid: e["details"] for nid, entry in info.value.node_errors.items() for e in entry["errors"]}
    assert found["r"].endswith("path must not be empty")
    assert found["v"].endswith("3.0 is unlucky")


def test_v1_validate_inputs_skips_builtin_range_check(registry):
    # VALIDATE_INPUTS takes `scale`, so the builtin max (10) is not applied to it (ComfyUI's rule).
    prompt = graph(n=("Number", {"value": 1}), v=("V1Scale", {"a": ["n", 0], "scale": 50.0, "rounding": "none"}),
                   o=("Show", {"value": ["v", 0]}))
    assert validate_prompt(prompt, registry).outputs == ["o"]


def test_boolean_strings_are_not_python_truthiness():
    from nodegraph.validation import _coerce
    assert _coerce("BOOLEAN", "false") is False and _coerce("BOOLEAN", "True") is True
    with pytest.raises(ValueError):
        _coerce("BOOLEAN", "maybe")


def test_wrapped_literal_list_is_unwrapped(registry):
    prompt = graph(n=("Number", {"value": {"__value__": 4}}), o=("Show", {"value": ["n", 0]}))
    assert validate_prompt(prompt, registry).prompt["n"]["inputs"]["value"] == 4.0


def test_error_json_has_comfyui_shape(registry):
    with pytest.raises(ValidationError) as info:
        validate_prompt(graph(m=("Multiply", {"factor": 1}), o=("Show", {"value": ["m", 0]})), registry)
    body = info.value.to_json()
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}
    entry = body["node_errors"]["m"]
    assert set(entry) == {"errors", "dependent_outputs", "class_type"}
    assert entry["errors"][0] == {"type": "required_input_missing", "message": "Required input is missing",
                                  "details": "a", "extra_info": {"input_name": "a"}}
