"""Stochastic exponential integrators in data prediction (lambda = -log sigma): DPM-Solver++ SDE
(single step), DPM-Solver++(2M / 3M) SDE (Lu et al. 2022) with Brownian-tree noise, the ER-SDE
solver (Cui et al. 2023) and SEEDS-2 / SEEDS-3 (Gonzalez et al. 2023) with per-step noise.

For SD1's variance-exploding form alpha = sigma * exp(lambda) is 1; it is kept in the formulas
because ComfyUI computes it, and it rounds the same way. `cpu_tree=False` (the `*_gpu` names) keeps
the Brownian tree on the latent's device."""
from __future__ import annotations

import torch

from .noise import brownian_noise_sampler, default_noise_sampler
from .samplers import SamplerError, get_ancestral_step, h_phi_1, h_phi_2, half_log_snr, sampler, sigma_at


@sampler("dpmpp_sde_gpu", cpu_tree=False)
@sampler("dpmpp_sde")
def dpmpp_sde(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, r=0.5, noise_sampler=None, cpu_tree=True):
    """Single-step second order: an ancestral sub-step to lambda_s + r*h, then the full step with the
    blended denoiser, each with Brownian-tree noise; lands on D at sigma 0."""
    noise = noise_sampler or brownian_noise_sampler(x, sigmas, seed, cpu=cpu_tree)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        lambda_s_1 = lambda_s + r * h
        sigma_s_1 = sigma_at(lambda_s_1)
        alpha_s, alpha_s_1, alpha_t = sigmas[i] * lambda_s.exp(), sigma_s_1 * lambda_s_1.exp(), sigmas[i + 1] * lambda_t.exp()

        sd, su = get_ancestral_step(sigma_at(lambda_s), sigma_at(lambda_s_1), eta)
        h_ = half_log_snr(sd) - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1)

        sd, su = get_ancestral_step(sigma_at(lambda_s), sigma_at(lambda_t), eta)
        h_ = half_log_snr(sd) - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def _sde_first_order(x, denoised, sigmas, i, eta):
    """The first-order part of a multistep SDE step sigma_i -> sigma_{i+1} in lambda = -log sigma;
    returns (x, h, h_eta, alpha_t) for the higher-order corrections."""
    lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
    h = lambda_t - lambda_s
    h_eta = h * (eta + 1)
    alpha_t = sigmas[i + 1] * lambda_t.exp()
    x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
    return x, h, h_eta, alpha_t


def _sde_step_noise(noise, sigmas, i, h, eta, s_noise):
    """The fresh noise of one multistep SDE step: sigma_{i+1} * sqrt(1 - exp(-2 h eta)) of a unit draw."""
    return noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise


@sampler("dpmpp_2m_sde_heun_gpu", solver_type="heun", cpu_tree=False)
@sampler("dpmpp_2m_sde_heun", solver_type="heun")
@sampler("dpmpp_2m_sde_gpu", cpu_tree=False)
@sampler("dpmpp_2m_sde")
def dpmpp_2m_sde(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None,
                 solver_type="midpoint", cpu_tree=True):
    """DPM-Solver++(2M) SDE: first order plus the 'midpoint' or 'heun' second-order correction from
    the previous denoised; lands on D at sigma 0."""
    if solver_type not in ("heun", "midpoint"):
        raise SamplerError(f"solver_type must be 'heun' or 'midpoint', not {solver_type!r}")
    noise = noise_sampler or brownian_noise_sampler(x, sigmas, seed, cpu=cpu_tree)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x, h, h_eta, alpha_t = _sde_first_order(x, denoised, sigmas, i, eta)
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + _sde_step_noise(noise, sigmas, i, h, eta, s_noise)
        old_denoised, h_last = denoised, h
    return x


