"""Custom sampling's SIGMAS nodes: schedulers (BasicScheduler over KSampler's schedules, the parametric
Karras / exponential / polyexponential / Laplace / VP schedules, beta, SD-Turbo, Align Your Steps,
GITS) and operations on a schedule (split, flip, set first, extend, percent to sigma)."""
from __future__ import annotations

import torch

from nodegraph import Boolean, Combo, Float, Input, Int, Node, NodeInputError, Output

from .sampling import model_sampling_of
from .sd.sampling import SCHEDULER_NAMES, SCHEDULERS
from .sd.sampling import custom_schedules as cs
from .sd.sampling.schedulers import beta as beta_schedule, sigmas_exponential, sigmas_karras

SCHEDULER_CATEGORY = "sampling/custom_sampling/schedulers"
SIGMAS_CATEGORY = "sampling/custom_sampling/sigmas"
SIGMA_MAX, SIGMA_MIN = 14.614642, 0.0291675  # ComfyUI's widget defaults: SD1's range, rounded


def _steps(default=20):
    return Int("steps", default, min=1, max=10000)


def _sigma_range():
    return (Float("sigma_max", SIGMA_MAX, min=0.0, max=5000.0, step=0.01, round=False),
            Float("sigma_min", SIGMA_MIN, min=0.0, max=5000.0, step=0.01, round=False))


class BasicScheduler(Node):
    """KSampler's schedules for a model; denoise < 1 keeps the low-noise tail of a longer schedule."""
    category = SCHEDULER_CATEGORY
    inputs = (Input("model", "MODEL"), Combo("scheduler", SCHEDULER_NAMES), _steps(),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("SIGMAS"),)

    def run(self, model, scheduler, steps, denoise):
        total = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return (torch.FloatTensor([]),)
            total = int(steps / denoise)
        return (SCHEDULERS[scheduler](model_sampling_of(model), total).cpu()[-(steps + 1):],)


