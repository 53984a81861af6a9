"""Rename a diffusers-layout VAE state dict (`encoder.down_blocks.0.resnets.0...`) to the LDM layout.

diffusers stores the mid-block attention projections as Linear (C, C); LDM uses 1×1 convs (C, C, 1, 1).
Decoder levels are numbered in opposite directions: diffusers up_blocks.0 is LDM up.{n-1}.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_ATTN = {
    "group_norm": "norm",
    "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
    # diffusers < 0.14 names
    "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out",
}
_TOP = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}


def is_diffusers_vae(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in sd)


def vae_diffusers_to_ldm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert every key; raises KeyError naming a key it does not understand (refuses to guess)."""
    n_up = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))), default=-1)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = _rename(key, n_up)
        if new is None:
            raise KeyError(f"unrecognised diffusers VAE key '{key}'")
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # Linear (C, C) → 1×1 conv (C, C, 1, 1)
        out[new] = value
    return out


def _rename(key: str, n_up: int) -> str | None:
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    part, rest = key.split(".", 1)
    if part not in ("encoder", "decoder"):
        return None
    name, _, param = rest.rpartition(".")
    if name in _TOP:
        return f"{part}.{_TOP[name]}.{param}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", name):
        kind, level, block, layer = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if layer not in _RESNET:
            return None
        level = level if kind == "down" else n_up - 1 - level
        return f"{part}.{kind}.{level}.block.{block}.{_RESNET[layer]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", name):
        return f"{part}.down.{m.group(1)}.downsample.conv.{param}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", name):
        return f"{part}.up.{n_up - 1 - int(m.group(1))}.upsample.conv.{param}"
    if m := re.fullmatch(r"mid_block\.resnets\.([01])\.(\w+)", name):
        if m.group(2) not in _RESNET:
            return None
        return f"{part}.mid.block_{int(m.group(1)) + 1}.{_RESNET[m.group(2)]}.{param}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", name):
        if m.group(1) not in _ATTN:
            return None
        return f"{part}.mid.attn_1.{_ATTN[m.group(1)]}.{param}"
    return None
