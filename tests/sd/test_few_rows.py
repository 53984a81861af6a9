"""Linear layers and 3×3 convs over few rows as weight-rows GEMMs (nodes/sd/few_rows.py): the same as
torch's ops within float rounding (checked against float64), with fp16 weights cast a block at a time,
used only where they gain, and reached from the casting layers of a loaded model in both weight modes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.sd import few_rows
from nodes.sd.weight_casting import _cast_weight, enable_casting


def _cast(w: torch.Tensor) -> torch.Tensor:
    return _cast_weight(w, torch.float32)


def _relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return (got.double() - exact).abs().max().item() / exact.abs().max().item()


@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("shape, out_features", [((2, 64, 1280), 1280), ((128, 1280), 10240), ((3, 5, 1100), 70)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_the_plain_linear(weight_dtype, shape, out_features, with_bias, monkeypatch):
    monkeypatch.setattr(few_rows, "BLOCK_BYTES", 64 * 1100 * 4)  # several blocks, the last one partial
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    weight = (torch.randn(out_features, shape[-1], generator=g) / shape[-1] ** 0.5).to(weight_dtype)
    bias = torch.randn(out_features, generator=g) if with_bias else None
    with torch.inference_mode():
        got = few_rows.linear(x, weight, bias, _cast)
    exact = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    assert got.shape == exact.shape and got.dtype == torch.float32 and got.is_contiguous()
    assert _relative_error(got, exact) <= 1e-5


@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("n, c, out, h, w", [(2, 640, 700, 4, 4), (1, 700, 640, 3, 5), (4, 640, 640, 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("blocks", ["one", "several"])
def test_conv3x3_equals_the_plain_conv(weight_dtype, n, c, out, h, w, channels_last, blocks, monkeypatch):
    if blocks == "several":  # 64 weight rows a block, the last one partial
        monkeypatch.setattr(few_rows, "CONV_BLOCK_BYTES", 64 * c * 9 * 4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, c, h, w, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = (torch.randn(out, c, 3, 3, generator=g) / (3 * c**0.5)).to(weight_dtype)
    bias = torch.randn(out, generator=g)
    with torch.inference_mode():
        got = few_rows.conv3x3(x, weight, bias, _cast)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    assert got.shape == exact.shape
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last and h * w > 1 else torch.contiguous_format)
    assert _relative_error(got, exact) <= 1e-5


def _conv(c, out, **kwargs):
    return torch.nn.Conv2d(c, out, **{"kernel_size": 3, "padding": 1, **kwargs})


def test_used_only_where_it_gains():
    with torch.inference_mode():
        assert few_rows.linear_suits(torch.zeros(2, 64, 1280), 1280, 10240)  # 128 rows, the UNet's 8² level
        assert few_rows.linear_suits(torch.zeros(2, 64, 5120), 5120, 1280)
        assert few_rows.linear_suits(torch.zeros(2, 16, 1280), 1280, 1280)  # 32 rows
        assert few_rows.linear_suits(torch.zeros(2, 256, 1280), 1280, 10240)  # 512 rows, a large weight
        assert not few_rows.linear_suits(torch.zeros(2, 64, 1280), 1280, 1280)  # too small a weight: lost
        assert not few_rows.linear_suits(torch.zeros(2, 256, 5120), 5120, 1280)
        assert not few_rows.linear_suits(torch.zeros(2, 1024, 1280), 1280, 10240)  # 2048 rows: lost
        assert not few_rows.linear_suits(torch.zeros(2, 77, 768), 768, 10240)  # few features: lost
        assert not few_rows.linear_suits(torch.zeros(2, 64, 1280).double(), 1280, 10240)
        assert few_rows.conv_suits(_conv(1280, 1280), torch.zeros(2, 1280, 4, 4))
        assert few_rows.conv_suits(_conv(1280, 1280), torch.zeros(2, 1280, 8, 8))
        assert few_rows.conv_suits(_conv(1280, 1280), torch.zeros(4, 1280, 8, 8))
        assert not few_rows.conv_suits(_conv(1280, 1280), torch.zeros(2, 1280, 16, 16))  # Winograd's
        assert not few_rows.conv_suits(_conv(320, 320), torch.zeros(2, 320, 4, 4))  # few channels
        assert not few_rows.conv_suits(_conv(1280, 1280, stride=2), torch.zeros(2, 1280, 4, 4))
        assert not few_rows.conv_suits(_conv(1280, 1280, kernel_size=1, padding=0), torch.zeros(2, 1280, 4, 4))
    assert not few_rows.linear_suits(torch.zeros(2, 64, 1280).requires_grad_(), 1280, 10240)  # training: torch's ops
    assert not few_rows.conv_suits(_conv(1280, 1280), torch.zeros(2, 1280, 4, 4).requires_grad_())


@pytest.mark.parametrize("lean", [True, False])
def test_the_model_layers_route_through_it(lean, monkeypatch):
    calls = []
    for name in ("linear", "conv3x3"):
        real = getattr(few_rows, name)
        monkeypatch.setattr(few_rows, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    torch.manual_seed(2)
    model = torch.nn.Sequential(_conv(640, 1280), torch.nn.Flatten(2), torch.nn.Unflatten(2, (4, 4)))
    head = torch.nn.Linear(1280, 1280)
    model.half().float(), head.half().float()  # weights an fp16 file can hold exactly, in both modes
    x = torch.randn(2, 640, 4, 4)
    with torch.inference_mode():
        expected = head(model(x).flatten(2).transpose(1, 2))
        if lean:
            model.half(), head.half()
        enable_casting(model, torch.float32), enable_casting(head, torch.float32)
        got = head(model(x).flatten(2).transpose(1, 2))
    assert calls == ["conv3x3", "linear"]
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
