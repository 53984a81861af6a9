"""Requests too big for memory: estimated before anything is allocated, tiled (VAE decode) or refused
with an error naming the input, the estimate and the limit; tiling blends tiles without seams."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nodes.sd import memory_limits
from nodes.sd.memory_limits import RequestTooLargeError
from nodes.sd.vae_runtime import VAE
from nodes.sd.vae_tiling import decode_tiled, tile_starts

pytestmark = pytest.mark.usefixtures("seeded")


def test_tile_starts_cover_the_length_with_the_overlap():
    assert tile_starts(10, 16, 4) == [0]
    assert tile_starts(40, 16, 8) == [0, 8, 16, 24]
    for length, tile, overlap in [(40, 16, 8), (37, 12, 5), (100, 30, 10)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def local_decoder(seed: int = 0):
    """A decoder whose output pixel depends only on latent pixels within 2 of it (two 3×3 convs at latent
    size, then nearest ×8): tiles overlapping by ≥ 2 + the fade must reproduce its full decode."""
    g = torch.Generator().manual_seed(seed)
    w1, w2 = torch.randn(8, 4, 3, 3, generator=g) / 6, torch.randn(3, 8, 3, 3, generator=g) / 8

    def decode(z):
        h = F.conv2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), w1).tanh()
        h = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), w2)
        return F.interpolate(h, scale_factor=8, mode="nearest")
    return decode


def test_tiled_decode_of_a_local_decoder_is_the_full_decode():
    """Tiles drop the margin (a quarter of the overlap) whose context the tile edge cut off; a decoder
    that reaches no further than that margin gives the full decode, up to float rounding of the blend."""
    decode = local_decoder()
    z = torch.randn(2, 4, 40, 27)
    full = decode(z)
    for tile, overlap in [(16, 8), (20, 12), (12, 8)]:  # margins 2, 3, 2 latent px >= the reach of 2
        tiled = decode_tiled(decode, z, tile=tile, overlap=overlap)
        assert tiled.shape == full.shape
        assert (tiled - full).abs().max() < 1e-5, (tile, overlap)
    assert torch.equal(decode_tiled(decode, z, tile=64, overlap=8), full)  # one tile: nothing blended
    cut = decode_tiled(decode, z, tile=16, overlap=4)  # margin 1 < reach 2: the cut shows
    assert (cut - full).abs().max() > 1e-2


def test_tiles_blend_without_a_seam():
    """Tiles that decode to different tones (as per-tile GroupNorm statistics can make them): across
    the overlap the blend ramps linearly, never jumps."""
    z = torch.zeros(1, 4, 8, 40)
    z[..., 20:] = 1.0

    def tone_of_tile(tile_latent):
        return tile_latent.mean().expand(tile_latent.shape[0], 3, tile_latent.shape[2] * 8, tile_latent.shape[3] * 8)

    out = decode_tiled(tone_of_tile, z, tile=16, overlap=8)
    row = out[0, 0, 0]
    ramp_pixels = (8 - 2 * 2) * 8
    assert (row[1:] - row[:-1]).abs().max() <= (row.max() - row.min()) / ramp_pixels + 1e-6


def test_vae_decode_falls_back_to_tiles_under_a_small_budget(tiny, monkeypatch):
    vae = VAE(tiny.vae)
    z = torch.randn(1, 4, 24, 24)
    full = vae.decode(z)
    per_item = memory_limits.vae_decode_bytes(1, 192, 192, vae.width)
    monkeypatch.setenv(memory_limits.RAM_BUDGET_ENV, str(per_item // 2))
    calls = []
    real = tiny.vae.decode
    monkeypatch.setattr(tiny.vae, "decode", lambda latent: calls.append(tuple(latent.shape)) or real(latent))
    tiled = vae.decode(z)
    assert tiled.shape == full.shape and len(calls) > 1
    assert max(shape[-1] for shape in calls) < 24  # never the whole latent at once
    assert memory_limits.vae_decode_bytes(1, calls[0][2] * 8, calls[0][3] * 8, vae.width) <= per_item // 2


def test_a_decode_that_cannot_fit_even_in_tiles_is_refused_before_allocating(tiny, monkeypatch):
    vae = VAE(tiny.vae)
    monkeypatch.setenv(memory_limits.RAM_BUDGET_ENV, "100000")  # 100 kB: less than the image itself
    monkeypatch.setattr(tiny.vae, "decode", lambda latent: pytest.fail("decoded anyway"))
    with pytest.raises(RequestTooLargeError) as info:
        vae.decode(torch.zeros(1, 4, 64, 64))
    message = str(info.value)
    assert info.value.input_name == "samples"
    assert "512x512" in message and "NODEGRAPH_RAM_BUDGET" in message
    assert "3.0 MB" in message and "98 kB" in message  # the estimate (the image: 512·512·3·4 B) and the limit

    image_bytes = 512 * 512 * 3 * 4
    monkeypatch.setenv(memory_limits.RAM_BUDGET_ENV, str(image_bytes + 1000))  # the image fits, no tile does
    with pytest.raises(RequestTooLargeError, match="even in 16×16 latent tiles"):
        vae.decode(torch.zeros(1, 4, 64, 64))


def test_an_8192_square_batch_of_64_is_refused_by_the_sampler_check():
    """The issue's example on the real machine's memory: a [64, 4, 1024, 1024] latent (8192² images)
    needs terabytes of UNet working memory; checked on a meta tensor, so nothing is allocated."""
    class Model:
        load_device = torch.device("cpu")

        class model:
            class config:
                model_channels = 320

    latent = torch.empty(64, 4, 1024, 1024, device="meta")
    with pytest.raises(RequestTooLargeError) as info:
        memory_limits.require_for_sampling(Model, latent)
    assert info.value.input_name == "latent_image"
    assert info.value.estimate > 1024**4 and info.value.limit < info.value.estimate
    assert "TB" in str(info.value) and "8192x8192" in str(info.value)


def test_an_encode_too_big_is_refused(tiny, monkeypatch):
    vae = VAE(tiny.vae)
    monkeypatch.setenv(memory_limits.RAM_BUDGET_ENV, "1MB")
    with pytest.raises(RequestTooLargeError, match="VAEEncodeTiled") as info:
        vae.encode(torch.zeros(1, 512, 512, 3))
    assert info.value.input_name == "pixels"


def test_the_limit_is_the_budget_or_the_available_memory(monkeypatch):
    monkeypatch.setenv(memory_limits.RAM_BUDGET_ENV, "2GB")
    assert memory_limits.memory_limit() == 2 * 1024**3
    monkeypatch.delenv(memory_limits.RAM_BUDGET_ENV)
    assert 0 < memory_limits.memory_limit() <= memory_limits.available_ram() + 1
