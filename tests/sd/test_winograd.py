"""3×3 convolutions by Winograd's F(4×4, 3×3) (nodes/sd/winograd.py): the same as torch's conv within
float rounding, checked against float64, in both memory formats, with ragged edges, batches, channel
counts that differ in and out, and without a bias; used only where it gains and outside autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.sd import winograd
from nodes.sd.weight_casting import enable_casting


def conv_case(n, c, out, h, w, seed=0):
    """A random 3×3 conv problem: input (n, c, h, w), weight scaled to keep outputs near unit size, bias.
    Shared with the other conv paths' tests (test_nnpack.py)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(out, c, 3, 3, generator=g) / (3 * c**0.5)
    bias = torch.randn(out, generator=g)
    return x, weight, bias


@pytest.mark.parametrize("n, c, out, h, w", [(2, 8, 5, 16, 16), (1, 16, 16, 13, 7), (3, 4, 12, 6, 10), (1, 3, 2, 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_equals_the_direct_convolution(n, c, out, h, w, channels_last, with_bias):
    x, weight, bias = conv_case(n, c, out, h, w)
    bias = bias if with_bias else None
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = winograd.conv3x3(x, weight, bias)
        exact = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), padding=1)
    assert got.shape == exact.shape and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last and h * w > 1 else torch.contiguous_format)
    # F(4, 3)'s transforms multiply by up to 8 and 1/24: a few fp32 roundings, measured ~7e-6 of the
    # largest output on full-size shapes (the direct conv: ~2e-6)
    assert (got.double() - exact).abs().max().item() <= 2e-5 * exact.abs().max().item()


@pytest.mark.parametrize("channels_last", [False, True])
def test_bands_of_tile_rows_give_the_same_result(channels_last, monkeypatch):
    """Large inputs are computed a band of tile rows at a time (bounded working memory): bands of one
    and two tile rows, the last band ragged (h = 18: 5 tile rows, the last half outside the image)."""
    x, weight, bias = conv_case(2, 6, 5, 18, 11, seed=4)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    with torch.inference_mode():
        for rows in (1, 2):
            monkeypatch.setattr(winograd, "CHUNK_BYTES", rows * 36 * 2 * 3 * 6 * 4)  # n · tile columns · max(in, out)
            banded = winograd.conv3x3(x, weight, bias)
            assert (banded.double() - exact).abs().max().item() <= 2e-5 * exact.abs().max().item()


def test_fp16_weights_cast_and_transformed_a_block_of_output_channels_at_a_time(monkeypatch):
    """The lean path: an fp16 weight, cast by the caller's `cast` one block of output channels at a
    time (blocks of 2 channels here, the last one partial) — the same as the weight cast whole."""
    x, weight, bias = conv_case(1, 6, 7, 9, 9, seed=5)
    half = weight.half()
    exact = F.conv2d(x.double(), half.double(), bias.double(), padding=1)
    casts = []
    monkeypatch.setattr(winograd, "TRANSFORM_BLOCK_BYTES", 2 * 6 * 9 * 4)
    with torch.inference_mode():
        got = winograd.conv3x3(x, half, bias, lambda rows: casts.append(rows.shape[0]) or rows.float())
        whole = winograd.conv3x3(x, half.float(), bias)
    assert casts == [2, 2, 2, 1]
    assert torch.equal(got, whole)
    assert (got.double() - exact).abs().max().item() <= 2e-5 * exact.abs().max().item()


def test_a_full_size_unet_conv_against_float64():
    # the UNet's level-1 conv at 256²: 320 channels, 32×32 latent pixels, a CFG batch of 2
    x, weight, bias = conv_case(2, 320, 320, 32, 32, seed=3)
    with torch.inference_mode():
        got = winograd.conv3x3(x, weight, bias)
        direct = F.conv2d(x, weight, bias, padding=1)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    scale = exact.abs().max().item()
    assert (got.double() - exact).abs().max().item() <= 2e-5 * scale
    assert (got - direct).abs().max().item() <= 2e-5 * scale


def _conv(c, out, **kwargs):
    return torch.nn.Conv2d(c, out, **{"kernel_size": 3, "padding": 1, **kwargs})


def test_used_only_where_it_gains():
    big = torch.zeros(2, 320, 32, 32)
    with torch.inference_mode():
        assert winograd.suits(_conv(320, 320), big)
        assert not winograd.suits(_conv(128, 128), torch.zeros(1, 128, 64, 64))  # too few channels
        assert not winograd.suits(_conv(256, 128), torch.zeros(1, 256, 64, 64))  # in or out
        assert not winograd.suits(_conv(1280, 1280), torch.zeros(2, 1280, 8, 8))  # too few pixels
        assert winograd.suits(_conv(1280, 1280), torch.zeros(2, 1280, 16, 16))  # enough with many channels
        assert not winograd.suits(_conv(640, 640), torch.zeros(2, 640, 16, 16))  # not with fewer
        assert not winograd.suits(_conv(320, 320, stride=2), big)
        assert not winograd.suits(_conv(320, 320, kernel_size=1, padding=0), big)
        assert not winograd.suits(_conv(320, 320, padding_mode="reflect"), big)
        assert not winograd.suits(_conv(320, 320), big.double())
    assert not winograd.suits(_conv(320, 320), big.requires_grad_())  # training keeps torch's conv


def test_the_model_layers_route_through_it(monkeypatch):
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a: calls.append(1) or real(*a))
    model = torch.nn.Sequential(_conv(320, 256), torch.nn.SiLU(), _conv(256, 4))  # the second: too few out
    x = torch.randn(2, 320, 32, 32)
    with torch.inference_mode():
        expected = model(x)
        enable_casting(model.half(), torch.float32)  # the lean mode: fp16 weights, fp32 compute
        ref_half = torch.nn.Sequential(_conv(320, 256), torch.nn.SiLU(), _conv(256, 4))
        ref_half.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
        got, direct = model(x), ref_half(x)
    assert len(calls) == 1  # 320 → 256 channels on 2 × 32 × 32 pixels
    assert (got - direct).abs().max().item() <= 2e-5 * direct.abs().max().item()
    assert expected.shape == got.shape
