"""Ancestral samplers: a deterministic step down to sigma_down, then fresh Gaussian noise back up to
the next sigma. Noise comes from `noise_sampler` or, by default, ComfyUI's per-step generator
(noise.default_noise_sampler: one randn of x's shape per draw, seeded with the seed)."""
from __future__ import annotations

import numpy as np
import torch

from .noise import default_noise_sampler
from .samplers import get_ancestral_step, half_log_snr, sampler, sigma_at, to_d


@sampler("euler_ancestral")
def euler_ancestral(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    noise = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(i, x, sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i]) + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@sampler("dpm_2_ancestral")
def dpm_2_ancestral(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver-2 down to sigma_down, then noise up to sigma_{i+1}."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(i, x, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@sampler("dpmpp_2s_ancestral")
def dpmpp_2s_ancestral(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2S) (Lu et al. 2022): a data-prediction step through the log-midpoint down to
    sigma_down, then noise (skipped into sigma 0)."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(i, x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = half_log_snr(sigmas[i]), half_log_snr(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (sigma_at(s) / sigma_at(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, sigma_at(s))
            x = (sigma_at(t_next) / sigma_at(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@sampler("ddpm")
def ddpm(model, x, sigmas, *, seed, report, noise_sampler=None):
    """Ho et al. (2020) ancestral sampling, step by step in the variance-preserving form
    x_vp = x / sqrt(1 + sigma^2), alpha_bar = 1 / (1 + sigma^2)."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        report(i, x, sigma, denoised)
        eps = (x - denoised) / sigma
        abar, abar_next = 1 / (sigma * sigma + 1), 1 / (sigma_next * sigma_next + 1)
        alpha = abar / abar_next
        x = (1.0 / alpha).sqrt() * (x / torch.sqrt(1.0 + sigma ** 2.0) - (1 - alpha) * eps / (1 - abar).sqrt())
        if sigma_next > 0:
            x = x + ((1 - alpha) * (1.0 - abar_next) / (1.0 - abar)).sqrt() * noise(sigma, sigma_next)
            x = x * torch.sqrt(1.0 + sigma_next ** 2.0)
    return x


@sampler("lcm")
def lcm(model, x, sigmas, *, seed, report, noise_sampler=None):
    """Latent Consistency Model sampling: jump to D, then re-noise to the next sigma."""
    noise = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = model.sampling.noise_scaling(sigmas[i + 1], noise(sigmas[i], sigmas[i + 1]), x)
    return x


@sampler("lcm_upscale")
def lcm_upscale(model, x, sigmas, *, seed, report, resize, total_upscale=2.0, upscale_steps=None):
    """SamplerLCMUpscale: LCM steps that also enlarge the latent by `resize(x, width, height)`, up to
    total_upscale over the first upscale_steps steps (half the steps by default). ComfyUI draws this
    noise from torch's global generator, which its initial-noise draw left seeded with the seed: here
    a generator seeded with the seed skips that draw (on the CPU), so a run whose initial noise came
    from the same seed gets the same noise."""
    steps = max(len(sigmas) // 2 + 1, 2) if upscale_steps is None else min(upscale_steps + 1, len(sigmas) + 1)
    factors = np.linspace(1.0, total_upscale, steps)[1:]
    generator = torch.Generator(device=x.device).manual_seed(seed)
    if x.device.type == "cpu":
        torch.randn(x.shape, generator=generator)
    height, width = x.shape[-2:]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        x = denoised
        if i < len(factors):
            x = resize(x, round(width * factors[i]), round(height * factors[i]))
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
