"""Checkpoint files: config detection, layouts, broken and hostile files, and the shared cache."""
from __future__ import annotations

import logging
import os
import random
import pickle
import shutil
import sys
import types

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from safetensors.torch import load_file, save_file

from nodes.sd.checkpoint import checkpoint_from_state_dict, load_checkpoint
from nodes.sd.errors import MissingKeysError, ModelLoadError, NotAnSDCheckpointError
from nodes.sd.model_detection import unet_config_from_state_dict, vae_config_from_state_dict
from nodes.sd.state_dict import load_state_dict
from nodes.sd.tiny import make_tiny_checkpoint
from nodes.sd.unet import UNetConfig, UNetModel
from nodes.sd.vae import VAEConfig
from nodes.sd.vae_keys import vae_diffusers_to_ldm

pytestmark = pytest.mark.usefixtures("seeded")

# SD1.5 (v1-inference.yaml): model_channels 320, channel_mult [1,2,4,4], attention_resolutions [4,2,1]
# (levels 0-2), num_res_blocks 2, context_dim 768, num_heads 8; VAE ch 128, ch_mult [1,2,4,4], z 4.
SD15_UNET = UNetConfig(in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                       transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1, context_dim=768, num_heads=8)
SD15_VAE = VAEConfig(in_channels=3, out_channels=3, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, embed_dim=4)
SD15_DIFFUSERS_UNET = dict(cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280))


@pytest.fixture(scope="module")
def sd15_meta_state_dict():
    """An SD1.5-shaped single-file state dict of meta tensors: shapes from diffusers' SD1.5 models, names
    from diffusers' own LDM converter (run on key names), so nothing here comes from our module code."""
    with torch.device("meta"):
        ref_unet = UNet2DConditionModel(**SD15_DIFFUSERS_UNET).state_dict()
        ref_vae = DiffusersAutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                         down_block_types=["DownEncoderBlock2D"] * 4,
                                         up_block_types=["UpDecoderBlock2D"] * 4).state_dict()
        ldm_names = list(UNetModel(SD15_UNET).state_dict())
    config = {"layers_per_block": 2}
    diffusers_to_ldm = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: k for k in ldm_names}, config)
    assert set(diffusers_to_ldm) == set(ref_unet)
    sd = {"model.diffusion_model." + ldm: ref_unet[d] for d, ldm in diffusers_to_ldm.items()}
    sd |= {"first_stage_model." + k: v for k, v in vae_diffusers_to_ldm(ref_vae).items()}
    sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.empty(768, device="meta")
    sd["alphas_cumprod"] = torch.empty(1000, device="meta")
    sd["model_ema.decay"] = torch.empty((), device="meta")
    return sd


# ------------------------------------------------------------------------------------------ detection

def test_tiny_checkpoint_config_is_detected(tiny):
    assert tiny.unet_config == UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2),
                                          num_res_blocks=2, transformer_depth=(1, 1), transformer_depth_middle=1,
                                          context_dim=32, num_heads=8)
    assert tiny.vae_config == VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4)
    assert all(k.startswith("text_model.") for k in tiny.clip_state_dict)
    assert tiny.clip_state_dict["text_model.embeddings.token_embedding.weight"].shape == (49408, 32)


def test_inpainting_checkpoint_has_nine_input_channels(tiny_inpainting_checkpoint):
    ck = load_checkpoint(tiny_inpainting_checkpoint, device="cpu")
    assert (ck.unet_config.in_channels, ck.unet_config.out_channels) == (9, 4)


def test_sd15_shapes_give_the_sd15_config(sd15_meta_state_dict):
    unet_sd = {k.removeprefix("model.diffusion_model."): v for k, v in sd15_meta_state_dict.items()
               if k.startswith("model.diffusion_model.")}
    vae_sd = {k.removeprefix("first_stage_model."): v for k, v in sd15_meta_state_dict.items()
              if k.startswith("first_stage_model.")}
    assert unet_config_from_state_dict(unet_sd) == SD15_UNET
    assert vae_config_from_state_dict(vae_sd) == SD15_VAE


def test_sd15_shapes_pass_the_whole_loader_on_meta(sd15_meta_state_dict):
    ck = checkpoint_from_state_dict(sd15_meta_state_dict, device="meta")
    assert sum(p.numel() for p in ck.unet.parameters()) == 859_520_964  # SD1.5 UNet's known size
    assert sum(p.numel() for p in ck.vae.parameters()) == 83_653_863
    assert list(ck.clip_state_dict) == ["text_model.final_layer_norm.weight"]


# ------------------------------------------------------------------------------------------ layouts

def test_old_clip_layout_gets_text_model_prefix_and_loads_into_transformers(tmp_path, tiny_checkpoint):
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.sd.tiny import tiny_clip_config_kwargs

    sd = load_file(str(tiny_checkpoint))
    old = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v for k, v in sd.items()}
    path = tmp_path / "old-layout.ckpt"
    torch.save({"state_dict": old, "epoch": 3}, path)
    ck = load_checkpoint(path, device="cpu", use_cache=False)
    expected = {k.removeprefix("cond_stage_model.transformer."): v for k, v in sd.items() if k.startswith("cond_stage_model.")}
    assert ck.clip_state_dict.keys() == expected.keys()
    CLIPTextModel(CLIPTextConfig(**tiny_clip_config_kwargs())).load_state_dict(ck.clip_state_dict, strict=True)


