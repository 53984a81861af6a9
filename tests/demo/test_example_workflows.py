"""The README's main job and the example workflows, exactly as shipped (their own steps, CFG and
prompts) on the embedded demo models and input/example.png, draw what their prompts say — judged
like tests/demo/test_demo_models.py, through the engine and the nodes a user runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodegraph import Executor, OutputCache, folders, validate_prompt
from nodegraph.registry import NodeRegistry
from nodegraph.workflow import load_document

from . import harness
from .judge import edge_shape_mask, iou, judge

pytestmark = pytest.mark.skipif(not harness.CHECKPOINT.exists(), reason="demo checkpoint not built yet")
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import nodes

    previous = folders._current
    layout = folders.use(folders.Folders(tmp_path_factory.mktemp("home")))
    layout.ensure()
    nodes.prepare_default_models(layout)  # what `nodegraph run` does first
    registry = NodeRegistry()
    nodes.register_nodes(registry)
    yield layout, registry
    folders._current = previous


def draw(setup, name: str) -> np.ndarray:
    layout, registry = setup
    prompt = load_document(WORKFLOWS / name).to_api(registry)
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry))
    assert result.ok, result.error and result.error.exception_message
    (image,) = [i for ui in result.outputs.values() for i in ui["images"]]
    with Image.open(layout.output / image["subfolder"] / image["filename"]) as png:
        return np.asarray(png.convert("RGB"))


@pytest.mark.parametrize("name, colour, shape", [("txt2img.json", "red", "circle"),
                                                 ("img2img.json", "purple", "square"),
                                                 ("inpaint.json", "yellow", "circle")])
def test_the_example_draws_its_prompt(setup, name, colour, shape):
    verdict = judge(draw(setup, name))
    assert (verdict.colour, verdict.shape) == (colour, shape)


def test_the_lora_example_draws_an_outline(setup):
    verdict = judge(draw(setup, "demo_lora.json"))
    assert verdict.colour == "blue" and verdict.fill < 0.8, verdict


def test_the_controlnet_example_puts_the_shape_where_the_example_image_has_one(setup):
    """demo_controlnet.json's prompt names no position; input/example.png has a square at the top left."""
    layout, _ = setup
    with Image.open(layout.input / "example.png") as png:
        example = np.array(png.convert("RGB"))
    target = edge_shape_mask(harness.canny(example[None])[0].numpy())
    verdict = judge(draw(setup, "demo_controlnet.json"))
    assert verdict.colour == "green" and verdict.shape == "square", verdict
    assert iou(verdict.mask, target) >= 0.7


@pytest.mark.skipif(not (WORKFLOWS / "controlnet_depth.json").exists(), reason="no demo depth pair ships")
def test_the_depth_example_puts_the_shape_where_the_depth_map_is_near(setup):
    """controlnet_depth.json: the demo depth estimator's map of input/example.png (a square at the top left)
    steers the demo depth ControlNet; the prompt names no position."""
    layout, _ = setup
    with Image.open(layout.input / "example.png") as png:
        example = np.array(png.convert("RGB"))
    target = harness.depth_region(harness.depth(example[None])[0])
    assert 0.05 < target.mean() < 0.3, target.mean()  # the square, not the whole image
    verdict = judge(draw(setup, "controlnet_depth.json"))
    assert verdict.colour == "purple" and verdict.shape == "square", verdict
    assert iou(verdict.mask, target) >= 0.7


def test_the_latent_upscale_example_keeps_its_subject_at_twice_the_size(setup):
    image = draw(setup, "latent_upscale.json")
    assert image.shape == (128, 128, 3)
    verdict = judge(np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BOX)))
    assert (verdict.colour, verdict.shape) == ("green", "triangle"), verdict


def test_the_noisy_latent_composition_example_puts_each_subject_in_its_half(setup):
    """Two subjects sampled apart for the first steps, pasted side by side, finished together."""
    image = draw(setup, "noisy_latent_composition.json")
    assert image.shape == (64, 128, 3)
    left, right = judge(image[:, :64]), judge(image[:, 64:])
    assert (left.colour, left.shape) == ("red", "circle"), left
    assert (right.colour, right.shape) == ("blue", "square"), right
