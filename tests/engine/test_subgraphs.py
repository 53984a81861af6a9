"""Subgraphs flattened to the API format: ids, wiring through the boundary, instance widget values,
nesting, muted and bypassed instances, and the errors for a missing definition or a cycle."""
import json

import pytest

from nodegraph import Executor, OutputCache, ValidationError, validate_prompt
from nodegraph.cli import main
from nodegraph.workflow import load_document, ui_to_api

from . import subgraph_fixtures as fx
from .test_cli import home  # noqa: F401  (fixture)


def run(prompt, registry):
    return Executor(OutputCache(0)).execute(validate_prompt(prompt, registry)).outputs


def test_instance_becomes_its_inner_nodes(registry):
    prompt = ui_to_api(fx.workflow(), registry)
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == {
        "1": ("Number", {"value": 2.0}),
        "10:3": ("Multiply", {"a": ["1", 0], "factor": 7.0}),  # factor: the instance's widget value
        "2": ("Show", {"value": ["10:3", 0]}),
    }
    assert run(prompt, registry)["2"] == {"text": ["14.0"]}


def test_instance_without_a_widget_value_uses_the_inner_widget(registry):
    prompt = ui_to_api(fx.workflow(widgets=(), definitions=[fx.scale_definition(5.0)]), registry)
    assert prompt["10:3"]["inputs"] == {"a": ["1", 0], "factor": 5.0}


def test_nested_subgraphs_get_colon_paths(registry):
    prompt = ui_to_api(fx.workflow(fx.TWICE, widgets=(), definitions=[fx.twice_definition(), fx.scale_definition(0.5)]),
                       registry)
    assert prompt["10:4:3"]["inputs"] == {"a": ["1", 0], "factor": 3.0}
    assert prompt["10:5:3"]["inputs"] == {"a": ["10:4:3", 0], "factor": 0.5}
    assert prompt["2"]["inputs"] == {"value": ["10:5:3", 0]}
    assert run(prompt, registry)["2"] == {"text": ["3.0"]}  # 2 * 3 * 0.5


def test_nested_definitions_inside_a_definition_are_found(registry):
    twice = fx.twice_definition()
    twice["definitions"] = {"subgraphs": [fx.scale_definition(0.5)]}
    prompt = ui_to_api(fx.workflow(fx.TWICE, widgets=(), definitions=[twice]), registry)
    assert run(prompt, registry)["2"] == {"text": ["3.0"]}


def test_input_wired_straight_to_an_output(registry):
    definition = fx.scale_definition()
    definition["links"].append(fx._link(4, -10, 0, -20, 0, "FLOAT"))
    definition["outputs"][0]["linkIds"] = [4]  # the output now forwards input a
    prompt = ui_to_api(fx.workflow(definitions=[definition]), registry)
    assert prompt["2"]["inputs"] == {"value": ["1", 0]}


def test_muted_and_bypassed_instances(registry):
    muted = ui_to_api(fx.workflow(mode=2), registry)
    assert set(muted) == {"1", "2"} and muted["2"]["inputs"] == {}
    bypassed = ui_to_api(fx.workflow(mode=4), registry)
    assert set(bypassed) == {"1", "2"} and bypassed["2"]["inputs"] == {"value": ["1", 0]}


def test_missing_definition_is_a_validation_error_naming_it(registry):
    with pytest.raises(ValidationError) as caught:
        ui_to_api(fx.workflow(definitions=[]), registry)
    assert fx.SCALE in str(caught.value) and "node 10" in str(caught.value)
    assert caught.value.node_errors["10"]["errors"][0]["type"] == "missing_subgraph_definition"


@pytest.mark.parametrize("loop", ["self", "through another"])
def test_cycle_is_a_validation_error_naming_it(registry, loop):
    if loop == "self":
        definitions = [fx.looping_definition()]
    else:  # Loop -> Scale twice -> Loop
        twice = fx.twice_definition()
        twice["nodes"].append(fx._node(8, fx.LOOP, []))
        definitions = [fx.looping_definition(fx.TWICE), twice, fx.scale_definition()]
    with pytest.raises(ValidationError) as caught:
        ui_to_api(fx.workflow(fx.LOOP, definitions=definitions), registry)
    message = str(caught.value)
    assert "'Loop'" in message and "contains itself" in message
    assert next(iter(caught.value.node_errors.values()))["errors"][0]["type"] == "subgraph_cycle"


def test_subgraph_file_runs_from_the_cli(home, capsys):  # noqa: F811
    path = home / "sub.json"
    path.write_text(json.dumps(fx.workflow()))
    assert main(["convert", str(path)]) == 0
    converted = json.loads(capsys.readouterr().out)
    assert converted["10:3"]["inputs"] == {"a": ["1", 0], "factor": 7.0}
    assert main(["run", str(path)]) == 0
    path.write_text(json.dumps(fx.workflow(definitions=[])))
    assert main(["validate", str(path)]) == 2
    assert fx.SCALE in capsys.readouterr().err


def test_load_document_reads_subgraph_files(registry, tmp_path):
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(fx.workflow()))
    assert run(load_document(path).to_api(registry), registry)["2"] == {"text": ["14.0"]}