def test_fp16_checkpoint_loads_in_fp32_on_cpu(tmp_path, tiny):
    path = make_tiny_checkpoint(tmp_path / "tiny-fp16.safetensors", seed=0, dtype=torch.float16)
    ck = load_checkpoint(path, device="cpu")
    assert ck.unet.dtype == torch.float32 and ck.vae.dtype == torch.float32
    x, ctx = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        torch.testing.assert_close(ck.unet(x, torch.tensor([50.0]), ctx), tiny.unet(x, torch.tensor([50.0]), ctx),
                                   atol=0.05, rtol=0.05)


def test_lightning_ckpt_with_callback_objects_loads_without_importing_lightning(tmp_path, tiny_checkpoint):
    # sd-v1-4.ckpt style: Lightning callback state sits next to the weights. Fake the class just for saving.
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    fake = {name: types.ModuleType(name) for name in names}
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
    fake[names[-1]].ModelCheckpoint = ModelCheckpoint
    sys.modules.update(fake)
    try:
        sd = load_file(str(tiny_checkpoint))
        path = tmp_path / "lightning.ckpt"
        torch.save({"state_dict": sd, "callbacks": {ModelCheckpoint: {"best_model_score": None}}}, path)
    finally:
        for name in names:
            del sys.modules[name]
    assert load_state_dict(path).keys() == sd.keys()


# ------------------------------------------------------------------------------------------ broken files

def test_truncated_safetensors_names_the_file(tmp_path, tiny_checkpoint):
    path = tmp_path / "half.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as e:
        load_checkpoint(path, device="cpu")
    assert str(path) in str(e.value) and "truncated" in str(e.value)


@pytest.mark.parametrize("name", ["noise.safetensors", "noise.ckpt", "noise.pt", "noise.model"])
@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_give_a_clear_error(tmp_path, name, seed):
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(4096))  # fixed seeds: reproducible, several shapes of garbage
    with pytest.raises(ModelLoadError) as e:
        load_checkpoint(path, device="cpu")
    assert str(path) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="nope.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors", device="cpu")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["raw-pickle", "torch-zip"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, container):
    armed, marker = tmp_path / "armed", tmp_path / "marker"
    # First prove the payload is live: a plain unpickle does create its marker file.
    pickle.loads(pickle.dumps(_Payload(armed)))
    assert armed.exists()

    path = tmp_path / "evil.ckpt"
    obj = {"state_dict": {"model.diffusion_model.x": torch.zeros(1), "evil": _Payload(marker)}}
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path)
    with pytest.raises(ModelLoadError) as e:
        load_checkpoint(path, device="cpu")
    assert not marker.exists()
    message = str(e.value)
    assert str(path) in message
    assert "NOT unpickled" in message or "Nothing in it was executed" in message


def test_missing_and_misshapen_weights_are_named(tmp_path, tiny_checkpoint):
    sd = load_file(str(tiny_checkpoint))
    del sd["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"]
    sd["model.diffusion_model.middle_block.0.emb_layers.1.bias"] = torch.zeros(3)
    path = tmp_path / "partial.safetensors"
    save_file(sd, str(path))
    with pytest.raises(MissingKeysError) as e:
        load_checkpoint(path, device="cpu")
    message = str(e.value)
    assert "input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight" in message
    assert "middle_block.0.emb_layers.1.bias (3,)" in message
    assert str(path) in message


def test_unexpected_weights_are_logged_and_ignored(tmp_path, tiny_checkpoint, caplog):
    sd = load_file(str(tiny_checkpoint))
    sd["model.diffusion_model.mystery.weight"] = torch.zeros(2)
    path = tmp_path / "extra.safetensors"
    save_file(sd, str(path))
    with caplog.at_level(logging.WARNING, logger="nodes.sd.checkpoint"):
        load_checkpoint(path, device="cpu")
    assert "mystery.weight" in caplog.text


def test_lora_file_is_not_an_sd_checkpoint(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4)}, str(path))
    with pytest.raises(NotAnSDCheckpointError, match="LoRA"):
        load_checkpoint(path, device="cpu")


def test_sdxl_and_sd2_unets_are_recognised_as_not_sd1(sd15_meta_state_dict):
    sdxl = dict(sd15_meta_state_dict)
    sdxl["model.diffusion_model.label_emb.0.0.weight"] = torch.empty(1280, 2816, device="meta")
    with pytest.raises(NotAnSDCheckpointError, match="SDXL"):
        checkpoint_from_state_dict(sdxl, device="meta")
    sd2 = {k: (torch.empty(v.shape[:2], device="meta") if k.endswith("proj_in.weight") else v)
           for k, v in sd15_meta_state_dict.items()}
    with pytest.raises(NotAnSDCheckpointError, match="SD2"):
        checkpoint_from_state_dict(sd2, device="meta")


# ------------------------------------------------------------------------------------------ cache

def test_same_file_is_loaded_once_and_shared(tmp_path, tiny_checkpoint):
    path = tmp_path / "shared.safetensors"
    shutil.copy(tiny_checkpoint, path)
    first = load_checkpoint(path, device="cpu")
    assert load_checkpoint(path, device="cpu") is first
    assert load_checkpoint(path, device="cpu", use_cache=False) is not first
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file was replaced: reload
    assert load_checkpoint(path, device="cpu") is not first


@pytest.mark.parametrize("content", [b"R.", b"\x80\x02R.", b"(R."])
def test_malformed_pickle_opcodes_give_a_clear_error(tmp_path, content):
    """Pickles the weights-only unpickler chokes on (REDUCE on an empty stack raises IndexError)."""
    path = tmp_path / "odd.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="odd.pt"):
        load_state_dict(path)
