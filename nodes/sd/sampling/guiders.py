"""Guiders and noise sources of ComfyUI's custom sampling: the values that travel on GUIDER and NOISE
sockets, and the denoisers of the guiders beyond plain CFG (dual CFG, perpendicular negative).

A Guider holds the MODEL and its conditioning and builds its denoiser once the model is on its device
(`guider.denoiser(model_fn, run)`, with the MODEL's model sampling and options); the denoisers are
CFGDenoiser subclasses, so they batch every conditioning list into one UNet pass and apply the MODEL's
CFG hooks where ComfyUI's guiders do: DualCFG runs its replacement / post-CFG hooks at each of its two
mixes, PerpNeg its post-CFG hooks (not its pre-CFG hooks, which see two predictions, not three)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..model_options import SamplingRun
from .cfg import CFGDenoiser, ModelFn, _convert  # _convert: CONDITIONING list -> cond dicts, as for CFG
from .ksampler import prepare_noise
from .model_sampling import ModelSampling


class DualCFGDenoiser(CFGDenoiser):
    """DualCFGGuider: cond1 guided against cond2 with cfg_conds, and cond2 against the negative with
    cfg_cond2_negative. 'regular' adds the two guidance terms; 'nested' applies the second to the
    result of the first."""

    def __init__(self, model_fn: ModelFn, model_sampling: ModelSampling, cond1: list, cond2: list,
                 negative: list, cfg_conds: float, cfg_cond2_negative: float, nested: bool = False, **options):
        super().__init__(model_fn, model_sampling, cond1, negative, cfg_conds, **options)
        self.conds.append(_convert(cond2))
        self.cfg2, self.nested = float(cfg_cond2_negative), nested

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self._resolve(x)
        positive, negative, middle = self.prepared
        if self.nested:
            neg, mid, pos = self.calc_cond_batch([negative, middle, positive], x, sigma)
            text = self.mix(self.cfg_step(x, sigma, self.cfg, (positive, middle), pos, mid))
            return neg + self.cfg2 * (text - neg)
        if not (self.disable_cfg1_optimization or self.options.disable_cfg1_optimization) \
                and math.isclose(self.cfg2, 1.0):
            negative = None  # as ComfyUI: skip what a guidance scale of 1 cannot use
            if math.isclose(self.cfg, 1.0):
                middle = None
        neg, mid, pos = self.calc_cond_batch([negative, middle, positive], x, sigma)
        return self.mix(self.cfg_step(x, sigma, self.cfg2, (middle, negative), mid, neg)) + (pos - mid) * self.cfg


def perp_neg(pos: torch.Tensor, neg: torch.Tensor, empty: torch.Tensor, neg_scale: float, cond_scale: float):
    """Perp-Neg (Armandpour et al. 2023): guide along the positive direction minus neg_scale times the
    part of the negative direction perpendicular to it (projection over the whole batch tensor)."""
    pos_dir, neg_dir = pos - empty, neg - empty
    perp = neg_dir - (torch.mul(neg_dir, pos_dir).sum() / torch.norm(pos_dir) ** 2) * pos_dir
    return empty + cond_scale * (pos_dir - perp * neg_scale)


class PerpNegDenoiser(CFGDenoiser):
    """PerpNegGuider: positive, negative and an empty prompt in one batch, combined by perp_neg."""

    def __init__(self, model_fn: ModelFn, model_sampling: ModelSampling, positive: list, negative: list,
                 empty: list, cfg: float, neg_scale: float, **options):
        super().__init__(model_fn, model_sampling, positive, negative, cfg, **options)
        self.conds.append(_convert(empty))
        self.neg_scale = float(neg_scale)

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self._resolve(x)
        positive, negative, empty = self.prepared
        if not (self.disable_cfg1_optimization or self.options.disable_cfg1_optimization) \
                and math.isclose(self.neg_scale, 0.0):
            negative = None
            if math.isclose(self.cfg, 1.0):
                empty = None
        pos, neg, nocond = self.calc_cond_batch([positive, negative, empty], x, sigma)
        step = self.cfg_step(x, sigma, self.cfg, (positive, negative), pos, neg)
        step.denoised = perp_neg(pos, neg, nocond, self.neg_scale, self.cfg)
        return self.post_cfg(step)


@dataclass(frozen=True, eq=False)
class Guider:
    """A GUIDER socket value: the MODEL, the positive conditioning (an inpainting UNet's extra inputs
    come from it) and how to build the denoiser: build(model_fn, model_sampling, options=, run=)."""
    model: Any
    positive: list
    build: Callable[..., CFGDenoiser]

    def denoiser(self, model_fn: ModelFn, run: SamplingRun) -> CFGDenoiser:
        """The denoiser for one sampling run, with the MODEL's model sampling and options."""
        return self.build(model_fn, self.model.model_sampling, options=self.model.options, run=run)


@dataclass(frozen=True)
class SeededNoise:
    """A NOISE socket value: the seeded initial noise (its seed also seeds the per-step noise)."""
    seed: int

    def generate(self, latent: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """`generator`: seeded and drawn from here, so model patches can keep drawing from it."""
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"), generator=generator)


@dataclass(frozen=True)
class NoNoise:
    """No initial noise; the per-step noise of stochastic samplers then comes from seed 0, as in ComfyUI."""
    seed: int = 0

    def generate(self, latent: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        samples = latent["samples"]
        return torch.zeros(samples.shape, dtype=samples.dtype, layout=samples.layout, device="cpu")
