"""LoRA-family adapters (LoRA/LoCon, LoHa, LoKr, raw diff) and loading a LoRA file onto MODEL and CLIP.

An adapter turns the tensors stored for one weight into its ΔW; the patcher merges W' = W + strength·ΔW.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import torch

if TYPE_CHECKING:
    from nodes.sd.patcher import ModelPatcher

log = logging.getLogger(__name__)

__all__ = [
    "Adapter", "LoRA", "LoHa", "LoKr", "Diff",
    "LoraLoadResult", "LoraReport", "LoraMatchError",
    "split_lora_key", "load_lora", "apply_lora",
]


class LoraMatchError(ValueError):
    """A LoRA file none of whose keys fit the model it is applied to."""


# ---------------------------------------------------------------------------------------------
# Adapters: each knows its tensors and computes ΔW (fp32, already scaled by alpha/rank).

def _f32(t: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    return t.to(device=device, dtype=torch.float32)


def _scale(alpha: float | None, rank: int | None) -> float:
    # No alpha (or nothing to divide by) means scale 1, as kohya and ComfyUI do.
    if alpha is None or not rank:
        return 1.0
    return alpha / rank


def _tucker(core: torch.Tensor, w_b: torch.Tensor, w_a: torch.Tensor) -> torch.Tensor:
    """Rebuild a conv kernel from a Tucker core [r, r, kh, kw], in-factor w_b [r, in], out-factor w_a [r, out]."""
    return torch.einsum("ijkl,jr,ip->prkl", core, w_b.flatten(1), w_a.flatten(1))


class Adapter:
    """ΔW for one weight. Subclasses hold their tensors and implement `_raw_delta` and `delta_numel`."""

    scale: float = 1.0

    def delta(self, shape: torch.Size | tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
        """ΔW in fp32 on `device`, scaled by alpha/rank and reshaped to the weight's `shape`."""
        d = self._raw_delta(device)
        if d.numel() != math.prod(shape):
            raise ValueError(f"{type(self).__name__} gives {tuple(d.shape)}, which does not fit a weight of {tuple(shape)}")
        return d.reshape(shape) * self.scale

    def add_to(self, weight: torch.Tensor, strength: float) -> None:
        """weight += strength·ΔW, in place (weight is fp32 on its device). Subclasses that can avoid
        building the full-size ΔW override this: merging is the bulk of a LoRA's cost."""
        weight.add_(self.delta(weight.shape, weight.device), alpha=strength)

    def _raw_delta(self, device: torch.device | None) -> torch.Tensor:
        raise NotImplementedError

    def changes_weight(self, strength: float) -> bool:
        """Whether applying this adapter at `strength` changes the weight (LoRA-style: strength 0 does not)."""
        return strength != 0

    def delta_numel(self) -> int:
        """How many elements ΔW has; lets the patcher reject a weight of the wrong size before merging."""
        raise NotImplementedError

    def tensors(self) -> list[torch.Tensor]:
        return [v for v in vars(self).values() if isinstance(v, torch.Tensor)]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


@dataclass(eq=False)
class LoRA(Adapter):
    """ΔW = up @ down (kohya, PEFT `lora_B @ lora_A`, diffusers `.lora.up/down`); LoCon adds a Tucker `mid` core.

    Linear: up [out, r], down [r, in]. Conv: up [out, r, 1, 1], down [r, in, kh, kw] — or, with `mid`
    [r, r, kh, kw], down [r, in, 1, 1]. ΔW is computed on the flattened factors and reshaped to the weight.
    """
    up: torch.Tensor
    down: torch.Tensor
    mid: torch.Tensor | None = None
    alpha: float | None = None

    def __post_init__(self):
        self.scale = _scale(self.alpha, self.down.shape[0])

    def _raw_delta(self, device):
        up, down = _f32(self.up, device).flatten(1), _f32(self.down, device)
        if self.mid is not None:
            # down (1x1, in→r) then mid (kh×kw, r→r) compose into one [r, in, kh, kw] kernel.
            down = torch.einsum("jkhw,ki->jihw", _f32(self.mid, device), down.flatten(1))
        return up @ down.flatten(1)

    def add_to(self, weight: torch.Tensor, strength: float) -> None:
        if self.mid is not None or weight.numel() != self.delta_numel():
            return super().add_to(weight, strength)
        # One fused, in-place update: no full-size up @ down temporary.
        up, down = _f32(self.up, weight.device).flatten(1), _f32(self.down, weight.device).flatten(1)
        weight.view(up.shape[0], -1).addmm_(up, down, alpha=strength * self.scale)

    def delta_numel(self):
        kernel = math.prod(self.mid.shape[2:]) if self.mid is not None else 1
        return self.up.shape[0] * math.prod(self.down.shape[1:]) * kernel


