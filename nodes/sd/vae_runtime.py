"""The VAE socket type: runs an AutoencoderKL on IMAGE tensors ([B, H, W, C] in 0..1) and
unscaled latents, with the device/dtype policy, in batches, under inference mode, within the memory
limit (nodes.sd.memory_limits): a decode too large for it runs in tiles, a request too large even for
that is refused before anything is allocated."""
from __future__ import annotations

import logging

import torch

from nodegraph import NodeInputError

from . import memory_limits
from .device import cpu_threads, latent_positions
from .memory import module_parts
from .vae import AutoencoderKL
from .vae_tiling import decode_tiled

log = logging.getLogger(__name__)

# Latent items decoded per batch: bounded so a large batch cannot exhaust memory at once.
DECODE_BATCH = 4
# Tiled decoding: the smallest tile tried (latent pixels) and the overlap between tiles.
MIN_TILE, TILE_OVERLAP = 16, 8


class VAE:
    def __init__(self, model: AutoencoderKL):
        self.model = model
        self.downscale = model.config.downscale_factor if hasattr(model.config, "downscale_factor") else 8
        self.latent_channels = model.config.embed_dim
        self.width = getattr(model.config, "ch", 128)  # the full-resolution levels' channels

    def memory_parts(self):
        return module_parts(self.model)

    def check_latent(self, samples: torch.Tensor, node_input: str = "samples") -> None:
        if samples.ndim != 4 or samples.shape[1] != self.latent_channels:
            raise NodeInputError(node_input, f"this VAE takes latents with {self.latent_channels} channels "
                                             f"[B, {self.latent_channels}, h, w], got shape {tuple(samples.shape)}")

    @torch.inference_mode()
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Unscaled latent [B, 4, h, w] -> IMAGE [B, 8h, 8w, 3] in 0..1 (in tiles when it must)."""
        self.check_latent(samples)
        b, _, h, w = samples.shape
        f = self.downscale
        memory_limits.require("samples", f"the decoded {w * f}x{h * f} image batch of {b}", b * 3 * h * f * w * f * 4,
                              self.model.device)
        with cpu_threads(self.model, latent_positions(samples)):
            return self._decode(samples)

    def _decode(self, samples: torch.Tensor) -> torch.Tensor:
        b, _, h, w = samples.shape
        f = self.downscale
        output = b * 3 * h * f * w * f * 4  # the IMAGE itself, float32
        per_item = memory_limits.vae_decode_bytes(1, h * f, w * f, self.width)
        limit = memory_limits.memory_limit(self.model.device)
        batch = max(1, min(DECODE_BATCH, (limit - output) // per_item)) if limit > output else 1
        tile = None
        if output + per_item > limit:
            tile = self._tile_for(limit - output, h, w)
            log.info("decoding %dx%d in %d×%d latent tiles: the whole decode needs about %s, the limit is %s",
                     w * f, h * f, tile, tile, memory_limits.format_bytes(per_item),
                     memory_limits.format_bytes(limit - output))
        images = []
        for start in range(0, b, 1 if tile else batch):
            chunk = samples[start:start + (1 if tile else batch)].float()
            if tile:
                pixels = decode_tiled(self.model.decode, chunk, tile=tile, overlap=TILE_OVERLAP, scale=f)
            else:
                pixels = self.model.decode(chunk).float()
            images.append(((pixels + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu())
        return torch.cat(images)

    def _tile_for(self, room: int, h: int, w: int) -> int:
        """The largest square latent tile whose decode fits in `room` bytes; refuses when none does."""
        f = self.downscale
        tile = max(h, w)
        while tile > MIN_TILE and memory_limits.vae_decode_bytes(1, tile * f, tile * f, self.width) > room:
            tile = max(MIN_TILE, tile * 3 // 4)
        need = memory_limits.vae_decode_bytes(1, min(tile, h) * f, min(tile, w) * f, self.width)
        if need > room:
            raise memory_limits.RequestTooLargeError(
                "samples", f"decoding even in {tile}×{tile} latent tiles", need, max(0, room))
        return tile

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C] (H, W multiples of 8; RGB used) -> unscaled latent mean [B, 4, H/8, W/8]."""
        b, h, w = image.shape[:3]
        batch = min(b, DECODE_BATCH)
        memory_limits.require("pixels", f"encoding {batch} image(s) of {w}x{h}",
                              memory_limits.vae_encode_bytes(batch, h, w, self.width) + b * 3 * h * w * 4, self.model.device,
                              hint="VAEEncodeTiled encodes in tiles")
        pixels = image[..., :3].movedim(-1, 1).float() * 2.0 - 1.0
        with cpu_threads(self.model, latent_positions(pixels) // self.downscale**2):
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
