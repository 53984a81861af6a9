"""The SD1.x discrete noise schedule in k-diffusion's sigma form (EPS prediction),
and the latent scale applied on the way into and out of sampling."""
from __future__ import annotations

import torch

SD1_LATENT_SCALE = 0.18215


def process_latent_in(latent: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent -> the space the UNet was trained in."""
    return latent * SD1_LATENT_SCALE


def process_latent_out(latent: torch.Tensor) -> torch.Tensor:
    return latent / SD1_LATENT_SCALE


def _reshape_sigma(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    # a per-batch sigma [B] broadcast against [B, C, H, W]; a 0-d sigma broadcasts as is
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1)) if sigma.ndim else sigma


class ModelSamplingEPS:
    """LDM 'linear' (scaled-linear) betas over 1000 steps, sigma_t = sqrt((1 - abar_t) / abar_t).

    The table is built in float64 and stored as float32 (sigmas and log-sigmas), as ComfyUI does,
    so timestep lookups and interpolations round the same way.
    """

    sigma_data = 1.0

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000):
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.alphas_cumprod = alphas_cumprod.float()
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Index of the nearest log-sigma in the table, as a float tensor shaped like `sigma`."""
        sigma = torch.as_tensor(sigma)
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device).float()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma for a (possibly fractional) timestep: log-linear interpolation between table entries."""
        timestep = torch.as_tensor(timestep)
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigma = (1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sampling progress (0 = start, 1 = end) -> sigma; used for start/end windows."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        sigma = _reshape_sigma(sigma, x.ndim)
        return x / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma: torch.Tensor, eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x - eps * _reshape_sigma(sigma, x.ndim)

    def noise_scaling(self, sigma, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False):
        """Initial noising. At full denoise the variance-exploding x gets sqrt(1 + sigma^2) of noise,
        i.e. the latent is treated as a draw at sigma_max rather than added to."""
        sigma = _reshape_sigma(torch.as_tensor(sigma), noise.ndim)
        scale = torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else sigma
        return noise * scale + latent

    def inverse_noise_scaling(self, sigma, latent: torch.Tensor) -> torch.Tensor:
        return latent
