"""k-diffusion-style samplers. Each one solves the probability-flow ODE (or its SDE) in
Karras's sigma form, x = x0 + sigma * eps, given a denoiser D(x, sigma) -> x0.

Public contract (what SAMPLERS holds):
    fn(denoiser, x, sigmas, *, seed, callback=None, cancel=None, **options) -> x
`denoiser(x, sigma_batch)` returns the denoised x0; `callback` gets {"i", "x", "sigma",
"sigma_hat", "denoised"} once per step; `cancel()` is polled once per step and aborts by raising.
The loops are written against a simpler inner contract set up by `@sampler`: `model(x, sigma)`
with a scalar sigma, and `report(i, x, sigma, denoised)` for the per-step hook."""
from __future__ import annotations

import functools

import torch
from scipy import integrate

from .noise import brownian_noise_sampler, default_noise_sampler

SAMPLERS: dict = {}


def sampler(*names):
    """Register a sampler loop under `names`, wrapping it into the public contract."""
    def register(loop):
        @functools.wraps(loop)
        @torch.no_grad()
        def run(denoiser, x, sigmas, *, seed, callback=None, cancel=None, **options):
            if len(sigmas) <= 1:
                return x

            def model(x, sigma):
                return denoiser(x, sigma * x.new_ones([x.shape[0]]))

            def report(i, x, sigma, denoised, sigma_hat=None):
                if cancel is not None:
                    cancel()
                if callback is not None:
                    callback({"i": i, "x": x, "sigma": sigma,
                              "sigma_hat": sigma if sigma_hat is None else sigma_hat, "denoised": denoised})

            return loop(model, x, sigmas, seed=seed, report=report, **options)

        for name in names:
            SAMPLERS[name] = run
        return run
    return register


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
    """lambda = log(alpha / sigma) = -log(sigma) for the variance-exploding EPS form."""
    return sigma.log().neg()


@sampler("euler", "ddim")
def euler(model, x, sigmas, *, seed, report):
    """Karras et al. (2022) Algorithm 2 with no churn; DDIM with eta = 0 is the same update."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = to_d(x, sigmas[i], denoised)
        report(i, x, sigmas[i], denoised)
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


@sampler("euler_ancestral")
def euler_ancestral(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    """Euler down to sigma_down, then add fresh noise back up to sigma_{i+1}."""
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


@sampler("heun")
def heun(model, x, sigmas, *, seed, report):
    """Karras et al. (2022) Algorithm 2: trapezoidal correction of each Euler step (Euler to sigma 0)."""
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


@sampler("dpm_2")
def dpm_2(model, x, sigmas, *, seed, report):
    """DPM-Solver-2 in Karras's form: the derivative at the log-midpoint sigma drives the full step."""
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


@sampler("dpm_2_ancestral")
def dpm_2_ancestral(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver-2 down to sigma_down, then fresh noise up to sigma_{i+1}."""
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


def linear_multistep_coeff(order, t, i, j):
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial for node t_{i-j}."""
    def basis(tau):
        prod = 1.0
        for k in range(order):
            if k != j:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@sampler("lms")
def lms(model, x, sigmas, *, seed, report, order=4):
    """Linear multistep (Adams-Bashforth on the sigma axis) over the last `order` derivatives."""
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        report(i, x, sigmas[i], denoised)
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
        x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@sampler("dpmpp_2m_sde")
def dpmpp_2m_sde(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2M) SDE, midpoint variant, with Brownian-tree noise; last step returns D."""
    noise = noise_sampler or brownian_noise_sampler(x, sigmas, seed)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        report(i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = half_log_snr(sigmas[i]), half_log_snr(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()  # = 1 in the VE form; kept for ComfyUI's rounding
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


@sampler("dpmpp_sde")
def dpmpp_sde(model, x, sigmas, *, seed, report, eta=1.0, s_noise=1.0, r=0.5, noise_sampler=None):
    """DPM-Solver++ SDE, single-step second order: an ancestral half step to lambda_s + r*h, then
    the full step with the blended denoiser, each with Brownian-tree noise."""
    noise = noise_sampler or brownian_noise_sampler(x, sigmas, seed)
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
        sigma_s_1 = lambda_s_1.neg().exp()
        alpha_s, alpha_s_1, alpha_t = sigmas[i] * lambda_s.exp(), sigma_s_1 * lambda_s_1.exp(), sigmas[i + 1] * lambda_t.exp()

        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + alpha_s_1 * noise(sigmas[i], sigma_s_1) * s_noise * su
        denoised_2 = model(x_2, sigma_s_1)

        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
        h_ = sd.log().neg() - lambda_s
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * su
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
            x = noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
    return x


from . import uni_pc  # noqa: E402,F401  (registers uni_pc / uni_pc_bh2)

# ComfyUI's KSampler.SAMPLERS order, restricted to the samplers implemented here.
_COMFY_ORDER = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]
SAMPLER_NAMES = [name for name in _COMFY_ORDER if name in SAMPLERS]
