"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) in noise prediction and t = -log sigma, as ComfyUI's
dpm_fast and dpm_adaptive run it: they take only the schedule's first sigma, its last non-zero sigma
and (dpm_fast) its step count, and end at that last non-zero sigma.

dpm_fast: fixed steps uniform in t, third order with a final 2/1 so the model runs exactly
len(sigmas) - 1 times. dpm_adaptive: embedded 1/2 or 2/3 pairs with a PID step-size controller."""
from __future__ import annotations

import math

import torch

from .noise import default_noise_sampler
from .samplers import SamplerError, get_ancestral_step, sampler


class _Solver:
    """Single-step DPM-Solver-1/2/3 updates with an eps cache, so stages shared between the low- and
    high-order estimates of dpm_adaptive run the model once."""

    def __init__(self, model):
        self.model = model

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    @staticmethod
    def t(sigma):
        return -sigma.log()

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            cache[key] = (x - self.model(x, self.sigma(t))) / self.sigma(t)
        return cache[key]

    def step_1(self, cache, x, t, t_next):
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, cache, x, t, t_next, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, cache, x, t, t_next, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = x - self.sigma(s2) * (r2 * h).expm1() * eps \
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral_target(self, s, t, t_end, eta):
        """With eta > 0: where the deterministic part of a step s -> t ends, and the noise to add."""
        if not eta:
            return t, 0.0
        sd, _ = get_ancestral_step(self.sigma(s), self.sigma(t), eta)
        t_ = torch.minimum(t_end, self.t(sd))
        return t_, (self.sigma(t) ** 2 - self.sigma(t_) ** 2) ** 0.5


def _range(sigmas):
    sigma_min = sigmas[-1] if sigmas[-1] != 0 else sigmas[-2]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise SamplerError("dpm_fast / dpm_adaptive need non-zero sigmas at both ends of the schedule")
    return -sigmas[0].log(), -sigma_min.log()


@sampler("dpm_fast")
def dpm_fast(model, x, sigmas, *, seed, report, eta=0.0, s_noise=1.0, noise_sampler=None):
    noise = noise_sampler or default_noise_sampler(x, seed)
    solver = _Solver(model)
    t_start, t_end = _range(sigmas)
    nfe = len(sigmas) - 1
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        cache = {}
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = solver.ancestral_target(t, t_next, t_end, eta)
        eps = solver.eps(cache, "eps", x, t)
        report(i, x, solver.sigma(t), x - solver.sigma(t) * eps)
        x = (solver.step_1, solver.step_2, solver.step_3)[order - 1](cache, x, t, t_next_)
        if su:
            x = x + su * s_noise * noise(solver.sigma(t), solver.sigma(t_next))
    return x


class _PIDStepSize:
    """PID control of the step size from the error estimate (Söderlind 2003, as in k-diffusion)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h, self.accept_safety, self.eps = h, accept_safety, eps
        self.b1, self.b2, self.b3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
        self.errs = []

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@sampler("dpm_adaptive")
def dpm_adaptive(model, x, sigmas, *, seed, report, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0,
                 icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0, noise_sampler=None):
    if order not in (2, 3):
        raise SamplerError(f"dpm_adaptive's order must be 2 or 3, not {order}")
    noise = noise_sampler or default_noise_sampler(x, seed)
    solver = _Solver(model)
    t_start, t_end = _range(sigmas)
    forward = t_end > t_start
    if not forward and eta:
        raise SamplerError("dpm_adaptive: eta must be 0 when sampling towards higher noise")
    atol, rtol = torch.tensor(atol), torch.tensor(rtol)
    pid = _PIDStepSize(abs(h_init) * (1 if forward else -1), pcoeff, icoeff, dcoeff, 1.5 if eta else order,
                       accept_safety)
    s, x_prev, steps = t_start, x, 0
    while (s < t_end - 1e-5) if forward else (s > t_end + 1e-5):
        cache = {}
        t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
        t_, su = solver.ancestral_target(s, t, t_end, eta)
        eps = solver.eps(cache, "eps", x, s)
        denoised = x - solver.sigma(s) * eps
        if order == 2:
            x_low, x_high = solver.step_1(cache, x, s, t_), solver.step_2(cache, x, s, t_)
        else:
            x_low, x_high = solver.step_2(cache, x, s, t_, r1=1 / 3), solver.step_3(cache, x, s, t_)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high + (su * s_noise * noise(solver.sigma(s), solver.sigma(t)) if su else 0)
            s = t
        steps += 1
        report(steps - 1, x, solver.sigma(s), denoised)
    return x
