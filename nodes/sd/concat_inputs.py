"""The extra input channels of inpainting (9-channel) and InstructPix2Pix (8-channel) UNets, built from the
latent, its noise mask and the conditioning's `concat_latent_image` / `concat_mask`, as ComfyUI builds them."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .sampling.model_sampling import process_latent_in

INPAINT_EXTRA = 5       # mask (1 = repaint) + masked-image latent
PIX2PIX_EXTRA = 4       # the source image's latent
# The latent of an all-black image (pixel value 0) for the SD1 VAE: what an inpainting model sees as
# "no image" when neither a mask nor an image is given (ComfyUI's blank_inpaint_image_like).
BLANK_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def concat_inputs(in_channels: int, samples: torch.Tensor, noise_mask: torch.Tensor | None,
                  conditioning: list | None = None) -> torch.Tensor | None:
    """`[B, in_channels − 4, h, w]` to concatenate to the UNet input, or None for a 4-channel UNet.

    samples: the unscaled latent being sampled. conditioning: the positive CONDITIONING; its first entry's
    `concat_latent_image` (unscaled) and `concat_mask` (from InpaintModelConditioning /
    InstructPixToPixConditioning) take the place of the latent and its noise mask. ComfyUI builds this
    per conditioning entry; the nodes that set these options give positive and negative the same values.
    """
    extra = in_channels - samples.shape[1]
    if extra == 0:
        return None
    options = conditioning[0][1] if conditioning else {}
    image = options.get("concat_latent_image")
    shape = samples.shape
    if extra == PIX2PIX_EXTRA:
        image = torch.zeros_like(samples) if image is None else image.to(samples.device, samples.dtype)
        return _batch(_resize(image, shape), shape[0])
    if extra != INPAINT_EXTRA:
        raise ValueError(f"this UNet takes {in_channels} input channels; only 4 (normal), 8 (InstructPix2Pix) "
                         f"or 9 (inpainting) are supported")
    mask = options.get("concat_mask", noise_mask)
    if mask is None:
        blank = torch.tensor(BLANK_LATENT, dtype=samples.dtype, device=samples.device).view(1, -1, 1, 1)
        return torch.cat([torch.ones_like(samples[:, :1]), blank.expand_as(samples)], dim=1)
    image = process_latent_in(samples.float()) if image is None else process_latent_in(image.float().to(samples.device))
    mask = mask.reshape(-1, 1, *mask.shape[-2:]).float().to(samples.device)
    if mask.shape[-2:] != shape[-2:]:
        mask = F.interpolate(mask, size=shape[-2:], mode="bilinear")
    return torch.cat([_batch(mask.round(), shape[0]), _batch(_resize(image, shape), shape[0])], dim=1)


def _resize(image: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if image.shape[-2:] != shape[-2:]:
        image = F.interpolate(image, size=shape[-2:], mode="bilinear")
    return image


def _batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (or cut) along the batch to `batch` items (ComfyUI's resize_to_batch_size for whole multiples)."""
    if tensor.shape[0] == batch:
        return tensor
    repeats = -(-batch // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]
