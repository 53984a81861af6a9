"""Running an image-to-image function tile by tile, blending the overlaps: tiled VAE decode and
encode, and upscale models on images larger than memory allows at once.

The tiling follows ComfyUI's (`tiled_scale`), so the same tile size and overlap give the same
picture: tiles start every `tile - overlap` pixels (the last one may be shorter), each output tile is
weighted by a linear ramp of `round(scale · overlap)` pixels at each of its edges, and the result is
the weighted average.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

from nodegraph.progress import ProgressBar

TileFunction = Callable[[torch.Tensor], torch.Tensor]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side start: every `tile - overlap` pixels, one tile if it fits."""
    if size <= tile:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"the overlap ({overlap}) must be smaller than the tile ({tile})")
    return list(range(0, size - overlap, step))


def tile_count(height: int, width: int, tile_h: int, tile_w: int, overlap: int) -> int:
    """How many tiles `tiled_map` runs for one image (for progress bars)."""
    return len(tile_starts(height, tile_h, overlap)) * len(tile_starts(width, tile_w, overlap))


def edge_ramp(length: int, feather: int) -> torch.Tensor:
    """Weights along one side of an output tile: rising (t+1)/feather over the first `feather`
    pixels and falling over the last; flat when the tile is not longer than the feather."""
    ramp = torch.ones(length)
    if 0 < feather < length:
        for t in range(feather):
            weight = (t + 1) / feather
            ramp[t] *= weight
            ramp[length - 1 - t] *= weight
    return ramp


def tiled_map(samples: torch.Tensor, function: TileFunction, *, tile: tuple[int, int], overlap: int,
              scale: float, out_channels: int, progress: ProgressBar | None = None) -> torch.Tensor:
    """`function` applied to `samples` [B, C, H, W] in tiles of `tile` = (height, width) input pixels
    overlapping by `overlap`; `function` maps a [1, C, h, w] tile to [1, out_channels, h·scale, w·scale].

    Returns [B, out_channels, round(H·scale), round(W·scale)] in float32 on the CPU. Memory beyond the
    output is one tile's worth, whatever the image size.
    """
    tile_h, tile_w = tile
    batch, _, height, width = samples.shape
    out_h, out_w = round(height * scale), round(width * scale)
    output = torch.empty(batch, out_channels, out_h, out_w)
    feather = round(scale * overlap)
    for b in range(batch):
        item = samples[b:b + 1]
        if height <= tile_h and width <= tile_w:
            output[b:b + 1] = function(item).float().cpu()
            if progress is not None:
                progress.update(1)
            continue
        total = torch.zeros(1, out_channels, out_h, out_w)
        weights = torch.zeros(1, 1, out_h, out_w)
        for y, x in itertools.product(tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)):
            h, w = min(tile_h, height - y), min(tile_w, width - x)
            result = function(item[:, :, y:y + h, x:x + w]).float().cpu()
            rh, rw = result.shape[-2:]
            mask = (edge_ramp(rh, feather)[:, None] * edge_ramp(rw, feather)[None, :])[None, None]
            oy, ox = round(y * scale), round(x * scale)
            total[:, :, oy:oy + rh, ox:ox + rw] += result * mask
            weights[:, :, oy:oy + rh, ox:ox + rw] += mask
            if progress is not None:
                progress.update(1)
        output[b:b + 1] = total / weights
    return output


def three_way_tiled_map(samples: torch.Tensor, function: TileFunction, *, tile: int, overlap: int, scale: float,
                        out_channels: int, progress_label: str | None = None) -> torch.Tensor:
    """The average of three tilings — square tiles, tiles half as wide and twice as tall, and the
    reverse — as ComfyUI's tiled VAE does, so that no seam lies on the same line in all three."""
    height, width = samples.shape[-2:]
    shapes = [(tile * 2, tile // 2), (tile // 2, tile * 2), (tile, tile)]  # (height, width) of each tiling
    steps = samples.shape[0] * sum(tile_count(height, width, h, w, overlap) for h, w in shapes)
    progress = ProgressBar(steps)
    total = None
    for shape in shapes:
        result = tiled_map(samples, function, tile=shape, overlap=overlap, scale=scale, out_channels=out_channels,
                           progress=progress)
        total = result if total is None else total + result
    return total / 3.0


def check_tiling(size: tuple[int, int], tile: int, overlap: int) -> str | None:
    """Why this tile / overlap cannot cover an image of `size` (height, width) in all three tilings,
    or None when it can."""
    for side in size:
        for length in (tile // 2, tile, tile * 2):
            if length <= 0 and side > 0:
                return f"the tile ({tile}) is too small"
            if side > length and length - overlap <= 0:
                return (f"the overlap ({overlap}) must be smaller than half the tile ({tile}): "
                        f"the narrow tiles are {length} wide")
    return None


def output_bytes(shape: tuple[int, ...], scale: float, channels: int) -> int:
    """Bytes of the float32 accumulators `tiled_map` holds for a [B, C, H, W] input."""
    return 3 * 4 * channels * math.prod(round(s * scale) for s in shape[-2:])
