"""End to end: the LoRA and ControlNet example workflows (demo models) and the depth ControlNet wiring (on
tiny random models made in a temporary folder) run through the engine; changing a LoRA or ControlNet
strength re-runs only what depends on it."""
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from nodegraph import Executor, OutputCache, folders
from nodegraph.workflow.document import document_from_json
from nodes.default_model import ensure_default_checkpoint
from tests.tiny_models import TINY_CHECKPOINT, TINY_CONTROLNET, TINY_DEPTH_MODEL, make_tiny_models

from .test_workflows import STEPS, WORKFLOWS, pixels, prompt_of, run, saved_files


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """The tiny random checkpoint, ControlNet, LoRA and depth model, made once in a temporary folder."""
    models = tmp_path_factory.mktemp("tiny-models") / "models"
    assert set(make_tiny_models(models)) == {"checkpoint", "controlnet", "loras", "depth"}
    return models


@pytest.fixture
def sd_layout(layout, tiny_models):
    shutil.copytree(tiny_models, layout.models[0], dirs_exist_ok=True)
    ensure_default_checkpoint(layout)  # the demo models, offered from the package
    rgb = np.full((64, 64, 3), 255, dtype=np.uint8)
    rgb[16:48, 16:48] = 0  # a black square: strong edges for Canny, a depth step for the depth model
    Image.fromarray(rgb, "RGB").save(layout.input / "example.png")
    return layout


def classes_run(result, prompt):
    return sorted(prompt[n]["class_type"] for n in result.executed)


def set_input(prompt, class_type, **values):
    for node in prompt.values():
        if node["class_type"] == class_type:
            node["inputs"].update(values)
    return prompt


def tiny_depth_prompt(library):
    """The depth ControlNet wiring (DepthEstimation -> ControlNetApplyAdvanced) on the random models."""
    from tools.build_workflows import _controlnet

    ui = _controlnet("DepthEstimation", [TINY_DEPTH_MODEL, 0], "a red box on a table", "depth_wiring", [0.0, 0.8],
                     checkpoint=TINY_CHECKPOINT, controlnet=TINY_CONTROLNET)
    prompt = document_from_json(ui, "depth wiring").to_api(library)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = STEPS
    return prompt


EXAMPLES = sorted(p.name for p in WORKFLOWS.glob("*.json") if "lora" in p.name or "controlnet" in p.name)


@pytest.mark.parametrize("name", [*EXAMPLES, "tiny depth wiring"])
def test_workflow_runs(sd_layout, library, name, caplog):
    with caplog.at_level(logging.WARNING):
        result = run(tiny_depth_prompt(library) if name == "tiny depth wiring" else prompt_of(name, library), library)
    assert "black" not in caplog.text and "no edges" not in caplog.text, "the hint is not empty"
    files = saved_files(result, sd_layout)
    assert len(files) == 1 and files[0].exists()
    image = pixels(files[0])
    assert image.shape == (64, 64, 3) and image.std() > 0


def test_the_controlnet_steers_and_strength_zero_does_not(sd_layout, library):
    images = []
    for strength in (1.0, 0.0):
        prompt = set_input(prompt_of("controlnet_canny.json", library), "ControlNetApplyAdvanced", strength=strength)
        images.append(pixels(saved_files(run(prompt, library), sd_layout)[0]))
    plain = set_input(prompt_of("controlnet_canny.json", library), "ControlNetApplyAdvanced", strength=0.0)
    assert not np.array_equal(images[0], images[1])
    assert np.array_equal(images[1], pixels(saved_files(run(plain, library), sd_layout)[0]))


def test_lora_strength_change_reruns_only_the_lora_and_after(sd_layout, library, monkeypatch):
    import nodes.loaders

    loads = []
    real = nodes.loaders.load_checkpoint
    monkeypatch.setattr(nodes.loaders, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    executor = Executor(OutputCache())
    before = pixels(saved_files(run(prompt_of("txt2img.json", library), library, executor), sd_layout)[0])
    first = run(set_input(prompt_of("lora.json", library), "LoraLoader", strength_model=0.8), library, executor)
    prompt = set_input(prompt_of("lora.json", library), "LoraLoader", strength_model=0.5)
    second = run(prompt, library, executor)
    assert "CheckpointLoaderSimple" not in classes_run(second, prompt)
    assert classes_run(second, prompt) == ["CLIPTextEncode", "CLIPTextEncode", "KSampler", "LoraLoader",
                                           "SaveImage", "VAEDecode"]
    assert len(loads) == 1, "the checkpoint is loaded once; LoRAs patch a clone of it"
    a, b = (pixels(saved_files(r, sd_layout)[0]) for r in (first, second))
    assert not np.array_equal(a, b)
    # The base model sampled again (no output cache) after the LoRA runs sees its original weights.
    after = pixels(saved_files(run(prompt_of("txt2img.json", library), library, Executor(OutputCache(0))),
                               sd_layout)[0])
    assert np.array_equal(before, after)


def test_controlnet_strength_change_keeps_loaders_and_hint_cached(sd_layout, library):
    executor = Executor(OutputCache())
    run(prompt_of("controlnet_canny.json", library), library, executor)
    prompt = set_input(prompt_of("controlnet_canny.json", library), "ControlNetApplyAdvanced", strength=0.5)
    result = run(prompt, library, executor)
    assert classes_run(result, prompt) == ["ControlNetApplyAdvanced", "KSampler", "SaveImage", "VAEDecode"]
