"""UNet-side model options: the patches behind FreeU / FreeU_V2, HyperTile, ToMe (TomePatchModel) and
Kohya Deep Shrink (PatchModelAddDownscale).

Each is a small callable with a block- or attention-patch signature of nodes/sd/model_options.py; the
algorithms follow the papers (cited per class) and ComfyUI 0.3.64's versions of them, so results match
its outputs — including where ComfyUI's version departs from the paper (noted where it does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from nodes.image_ops import upscale

from .model_options import PatchContext

Tensor = torch.Tensor

__all__ = ["FreeU", "fourier_box_filter", "HyperTile", "TokenMerging", "DeepShrink", "bipartite_soft_matching"]


def fourier_box_filter(x: Tensor, threshold: int, scale: float) -> Tensor:
    """Multiply the centred (2·threshold)² low-frequency box of the 2-D spectrum by `scale` (float32 FFT)."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    _, _, h, w = spectrum.shape
    mask = torch.ones(spectrum.shape, device=x.device)
    mask[..., h // 2 - threshold:h // 2 + threshold, w // 2 - threshold:w // 2 + threshold] = scale
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(x.dtype)


@dataclass(frozen=True)
class FreeU:
    """Output-block patch. Si et al. (2023), "FreeU: Free Lunch in Diffusion U-Net": where h entering an
    output block has width model_channels·4 (b1, s1) or ·2 (b2, s2), scale the first half of h's channels by
    b (FreeU_V2: by 1 + (b−1)·the min-max-normalised channel mean) and the skip's low frequencies by s."""

    scales: tuple[tuple[int, float, float], ...]  # (width, backbone factor, skip factor)
    v2: bool = False

    def __call__(self, h: Tensor, skip: Tensor, pc: PatchContext) -> tuple[Tensor, Tensor]:
        width = int(h.shape[1])
        for channels, b, s in self.scales:
            if channels == width:
                return self._backbone(h, b), self._skip(skip, s)
        return h, skip

    def _backbone(self, h: Tensor, b: float) -> Tensor:
        half = h.shape[1] // 2
        if self.v2:
            mean = h.mean(1).unsqueeze(1)
            flat = mean.view(mean.shape[0], -1)
            low = flat.min(dim=-1, keepdim=True).values[..., None, None]
            high = flat.max(dim=-1, keepdim=True).values[..., None, None]
            factor = (b - 1) * ((mean - low) / (high - low)) + 1
        else:
            factor = b
        return torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)

    @staticmethod
    def _skip(skip: Tensor, s: float) -> Tensor:
        try:
            return fourier_box_filter(skip, 1, s)
        except RuntimeError:  # a device without torch.fft (e.g. older MPS): filter on the CPU
            return fourier_box_filter(skip.cpu(), 1, s).to(skip.device)


# ---------------------------------------------------------------------------------------------------
# HyperTile

