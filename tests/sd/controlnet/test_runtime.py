"""The ControlNet as the sampler sees it: strength, the start/end window (counted calls), chains,
hint preparation (crop + resize, batch broadcast, cache) and its effect through the KSampler pipeline."""
from __future__ import annotations

import pytest
import torch

from nodes.sd import controlnet as cn_mod
from nodes.sd.controlnet import ControlNet, broadcast_hint, load_controlnet, prepare_hint
from nodes.sd.sampling.cfg import ControlProvider
from nodes.sd.sampling.ksampler import sample
from nodes.sd.sampling.model_sampling import ModelSamplingEPS
from nodes.sd.tiny_extras import make_tiny_controlnet

MS = ModelSamplingEPS()
STEPS = 4


def hint_image(seed=0, h=64, w=64, batch=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, h, w, generator=g) > 0.7).float()  # an edge-map-like binary hint


def conds(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)


def count_calls(net: ControlNet) -> list:
    calls = []
    net.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return calls


@torch.inference_mode()
def run_sampler(tiny, positive_options=None, negative_options=None, cfg=5.0, steps=STEPS):
    unet = tiny.unet

    def model_fn(x, timesteps, context, control=None):
        return unet(x, timesteps, context, control=control)

    pos, neg = conds()
    latent = torch.zeros(1, 4, 8, 8)
    return sample(model_fn, MS, latent, seed=7, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
                  positive=[[pos, dict(positive_options or {})]], negative=[[neg, dict(negative_options or {})]])


def test_controlnet_is_a_control_provider(tiny_controlnet):
    assert isinstance(tiny_controlnet, ControlProvider)


def test_strength_zero_is_bit_identical_to_no_controlnet_and_strength_one_is_not(tiny, tiny_controlnet):
    plain = run_sampler(tiny)
    zero = tiny_controlnet.copy().set_cond_hint(hint_image(), 0.0)
    one = tiny_controlnet.copy().set_cond_hint(hint_image(), 1.0)
    assert torch.equal(run_sampler(tiny, {"control": zero, "control_apply_to_uncond": True}), plain)
    controlled = run_sampler(tiny, {"control": one, "control_apply_to_uncond": True})
    assert (controlled - plain).abs().mean() > 1e-3


def test_outside_the_window_the_net_is_not_evaluated(tiny, tiny_controlnet):
    from nodes.sd.sampling.schedulers import calculate_sigmas

    sigmas = calculate_sigmas(MS, "normal", STEPS)[:-1]
    for start, end in ((0.0, 1.0), (0.5, 1.0), (0.0, 0.4), (0.3, 0.6)):
        net = tiny_controlnet.copy().set_cond_hint(hint_image(), 1.0, (start, end))
        calls = count_calls(net)
        run_sampler(tiny, {"control": net}, {"control": net})  # Advanced: the same net on both (one batch)
        hi, lo = MS.percent_to_sigma(start), MS.percent_to_sigma(end)
        inside = [s for s in sigmas.tolist() if lo <= s <= hi]
        assert len(calls) == len(inside), (start, end, calls)
        assert all(rows == 2 for rows in calls)  # positive and negative in one call
    assert 0 < len([s for s in sigmas if s <= MS.percent_to_sigma(0.5)]) < STEPS  # the windows above do cut


def test_get_control_outside_the_window_returns_the_previous_nets_residuals(tiny_controlnet):
    first = tiny_controlnet.copy().set_cond_hint(hint_image(), 1.0)
    late = tiny_controlnet.copy().set_cond_hint(hint_image(1), 1.0, (0.5, 1.0)).set_previous_controlnet(first)
    late.pre_run(MS)
    calls = count_calls(late)  # same model: counts both nets' evaluations
    x, ctx = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    early_sigma = torch.full((2,), float(MS.sigma_max))
    with torch.no_grad():
        got = late.get_control(x, MS.timestep(early_sigma).float(), ctx, early_sigma, 2)
        alone = first.get_control(x, MS.timestep(early_sigma).float(), ctx, early_sigma, 2)
    assert len(calls) == 2  # `first` twice, `late` not at all
    assert all(torch.equal(a, b) for a, b in zip(got["output"], alone["output"]))
    solo = tiny_controlnet.copy().set_cond_hint(hint_image(), 1.0, (0.5, 1.0))
    solo.pre_run(MS)
    assert solo.get_control(x, MS.timestep(early_sigma).float(), ctx, early_sigma, 2) is None


def test_two_chained_nets_add_up(tiny_controlnet_file, tmp_path):
    a = load_controlnet(tiny_controlnet_file, device="cpu").set_cond_hint(hint_image(0), 0.8)
    b = load_controlnet(make_tiny_controlnet(tmp_path / "other.safetensors", seed=5), device="cpu")
    b = b.set_cond_hint(hint_image(1), 1.3).set_previous_controlnet(a)
    for net in (a, b):
        net.pre_run(MS)
    x, ctx, sigma = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32), torch.full((2,), 3.0)
    t = MS.timestep(sigma).float()
    with torch.no_grad():
        both = b.get_control(x, t, ctx, sigma, 2)
        only_a = a.get_control(x, t, ctx, sigma, 2)
        only_b = b.copy().get_control(x, t, ctx, sigma, 2)  # a copy has no previous net
    assert b.chain() == [b, a]
    for key in ("output", "middle"):
        for got, ra, rb in zip(both[key], only_a[key], only_b[key]):
            torch.testing.assert_close(got, ra + rb, atol=1e-6, rtol=0)
            assert rb.abs().mean() > 1e-3


