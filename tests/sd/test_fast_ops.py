"""The cheaper forms in nodes/sd/fast_ops.py give what the plain forms give (to float rounding)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nodes.sd.fast_ops import SUBPIXEL_MIN_PIXELS, no_autograd, upsample2x_conv3x3


@pytest.mark.parametrize("shape", [(1, 4, 32, 32), (2, 3, 17, 40), (1, 5, 4, 4)])
@pytest.mark.parametrize("bias", [True, False])
def test_upsample2x_conv3x3_equals_nearest_upsample_then_conv(shape, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 6, 3, padding=1, bias=bias)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        got = upsample2x_conv3x3(x, conv)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_large_inputs_take_the_transposed_conv_path(monkeypatch):
    """Both paths are exercised: the shortcut is used from SUBPIXEL_MIN_PIXELS on, not below."""
    calls = []
    real = F.conv_transpose2d
    monkeypatch.setattr(F, "conv_transpose2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    conv = nn.Conv2d(2, 2, 3, padding=1)
    side = int(SUBPIXEL_MIN_PIXELS ** 0.5)
    upsample2x_conv3x3(torch.randn(1, 2, side, side), conv)
    assert calls == [1]
    upsample2x_conv3x3(torch.randn(1, 2, 4, 4), conv)
    assert calls == [1]


def test_in_place_only_without_autograd():
    assert no_autograd() is False  # tests run with grad enabled by default
    with torch.no_grad():
        assert no_autograd()
    with torch.inference_mode():
        assert no_autograd()


def test_geglu_works_in_its_projection_without_autograd_and_keeps_the_graph_with_it():
    """value · GELU(gate) written over the projection's output at inference (the exact erf GELU, as the
    plain form); with autograd on, the plain out-of-place form, so gradients still flow."""
    from nodes.sd.attention import GEGLU

    torch.manual_seed(0)
    geglu = GEGLU(8, 16)
    x = torch.randn(2, 5, 8)
    value, gate = geglu.proj(x).detach().double().chunk(2, dim=-1)
    expected = value * 0.5 * gate * (1 + torch.erf(gate / 2**0.5))
    projected = []
    geglu.proj.register_forward_hook(lambda module, args, out: projected.append(out))
    with torch.inference_mode():
        got = geglu(x)
    assert got.untyped_storage().data_ptr() == projected[-1].untyped_storage().data_ptr()
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    trained = geglu(x)
    trained.sum().backward()
    assert geglu.proj.weight.grad is not None
    assert trained.untyped_storage().data_ptr() != projected[-1].untyped_storage().data_ptr()
    torch.testing.assert_close(trained.detach().double(), expected, rtol=1e-6, atol=1e-6)
