"""The sampling pipeline (ComfyUI's common_ksampler -> sample -> CFGGuider -> KSAMPLER) for an SD1.x
UNet: seed -> noise, sigmas, latent scale, initial noising, sampler, scale back.

`guided_sample` is the shared core (a guider's denoiser, noise and sigmas given: what
SamplerCustom / SamplerCustomAdvanced run); `sample` is KSampler / KSamplerAdvanced on top of it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..model_options import NO_OPTIONS, ModelOptions, SamplingRun
from .cfg import CFGDenoiser, InpaintDenoiser
from .model_sampling import ModelSampling, process_latent_in, process_latent_out
from .samplers import SAMPLERS
from .schedulers import calculate_sigmas, slice_for_advanced


@dataclass(frozen=True)
class SamplerSpec:
    """A SAMPLER socket value: a registered sampler name, its options, and whether an inpaint's kept
    region is re-noised with its own noise (seed + 1) instead of the initial noise (ComfyUI's
    inpaint_options={"random": True}, which only "ddim" sets)."""
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    random_inpaint_noise: bool = False

    @classmethod
    def named(cls, name: str) -> SamplerSpec:
        """KSampler's sampler_name / KSamplerSelect: the sampler with its default options."""
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
        return cls(name, {}, random_inpaint_noise=name == "ddim")

    def __hash__(self):
        return hash((self.name, self.random_inpaint_noise, tuple(sorted(map(str, self.options.items())))))


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: list[int] | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, 1) noise shaped like the latent from a CPU generator seeded with `seed`.

    With batch_index, noise is drawn one item at a time for indices 0..max(batch_index) and the
    listed ones are picked, so item i of a batch equals the noise of a lone generation at index i.
    `generator` (optional) is seeded and drawn from here, so the caller can keep drawing after it."""
    generator = (generator or torch.Generator("cpu")).manual_seed(seed)
    if batch_index is None:
        return torch.randn(latent.size(), dtype=latent.dtype, layout=latent.layout, generator=generator, device="cpu")
    unique, inverse = np.unique(batch_index, return_inverse=True)
    kept = []
    for i in range(int(unique[-1]) + 1):
        noise = torch.randn([1] + list(latent.shape[1:]), dtype=latent.dtype, layout=latent.layout,
                            generator=generator, device="cpu")
        if i in unique:
            kept.append(noise)
    return torch.cat([kept[i] for i in np.asarray(inverse).reshape(-1)], dim=0)


def prepare_mask(noise_mask: torch.Tensor, shape: torch.Size, device) -> torch.Tensor:
    """A [B?, 1?, h, w] mask resized bilinearly to the latent and repeated over channels and batch."""
    mask = noise_mask.reshape((-1, 1, noise_mask.shape[-2], noise_mask.shape[-1]))
    mask = F.interpolate(mask, size=tuple(shape[2:]), mode="bilinear")
    if mask.shape[1] < shape[1]:
        mask = mask.repeat((1, shape[1], 1, 1))[:, :shape[1]]
    if mask.shape[0] < shape[0]:
        mask = mask.repeat([math.ceil(shape[0] / mask.shape[0]), 1, 1, 1])[:shape[0]]
    return mask.to(device)


def is_max_denoise(model_sampling: ModelSampling, sigmas: torch.Tensor) -> bool:
    """True when sampling starts from pure noise (first sigma at or above the schedule's sigma_max)."""
    sigma_max, first = float(model_sampling.sigma_max), float(sigmas[0])
    return math.isclose(sigma_max, first, rel_tol=1e-05) or first > sigma_max


def guided_sample(denoiser, model_sampling: ModelSampling, latent: torch.Tensor, noise: torch.Tensor,
                  sigmas: torch.Tensor, sampler: SamplerSpec, *, seed: int, noise_mask: torch.Tensor | None = None,
                  callback: Callable | None = None, cancel: Callable[[], None] | None = None,
                  options: ModelOptions = NO_OPTIONS, run: SamplingRun | None = None) -> torch.Tensor:
    """Run `sampler` over `sigmas` on an unscaled LATENT tensor with `denoiser` (a CFGDenoiser or a
    guider built on it); returns the unscaled result. `seed` seeds the sampler's per-step noise.

    callback(step, denoised_x0, x, total_steps) runs once per step (for progress and previews).
    `options` / `run`: the MODEL's sampling options and the run state their hooks share (the inpaint
    mask function reads them)."""
    if len(sigmas) == 0:
        return latent
    device = latent.device
    sigmas, noise = sigmas.to(device), noise.to(device)
    # an all-zero latent (EmptyLatentImage) is left unscaled; ComfyUI skips it the same way
    latent_in = process_latent_in(latent) if torch.count_nonzero(latent) > 0 else latent
    wrapped = denoiser
    if noise_mask is not None:
        inpaint_noise = noise
        if sampler.random_inpaint_noise:
            generator = torch.Generator("cpu").manual_seed((seed + 1) % 2 ** 64)
            inpaint_noise = torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(device)
        wrapped = InpaintDenoiser(denoiser, model_sampling, latent_in, inpaint_noise,
                                  prepare_mask(noise_mask, noise.shape, device),
                                  mask_function=options.denoise_mask_function, run=run)

    x = model_sampling.noise_scaling(sigmas[0], noise, latent_in, is_max_denoise(model_sampling, sigmas))
    total_steps = len(sigmas) - 1

    def step_callback(info):
        callback(info["i"], info["denoised"], info["x"], total_steps)
    try:
        samples = SAMPLERS[sampler.name](wrapped, x, sigmas, seed=seed, callback=step_callback if callback else None,
                                         cancel=cancel, model_sampling=model_sampling, **sampler.options)
    finally:
        getattr(denoiser, "cleanup", lambda: None)()
    samples = model_sampling.inverse_noise_scaling(sigmas[-1], samples)
    return process_latent_out(samples.to(torch.float32))


def sample(model_fn, model_sampling: ModelSampling, latent: torch.Tensor, *, seed: int, steps: int,
           cfg: float, sampler_name: str, scheduler: str, positive: list, negative: list,
           denoise: float = 1.0, noise_mask: torch.Tensor | None = None, disable_noise: bool = False,
           start_step: int | None = None, last_step: int | None = None, force_full_denoise: bool = False,
           batch_index: list[int] | None = None, callback: Callable | None = None,
           cancel: Callable[[], None] | None = None, dtype: torch.dtype | None = None,
           options: ModelOptions = NO_OPTIONS) -> torch.Tensor:
    """KSampler / KSamplerAdvanced on an unscaled LATENT tensor; returns the unscaled result.
    `options`: the MODEL's sampling options (hooks; `model_sampling` should be the model's already)."""
    sampler = SamplerSpec.named(sampler_name)
    generator = torch.Generator("cpu").manual_seed(seed)  # patches keep drawing from it (SamplingRun)
    if disable_noise:
        noise = torch.zeros(latent.size(), dtype=latent.dtype, layout=latent.layout, device="cpu")
    else:
        noise = prepare_noise(latent, seed, batch_index, generator=generator)
    sigmas = calculate_sigmas(model_sampling, scheduler, steps, denoise=denoise, sampler_name=sampler_name)
    sigmas = slice_for_advanced(sigmas, start_step, last_step, force_full_denoise)
    if sigmas is None or len(sigmas) == 0:
        return latent
    run = SamplingRun(model_sampling, sigmas.to(latent.device), generator)
    denoiser = CFGDenoiser(model_fn, model_sampling, positive, negative, cfg, dtype=dtype, options=options, run=run)
    return guided_sample(denoiser, model_sampling, latent, noise, sigmas, sampler, seed=seed, noise_mask=noise_mask,
                         callback=callback, cancel=cancel, options=options, run=run)