class HyperTile:
    """Self-attention input/output patches (tfernd/HyperTile): at the levels listed by max_depth, the
    queries are cut into nh×nw tiles, each tile a batch item, so attention costs drop with the tile count.

    As in ComfyUI 0.3.64 only the queries are tiled; its attention kernels then view the untiled keys and
    values with the queries' batch size, so tile i attends over the i-th band of tokens. Our attention does
    the same (CrossAttention.patched), which is what makes the results equal. Tile counts are drawn from the
    run's generator, as ComfyUI draws from torch's global one (there always 0 when only two counts fit)."""

    def __init__(self, tile_size: int, swap_size: int, max_depth: int, scale_depth: bool):
        self.latent_tile_size = max(32, tile_size) // 8
        self.swap_size, self.max_depth, self.scale_depth = swap_size, max_depth, scale_depth

    def tile(self, q: Tensor, k: Tensor, v: Tensor, pc: PatchContext) -> tuple[Tensor, Tensor, Tensor]:
        tokens = q.shape[-2]
        height, width = pc.original_shape[-2], pc.original_shape[-1]
        levels = [(height / 2 ** i) * (width / 2 ** i) for i in range(self.max_depth + 1)]
        if tokens not in levels:
            return q, k, v
        aspect = width / height
        h, w = round(math.sqrt(tokens * aspect)), round(math.sqrt(tokens / aspect))
        factor = 2 ** levels.index(tokens) if self.scale_depth else 1
        generator = pc.run.generator
        nh = self._random_divisor(h, self.latent_tile_size * factor, generator)
        nw = self._random_divisor(w, self.latent_tile_size * factor, generator)
        if nh * nw > 1:
            q = rearrange(q, "b (nh h nw w) c -> (b nh nw) (h w) c", h=h // nh, w=w // nw, nh=nh, nw=nw)
            pc.run.scratch[id(self)] = (nh, nw, h, w)
        return q, k, v

    def untile(self, out: Tensor, pc: PatchContext) -> Tensor:
        tiled = pc.run.scratch.pop(id(self), None)
        if tiled is None:
            return out
        nh, nw, h, w = tiled
        out = rearrange(out, "(b nh nw) hw c -> b nh nw hw c", nh=nh, nw=nw)
        return rearrange(out, "b nh nw (h w) c -> b (nh h nw w) c", h=h // nh, w=w // nw)

    def _random_divisor(self, value: int, min_value: int, generator: torch.Generator) -> int:
        """One of the `swap_size` largest tile counts value // d for divisors d ≥ min_value."""
        min_value = min(min_value, value)
        counts = [value // d for d in range(min_value, value + 1) if value % d == 0][:self.swap_size]
        if len(counts) > 1:
            return counts[int(torch.randint(0, len(counts) - 1, (1,), generator=generator).item())]
        return counts[0]


# ---------------------------------------------------------------------------------------------------
# Token merging

def bipartite_soft_matching(metric: Tensor, w: int, h: int, sx: int, sy: int, r: int,
                            generator: torch.Generator):
    """Bolya & Hoffman (2023), "Token Merging for Fast Stable Diffusion", random 2-D bipartite matching:
    one destination token drawn per sy×sx cell, the other tokens are sources; the r sources most similar
    (cosine) to a destination are averaged into it. Returns (merge, unmerge) functions for [B, N, C] tokens."""
    batch, n, _ = metric.shape
    if r <= 0 or w == 1 or h == 1:
        return (lambda x: x), (lambda x: x)
    with torch.no_grad():
        hsy, wsx = h // sy, w // sx
        pick = torch.randint(sy * sx, size=(hsy, wsx, 1), generator=generator).to(metric.device)
        cells = torch.zeros(hsy, wsx, sy * sx, device=metric.device, dtype=torch.int64)
        cells.scatter_(dim=2, index=pick, src=-torch.ones_like(pick, dtype=pick.dtype))
        cells = cells.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
        if hsy * sy < h or wsx * sx < w:  # tokens outside the whole cells stay sources
            grid = torch.zeros(h, w, device=metric.device, dtype=torch.int64)
            grid[:hsy * sy, :wsx * sx] = cells
        else:
            grid = cells
        order = grid.reshape(1, -1, 1).argsort(dim=1)  # destinations (-1) first, then sources (0)
        num_dst = hsy * wsx
        src_idx, dst_idx_all = order[:, num_dst:, :], order[:, :num_dst, :]

        def split(x):
            c = x.shape[-1]
            return (torch.gather(x, dim=1, index=src_idx.expand(batch, n - num_dst, c)),
                    torch.gather(x, dim=1, index=dst_idx_all.expand(batch, num_dst, c)))

        a, b = split(metric / metric.norm(dim=-1, keepdim=True))
        scores = a @ b.transpose(-1, -2)
        r = min(a.shape[1], r)
        best, best_dst = scores.max(dim=-1)
        ranked = best.argsort(dim=-1, descending=True)[..., None]
        kept, merged = ranked[..., r:, :], ranked[..., :r, :]
        merged_dst = torch.gather(best_dst[..., None], dim=-2, index=merged)

    def merge(x: Tensor) -> Tensor:
        src, dst = split(x)
        nb, t1, c = src.shape
        unmerged = torch.gather(src, dim=-2, index=kept.expand(nb, t1 - r, c))
        src = torch.gather(src, dim=-2, index=merged.expand(nb, r, c))
        dst = dst.scatter_reduce(-2, merged_dst.expand(nb, r, c), src, reduce="mean")
        return torch.cat([unmerged, dst], dim=1)

    def unmerge(x: Tensor) -> Tensor:
        n_kept = kept.shape[1]
        unmerged, dst = x[..., :n_kept, :], x[..., n_kept:, :]
        c = unmerged.shape[-1]
        src = torch.gather(dst, dim=-2, index=merged_dst.expand(batch, r, c))
        out = torch.zeros(batch, n, c, device=x.device, dtype=x.dtype)
        out.scatter_(dim=-2, index=dst_idx_all.expand(batch, num_dst, c), src=dst)
        sources = src_idx.expand(batch, src_idx.shape[1], 1)
        out.scatter_(dim=-2, index=torch.gather(sources, dim=1, index=kept).expand(batch, n_kept, c), src=unmerged)
        out.scatter_(dim=-2, index=torch.gather(sources, dim=1, index=merged).expand(batch, r, c), src=src)
        return out

    return merge, unmerge


class TokenMerging:
    """Self-attention input/output patches for ToMe at full resolution only: the queries are merged before
    attention (r = ratio·tokens) and the output unmerged after it. As in ComfyUI (which departs from tomesd
    here), the queries themselves are the similarity metric and the keys/values stay whole."""

    stride = 2

    def __init__(self, ratio: float):
        self.ratio = ratio

    def merge(self, q: Tensor, k: Tensor, v: Tensor, pc: PatchContext) -> tuple[Tensor, Tensor, Tensor]:
        _, _, height, width = pc.original_shape
        downsample = int(math.ceil(math.sqrt((height * width) // q.shape[1])))
        if downsample > 1:
            pc.run.scratch[id(self)] = None
            return q, k, v
        merge, unmerge = bipartite_soft_matching(
            q, int(math.ceil(width / downsample)), int(math.ceil(height / downsample)), self.stride, self.stride,
            int(q.shape[1] * self.ratio), pc.run.generator)
        pc.run.scratch[id(self)] = unmerge
        return merge(q), k, v

    def unmerge(self, out: Tensor, pc: PatchContext) -> Tensor:
        unmerge = pc.run.scratch.pop(id(self), None)
        return out if unmerge is None else unmerge(out)


# ---------------------------------------------------------------------------------------------------
# Kohya Deep Shrink

@dataclass(frozen=True)
class DeepShrink:
    """Input/output-block patches (kohya-ss "Deep Shrink"): while sigma is inside [sigma_end, sigma_start],
    shrink h after input block `block_number` by `factor`; any output block whose h no longer matches its
    skip's height is resized back to the skip's size."""

    block_number: int
    factor: float
    sigma_start: float
    sigma_end: float
    downscale_method: str
    upscale_method: str

    def shrink(self, h: Tensor, pc: PatchContext) -> Tensor:
        if pc.block[1] != self.block_number:
            return h
        sigma = pc.sigmas[0].item()
        if not self.sigma_end <= sigma <= self.sigma_start:
            return h
        shrink = 1.0 / self.factor  # multiplied, not divided: ComfyUI's rounding of the new size
        return upscale(h, round(h.shape[-1] * shrink), round(h.shape[-2] * shrink), self.downscale_method)

    def restore(self, h: Tensor, skip: Tensor, pc: PatchContext) -> tuple[Tensor, Tensor]:
        if h.shape[2] != skip.shape[2]:
            h = upscale(h, skip.shape[-1], skip.shape[-2], self.upscale_method)
        return h, skip
