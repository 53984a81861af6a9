"""Model options: what a MODEL clone carries that changes sampling without touching its weights.

One immutable value, `ModelOptions`, on every ModelPatcher (`model.options`). Patch nodes add entries on a
clone (`model.with_options(model.options.with_post_cfg(...))`); the CFG denoiser (sampling/cfg.py) and the
UNet (unet.py, attention.py) consult it at a few named extension points:

  sampling     model_sampling          the schedule and parameterisation (v-prediction, LCM, zsnr, EDM, ...)
  CFG          pre_cfg → cfg_function → post_cfg   edit the two predictions, replace the CFG formula, edit
                                       its result (RescaleCFG, APG, SAG, PAG, CFGZeroStar, ...)
               denoise_mask_function   reshape an inpainting mask per step (DifferentialDiffusion)
               unet_wrapper            wraps each batched model evaluation
  UNet         input_block / input_block_after_skip / output_block   (FreeU, Kohya Deep Shrink)
               self_attention / cross_attention: input patches, output patches, replacements by site
               after_self_attention    between self- and cross-attention (GLIGEN)
               (HyperTile, ToMe, SAG, PAG, hypernetworks)

Weight patches (LoRA, attention multipliers) are a different thing: ModelPatcher.add_patches.
Every entry names its `source` (the patch node), so a failure names the node. docs/sampling.md has the
full contract and an example of writing a patch node.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

if TYPE_CHECKING:
    from .sampling.model_sampling import ModelSampling

Tensor = torch.Tensor

__all__ = [
    "ModelOptions", "UNetPatches", "AttentionPatches", "PatchContext", "CFGStep", "ModelCall", "SamplingRun",
    "ModelPatchError", "NO_OPTIONS", "attention_site_key",
]


class ModelPatchError(RuntimeError):
    """A model patch could not do its work; the message starts with the patch node's name."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source


# ---------------------------------------------------------------------------------------------------
# State of one sampling run, shared by every hook of that run.

class SamplingRun:
    """Lives for one sampler execution: the schedule being sampled, the model sampling, per-patch scratch
    values (`scratch[id(patch)]`), and the random generator patches draw from (`generator`).

    ComfyUI's ToMe and HyperTile draw from torch's global generator, i.e. from the state the initial-noise
    draw left; the KSampler passes its noise generator here, continuing from that same state, so the same
    seed gives the same tokens merged without touching any global state."""

    def __init__(self, model_sampling: "ModelSampling | None" = None, sigmas: Tensor | None = None,
                 generator: torch.Generator | None = None):
        self.model_sampling = model_sampling
        self.sigmas = sigmas
        self.scratch: dict[int, Any] = {}
        self._generator = generator

    @property
    def generator(self) -> torch.Generator:
        if self._generator is None:
            self._generator = torch.Generator("cpu").manual_seed(0)
        return self._generator


# ---------------------------------------------------------------------------------------------------
# The UNet side.

# Where an attention module sits: ("input" | "middle" | "output", block number, index of the transformer
# block inside that block's SpatialTransformer). A replacement keyed by the first two matches every index.
Site = tuple


def attention_site_key(block: str, number: int, index: int | None = None) -> Site:
    if block not in ("input", "middle", "output"):
        raise ValueError(f"attention site block must be 'input', 'middle' or 'output', not {block!r}")
    return (block, number) if index is None else (block, number, index)


@dataclass
class PatchContext:
    """What a UNet-side patch sees (ComfyUI's `transformer_options`): the patches in effect and the facts
    of the current UNet evaluation. One per evaluation; the UNet fills in where it is as it goes."""

    patches: "UNetPatches"
    sigmas: Tensor                        # [B] sigma of each latent (not repeated per chunk)
    cond_or_uncond: tuple[int, ...]       # per chunk in the batch, its index in the cond lists (0 = positive)
    run: SamplingRun
    original_shape: tuple[int, ...] = ()  # the UNet input's shape
    block: tuple[str, int] = ("input", 0)
    block_index: int = 0                  # transformer block inside the current SpatialTransformer
    transformer_index: int = 0            # SpatialTransformers passed so far in this evaluation
    activations_shape: tuple[int, ...] = ()  # [B, C, H, W] entering the current SpatialTransformer
    heads: int = 0                        # of the attention being patched
    dim_head: int = 0


