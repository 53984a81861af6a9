"""Key maps from the names LoRA files use to our module weight keys, for the SD1.x UNet and the CLIP text encoder.

A map is {LoRA base name: weight key}; the base name is a LoRA tensor key without its suffix (`.lora_up.weight` …).
"""
from __future__ import annotations

import re
import weakref
from typing import Iterable

from torch import nn

__all__ = ["unet_diffusers_to_ldm_from_keys", "unet_lora_key_map", "unet_lora_key_map_from_keys",
           "clip_lora_key_map", "clip_lora_key_map_from_keys"]

# ResBlock sub-layers: diffusers name → LDM name.
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _block_ids(keys: set[str], prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def unet_diffusers_to_ldm_from_keys(ldm_keys: Iterable[str]) -> dict[str, str]:
    """{diffusers key: LDM key} for an LDM-layout UNet, with the block structure read from its own keys.

    Levels are found from the downsamplers (`input_blocks.N.0.op`) and upsamplers (`output_blocks.N.{1,2}.conv`),
    so any SD1-shaped UNet (the full model or a tiny test one) maps without a config.
    """
    keys = set(ldm_keys)
    block_map: dict[str, str] = {}  # diffusers module prefix → LDM module prefix

    def add_resnet(diff: str, ldm: str):
        for d, l in _RESNET.items():
            block_map[f"{diff}.{d}"] = f"{ldm}.{l}"

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix + ".") for k in keys)

    level, j = 0, 0
    for n in _block_ids(keys, "input_blocks"):
        if n == 0:
            continue
        if has(f"input_blocks.{n}.0.op"):
            block_map[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
            level, j = level + 1, 0
            continue
        add_resnet(f"down_blocks.{level}.resnets.{j}", f"input_blocks.{n}.0")
        if has(f"input_blocks.{n}.1"):
            block_map[f"down_blocks.{level}.attentions.{j}"] = f"input_blocks.{n}.1"
        j += 1

    mids = _block_ids(keys, "middle_block")
    r = 0
    for n in mids:
        if has(f"middle_block.{n}.transformer_blocks") or has(f"middle_block.{n}.proj_in"):
            block_map["mid_block.attentions.0"] = f"middle_block.{n}"
        else:
            add_resnet(f"mid_block.resnets.{r}", f"middle_block.{n}")
            r += 1

    level, j = 0, 0
    for n in _block_ids(keys, "output_blocks"):
        add_resnet(f"up_blocks.{level}.resnets.{j}", f"output_blocks.{n}.0")
        attn = has(f"output_blocks.{n}.1.proj_in") or has(f"output_blocks.{n}.1.transformer_blocks")
        if attn:
            block_map[f"up_blocks.{level}.attentions.{j}"] = f"output_blocks.{n}.1"
        up = f"output_blocks.{n}.{2 if attn else 1}.conv"
        j += 1
        if has(up):
            block_map[f"up_blocks.{level}.upsamplers.0.conv"] = up
            level, j = level + 1, 0
    block_map.update(_TOP)

    # Attention blocks keep their inner names (proj_in, transformer_blocks.0.attn1.to_q, …) in both layouts.
    ldm_to_diff_prefix = sorted(((l, d) for d, l in block_map.items()), key=lambda p: len(p[0]), reverse=True)
    out: dict[str, str] = {}
    for key in keys:
        for l, d in ldm_to_diff_prefix:
            if key.startswith(l + "."):
                out[d + key[len(l):]] = key
                break
    return out


def _diffusers_to_ldm(model: nn.Module, ldm_keys: list[str]) -> dict[str, str]:
    """Prefer the project's shared converter when it can be used for this model; else read the keys."""
    try:
        from nodes.sd.diffusers_keys import unet_diffusers_to_ldm  # type: ignore
    except ImportError:
        return unet_diffusers_to_ldm_from_keys(ldm_keys)
    config = getattr(model, "config", None)
    if config is None:
        return unet_diffusers_to_ldm_from_keys(ldm_keys)
    try:
        mapping = unet_diffusers_to_ldm(config)
    except Exception:  # a config this converter does not understand: the key reader still works
        return unet_diffusers_to_ldm_from_keys(ldm_keys)
    present = set(ldm_keys)
    return {d: l for d, l in mapping.items() if l in present}


def _underscored(name: str) -> str:
    return name.replace(".", "_")


_ATTN_OUT = (".to_q", ".to_k", ".to_v", ".to_out.0")


def unet_lora_key_map_from_keys(ldm_keys: Iterable[str], diffusers_to_ldm: dict[str, str] | None = None) -> dict[str, str]:
    """{LoRA base name: UNet weight key} for every naming scheme SD1 LoRAs use.

    LDM (`lora_unet_input_blocks_1_1_…`, `diffusion_model.input_blocks.1.1.…`, `lycoris_…`), kohya over diffusers
    paths (`lora_unet_down_blocks_0_attentions_0_…`), diffusers/PEFT (`unet.down_blocks.0.…` or bare), the
    attention-processor forms (`….attn1.processor.to_q`) and `to_out` for `to_out.0`.
    """
    ldm_keys = [k for k in ldm_keys if k.endswith(".weight")]
    if diffusers_to_ldm is None:
        diffusers_to_ldm = unet_diffusers_to_ldm_from_keys(ldm_keys)
    out: dict[str, str] = {}
    for key in ldm_keys:
        base = key[: -len(".weight")]
        out[f"diffusion_model.{base}"] = key
        out[f"lora_unet_{_underscored(base)}"] = key
        out[f"lycoris_{_underscored(base)}"] = key
    present = set(ldm_keys)
    for dkey, key in diffusers_to_ldm.items():
        if not dkey.endswith(".weight") or key not in present:
            continue
        base = dkey[: -len(".weight")]
        names = [base]
        if base.endswith(_ATTN_OUT):
            head, _, leaf = base.rpartition(".to_")
            names.append(f"{head}.processor.to_{leaf}")
            if base.endswith(".to_out.0"):
                names += [base[: -len(".0")], f"{head}.processor.to_out"]
        for name in names:
            out[f"unet.{name}"] = key
            out[name] = key
        out[f"lora_unet_{_underscored(base)}"] = key
    return out


# Built once per module: an SD1 UNet has ~700 weights and the map is ~5k names.
_UNET_MAPS: "weakref.WeakKeyDictionary[nn.Module, dict[str, str]]" = weakref.WeakKeyDictionary()


def unet_lora_key_map(model: nn.Module) -> dict[str, str]:
    """The UNet LoRA key map for this UNet module (parameter names = LDM keys without `model.diffusion_model.`)."""
    cached = _UNET_MAPS.get(model)
    if cached is None:
        keys = [k for k, _ in model.named_parameters()]
        cached = _UNET_MAPS[model] = unet_lora_key_map_from_keys(keys, _diffusers_to_ldm(model, keys))
    return cached


_CLIP_LAYER = re.compile(r"^(?P<prefix>.*?)text_model\.encoder\.layers\.(?P<i>\d+)\."
                         r"(?P<m>self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])\.weight$")


def clip_lora_key_map_from_keys(keys: Iterable[str]) -> dict[str, str]:
    """{LoRA base name: text-encoder weight key} for the CLIP-L layers LoRAs train (q/k/v/out proj, fc1/fc2)
    in every naming scheme, and for any other text-encoder weight by its kohya / generic name.

    Works for any module whose keys end in `text_model.encoder.layers.{i}.{m}.weight` (a transformers
    CLIPTextModel, or a wrapper that adds a prefix).
    """
    out: dict[str, str] = {}
    for key in keys:
        text_model = key.find("text_model.")
        if key.endswith(".weight") and text_model >= 0:
            # Any text-encoder weight by its full path: kohya's naming pattern (what LoraSave writes for
            # norms and embeddings too) and ComfyUI's generic `text_encoders.` form.
            path = key[text_model:-len(".weight")]
            out[f"lora_te_{_underscored(path)}"] = key
            out[f"text_encoders.clip_l.transformer.{path}"] = key
        m = _CLIP_LAYER.match(key)
        if m is None:
            continue
        i, module = m.group("i"), m.group("m")
        path = f"text_model.encoder.layers.{i}.{module}"
        out[f"lora_te_{_underscored(path)}"] = key
        out[f"lora_te1_{_underscored(path)}"] = key  # SDXL-style name of the CLIP-L half
        out[f"text_encoder.{path}"] = key
        out[f"text_encoders.clip_l.transformer.{path}"] = key
    return out


def clip_lora_key_map(model: nn.Module) -> dict[str, str]:
    return clip_lora_key_map_from_keys(k for k, _ in model.named_parameters())
