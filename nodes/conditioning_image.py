"""Conditioning nodes that carry an encoded image for the UNet's extra input channels: inpainting
(InpaintModelConditioning) and InstructPix2Pix. A 4-channel UNet ignores the image; the latent they return works anyway."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodegraph import Boolean, Input, Node, NodeInputError, Output

from .conditioning import with_options


def _checked_pixels(pixels: torch.Tensor) -> torch.Tensor:
    if pixels.ndim != 4 or pixels.shape[-1] < 3:
        raise NodeInputError("pixels", f"expected an IMAGE [batch, height, width, 3], got shape {tuple(pixels.shape)}")
    return pixels


class InpaintModelConditioning(Node):
    """Encodes the image twice: as is (the latent to sample) and with the masked area grey (the image an
    inpainting model sees with the mask). The mask is resized to the image and, with noise_mask, also
    limits sampling to the masked area."""
    category = "conditioning/inpaint"
    inputs = (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"), Input("vae", "VAE"),
              Input("pixels", "IMAGE"), Input("mask", "MASK"),
              Boolean("noise_mask", True, tooltip="Add a noise mask to the latent so sampling will only happen "
                      "within the mask. Might improve results or completely break things depending on the model."))
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def run(self, positive, negative, vae, pixels, mask, noise_mask=True):
        pixels = _checked_pixels(pixels)
        if mask.ndim not in (2, 3):
            raise NodeInputError("mask", f"expected a MASK [height, width] or [batch, height, width], "
                                         f"got shape {tuple(mask.shape)}")
        # A mask of another size is resized to the image (bilinear), as ComfyUI does.
        mask = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=pixels.shape[1:3], mode="bilinear")
        cropped = vae.crop_to_multiple(pixels)
        if cropped.shape[1:3] != pixels.shape[1:3]:
            y, x = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
            mask = mask[:, :, y:y + cropped.shape[1], x:x + cropped.shape[2]]
        keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)  # [B, H, W, 1]: 1 where the image is kept
        masked = cropped.clone()
        masked[..., :3] = (masked[..., :3] - 0.5) * keep + 0.5
        concat_latent = vae.encode(masked)
        latent = {"samples": vae.encode(cropped)}
        if noise_mask:
            latent["noise_mask"] = mask
        values = {"concat_latent_image": concat_latent, "concat_mask": mask}
        return (with_options(positive, values), with_options(negative, values), latent)


class InstructPixToPixConditioning(Node):
    """Encodes the source image for an InstructPix2Pix model (its extra input channels) and returns an
    empty latent of the same size to sample."""
    category = "conditioning/instructpix2pix"
    inputs = (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"), Input("vae", "VAE"),
              Input("pixels", "IMAGE"))
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"), Output("LATENT", "latent"))

    def run(self, positive, negative, vae, pixels):
        concat_latent = vae.encode(vae.crop_to_multiple(_checked_pixels(pixels)))
        values = {"concat_latent_image": concat_latent}
        return (with_options(positive, values), with_options(negative, values),
                {"samples": torch.zeros_like(concat_latent)})


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (InpaintModelConditioning, InstructPixToPixConditioning)}
