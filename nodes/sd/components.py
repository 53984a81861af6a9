"""SD1 component files: a diffusion model (UNet) or a text encoder (CLIP-L) on its own, in the layouts
ComfyUI's UNETLoader / CLIPLoader accept — original (LDM) keys bare or under a checkpoint's prefix,
diffusers / transformers keys, ComfyUI's own saved layouts — and what a file of the wrong kind is."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoint import CLIP_PREFIX, UNET_PREFIX, clip_state_dict_from_checkpoint, load_weights
from .clip.clip import CLIP, load_clip_from_state_dict
from .clip.text_encoder import CLIPLoadError
from .diffusers_keys import unet_diffusers_to_ldm
from .errors import ModelLoadError, NotAnSDCheckpointError
from .model_detection import describe_state_dict, unet_config_from_state_dict
from .state_dict import split_by_prefix
from .unet import UNetConfig, UNetModel

# ComfyUI's UNETLoader weight_dtype choices -> the storage format the weights are rounded through.
FP8_FORMATS = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
               "fp8_e5m2": torch.float8_e5m2}


# -- diffusion model -------------------------------------------------------------------------------

def unet_state_dict_from_file(sd: Mapping[str, torch.Tensor], path: Path | None = None) -> dict[str, torch.Tensor]:
    """LDM-layout UNet keys (no prefix) from a diffusion-model file: bare LDM keys, a checkpoint or
    ModelSave file (`model.diffusion_model.`), or diffusers' UNet2DConditionModel layout."""
    if any(k.startswith(UNET_PREFIX) for k in sd):
        return split_by_prefix(sd, UNET_PREFIX)
    if "input_blocks.0.0.weight" in sd or "label_emb.0.0.weight" in sd:
        return dict(sd)
    if "conv_in.weight" in sd and any(k.startswith("down_blocks.") for k in sd):
        return _unet_diffusers_to_ldm(sd, path)
    raise NotAnSDCheckpointError(path, f"not an SD1.x diffusion model (UNet); {describe_state_dict(sd)}")


def load_unet(sd: Mapping[str, torch.Tensor], *, path: Path | None, device: torch.device, dtype: torch.dtype,
              weight_format: torch.dtype | None = None) -> tuple[UNetModel, UNetConfig]:
    """The UNet of a diffusion-model file. `weight_format` (an fp8 dtype) rounds every weight through
    that format first, so the model computes with the values an fp8-stored model holds."""
    unet_sd = unet_state_dict_from_file(sd, path)
    config = unet_config_from_state_dict(unet_sd, path)
    if weight_format is not None:
        unet_sd = {k: v.to(weight_format).to(v.dtype) if v.is_floating_point() else v for k, v in unet_sd.items()}
    return load_weights(lambda: UNetModel(config), unet_sd, "UNet", path, device, dtype), config


def _unet_diffusers_to_ldm(sd: Mapping[str, torch.Tensor], path: Path | None) -> dict[str, torch.Tensor]:
    config = _unet_config_from_diffusers(sd, path)
    names = unet_diffusers_to_ldm(config)
    unknown = [k for k in sd if k not in names]
    if unknown:
        raise NotAnSDCheckpointError(path, f"a diffusers-format UNet with {len(unknown)} key(s) an SD1.x UNet does "
                                           f"not have (e.g. {', '.join(unknown[:3])}); is it SDXL or SD2?")
    return {names[k]: v for k, v in sd.items()}


