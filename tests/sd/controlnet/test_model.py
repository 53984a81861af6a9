"""Our ControlNetModel against diffusers' ControlNetModel with the same weights (converted by
diffusers' own single-file converter), the diffusers-layout loader, our key map against two
independent derivations, architecture detection, and the file kinds we refuse."""
from __future__ import annotations

import pytest
import torch
from diffusers import ControlNetModel as DiffusersControlNet
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors.torch import save_file

from nodes.sd.controlnet import (ControlNetModel, UnsupportedControlNetError, controlnet_config_from_state_dict,
                                 controlnet_diffusers_key_map, controlnet_from_state_dict, load_controlnet)
from nodes.sd.diffusers_keys import unet_diffusers_to_ldm
from nodes.sd.state_dict import load_state_dict
from nodes.sd.tiny import TINY_UNET_CONFIG
from nodes.sd.tiny_extras import TINY_HINT_BLOCK_CHANNELS
from nodes.sd.unet import SD15_UNET_CONFIG

TOL = 1e-4


def diffusers_config(unet_cfg, hint_widths, hint_channels=3) -> dict:
    """diffusers' description of an SD1-style ControlNet, written out independently of our code."""
    attn = [d > 0 for d in unet_cfg.transformer_depth]
    return {
        "in_channels": unet_cfg.in_channels,
        "conditioning_channels": hint_channels,
        "block_out_channels": [unet_cfg.model_channels * m for m in unet_cfg.channel_mult],
        "layers_per_block": unet_cfg.num_res_blocks,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "cross_attention_dim": unet_cfg.context_dim,
        "attention_head_dim": unet_cfg.num_heads,  # diffusers' SD1 quirk: the head COUNT
        "norm_num_groups": 32,
        "conditioning_embedding_out_channels": list(hint_widths),
    }


def reference(original_sd: dict, unet_cfg=TINY_UNET_CONFIG, hint_widths=TINY_HINT_BLOCK_CHANNELS):
    config = diffusers_config(unet_cfg, hint_widths)
    ref = DiffusersControlNet(**config).eval()
    converted = convert_controlnet_checkpoint(original_sd, {"layers_per_block": unet_cfg.num_res_blocks})
    ref.load_state_dict(converted, strict=True)
    return ref


def inputs(seed=3, batch=2, size=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, size, size, generator=g), torch.rand(batch, 3, size * 8, size * 8, generator=g),
            torch.randn(batch, 77, 32, generator=g))


@torch.no_grad()
def assert_same_residuals(ours: ControlNetModel, ref, x, hint, t, ctx, tol=TOL):
    mine = ours(x, hint, t, ctx)
    down, mid = ref(x, t, encoder_hidden_states=ctx, controlnet_cond=hint, conditioning_scale=1.0, return_dict=False)
    assert len(mine["output"]) == len(down) == 6 and len(mine["middle"]) == 1
    for k, (a, b) in enumerate(zip(mine["output"] + mine["middle"], list(down) + [mid])):
        assert a.shape == b.shape, k
        assert b.abs().mean() > 0.05, "a meaningful comparison, not near-zero residuals"
        err = (a - b).abs().max().item()
        assert err <= tol, f"residual {k}: max abs error {err}"


def test_tiny_controlnet_matches_diffusers(tiny_controlnet_file):
    ours = load_controlnet(tiny_controlnet_file, device="cpu").model
    ref = reference(load_state_dict(tiny_controlnet_file))
    x, hint, ctx = inputs()
    for t in ([1.0, 999.0], [250.0, 250.0], [600.5, 17.0]):
        assert_same_residuals(ours, ref, x, hint, torch.tensor(t), ctx)
    x, hint, ctx = inputs(seed=4, batch=1, size=6)  # a latent size that is not a power of two
    assert_same_residuals(ours, ref, x, hint, torch.tensor([500.0]), ctx)


def test_diffusers_and_bare_original_layouts_load_to_the_same_outputs(tiny_controlnet_file, tmp_path):
    original = load_state_dict(tiny_controlnet_file)
    ref = reference(original)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "diffusers.safetensors"))
    save_file({k.removeprefix("control_model."): v for k, v in original.items()}, str(tmp_path / "bare.safetensors"))
    x, hint, ctx = inputs()
    t = torch.tensor([100.0, 800.0])
    with torch.no_grad():
        expected = load_controlnet(tiny_controlnet_file, device="cpu").model(x, hint, t, ctx)
        for name in ("diffusers.safetensors", "bare.safetensors"):
            got = load_controlnet(tmp_path / name, device="cpu").model(x, hint, t, ctx)
            for a, b in zip(got["output"] + got["middle"], expected["output"] + expected["middle"]):
                assert torch.equal(a, b), name


