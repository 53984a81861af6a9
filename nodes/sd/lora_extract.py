"""Extracting a LoRA from a model difference (LoraSave): each weight of the difference model (usually
ModelMergeSubtract's output) becomes a kohya-format LoRA entry by truncated SVD, the best rank-r
approximation (Eckart–Young), so a full-rank extraction reproduces the difference.

Names are kohya's, which ComfyUI, A1111 and our LoraLoader read: `lora_unet_<diffusers path>` for the
UNet, `lora_te_<transformers path>` for the text encoder, with `.lora_up/.lora_down.weight` and an
`.alpha` equal to the rank (scale 1). `bias_diff` adds full `.diff` entries for 1-D weights (norms)
and `.diff_b` for biases; the `full_diff` type stores every weight's difference whole.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator

import torch

from nodegraph.progress import ProgressBar, check_cancelled

from .diffusers_keys import unet_diffusers_to_ldm
from .patcher import ModelPatcher

log = logging.getLogger(__name__)

LORA_TYPES = ("standard", "full_diff")
_SKIPPED = (".position_ids", ".logit_scale", "text_projection.weight")


def low_rank_factors(diff: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) with up @ down the best rank-`rank` approximation of `diff` (a Linear [out, in] or a
    conv [out, in, kh, kw] weight, flattened to [out, in·kh·kw]); √S goes to each side so both stay
    in fp16's range. Conv factors come back as [out, r, 1, 1] and [r, in, kh, kw]."""
    matrix = diff.float().flatten(1)
    rank = max(1, min(rank, *matrix.shape))
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    up, down = u[:, :rank] * root, root[:, None] * vh[:rank]
    if diff.ndim == 4:
        up, down = up[:, :, None, None], down.reshape(rank, *diff.shape[1:])
    return up, down


def unet_lora_names(model: ModelPatcher) -> dict[str, str]:
    """{UNet weight key: kohya base name} (`lora_unet_` + the diffusers path with '_' for '.')."""
    ldm_to_diffusers = {ldm: diffusers for diffusers, ldm in unet_diffusers_to_ldm(model.model.config).items()}
    return {k: "lora_unet_" + ldm_to_diffusers[k].removesuffix(".weight").replace(".", "_")
            for k in ldm_to_diffusers if k.endswith(".weight")}


def clip_lora_names(patcher: ModelPatcher) -> dict[str, str]:
    """{text-encoder weight key: kohya base name} (`lora_te_` + the transformers path)."""
    return {k: "lora_te_" + k.removesuffix(".weight").replace(".", "_")
            for k in patcher.model.state_dict() if k.endswith(".weight") and not k.endswith(_SKIPPED)}


def extract_lora(patcher: ModelPatcher, names: dict[str, str], *, rank: int, lora_type: str,
                 bias_diff: bool) -> dict[str, torch.Tensor]:
    """The LoRA tensors (fp16, as ComfyUI writes them) for every weight of `patcher` named in `names`;
    the weights are the difference model's own (its patches applied), one at a time."""
    if lora_type not in LORA_TYPES:
        raise ValueError(f"unknown lora_type {lora_type!r}; choose one of {', '.join(LORA_TYPES)}")
    out: dict[str, torch.Tensor] = {}
    keys = [k for k in patcher.model.state_dict() if k in names or (bias_diff and _bias_of(k, names))]
    progress = ProgressBar(len(keys))
    for key in keys:
        check_cancelled()
        out.update(_entries(patcher, key, names, rank=rank, lora_type=lora_type, bias_diff=bias_diff))
        progress.update(1)
    return out


def _bias_of(key: str, names: dict[str, str]) -> str | None:
    """The kohya base name whose `.diff_b` holds this bias."""
    return names.get(key.removesuffix(".bias") + ".weight") if key.endswith(".bias") else None


def _entries(patcher: ModelPatcher, key: str, names: dict[str, str], *, rank: int, lora_type: str,
             bias_diff: bool) -> Iterator[tuple[str, torch.Tensor]]:
    diff = patcher.weight(key, "cpu")
    if not diff.any():  # nothing changed here: an entry would only add zeros
        return
    if key.endswith(".bias"):
        yield f"{_bias_of(key, names)}.diff_b", diff.half().contiguous()
        return
    base = names[key]
    if lora_type == "full_diff" or diff.ndim < 2:
        if lora_type == "full_diff" or bias_diff:
            yield f"{base}.diff", diff.half().contiguous()
        return
    try:
        up, down = low_rank_factors(diff, rank)
    except torch.linalg.LinAlgError as exc:  # SVD did not converge (non-finite weights)
        log.warning("no LoRA for %s: %s", key, exc)
        return
    yield f"{base}.lora_up.weight", up.half().contiguous()
    yield f"{base}.lora_down.weight", down.half().contiguous()
    yield f"{base}.alpha", torch.tensor(float(down.shape[0]))


def largest_rank(patcher: ModelPatcher, names: dict[str, str]) -> int:
    """The rank a full-rank extraction of this model needs (the widest flattened weight's smaller side)."""
    shapes = [t.shape for k, t in patcher.model.state_dict().items() if k in names and t.ndim >= 2]
    return max((min(s[0], math.prod(s[1:])) for s in shapes), default=1)
