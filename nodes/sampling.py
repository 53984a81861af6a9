"""KSampler and KSamplerAdvanced: denoise a latent with a model and positive/negative conditioning.

The pipeline itself (noise, sigmas, CFG, samplers) lives in nodes.sd.sampling; these nodes put the
model on its device with its patches applied, report progress every step and poll for cancellation.
`running_model`, `check_latent` and `StepProgress` are shared with the custom-sampling nodes."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from nodegraph import Combo, Float, Input, Int, Node, NodeInputError, Output, ProgressBar, check_cancelled

from .sd import memory_limits
from .sd.compiled_unet import unet_caller
from .sd.concat_inputs import concat_inputs
from .sd.sampling import SAMPLER_NAMES, SCHEDULER_NAMES, SamplerError
from .sd.sampling.ksampler import sample
from .sd.sampling.model_sampling import ModelSampling, process_latent_out
from .sd.device import cpu_threads, latent_positions
from .sd.previews import latent_to_preview

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def model_sampling_of(model) -> ModelSampling:
    """The noise schedule a MODEL samples with (SD1's discrete EPS schedule unless a model-sampling
    node replaced it)."""
    return model.model_sampling


def check_latent(model, samples: torch.Tensor, input_name: str = "latent_image") -> None:
    channels = model.model.config.out_channels
    if samples.ndim != 4 or samples.shape[1] != channels:
        raise NodeInputError(input_name, f"this model takes latents with {channels} channels "
                                         f"[B, {channels}, h, w], got shape {tuple(samples.shape)}")
    memory_limits.require_for_sampling(model, samples, input_name)  # refuse before allocating anything


@contextmanager
def running_model(model, samples: torch.Tensor, noise_mask: torch.Tensor | None, positive: list | None):
    """The MODEL on its device with its weight patches applied, as model_fn(x_in, timesteps, context,
    control, patch_context) -> the UNet's output in float32; an inpainting / pix2pix UNet also gets its
    extra input channels. (The MODEL's sampling options act through the denoiser, see cfg.py.)"""
    working = memory_limits.sampling_bytes(model, samples)  # room the device memory manager keeps on a GPU
    with torch.inference_mode(), model.applied(working=working) as unet, \
            cpu_threads(unet, latent_positions(samples)):
        dtype = model.model_dtype()
        device = model.load_device
        concat = inpaint_concat(unet.config.in_channels, samples, noise_mask, positive)
        call = unet_caller(unet, model.patches_uuid)  # the UNet itself unless --compile

        def model_fn(x, timesteps, context, control=None, patch_context=None):
            if concat is not None:  # an inpainting UNet also sees the mask and the masked image
                extra = concat.to(x.device, x.dtype)
                x = torch.cat([x, extra.repeat(x.shape[0] // extra.shape[0], 1, 1, 1)], dim=1)
            return call(x.to(dtype), timesteps.to(device), context.to(device, dtype), control=control,
                        patch_context=patch_context).float()

        yield model_fn


class StepProgress:
    """The per-step callback: progress with a preview, and the last denoised x0 (SamplerCustom's
    denoised_output)."""

    def __init__(self, steps: int):
        self.bar, self.x0 = ProgressBar(steps), None

    def __call__(self, step, x0, x, total):
        self.x0 = x0
        self.bar.update_absolute(step + 1, total, latent_to_preview(x0))

    def denoised_latent(self) -> torch.Tensor | None:
        return None if self.x0 is None else process_latent_out(self.x0.float().cpu())


def run_sampler(model, latent: dict, *, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                positive: list, negative: list, denoise: float = 1.0, disable_noise: bool = False,
                start_step: int | None = None, last_step: int | None = None,
                force_full_denoise: bool = False) -> dict:
    samples = latent["samples"]
    check_latent(model, samples)
    progress = StepProgress(steps)
    with running_model(model, samples, latent.get("noise_mask"), positive) as model_fn:
        try:
            out = sample(model_fn, model_sampling_of(model), samples.to(model.load_device), seed=seed, steps=steps,
                         cfg=cfg, sampler_name=sampler_name, scheduler=scheduler, positive=positive,
                         negative=negative, denoise=denoise, noise_mask=latent.get("noise_mask"),
                         disable_noise=disable_noise, start_step=start_step, last_step=last_step,
                         force_full_denoise=force_full_denoise, batch_index=latent.get("batch_index"),
                         callback=progress, cancel=check_cancelled, options=model.options)
        except SamplerError as exc:
            raise NodeInputError("sampler_name", f"{sampler_name} cannot run here: {exc}") from None
    return {**latent, "samples": out.cpu()}


def inpaint_concat(in_channels: int, samples: torch.Tensor, noise_mask: torch.Tensor | None,
                   conditioning: list | None = None) -> torch.Tensor | None:
    """The extra input channels of an inpainting (9) or InstructPix2Pix (8) UNet; None for 4-channel UNets
    (nodes.sd.concat_inputs; `conditioning` is the positive, whose concat options win)."""
    return concat_inputs(in_channels, samples, noise_mask, conditioning)


class KSampler(Node):
    """Uses the provided model, positive and negative conditioning to denoise the latent image."""
    category = "sampling"
    inputs = (
        Input("model", "MODEL", tooltip="The model used for denoising the input latent."),
        Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True,
            tooltip="The random seed used for creating the noise."),
        Int("steps", 20, min=1, max=10000, tooltip="The number of steps used in the denoising process."),
        Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01,
              tooltip="Classifier-free guidance: how closely to follow the prompt."),
        Combo("sampler_name", SAMPLER_NAMES, tooltip="The sampling algorithm."),
        Combo("scheduler", SCHEDULER_NAMES, tooltip="How noise is removed over the steps."),
        Input("positive", "CONDITIONING", tooltip="What to include in the image."),
        Input("negative", "CONDITIONING", tooltip="What to exclude from the image."),
        Input("latent_image", "LATENT", tooltip="The latent image to denoise."),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01,
              tooltip="How much of the latent is replaced: lower values keep more of the input (img2img)."),
    )
    outputs = (Output("LATENT", tooltip="The denoised latent."),)

    def run(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0):
        return (run_sampler(model, latent_image, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
                            scheduler=scheduler, positive=positive, negative=negative, denoise=denoise),)


class KSamplerAdvanced(Node):
    """KSampler with control over noise and the range of steps (for multi-pass sampling)."""
    display_name = "KSampler (Advanced)"
    category = "sampling"
    inputs = (
        Input("model", "MODEL"), Combo("add_noise", ["enable", "disable"]),
        Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
        Int("steps", 20, min=1, max=10000), Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        Combo("sampler_name", SAMPLER_NAMES), Combo("scheduler", SCHEDULER_NAMES),
        Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"), Input("latent_image", "LATENT"),
        Int("start_at_step", 0, min=0, max=10000), Int("end_at_step", 10000, min=0, max=10000),
        Combo("return_with_leftover_noise", ["disable", "enable"]),
    )
    outputs = (Output("LATENT"),)

    def run(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, start_at_step, end_at_step, return_with_leftover_noise):
        return (run_sampler(model, latent_image, seed=noise_seed, steps=steps, cfg=cfg, sampler_name=sampler_name,
                            scheduler=scheduler, positive=positive, negative=negative, denoise=1.0,
                            disable_noise=add_noise == "disable", start_step=start_at_step, last_step=end_at_step,
                            force_full_denoise=return_with_leftover_noise != "enable"),)


NODE_CLASS_MAPPINGS = {"KSampler": KSampler, "KSamplerAdvanced": KSamplerAdvanced}
