"""Linear layers and 3×3 convolutions over few rows — the UNet's lowest levels, the time embedding —
as one GEMM per block of weight rows: outᵀ = W · xᵀ.

With few rows (tokens × batch) such a layer is bound by reading its weights, not by arithmetic. In the
lean mode the plain call also casts the whole fp16 weight into a buffer far larger than the cache,
written to memory and read back; and the x · Wᵀ form was measured slower than W · xᵀ on these shapes
even in fp32 (our reading: the threads then split the few rows of x, each streaming all of W). A block
of weight rows at a time, W · xᵀ splits the weights between the threads and casts each block into a
buffer that stays in the cache. Measured on 2 cores (docs/performance-history.md, third
pass): 0.60–0.97× the lean layer's time and 0.63–0.94× the fp32 layer's on the UNet's 8² and 16²
shapes; the 3×3 convs over ≤ 256 pixels (im2col + this GEMM) 0.26–0.73× (fifth pass). Where it
lost (few input features, many rows or pixels) the plain ops keep those shapes. The results equal the plain ops' up to
float summation order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodes.sd.fast_ops import Cast, eager_cpu_fp32, is_channels_last, plain_conv3x3

# Linear layers: rows (tokens × batch) up to which the weight-rows GEMM can win, the fewest input
# features (768 lost: 1.13×), and the weight elements it must stream per row — the layer must be
# weight-bound. Measured lean against the plain cast + addmm (fifth pass): 0.46–0.85× at 32 rows,
# 0.68–0.94× at 128 rows for 1280 → 10240 and 5120 → 1280 (≥ 51200 per row), 0.79–0.92× and 0.85–1.04×
# for 1280 → 10240 over 256 and 512 rows (51200, 25600); lost with 1280 → 1280 over 128–512 rows
# (1.06–1.17×, ≤ 12800) and 5120 → 1280 over 512 (1.03–1.17×, 12800).
MAX_ROWS = 512
MIN_FEATURES = 1024
MIN_WEIGHTS_PER_ROW = 16384
# 3×3 convs by im2col, lean, against oneDNN (which is slow on these: 1280 → 1280 over 2 × 8 × 8 takes
# 3–4× the time of 1280 → 640): 0.26–0.28× at 2 × 4 × 4 pixels, 0.37–0.39× at 1 × 8 × 8, 0.51–0.60× at
# 2 × 8 × 8 with 1280 channels (0.86–0.95× with 640 in or out), 0.70–0.73× at 4 × 8 × 8; at 2 × 16 × 16
# Winograd takes them (0.77–0.84× vs 0.86–1.17× here). Whole UNet, lean: 0.95× the step at 512², 0.89×
# at 256² against the earlier limit of 64 pixels (docs/performance-history.md, fifth pass).
MAX_CONV_PIXELS = 256
MIN_CONV_CHANNELS = 640
# Weight rows per block: a block cast to fp32 stays inside the 32 MB last-level cache. The convs' GEMMs
# have more columns (pixels) and run better on taller blocks (2 × 8 × 8: 0.54× oneDNN with 16 MB, 0.63×
# with 4 MB; over 2 × 4 × 4 the two are even).
BLOCK_BYTES = 4 * 1024**2
CONV_BLOCK_BYTES = 16 * 1024**2

def linear_suits(x: torch.Tensor, in_features: int, out_features: int) -> bool:
    rows = x.numel() // in_features
    return (in_features >= MIN_FEATURES and rows <= MAX_ROWS
            and in_features * out_features >= rows * MIN_WEIGHTS_PER_ROW and eager_cpu_fp32(x))


def conv_suits(conv: torch.nn.Conv2d, x: torch.Tensor) -> bool:
    if not plain_conv3x3(conv) or x.dim() != 4:
        return False
    n, c, h, w = x.shape
    return n * h * w <= MAX_CONV_PIXELS and min(c, conv.out_channels) >= MIN_CONV_CHANNELS and eager_cpu_fp32(x)


def weight_rows_matmul(weight: torch.Tensor, rhs: torch.Tensor, cast: Cast, block_bytes: int) -> torch.Tensor:
    """weight (out, k) in any float dtype · rhs (k, rows) in fp32 → (out, rows), a block of weight rows
    (`block_bytes` of them in fp32) at a time; `cast` turns a block into the compute dtype (into a
    reused buffer: valid until the next)."""
    out_features, k = weight.shape
    out = rhs.new_empty(out_features, rhs.shape[1])
    block = max(64, min(out_features, block_bytes // (4 * k)))
    for start in range(0, out_features, block):
        torch.mm(cast(weight[start:start + block]), rhs, out=out[start:start + block])
    return out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cast: Cast) -> torch.Tensor:
    """F.linear(x, weight, bias) for `linear_suits` inputs; `bias` already in x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    out_t = weight_rows_matmul(weight, rows.t(), cast, BLOCK_BYTES)  # (out, rows)
    out = out_t.t().contiguous()  # row-major, as F.linear's (the next ops expect it)
    if bias is not None:
        out.add_(bias)
    return out.view(*x.shape[:-1], weight.shape[0])


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, cast: Cast) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=1) for `conv_suits` inputs, by im2col: the 9·in × pixels
    patch matrix is small here (≤ 256 pixels), the weight is what the GEMM streams."""
    n, c, h, w = x.shape
    patches = F.unfold(x, 3, padding=1).transpose(0, 1).reshape(c * 9, n * h * w)  # (9·in, n·h·w)
    # (out, n·h·w)
    out = weight_rows_matmul(weight.reshape(weight.shape[0], c * 9), patches, cast, CONV_BLOCK_BYTES)
    out = out.view(-1, n, h * w).transpose(0, 1)
    if bias is not None:
        out = out + bias.view(1, -1, 1)
    memory_format = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return out.reshape(n, -1, h, w).contiguous(memory_format=memory_format)