@dataclass(eq=False)
class LoHa(Adapter):
    """ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) (LyCORIS LoHa); with Tucker cores t1/t2 each factor is rebuilt from its core."""
    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    t1: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None

    def __post_init__(self):
        self.scale = _scale(self.alpha, self.w1_b.shape[0])

    def _raw_delta(self, device):
        w1a, w1b, w2a, w2b = (_f32(t, device) for t in (self.w1_a, self.w1_b, self.w2_a, self.w2_b))
        if self.t1 is not None and self.t2 is not None:
            m1 = _tucker(_f32(self.t1, device), w1b, w1a)
            m2 = _tucker(_f32(self.t2, device), w2b, w2a)
        else:
            m1, m2 = w1a @ w1b.flatten(1), w2a @ w2b.flatten(1)
        return m1 * m2

    def delta_numel(self):
        if self.t1 is not None:
            return self.w1_a.shape[1] * self.w1_b.shape[1] * math.prod(self.t1.shape[2:])
        return self.w1_a.shape[0] * math.prod(self.w1_b.shape[1:])


@dataclass(eq=False)
class LoKr(Adapter):
    """ΔW = kron(w1, w2) (LyCORIS LoKr); each side is stored whole or as a low-rank pair a @ b (w2 optionally Tucker)."""
    w1: torch.Tensor | None = None
    w1_a: torch.Tensor | None = None
    w1_b: torch.Tensor | None = None
    w2: torch.Tensor | None = None
    w2_a: torch.Tensor | None = None
    w2_b: torch.Tensor | None = None
    t2: torch.Tensor | None = None
    alpha: float | None = None

    def __post_init__(self):
        if (self.w1 is None) == (self.w1_a is None or self.w1_b is None):
            raise ValueError("LoKr needs lokr_w1 or lokr_w1_a + lokr_w1_b")
        if (self.w2 is None) == (self.w2_a is None or self.w2_b is None):
            raise ValueError("LoKr needs lokr_w2 or lokr_w2_a + lokr_w2_b")
        # Only a factorised side has a rank; with both whole, alpha is ignored.
        rank = self.w2_b.shape[0] if self.w2 is None else self.w1_b.shape[0] if self.w1 is None else None
        self.scale = _scale(self.alpha, rank)

    def _side1(self, device):
        return _f32(self.w1, device) if self.w1 is not None else _f32(self.w1_a, device) @ _f32(self.w1_b, device)

    def _side2(self, device):
        if self.w2 is not None:
            return _f32(self.w2, device)
        a, b = _f32(self.w2_a, device), _f32(self.w2_b, device)
        if self.t2 is not None:
            return _tucker(_f32(self.t2, device), b, a)
        return a @ b.flatten(1)

    def _raw_delta(self, device):
        w1, w2 = self._side1(device), self._side2(device)
        if w2.dim() == 4 and w1.dim() == 2:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2)

    def delta_numel(self):
        n1 = self.w1.numel() if self.w1 is not None else self.w1_a.shape[0] * self.w1_b.shape[1]
        if self.w2 is not None:
            n2 = self.w2.numel()
        elif self.t2 is not None:
            n2 = self.w2_a.shape[1] * self.w2_b.shape[1] * math.prod(self.t2.shape[2:])
        else:
            n2 = self.w2_a.shape[0] * math.prod(self.w2_b.shape[1:])
        return n1 * n2


@dataclass(eq=False)
class Diff(Adapter):
    """A stored full ΔW (`.diff` for a weight, `.diff_b` for a bias); only the strength scales it."""
    diff: torch.Tensor

    def _raw_delta(self, device):
        return _f32(self.diff, device)

    def delta_numel(self):
        return self.diff.numel()


# ---------------------------------------------------------------------------------------------
# Reading a state dict: every LoRA tensor key is `<base name><suffix>`; the suffix says its role.

_SUFFIX_ROLES: dict[str, str] = {
    # kohya / LoCon
    ".lora_up.weight": "up", ".lora_down.weight": "down", ".lora_mid.weight": "mid",
    # diffusers attention processors (`to_q_lora.up.weight`)
    "_lora.up.weight": "up", "_lora.down.weight": "down",
    # diffusers / PEFT
    ".lora_B.weight": "up", ".lora_A.weight": "down",
    ".lora_B.default.weight": "up", ".lora_A.default.weight": "down",
    ".lora_B": "up", ".lora_A": "down",
    ".lora.up.weight": "up", ".lora.down.weight": "down",
    ".lora_linear_layer.up.weight": "up", ".lora_linear_layer.down.weight": "down",
    # LoHa
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a", ".hada_w2_b": "hada_w2_b",
    ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    # LoKr
    ".lokr_w1": "lokr_w1", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2", ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b", ".lokr_t2": "lokr_t2",
    # common
    ".alpha": "alpha", ".diff": "diff", ".diff_b": "diff_b", ".dora_scale": "dora_scale",
}
# Longest first, so `.lora_B.default.weight` wins over `.weight`-less forms and `_lora.up.weight` is unambiguous.
_SUFFIXES = sorted(_SUFFIX_ROLES, key=len, reverse=True)