class KarrasScheduler(Node):
    """Karras et al. (2022): uniform in sigma^(1/rho)."""
    category = SCHEDULER_CATEGORY
    inputs = (_steps(), *_sigma_range(), Float("rho", 7.0, min=0.0, max=100.0, step=0.01, round=False))
    outputs = (Output("SIGMAS"),)

    def run(self, steps, sigma_max, sigma_min, rho):
        return (sigmas_karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(Node):
    """Uniform in log sigma."""
    category = SCHEDULER_CATEGORY
    inputs = (_steps(), *_sigma_range())
    outputs = (Output("SIGMAS"),)

    def run(self, steps, sigma_max, sigma_min):
        return (sigmas_exponential(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler(Node):
    """log sigma along a power ramp (rho = 1 is the exponential schedule)."""
    category = SCHEDULER_CATEGORY
    inputs = (_steps(), *_sigma_range(), Float("rho", 1.0, min=0.0, max=100.0, step=0.01, round=False))
    outputs = (Output("SIGMAS"),)

    def run(self, steps, sigma_max, sigma_min, rho):
        return (cs.sigmas_polyexponential(steps, sigma_min, sigma_max, rho),)


class LaplaceScheduler(Node):
    """Laplace-distributed log sigma; ends at the smallest sigma, not 0."""
    category = SCHEDULER_CATEGORY
    inputs = (_steps(), *_sigma_range(), Float("mu", 0.0, min=-10.0, max=10.0, step=0.1, round=False),
              Float("beta", 0.5, min=0.0, max=10.0, step=0.1, round=False))
    outputs = (Output("SIGMAS"),)

    def run(self, steps, sigma_max, sigma_min, mu, beta):
        return (cs.sigmas_laplace(steps, sigma_min, sigma_max, mu, beta),)


class VPScheduler(Node):
    """The continuous variance-preserving SDE's sigmas."""
    category = SCHEDULER_CATEGORY
    inputs = (_steps(), Float("beta_d", 19.9, min=0.0, max=5000.0, step=0.01, round=False),
              Float("beta_min", 0.1, min=0.0, max=5000.0, step=0.01, round=False),
              Float("eps_s", 0.001, min=0.0, max=1.0, step=0.0001, round=False))
    outputs = (Output("SIGMAS"),)

    def run(self, steps, beta_d, beta_min, eps_s):
        return (cs.sigmas_vp(steps, beta_d, beta_min, eps_s),)


class BetaSamplingScheduler(Node):
    """Timesteps at quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024)."""
    category = SCHEDULER_CATEGORY
    inputs = (Input("model", "MODEL"), _steps(), Float("alpha", 0.6, min=0.0, max=50.0, step=0.01, round=False),
              Float("beta", 0.6, min=0.0, max=50.0, step=0.01, round=False))
    outputs = (Output("SIGMAS"),)

    def run(self, model, steps, alpha, beta):
        return (beta_schedule(model_sampling_of(model), steps, alpha=alpha, beta_=beta),)


class SDTurboScheduler(Node):
    """SD-Turbo's timesteps 999, 899, ... (1 to 10 steps)."""
    category = SCHEDULER_CATEGORY
    inputs = (Input("model", "MODEL"), Int("steps", 1, min=1, max=10), Float("denoise", 1.0, min=0, max=1.0, step=0.01))
    outputs = (Output("SIGMAS"),)

    def run(self, model, steps, denoise):
        return (cs.sigmas_sd_turbo(model_sampling_of(model), steps, denoise),)


class AlignYourStepsScheduler(Node):
    """NVIDIA's 'Align Your Steps' schedules (10 steps, log-linearly resampled for other counts)."""
    category = SCHEDULER_CATEGORY
    inputs = (Combo("model_type", list(cs.AYS_NOISE_LEVELS)), Int("steps", 10, min=1, max=10000),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("SIGMAS"),)

    def run(self, model_type, steps, denoise):
        return (cs.sigmas_align_your_steps(model_type, steps, denoise),)


class GITSScheduler(Node):
    """GITS' optimized SD1 schedules, by coefficient (0.80 to 1.50 in steps of 0.05)."""
    category = SCHEDULER_CATEGORY
    inputs = (Float("coeff", 1.20, min=0.80, max=1.50, step=0.05), Int("steps", 10, min=2, max=1000),
              Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("SIGMAS"),)

    def run(self, coeff, steps, denoise):
        try:
            return (cs.sigmas_gits(coeff, steps, denoise),)
        except ValueError as exc:
            raise NodeInputError("coeff", str(exc)) from None


class SplitSigmas(Node):
    """Splits a schedule at a step: high_sigmas up to it, low_sigmas from it."""
    category = SIGMAS_CATEGORY
    inputs = (Input("sigmas", "SIGMAS"), Int("step", 0, min=0, max=10000))
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def run(self, sigmas, step):
        return cs.split_at_step(sigmas, step)


class SplitSigmasDenoise(Node):
    """Splits a schedule so that low_sigmas holds the last `denoise` fraction of its steps."""
    category = SIGMAS_CATEGORY
    inputs = (Input("sigmas", "SIGMAS"), Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("SIGMAS", "high_sigmas"), Output("SIGMAS", "low_sigmas"))

    def run(self, sigmas, denoise):
        return cs.split_at_denoise(sigmas, denoise)


class FlipSigmas(Node):
    """Reverses a schedule (sampling towards noise, e.g. for inversion); a leading 0 becomes 0.0001."""
    category = SIGMAS_CATEGORY
    inputs = (Input("sigmas", "SIGMAS"),)
    outputs = (Output("SIGMAS"),)

    def run(self, sigmas):
        return (cs.flip(sigmas),)


class SetFirstSigma(Node):
    """Replaces the first sigma of a schedule."""
    category = SIGMAS_CATEGORY
    inputs = (Input("sigmas", "SIGMAS"), Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001, round=False))
    outputs = (Output("SIGMAS"),)

    def run(self, sigmas, sigma):
        return (cs.set_first(sigmas, sigma),)


class ExtendIntermediateSigmas(Node):
    """Inserts extra sigmas inside the steps that start between end_at_sigma and start_at_sigma."""
    category = SIGMAS_CATEGORY
    inputs = (Input("sigmas", "SIGMAS"), Int("steps", 2, min=1, max=100),
              Float("start_at_sigma", -1.0, min=-1.0, max=20000.0, step=0.01, round=False),
              Float("end_at_sigma", 12.0, min=0.0, max=20000.0, step=0.01, round=False),
              Combo("spacing", ["linear", "cosine", "sine"]))
    outputs = (Output("SIGMAS"),)

    def run(self, sigmas, steps, start_at_sigma, end_at_sigma, spacing):
        return (cs.extend_intermediate(sigmas, steps, start_at_sigma, end_at_sigma, spacing),)


class SamplingPercentToSigma(Node):
    """The sigma at a fraction of sampling (0 = start), as start/end percents are turned into sigmas."""
    category = SIGMAS_CATEGORY
    inputs = (Input("model", "MODEL"), Float("sampling_percent", 0.0, min=0.0, max=1.0, step=0.0001),
              Boolean("return_actual_sigma", False, tooltip="Return the actual sigma value instead of the value "
                      "used for interval checks.\nThis only affects results at 0.0 and 1.0."))
    outputs = (Output("FLOAT", "sigma_value"),)

    def run(self, model, sampling_percent, return_actual_sigma):
        ms = model_sampling_of(model)
        if return_actual_sigma and sampling_percent == 0.0:
            return (ms.sigma_max.item(),)
        if return_actual_sigma and sampling_percent == 1.0:
            return (ms.sigma_min.item(),)
        return (ms.percent_to_sigma(sampling_percent),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    BasicScheduler, KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler, LaplaceScheduler, VPScheduler,
    BetaSamplingScheduler, SDTurboScheduler, AlignYourStepsScheduler, GITSScheduler, SplitSigmas, SplitSigmasDenoise,
    FlipSigmas, SetFirstSigma, ExtendIntermediateSigmas, SamplingPercentToSigma)}
