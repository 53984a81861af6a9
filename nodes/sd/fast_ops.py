"""Cheaper forms of what the UNet and VAE compute, with the same results (up to float rounding):
nearest-×2 upsampling followed by a 3×3 conv as one stride-2 transposed conv (or NNPACK's banded conv),
and in-place activations and residual adds whenever no autograd graph records the forward pass
(inference, not training). Also the tests the other conv paths (nnpack.py, winograd.py, few_rows.py)
share before they take a call.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Turns a block of (fp16) weight rows into the compute dtype, into a reused buffer valid until the next
# call: how the lean layers hand their weights to the hand-written conv and GEMM paths.
Cast = Callable[[torch.Tensor], torch.Tensor]


def no_autograd() -> bool:
    """In-place updates are safe only when no graph keeps the overwritten values for a backward pass."""
    return torch.is_inference_mode_enabled() or not torch.is_grad_enabled()


def eager_cpu_fp32(x: torch.Tensor) -> bool:
    """Whether a hand-written CPU path may take `x`: fp32 on the CPU, outside autograd (its out= and
    in-place ops record no graph) and outside torch.compile (whose graphs keep torch's own ops)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and no_autograd()
            and not torch.compiler.is_compiling())


def plain_conv3x3(conv: nn.Conv2d) -> bool:
    """Whether `conv` computes exactly F.conv2d(x, weight, bias, padding=1) with a 3×3 kernel."""
    return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


def is_channels_last(x: torch.Tensor) -> bool:
    """Stored channels-last (a tensor that is both, e.g. of 1×1 images, counts as plain contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """3×3 conv weight (out, in, 3, 3) → the (in, out, 4, 4) transposed-conv weight that equals
    conv3×3(nearest_upsample_2x(x)). Along each axis, output pixel 2i reads input rows i-1 (tap 0) and
    i (taps 1+2), output 2i+1 reads rows i (taps 0+1) and i+1 (tap 2); a transposed conv with stride 2,
    padding 1 lays those out as kernel positions [tap 2, taps 1+2, taps 0+1, tap 0]."""
    def regroup(w: torch.Tensor, dim: int) -> torch.Tensor:
        t0, t1, t2 = w.unbind(dim)
        return torch.stack([t2, t1 + t2, t0 + t1, t0], dim=dim)

    return regroup(regroup(weight, 2), 3).transpose(0, 1).contiguous()


# Below this many input pixels (batch × height × width) regrouping the weights and oneDNN's transposed
# conv cost more than the FLOPs they save (measured, 1 thread: 0.84× the time at 2×16×16 with 640
# channels, 1.15× with 1280, 3.1× at 2×8×8; 0.52× at 2×32×32).
SUBPIXEL_MIN_PIXELS = 1024


def upsample2x_conv3x3(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """conv(nearest ×2 of x) for a 3×3, padding-1 conv. Where NNPACK suits the upsampled image, by
    NNPACK a band of upsampled rows at a time (F(6×6, 3×3): 0.61–0.65× the transposed conv's time on the
    VAE decoder's NCHW activations, 0.93× in the whole decode against the best transposed variant). Else, on inputs of SUBPIXEL_MIN_PIXELS or more, as one transposed conv on
    the small input: each output pixel sees only 2×2 distinct input pixels, so 16 multiply-adds per input
    pixel replace 36 (0.44× the FLOPs). Neither materialises the 4× larger upsampled input."""
    from nodes.sd import nnpack  # here: nnpack imports this module
    bias = conv.bias.to(x.dtype) if conv.bias is not None else None
    if nnpack.suits(conv, x, upsample=True):
        return nnpack.conv3x3(x, conv.weight.to(x.dtype), bias, upsample=True)
    if x.shape[0] * x.shape[-2] * x.shape[-1] < SUBPIXEL_MIN_PIXELS:
        return conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    weight = subpixel_weight(conv.weight.to(x.dtype))
    return F.conv_transpose2d(x, weight, bias, stride=2, padding=1)
