"""Latent nodes: empty latents, VAE encode/decode (incl. for inpainting), upscaling, noise masks."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodegraph import Combo, Float, Input, Int, Node, NodeInputError, Output
from nodegraph.contract import MAX_RESOLUTION

from .image_ops import LATENT_UPSCALE_METHODS, upscale
from .sd import memory_limits


class EmptyLatentImage(Node):
    """A batch of empty (zero) latents to start text-to-image from."""
    display_name = "Empty Latent Image"
    category = "latent"
    inputs = (Int("width", 512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image width in pixels."),
              Int("height", 512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image height in pixels."),
              Int("batch_size", 1, min=1, max=4096, tooltip="How many images at once."))
    outputs = (Output("LATENT", tooltip="The empty latent image batch."),)

    def run(self, width, height, batch_size):
        for name, value in (("width", width), ("height", height)):
            if value % 8:  # ComfyUI silently floors; a surprise size is worse than a clear error
                raise NodeInputError(name, f"{value} is not a multiple of 8 (latents are 1/8 of the image); "
                                           f"use {value // 8 * 8} or {value // 8 * 8 + 8}")
        shape = [batch_size, 4, height // 8, width // 8]
        memory_limits.require("batch_size", f"{batch_size} empty latent(s) of {width}x{height}",
                              4 * shape[0] * shape[1] * shape[2] * shape[3])
        return ({"samples": torch.zeros(shape)},)


class VAEDecode(Node):
    """Decodes latents into images."""
    display_name = "VAE Decode"
    category = "latent"
    inputs = (Input("samples", "LATENT"), Input("vae", "VAE"))
    outputs = (Output("IMAGE"),)

    def run(self, samples, vae):
        return (vae.decode(samples["samples"]),)


class VAEEncode(Node):
    """Encodes images into latents (RGB only; sides cropped to multiples of 8)."""
    display_name = "VAE Encode"
    category = "latent"
    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"))
    outputs = (Output("LATENT"),)

    def run(self, pixels, vae):
        return ({"samples": vae.encode(vae.crop_to_multiple(pixels))},)


class VAEEncodeForInpaint(Node):
    """Encodes an image for an inpainting model: the masked area is set to grey before encoding,
    and the (grown) mask becomes the latent's noise mask."""
    display_name = "VAE Encode (for Inpainting)"
    category = "latent/inpaint"
    inputs = (Input("pixels", "IMAGE"), Input("vae", "VAE"), Input("mask", "MASK"),
              Int("grow_mask_by", 6, min=0, max=64, step=1))
    outputs = (Output("LATENT"),)

    def run(self, pixels, vae, mask, grow_mask_by):
        pixels = vae.crop_to_multiple(pixels)
        h, w = pixels.shape[1], pixels.shape[2]
        mask = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=(h, w),
                             mode="bilinear")
        if grow_mask_by > 0:
            kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
            padding = grow_mask_by // 2
            grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)[:, :, :h, :w]
        else:
            grown = mask
        keep = (1.0 - mask.round()).movedim(1, -1)  # [B, H, W, 1]: 1 where the image is kept
        pixels = pixels.clone()
        pixels[..., :3] = (pixels[..., :3] - 0.5) * keep + 0.5
        return ({"samples": vae.encode(pixels), "noise_mask": grown},)


class SetLatentNoiseMask(Node):
    """Limits sampling to the masked area of a latent (inpainting with any model)."""
    display_name = "Set Latent Noise Mask"
    category = "latent/inpaint"
    inputs = (Input("samples", "LATENT"), Input("mask", "MASK"))
    outputs = (Output("LATENT"),)

    def run(self, samples, mask):
        return ({**samples, "noise_mask": mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])},)


def _latent_size(width: int, height: int, samples: torch.Tensor) -> tuple[int, int]:
    """Pixel size -> latent size; 0 keeps the aspect ratio; each side at least 64 px (8 latents)."""
    old_h, old_w = samples.shape[-2] * 8, samples.shape[-1] * 8
    if width == 0 and height == 0:
        return samples.shape[-1], samples.shape[-2]
    if width == 0:
        width = round(old_w * height / old_h)
    elif height == 0:
        height = round(old_h * width / old_w)
    return max(64, width) // 8, max(64, height) // 8


class LatentUpscale(Node):
    display_name = "Upscale Latent"
    category = "latent"
    inputs = (Input("samples", "LATENT"), Combo("upscale_method", LATENT_UPSCALE_METHODS),
              Int("width", 512, min=0, max=MAX_RESOLUTION, step=8), Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
              Combo("crop", ["disabled", "center"]))
    outputs = (Output("LATENT"),)

    def run(self, samples, upscale_method, width, height, crop):
        w, h = _latent_size(width, height, samples["samples"])
        return ({**_without_mask(samples), "samples": upscale(samples["samples"], w, h, upscale_method, crop)},)


class LatentUpscaleBy(Node):
    display_name = "Upscale Latent By"
    category = "latent"
    inputs = (Input("samples", "LATENT"), Combo("upscale_method", LATENT_UPSCALE_METHODS),
              Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01))
    outputs = (Output("LATENT"),)

    def run(self, samples, upscale_method, scale_by):
        s = samples["samples"]
        w, h = max(1, round(s.shape[-1] * scale_by)), max(1, round(s.shape[-2] * scale_by))
        return ({**_without_mask(samples), "samples": upscale(s, w, h, upscale_method)},)


def _without_mask(samples: dict) -> dict:
    # A noise mask of the old size would not fit the new latent; ComfyUI drops it too.
    return {k: v for k, v in samples.items() if k != "noise_mask"}


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (EmptyLatentImage, VAEDecode, VAEEncode, VAEEncodeForInpaint,
                                                      SetLatentNoiseMask, LatentUpscale, LatentUpscaleBy)}
