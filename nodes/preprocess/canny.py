"""Canny edges exactly as ComfyUI's Canny node computes them: `kornia.filters.canny`.

ComfyUI's node is kornia's Canny with its default settings: grey (0.299 R + 0.587 G + 0.114 B) of the
0..1 image, a 5x5 Gaussian blur with sigma 1, Sobel gradients, non-maximum suppression and hysteresis
(magnitudes above `high` start an edge, those above `low` extend it), thresholds on kornia's gradient
scale (0.01..0.99). opencv's Canny is a different algorithm (integer gradients, other tie-breaking
and edge tracking): 21.8 dB against ComfyUI's edges, so every Canny-ControlNet picture differed.
Calling kornia itself gives ComfyUI's edge map bit for bit (conformance case `canny_blue_square`).
"""
from __future__ import annotations

import math

import torch

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # kornia.color.rgb_to_grayscale (ITU-R BT.601)


def threshold_problem(low: float, high: float) -> str | None:
    """Why (low, high) is not a valid threshold pair, or None. Same rules as ComfyUI's node:
    each in [0.01, 0.99] and low <= high (kornia raises on low > high; we report it up front)."""
    for name, value in (("low_threshold", low), ("high_threshold", high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"{name} must be a number, got {value!r}"
        if not 0.01 <= value <= 0.99:
            return f"{name} must be between 0.01 and 0.99, got {value}"
    if low > high:
        return (f"low_threshold ({low}) is greater than high_threshold ({high}); gradients above "
                f"high_threshold start an edge and those above low_threshold extend it, so low must be <= high")
    return None


def canny_edges(image_bhwc: torch.Tensor, low: float = 0.4, high: float = 0.8) -> torch.Tensor:
    """Canny edge map of every image of a batch: float32 [B, H, W, 3] with values 0 or 1 (the edge
    map repeated to three channels, as ComfyUI's node returns), on the CPU.

    RGB(A) images use their first three channels (kornia's grey), one- and two-channel images their
    first. ValueError when the thresholds are out of range or low > high."""
    from kornia.filters import canny  # imported here: kornia is only needed when the node runs

    problem = threshold_problem(low, high)
    if problem:
        raise ValueError(problem)
    if image_bhwc.ndim != 4:
        raise ValueError(f"expected an IMAGE tensor [B, H, W, C], got shape {tuple(image_bhwc.shape)}")
    b, h, w, c = image_bhwc.shape
    out = torch.zeros((b, h, w, 3), dtype=torch.float32)
    if b == 0 or h == 0 or w == 0:
        return out
    channels = slice(0, 3) if c >= 3 else slice(0, 1)
    for i in range(b):  # one image at a time: kornia's intermediates are several times the image
        pixels = image_bhwc[i:i + 1, ..., channels].detach().to("cpu", torch.float32).movedim(-1, 1)
        edges = canny(torch.nan_to_num(pixels), low, high)[1]  # (magnitude, edges)
        out[i] = edges[0, 0].unsqueeze(-1)
    return out
