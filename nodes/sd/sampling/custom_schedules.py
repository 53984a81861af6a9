"""Sigma schedules and sigma-list operations of ComfyUI's custom-sampling nodes: the parametric
schedules (polyexponential, VP, Laplace), SD-Turbo's, the tabulated 'Align Your Steps' and GITS
schedules, and split / flip / set-first / extend. Each returns a float32 tensor (SIGMAS)."""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .model_sampling import ModelSamplingEPS
from .schedulers import append_zero

# 'Align Your Steps' (Sabour et al. 2024): NVIDIA's published 10-step noise levels per model family.
AYS_NOISE_LEVELS = {
    "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}
GITS_COEFFICIENTS = [round(0.80 + 0.05 * k, 2) for k in range(15)]  # 0.80 .. 1.50


def sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """log sigma falls from log sigma_max to log sigma_min along ramp^rho (rho = 1: exponential)."""
    ramp = torch.linspace(1, 0, n) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def sigmas_vp(n: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous VP SDE's sigmas (Song et al. 2021) at t uniform from 1 to eps_s."""
    t = torch.linspace(1, eps_s, n)
    return append_zero(torch.sqrt(torch.special.expm1(beta_d * t ** 2 / 2 + beta_min * t)))


def sigmas_laplace(n: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """Laplace-distributed log sigma (Hang et al. 2024), clamped to [sigma_min, sigma_max]. As in
    ComfyUI, no final 0: sampling ends at the last (smallest) sigma."""
    x = torch.linspace(0, 1, n)
    lam = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.clamp(torch.exp(lam), min=sigma_min, max=sigma_max)


def sigmas_sd_turbo(ms: ModelSamplingEPS, steps: int, denoise: float) -> torch.Tensor:
    """SD-Turbo's timesteps 999, 899, ..., 99 (starting lower for denoise < 1), then 0."""
    start = 10 - int(10 * denoise)
    timesteps = torch.flip(torch.arange(1, 11) * 100 - 1, (0,))[start:start + steps]
    return append_zero(ms.sigma(timesteps))


def loglinear_interp(levels, count: int) -> np.ndarray:
    """Resample a decreasing list of sigmas to `count` points, linear in log sigma."""
    xs = np.linspace(0, 1, len(levels))
    ys = np.log(levels[::-1])
    return np.exp(np.interp(np.linspace(0, 1, count), xs, ys))[::-1].copy()


def _tabulated(levels, steps: int, denoise: float) -> torch.Tensor:
    """The last round(steps * denoise) steps of a tabulated schedule, ending in 0."""
    if denoise <= 0.0:
        return torch.FloatTensor([])
    total = round(steps * denoise) if denoise < 1.0 else steps
    sigmas = list(levels)[-(total + 1):]
    sigmas[-1] = 0
    return torch.FloatTensor(np.asarray(sigmas, dtype=np.float64))


def sigmas_align_your_steps(model_type: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    levels = AYS_NOISE_LEVELS[model_type]
    if steps + 1 != len(levels):
        levels = loglinear_interp(levels, steps + 1)
    return _tabulated(levels, steps, denoise)


@lru_cache(maxsize=1)
def _gits_table() -> dict:
    path = Path(__file__).with_name("data") / "gits_sigmas.json"
    return json.loads(path.read_text())["sigmas"]


def sigmas_gits(coeff: float, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """GITS (Chen et al. 2024): SD1 schedules optimized per coefficient for 2..20 steps; longer
    schedules interpolate the 20-step one."""
    key = f"{round(coeff, 2):.2f}"
    table = _gits_table()
    if key not in table:
        raise ValueError(f"GITS has schedules for coeff {', '.join(table)}; got {coeff}")
    levels = table[key][steps - 2] if steps <= 20 else loglinear_interp(table[key][-1], steps + 1)
    return _tabulated(levels, steps, denoise)


# -- operations on a SIGMAS list -------------------------------------------------------------------
def split_at_step(sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmas: the schedule up to and from `step` (both contain sigmas[step])."""
    return sigmas[:step + 1], sigmas[step:]


def split_at_denoise(sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmasDenoise: the last round(steps * denoise) steps go to the low part."""
    steps = max(sigmas.shape[-1] - 1, 0)
    low_steps = round(steps * denoise)
    return sigmas[:-low_steps], sigmas[-(low_steps + 1):]


def flip(sigmas: torch.Tensor) -> torch.Tensor:
    """FlipSigmas: reversed, with a leading 0 replaced by 0.0001 (sampling towards noise)."""
    if len(sigmas) == 0:
        return sigmas
    sigmas = sigmas.flip(0)
    if sigmas[0] == 0:
        sigmas[0] = 0.0001
    return sigmas


def set_first(sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
    sigmas = sigmas.clone()
    sigmas[0] = sigma
    return sigmas


def extend_intermediate(sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float,
                        spacing: str) -> torch.Tensor:
    """ExtendIntermediateSigmas: `steps - 1` extra sigmas inside every step whose start lies in
    [end_at_sigma, start_at_sigma] (start < 0: no upper bound), spaced linearly or along a quarter sine
    ('cosine': denser at the end, 'sine': denser at the start)."""
    if start_at_sigma < 0:
        start_at_sigma = float("inf")
    shapes = {"linear": lambda x: x, "cosine": lambda x: torch.sin(x * math.pi / 2),
              "sine": lambda x: 1 - torch.cos(x * math.pi / 2)}
    fractions = shapes[spacing](torch.linspace(0, 1, steps + 1, device=sigmas.device)[1:-1])
    out = []
    for current, following in zip(sigmas[:-1], sigmas[1:]):
        out.append(current)
        if end_at_sigma <= current <= start_at_sigma:
            out.extend((fractions * (following - current) + current).tolist())
    if len(sigmas) > 0:
        out.append(sigmas[-1])
    return torch.FloatTensor(out)
