"""widgets_values -> inputs, as ComfyUI's frontend assigns them: every generation of saved file.

The expected values are written out by hand from the frontend's rules (positional assignment to the
widgets the node definition creates, a control slot after a seed, the upload slot after the required
inputs, defaults for what the file lacks), never produced by the code under test."""
import pytest

from nodegraph import Boolean, Combo, Float, Input, Int, Node, NodeRegistry, Output, String
from nodegraph.workflow import ui_to_api
from nodegraph.workflow.widget_values import widget_inputs

from .test_workflow_formats import ui_node, ui_workflow


class Sampler(Node):
    """KSampler's widget layout: seed (with control), steps, cfg, two combos, denoise."""
    inputs = (Input("model", "MODEL"), Int("seed", 0, control_after_generate=True), Int("steps", 20, min=1),
              Float("cfg", 8.0), Combo("sampler_name", ["euler", "heun"]), Combo("scheduler", ["simple", "normal"]),
              Input("latent", "LATENT"), Float("denoise", 1.0))
    outputs = (Output("LATENT"),)


class LegacySeed(Node):
    """A custom node whose INT is called `seed` but has no control flag (older frontends added one)."""
    inputs = (Int("seed", 0), String("text", "a"))


class Upload(Node):
    """An image_upload combo followed by a required and an optional widget."""
    inputs = (Combo("image", ["a.png", "b.png"], image_upload=True), Combo("channel", ["alpha", "red"]),
              Int("feather", 3, optional=True))


class Defaults(Node):
    inputs = (Input("pixels", "IMAGE"), Int("grow", 6), Boolean("flag", True), String("note"), Float("f"),
              Combo("files", lambda: []), Combo("mode", ["x", "y"]))


class Forced(Node):
    """A forceInput INT between two widgets (pre-1.16 frontends saved a dummy value for it)."""
    inputs = (Int("width", 512), Int("offset", 0, forceInput=True), Int("height", 512))


@pytest.fixture
def specs():
    registry = NodeRegistry()
    registry.register_all([Sampler, LegacySeed, Upload, Defaults, Forced])
    return lambda name: registry.get(name).specs()


@pytest.mark.parametrize("values", [
    [851616030078638, True, 20, 8, "euler", "normal", 1],        # 2023: the randomize checkbox
    [851616030078638, False, 20, 8, "euler", "normal", 1],
    [851616030078638, "randomize", 20, 8, "euler", "normal", 1],  # today
    [851616030078638, "increment-wrap", 20, 8, "euler", "normal", 1],
    [851616030078638, None, 20, 8, "euler", "normal", 1],         # anything in that slot: count says control
    [851616030078638, 20, 8, "euler", "normal", 1],               # saved without a control value
])
def test_control_slot_after_the_seed(specs, values):
    assert widget_inputs(specs("Sampler"), values) == {
        "seed": 851616030078638, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1}


def test_legacy_seed_name_without_flag(specs):
    assert widget_inputs(specs("LegacySeed"), [7, "fixed", "b"]) == {"seed": 7, "text": "b"}
    assert widget_inputs(specs("LegacySeed"), [7, True, "b"]) == {"seed": 7, "text": "b"}
    assert widget_inputs(specs("LegacySeed"), [7, "b"]) == {"seed": 7, "text": "b"}


def test_missing_values_take_the_widget_defaults(specs):
    expected = {"grow": 6, "flag": True, "note": "", "f": 0.0, "mode": "x"}  # empty file list: left out
    assert widget_inputs(specs("Defaults"), None) == expected
    assert widget_inputs(specs("Defaults"), []) == expected
    assert widget_inputs(specs("Defaults"), [8]) == {**expected, "grow": 8}
    # too short for the seed node: the values present keep their place, the rest are defaults
    assert widget_inputs(specs("Sampler"), [5, "fixed", 4]) == {
        "seed": 5, "steps": 4, "cfg": 8.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}


def test_upload_value_sits_after_the_required_widgets(specs):
    assert widget_inputs(specs("Upload"), ["b.png", "red", "image", 9]) == {"image": "b.png", "channel": "red",
                                                                          "feather": 9}
    assert widget_inputs(specs("Upload"), ["b.png", "red", "image"]) == {"image": "b.png", "channel": "red",
                                                                       "feather": 3}


def test_force_input_dummy_values_of_old_files_are_dropped(specs):
    assert widget_inputs(specs("Forced"), [640, 0, 480]) == {"width": 640, "height": 480}  # before 1.16
    assert widget_inputs(specs("Forced"), [640, 480]) == {"width": 640, "height": 480}


