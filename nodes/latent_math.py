"""Latent arithmetic: add, subtract, multiply, interpolate (per-pixel direction and length), and
latent operations (tone-map, sharpen) applied to a latent (LatentApplyOperation) or to the guidance
of each sampling step (LatentApplyOperationCFG, a pre-CFG hook on a MODEL clone). Same names, inputs and
results as ComfyUI's; a second latent of another size is resized bilinearly (centre crop) and its
batch repeated to the first's, as ComfyUI does."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from nodegraph import Float, Input, Int, Node, NodeInputError, Output

from .image_ops import gaussian_kernel, repeat_to_batch_size, upscale

LatentOperation = Callable[..., torch.Tensor]  # operation(latent=[B, C, H, W]) -> same shape


def reshape_like(target: torch.Tensor, latent: torch.Tensor, repeat_batch: bool = True) -> torch.Tensor:
    """`latent` at the size of `target` (bilinear, centre crop) and, by default, with its batch size."""
    if latent.ndim != target.ndim or latent.shape[1] != target.shape[1]:
        raise NodeInputError("samples2", f"latents of shapes {tuple(target.shape)} and {tuple(latent.shape)} have "
                                         f"different channel counts (from different model families?)")
    if latent.shape[1:] != target.shape[1:]:
        latent = upscale(latent, target.shape[-1], target.shape[-2], "bilinear", "center")
    latent = latent.to(target)
    return repeat_to_batch_size(latent, target.shape[0]) if repeat_batch else latent


class LatentAdd(Node):
    category = "latent/advanced"
    inputs = (Input("samples1", "LATENT"), Input("samples2", "LATENT"))
    outputs = (Output("LATENT"),)

    def run(self, samples1, samples2):
        a = samples1["samples"]
        return ({**samples1, "samples": a + reshape_like(a, samples2["samples"])},)


class LatentSubtract(Node):
    category = "latent/advanced"
    inputs = (Input("samples1", "LATENT"), Input("samples2", "LATENT"))
    outputs = (Output("LATENT"),)

    def run(self, samples1, samples2):
        a = samples1["samples"]
        return ({**samples1, "samples": a - reshape_like(a, samples2["samples"])},)


class LatentMultiply(Node):
    category = "latent/advanced"
    inputs = (Input("samples", "LATENT"), Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01))
    outputs = (Output("LATENT"),)

    def run(self, samples, multiplier):
        return ({**samples, "samples": samples["samples"] * multiplier},)


def _direction_and_length(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per latent pixel: the unit channel vector [B, C, H, W] (0 where the length is 0) and the
    length [B, 1, H, W]."""
    length = torch.linalg.vector_norm(latent, dim=1, keepdim=True)
    return torch.nan_to_num(latent / length), length


class LatentInterpolate(Node):
    """Per latent pixel, mixes the two channel vectors' directions and lengths separately:
    ratio 1 gives samples1, 0 gives samples2."""
    category = "latent/advanced"
    inputs = (Input("samples1", "LATENT"), Input("samples2", "LATENT"),
              Float("ratio", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("LATENT"),)

    def run(self, samples1, samples2, ratio):
        a = samples1["samples"]
        b = reshape_like(a, samples2["samples"])
        # ComfyUI divides [B, C, H, W] by [B, H, W] norms, which is per pixel for a single latent
        # (its broadcast mixes batch items when B == C, and fails for other batch sizes); the
        # per-pixel rule is applied to every item here.
        da, la = _direction_and_length(a)
        db, lb = _direction_and_length(b)
        direction, _ = _direction_and_length(da * ratio + db * (1.0 - ratio))
        return ({**samples1, "samples": direction * (la * ratio + lb * (1.0 - ratio))},)


class LatentApplyOperation(Node):
    category = "latent/advanced/operations"
    experimental = True
    inputs = (Input("samples", "LATENT"), Input("operation", "LATENT_OPERATION"))
    outputs = (Output("LATENT"),)

    def run(self, samples, operation):
        return ({**samples, "samples": operation(latent=samples["samples"])},)


class LatentApplyOperationCFG(Node):
    """Applies a latent operation to the guidance of every sampling step: the cond prediction becomes
    uncond + operation(cond - uncond), before CFG scales the difference."""
    category = "latent/advanced/operations"
    experimental = True
    inputs = (Input("model", "MODEL"), Input("operation", "LATENT_OPERATION"))
    outputs = (Output("MODEL"),)

    def run(self, model, operation):
        def pre_cfg(step):
            uncond = step.uncond_denoised  # zeros when cfg 1 skips the negative, as ComfyUI
            return operation(latent=step.cond_denoised - uncond) + uncond, uncond
        return (model.with_options(model.options.with_pre_cfg(pre_cfg, source="LatentApplyOperationCFG")),)


def tonemap_reinhard(multiplier: float) -> LatentOperation:
    """Reinhard tone-mapping of each latent pixel's vector length, scaled so that lengths up to
    (mean + 5 std) * multiplier of the image are compressed smoothly; directions are kept."""
    def operation(latent: torch.Tensor, **_) -> torch.Tensor:
        length = (torch.linalg.vector_norm(latent, dim=1) + 1e-10)[:, None]
        direction = latent / length
        mean = length.mean(dim=(1, 2, 3), keepdim=True)
        std = length.std(dim=(1, 2, 3), keepdim=True)
        top = (std * 5 + mean) * multiplier
        scaled = length / top
        return direction * (scaled / (scaled + 1.0)) * top
    return operation


def sharpen(radius: int, sigma: float, alpha: float) -> LatentOperation:
    """Unsharp-masks the direction of each latent pixel's vector (ComfyUI's image sharpen kernel,
    strength alpha * 10), keeping its length."""
    def operation(latent: torch.Tensor, **_) -> torch.Tensor:
        length = (torch.linalg.vector_norm(latent, dim=1) + 1e-6)[:, None]
        direction = latent / length
        size = radius * 2 + 1
        kernel = gaussian_kernel(size, sigma, device=latent.device) * (alpha * -10)
        kernel[radius, radius] = kernel[radius, radius] - kernel.sum() + 1.0
        padded = F.pad(direction, (radius, radius, radius, radius), mode="reflect")
        channels = latent.shape[1]
        sharpened = F.conv2d(padded, kernel.to(latent.dtype).expand(channels, 1, size, size), groups=channels)
        return length * sharpened
    return operation


class LatentOperationTonemapReinhard(Node):
    category = "latent/advanced/operations"
    experimental = True
    inputs = (Float("multiplier", 1.0, min=0.0, max=100.0, step=0.01),)
    outputs = (Output("LATENT_OPERATION"),)

    def run(self, multiplier):
        return (tonemap_reinhard(multiplier),)


class LatentOperationSharpen(Node):
    category = "latent/advanced/operations"
    experimental = True
    inputs = (Int("sharpen_radius", 9, min=1, max=31, step=1), Float("sigma", 1.0, min=0.1, max=10.0, step=0.1),
              Float("alpha", 0.1, min=0.0, max=5.0, step=0.01))
    outputs = (Output("LATENT_OPERATION"),)

    def run(self, sharpen_radius, sigma, alpha):
        return (sharpen(sharpen_radius, sigma, alpha),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (LatentAdd, LatentSubtract, LatentMultiply, LatentInterpolate,
                                                      LatentApplyOperation, LatentApplyOperationCFG,
                                                      LatentOperationTonemapReinhard,
                                                      LatentOperationSharpen)}
