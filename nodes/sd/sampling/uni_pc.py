"""UniPC (Zhao et al. 2023): multistep predictor (UniP) + corrector (UniC) in data (x0) prediction.

Run the way ComfyUI runs it: the state lives in variance-preserving form x_vp = alpha * x with
alpha = 1 / sqrt(1 + sigma^2) and std = alpha * sigma, the final sigma 0 is replaced by 0.001,
order = min(3, len(sigmas) - 2) with lower orders while warming up and on the final steps, the
corrector reuses the model output at the predicted point (no extra evaluation) and is skipped on the
last step. B(h) = h for 'bh1' (uni_pc) and expm1(h) for 'bh2' (uni_pc_bh2)."""
from __future__ import annotations

import torch

from .samplers import sampler

FINAL_SIGMA = 0.001


# Variance-preserving view of a sigma, written as ComfyUI's converter computes it (float32 rounding).
def _log_alpha(sigma):
    return 0.5 * torch.log(1 / (sigma * sigma + 1))


def _alpha(sigma):
    return torch.exp(_log_alpha(sigma))


def _std(sigma):
    return torch.sqrt(1.0 - torch.exp(2.0 * _log_alpha(sigma)))


def _lambda(sigma):
    log_alpha = _log_alpha(sigma)
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _bh_coefficients(hh, order, variant):
    """b_i = i! * phi_{i+1}(hh) / B(hh) for i = 1..order, where h*phi_1 = expm1(hh) and
    phi_{k+1} = (phi_k - 1/k!) / hh; done in float64 because the terms nearly cancel for small hh."""
    hh64 = hh.detach().cpu().double()
    b_h = hh64 if variant == "bh1" else torch.expm1(hh64)
    phi, factorial, b = torch.expm1(hh64) / hh64 - 1, 1, []
    for i in range(1, order + 1):
        b.append(phi * factorial / b_h)
        factorial *= i + 1
        phi = phi / hh64 - 1 / factorial
    return torch.tensor(b, dtype=hh.dtype, device=hh.device)


def _update(data_pred, x, m_prev, t_prev, t, order, variant, use_corrector):
    """One UniP step from t_prev[-1] to t (optionally followed by UniC). Returns (x_t, model_t):
    model_t is the data prediction at the *predicted* x_t, which the next step reuses."""
    lambda_0, lambda_t = _lambda(t_prev[-1]), _lambda(t)
    m0 = m_prev[-1]
    h = lambda_t - lambda_0
    rks = [(_lambda(t_prev[-(k + 1)]) - lambda_0) / h for k in range(1, order)]
    d1s = [(m_prev[-(k + 1)] - m0) / rk for k, rk in enumerate(rks, start=1)]
    rks = torch.tensor([float(rk) for rk in rks] + [1.0], dtype=x.dtype, device=x.device)

    hh = -h  # data prediction integrates in -lambda
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    b = _bh_coefficients(hh, order, variant).to(x.dtype)
    R = torch.stack([rks ** (i - 1) for i in range(1, order + 1)])
    alpha_t = _alpha(t)

    x_t_ = _std(t) / _std(t_prev[-1]) * x - alpha_t * torch.expm1(hh) * m0
    d1s = torch.stack(d1s, dim=1) if d1s else None
    if d1s is None:
        x_t = x_t_
    else:
        rhos_p = torch.tensor([0.5], dtype=x.dtype, device=x.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
        x_t = x_t_ - alpha_t * b_h * torch.tensordot(d1s, rhos_p, dims=([1], [0]))
    if not use_corrector:
        return x_t, None

    model_t = data_pred(x_t, t)
    rhos_c = torch.tensor([0.5], dtype=x.dtype, device=x.device) if order == 1 else torch.linalg.solve(R, b)
    corr = 0 if d1s is None else torch.tensordot(d1s, rhos_c[:-1], dims=([1], [0]))
    return x_t_ - alpha_t * b_h * (corr + rhos_c[-1] * (model_t - m0)), model_t


def _unipc(model, x, sigmas, *, report, variant):
    ts = sigmas.clone()
    if ts[-1] == 0:
        ts[-1] = FINAL_SIGMA
    steps = len(ts) - 1
    order = min(3, len(ts) - 2)

    def data_pred(x_vp, sigma):
        # k-diffusion denoiser on the VE input, re-expressed as eps and then as x0 in VP terms
        x_ve = x_vp * (sigma ** 2 + 1.0) ** 0.5
        eps = (x_ve - model(x_ve, sigma)) / sigma
        return (x_vp - _std(sigma) * eps) / _alpha(sigma)

    x = x / torch.sqrt(1.0 + ts[0] ** 2.0)
    m_prev, t_prev = [data_pred(x, ts[0])], [ts[0]]
    report(0, x / _alpha(ts[0]), sigmas[0], m_prev[-1])
    # With a single step ComfyUI's order is 0 and its loop never updates x: the (scaled) input comes
    # back unchanged. Reproduced on purpose; see docs/sampling.md.
    for step in range(1, steps + 1 if order > 0 else 1):
        step_order = min(order, step, steps + 1 - step)
        x, model_x = _update(data_pred, x, m_prev, t_prev, ts[step], step_order, variant,
                             use_corrector=step < steps)
        if step < steps:
            m_prev = (m_prev + [model_x if model_x is not None else data_pred(x, ts[step])])[-order:]
            t_prev = (t_prev + [ts[step]])[-order:]
            report(step, x / _alpha(ts[step]), sigmas[step], m_prev[-1])
    return x / _alpha(ts[-1])


@sampler("uni_pc")
def uni_pc(model, x, sigmas, *, seed, report):
    return _unipc(model, x, sigmas, report=report, variant="bh1")


@sampler("uni_pc_bh2")
def uni_pc_bh2(model, x, sigmas, *, seed, report):
    return _unipc(model, x, sigmas, report=report, variant="bh2")
