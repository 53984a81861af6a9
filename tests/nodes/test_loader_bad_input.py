"""Wrong model files given to the loaders of this family: each error names the node, the input, the
file and what the file looks like instead; pickled payloads run nothing; the executor goes on."""
import importlib.util
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nodegraph import Executor, OutputCache, validate_prompt
from nodes.default_model import DEFAULT_CHECKPOINT, DEMO_DIR

from .loader_checks import assert_blames, run_one

DEMO = DEMO_DIR / DEFAULT_CHECKPOINT


@pytest.fixture(scope="module")
def demo_sd():
    return load_file(str(DEMO))


def put(layout, folder, name, tensors):
    path = layout.models[0] / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def sdxl_like(demo_sd):
    """SD1 tensors plus the size embedding and second text encoder an SDXL file has."""
    sd = dict(demo_sd)
    sd["model.diffusion_model.label_emb.0.0.weight"] = torch.zeros(8, 8)
    sd["conditioner.embedders.1.model.token_embedding.weight"] = torch.zeros(8, 8)
    return sd


def test_an_sdxl_checkpoint_in_the_sd1_checkpoint_loaders(layout, library, demo_sd):
    put(layout, "checkpoints", "sdxl.safetensors", sdxl_like(demo_sd))
    assert_blames(run_one(library, "CheckpointLoaderSimple", ckpt_name="sdxl.safetensors"),
                  "CheckpointLoaderSimple", "ckpt_name", "sdxl.safetensors", "SDXL")
    assert_blames(run_one(library, "CheckpointLoader", config_name="v1-inference.yaml", ckpt_name="sdxl.safetensors"),
                  "CheckpointLoader", "ckpt_name", "sdxl.safetensors", "SDXL")


def test_an_upscale_model_in_the_checkpoint_loader_says_what_it_is(layout, library):
    if importlib.util.find_spec("spandrel") is None:
        pytest.skip("spandrel is not installed here (scripts/setup installs it)")
    from tests.nodes import upscale_files
    path = layout.models[0] / "checkpoints" / "4x.pth"
    upscale_files.write_esrgan_original(path, upscale_files.tiny_esrgan())
    assert_blames(run_one(library, "CheckpointLoaderSimple", ckpt_name="4x.pth"),
                  "CheckpointLoaderSimple", "ckpt_name", "4x.pth", "ESRGAN upscale model")


def test_a_lora_in_the_vae_loader_says_lora(layout, library):
    from nodes.sd.tiny_extras import make_tiny_lora
    make_tiny_lora(layout.models[0] / "vae" / "style.safetensors")
    assert_blames(run_one(library, "VAELoader", vae_name="style.safetensors"), "VAELoader", "vae_name",
                  "style.safetensors", "LoRA")


@pytest.mark.parametrize("class_type, folder, input_name, extra", [
    ("UNETLoader", "unet", "unet_name", {"weight_dtype": "default"}),
    ("CLIPLoader", "clip", "clip_name", {"type": "stable_diffusion"}),
    ("VAELoader", "vae", "vae_name", {}),
    ("CheckpointLoader", "checkpoints", "ckpt_name", {"config_name": "v1-inference.yaml"}),
])
def test_truncated_component_files(layout, library, demo_sd, class_type, folder, input_name, extra):
    path = put(layout, folder, "cut.safetensors", demo_sd)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    assert_blames(run_one(library, class_type, **{input_name: "cut.safetensors"}, **extra),
                  class_type, input_name, "cut.safetensors", "truncated")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("class_type, folder, name, input_name, extra", [
    ("CheckpointLoader", "checkpoints", "evil.ckpt", "ckpt_name", {"config_name": "v1-inference.yaml"}),
    ("UNETLoader", "unet", "evil.pth", "unet_name", {"weight_dtype": "default"}),
    ("CLIPLoader", "clip", "evil.bin", "clip_name", {"type": "stable_diffusion"}),
])
def test_pickle_payloads_run_nothing(layout, library, tmp_path, class_type, folder, name, input_name, extra):
    marker = tmp_path / f"pwned-{class_type}"
    (layout.models[0] / folder).mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"weight": _Exploit(marker)}}, layout.models[0] / folder / name)
    assert_blames(run_one(library, class_type, **{input_name: name}, **extra), class_type, input_name, name,
                  "NOT unpickled")
    assert not marker.exists()


def test_vae_encode_tiled_refuses_an_overlap_its_narrow_tiles_cannot_step_over(layout, library):
    shutil.copytree(DEMO_DIR, layout.models[0] / "checkpoints", dirs_exist_ok=True)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEFAULT_CHECKPOINT}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "big.png"}},
        "3": {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["2", 0], "vae": ["1", 2], "tile_size": 64,
                                                         "overlap": 32, "temporal_size": 64, "temporal_overlap": 8}},
    }
    from PIL import Image
    Image.fromarray(np.full((128, 128, 3), 128, dtype=np.uint8)).save(layout.input / "big.png")
    executor = Executor(OutputCache(0))
    result = executor.execute(validate_prompt(prompt, library, targets=["3"]))
    assert result.status == "error"
    assert (result.error.node_id, result.error.node_type, result.error.input_name) == ("3", "VAEEncodeTiled", "overlap")
    prompt["3"]["inputs"]["overlap"] = 16
    assert executor.execute(validate_prompt(prompt, library, targets=["3"])).ok  # and the next prompt runs