def split_lora_key(key: str) -> tuple[str, str] | None:
    """`'lora_unet_x.lora_up.weight'` → `('lora_unet_x', 'up')`; None for a key of no known role."""
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], _SUFFIX_ROLES[suffix]
    return None


def _adapter_from_roles(roles: Mapping[str, torch.Tensor]) -> tuple[Adapter | None, Adapter | None, set[str]]:
    """Build (weight adapter, bias adapter, roles used) from the tensors stored under one base name."""
    alpha = float(roles["alpha"].item()) if "alpha" in roles else None
    used: set[str] = {"alpha"} if "alpha" in roles else set()
    weight: Adapter | None = None
    if "dora_scale" in roles:
        # DoRA re-normalises W + ΔW; merging it as plain LoRA would be silently wrong, so leave it unmatched.
        return None, None, set()
    if "up" in roles and "down" in roles:
        weight = LoRA(roles["up"], roles["down"], roles.get("mid"), alpha)
        used |= {"up", "down"} | ({"mid"} if "mid" in roles else set())
    elif all(f"hada_w{i}_{s}" in roles for i in (1, 2) for s in "ab"):
        weight = LoHa(roles["hada_w1_a"], roles["hada_w1_b"], roles["hada_w2_a"], roles["hada_w2_b"],
                      roles.get("hada_t1"), roles.get("hada_t2"), alpha)
        used |= {r for r in roles if r.startswith("hada_")}
    elif any(r.startswith("lokr_") for r in roles):
        lokr = {r[len("lokr_"):]: t for r, t in roles.items() if r.startswith("lokr_")}
        try:
            weight = LoKr(**lokr, alpha=alpha)
        except (TypeError, ValueError):
            weight = None
        else:
            used |= {f"lokr_{r}" for r in lokr}
    elif "diff" in roles:
        weight = Diff(roles["diff"])
        used.add("diff")
    bias = Diff(roles["diff_b"]) if "diff_b" in roles else None
    if bias is not None:
        used.add("diff_b")
    if weight is None:
        used.discard("alpha")
    return weight, bias, used


@dataclass
class LoraLoadResult:
    """Adapters keyed by model weight key, and which LoRA tensor keys were (not) used."""
    unet_patches: dict[str, Adapter] = field(default_factory=dict)
    clip_patches: dict[str, Adapter] = field(default_factory=dict)
    matched: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def load_lora(state_dict: Mapping[str, torch.Tensor], unet_keys: Mapping[str, str],
              clip_keys: Mapping[str, str]) -> LoraLoadResult:
    """Turn a LoRA state dict into adapters using key maps {LoRA base name: model weight key} (see lora_keys)."""
    groups: dict[str, dict[str, str]] = {}  # base name → role → tensor key
    result = LoraLoadResult()
    for key in state_dict:
        split = split_lora_key(key)
        if split is None:
            result.unmatched.append(key)
            continue
        base, role = split
        roles = groups.setdefault(base, {})
        if role in roles:  # two formats for one layer (`.lora_up` and `.lora_B`): use the first, report the rest
            result.unmatched.append(key)
            continue
        roles[role] = key
    for base, role_keys in groups.items():
        target = unet_keys.get(base)
        patches = result.unet_patches
        if target is None:
            target, patches = clip_keys.get(base), result.clip_patches
        weight = bias = None
        used: set[str] = set()
        if target is not None and target not in patches:
            weight, bias, used = _adapter_from_roles({r: state_dict[k] for r, k in role_keys.items()})
        if weight is not None:
            patches[target] = weight
        if bias is not None and target.endswith(".weight"):
            patches[target[: -len("weight")] + "bias"] = bias
        for role, key in role_keys.items():
            (result.matched if role in used else result.unmatched).append(key)
    return result


# ---------------------------------------------------------------------------------------------
# Applying a LoRA file to MODEL and CLIP (the LoraLoader node's work).

@dataclass
class LoraReport:
    """What one LoRA load did, for logs and the UI."""
    name: str
    total_keys: int = 0
    matched_keys: int = 0
    unet_patched: int = 0
    clip_patched: int = 0
    unmatched: list[str] = field(default_factory=list)


