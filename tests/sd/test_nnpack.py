"""3×3 convolutions through NNPACK (nodes/sd/nnpack.py): the same as the direct conv within float rounding,
checked against float64 — whole images and bands of rows, with nearest-×2 upsampling, batches, ragged
heights, either memory format, without a bias — used only where it gains, and reached from the models."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL as DiffusersAutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from nodes.sd import fast_ops, nnpack, vae as vae_module
from nodes.sd.vae import AutoencoderKL, VAEConfig
from nodes.sd.weight_casting import enable_casting
from tests.sd.test_vae import diffusers_config
from tests.sd.test_winograd import conv_case

pytestmark = pytest.mark.skipif(not torch.backends.nnpack.is_available(), reason="this torch build has no NNPACK")


def _exact(x, weight, bias, upsample):
    x = x.double()
    if upsample:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.conv2d(x, weight.double(), None if bias is None else bias.double(), padding=1)


def _assert_close(got, exact):
    assert got.shape == exact.shape and got.dtype == torch.float32 and got.is_contiguous()
    # F(6×6, 3×3)'s transforms scale by up to ~10 and back: a few fp32 roundings, measured 7e-6–1e-5 of the
    # largest output on the VAE's full-size shapes (ours F(4×4): ~7e-6; the direct conv: ~2e-6)
    assert (got.double() - exact).abs().max().item() <= 5e-5 * exact.abs().max().item()


@pytest.mark.parametrize("n, c, out, h, w", [(1, 8, 5, 16, 16), (2, 6, 12, 13, 7), (3, 4, 3, 6, 10), (1, 3, 2, 1, 1)])
@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_equals_the_direct_convolution(n, c, out, h, w, upsample, with_bias):
    x, weight, bias = conv_case(n, c, out, h, w)
    bias = bias if with_bias else None
    with torch.inference_mode():
        got = nnpack.conv3x3(x, weight, bias, upsample=upsample)
    _assert_close(got, _exact(x, weight, bias, upsample))


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bands_of_rows_give_the_same_result(upsample, channels_last, monkeypatch):
    """Bands of one and two 6-row tiles; 23 input rows (46 upsampled) leave the last band ragged, and a
    band's context rows above and below come from the neighbouring bands or are the zero padding."""
    x, weight, bias = conv_case(2, 5, 7, 23, 9, seed=4)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    exact = _exact(x, weight, bias, upsample)
    width = 9 * (2 if upsample else 1)
    for tiles in (1, 2):
        monkeypatch.setattr(nnpack, "BAND_BYTES", tiles * nnpack.TILE * (5 + 7) * width * 4)
        assert nnpack.band_rows(5 + 7, exact.shape[2], width) == tiles * nnpack.TILE
        with torch.inference_mode():
            _assert_close(nnpack.conv3x3(x, weight, bias, upsample=upsample), exact)


def test_band_rows_are_whole_tiles_of_equal_height_within_the_budget(monkeypatch):
    monkeypatch.setattr(nnpack, "BAND_BYTES", 128 * 1024**2)
    # 512 KB a row: 256 rows fit, 252 in whole tiles, so 3 bands: 174 rows each (the last 164)
    assert nnpack.band_rows(256, 512, 512) == 174
    assert nnpack.band_rows(128, 64, 64) == 64  # fits whole
    rows = nnpack.band_rows(768, 512, 512)  # 1.5 MB a row: 85 fit → 84; 7 bands of 74 (whole tiles)
    assert rows % nnpack.TILE == 0 and rows * 768 * 512 * 4 <= nnpack.BAND_BYTES and -(-512 // rows) == 7
    assert nnpack.band_rows(100_000, 512, 512) == nnpack.TILE  # never less than one tile row


def test_a_full_size_decoder_conv_against_float64():
    # the VAE decoder's 512-channel level: 64×64 pixels (0.2 GFLOP), the whole image in one call
    x, weight, bias = conv_case(1, 512, 512, 64, 64, seed=3)
    with torch.inference_mode():
        got = nnpack.conv3x3(x, weight, bias)
        direct = F.conv2d(x, weight, bias, padding=1)
    exact = _exact(x, weight, bias, False)
    _assert_close(got, exact)
    # within a few times the direct conv's own rounding
    assert (got.double() - exact).abs().max() <= 8 * (direct.double() - exact).abs().max()


def test_used_only_where_it_gains(monkeypatch):
    monkeypatch.delenv("NODEGRAPH_NNPACK", raising=False)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1)
    with torch.inference_mode():
        assert nnpack.suits(conv, torch.zeros(2, 128, 64, 64))
        assert not nnpack.suits(conv, torch.zeros(2, 128, 48, 48))  # too few pixels per image (a batch does not add up)
        assert nnpack.suits(conv, torch.zeros(1, 128, 32, 32), upsample=True)  # 64 × 64 once upsampled
        assert not nnpack.suits(torch.nn.Conv2d(96, 128, 3, padding=1), torch.zeros(1, 96, 64, 64))  # too few channels
        assert not nnpack.suits(torch.nn.Conv2d(128, 128, 3, padding=2, dilation=2), torch.zeros(1, 128, 64, 64))
        assert not nnpack.suits(torch.nn.Conv2d(128, 128, 3, stride=2, padding=1), torch.zeros(1, 128, 64, 64))
        assert not nnpack.suits(conv, torch.zeros(1, 128, 64, 64, dtype=torch.float64))
        monkeypatch.setenv("NODEGRAPH_NNPACK", "0")
        assert not nnpack.suits(conv, torch.zeros(1, 128, 64, 64))
    monkeypatch.delenv("NODEGRAPH_NNPACK")
    assert not nnpack.suits(conv, torch.zeros(1, 128, 64, 64))  # autograd records a graph: torch's own conv


