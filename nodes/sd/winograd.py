"""3×3 convolutions on the CPU by Winograd's minimal filtering, F(4×4, 3×3) (Lavin & Gray, 2015).

A 3×3, stride-1 conv spends 9 multiply-adds per output pixel and channel pair. Winograd's algorithm
computes each 4×4 output tile from a 6×6 input tile with 36 (0.25×): the input tiles and the weights
are transformed (cheap, linear in the data), the 36 tile positions become 36 independent matrix
products over the channels (where the time goes, as one batched GEMM), and the products are
transformed back. The convolutions of the UNet and the VAE decoder already run at this machine's fp32
GEMM rate, so fewer multiplications is the only way left to make them faster.

It wins where the GEMMs dominate the transforms — many channels and many pixels: measured on 2 cores,
0.46–0.56× oneDNN's time at 320–512 channels on 64²–128² inputs, 0.70× at 256 channels on 256², 0.96×
at 128 channels on 512² (not used there), a loss on 8×8 (docs/performance.md, issue 14's "Second pass").
The result differs from the direct conv by float rounding only: ~7e-6 of the output's largest value
against float64 (the direct conv: ~2e-6), far inside the conformance tolerance (5e-4).
"""
from __future__ import annotations

import functools

import torch

from nodes.sd.fast_ops import no_autograd

# Below these, the transforms and a small GEMM cost more than the multiplications saved. Both the input
# and the output channels: that also keeps the VAE decoder's full-resolution level (128 channels, where
# it gains least: 0.81× for its 256 → 128 conv) on oneDNN, so a decode's peak memory stays within
# memory_limits' estimate (the transformed tiles are 2.25× the conv's input and output).
MIN_CHANNELS = 256
# And enough pixels × input channels (batch × height × width × in): measured at 2 × 16 × 16 pixels, 0.85×
# the direct time with 1280 channels, 1.07× with 640; at 2 × 32 × 32, 0.66× with 320; 1.62× at 2 × 8 × 8.
MIN_WORK = 2 * 32 * 32 * 320
# The transformed input and output tiles are 2.25× the input and output; above this, direct conv.
MAX_TRANSFORMED_BYTES = 2 * 1024**3


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
    if (conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1)
            or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros"):
        return False
    if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if min(x.shape[1], conv.out_channels) < MIN_CHANNELS:
        return False
    n, c, h, w = x.shape
    if n * h * w * c < MIN_WORK or n * h * w < 512 or 2.25 * n * h * w * (c + conv.out_channels) * 4 > MAX_TRANSFORMED_BYTES:
        return False
    return no_autograd() and not torch.compiler.is_compiling()


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=1) for a (out, in, 3, 3) weight, by F(4×4, 3×3), in x's memory
    format (channels-last in, channels-last out)."""
    kb, kg, ka = _matrices()
    n, c, h, w = x.shape
    out_channels = weight.shape[0]
    th, tw = -(-h // 4), -(-w // 4)  # tiles; a ragged edge is padded with zeros and cropped after
    padded = x.new_zeros(n, 4 * th + 2, 4 * tw + 2, c)  # NHWC: each tile's channels are contiguous
    padded[:, 1:h + 1, 1:w + 1] = x.permute(0, 2, 3, 1)
    tiles = padded.unfold(1, 6, 4).unfold(2, 6, 4)  # (n, th, tw, c, 6, 6), overlapping by 2
    count = n * th * tw
    v = torch.matmul(kb, tiles.reshape(count * c, 36).t())  # (36, count·c): transformed input
    u = torch.matmul(kg, weight.reshape(out_channels * c, 9).t()).view(36, out_channels, c)
    m = torch.bmm(v.view(36, count, c), u.transpose(1, 2))  # (36, count, out): the 36 GEMMs
    y = torch.matmul(ka, m.view(36, count * out_channels)).view(4, 4, n, th, tw, out_channels)
    ragged = (4 * th, 4 * tw) != (h, w)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, 4 * th, 4 * tw, out_channels)  # a fresh tensor
        if ragged:
            y = y[:, :h, :w].contiguous()
        if bias is not None:
            y.add_(bias)
        return y.permute(0, 3, 1, 2)
    y = y.permute(2, 5, 3, 0, 4, 1).reshape(n, out_channels, 4 * th, 4 * tw)
    if ragged:
        y = y[:, :, :h, :w].contiguous()
    if bias is not None:
        y.add_(bias.view(-1, 1, 1))
    return y


def conv_forward(conv: torch.nn.Conv2d, x: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
    """`conv`'s forward with these (already cast) weights: Winograd where it `suits`, else oneDNN's."""
    if suits(conv, x):
        return conv3x3(x, weight, bias)
    return conv._conv_forward(x, weight, bias)