def test_key_map_agrees_with_diffusers_converter_and_the_unet_map(tiny_controlnet_file):
    original = {k.removeprefix("control_model."): v for k, v in load_state_dict(tiny_controlnet_file).items()}
    converted = convert_controlnet_checkpoint(original, {"layers_per_block": TINY_UNET_CONFIG.num_res_blocks})
    ours = controlnet_diffusers_key_map(converted)
    assert set(ours.values()) == set(original)
    for diffusers_key, tensor in converted.items():  # diffusers' converter moves tensors, it does not copy them
        assert original[ours[diffusers_key]] is tensor, diffusers_key
    unet_map = unet_diffusers_to_ldm(TINY_UNET_CONFIG)  # the UNet's own block-position map
    shared = [k for k in ours if k in unet_map]
    assert len(shared) > 100
    assert all(ours[k] == unet_map[k] for k in shared)


def test_full_size_sd15_layout_and_detection():
    """On meta tensors: diffusers' SD1.5 ControlNet keys map onto exactly our module's keys and shapes,
    and detection recovers the SD1.5 config and hint block from the weights alone."""
    with torch.device("meta"):
        ref = DiffusersControlNet(**diffusers_config(SD15_UNET_CONFIG, (16, 32, 96, 256)))
        diffusers_sd = ref.state_dict()
        mapping = controlnet_diffusers_key_map(diffusers_sd)
        original = {mapping[k]: v for k, v in diffusers_sd.items()}
        config = controlnet_config_from_state_dict(original)
        ours = ControlNetModel(config).state_dict()
    assert config.unet == SD15_UNET_CONFIG
    assert (config.hint_channels, config.hint_block_channels) == (3, (16, 32, 96, 256))
    assert set(original) == set(ours)
    assert all(original[k].shape == ours[k].shape for k in ours)
    assert sum(v.numel() for v in ours.values()) == sum(p.numel() for p in ref.parameters())  # 361M


def test_hint_channels_come_from_the_weights(tmp_path):
    from nodes.sd.tiny_extras import make_tiny_controlnet

    net = load_controlnet(make_tiny_controlnet(tmp_path / "one-channel.safetensors", hint_channels=1), device="cpu")
    assert net.hint_channels == 1 and net.model.input_hint_block[0].weight.shape[1] == 1


@pytest.mark.parametrize("keys, says", [
    ({"lora_controlnet": (1,)}, "Control-LoRA"),
    ({"control_model.zero_convs.0.0.weight": (4, 4, 1, 1), "difference": (1,)}, "'diff' ControlNet"),
    ({"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3), "control_add_embedding.linear_1.weight": (4, 4)},
     "Union ControlNet"),
    ({"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3), "add_embedding.linear_1.weight": (4, 4)},
     "SDXL ControlNet"),
    ({"body.0.in_conv.weight": (4, 4, 1, 1), "conv_in.weight": (4, 4, 3, 3)}, "T2I-Adapter"),
    ({"controlnet_blocks.0.weight": (4, 4)}, "SD3 / Flux"),
    ({"something.else": (2, 2)}, "not a ControlNet"),
])
def test_unsupported_kinds_are_refused_by_name(tmp_path, keys, says):
    path = tmp_path / "mystery_cn.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    with pytest.raises(UnsupportedControlNetError) as info:
        load_controlnet(path, device="cpu")
    assert says in str(info.value) and "mystery_cn.safetensors" in str(info.value)


def test_sdxl_original_layout_is_refused(tiny_controlnet_file):
    sd = dict(load_state_dict(tiny_controlnet_file))
    sd["control_model.label_emb.0.0.weight"] = torch.zeros(128, 2816)
    with pytest.raises(UnsupportedControlNetError, match="SDXL") as info:
        controlnet_from_state_dict(sd, path="xl_canny.safetensors")
    assert "xl_canny.safetensors" in str(info.value)
