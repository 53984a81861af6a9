"""Sampling for SD1.x: the EPS noise schedule, sigma schedules, every ComfyUI sampler (one module per
family), classifier-free guidance and guiders over CONDITIONING lists, and the pipeline that ties them
together for KSampler and the custom-sampling nodes.

Numerics follow ComfyUI (see docs/sampling.md) so that the same seed gives the same image.
"""
from .model_sampling import SD1_LATENT_SCALE, ModelSamplingEPS, process_latent_in, process_latent_out
from .schedulers import SCHEDULERS, SCHEDULER_NAMES, calculate_sigmas, slice_for_advanced
from .samplers import SAMPLERS, SAMPLER_NAMES, SamplerError
from .cfg import CFGDenoiser, ControlProvider, InpaintDenoiser
from .ksampler import SamplerSpec, guided_sample, prepare_noise, sample

__all__ = [
    "SD1_LATENT_SCALE", "ModelSamplingEPS", "process_latent_in", "process_latent_out",
    "SCHEDULERS", "SCHEDULER_NAMES", "calculate_sigmas", "slice_for_advanced",
    "SAMPLERS", "SAMPLER_NAMES", "SamplerError",
    "CFGDenoiser", "ControlProvider", "InpaintDenoiser",
    "SamplerSpec", "guided_sample", "prepare_noise", "sample",
]
