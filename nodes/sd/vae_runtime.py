"""The VAE socket type: runs an AutoencoderKL on IMAGE tensors ([B, H, W, C] in 0..1) and
unscaled latents, with the device/dtype policy, in batches, under inference mode."""
from __future__ import annotations

import logging

import torch

from nodegraph import NodeInputError

from .device import cpu_threads
from .memory import module_parts
from .vae import AutoencoderKL

log = logging.getLogger(__name__)

# Latent items decoded per batch: bounded so a large batch cannot exhaust memory at once.
DECODE_BATCH = 4


class VAE:
    def __init__(self, model: AutoencoderKL):
        self.model = model
        self.downscale = model.config.downscale_factor if hasattr(model.config, "downscale_factor") else 8
        self.latent_channels = model.config.embed_dim

    def memory_parts(self):
        return module_parts(self.model)

    def check_latent(self, samples: torch.Tensor, node_input: str = "samples") -> None:
        if samples.ndim != 4 or samples.shape[1] != self.latent_channels:
            raise NodeInputError(node_input, f"this VAE takes latents with {self.latent_channels} channels "
                                             f"[B, {self.latent_channels}, h, w], got shape {tuple(samples.shape)}")

    @torch.inference_mode()
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Unscaled latent [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3] in 0..1."""
        self.check_latent(samples)
        with cpu_threads(self.model):
            return self._decode(samples)

    def _decode(self, samples: torch.Tensor) -> torch.Tensor:
        images = []
        for start in range(0, samples.shape[0], DECODE_BATCH):
            chunk = samples[start:start + DECODE_BATCH].float()
            pixels = self.model.decode(chunk).float()
            images.append(((pixels + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu())
        return torch.cat(images)

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C] (H, W multiples of 8; RGB used) -> unscaled latent mean [B, 4, H/8, W/8]."""
        pixels = image[..., :3].movedim(-1, 1).float() * 2.0 - 1.0
        with cpu_threads(self.model):
            latents = [self.model.encode(pixels[i:i + DECODE_BATCH]).float().cpu()
                       for i in range(0, pixels.shape[0], DECODE_BATCH)]
        return torch.cat(latents)

    def crop_to_multiple(self, image: torch.Tensor) -> torch.Tensor:
        """Centre-crop an IMAGE so both sides are multiples of the VAE's factor (as ComfyUI)."""
        f = self.downscale
        h, w = image.shape[1] // f * f, image.shape[2] // f * f
        if h == 0 or w == 0:
            raise NodeInputError("pixels", f"the image ({image.shape[2]}x{image.shape[1]}) is smaller than {f}x{f}")
        y, x = (image.shape[1] % f) // 2, (image.shape[2] % f) // 2
        return image[:, y:y + h, x:x + w, :]
