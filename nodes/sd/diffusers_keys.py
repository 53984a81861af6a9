"""Name map between diffusers' `UNet2DConditionModel` and our (LDM-named) UNet, for any UNetConfig.

Used to load diffusers-format LoRAs and ControlNets onto our modules. Built from block positions:
LDM numbers blocks flat (`input_blocks.4`), diffusers nests them (`down_blocks.1.resnets.0`).
"""
from __future__ import annotations

import torch

from nodes.sd.unet import UNetConfig, UNetModel

# ResBlock sub-layers: LDM name → diffusers name.
_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


def unet_block_prefixes(cfg: UNetConfig) -> list[tuple[str, str, str]]:
    """(ldm_prefix, diffusers_prefix, kind) for every sub-module; kind ∈ {resnet, attention, plain}."""
    out = [
        ("time_embed.0", "time_embedding.linear_1", "plain"),
        ("time_embed.2", "time_embedding.linear_2", "plain"),
        ("input_blocks.0.0", "conv_in", "plain"),
        ("out.0", "conv_norm_out", "plain"),
        ("out.2", "conv_out", "plain"),
        ("middle_block.0", "mid_block.resnets.0", "resnet"),
        ("middle_block.1", "mid_block.attentions.0", "attention"),
        ("middle_block.2", "mid_block.resnets.1", "resnet"),
    ]
    n_levels = len(cfg.channel_mult)
    i = 1
    for level in range(n_levels):
        for j in range(cfg.num_res_blocks):
            out.append((f"input_blocks.{i}.0", f"down_blocks.{level}.resnets.{j}", "resnet"))
            if cfg.transformer_depth[level]:
                out.append((f"input_blocks.{i}.1", f"down_blocks.{level}.attentions.{j}", "attention"))
            i += 1
        if level != n_levels - 1:
            out.append((f"input_blocks.{i}.0.op", f"down_blocks.{level}.downsamplers.0.conv", "plain"))
            i += 1
    i = 0
    for up, level in enumerate(reversed(range(n_levels))):
        for j in range(cfg.num_res_blocks + 1):
            out.append((f"output_blocks.{i}.0", f"up_blocks.{up}.resnets.{j}", "resnet"))
            sub = 1
            if cfg.transformer_depth[level]:
                out.append((f"output_blocks.{i}.1", f"up_blocks.{up}.attentions.{j}", "attention"))
                sub = 2
            if level and j == cfg.num_res_blocks:
                out.append((f"output_blocks.{i}.{sub}.conv", f"up_blocks.{up}.upsamplers.0.conv", "plain"))
            i += 1
    return out


def unet_ldm_to_diffusers_key(ldm_key: str, prefixes: list[tuple[str, str, str]]) -> str | None:
    for ldm_p, diff_p, kind in prefixes:
        if not ldm_key.startswith(ldm_p + "."):
            continue
        rest = ldm_key[len(ldm_p) + 1:]
        if kind == "resnet":
            layer, _, param = rest.rpartition(".")
            if layer not in _RESNET:
                return None
            rest = f"{_RESNET[layer]}.{param}"
        return f"{diff_p}.{rest}"  # attention blocks use identical names inside
    return None


def unet_diffusers_to_ldm(cfg: UNetConfig) -> dict[str, str]:
    """{diffusers parameter name: LDM parameter name} for every parameter of a UNet with this config."""
    with torch.device("meta"):
        ldm_keys = list(UNetModel(cfg).state_dict())
    prefixes = unet_block_prefixes(cfg)
    mapping = {}
    for key in ldm_keys:
        diffusers_key = unet_ldm_to_diffusers_key(key, prefixes)
        if diffusers_key is None:  # a layout we forgot: fail loudly rather than drop weights
            raise KeyError(f"no diffusers name for UNet parameter '{key}'")
        mapping[diffusers_key] = key
    return mapping
