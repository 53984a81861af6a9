"""Weight patches that multiply weights by a constant: what UNetSelfAttentionMultiply,
UNetCrossAttentionMultiply and CLIPAttentionMultiply add to a MODEL or CLIP clone.

They go through the same patcher as LoRA (nodes/sd/patcher.py), in order, so a multiplier after a LoRA
scales the LoRA-patched weight, as ComfyUI's `W·strength_model` step does.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .lora import Adapter


class ScaleWeight(Adapter):
    """W ← W·factor (an Adapter whose 'ΔW' is a multiplication; `numel` is the weight's size)."""

    def __init__(self, factor: float, numel: int):
        self.factor, self.numel = float(factor), int(numel)

    def add_to(self, weight: torch.Tensor, strength: float) -> None:
        weight.mul_(self.factor)

    def delta_numel(self) -> int:
        return self.numel

    def _raw_delta(self, device):  # pragma: no cover - add_to is overridden; kept for the contract
        raise NotImplementedError("ScaleWeight multiplies; it has no additive ΔW")

    def __repr__(self) -> str:
        return f"ScaleWeight(×{self.factor:g})"


def scale_weights(patcher, factors_by_suffix: Mapping[str, float]) -> int:
    """Add ScaleWeight patches to `patcher` for every weight or bias whose key ends with one of the
    suffixes (e.g. "attn1.to_q" → ".weight" and ".bias"); factors of 1 are skipped. Returns how many
    weights were patched."""
    weights = dict(patcher.model.state_dict(keep_vars=True))
    patches = {}
    for key, tensor in weights.items():
        for suffix, factor in factors_by_suffix.items():
            if factor != 1.0 and key.endswith((f"{suffix}.weight", f"{suffix}.bias")):
                patches[key] = ScaleWeight(factor, tensor.numel())
    return len(patcher.add_patches(patches, 1.0)) if patches else 0