def test_the_casting_conv_and_the_upsampler_go_through_it(monkeypatch):
    calls = []
    real = nnpack.conv3x3

    def spy(x, weight, bias, *, upsample=False):
        calls.append((tuple(x.shape), upsample, weight.dtype))
        return real(x, weight, bias, upsample=upsample)

    monkeypatch.setattr(nnpack, "conv3x3", spy)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).half()  # a lean model: fp16 weights, fp32 compute
    enable_casting(conv, torch.float32)
    x = torch.randn(1, 128, 64, 64)
    with torch.inference_mode():
        exact = _exact(x, conv.weight.float(), conv.bias.float(), False)
        _assert_close(conv(x), exact)
        small = torch.randn(1, 128, 32, 32)
        _assert_close(fast_ops.upsample2x_conv3x3(small, conv), _exact(small, conv.weight.float(), conv.bias.float(), True))
    assert calls == [((1, 128, 64, 64), False, torch.float32), ((1, 128, 32, 32), True, torch.float32)]


def test_a_decoder_with_full_width_levels_matches_diffusers(monkeypatch):
    """128-channel levels at 64² pixels put the decoder's convs and its upsampler on NNPACK; the VAE then
    runs NCHW (the layout NNPACK reads) and still equals diffusers' (oneDNN, direct convs)."""
    monkeypatch.delenv("NODEGRAPH_NNPACK", raising=False)
    torch.manual_seed(0)
    config = VAEConfig(ch=128, ch_mult=(1, 1), num_res_blocks=1)
    ours = AutoencoderKL(config).eval()
    ref_config = diffusers_config(config)
    ref = DiffusersAutoencoderKL(**ref_config)
    ldm = {"first_stage_model." + k: v for k, v in ours.state_dict().items()}
    ref.load_state_dict(convert_ldm_vae_checkpoint(ldm, ref_config), strict=True)
    enable_casting(ours, torch.float32)
    used = []
    real = nnpack.conv3x3
    monkeypatch.setattr(nnpack, "conv3x3", lambda *a, **k: used.append(k.get("upsample", False)) or real(*a, **k))
    assert vae_module.activation_format(torch.device("cpu")) == torch.contiguous_format
    monkeypatch.setenv("NODEGRAPH_NNPACK", "0")  # without NNPACK, channels-last for oneDNN, as before
    assert vae_module.activation_format(torch.device("cpu")) == torch.channels_last
    monkeypatch.delenv("NODEGRAPH_NNPACK")
    latent = torch.randn(1, 4, 32, 32)
    with torch.inference_mode():
        got = ours.decode(latent)
        expected = ref.eval().decode(latent).sample
    assert True in used and used.count(False) >= 4  # the upsampler and the 64² level's convs
    assert expected.abs().mean() > 0.05
    assert (got - expected).abs().max().item() <= 1e-4  # test_vae.py's tolerance for the whole model
