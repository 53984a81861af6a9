"""ComfyUI's published SD1.x example workflows were saved by the 2023 frontends; files of their shape
(tests/nodes/data/legacy_ui, written for this test on the demo models) convert, validate and run with
the inputs ComfyUI's frontend gives them: the randomize checkbox (`true`) sits in the seed's control
slot, a node saved without widget values takes its defaults, PrimitiveNodes drive converted widgets."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodegraph import Executor, OutputCache, validate_prompt
from nodegraph.workflow import load_document
from nodes.default_model import ensure_default_checkpoint

DATA = Path(__file__).with_name("data") / "legacy_ui"


@pytest.fixture
def demo_layout(layout):
    ensure_default_checkpoint(layout)
    rgba = np.full((64, 64, 4), 255, dtype=np.uint8)
    rgba[20:44, 20:44, 3] = 0  # the hole to inpaint
    Image.fromarray(rgba, "RGBA").save(layout.input / "example.png")
    return layout


def converted(name, library):
    return load_document(DATA / f"{name}.json").to_api(library)


def test_randomize_checkbox_of_2023_is_the_control_value(library, demo_layout):
    prompt = converted("lora_2023", library)
    sampler = prompt["3"]["inputs"]
    assert {k: v for k, v in sampler.items() if not isinstance(v, list)} == {
        "seed": 851616030078638, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "denoise": 1}
    assert prompt["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}  # saved without widgets_values
    validate_prompt(prompt, library)


def test_node_saved_without_widget_values_takes_the_defaults(library, demo_layout):
    prompt = converted("inpaint_2023", library)
    assert prompt["26"]["inputs"]["grow_mask_by"] == 6  # no widgets_values key (saved before the widget existed)
    assert prompt["31"]["inputs"]["grow_mask_by"] == 6  # widgets_values: null
    assert prompt["3"]["inputs"]["sampler_name"] == "uni_pc_bh2" and prompt["3"]["inputs"]["denoise"] == 1
    assert prompt["20"]["inputs"] == {"image": "example.png"}  # the upload button's "image" is not an input
    assert validate_prompt(prompt, library).outputs == ["9"]


def test_primitive_nodes_and_reroute_of_late_2023(library, demo_layout):
    prompt = converted("two_stage_2023", library)
    first, second = prompt["10"]["inputs"], prompt["11"]["inputs"]
    assert (first["noise_seed"], first["steps"], first["end_at_step"], first["cfg"]) == (721897303308196, 6, 4, 8)
    assert (second["add_noise"], second["steps"], second["start_at_step"], second["end_at_step"]) == ("disable", 6, 4, 10000)
    assert first["model"] == second["model"] == ["4", 0]  # through the Reroute
    assert not {"45", "46", "47", "48"} & set(prompt)  # Reroute, PrimitiveNodes and Note are not sent
    validate_prompt(prompt, library)


def test_a_2023_file_runs_on_the_demo_model(library, demo_layout):
    prompt = converted("lora_2023", library)
    prompt["3"]["inputs"]["steps"] = 2
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, library))
    assert result.ok, result.error
    saved = result.outputs["9"]["images"][0]
    assert Image.open(demo_layout.output / saved["subfolder"] / saved["filename"]).size == (64, 64)


def test_fixtures_keep_the_2023_shapes():
    """The fixtures must stay in the old shapes this file is about (guards against a 'tidy-up')."""
    lora = json.loads((DATA / "lora_2023.json").read_text())
    sampler = next(n for n in lora["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"][1] is True and isinstance(sampler["size"], dict)
    inpaint = json.loads((DATA / "inpaint_2023.json").read_text())
    encoders = [n for n in inpaint["nodes"] if n["type"] == "VAEEncodeForInpaint"]
    assert "widgets_values" not in encoders[0] and encoders[1]["widgets_values"] is None