@sampler("dpmpp_3m_sde_gpu", cpu_tree=False)
@sampler("dpmpp_3m_sde")
def dpmpp_3m_sde(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None, cpu_tree=True):
    """DPM-Solver++(3M) SDE: up to third order from the last two denoised values."""
    noise = noise_sampler or brownian_noise_sampler(x, sigmas, seed, cpu=cpu_tree)
    denoised_1, denoised_2, h, h_1, h_2 = None, None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x, h, h_eta, alpha_t = _sde_first_order(x, denoised, sigmas, i, eta)
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                x = x + (alpha_t * phi_2) * ((denoised - denoised_1) / (h_1 / h))
            if eta > 0 and s_noise > 0:
                x = x + _sde_step_noise(noise, sigmas, i, h, eta, s_noise)
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def er_sde_noise_scaler(x):
    """ER-SDE's default noise scale function (the paper's 'ER-SDE 5'): x * (exp(x^0.3) + 10)."""
    return x * ((x ** 0.3).exp() + 10.0)


@sampler("er_sde")
def er_sde(model, x, sigmas, *, seed, report, s_noise=1.0, noise_sampler=None, noise_scaler=None, max_stage=3):
    """Extended reverse-time SDE solver (VP ER-SDE-Solver-3, arXiv 2309.06169) in the time
    lambda_er = sigma / alpha (= sigma here): Euler stage plus up to two derivative stages whose
    integrals are 200-point Riemann sums."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    scaler = noise_scaler or er_sde_noise_scaler
    points = torch.arange(0, 200.0, dtype=torch.float32, device=x.device)
    er = sigma_at(half_log_snr(sigmas))  # sigma / alpha, computed as ComfyUI does
    old_denoised, old_denoised_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            er_s, er_t = er[i], er[i + 1]
            alpha_s, alpha_t = sigmas[i] / er_s, sigmas[i + 1] / er_t
            r = scaler(er_t) / scaler(er_s)
            x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = er_t - er_s
                step = -dt / 200.0
                pos = er_t + points * step
                scaled = scaler(pos)
                denoised_d = (denoised - old_denoised) / (er_s - er[i - 1])
                x = x + alpha_t * (dt + torch.sum(1 / scaled) * step * scaler(er_t)) * denoised_d
                if stage >= 3:
                    s_u = torch.sum((pos - er_s) / scaled) * step
                    denoised_u = (denoised_d - old_denoised_d) / ((er_s - er[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * scaler(er_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                spread = (er_t ** 2 - er_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x


@sampler("seeds_2")
def seeds_2(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, r=0.5, noise_sampler=None):
    """SEEDS-2 (arXiv 2305.14267): two stages, the noise of the first carried into the second."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = sigma_at(lambda_s_1)
        alpha_s_1, alpha_t = sigma_s_1 * lambda_s_1.exp(), sigmas[i + 1] * lambda_t.exp()

        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * h_phi_1(-r * h_eta) * denoised
        if inject:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1)

        denoised_d = torch.lerp(denoised, denoised_2, 1 / (2 * r))
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * h_phi_1(-h_eta) * denoised_d
        if inject:
            x = x + _carried_noise(sde_noise, noise, sigma_s_1, sigmas[i + 1], (r - 1) * h * eta) * sigmas[i + 1] * s_noise
    return x


def _carried_noise(sde_noise, noise, sigma_from, sigma_to, segment):
    """SEEDS' noise for the next stage: the previous stage's noise decayed by exp(segment), plus fresh
    noise for the rest of the variance."""
    return sde_noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise(sigma_from, sigma_to)


@sampler("seeds_3")
def seeds_3(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, r_1=1.0 / 3, r_2=2.0 / 3, noise_sampler=None):
    """SEEDS-3: three stages at lambda fractions r_1 and r_2 of the step."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1, lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = sigma_at(lambda_s_1), sigma_at(lambda_s_2)
        alpha_s_1, alpha_s_2 = sigma_s_1 * lambda_s_1.exp(), sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * h_phi_1(-r_1 * h_eta) * denoised
        if inject:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1)

        a3_2 = r_2 / r_1 * h_phi_2(-r_2 * h_eta)
        a3_1 = h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject:
            sde_noise = _carried_noise(sde_noise, noise, sigma_s_1, sigma_s_2, (r_1 - r_2) * h * eta)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2)

        b3 = h_phi_2(-h_eta) / r_2
        b1 = h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject:
            x = x + _carried_noise(sde_noise, noise, sigma_s_2, sigmas[i + 1], (r_2 - 1) * h * eta) * sigmas[i + 1] * s_noise
    return x