_FOREIGN_MARKERS = {
    "lora_te2_": "SDXL (second text encoder)",
    "text_encoder_2.": "SDXL (second text encoder)",
    "lora_unet_double_blocks_": "Flux",
    "lora_unet_single_blocks_": "Flux",
    "transformer.transformer_blocks.": "a DiT model (SD3/Flux)",
}


def _foreign_architecture(keys) -> str | None:
    for key in keys:
        for marker, arch in _FOREIGN_MARKERS.items():
            if key.startswith(marker):
                return arch
    return None


def apply_lora(model: ModelPatcher | None, clip: Any | None, lora_sd: Mapping[str, torch.Tensor],
               strength_model: float, strength_clip: float, *, name: str) -> tuple[Any, Any, LoraReport]:
    """Clone MODEL and CLIP with the LoRA's patches added at the given strengths.

    A strength of 0 returns that input untouched (both 0: nothing is read). Raises LoraMatchError naming
    `name` when no key of the file fits this SD1.x model; logs a warning with examples when only some do.
    """
    from nodes.sd.lora_keys import clip_lora_key_map, unet_lora_key_map

    report = LoraReport(name=name, total_keys=len(lora_sd))
    use_model = model is not None and strength_model != 0
    use_clip = clip is not None and strength_clip != 0
    if not use_model and not use_clip:
        return model, clip, report

    arch = _foreign_architecture(lora_sd)
    if arch is not None:
        raise LoraMatchError(f"LoRA '{name}' is made for {arch}, not for an SD1.x model; "
                             "pick a LoRA trained on SD1.x")
    clip_patcher = _clip_patcher(clip) if clip is not None else None
    unet_keys = unet_lora_key_map(model.model) if model is not None else {}
    clip_keys = clip_lora_key_map(clip_patcher.model) if clip_patcher is not None else {}
    result = load_lora(lora_sd, unet_keys, clip_keys)

    # Validate the shapes for every part, so a wrong-architecture LoRA is caught whatever the strengths are.
    unet_ok = model.fitting_keys(result.unet_patches) if model is not None else set()
    clip_ok = clip_patcher.fitting_keys(result.clip_patches) if clip_patcher is not None else set()
    misfits = sorted((set(result.unet_patches) - unet_ok) | (set(result.clip_patches) - clip_ok))
    report.matched_keys = len(result.matched)
    report.unmatched = list(result.unmatched) + [f"{k} (does not fit the model's weight)" for k in misfits]
    context_misfits = [k for k in misfits if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]
    if context_misfits:
        # Cross-attention sized for another text encoder (SD2: 1024 wide, SDXL: 2048): the rest would be noise.
        raise LoraMatchError(f"LoRA '{name}' was trained for a model with a different text-encoder width "
                             f"(SD2.x or SDXL: {context_misfits[0]} does not fit); pick a LoRA trained on SD1.x")
    if not unet_ok and not clip_ok:
        examples = ", ".join(list(lora_sd)[:3])
        unchecked = "" if clip_patcher is not None else " (text-encoder keys not checked: no CLIP given)"
        raise LoraMatchError(f"LoRA '{name}': none of its {len(lora_sd)} keys fit this SD1.x model{unchecked} "
                             f"(e.g. {examples}); is it a LoRA for another architecture (SDXL, SD2, Flux)?")

    new_model, new_clip = model, clip
    if use_model:
        new_model = model.clone()
        report.unet_patched = len(new_model.add_patches({k: result.unet_patches[k] for k in unet_ok}, strength_model))
    if use_clip:
        new_clip = clip.clone()
        patcher = _clip_patcher(new_clip)
        if patcher is clip_patcher:  # a CLIP whose clone() did not clone the patcher: never touch the input's
            patcher = new_clip.patcher = clip_patcher.clone()
        report.clip_patched = len(patcher.add_patches({k: result.clip_patches[k] for k in clip_ok}, strength_clip))

    log.info("LoRA '%s': %d of %d keys matched (%d UNet weights, %d text-encoder weights)",
             name, report.matched_keys, report.total_keys, len(unet_ok), len(clip_ok))
    if report.unmatched:
        log.warning("LoRA '%s': %d of %d keys not loaded, e.g. %s", name, len(report.unmatched),
                    report.total_keys, ", ".join(report.unmatched[:5]))
    return new_model, new_clip, report


def _clip_patcher(clip: Any) -> ModelPatcher:
    """The text encoder's ModelPatcher, created on first use for a CLIP that has none yet."""
    from nodes.sd.patcher import ModelPatcher

    patcher = getattr(clip, "patcher", None)
    if patcher is None:
        module = clip.text_model
        device = next(module.parameters()).device
        patcher = clip.patcher = ModelPatcher(module, device, device)
    return patcher
