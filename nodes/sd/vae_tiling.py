"""Decoding a latent in overlapping tiles when the whole decode does not fit in memory.

Each tile is decoded on its own and weighted, on every side that meets another tile, by zero across
an outer margin (a quarter of the overlap: the pixels whose context was cut off by the tile edge) and
then a linear ramp up to one across the rest of the overlap; the weighted tiles are summed and
normalised. The neighbour covers the margin at full weight, so every output pixel is a convex blend
of tiles that saw its surroundings: for a decoder whose reach is within the margin the result is the
full decode exactly, and no edge can show. Global operators (the decoder's GroupNorm statistics and
mid-block attention) still see only their tile, so distant tiles may differ slightly in tone; the ramp
spreads that over the overlap. Only one tile's working memory is needed besides the output.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size `tile` covering [0, length), consecutive tiles overlapping by ≥ `overlap`."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends exactly at the border
    return starts


def _ramp(size: int, margin: int, fade: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """1-D weights: 0 over `margin` pixels then rising over `fade` pixels at a blended start (falling at
    a blended end), 1 elsewhere and at image borders."""
    w = torch.ones(size, dtype=torch.float32)
    ramp = torch.cat([torch.zeros(margin), (torch.arange(fade, dtype=torch.float32) + 0.5) / max(fade, 1)])
    n = min(size, ramp.numel())
    if fade_start:
        w[:n] = torch.minimum(w[:n], ramp[:n])
    if fade_end:
        w[size - n:] = torch.minimum(w[size - n:], ramp[:n].flip(0))
    return w


def decode_tiled(decode: Callable[[torch.Tensor], torch.Tensor], latent: torch.Tensor, *, tile: int,
                 overlap: int, scale: int = 8, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`decode` (B, C, h, w) → (B, 3, h·scale, w·scale), applied to `tile`×`tile` latent tiles overlapping
    by `overlap` latent pixels; returns the blended (B, 3, H, W) image in float32 on the CPU."""
    b, _, h, w = latent.shape
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = torch.zeros(b, 3, h * scale, w * scale, dtype=torch.float32)
    weight = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32)
    total, done = len(ys) * len(xs), 0
    margin = max(1, overlap // 4) * scale if overlap >= 4 else 0
    fade = overlap * scale - 2 * margin
    for y in ys:
        th = min(tile, h - y)
        for x in xs:
            tw = min(tile, w - x)
            pixels = decode(latent[:, :, y:y + th, x:x + tw]).float().cpu()
            wy = _ramp(th * scale, margin, fade, y > 0, y + th < h)
            wx = _ramp(tw * scale, margin, fade, x > 0, x + tw < w)
            mask = (wy[:, None] * wx[None, :])[None, None]
            region = (slice(None), slice(None), slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
            out[region] += pixels * mask
            weight[region] += mask
            done += 1
            if progress is not None:
                progress(done, total)
    return out / weight
