"""The sampler contract and registry: every sampler name of ComfyUI 0.3.64, in ComfyUI's order. Each
sampler is one short loop in a family module (single_step, ancestral, multistep, sde, sa_solver,
dpm_solver, cfg_pp, uni_pc) that solves the probability-flow ODE or its SDE in Karras's sigma form,
x = x0 + sigma * eps, given a denoiser D(x, sigma) -> x0.

Public contract (what SAMPLERS holds):
    fn(denoiser, x, sigmas, *, seed, callback=None, cancel=None, model_sampling=None, **options) -> x
`denoiser(x, sigma_batch)` returns the denoised x0; `callback` gets {"i", "x", "sigma", "sigma_hat",
"denoised"} once per step; `cancel()` is polled once per step and aborts by raising; `model_sampling`
is the model's noise schedule (ModelSamplingEPS when not given); `options` are the sampler's own
(eta, s_noise, order, ..., `noise_sampler` to inject noise).

The loops are written against a simpler inner contract that `@sampler` sets up:
    loop(model, x, sigmas, *, seed, report, **options) -> x
`model(x, sigma)` takes a scalar sigma; `model.uncond` is the unconditional x0 of the last call (for
loops registered with uses_uncond=True: CFG++ needs it); `model.sampling` is the noise schedule;
`report(i, x, sigma, denoised)` is the per-step hook."""
from __future__ import annotations

import functools
from typing import Callable

import torch

SAMPLERS: dict[str, Callable] = {}


class SamplerError(ValueError):
    """A sampler cannot run this configuration; the message says why."""


class _Model:
    """What a loop calls: the denoiser at a scalar sigma, plus what CFG++ and schedules need."""

    def __init__(self, denoiser, sampling):
        self.denoiser, self.sampling, self.uncond = denoiser, sampling, None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, sigma * x.new_ones([x.shape[0]]))


def cfg_denoiser_of(denoiser):
    """The CFG denoiser inside `denoiser`, looking through wrappers that keep it as `.denoiser`
    (InpaintDenoiser); None when there is none."""
    while denoiser is not None and not hasattr(denoiser, "post_cfg_functions"):
        denoiser = getattr(denoiser, "denoiser", None)
    return denoiser


def sampler(name: str, *, uses_uncond: bool = False, **defaults):
    """Register a loop under `name` (with option defaults), wrapped into the public contract.
    Returns the loop itself, so registrations stack: one loop, several names."""
    def register(loop):
        @functools.wraps(loop)
        @torch.no_grad()
        def run(denoiser, x, sigmas, *, seed, callback=None, cancel=None, model_sampling=None, **options):
            if len(sigmas) <= 1:
                return x
            if model_sampling is None:
                from .model_sampling import ModelSamplingEPS
                model_sampling = ModelSamplingEPS()
            model = _Model(denoiser, model_sampling)

            def report(i, x, sigma, denoised, sigma_hat=None):
                if cancel is not None:
                    cancel()
                if callback is not None:
                    callback({"i": i, "x": x, "sigma": sigma,
                              "sigma_hat": sigma if sigma_hat is None else sigma_hat, "denoised": denoised})

            if not uses_uncond:
                return loop(model, x, sigmas, seed=seed, report=report, **{**defaults, **options})
            with _capturing_uncond(denoiser, model, name):
                return loop(model, x, sigmas, seed=seed, report=report, **{**defaults, **options})

        SAMPLERS[name] = run
        return loop
    return register


class _capturing_uncond:
    """CFG++ samplers step along the unconditional prediction: while they run, a post-CFG function on
    the CFG denoiser copies it into model.uncond, and the cfg = 1 shortcut (which skips the
    unconditional pass) is off, as in ComfyUI."""

    def __init__(self, denoiser, model: _Model, name: str):
        self.cfg = cfg_denoiser_of(denoiser)
        if self.cfg is None:
            raise SamplerError(f"sampler '{name}' needs classifier-free guidance (a CFG guider) to get the "
                               "unconditional prediction; this denoiser has none")
        self.model = model

    def _capture(self, step) -> torch.Tensor:  # a PostCFGHook (nodes/sd/model_options.py)
        self.model.uncond = step.uncond_denoised
        return step.denoised

    def __enter__(self):
        self.was_disabled = self.cfg.disable_cfg1_optimization
        self.cfg.disable_cfg1_optimization = True
        self.cfg.post_cfg_functions.append(self._capture)

    def __exit__(self, *exc):
        self.cfg.post_cfg_functions.remove(self._capture)
        self.cfg.disable_cfg1_optimization = self.was_disabled


# -- shared math --------------------------------------------------------------------------------
def to_d(x, sigma, denoised):
    """The ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Split a step sigma_from -> sigma_to into a deterministic step down to sigma_down and fresh
    noise of size sigma_up, with sigma_down^2 + sigma_up^2 = sigma_to^2."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def half_log_snr(sigma):
    """lambda = log(alpha / sigma) = -log(sigma) for the variance-exploding form of SD1's schedules."""
    return sigma.log().neg()


def sigma_at(lam):
    """The inverse of half_log_snr."""
    return lam.neg().exp()


def h_phi_1(h):
    """h * phi_1(h) of exponential integrators: expm1(h)."""
    return torch.expm1(h)


def h_phi_2(h):
    """h * phi_2(h) of exponential integrators: (expm1(h) - h) / h."""
    return (torch.expm1(h) - h) / h


# The families register themselves on import.
from . import single_step, ancestral, multistep, sde, sa_solver, dpm_solver, cfg_pp, uni_pc  # noqa: E402,F401

# ComfyUI 0.3.64's KSampler.SAMPLERS, in its order.
SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
