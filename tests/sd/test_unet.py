"""Our UNet against diffusers' UNet2DConditionModel, with weights converted by diffusers' own converter."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.models.embeddings import get_timestep_embedding

from nodes.sd.checkpoint import load_checkpoint
from nodes.sd.diffusers_keys import unet_diffusers_to_ldm
from nodes.sd.tiny import _init_weights
from nodes.sd.unet import ControlShapeError, UNetConfig, UNetModel, timestep_embedding

TOL = 1e-4
pytestmark = pytest.mark.usefixtures("seeded")


def diffusers_config(cfg: UNetConfig) -> dict:
    """The diffusers description of an LDM UNet config (written out here, independently of our code)."""
    levels = len(cfg.channel_mult)
    attn = [cfg.transformer_depth[i] > 0 for i in range(levels)]
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": [cfg.model_channels * m for m in cfg.channel_mult],
        "layers_per_block": cfg.num_res_blocks,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "cross_attention_dim": cfg.context_dim,
        "attention_head_dim": cfg.num_heads,  # diffusers' SD1 quirk: this field holds the head COUNT
        "transformer_layers_per_block": max(cfg.transformer_depth),
        "norm_num_groups": 32,
        "sample_size": 8,
    }


def reference_unet(ours: UNetModel) -> UNet2DConditionModel:
    config = diffusers_config(ours.config)
    ldm = {"model.diffusion_model." + k: v for k, v in ours.state_dict().items()}
    ref = UNet2DConditionModel(**config)
    ref.load_state_dict(convert_ldm_unet_checkpoint(ldm, config), strict=True)
    return ref.eval()


def random_unet(cfg: UNetConfig, seed: int) -> UNetModel:
    unet = UNetModel(cfg).eval()
    _init_weights(unet, seed)
    return unet


@torch.no_grad()
def assert_same_eps(ours, ref, x, t, ctx, **control):
    ref_control = {}
    if control:
        ref_control = {
            "down_block_additional_residuals": tuple(control["control"]["output"]),
            "mid_block_additional_residual": control["control"]["middle"][0],
        }
    expected = ref(x, t, encoder_hidden_states=ctx, **ref_control).sample
    actual = ours(x, t, ctx, **control)
    assert actual.shape == expected.shape
    assert expected.abs().mean() > 0.05  # a meaningful comparison, not two near-zero tensors
    err = (actual - expected).abs().max().item()
    assert err <= TOL, f"max abs error {err}"


def test_timestep_embedding_matches_diffusers_convention():
    t = torch.tensor([0.0, 1.0, 37.5, 999.0])
    expected = get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_embedding(t, 320), expected, atol=1e-5, rtol=0)
    assert timestep_embedding(torch.tensor([0.0]), 8)[0, :4].eq(1).all()  # cos first: cos(0) = 1


def test_tiny_unet_matches_diffusers(tiny):
    ref = reference_unet(tiny.unet)
    for t in ([1.0, 999.0], [250.0, 250.0], [600.5, 17.0]):
        x, ctx = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
        assert_same_eps(tiny.unet, ref, x, torch.tensor(t), ctx)


def test_odd_latent_size_matches_diffusers(tiny):
    ref = reference_unet(tiny.unet)
    assert_same_eps(tiny.unet, ref, torch.randn(1, 4, 13, 11), torch.tensor([321.0]), torch.randn(1, 77, 32))


def test_unet_without_attention_at_the_deepest_level_matches_diffusers():
    # SD1.5's pattern (last level plain), which the tiny default does not exercise.
    cfg = UNetConfig(model_channels=32, channel_mult=(1, 2, 2), transformer_depth=(1, 1, 0), context_dim=48)
    ours = random_unet(cfg, seed=5)
    ref = reference_unet(ours)
    assert_same_eps(ours, ref, torch.randn(2, 4, 16, 16), torch.tensor([10.0, 700.0]), torch.randn(2, 20, 48))


def test_inpainting_unet_matches_diffusers(tiny_inpainting_checkpoint):
    ck = load_checkpoint(tiny_inpainting_checkpoint, device="cpu")
    assert ck.unet_config.in_channels == 9 and ck.unet_config.out_channels == 4
    ref = reference_unet(ck.unet)
    assert_same_eps(ck.unet, ref, torch.randn(2, 9, 16, 16), torch.tensor([5.0, 900.0]), torch.randn(2, 77, 32))


def control_residuals(batch: int, scale: float = 0.5) -> dict:
    # Tiny UNet at 16×16: conv_in, 2 ResBlocks (32 ch, 16²), downsample (32 ch, 8²), 2 ResBlocks (64 ch, 8²).
    shapes = [(32, 16, 16)] * 3 + [(32, 8, 8)] + [(64, 8, 8)] * 2
    return {
        "output": [scale * torch.randn(batch, *s) for s in shapes],
        "middle": [scale * torch.randn(batch, 64, 8, 8)],
    }


def test_control_residuals_match_diffusers(tiny):
    ref = reference_unet(tiny.unet)
    control = control_residuals(2)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([100.0, 800.0]), torch.randn(2, 77, 32)
    lengths = {k: len(v) for k, v in control.items()}
    assert_same_eps(tiny.unet, ref, x, t, ctx, control=control)
    assert {k: len(v) for k, v in control.items()} == lengths  # the caller's lists are left alone
    with torch.no_grad():
        assert (tiny.unet(x, t, ctx, control=control) - tiny.unet(x, t, ctx)).abs().max() > 1e-3


def test_control_residual_of_the_wrong_shape_is_refused(tiny):
    control = control_residuals(1)
    control["output"][0] = torch.zeros(1, 320, 16, 16)
    with pytest.raises(ControlShapeError, match="block 0"), torch.no_grad():
        tiny.unet(torch.randn(1, 4, 16, 16), torch.tensor([1.0]), torch.randn(1, 77, 32), control=control)


@pytest.mark.parametrize("cfg", [UNetConfig(), UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(1, 1), context_dim=32)],
                         ids=["sd15", "tiny"])
def test_diffusers_key_map_agrees_with_diffusers_converter(cfg):
    with torch.device("meta"):
        ldm_keys = list(UNetModel(cfg).state_dict())
        ref_keys = set(UNet2DConditionModel(**diffusers_config(cfg)).state_dict())
    # Feed the converter key names as values: it then reports which LDM key each diffusers key comes from.
    expected = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: k for k in ldm_keys}, diffusers_config(cfg))
    ours = unet_diffusers_to_ldm(cfg)
    assert ours == expected
    assert set(ours) == ref_keys
