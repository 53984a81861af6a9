"""Model sampling: a noise schedule (sigma table, sigma <-> UNet timestep) plus a parameterisation (what the
UNet predicts: eps, v, x0, ...), and the SD1 latent scale applied on the way into and out of sampling.

SD1 checkpoints are `ModelSamplingEPS` (discrete scaled-linear schedule, eps prediction); the
ModelSampling* patch nodes swap in the other combinations ComfyUI offers (v-prediction, LCM, x0,
zero terminal SNR, continuous EDM / V schedules) on a MODEL clone.
"""
from __future__ import annotations

import math

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


# ---------------------------------------------------------------------------------------------------
# Parameterisations: how the UNet's input is scaled and how its output becomes x0. Stateless; the
# model sampling they belong to is passed in (for sigma_data and, for LCM, the timestep).

class Prediction:
    """eps-prediction (SD1.x): UNet input x / sqrt(σ² + σ_data²), x0 = x − ε·σ."""

    name = "eps"

    def calculate_input(self, ms: "ModelSampling", sigma, x):
        sigma = _reshape_sigma(sigma, x.ndim)
        return x / (sigma ** 2 + ms.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, ms: "ModelSampling", sigma, out, x):
        return x - out * _reshape_sigma(sigma, x.ndim)


class VPrediction(Prediction):
    """v-prediction (Salimans & Ho 2022) in sigma form: x0 = x·σd²/(σ²+σd²) − v·σ·σd/sqrt(σ²+σd²)."""

    name = "v_prediction"
    sign = -1.0

    def calculate_denoised(self, ms, sigma, out, x):
        sigma, sd = _reshape_sigma(sigma, x.ndim), ms.sigma_data
        return x * sd ** 2 / (sigma ** 2 + sd ** 2) + self.sign * out * sigma * sd / (sigma ** 2 + sd ** 2) ** 0.5


class EDMPrediction(VPrediction):
    """Karras et al. (2022) preconditioning: the same as v with the output's sign flipped."""

    name = "edm"
    sign = 1.0


class X0Prediction(Prediction):
    """The UNet predicts x0 directly."""

    name = "x0"

    def calculate_denoised(self, ms, sigma, out, x):
        return out


class ImgToImgPrediction(X0Prediction):
    """x0-prediction whose UNet takes the noisy latent unscaled."""

    name = "img_to_img"

    def calculate_input(self, ms, sigma, x):
        return x


class LCMPrediction(Prediction):
    """Latent Consistency Models (Luo et al. 2023): x0 from eps, then the consistency boundary condition
    c_skip·x + c_out·x0 with σ_data 0.5 and the timestep scaled by 10."""

    name = "lcm"
    sigma_data = 0.5
    timestep_scaling = 10.0

    def calculate_denoised(self, ms, sigma, out, x):
        t = _reshape_sigma(ms.timestep(sigma), x.ndim) * self.timestep_scaling
        x0 = x - out * _reshape_sigma(sigma, x.ndim)
        c_skip = self.sigma_data ** 2 / (t ** 2 + self.sigma_data ** 2)
        c_out = t / (t ** 2 + self.sigma_data ** 2) ** 0.5
        return c_out * x0 + c_skip * x


PREDICTIONS: dict[str, Prediction] = {p.name: p for p in (
    Prediction(), VPrediction(), EDMPrediction(), X0Prediction(), ImgToImgPrediction(), LCMPrediction())}


# ---------------------------------------------------------------------------------------------------
# Schedules.

class ModelSampling:
    """A sigma schedule plus a parameterisation. Subclasses define the table and timestep(σ) / sigma(t);
    the parameterisation (`prediction`) defines calculate_input / calculate_denoised."""

    sigma_data = 1.0
    sigmas: torch.Tensor
    log_sigmas: torch.Tensor

    def __init__(self, prediction: str = "eps"):
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; expected one of {sorted(PREDICTIONS)}")
        self.prediction = PREDICTIONS[prediction]

    def _set_sigmas(self, sigmas: torch.Tensor) -> None:
        # float64 in, float32 table and log table out, as ComfyUI stores them
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def percent_to_sigma(self, percent: float) -> float:
        """Sampling progress (0 = start, 1 = end) -> sigma; used for start/end windows."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    # -- the parameterisation ----------------------------------------------------------------------
    def calculate_input(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.prediction.calculate_input(self, sigma, x)

    def calculate_denoised(self, sigma: torch.Tensor, eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.prediction.calculate_denoised(self, sigma, eps, x)

    def noise_scaling(self, sigma, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool = False):
        """Initial noising. At full denoise the variance-exploding x gets sqrt(1 + sigma^2) of noise,
        i.e. the latent is treated as a draw at sigma_max rather than added to."""
        sigma = _reshape_sigma(torch.as_tensor(sigma), noise.ndim)
        scale = torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else sigma
        return noise * scale + latent

    def inverse_noise_scaling(self, sigma, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prediction.name})"


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2023), "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1:
    shift and scale sqrt(ᾱ) so the last step has zero SNR and the first keeps its value. The last ᾱ is
    then set to 4.8973451890853435e-08 instead of 0 (as ComfyUI does), so σ_max is large but finite."""
    sqrt_abar = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar ** 2
    abar[-1] = 4.8973451890853435e-08
    return ((1.0 - abar) / abar) ** 0.5


