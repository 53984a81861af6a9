"""SA-Solver (Xue et al., NeurIPS 2023, arXiv 2309.05019): a stochastic Adams predictor-corrector in
data prediction and lambda = -log sigma, with stochasticity tau inside a sigma window. `sa_solver`
runs predict-correct (PEC), `sa_solver_pece` re-evaluates the corrected state (PECE)."""
from __future__ import annotations

from typing import Callable

import torch

from .noise import default_noise_sampler
from .samplers import half_log_snr, sampler


def tau_window(start_sigma: float, end_sigma: float, eta: float = 1.0) -> Callable:
    """tau(sigma) = eta inside [end_sigma, start_sigma], else 0 (an ODE step); eta <= 0 is all ODE."""
    def tau(sigma) -> float:
        if eta <= 0:
            return 0.0
        sigma = float(sigma)
        return eta if start_sigma >= sigma >= end_sigma else 0.0
    return tau


def _exponential_moments(s, t, order: int, tau: float) -> torch.Tensor:
    """E_p = m * integral_s^t exp(m (x - t)) x^p dx for p < order, m = 1 + tau^2, by parts:
    E_p = (t^p - s^p exp(-m h)) - (p / m) E_{p-1}."""
    m, decay = 1 + tau ** 2, torch.exp(-(1 + tau ** 2) * (t - s))
    moments = []
    for p in range(order):
        e = t ** p - s ** p * decay
        if p:
            e = e - (p / m) * moments[-1]
        moments.append(e)
    return torch.stack(moments)


def adams_coefficients(sigma_next, lambdas, lambda_s, lambda_t, tau: float, simple_order_2: bool = False,
                       corrector: bool = False) -> torch.Tensor:
    """The weights b_k of the stored predictions (oldest first) for a step lambda_s -> lambda_t: the
    exponentially weighted integrals of the Lagrange basis on `lambdas` (eqs. 15 and 18), times
    alpha_t. simple_order_2 uses the paper's closed form for two points (Appendix D)."""
    m, h = 1 + tau ** 2, lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    if simple_order_2 and len(lambdas) == 2:
        if corrector:
            b_new = alpha_t * (0.5 * m * h)
            b_old = alpha_t * (-h * m).expm1().neg() - b_new
        else:
            b_old = alpha_t * (0.5 * m * h ** 2) / (lambdas[-2] - lambda_s)
            b_new = alpha_t * (-h * m).expm1().neg() - b_old
        return torch.stack([b_old, b_new])
    vandermonde_t = torch.vander(lambdas, len(lambdas), increasing=True).T
    return alpha_t * torch.linalg.solve(vandermonde_t, _exponential_moments(lambda_s, lambda_t, len(lambdas), tau))


def _combine(predictions: list, weights: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(torch.stack(predictions, dim=1), weights.to(predictions[0]), dims=([1], [0]))


@sampler("sa_solver_pece", use_pece=True)
@sampler("sa_solver")
def sa_solver(model, x, sigmas, *, seed, report, tau_func=None, s_noise=1.0, noise_sampler=None,
              predictor_order=3, corrector_order=4, use_pece=False, simple_order_2=False):
    noise_draw = noise_sampler or default_noise_sampler(x, seed)
    if tau_func is None:  # stochastic between 20 % and 80 % of sampling
        tau_func = tau_window(model.sampling.percent_to_sigma(0.2), model.sampling.percent_to_sigma(0.8))
    lambdas = half_log_snr(sigmas)
    keep = max(predictor_order, corrector_order)
    lower_order_to_end = sigmas[-1].item() == 0
    x_pred, h, tau, noise, predictions = x, 0.0, 0.0, 0.0, []
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i])
        report(i, x_pred, sigmas[i], denoised)
        predictions = (predictions + [denoised])[-keep:]
        p_order = min(predictor_order, len(predictions))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(predictions))
        if lower_order_to_end:
            p_order, c_order = min(p_order, len(sigmas) - 2 - i), min(c_order, len(sigmas) - 1 - i)

        if c_order == 0:
            x = x_pred
        else:  # corrector: the step i-1 -> i again, now including the prediction at i
            b = adams_coefficients(sigmas[i], lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i], tau,
                                   simple_order_2, corrector=True)
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + _combine(predictions[-c_order:], b)
            if tau > 0 and s_noise > 0:
                x = x + noise  # the predictor's noise of that step
            if use_pece:
                denoised = model(x, sigmas[i])
                predictions[-1] = denoised

        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:  # predictor: the step i -> i+1
            tau = tau_func(sigmas[i + 1])
            b = adams_coefficients(sigmas[i + 1], lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1], tau,
                                   simple_order_2)
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x + _combine(predictions[-p_order:], b)
            if tau > 0 and s_noise > 0:
                noise = noise_draw(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * tau ** 2 * h).expm1().neg().sqrt() * s_noise
                x_pred = x_pred + noise
    return x_pred
