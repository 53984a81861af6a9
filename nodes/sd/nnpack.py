"""3×3 convolutions on the CPU through NNPACK, the convolution library PyTorch's CPU builds carry.

For one image NNPACK runs Winograd's F(6×6, 3×3): 64 multiplications per 6×6 output tile where the
direct conv spends 324 (0.20×), with hand-vectorised (AVX2 / NEON) tile transforms — the transforms
that keep our own F(4×4, 3×3) (nodes/sd/winograd.py, eager PyTorch) from winning on large images.
Measured on 2 cores against the best of oneDNN and ours (docs/performance-history.md, fourth
pass): 0.51–0.87× at 128–960 channels on 64²–512² images; a loss below 64² pixels (1.1–1.7× at 48²
and 32²) and at 32–64 channels (1.2–2.2×).

Three things about the op shape how it is used here:
- For a batch of several images PyTorch's wrapper takes NNPACK's training-style path, which was 3–5×
  slower here; so each image is its own call.
- Its workspace (the transformed input and output tiles, ~1.8× the input plus the output) is kept by
  the calling thread for the life of the process and never shrinks, so a conv runs in bands of rows
  whose input and output stay under BAND_BYTES: that bounds both the peak and what stays held.
- Its thread pool is sized once, by torch's thread count at the first call; `available()` makes that
  first call itself with the process's default count (a small model's 1-thread block must not fix it).

Nearest-×2 upsampling followed by a 3×3 conv (the VAE decoder's and UNet's upsamplers) is a band of the
upsampled rows at a time too: the 4× larger upsampled image is never held whole. The results differ
from the direct conv by float rounding (7e-6–1e-5 of the output's largest value against float64; ours
6e-6–8e-6, oneDNN's 1e-6–5e-6), far inside the conformance tolerance (5e-4).
"""
from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from nodes.sd.fast_ops import eager_cpu_fp32, plain_conv3x3

# Where it wins (see the docstring): each image at least 64 × 64 pixels, 128 channels in and out.
MIN_PIXELS = 64 * 64
MIN_CHANNELS = 128
# One band's input + output rows: on the decoder's 512²-pixel convs, bands of ~100 MB took 0.98–1.01×
# the whole image's time, of 25–50 MB 1.1–1.4×; what NNPACK then keeps is ~1.8× a band.
BAND_BYTES = 128 * 1024**2
# Output rows of a band come in multiples of NNPACK's 6-row tiles.
TILE = 6


@functools.cache
def _nnpack() -> bool:
    """NNPACK is in this torch build and runs on this CPU (x86 needs AVX2); its thread pool started."""
    if not torch.backends.nnpack.is_available():  # also initialises NNPACK
        return False
    from nodes.sd.device import default_cpu_threads
    before = torch.get_num_threads()
    torch.set_num_threads(default_cpu_threads())
    try:  # the first call creates the pool with the current thread count
        with torch.inference_mode():
            torch._nnpack_spatial_convolution(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 3, 3), None, [1, 1], [1, 1])
    except RuntimeError:
        return False
    finally:
        torch.set_num_threads(before)
    return True


def available() -> bool:
    """Whether convs may go through NNPACK (NODEGRAPH_NNPACK=0 turns it off)."""
    return os.environ.get("NODEGRAPH_NNPACK", "1") != "0" and _nnpack()


def suits(conv: torch.nn.Conv2d, x: torch.Tensor, *, upsample: bool = False) -> bool:
    """Whether `conv(x)` (of x upsampled nearest ×2 when `upsample`) is a plain 3×3 fp32 CPU conv
    large enough to gain, outside autograd and torch.compile."""
    if not plain_conv3x3(conv) or x.dim() != 4 or min(x.shape[1], conv.out_channels) < MIN_CHANNELS:
        return False
    scale = 4 if upsample else 1
    return x.shape[2] * x.shape[3] * scale >= MIN_PIXELS and eager_cpu_fp32(x) and available()


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
            upsample: bool = False) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=1) for an (out, in, 3, 3) fp32 weight — of x upsampled
    nearest ×2 when `upsample` — image by image and band by band. The result is NCHW-contiguous."""
    n, c, h, w = x.shape
    scale = 2 if upsample else 1
    height, width = h * scale, w * scale
    weight = weight.contiguous()
    rows = band_rows(c + weight.shape[0], height, width)
    if not upsample and rows >= height:  # the whole image at once: NNPACK pads it
        x = x.contiguous()
        if n == 1:
            return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1], [1, 1])
        return torch.cat([torch._nnpack_spatial_convolution(x[i:i + 1], weight, bias, [1, 1], [1, 1])
                          for i in range(n)])
    out = x.new_empty(n, weight.shape[0], height, width)
    for i in range(n):
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            band = _band(x[i:i + 1], top - 1, bottom + 1, scale)  # one row of context each side
            out[i:i + 1, :, top:bottom] = torch._nnpack_spatial_convolution(band, weight, bias, [0, 1], [1, 1])
    return out


def band_rows(channels: int, height: int, width: int) -> int:
    """Output rows per band: input + output (`channels` in all) under BAND_BYTES, whole tiles, and the
    image split into bands of equal height."""
    per_row = channels * width * 4
    rows = max(TILE, BAND_BYTES // per_row // TILE * TILE)
    bands = -(-height // rows)
    return -(-height // bands // TILE) * TILE if bands > 1 else height


def _band(x: torch.Tensor, top: int, bottom: int, scale: int) -> torch.Tensor:
    """Rows top … bottom - 1 of the (1, c, h, w) image x (nearest-upsampled by `scale`), as a new
    contiguous tensor; rows outside the image are zeros (the conv's padding)."""
    _, c, h, w = x.shape
    height = h * scale
    band = x.new_empty(1, c, bottom - top, w * scale)
    first, last = max(top, 0), min(bottom, height)
    band[:, :, :first - top].zero_()
    band[:, :, last - top:].zero_()
    if scale == 1:
        band[:, :, first - top:last - top] = x[:, :, first:last]
    else:
        low = first // scale
        rows = F.interpolate(x[:, :, low:(last - 1) // scale + 1], scale_factor=float(scale), mode="nearest")
        skip = first - low * scale
        band[:, :, first - top:last - top] = rows[:, :, skip:skip + last - first]
    return band
