"""3×3 convolutions on the CPU by Winograd's minimal filtering, F(4×4, 3×3) (Lavin & Gray, 2015).

A 3×3, stride-1 conv spends 9 multiply-adds per output pixel and channel pair. Winograd's algorithm
computes each 4×4 output tile from a 6×6 input tile with 36 (0.25×): the input tiles and the weights
are transformed (cheap, linear in the data), the 36 tile positions become 36 independent matrix
products over the channels (where the time goes, as one batched GEMM), and the products are
transformed back. The convolutions of the UNet and the VAE decoder already run at this machine's fp32
GEMM rate, so fewer multiplications is the only way left to make them faster.

It wins where the GEMMs dominate the transforms — many channels and many pixels: measured on 2 cores,
0.46–0.56× oneDNN's time at 320–512 channels on 64²–128² inputs, 0.70× at 256 channels on 256², 0.96×
at 128 channels on 512² (not used there), a loss on 8×8 (docs/performance-history.md, second pass).
The result differs from the direct conv by float rounding only: ~7e-6 of the output's largest value
against float64 (the direct conv: ~2e-6), far inside the conformance tolerance (5e-4).
"""
from __future__ import annotations

import functools

import torch

from nodes.sd import scratch
from nodes.sd.fast_ops import Cast, eager_cpu_fp32, is_channels_last, plain_conv3x3

# Below these, the transforms and a small GEMM cost more than the multiplications saved. Both the input
# and the output channels: the VAE decoder's full-resolution level (128 channels) stays on oneDNN, where
# Winograd's transforms eat the saving (0.96× for 128 → 128; 256 → 128 measured 0.81× in one pass and
# 1.25× in another).
MIN_CHANNELS = 256
# And enough pixels × input channels (batch × height × width × in): measured at 2 × 16 × 16 pixels, 0.85×
# the direct time with 1280 channels, 1.07× with 640; at 2 × 32 × 32, 0.66× with 320; 1.62× at 2 × 8 × 8.
MIN_WORK = 2 * 32 * 32 * 320
# The transformed tiles of one band of tile rows: bounds the working memory, which for the whole image at
# once would be 2.25× the conv's input and output (measured: the same speed either way).
CHUNK_BYTES = 32 * 1024**2
# The weight is cast (lean mode) and transformed this many bytes of fp32 weight at a time, so the cast
# copy never leaves the cache: 0.72–0.76× the time of casting the whole weight and then transforming it
# (1280 → 1280: 36 against 50 ms; fp32 weights 0.81–0.88×); 256 KB blocks were slower again, 4 MB 0.8×.
TRANSFORM_BLOCK_BYTES = 1024**2


@functools.cache
def _matrices() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kronecker forms of the F(4, 3) transforms for the interpolation points 0, ±1, ±2, ∞: input
    (36 × 36, vec(Bᵀ d B) = KB vec(d)), weight (36 × 9) and output (16 × 36), built in float64."""
    bt = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
    g = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
    at = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                      dtype=torch.float64)
    return torch.kron(bt, bt).float(), torch.kron(g, g).float(), torch.kron(at, at).float()


def suits(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    """Whether `conv(x)` is a 3×3 / stride 1 / padding 1 fp32 CPU conv large enough to gain, outside
    autograd and torch.compile (whose graphs keep oneDNN's conv)."""
    if not plain_conv3x3(conv) or x.dim() != 4 or min(x.shape[1], conv.out_channels) < MIN_CHANNELS:
        return False
    n, c, h, w = x.shape
    return n * h * w * c >= MIN_WORK and n * h * w >= 512 and eager_cpu_fp32(x)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            cast: Cast | None = None) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=1) for a (out, in, 3, 3) weight, by F(4×4, 3×3), in x's memory
    format (channels-last in, channels-last out). `cast` turns a block of weight rows into x's dtype
    (the lean weights; into a reused buffer, valid until the next); without it, the weight is x's dtype."""
    n, _, h, w = x.shape
    u = _transformed_weight(weight, cast)
    if is_channels_last(x):
        out = x.new_empty(n, h, w, weight.shape[0])
        _winograd(x, u, out, channels_last=True)
        if bias is not None:
            out.add_(bias)
        return out.permute(0, 3, 1, 2)
    out = x.new_empty(n, weight.shape[0], h, w)
    _winograd(x, u, out, channels_last=False)
    if bias is not None:
        out.add_(bias.view(-1, 1, 1))
    return out