def test_values_by_name(specs):
    assert widget_inputs(specs("LegacySeed"), {"seed": 3, "other": 1}) == {"seed": 3}


def test_renamed_node_types_and_converted_widget_names(registry):
    # The frontend patches T2IAdapterLoader and the typo 'ConditioningAverage ' on load; a converted
    # widget's input is named by its widget entry (the slot may carry another name, e.g. a label).
    wf = ui_workflow([
        ui_node(1, "Number", [2.0], outputs=[{"name": "value", "type": "FLOAT", "links": [1]}]),
        ui_node(2, "Multiply", [1.0], inputs=[{"name": "a", "type": "FLOAT", "link": None},
                                              {"name": "Factor (x)", "type": "FLOAT", "link": 1,
                                               "widget": {"name": "factor", "config": ["FLOAT", {"default": 1}]}}]),
        ui_node(3, "T2IAdapterLoader", ["x.pth"]),
    ], [[1, 1, 0, 2, 1, "FLOAT"]])
    prompt = ui_to_api(wf, registry)
    assert prompt["2"]["inputs"] == {"factor": ["1", 0]}
    assert prompt["3"]["class_type"] == "ControlNetLoader"


def test_unresolved_link_keeps_the_widget_value(registry):
    # A widget input fed by a bypassed node with nothing to pass keeps its own value (the frontend's
    # resolveInput gives nothing; the widget value stays), while a muted origin removes the input.
    wf = ui_workflow([
        ui_node(1, "Show", inputs=[{"name": "value", "type": "FLOAT,STRING", "link": None}],
                outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [1]}], mode=4),
        ui_node(2, "Multiply", [3.5], inputs=[{"name": "a", "type": "FLOAT", "link": None},
                                              {"name": "factor", "type": "FLOAT", "link": 1, "widget": {"name": "factor"}}]),
        ui_node(3, "Number", [4.0], outputs=[{"name": "value", "type": "FLOAT", "links": [2]}], mode=2),
        ui_node(4, "Multiply", [3.5], inputs=[{"name": "a", "type": "FLOAT", "link": None},
                                              {"name": "factor", "type": "FLOAT", "link": 2, "widget": {"name": "factor"}}]),
    ], [[1, 1, 0, 2, 1, "FLOAT"], [2, 3, 0, 4, 1, "FLOAT"]])
    prompt = ui_to_api(wf, registry)
    assert prompt["2"]["inputs"] == {"factor": 3.5}
    assert prompt["4"]["inputs"] == {}


def test_old_shapes_nulls_holes_and_reroutes(registry):
    # 2023 shapes: Note / PrimitiveNode with inputs null, a legacy Reroute node, a deleted link left
    # as a hole, a PrimitiveNode's value with its own control value, groups with font_size.
    wf = ui_workflow([
        {**ui_node(1, "Note", ["text"]), "inputs": None, "outputs": None},
        {**ui_node(2, "PrimitiveNode", [6, "fixed"]), "inputs": None,
         "outputs": [{"name": "INT", "type": "INT", "links": [1], "widget": {
             "name": "steps", "config": ["INT", {"default": 20, "min": 1, "max": 10000}]}, "slot_index": 0}]},
        {**ui_node(3, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
                   outputs=[{"name": "INT", "type": "INT", "links": [2], "slot_index": 0}]),
         "properties": {"showOutputText": True, "horizontal": False}},
        ui_node(4, "Number", [1.0], outputs=[{"name": "value", "type": "FLOAT", "links": [3]}]),
        ui_node(5, "Seeded", [9, True, 20, "sum"],
                inputs=[{"name": "a", "type": "FLOAT", "link": 3},
                        {"name": "steps", "type": "INT", "link": 2,
                         "widget": {"name": "steps", "config": ["INT", {"default": 20, "min": 1, "max": 10000}]}}]),
    ], [[1, 2, 0, 3, 0, "*"], None, [2, 3, 0, 5, 1, "INT"], [3, 4, 0, 5, 0, "FLOAT"]])
    wf["groups"] = [{"title": "G", "bounding": [0, 0, 9, 9], "color": "#3f789e", "font_size": 24}]
    assert ui_to_api(wf, registry)["5"]["inputs"] == {"seed": 9, "steps": 6, "mode": "sum", "a": ["4", 0]}
