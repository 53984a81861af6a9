"""Multistep samplers: each step reuses the slopes or predictions of earlier steps. Linear multistep
(LMS), DPM-Solver++(2M), iPNDM (fixed and variable step), DEIS (Zhang & Chen 2023, time-AB), RES
multistep (Zhang et al. 2023) with its ancestral and CFG++ forms, and gradient estimation
(Permenter & Yuan 2024). The multistep samplers land on D(x, 0) itself when the last sigma is 0."""
from __future__ import annotations

import torch

from .noise import default_noise_sampler
from .samplers import get_ancestral_step, half_log_snr, sampler, sigma_at, to_d


def linear_multistep_coeff(order, t, i, j):
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial for node t_{i-j}."""
    from scipy import integrate  # imported here: scipy costs seconds of every cold start, LMS needs it

    def basis(tau):
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@sampler("lms")
def lms(model, x, sigmas, *, seed, report, order=4):
    """Adams-Bashforth on the sigma axis over the last `order` slopes."""
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        cur_order = min(i + 1, order)
        coeffs = [linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
        x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
    return x


@sampler("dpmpp_2m")
def dpmpp_2m(model, x, sigmas, *, seed, report):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2); first order on the first and last step."""
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            r = (t - half_log_snr(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_at(t_next) / sigma_at(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def _adams_bashforth(d, history):
    """Fixed-step Adams-Bashforth slope from the current slope and up to three earlier ones."""
    weights = {0: (1,), 1: (3 / 2, -1 / 2), 2: (23 / 12, -16 / 12, 5 / 12), 3: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
    w = weights[len(history)]
    return w[0] * d + sum(wk * dk for wk, dk in zip(w[1:], reversed(history)))


def _variable_adams_bashforth(d, history, sigmas, i):
    """iPNDM-v (Zhang & Chen 2023, as in zju-pi's diff-sampler, Apache-2.0): Adams-Bashforth weights for
    unequal steps h_n = t_{n+1} - t_n on the sigma axis, up to fourth order."""
    order = len(history) + 1
    if order == 1:
        return d
    h = [sigmas[i + 1] - sigmas[i]] + [sigmas[i - k] - sigmas[i - k - 1] for k in range(order - 1)]
    r1 = h[0] / h[1]
    c = [(2 + r1) / 2, -r1 / 2]
    if order >= 3:
        a = (1 - h[0] / (3 * (h[0] + h[1])) * (h[0] * (h[0] + h[1])) / (h[1] * (h[1] + h[2]))) / 2
        c = [c[0] + a, c[1] - (1 + h[1] / h[2]) * a, a * h[1] / h[2]]
    if order == 4:
        s01, s012 = h[0] + h[1], h[0] + h[1] + h[2]
        q = h[1] * (h[1] + h[2]) / (h[2] * (h[2] + h[3]))
        b = ((1 - h[0] / (3 * s01)) / 2 + (1 - h[0] / (2 * s01)) * h[0] / (6 * s012)) \
            * (h[0] * s01 * s012) / (h[1] * (h[1] + h[2]) * (h[1] + h[2] + h[3]))
        c = [c[0] + b, c[1] - (1 + h[1] / h[2] + q) * b, c[2] + (h[1] / h[2] + q * (1 + h[2] / h[3])) * b,
             -b * q * h[1] / h[2]]
    return c[0] * d + sum(ck * dk for ck, dk in zip(c[1:], reversed(history)))


def _ipndm_loop(model, x, sigmas, report, max_order, slope):
    history = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * slope(d, history, i)
        history = (history + [d])[-(max_order - 1):]
    return x


@sampler("ipndm")
def ipndm(model, x, sigmas, *, seed, report, max_order=4):
    """Improved pseudo-numerical method (iPNDM): fixed-step Adams-Bashforth on the slopes, warming up
    from Euler."""
    return _ipndm_loop(model, x, sigmas, report, max_order, lambda d, history, i: _adams_bashforth(d, history))


@sampler("ipndm_v")
def ipndm_v(model, x, sigmas, *, seed, report, max_order=4):
    """iPNDM with Adams-Bashforth weights for the schedule's actual (unequal) steps."""
    return _ipndm_loop(model, x, sigmas, report, max_order,
                       lambda d, history, i: _variable_adams_bashforth(d, history, sigmas, i))


# -- DEIS ----------------------------------------------------------------------------------------
def _deis_coefficients(sigmas: torch.Tensor, max_order: int, n: int = 10000) -> list[list[torch.Tensor]]:
    """DEIS 'tab' coefficients (Zhang & Chen 2023, eq. 14): sigma is mapped to the time of a VP SDE
    with EDM's range (sigma 0.002..80 over t = 1e-3..1), and each step integrates the Lagrange basis
    of the last `order` times against the exponential-integrator weight by a 10000-point Riemann sum,
    in float32 as the reference implementation does."""
    eps_s, smin, smax = 1e-3, torch.tensor(0.002), torch.tensor(80.0)
    beta_d = 2 * (torch.log(smin ** 2 + 1) / eps_s - torch.log(smax ** 2 + 1)) / (eps_s - 1)
    beta_0 = torch.log(smax ** 2 + 1) - 0.5 * beta_d
    beta_1 = beta_d + beta_0
    sig = sigmas.detach().cpu().float()
    ts = ((beta_0 ** 2 + 2 * beta_d * (sig ** 2 + 1).log()).sqrt() - beta_0) / beta_d
    coefficients = []
    for i in range(len(ts) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coefficients.append([])
            continue
        taus = torch.linspace(ts[i], ts[i + 1], n)
        dtau = (ts[i + 1] - ts[i]) / n
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -taus * (beta_1 - beta_0) - beta_0
        weight = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
        nodes = ts[[i - k for k in range(order)]]
        row = []
        for j in range(order):
            basis = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    basis = basis * (taus - nodes[k]) / (nodes[j] - nodes[k])
            row.append(torch.sum(weight * basis) * dtau)
        coefficients.append(row)
    return coefficients


@sampler("deis")
def deis(model, x, sigmas, *, seed, report, max_order=3):
    coefficients = _deis_coefficients(sigmas, max_order)
    history = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        order = 1 if sigmas[i + 1] <= 0 else min(max_order, i + 1)
        if order == 1:
            x = x + (sigmas[i + 1] - sigmas[i]) * d
        else:
            c = coefficients[i]
            x = x + c[0] * d + sum(ck.to(x.device) * dk for ck, dk in zip(c[1:order], reversed(history)))
        history = (history + [d])[-(max_order - 1):]
    return x


# -- RES multistep and gradient estimation -------------------------------------------------------
@sampler("res_multistep_ancestral_cfg_pp", uses_uncond=True, cfg_pp=True)
@sampler("res_multistep_ancestral")
@sampler("res_multistep_cfg_pp", uses_uncond=True, eta=0.0, cfg_pp=True)
@sampler("res_multistep", eta=0.0)
def res_multistep(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None, cfg_pp=False):
    """Second-order multistep exponential integrator (RES, arXiv 2308.02157) in data prediction,
    stepping down to sigma_down with ancestral noise when eta > 0. CFG++ steps along the
    unconditional prediction and adds the guidance difference back."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    old_denoised, old_sigma_down = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(i, x, sigmas[i], denoised)
        base = model.uncond if cfg_pp else denoised
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                x = denoised + to_d(x, sigmas[i], base) * sigma_down
            else:
                x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigma_down)
            t_prev, t_old = half_log_snr(sigmas[i - 1]), half_log_snr(old_sigma_down)
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi_1 = torch.expm1(-h) / -h
            phi_2 = (phi_1 - 1.0) / -h
            b1 = torch.nan_to_num(phi_1 - phi_2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi_2 / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - base)
            x = sigma_at(h) * x + h * (b1 * base + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised, old_sigma_down = base, sigma_down
    return x


@sampler("gradient_estimation_cfg_pp", uses_uncond=True, cfg_pp=True)
@sampler("gradient_estimation")
def gradient_estimation(model, x, sigmas, *, seed, report, ge_gamma=2.0, cfg_pp=False):
    """Euler plus a correction from the change of slope since the last step, scaled by gamma - 1
    (Permenter & Yuan 2024); lands on D at sigma 0."""
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], model.uncond if cfg_pp else denoised)
        report(i, x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x

