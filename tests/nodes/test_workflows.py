"""End to end: the example workflows run on the embedded demo checkpoint (few steps: this is about the
plumbing; tests/demo judges what the pictures show); determinism."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodegraph import Executor, OutputCache, validate_prompt
from nodegraph.workflow import load_document, normalize_api_prompt
from nodes.default_model import ensure_default_checkpoint

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
STEPS = 3


@pytest.fixture
def sd_layout(layout):
    ensure_default_checkpoint(layout)
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[16:48, 16:48, :3] = (200, 30, 30)
    rgba[..., 3] = 255
    rgba[20:40, 20:40, 3] = 0  # the hole to inpaint
    Image.fromarray(rgba, "RGBA").save(layout.input / "example.png")
    return layout


def prompt_of(name, library, **overrides):
    prompt = load_document(WORKFLOWS / name).to_api(library)
    for node in prompt.values():
        if node["class_type"] in ("KSampler", "KSamplerAdvanced"):
            node["inputs"]["steps"] = STEPS
            for key, value in overrides.items():
                node["inputs"][key] = value
    return prompt


def run(prompt, library, executor=None):
    result = (executor or Executor(OutputCache(0))).execute(validate_prompt(prompt, library))
    assert result.ok, result.error and (result.error.exception_message + "".join(result.error.traceback[-3:]))
    return result


def saved_files(result, layout):
    return [layout.output / i["subfolder"] / i["filename"] for ui in result.outputs.values() for i in ui["images"]]


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image).copy()


@pytest.mark.parametrize("name", ["txt2img.json", "img2img.json", "inpaint.json", "hires_fix.json"])
def test_example_workflow_runs(sd_layout, library, name):
    result = run(prompt_of(name, library), library)
    files = saved_files(result, sd_layout)
    assert len(files) == 1 and files[0].exists()
    image = pixels(files[0])
    expected = 96 if name == "hires_fix.json" else 64
    assert image.shape == (expected, expected, 3)
    assert image.std() > 0, "not a flat image"


def test_same_seed_same_png_different_seed_different(sd_layout, library):
    files = [saved_files(run(prompt_of("txt2img.json", library, seed=s), library), sd_layout)[0] for s in (5, 5, 6)]
    a, b, c = (pixels(f) for f in files)
    assert np.array_equal(a, b), "same seed, same image"
    assert not np.array_equal(a, c), "different seed, different image"


def test_ui_file_and_its_api_conversion_give_identical_pngs(sd_layout, library, tmp_path):
    ui_prompt = prompt_of("txt2img.json", library)
    api_path = tmp_path / "api.json"
    api_path.write_text(json.dumps(ui_prompt))
    api_prompt = normalize_api_prompt(json.loads(api_path.read_text()))
    first = saved_files(run(ui_prompt, library), sd_layout)[0]
    second = saved_files(run(api_prompt, library), sd_layout)[0]
    assert hashlib.sha256(pixels(first).tobytes()).digest() == hashlib.sha256(pixels(second).tobytes()).digest()


def test_seed_change_reruns_only_the_sampler_and_after(sd_layout, library):
    executor = Executor(OutputCache())
    run(prompt_of("txt2img.json", library, seed=1), library, executor)
    result = run(prompt_of("txt2img.json", library, seed=2), library, executor)
    classes = [prompt_of("txt2img.json", library)[n]["class_type"] for n in result.executed]
    assert classes == ["KSampler", "VAEDecode", "SaveImage"]


def test_cache_counts_loaded_models_once(sd_layout, library):
    """The checkpoint's weights are in the cache's byte count, once, whatever holds them."""
    from nodes.default_model import DEFAULT_CHECKPOINT
    cache = OutputCache()
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEFAULT_CHECKPOINT}},
              "2": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}}}
    Executor(cache).execute(validate_prompt(prompt, library, targets=["1"]))
    after_loader = cache.stats()["used_bytes"]
    # the file is fp16; on the CPU the weights are held as fp16 (lean mode) or fp32: 2 or 4 bytes a value
    from safetensors import safe_open
    from nodes.sd.device import weight_mode
    per_value = 4 if weight_mode() == "fp32" else 2
    with safe_open(sd_layout.model_path("checkpoints", DEFAULT_CHECKPOINT), "pt") as f:
        file_bytes = per_value * sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert 0.9 * file_bytes < after_loader < 1.2 * file_bytes, (after_loader, file_bytes)
    Executor(cache).execute(validate_prompt(prompt, library, targets=["2"]))  # a CLIP clone: same weights
    assert cache.stats()["used_bytes"] - after_loader < 0.01 * file_bytes
