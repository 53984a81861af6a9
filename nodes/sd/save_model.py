"""Writing models back to single `.safetensors` files in the original (LDM) layout that ComfyUI and
A1111 load: a checkpoint (`model.diffusion_model.`, `cond_stage_model.transformer.`, `first_stage_model.`),
a diffusion model alone, a text encoder (transformers names), a VAE (LDM names). Patched weights
(LoRAs, merges) are computed one at a time; unpatched ones are written from the shared tensors."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import save_file

from .checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
from .patcher import ModelPatcher

_UMASK = os.umask(0)
os.umask(_UMASK)
# Entries of a text encoder that SD1 files do not carry (ComfyUI drops them when saving a checkpoint).
_CLIP_NOT_SAVED = ("text_projection.weight", "logit_scale")


def patcher_tensors(patcher: ModelPatcher) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) of every parameter and persistent buffer, with this clone's patches, in the dtype
    it is held in (a patched weight of a lean fp16 model is held, and written, in fp32), on the CPU."""
    patched = patcher.patched_keys()
    for key, tensor in patcher.model.state_dict().items():
        if key in patched:
            tensor = patcher.weight(key, "cpu").to(patcher.patched_dtype(patcher.backup.get(key, tensor).dtype))
        else:  # the module may hold another clone's patches right now: write the original
            tensor = patcher.backup.get(key, tensor)
        yield key, tensor.detach().cpu().contiguous()


def unet_tensors(model: ModelPatcher) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + k: v for k, v in patcher_tensors(model)}


def clip_tensors(clip: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The text encoder's weights (`text_model.…`), each under `prefix`."""
    patcher = clip.patcher if clip.patcher is not None else ModelPatcher(clip.text_model, "cpu", "cpu")
    return {prefix + k: v for k, v in patcher_tensors(patcher) if k not in _CLIP_NOT_SAVED}


def vae_tensors(vae: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous() for k, v in vae.model.state_dict().items()}


def checkpoint_tensors(model: ModelPatcher | None, clip: Any | None, vae: Any | None) -> dict[str, torch.Tensor]:
    """A single-file SD1 checkpoint's tensors from whichever parts are given."""
    tensors: dict[str, torch.Tensor] = {}
    if model is not None:
        tensors.update(unet_tensors(model))
    if clip is not None:
        tensors.update(clip_tensors(clip, CLIP_PREFIX))
    if vae is not None:
        tensors.update(vae_tensors(vae, VAE_PREFIX))
    return tensors


def run_metadata(prompt: Any = None, extra_pnginfo: dict | None = None, **extra: str) -> dict[str, str]:
    """ComfyUI's metadata for saved models: the API prompt and each extra_pnginfo entry (the UI
    workflow) as JSON strings, plus `extra`."""
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for key, value in (extra_pnginfo or {}).items():
        metadata[key] = json.dumps(value)
    metadata.update(extra)
    return metadata


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    """Write through a temporary file in the same folder and a rename: never a half-written model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
