"""Canny edges with opencv, on the threshold scale of ComfyUI's (kornia's) Canny node.

ComfyUI runs `kornia.filters.canny(image, low, high)` with thresholds in 0.01..0.99. kornia works on
the 0..1 image: grey (0.299 R + 0.587 G + 0.114 B), a 5x5 Gaussian blur with sigma 1 (reflect
border), an unnormalised 3x3 Sobel (replicate border), L2 gradient magnitude, non-maximum
suppression, and hysteresis: pixels whose magnitude is above `high` start an edge, pixels above
`low` extend it. We do the same steps with opencv, with the image on opencv's usual 0..255 scale, so
every gradient is 255x kornia's and the thresholds map as `opencv = 255 * kornia` (0.4 -> 102,
0.8 -> 204). The Sobel derivatives are computed in float and handed to `cv2.Canny(dx, dy, ...)` as
int16 (rounded: at most 0.5/255 = 0.002 off on kornia's scale, below the 0.01 threshold step).

Known differences to kornia's output: opencv breaks exact ties in non-maximum suppression towards
one side (a step lying exactly between two pixels gives a 1-pixel edge on one of them; kornia's
strict test keeps neither, or whichever side float rounding favours), and its hysteresis is
8-connected edge tracking rather than kornia's iterated 3x3 test. On natural images the two agree
on almost every pixel; edges may sit one pixel apart.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # kornia.color.rgb_to_grayscale (ITU-R BT.601)
BLUR_KERNEL = (5, 5)
BLUR_SIGMA = 1.0
OPENCV_SCALE = 255.0  # image and thresholds go to opencv's 0..255 scale


def threshold_problem(low: float, high: float) -> str | None:
    """Why (low, high) is not a valid threshold pair, or None. Same rules as ComfyUI's node:
    each in [0.01, 0.99] and low <= high (kornia raises on low > high; we report it up front)."""
    for name, value in (("low_threshold", low), ("high_threshold", high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value):
            return f"{name} must be a number, got {value!r}"
        if not 0.01 <= value <= 0.99:
            return f"{name} must be between 0.01 and 0.99, got {value}"
    if low > high:
        return (f"low_threshold ({low}) is greater than high_threshold ({high}); gradients above "
                f"high_threshold start an edge and those above low_threshold extend it, so low must be <= high")
    return None


def to_grey(image_bhwc: torch.Tensor) -> np.ndarray:
    """[B, H, W, C] 0..1 -> float32 [B, H, W] grey. RGB(A) uses the first three channels with
    kornia's weights; one- or two-channel images use their first channel."""
    image = image_bhwc.detach().to("cpu", torch.float32)
    if image.shape[-1] >= 3:
        weights = torch.tensor(GREY_WEIGHTS, dtype=torch.float32)
        grey = (image[..., :3] * weights).sum(-1)
    else:
        grey = image[..., 0]
    return grey.numpy()


def canny_edges(image_bhwc: torch.Tensor, low: float = 0.4, high: float = 0.8) -> torch.Tensor:
    """Canny edge map of every image of a batch: float32 [B, H, W, 3] with values 0 or 1 (the
    edge map repeated to three channels, as ComfyUI's node returns), on the CPU.

    `low` / `high` are on kornia's gradient scale (see the module docstring); ValueError when they
    are out of range or low > high."""
    problem = threshold_problem(low, high)
    if problem:
        raise ValueError(problem)
    if image_bhwc.ndim != 4:
        raise ValueError(f"expected an IMAGE tensor [B, H, W, C], got shape {tuple(image_bhwc.shape)}")
    b, h, w = image_bhwc.shape[:3]
    out = torch.zeros((b, h, w, 3), dtype=torch.float32)
    if b == 0 or h == 0 or w == 0:
        return out
    grey = to_grey(image_bhwc)
    for i in range(b):
        out[i] = torch.from_numpy(_edges(grey[i], low, high)).unsqueeze(-1)
    return out


def _edges(grey: np.ndarray, low: float, high: float) -> np.ndarray:
    """One grey 0..1 image -> float32 {0, 1} edges of the same size."""
    grey = np.clip(np.nan_to_num(grey, nan=0.0), 0.0, 1.0)
    scaled = np.ascontiguousarray(grey * OPENCV_SCALE, dtype=np.float32)
    blurred = cv2.GaussianBlur(scaled, BLUR_KERNEL, sigmaX=BLUR_SIGMA, sigmaY=BLUR_SIGMA,
                               borderType=cv2.BORDER_REFLECT_101)
    dx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    dy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    # |d| <= 4 * 255 for a 0..1 image, well inside int16.
    dx16 = np.rint(dx).astype(np.int16)
    dy16 = np.rint(dy).astype(np.int16)
    edges = cv2.Canny(dx16, dy16, low * OPENCV_SCALE, high * OPENCV_SCALE, L2gradient=True)
    return (edges > 0).astype(np.float32)
