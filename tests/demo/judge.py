"""Deterministic judges of generated "shapes" images: no learned model, only colour statistics and
opencv contours, so a passing score means the pixels really show what the prompt asked for.

The data set (training/data.py) draws saturated shapes on neutral backgrounds, so the shape is the set
of saturated pixels. From it:
  colour   the most frequent palette colour among the shape's pixels (nearest hue per pixel)
  shape    from the largest outer contour: solidity (area / convex-hull area) separates the star,
           extent (area / bounding-box area) the square (~1), the circle (~0.79) and the triangle (~0.5)
  fill     the fraction of the contour's inside that is shape-coloured: ~1 filled, ~0.5 outlined
  mask     the filled outer contour, for IoU against a ControlNet's edge map
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# palette hues in degrees, of training/data.py's COLOURS (kept here so the judge does not import training code)
PALETTE_HUES = {"red": 0.0, "yellow": 52.6, "green": 126.5, "cyan": 184.6, "blue": 228.8, "purple": 278.3}
SATURATION_MIN = 0.45
VALUE_MIN = 0.30
MIN_PIXELS = 12  # fewer saturated pixels than this: no shape


@dataclass
class Verdict:
    colour: str | None
    shape: str | None
    fill: float
    pixels: int
    extent: float = 0.0
    solidity: float = 0.0
    centroid: tuple[float, float] = (float("nan"), float("nan"))
    mask: np.ndarray | None = None  # bool (H, W), the filled outer contour


def _as_uint8(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from uint8, or float 0..1 (numpy or torch)."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return image[..., :3]


def saturated_mask(image) -> np.ndarray:
    rgb = _as_uint8(image).astype(np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return (sat > SATURATION_MIN) & (mx > VALUE_MIN)


def hue_degrees(image) -> np.ndarray:
    hsv = cv2.cvtColor(_as_uint8(image), cv2.COLOR_RGB2HSV_FULL)
    return hsv[..., 0].astype(np.float32) * (360.0 / 256.0)


def nearest_colour(hues: np.ndarray) -> np.ndarray:
    names = list(PALETTE_HUES)
    ref = np.array([PALETTE_HUES[n] for n in names], np.float32)
    d = np.abs(hues[..., None] - ref)
    d = np.minimum(d, 360.0 - d)
    return d.argmin(-1)


def classify_shape(extent: float, solidity: float) -> str:
    if solidity < 0.80:
        return "star"
    if extent > 0.88:
        return "square"
    if extent > 0.64:
        return "circle"
    return "triangle"


def judge(image) -> Verdict:
    """The verdict on one image (H, W, 3): uint8, or float 0..1."""
    mask = saturated_mask(image)
    n = int(mask.sum())
    if n < MIN_PIXELS:
        return Verdict(None, None, 0.0, n)
    names = list(PALETTE_HUES)
    votes = np.bincount(nearest_colour(hue_degrees(image)[mask]), minlength=len(names))
    colour = names[int(votes.argmax())]

    m8 = mask.astype(np.uint8)
    # close one-pixel gaps so a slightly broken outline still has one outer contour
    m8 = cv2.morphologyEx(m8, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    filled = np.zeros_like(m8)
    cv2.drawContours(filled, [contour], -1, 1, thickness=-1)
    area = float(filled.sum())  # pixel count (contourArea under-counts the boundary pixels)
    x, y, w, h = cv2.boundingRect(contour)
    hull = cv2.convexHull(contour)
    hull_mask = np.zeros_like(m8)
    cv2.drawContours(hull_mask, [hull], -1, 1, thickness=-1)
    extent = area / float(w * h)
    solidity = area / max(float(hull_mask.sum()), 1.0)
    fill = float((mask & (filled > 0)).sum()) / max(area, 1.0)
    ys, xs = np.nonzero(filled)
    return Verdict(colour, classify_shape(extent, solidity), fill, n, extent, solidity,
                   (float(xs.mean()), float(ys.mean())), filled.astype(bool))


def edge_shape_mask(edges) -> np.ndarray:
    """The filled region enclosed by the largest outer contour of an edge map ((H, W) or (H, W, 3),
    0..1 or uint8): the shape a ControlNet was asked to draw."""
    e = np.asarray(edges.detach().cpu().numpy() if hasattr(edges, "detach") else edges)
    if e.ndim == 3:
        e = e[..., 0]
    e8 = (e > (127 if e.dtype == np.uint8 else 0.5)).astype(np.uint8)
    e8 = cv2.dilate(e8, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(e8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(e8)
    if contours:
        cv2.drawContours(out, [max(contours, key=cv2.contourArea)], -1, 1, thickness=-1)
        out = cv2.erode(out, np.ones((3, 3), np.uint8))  # undo the dilation's outward pixel
    return out.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