class ModelSamplingDiscrete(ModelSampling):
    """LDM 'linear' (scaled-linear) betas over 1000 steps, sigma_t = sqrt((1 - abar_t) / abar_t).

    The table is built in float64 and stored as float32 (sigmas and log-sigmas), as ComfyUI does,
    so timestep lookups and interpolations round the same way. `zsnr` rescales it to zero terminal SNR.
    """

    def __init__(self, prediction: str = "eps", *, zsnr: bool = False, linear_start: float = 0.00085,
                 linear_end: float = 0.012, timesteps: int = 1000):
        super().__init__(prediction)
        self.zsnr = zsnr
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_zero_terminal_snr(sigmas)
            alphas_cumprod = 1.0 / (sigmas * sigmas + 1.0)
        self.alphas_cumprod = alphas_cumprod.float()
        self._set_sigmas(sigmas)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Index of the nearest log-sigma in the table, as a float tensor shaped like `sigma`."""
        sigma = torch.as_tensor(sigma)
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device).float()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Sigma for a (possibly fractional) timestep: log-linear interpolation between table entries."""
        timestep = torch.as_tensor(timestep)
        t = torch.clamp(timestep.float().to(self.log_sigmas.device), min=0, max=len(self.sigmas) - 1)
        return self._interpolate(t).to(timestep.device)

    def _interpolate(self, t: torch.Tensor) -> torch.Tensor:
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.prediction.name}{', zsnr' if self.zsnr else ''})"


class ModelSamplingEPS(ModelSamplingDiscrete):
    """What an SD1.x checkpoint is: the discrete schedule with eps prediction."""

    def __init__(self, linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000):
        super().__init__("eps", linear_start=linear_start, linear_end=linear_end, timesteps=timesteps)


class ModelSamplingDiscreteDistilled(ModelSamplingDiscrete):
    """The discrete schedule as an LCM distillation sees it: 50 of the 1000 steps (999, 979, ..., 19),
    timesteps mapped back to the full range (index·20 + 19)."""

    original_timesteps = 50

    def __init__(self, prediction: str = "lcm", *, zsnr: bool = False, **schedule):
        super().__init__(prediction, zsnr=zsnr, **schedule)
        full = self.sigmas
        self.skip_steps = len(full) // self.original_timesteps
        picked = full[len(full) - 1 - self.skip_steps * torch.arange(self.original_timesteps)].flip(0)
        self.sigmas, self.log_sigmas = picked.float(), picked.log().float()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        index = dists.abs().argmin(dim=0).view(sigma.shape)
        return (index * self.skip_steps + (self.skip_steps - 1)).to(sigma.device).float()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        timestep = torch.as_tensor(timestep)
        t = (timestep.float().to(self.log_sigmas.device) - (self.skip_steps - 1)) / self.skip_steps
        t = torch.clamp(t, min=0, max=len(self.sigmas) - 1)
        return self._interpolate(t).to(timestep.device)


class ModelSamplingContinuousEDM(ModelSampling):
    """A continuous log-uniform schedule between sigma_min and sigma_max (1000 table entries for the
    schedulers), UNet timestep 0.25·ln σ (Karras et al. 2022)."""

    def __init__(self, prediction: str = "eps", *, sigma_min: float = 0.002, sigma_max: float = 120.0,
                 sigma_data: float = 1.0):
        super().__init__(prediction)
        self.sigma_data = sigma_data
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        self.sigmas, self.log_sigmas = sigmas, sigmas.log()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return 0.25 * torch.as_tensor(sigma).log()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(timestep) / 0.25).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        log_min = math.log(self.sigma_min)
        return math.exp((math.log(self.sigma_max) - log_min) * (1.0 - percent) + log_min)


class ModelSamplingContinuousV(ModelSamplingContinuousEDM):
    """The continuous schedule of v-prediction models trained on t = (2/π)·atan σ."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(sigma).atan() / math.pi * 2

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return (torch.as_tensor(timestep) * math.pi / 2).tan()
