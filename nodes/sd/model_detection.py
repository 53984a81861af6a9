"""Read the UNet / VAE architecture from tensor shapes, so every SD1.x-shaped file loads one way.

Only names and shapes are used (never values), so this also works on meta tensors. Anything that is
not SD1.x raises NotAnSDCheckpointError saying what it looks like instead.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from nodes.sd.errors import NotAnSDCheckpointError
from nodes.sd.unet import UNetConfig
from nodes.sd.vae import VAEConfig

SD1_CONTEXT_DIM = 768


def unet_config_from_state_dict(sd: Mapping[str, torch.Tensor], path=None) -> UNetConfig:
    """`sd` holds UNet keys with the `model.diffusion_model.` prefix already stripped."""
    if "input_blocks.0.0.weight" not in sd or "out.2.weight" not in sd:
        raise NotAnSDCheckpointError(path, f"no SD1.x UNet found; {describe_state_dict(sd)}")
    if "label_emb.0.0.weight" in sd or "label_emb.weight" in sd:
        raise NotAnSDCheckpointError(
            path, "the UNet has a class/size embedding (`label_emb`): this is SDXL or an SD upscaler, not SD1.x"
        )

    model_channels, in_channels = sd["input_blocks.0.0.weight"].shape[:2]
    out_channels = sd["out.2.weight"].shape[0]

    # Walk input blocks 1..N: each is a ResBlock (+ optional transformer) or a Downsample (`.0.op`).
    level_widths: list[int] = []
    res_per_level: list[int] = []
    depth_per_level: list[int] = []
    n_blocks = _count_indices(sd, "input_blocks.")
    level_done = False
    for i in range(1, n_blocks):
        if f"input_blocks.{i}.0.op.weight" in sd:
            level_done = True
            continue
        width = sd[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]
        if level_done or not level_widths:
            level_widths.append(width)
            res_per_level.append(0)
            depth_per_level.append(_transformer_depth(sd, f"input_blocks.{i}.1."))
            level_done = False
        res_per_level[-1] += 1

    if len(set(res_per_level)) != 1:
        raise NotAnSDCheckpointError(path, f"unequal ResBlocks per level {res_per_level}; SD1.x uses the same count")
    if any(w % model_channels for w in level_widths):
        raise NotAnSDCheckpointError(path, f"level widths {level_widths} are not multiples of {model_channels}")

    middle_depth = _transformer_depth(sd, "middle_block.1.")
    if middle_depth == 0:
        raise NotAnSDCheckpointError(path, "the middle block has no transformer; SD1.x always has one")

    attn_key = next((k for k in sd if k.endswith("attn2.to_k.weight")), None)
    if attn_key is None:
        raise NotAnSDCheckpointError(path, "the UNet has no cross-attention; it is not a text-conditioned SD model")
    context_dim = sd[attn_key].shape[1]
    proj_in = next(k for k in sd if k.endswith("proj_in.weight"))
    if sd[proj_in].ndim == 2:
        raise NotAnSDCheckpointError(
            path, f"linear transformer projections and context width {context_dim}: this looks like SD2.x, "
            "which nodegraph does not support; use an SD1.x checkpoint"
        )
    if context_dim != SD1_CONTEXT_DIM and model_channels >= 320:
        kind = {1024: "SD2.x", 2048: "SDXL", 1280: "SDXL refiner"}.get(context_dim, "not SD1.x")
        raise NotAnSDCheckpointError(path, f"cross-attention context width {context_dim} (SD1.x uses 768): {kind}")

    try:
        return UNetConfig(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=tuple(w // model_channels for w in level_widths),
            num_res_blocks=res_per_level[0],
            transformer_depth=tuple(depth_per_level),
            transformer_depth_middle=middle_depth,
            context_dim=context_dim,
            num_heads=8,
        )
    except ValueError as e:
        raise NotAnSDCheckpointError(path, f"UNet shapes do not form an SD1.x UNet: {e}") from e


def vae_config_from_state_dict(sd: Mapping[str, torch.Tensor], path=None) -> VAEConfig:
    """`sd` holds LDM-layout VAE keys with `first_stage_model.` stripped."""
    needed = ("encoder.conv_in.weight", "decoder.conv_in.weight", "quant_conv.weight", "decoder.conv_out.weight")
    if not all(k in sd for k in needed):
        raise NotAnSDCheckpointError(path, f"no SD1.x VAE found; {describe_state_dict(sd)}")
    if any(re.match(r"(encoder\.down|decoder\.up)\.\d+\.attn\.", k) for k in sd):
        raise NotAnSDCheckpointError(path, "the VAE has attention inside its levels; SD1.x's VAE does not")
    ch, in_channels = sd["encoder.conv_in.weight"].shape[:2]
    n_levels = _count_indices(sd, "encoder.down.")
    widths = [sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(n_levels)]
    if any(w % ch for w in widths):
        raise NotAnSDCheckpointError(path, f"VAE level widths {widths} are not multiples of {ch}")
    num_res_blocks = _count_indices(sd, "encoder.down.0.block.")
    if "decoder.mid.attn_1.q.weight" not in sd:
        raise NotAnSDCheckpointError(path, "the VAE decoder has no mid-block attention; not an SD1.x KL autoencoder")
    return VAEConfig(
        in_channels=in_channels,
        out_channels=sd["decoder.conv_out.weight"].shape[0],
        ch=ch,
        ch_mult=tuple(w // ch for w in widths),
        num_res_blocks=num_res_blocks,
        z_channels=sd["decoder.conv_in.weight"].shape[1],
        embed_dim=sd["quant_conv.weight"].shape[0] // 2,
    )


def _count_indices(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    """1 + the largest N among keys `prefix<N>.…` (0 if none)."""
    n = len(prefix)
    idx = [int(k[n:].split(".", 1)[0]) for k in sd if k.startswith(prefix) and k[n:].split(".", 1)[0].isdigit()]
    return max(idx) + 1 if idx else 0


def _transformer_depth(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    if f"{prefix}proj_in.weight" not in sd:
        return 0
    return _count_indices(sd, f"{prefix}transformer_blocks.")


_SIGNATURES = [
    ("lora_unet_", "a LoRA (kohya format)"),
    ("lora_te", "a LoRA (kohya format)"),
    (".lora_A.", "a LoRA (PEFT format)"),
    (".lora_down.", "a LoRA"),
    ("difference", "a diff ControlNet (load it with DiffControlNetLoader)"),
    ("control_model.", "a ControlNet"),
    ("zero_convs.", "a ControlNet"),
    ("controlnet_cond_embedding.", "a ControlNet (diffusers format)"),
    ("conditioner.embedders.", "an SDXL checkpoint"),
    ("label_emb.0.0.weight", "an SDXL UNet (it has a size embedding)"),
    ("model.diffusion_model.input_blocks.", "an SD checkpoint (load it with Load Checkpoint)"),
    ("model.1.sub.0.RDB1.", "an ESRGAN upscale model (load it with Load Upscale Model)"),
    ("body.0.rdb1.", "a Real-ESRGAN upscale model (load it with Load Upscale Model)"),
    ("layers.0.residual_group.", "a SwinIR-family upscale model (load it with Load Upscale Model)"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", "a diffusers-format UNet"),
    ("encoder.down_blocks.", "a diffusers-format VAE"),
    ("encoder.down.0.block.0.conv1.weight", "a standalone VAE (load it with the VAE loader)"),
    ("input_blocks.0.0.weight", "a bare SD UNet (load it with Load Diffusion Model)"),
    ("string_to_param", "a textual-inversion embedding"),
    ("style_embedding", "a T2I-Adapter style model (load it with StyleModelLoader)"),
    ("body.0.in_conv.", "a T2I-Adapter"),
    ("body.0.block1.", "a T2I-Adapter"),
    ("adapter.body.", "a T2I-Adapter (diffusers format)"),
    ("position_net.", "a GLIGEN model"),
    (".fuser.", "a GLIGEN model"),
    ("vision_model.encoder.layers.", "a CLIP vision model"),
    ("visual.transformer.resblocks.", "a CLIP vision model (OpenAI format)"),
    ("text_model.encoder.layers.", "a CLIP text encoder"),
    ("double_blocks.", "a Flux model"),
    ("joint_blocks.", "an SD3 model"),
]


def describe_state_dict(sd: Mapping[str, torch.Tensor]) -> str:
    """One line on what a state dict appears to be, for error messages."""
    keys = list(sd)
    if not keys:
        return "the file holds no tensors"
    for needle, what in _SIGNATURES:
        if any(needle in k for k in keys):
            return f"it looks like {what} ({len(keys)} tensors, e.g. '{next(k for k in keys if needle in k)}')"
    prefixes: dict[str, int] = {}
    for k in keys:
        p = k.split(".", 1)[0]
        prefixes[p] = prefixes.get(p, 0) + 1
    top = ", ".join(f"{p}.* ({n})" for p, n in sorted(prefixes.items(), key=lambda x: -x[1])[:6])
    return f"found {len(keys)} tensors under {top}"