def _count(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    found = [int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    return max(found) + 1 if found else 0


def _unet_config_from_diffusers(sd: Mapping[str, torch.Tensor], path: Path | None) -> UNetConfig:
    """The UNetConfig a diffusers UNet2DConditionModel state dict describes (read from shapes)."""
    if "add_embedding.linear_1.weight" in sd:
        raise NotAnSDCheckpointError(path, "a diffusers UNet with an added size embedding: this is SDXL, not SD1.x")
    model_channels, in_channels = sd["conv_in.weight"].shape[:2]
    levels = _count(sd, "down_blocks.")
    widths = [sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)]
    depths = tuple(_count(sd, f"down_blocks.{i}.attentions.0.transformer_blocks.") for i in range(levels))
    attention = next((k for k in sd if k.endswith("attn2.to_k.weight")), None)
    if attention is None:
        raise NotAnSDCheckpointError(path, "a diffusers UNet without cross-attention; not a text-to-image SD model")
    proj_in = next(k for k in sd if k.endswith("proj_in.weight"))
    if sd[proj_in].ndim == 2:
        raise NotAnSDCheckpointError(path, "a diffusers UNet with linear transformer projections: this is SD2.x "
                                           "or SDXL, not SD1.x")
    try:
        return UNetConfig(in_channels=in_channels, out_channels=sd["conv_out.weight"].shape[0],
                          model_channels=model_channels, channel_mult=tuple(w // model_channels for w in widths),
                          num_res_blocks=_count(sd, "down_blocks.0.resnets."), transformer_depth=depths,
                          transformer_depth_middle=_count(sd, "mid_block.attentions.0.transformer_blocks."),
                          context_dim=sd[attention].shape[1])
    except (ValueError, KeyError) as exc:
        raise NotAnSDCheckpointError(path, f"diffusers UNet shapes do not form an SD1.x UNet: {exc}") from exc


# -- text encoder ----------------------------------------------------------------------------------

# Widths of text encoders SD1 cannot use, by what they are.
_FOREIGN_WIDTHS = {1280: "OpenCLIP ViT-bigG (SDXL's second text encoder)", 1024: "OpenCLIP ViT-H (SD2.x)"}


def clip_state_dict_from_file(sd: Mapping[str, torch.Tensor], path: Path | None = None) -> dict[str, torch.Tensor]:
    """transformers-layout (`text_model.…`) CLIP weights from a text-encoder file: transformers /
    diffusers `text_encoder`, ComfyUI's CLIPSave output, a checkpoint's `cond_stage_model.transformer.`,
    ComfyUI's in-memory `clip_l.transformer.`."""
    if any(k.startswith(CLIP_PREFIX) for k in sd):
        return clip_state_dict_from_checkpoint(sd)
    for prefix in ("clip_l.transformer.", "text_encoders.clip_l.transformer.", "transformer."):
        if any(k.startswith(prefix + "text_model.") for k in sd):
            return split_by_prefix(sd, prefix)
    if any(k.startswith("text_model.") for k in sd):
        return dict(sd)
    if any(k.startswith(("transformer.resblocks.", "model.transformer.resblocks.")) for k in sd):
        raise NotAnSDCheckpointError(path, "an OpenCLIP text encoder (SD2.x / SDXL's CLIP-G layout); "
                                           "SD1.x uses CLIP-L")
    if any(".SelfAttention." in k for k in sd):
        raise NotAnSDCheckpointError(path, "a T5 text encoder (SD3 / Flux and others); SD1.x uses CLIP-L")
    if any(re.match(r"(embeddings|encoder\.layers|final_layer_norm)\.", k) for k in sd):
        return {"text_model." + k: v for k, v in sd.items()}
    raise NotAnSDCheckpointError(path, f"not a CLIP text encoder; {describe_state_dict(sd)}")


def load_clip(sd: Mapping[str, torch.Tensor], *, path: Path | None, device: torch.device, dtype: torch.dtype,
              embeddings_dir: str | os.PathLike | None) -> CLIP:
    """The SD1 CLIP of a text-encoder file; ModelLoadError naming the file when it is not one."""
    clip_sd = clip_state_dict_from_file(sd, path)
    embedding = clip_sd.get("text_model.embeddings.token_embedding.weight")
    if embedding is not None and embedding.shape[-1] in _FOREIGN_WIDTHS:
        raise NotAnSDCheckpointError(path, f"a text encoder {embedding.shape[-1]} wide: "
                                           f"{_FOREIGN_WIDTHS[embedding.shape[-1]]}; SD1.x uses CLIP-L (768)")
    try:
        return load_clip_from_state_dict(clip_sd, embeddings_dir=embeddings_dir, device=device, dtype=dtype)
    except CLIPLoadError as exc:
        raise ModelLoadError(path, f"{exc}; {describe_state_dict(sd)}") from exc
