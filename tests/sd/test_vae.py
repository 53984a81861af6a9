"""Our VAE against diffusers' AutoencoderKL, and every VAE file layout we accept loading to the same model."""
from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import save_file

from nodes.sd.checkpoint import load_vae_file
from nodes.sd.vae import AutoencoderKL, VAEConfig

TOL = 1e-4
pytestmark = pytest.mark.usefixtures("seeded")


def diffusers_config(cfg: VAEConfig) -> dict:
    n = len(cfg.ch_mult)
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
        "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n,
        "layers_per_block": cfg.num_res_blocks,
        "latent_channels": cfg.embed_dim,
        "norm_num_groups": 32,
        "sample_size": 64,
    }


@pytest.fixture(scope="module")
def reference_vae(tiny):
    config = diffusers_config(tiny.vae.config)
    ldm = {"first_stage_model." + k: v for k, v in tiny.vae.state_dict().items()}
    ref = DiffusersAutoencoderKL(**config)
    ref.load_state_dict(convert_ldm_vae_checkpoint(ldm, config), strict=True)
    return ref.eval()


@torch.no_grad()
def assert_same_vae(ours: AutoencoderKL, ref: DiffusersAutoencoderKL):
    pixels = torch.rand(2, 3, 64, 48) * 2 - 1
    expected_mean = ref.encode(pixels).latent_dist.mean
    mean = ours.encode(pixels)
    assert mean.shape == (2, 4, 8, 6)
    assert expected_mean.abs().mean() > 0.05
    assert (mean - expected_mean).abs().max().item() <= TOL

    latent = torch.randn(2, 4, 8, 6)
    expected = ref.decode(latent).sample
    decoded = ours.decode(latent)
    assert decoded.shape == (2, 3, 64, 48)
    assert expected.abs().mean() > 0.05
    assert (decoded - expected).abs().max().item() <= TOL


def test_vae_matches_diffusers(tiny, reference_vae):
    assert_same_vae(tiny.vae, reference_vae)


def test_diffusers_layout_vae_file_loads_to_the_same_model(tmp_path, reference_vae):
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference_vae.state_dict().items()}, str(path))
    assert_same_vae(load_vae_file(path, device="cpu", use_cache=False), reference_vae)


def test_old_diffusers_attention_names_are_understood(tmp_path, reference_vae):
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    sd = {}
    for k, v in reference_vae.state_dict().items():
        for new, old in renames.items():
            k = k.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        sd[k] = v.contiguous()
    path = tmp_path / "old-diffusers-vae.safetensors"
    save_file(sd, str(path))
    assert_same_vae(load_vae_file(path, device="cpu", use_cache=False), reference_vae)


def test_ldm_vae_ckpt_with_training_leftovers_loads(tmp_path, tiny, reference_vae):
    # Like vae-ft-mse-840000-ema-pruned.ckpt: {"state_dict": {encoder.*, decoder.*, loss.*, ...}}.
    sd = dict(tiny.vae.state_dict())
    sd["loss.logvar"] = torch.zeros(())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(8, 3, 4, 4)
    path = tmp_path / "vae-ft-mse.ckpt"
    torch.save({"state_dict": sd, "global_step": 840000}, path)
    assert_same_vae(load_vae_file(path, device="cpu", use_cache=False), reference_vae)


def test_full_checkpoint_used_as_vae_file(tiny_checkpoint, reference_vae):
    assert_same_vae(load_vae_file(tiny_checkpoint, device="cpu", use_cache=False), reference_vae)
