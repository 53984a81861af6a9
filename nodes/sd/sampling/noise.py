"""Noise for the stochastic samplers, seeded the way ComfyUI seeds it.

A noise sampler is a callable (sigma, sigma_next) -> tensor shaped like x: the unit-variance
noise to inject when stepping from sigma to sigma_next."""
from __future__ import annotations

from typing import Callable

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def default_noise_sampler(x: torch.Tensor, seed: int | None) -> NoiseSampler:
    """Fresh N(0, 1) draws from one generator on x's device, seeded once with `seed`: one randn of
    x's full shape per call, as ComfyUI 0.3.64 draws per-step noise.

    On the CPU this generator starts exactly like the one that drew the initial noise, so the first
    per-step draw repeats the initial noise. That is ComfyUI 0.3.64's behaviour (its issue #9819,
    changed only in later versions) and the conformance cases pin it, so it is kept on purpose."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(x.size(), dtype=x.dtype, layout=x.layout,
                                                 device=x.device, generator=generator)


class BrownianTreeNoiseSampler:
    """Brownian-motion increments W(sigma_next) - W(sigma), normalised to unit variance.

    One torchsde.BrownianTree over [sigma_min, sigma_max] (the non-zero sigmas of the schedule),
    shaped like the whole batch x and seeded with `seed` (`entropy=seed`), as k-diffusion's
    BatchedBrownianTree does when handed a single integer seed (ComfyUI passes one). The tree lives on
    the CPU (cpu=True, the default) or on x's device (cpu=False: ComfyUI's `*_gpu` samplers, whose
    noise differs from the CPU tree's on a GPU and equals it on the CPU). Querying the same interval
    always gives the same increment, so the SDE samplers see noise consistent across step sizes."""

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: int | None = None, cpu: bool = True):
        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        self.sign = 1 if t0 < t1 else -1
        t0, t1 = min(t0, t1), max(t0, t1)
        if seed is None:
            seed = torch.randint(0, 2 ** 63 - 1, ()).item()
        w0 = torch.zeros_like(x).detach()
        self.cpu = cpu
        if cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.cpu(), t1.detach().cpu()
        import torchsde  # only the SDE samplers need it: kept out of every run's start-up

        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        device, dtype = sigma.device, sigma.dtype
        lo, hi, sign = (sigma, sigma_next, 1) if sigma < sigma_next else (sigma_next, sigma, -1)
        if self.cpu:
            lo, hi = lo.detach().cpu().float(), hi.detach().cpu().float()
        w = self.tree(lo, hi).to(device=device, dtype=dtype) * (self.sign * sign)
        return w / (sigma_next - sigma).abs().sqrt()


def brownian_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, seed: int | None, cpu: bool = True) -> NoiseSampler:
    """The tree the SDE samplers build: spanning the schedule's smallest non-zero and largest sigma."""
    return BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seed, cpu=cpu)