def test_strength_scales_every_residual(tiny_controlnet):
    x, ctx, sigma = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32), torch.full((1,), 2.0)
    t = MS.timestep(sigma).float()
    with torch.no_grad():
        one = tiny_controlnet.copy().set_cond_hint(hint_image(), 1.0).get_control(x, t, ctx, sigma, 1)
        half = tiny_controlnet.copy().set_cond_hint(hint_image(), 0.5).get_control(x, t, ctx, sigma, 1)
    for key in ("output", "middle"):
        for a, b in zip(one[key], half[key]):
            torch.testing.assert_close(b, a * 0.5)


def test_hint_is_centre_cropped_then_nearest_exact_resized():
    hint = torch.arange(40 * 80, dtype=torch.float32).reshape(1, 1, 40, 80)  # 2:1 wide
    out = prepare_hint(hint, 64, 64)  # square target: keep the middle 40 columns (20..59)
    assert out.shape == (1, 1, 64, 64)
    rows = [min(39, int((i + 0.5) * 40 / 64)) for i in range(64)]  # nearest-exact: floor((i + .5)·in/out)
    cols = [20 + min(39, int((j + 0.5) * 40 / 64)) for j in range(64)]
    expected = hint[0, 0][rows][:, cols]
    assert torch.equal(out[0, 0], expected)
    tall = prepare_hint(torch.rand(2, 3, 100, 30), 48, 64)
    assert tall.shape == (2, 3, 48, 64)


def test_hint_batch_broadcast():
    h = torch.arange(3.0).reshape(3, 1, 1, 1)
    assert broadcast_hint(h[:1], 4, 2).shape[0] == 1  # one image: broadcast by the model
    assert broadcast_hint(h[:2], 4, 2).flatten().tolist() == [0, 1, 0, 1]  # per latent, for cond and uncond
    assert broadcast_hint(h, 4, 2).flatten().tolist() == [0, 1, 0, 1]  # more hints than latents: cut
    assert broadcast_hint(h[:2], 6, 2).flatten().tolist() == [0, 1, 0, 0, 1, 0]  # fewer: cycled
    assert broadcast_hint(h, 3, 1).flatten().tolist() == [0, 1, 2]


def test_hint_prepared_once_per_latent_size(tiny_controlnet, monkeypatch):
    sizes = []
    real = cn_mod.prepare_hint
    monkeypatch.setattr(cn_mod, "prepare_hint", lambda img, h, w: sizes.append((h, w)) or real(img, h, w))
    net = tiny_controlnet.copy().set_cond_hint(hint_image(h=50, w=70), 1.0)
    ctx = torch.randn(2, 77, 32)
    with torch.no_grad():
        for size in (8, 8, 6, 6, 8):
            x = torch.randn(2, 4, size, size)
            sigma = torch.full((2,), 1.0)
            out = net.get_control(x, MS.timestep(sigma).float(), ctx, sigma, 2)
            assert out["output"][0].shape[-2:] == (size, size)
    assert sizes == [(64, 64), (48, 48), (64, 64)]
    net.cleanup()
    assert net._hints == {}


def test_copy_shares_the_model_not_the_settings(tiny_controlnet):
    a = tiny_controlnet.copy().set_cond_hint(hint_image(), 0.7, (0.1, 0.9))
    b = a.copy()
    assert b.model is a.model and b.previous_controlnet is None
    assert (b.strength, b.timestep_percent_range) == (0.7, (0.1, 0.9))
    b.set_cond_hint(hint_image(1), 0.2)
    assert a.strength == 0.7 and tiny_controlnet.cond_hint_original is None


def test_shuffle_files_pool_their_residuals(tiny_controlnet_file, tmp_path):
    path = tmp_path / "control_v11e_sd15_shuffle.safetensors"
    path.write_bytes(tiny_controlnet_file.read_bytes())
    net = load_controlnet(path, device="cpu").set_cond_hint(hint_image(), 1.0)
    assert net.global_average_pooling and not load_controlnet(tiny_controlnet_file, device="cpu").global_average_pooling
    x, ctx, sigma = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32), torch.full((1,), 1.0)
    with torch.no_grad():
        out = net.get_control(x, MS.timestep(sigma).float(), ctx, sigma, 1)
    r = out["output"][4]  # second level: 64 wide at 4×4
    assert r.shape == (1, 64, 4, 4) and torch.equal(r, r[:, :, :1, :1].expand_as(r))


def test_missing_hint_says_what_to_do(tiny_controlnet):
    x, sigma = torch.randn(1, 4, 8, 8), torch.full((1,), 1.0)
    with pytest.raises(RuntimeError, match="no hint image"):
        tiny_controlnet.get_control(x, MS.timestep(sigma), torch.randn(1, 77, 32), sigma, 1)


def test_cache_counts_a_nets_weights_once_however_many_copies(tiny_controlnet):
    from nodegraph.sizing import memory_parts

    weights = sum(p.numel() * p.element_size() for p in tiny_controlnet.model.parameters())
    a = tiny_controlnet.copy().set_cond_hint(hint_image(), 1.0)
    b = tiny_controlnet.copy().set_cond_hint(hint_image(1), 1.0).set_previous_controlnet(a)
    conditioning = [[torch.zeros(1, 77, 32), {"control": b}], [torch.zeros(1, 77, 32), {"control": a}]]
    unique = dict(memory_parts(conditioning))
    hints = 2 * hint_image().numel() * 4
    assert weights + hints <= sum(unique.values()) <= weights + hints + 2 * 77 * 32 * 4 + 4096
