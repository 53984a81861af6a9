"""Latent nodes that move or combine latent pixels: flip, rotate, crop, composite (plain, feathered,
masked) and blend. Same names, inputs and behaviour as ComfyUI's; positions are in image pixels
(multiples of 8), latents are [B, 4, H/8, W/8]."""
from __future__ import annotations

import torch

from nodegraph import Boolean, Combo, Float, Input, Int, Node, NodeInputError, Output
from nodegraph.contract import MAX_RESOLUTION

from .image_ops import composite, upscale

ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]
FLIPS = ["x-axis: vertically", "y-axis: horizontally"]


def _with_samples(latent: dict, samples: torch.Tensor) -> dict:
    """A copy of the LATENT dict (noise mask, batch index kept) with new samples."""
    return {**latent, "samples": samples}


class LatentFlip(Node):
    display_name = "Flip Latent"
    category = "latent/transform"
    inputs = (Input("samples", "LATENT"), Combo("flip_method", FLIPS))
    outputs = (Output("LATENT"),)

    def run(self, samples, flip_method):
        dim = 2 if flip_method.startswith("x") else 3  # x-axis mirrors rows (upside down), y-axis columns
        return (_with_samples(samples, torch.flip(samples["samples"], dims=[dim])),)


class LatentRotate(Node):
    """Rotates clockwise by the chosen angle."""
    display_name = "Rotate Latent"
    category = "latent/transform"
    inputs = (Input("samples", "LATENT"), Combo("rotation", ROTATIONS))
    outputs = (Output("LATENT"),)

    def run(self, samples, rotation):
        quarter_turns = ROTATIONS.index(rotation)
        return (_with_samples(samples, torch.rot90(samples["samples"], k=quarter_turns, dims=[3, 2])),)


class LatentCrop(Node):
    display_name = "Crop Latent"
    category = "latent/transform"
    inputs = (Input("samples", "LATENT"),
              Int("width", 512, min=64, max=MAX_RESOLUTION, step=8), Int("height", 512, min=64, max=MAX_RESOLUTION, step=8),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8))
    outputs = (Output("LATENT"),)

    def run(self, samples, width, height, x, y):
        s = samples["samples"]
        # The corner is kept inside the latent so at least 8 latent pixels (64 px) remain, as ComfyUI.
        left, top = min(x // 8, s.shape[3] - 8), min(y // 8, s.shape[2] - 8)
        left, top = max(left, 0), max(top, 0)
        return (_with_samples(samples, s[:, :, top:top + height // 8, left:left + width // 8]),)


def feather_ramp(source_h: int, source_w: int, dest_h: int, dest_w: int, x: int, y: int, feather: int) -> torch.Tensor:
    """LatentComposite's [h, w] weight of the pasted latent: on each side that lies inside the
    destination, row/column t (from that edge) is scaled by (t + 1) / feather; corners multiply."""
    weight = torch.ones(source_h, source_w)
    for t in range(feather):
        rate = (t + 1) / feather
        if y != 0:
            weight[t, :] *= rate
        if y + source_h < dest_h:
            weight[source_h - 1 - t, :] *= rate
        if x != 0:
            weight[:, t] *= rate
        if x + source_w < dest_w:
            weight[:, source_w - 1 - t] *= rate
    return weight


class LatentComposite(Node):
    """Pastes samples_from into samples_to at (x, y); feather fades its inner edges over that many pixels."""
    display_name = "Latent Composite"
    category = "latent"
    inputs = (Input("samples_to", "LATENT"), Input("samples_from", "LATENT"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              Int("feather", 0, min=0, max=MAX_RESOLUTION, step=8))
    outputs = (Output("LATENT"),)

    def run(self, samples_to, samples_from, x, y, feather):
        x, y, feather = x // 8, y // 8, feather // 8
        dest = samples_to["samples"].clone()
        h, w = dest.shape[2], dest.shape[3]
        source = samples_from["samples"][:, :, :max(h - y, 0), :max(w - x, 0)].to(dest)
        if source.shape[0] not in (1, dest.shape[0]):
            raise NodeInputError("samples_from", f"batch of {source.shape[0]} cannot be pasted into a batch of "
                                                 f"{dest.shape[0]} (shapes {tuple(samples_from['samples'].shape)} and "
                                                 f"{tuple(dest.shape)})")
        sh, sw = source.shape[2], source.shape[3]
        region = dest[:, :, y:y + sh, x:x + sw]
        if feather == 0:
            dest[:, :, y:y + sh, x:x + sw] = source
        else:
            weight = feather_ramp(sh, sw, h, w, x, y, feather).to(dest)
            dest[:, :, y:y + sh, x:x + sw] = source * weight + region * (1 - weight)
        return (_with_samples(samples_to, dest),)


class LatentCompositeMasked(Node):
    """Pastes source into destination at (x, y) where the mask is 1 (the mask is resized to the source)."""
    category = "latent"
    inputs = (Input("destination", "LATENT"), Input("source", "LATENT"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              Boolean("resize_source", False), Input("mask", "MASK", optional=True))
    outputs = (Output("LATENT"),)

    def run(self, destination, source, x, y, resize_source, mask=None):
        out = composite(destination["samples"].clone(), source["samples"], x, y, mask, 8, resize_source)
        return (_with_samples(destination, out),)


class LatentBlend(Node):
    """samples1 * blend_factor + samples2 * (1 - blend_factor); samples2 is resized (bicubic,
    centre crop) when its size differs."""
    display_name = "Latent Blend"
    category = "_for_testing"
    inputs = (Input("samples1", "LATENT"), Input("samples2", "LATENT"),
              Float("blend_factor", 0.5, min=0, max=1, step=0.01))
    outputs = (Output("LATENT"),)

    def run(self, samples1, samples2, blend_factor):
        a, b = samples1["samples"], samples2["samples"]
        if a.shape != b.shape:
            b = upscale(b, a.shape[3], a.shape[2], "bicubic", "center")
        if b.shape[0] not in (1, a.shape[0]):
            raise NodeInputError("samples2", f"batch of {b.shape[0]} cannot be blended with a batch of {a.shape[0]}")
        return (_with_samples(samples1, a * blend_factor + b * (1 - blend_factor)),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (LatentFlip, LatentRotate, LatentCrop, LatentComposite,
                                                      LatentCompositeMasked, LatentBlend)}
