"""The upscale-model and model-merge example workflows run end to end on the demo models (few steps),
and what they write is what the graph says: a 4x picture, a checkpoint that equals the LoRA at half
strength baked into the demo model."""
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import Executor, OutputCache, validate_prompt
from nodegraph.workflow import load_document
from nodes.default_model import DEFAULT_CHECKPOINT, DEMO_DIR, DEMO_LORA

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def demo_layout(layout):
    for kind, name in (("checkpoints", DEFAULT_CHECKPOINT), ("loras", DEMO_LORA)):
        (layout.models[0] / kind).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_DIR / name, layout.models[0] / kind / name)
    return layout


def run_workflow(name, library):
    prompt = load_document(WORKFLOWS / name).to_api(library)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 3
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, library))
    assert result.ok, result.error and (result.error.exception_message + "".join(result.error.traceback[-3:]))
    return result


def written(result, layout, key):
    return [layout.output / e["subfolder"] / e["filename"] for ui in result.outputs.values() for e in ui.get(key, [])]


@pytest.mark.skipif(importlib.util.find_spec("spandrel") is None and not os.environ.get("CI"),
                    reason="spandrel is not installed here (scripts/setup installs it; CI requires it)")
def test_upscale_model_workflow(demo_layout, library):
    from tests.nodes import upscale_files

    upscale_files.write_esrgan_original(demo_layout.models[0] / "upscale_models" / "RealESRGAN_x4plus.pth",
                                        upscale_files.tiny_esrgan(scale=4))
    (image,) = written(run_workflow("upscale_model.json", library), demo_layout, "images")
    with Image.open(image) as picture:
        pixels = np.asarray(picture)
    assert pixels.shape == (256, 256, 3) and pixels.std() > 0


def test_model_merge_workflow_saves_the_lora_at_half_strength(demo_layout, library):
    result = run_workflow("model_merge.json", library)
    (image,) = written(result, demo_layout, "images")
    (checkpoint,) = written(result, demo_layout, "models")
    assert image.exists() and checkpoint.name == "nodegraph-demo-merged_00001_.safetensors"

    shutil.copyfile(checkpoint, demo_layout.models[0] / "checkpoints" / checkpoint.name)
    load = library.get("CheckpointLoaderSimple").cls().run
    merged_model, merged_clip, _ = load(ckpt_name=checkpoint.name)
    base_model, base_clip, _ = load(ckpt_name=DEFAULT_CHECKPOINT)
    half_model, half_clip = library.get("LoraLoader").cls().run(model=base_model, clip=base_clip, lora_name=DEMO_LORA,
                                                                strength_model=0.5, strength_clip=0.5)
    # ratio 0.5 of W and W + ΔW is W + ΔW/2: the LoRA at half strength, by linearity
    changed = 0
    for key, tensor in merged_model.model.state_dict().items():
        want = half_model.weight(key)
        assert (tensor - want).abs().max() <= 1e-6 * max(1.0, float(want.abs().max())), key
        changed += not torch.equal(want, base_model.weight(key))
    assert changed > 0
    prompt = "a blue star on a white background, center"
    torch.testing.assert_close(merged_clip.encode(prompt)[0], half_clip.encode(prompt)[0], rtol=1e-5, atol=1e-5)
