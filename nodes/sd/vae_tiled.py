"""Tiled VAE decode and encode: an image of any size through the VAE in tiles of bounded memory,
averaged over three tilings and blended as ComfyUI's VAEDecodeTiled / VAEEncodeTiled blend them."""
from __future__ import annotations

import torch

from .device import cpu_threads, latent_positions
from .tiling import three_way_tiled_map
from .vae_runtime import VAE


@torch.inference_mode()
def decode_tiled(vae: VAE, samples: torch.Tensor, *, tile: int, overlap: int) -> torch.Tensor:
    """Unscaled latent [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3]; `tile` and `overlap` in latent pixels."""
    vae.check_latent(samples)
    model = vae.model

    def decode(z: torch.Tensor) -> torch.Tensor:
        return model.decode(z.float()).float()

    with cpu_threads(model, latent_positions(samples)):
        pixels = three_way_tiled_map(samples.float(), decode, tile=tile, overlap=overlap, scale=vae.downscale,
                                     out_channels=3)
    # Blended in the model's [-1, 1] range, clamped once at the end (a clamp per tile would bend the blend).
    return ((pixels + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)


@torch.inference_mode()
def encode_tiled(vae: VAE, image: torch.Tensor, *, tile: int, overlap: int) -> torch.Tensor:
    """IMAGE [B, H, W, C] (sides multiples of 8; RGB used) -> unscaled latent mean [B, 4, H/8, W/8];
    `tile` and `overlap` in image pixels."""
    model = vae.model
    pixels = image[..., :3].movedim(-1, 1).float() * 2.0 - 1.0

    def encode(x: torch.Tensor) -> torch.Tensor:
        return model.encode(x).float()

    with cpu_threads(model, latent_positions(pixels) // vae.downscale**2):
        return three_way_tiled_map(pixels, encode, tile=tile, overlap=overlap, scale=1.0 / vae.downscale,
                                   out_channels=vae.latent_channels)
