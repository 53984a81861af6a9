"""Cheap sampler previews: SD1.x latents projected linearly to RGB ("latent2rgb").

The method is process-wide state set by the front end (the server when a client wants previews);
the CLI leaves it off."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# Rows: the RGB contribution of each of the 4 SD1.5 latent channels (ComfyUI's published factors).
SD15_LATENT_RGB = torch.tensor([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                                [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]])
MAX_PREVIEW_SIZE = 512

method = "none"  # "none" | "latent2rgb"


def set_method(name: str) -> None:
    global method
    if name not in ("none", "latent2rgb"):
        raise ValueError(f"unknown preview method {name!r}")
    method = name


def latent_to_preview(x0: torch.Tensor) -> Image.Image | None:
    """The first latent of a batch ([B, 4, h, w], unscaled or scaled alike) as a small RGB image."""
    if method == "none" or x0.shape[1] != 4:
        return None
    rgb = torch.einsum("chw,cr->hwr", x0[0].float().cpu(), SD15_LATENT_RGB)
    array = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(array))
    if max(image.size) > MAX_PREVIEW_SIZE:
        image.thumbnail((MAX_PREVIEW_SIZE, MAX_PREVIEW_SIZE))
    return image