# Signatures (tensors are [B, T, C] tokens unless said otherwise):
BlockPatch = Callable[[Tensor, PatchContext], Tensor]                        # h [B, C, H, W] -> h
OutputBlockPatch = Callable[[Tensor, Tensor, PatchContext], tuple[Tensor, Tensor]]  # (h, skip) -> (h, skip)
AttentionInputPatch = Callable[[Tensor, Tensor, Tensor, PatchContext], tuple[Tensor, Tensor, Tensor]]
#   (normed x, context, value) -> the same three, before the q/k/v projections
AttentionOutputPatch = Callable[[Tensor, PatchContext], Tensor]              # after the output projection
AttentionReplacement = Callable[[Tensor, Tensor, Tensor, PatchContext], Tensor]
#   projected (q, k, v) [B, T, heads·dim] -> attention output [B, T, heads·dim], before the output projection
TransformerPatch = Callable[[Tensor, PatchContext], Tensor]                  # x after the self-attention residual


@dataclass(frozen=True)
class AttentionPatches:
    """Patches on one kind of attention (self or cross) in every transformer block of the UNet."""

    input: tuple[AttentionInputPatch, ...] = ()
    output: tuple[AttentionOutputPatch, ...] = ()
    replace: Mapping[Site, AttentionReplacement] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.input or self.output or self.replace)

    def replacement_at(self, block: tuple[str, int], index: int) -> AttentionReplacement | None:
        if not self.replace:
            return None
        found = self.replace.get((block[0], block[1], index))
        return found if found is not None else self.replace.get(block)


@dataclass(frozen=True)
class UNetPatches:
    """Everything the UNet itself consults. `active` is False for a plain model: the UNet then takes
    exactly the path it takes without any options."""

    input_block: tuple[BlockPatch, ...] = ()             # after each input block (and its ControlNet residual)
    input_block_after_skip: tuple[BlockPatch, ...] = ()  # the same, after the skip has been stored
    output_block: tuple[OutputBlockPatch, ...] = ()      # before each output block joins h and its skip
    self_attention: AttentionPatches = AttentionPatches()   # attn1
    cross_attention: AttentionPatches = AttentionPatches()  # attn2
    after_self_attention: tuple[TransformerPatch, ...] = ()

    @property
    def transformer_active(self) -> bool:
        return self.self_attention.active or self.cross_attention.active or bool(self.after_self_attention)

    @property
    def active(self) -> bool:
        return bool(self.input_block or self.input_block_after_skip or self.output_block) or self.transformer_active


# ---------------------------------------------------------------------------------------------------
# The CFG side.

@dataclass
class CFGStep:
    """What a CFG hook sees at one denoiser evaluation. Predictions are x0 (denoised), not eps.

    `predict(cond_lists, x, sigma, options=None)` runs the model on more conds (the cond lists from
    `conds`), optionally with other options (PAG adds an attention replacement for its extra pass)."""

    x: Tensor                      # the noisy latent being denoised
    sigma: Tensor                  # [B]
    cond_scale: float
    conds: tuple                   # (positive, negative) cond lists; negative is None when cfg = 1 skips it
    cond_denoised: Tensor
    uncond_denoised: Tensor        # zeros when the negative was skipped
    options: "ModelOptions"
    run: SamplingRun
    predict: Callable[..., list[Tensor]]
    denoised: Tensor | None = None  # the CFG result, for post-CFG hooks


PreCFGHook = Callable[[CFGStep], tuple[Tensor, Tensor]]   # -> (cond_denoised, uncond_denoised)
CFGFunction = Callable[[CFGStep], Tensor]                  # -> denoised (replaces uncond + (cond-uncond)·scale)
PostCFGHook = Callable[[CFGStep], Tensor]                  # step.denoised -> denoised
DenoiseMaskFunction = Callable[[Tensor, Tensor, SamplingRun], Tensor]  # (sigma [B], mask, run) -> mask


@dataclass
class ModelCall:
    """One batched model evaluation, as a UNet wrapper sees it: noisy x (not yet scaled for the UNet), the
    per-row sigmas, the batched text context, the ControlNet residuals, and which conds the chunks are."""

    x: Tensor
    sigma: Tensor
    context: Tensor
    control: dict | None
    cond_or_uncond: tuple[int, ...]


ApplyModel = Callable[[ModelCall], Tensor]                 # -> x0 for the batch
UNetWrapper = Callable[[ApplyModel, ModelCall], Tensor]


# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelOptions:
    """The sampling options of a MODEL. Immutable: every `with_*` returns a new value, so clones never
    share a mutable structure. `sources` lists the patch nodes that contributed, in order."""

    model_sampling: "ModelSampling | None" = None
    pre_cfg: tuple[PreCFGHook, ...] = ()
    cfg_function: CFGFunction | None = None
    post_cfg: tuple[PostCFGHook, ...] = ()
    disable_cfg1_optimization: bool = False
    denoise_mask_function: DenoiseMaskFunction | None = None
    unet_wrapper: UNetWrapper | None = None
    unet: UNetPatches = UNetPatches()
    sources: tuple[str, ...] = ()

    @property
    def guides_cfg(self) -> bool:
        """Whether any CFG-side hook is set (False: the plain formula, nothing else)."""
        return bool(self.pre_cfg or self.post_cfg) or self.cfg_function is not None

    @property
    def empty(self) -> bool:
        return not self.sources

    def _add(self, source: str, **changes) -> "ModelOptions":
        if not source:
            raise ValueError("a model option needs a source (the patch node's name) for error messages")
        return replace(self, sources=self.sources + (source,), **changes)

    def _cfg1(self, disable: bool) -> bool:
        return self.disable_cfg1_optimization or disable

    # -- sampling --------------------------------------------------------------------------------
    def with_model_sampling(self, model_sampling: "ModelSampling", *, source: str) -> "ModelOptions":
        return self._add(source, model_sampling=model_sampling)

    def with_pre_cfg(self, hook: PreCFGHook, *, source: str, disable_cfg1_optimization: bool = False):
        return self._add(source, pre_cfg=self.pre_cfg + (hook,),
                         disable_cfg1_optimization=self._cfg1(disable_cfg1_optimization))

    def with_cfg_function(self, fn: CFGFunction, *, source: str, disable_cfg1_optimization: bool = False):
        return self._add(source, cfg_function=fn, disable_cfg1_optimization=self._cfg1(disable_cfg1_optimization))

    def with_post_cfg(self, hook: PostCFGHook, *, source: str, disable_cfg1_optimization: bool = False):
        return self._add(source, post_cfg=self.post_cfg + (hook,),
                         disable_cfg1_optimization=self._cfg1(disable_cfg1_optimization))

    def with_denoise_mask_function(self, fn: DenoiseMaskFunction, *, source: str) -> "ModelOptions":
        return self._add(source, denoise_mask_function=fn)

    def with_unet_wrapper(self, wrapper: UNetWrapper, *, source: str) -> "ModelOptions":
        return self._add(source, unet_wrapper=wrapper)

    # -- the UNet --------------------------------------------------------------------------------
    def _with_unet(self, source: str, **changes) -> "ModelOptions":
        return self._add(source, unet=replace(self.unet, **changes))

    def with_input_block_patch(self, patch: BlockPatch, *, source: str, after_skip: bool = False):
        if after_skip:
            return self._with_unet(source, input_block_after_skip=self.unet.input_block_after_skip + (patch,))
        return self._with_unet(source, input_block=self.unet.input_block + (patch,))

    def with_output_block_patch(self, patch: OutputBlockPatch, *, source: str) -> "ModelOptions":
        return self._with_unet(source, output_block=self.unet.output_block + (patch,))

    def with_attention_patch(self, kind: str, *, source: str, input: AttentionInputPatch | None = None,
                             output: AttentionOutputPatch | None = None) -> "ModelOptions":
        """kind 'self' (attn1) or 'cross' (attn2); `input` runs before the projections, `output` after."""
        name, current = self._attention(kind)
        updated = replace(current, input=current.input + ((input,) if input else ()),
                          output=current.output + ((output,) if output else ()))
        return self._with_unet(source, **{name: updated})

    def with_attention_replacement(self, kind: str, site: Site, fn: AttentionReplacement, *,
                                   source: str) -> "ModelOptions":
        """Replace softmax(qkᵀ)v of the self ('self') or cross ('cross') attention at `site`
        (see attention_site_key); the projections around it stay."""
        name, current = self._attention(kind)
        attention_site_key(*site)  # validates the shape of the key
        updated = replace(current, replace={**current.replace, tuple(site): fn})
        return self._with_unet(source, **{name: updated})

    def with_after_self_attention_patch(self, patch: TransformerPatch, *, source: str) -> "ModelOptions":
        return self._with_unet(source, after_self_attention=self.unet.after_self_attention + (patch,))

    def _attention(self, kind: str) -> tuple[str, AttentionPatches]:
        if kind == "self":
            return "self_attention", self.unet.self_attention
        if kind == "cross":
            return "cross_attention", self.unet.cross_attention
        raise ValueError(f"attention kind must be 'self' or 'cross', not {kind!r}")

    def __repr__(self) -> str:
        return f"ModelOptions({', '.join(self.sources) or 'none'})"


NO_OPTIONS = ModelOptions()
