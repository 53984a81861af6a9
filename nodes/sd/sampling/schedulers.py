"""Sigma schedules: each is a small function (model_sampling, steps) -> float32 tensor of steps + 1
sigmas ending in 0, plus the KSampler step-selection rules (denoise tail, discarded penultimate
sigma, KSamplerAdvanced start/end slicing). Formulas and names follow ComfyUI §6.3/§6.4."""
from __future__ import annotations

import math

import numpy as np
import torch

from .model_sampling import ModelSamplingEPS

# Samplers whose schedule is computed for steps + 1 and then loses its second-to-last sigma.
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: uniform in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform in log sigma."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n).exp())


def sigmas_kl_optimal(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """'Align Your Steps' KL-optimal schedule: uniform in atan(sigma). For n = 1 ComfyUI divides
    0 by 0 and samples with a NaN sigma; here the single step starts at sigma_max instead."""
    ramp = torch.arange(n, dtype=torch.float).div_(max(n - 1, 1))
    return append_zero((ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan_())


def simple(ms: ModelSamplingEPS, steps: int) -> torch.Tensor:
    """Every (1000/steps)-th entry of the training sigma table, from the top."""
    stride = len(ms.sigmas) / steps
    return torch.FloatTensor([float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)] + [0.0])


def normal(ms: ModelSamplingEPS, steps: int, sgm: bool = False) -> torch.Tensor:
    """Timesteps evenly spaced from t(sigma_max) to t(sigma_min), mapped through the sigma table.
    sgm_uniform spaces steps + 1 points and drops the last, like SGM/SDXL-Turbo samplers."""
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps, append = steps + 1, False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(ms.sigma(t)) for t in timesteps]
    return torch.FloatTensor(sigs + [0.0] if append else sigs)


def sgm_uniform(ms: ModelSamplingEPS, steps: int) -> torch.Tensor:
    return normal(ms, steps, sgm=True)


def ddim_uniform(ms: ModelSamplingEPS, steps: int) -> torch.Tensor:
    """Every (1000 // steps)-th table entry starting at index 1, reversed, ending in 0."""
    if math.isclose(float(ms.sigmas[1]), 0, abs_tol=0.00001):
        steps, sigs = steps + 1, []
    else:
        sigs = [0.0]
    stride = max(len(ms.sigmas) // steps, 1)
    sigs += [float(s) for s in ms.sigmas[1::stride]]
    return torch.FloatTensor(sigs[::-1])


def beta(ms: ModelSamplingEPS, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """'Beta Sampling is All You Need' (Lee et al. 2024): timesteps at Beta(0.6, 0.6) quantiles,
    rounded to table indices; repeated indices are dropped."""
    import scipy.stats  # imported here: scipy costs seconds of every cold start, only this needs it

    last = len(ms.sigmas) - 1
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta_) * last)
    sigs, prev = [], -1
    for t in ts:
        if t != prev:
            sigs.append(float(ms.sigmas[int(t)]))
        prev = t
    return torch.FloatTensor(sigs + [0.0])


def linear_quadratic(ms: ModelSamplingEPS, steps: int, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> torch.Tensor:
    """Mochi's schedule in 'noise fraction' s: linear from 0 to threshold over the first half of the
    steps, then a quadratic that reaches 1 with a continuous slope; sigma = (1 - s) * sigma_max."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        quadratic_steps = steps - linear_steps
        step_diff = linear_steps - threshold_noise * steps
        quad_coef = step_diff / (linear_steps * quadratic_steps ** 2)
        lin_coef = threshold_noise / linear_steps - 2 * step_diff / quadratic_steps ** 2
        const = quad_coef * linear_steps ** 2
        s = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        s += [quad_coef * i ** 2 + lin_coef * i + const for i in range(linear_steps, steps)]
        fractions = [1.0 - v for v in s + [1.0]]
    return torch.FloatTensor(fractions) * ms.sigma_max.cpu()


def _uses_range(fn):
    """Adapt a (n, sigma_min, sigma_max) schedule to the (model_sampling, steps) shape."""
    return lambda ms, steps: fn(steps, float(ms.sigma_min), float(ms.sigma_max))


SCHEDULERS = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": _uses_range(sigmas_karras),
    "exponential": _uses_range(sigmas_exponential),
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": _uses_range(sigmas_kl_optimal),
}
SCHEDULER_NAMES = list(SCHEDULERS)  # ComfyUI's order: "simple" first


def calculate_sigmas(ms: ModelSamplingEPS, scheduler: str, steps: int, *, denoise: float | None = 1.0,
                     sampler_name: str | None = None) -> torch.Tensor:
    """The sigmas KSampler runs: `steps` steps, or for denoise < 1 the low-noise tail of a longer
    schedule (int(steps / denoise) steps); empty when denoise <= 0 (nothing to do)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; expected one of {SCHEDULER_NAMES}")
    if denoise is None or denoise > 0.9999:
        return _schedule(ms, scheduler, steps, sampler_name)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return _schedule(ms, scheduler, int(steps / denoise), sampler_name)[-(steps + 1):]


def _schedule(ms, scheduler, steps, sampler_name):
    if sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        sigmas = SCHEDULERS[scheduler](ms, steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])
    return SCHEDULERS[scheduler](ms, steps)


def slice_for_advanced(sigmas: torch.Tensor, start_step: int | None = None, end_step: int | None = None,
                       force_full_denoise: bool = False) -> torch.Tensor | None:
    """KSamplerAdvanced's window: keep sigmas[start_step : end_step + 1]; with force_full_denoise a
    truncated schedule still ends at sigma 0. None means 'nothing to sample, return the latent'."""
    if end_step is not None and end_step < len(sigmas) - 1:
        sigmas = sigmas[:end_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas
