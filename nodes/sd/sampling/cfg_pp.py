"""CFG++ samplers (Chung et al. 2024, arXiv 2406.08070): the step re-noises along the unconditional
prediction instead of the guided one, which keeps samples on the data manifold at low guidance
scales. They need the CFG denoiser's unconditional x0 (model.uncond, see samplers.sampler's
uses_uncond) and always run the unconditional pass, even at cfg 1. RES multistep and gradient
estimation have their CFG++ forms in multistep.py."""
from __future__ import annotations

import torch

from .noise import default_noise_sampler
from .samplers import get_ancestral_step, half_log_snr, sampler, sigma_at, to_d


@sampler("euler_cfg_pp", uses_uncond=True, eta=0.0, s_noise=0.0)
@sampler("euler_ancestral_cfg_pp", uses_uncond=True)
def euler_ancestral_cfg_pp(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    """A DDIM-style step: x = alpha_t * D_cfg + sigma_down * eps_uncond, then ancestral noise (none for
    euler_cfg_pp); lands on D at sigma 0."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * half_log_snr(sigmas[i]).exp()
        alpha_t = sigmas[i + 1] * half_log_snr(sigmas[i + 1]).exp()
        d = to_d(x, sigmas[i], alpha_s * model.uncond)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta)
        x = alpha_t * denoised + alpha_t * sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@sampler("dpmpp_2s_ancestral_cfg_pp", uses_uncond=True)
def dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2S) ancestral whose exponential steps start from x shifted by the guidance
    difference D_cfg - D_uncond of the latest model call."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(i, x, sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], model.uncond) * sigma_down
        else:
            t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_at(s) / sigma_at(t)) * (x + (denoised - model.uncond)) - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, sigma_at(s))
            # model.uncond is now the one at x_2, as in ComfyUI 0.3.64
            x = (sigma_at(t_next) / sigma_at(t)) * (x + (denoised - model.uncond)) - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@sampler("dpmpp_2m_cfg_pp", uses_uncond=True)
def dpmpp_2m_cfg_pp(model, x, sigmas, *, seed, report):
    """DPM-Solver++(2M) with the exponential decay applied to the unconditional prediction."""
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
        h = t_next - t
        mix = -torch.exp(-h) * model.uncond
        if old_uncond is not None and sigmas[i + 1] != 0:
            r = (t - half_log_snr(sigmas[i - 1])) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = model.uncond
    return x


@sampler("euler_pp", uses_uncond=True)
def euler_pp(model, x, sigmas, *, seed, report):
    """SamplerEulerCFG++'s 'alternative' version: Euler along (x - 2 D_cfg + D_uncond) / sigma."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x - denoised + model.uncond, sigmas[i], denoised)
        report(i, x, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x