def _transformed_weight(weight: torch.Tensor, cast: Cast | None = None) -> torch.Tensor:
    """(out, in, 3, 3) → the 36 transformed (in, out) matrices of the tile positions, in this thread's
    scratch buffer (4× the weight: 472 MB for the UNet's 2560 → 1280 conv; valid until the next conv),
    a block of output channels at a time (TRANSFORM_BLOCK_BYTES)."""
    _, kg, _ = _matrices()
    out_channels, c = weight.shape[:2]
    u = scratch.buffer("winograd weight", (36, out_channels * c), kg.dtype)
    block = max(1, TRANSFORM_BLOCK_BYTES // (c * 9 * kg.element_size()))
    for o0 in range(0, out_channels, block):
        o1 = min(out_channels, o0 + block)
        rows = weight[o0:o1] if cast is None else cast(weight[o0:o1])
        torch.mm(kg, rows.reshape((o1 - o0) * c, 9).t(), out=u[:, o0 * c:o1 * c])
    return u.view(36, out_channels, c).transpose(1, 2)


def _winograd(x: torch.Tensor, u: torch.Tensor, out: torch.Tensor, channels_last: bool) -> None:
    """Write conv3x3(x) with the transformed weights `u` (36, in, out) into `out` ((n, h, w, out) when
    channels_last, else (n, out, h, w)), a band of tile rows at a time (CHUNK_BYTES)."""
    kb, _, ka = _matrices()
    n, c, h, w = x.shape
    out_channels = u.shape[2]
    th, tw = -(-h // 4), -(-w // 4)  # tiles; a ragged edge is padded with zeros and cropped after
    rows = max(1, min(th, CHUNK_BYTES // (36 * n * tw * max(c, out_channels) * 4)))
    source = x.permute(0, 2, 3, 1)  # NHWC: each tile's channels are contiguous
    for r0 in range(0, th, rows):
        band = min(th, r0 + rows) - r0
        first = 4 * r0 - 1  # the band's input rows: first … first + 4·band + 1, zero outside the image
        padded = x.new_zeros(n, 4 * band + 2, 4 * tw + 2, c)
        top, bottom = max(first, 0), min(first + 4 * band + 2, h)
        padded[:, top - first:bottom - first, 1:w + 1] = source[:, top:bottom]
        tiles = padded.unfold(1, 6, 4).unfold(2, 6, 4)  # (n, band, tw, c, 6, 6), overlapping by 2
        count = n * band * tw
        v = torch.matmul(kb, tiles.reshape(count * c, 36).t())  # (36, count·c): transformed input
        m = torch.bmm(v.view(36, count, c), u)  # (36, count, out): the 36 GEMMs
        y = torch.matmul(ka, m.view(36, count * out_channels)).view(4, 4, n, band, tw, out_channels)
        rows_out = min(4 * (r0 + band), h) - 4 * r0  # fewer past a ragged bottom edge
        if channels_last:
            y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, 4 * band, 4 * tw, out_channels)
            out[:, 4 * r0:4 * r0 + rows_out] = y[:, :rows_out, :w]
        else:
            y = y.permute(2, 5, 3, 0, 4, 1).reshape(n, out_channels, 4 * band, 4 * tw)
            out[:, :, 4 * r0:4 * r0 + rows_out] = y[:, :, :rows_out, :w]
