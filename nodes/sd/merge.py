"""Model merging as weight patches: another model's weight enters a clone as a patch, the way a LoRA
does, so a merge copies no weights until something computes with it (or saves it).

A merge patch on weight W with strength s and base multiplier m makes W' = m·W + s·W_other, where
W_other is the other model's weight with that model's own patches (LoRAs, earlier merges) applied —
ComfyUI's `add_patches(patches, strength_patch, strength_model)` with another model's key patches.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .lora import Adapter, _clip_patcher
from .patcher import ModelPatcher

# Text-encoder entries that are not weights to merge (as ComfyUI skips them).
_CLIP_SKIPPED = (".position_ids", ".logit_scale")


class ModelWeight(Adapter):
    """Another model's weight `key` as a patch; it holds that model, never a copy of its tensors."""

    def __init__(self, source: ModelPatcher, key: str, base_multiplier: float = 1.0, numel: int | None = None):
        self.source = source
        self.key = key
        self.base_multiplier = float(base_multiplier)
        self._numel = numel if numel is not None else source._tensor(key).numel()

    def add_to(self, weight: torch.Tensor, strength: float) -> None:
        if self.base_multiplier != 1.0:
            weight.mul_(self.base_multiplier)
        if strength != 0:
            other = self.source.weight(self.key, weight.device)
            if other.numel() != weight.numel():
                raise ValueError(f"the other model's {self.key} has {other.numel()} values, this one {weight.numel()}")
            weight.add_(other.reshape(weight.shape), alpha=strength)

    def changes_weight(self, strength: float) -> bool:
        return strength != 0 or self.base_multiplier != 1.0

    def _raw_delta(self, device):
        raise NotImplementedError("a merge patch scales the weight it is applied to; use add_to")

    def delta_numel(self) -> int:
        return self._numel

    def memory_parts(self):
        return self.source.memory_parts()

    def __repr__(self) -> str:
        return f"ModelWeight({self.key}, x{self.base_multiplier})"


RatioFor = Callable[[str], tuple[float, float]]  # weight key -> (strength, base multiplier)


def merged(target: ModelPatcher, source: ModelPatcher, ratio_for: RatioFor, *,
           skip: tuple[str, ...] = ()) -> ModelPatcher:
    """A clone of `target` with every weight `source` shares with it (same name, same size) patched
    by `ratio_for(key)`; keys ending in `skip` are left alone."""
    result = target.clone()
    weights = source._weights()
    keys = [k for k, w in weights.items() if w.is_floating_point() and not (skip and k.endswith(skip))]
    by_strength: dict[float, dict[str, ModelWeight]] = {}  # one add_patches per strength: it checks all keys
    for key in keys:
        strength, multiplier = ratio_for(key)
        by_strength.setdefault(strength, {})[key] = ModelWeight(source, key, multiplier, weights[key].numel())
    for strength, patches in by_strength.items():
        result.add_patches(patches, strength)
    return result


def blend(ratio: float) -> tuple[float, float]:
    """W' = ratio·W + (1 − ratio)·W_other (ModelMergeSimple)."""
    return 1.0 - ratio, ratio


def block_ratio(key: str, ratios: dict[str, float]) -> float:
    """ModelMergeBlocks' ratio for a UNet key: the value of the longest name in `ratios` the key starts
    with (`input` -> input_blocks, `middle` -> middle_block, `out` -> out.* and output_blocks), else the
    first one's (as ComfyUI: time_embed takes `input`'s)."""
    ratio, matched = next(iter(ratios.values())), 0
    for prefix, value in ratios.items():
        if key.startswith(prefix) and len(prefix) > matched:
            ratio, matched = value, len(prefix)
    return ratio


def merge_clips(clip1: Any, clip2: Any, ratio_for: RatioFor) -> Any:
    """A clone of CLIP `clip1` whose text encoder is merged with `clip2`'s."""
    target, source = _clip_patcher(clip1), _clip_patcher(clip2)
    result = clip1.clone()
    result.patcher = merged(target, source, ratio_for, skip=_CLIP_SKIPPED)
    return result
