"""Deterministic one-step ODE solvers on the sigma axis: Euler (and ComfyUI's ddim, which is Euler),
Heun, Heun++ and DPM-Solver-2 (Karras et al. 2022, Algorithm 2, without churn)."""
from __future__ import annotations

from .samplers import sampler, to_d


@sampler("ddim")  # deterministic DDIM is the Euler step; ComfyUI's ddim differs only in inpaint noise
@sampler("euler")
def euler(model, x, sigmas, *, seed, report):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        report(i, x, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@sampler("heun")
def heun(model, x, sigmas, *, seed, report):
    """Each Euler step corrected with the slope at its end (trapezoid); plain Euler into sigma 0."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        report(i, x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
    return x


@sampler("heunpp2")
def heunpp2(model, x, sigmas, *, seed, report):
    """Heun++ (sd-webui-samplers-scheduler, MIT): the slopes at the next one or two sigmas are averaged
    in with weights sigma / (k * sigma_0), k = 2 or 3; Euler on the last step."""
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        report(i, x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
        if sigmas[i + 2] == s_end:
            w_2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w_2) + d_2 * w_2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2]))
            w_2, w_3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt
    return x


@sampler("dpm_2")
def dpm_2(model, x, sigmas, *, seed, report):
    """DPM-Solver-2 in Karras's form: the slope at the log-midpoint sigma drives the whole step."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x
