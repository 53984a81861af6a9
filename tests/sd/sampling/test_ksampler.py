"""The KSampler pipeline: seeded noise, latent scaling, initial noising, step selection, callbacks,
cancellation and inpainting, checked against expectations derived by hand in the tests."""

import pytest
import torch

from nodes.sd.sampling.ksampler import prepare_noise, sample
from nodes.sd.sampling.model_sampling import ModelSamplingEPS
from nodes.sd.sampling.schedulers import SCHEDULERS

MS = ModelSamplingEPS()
SHAPE = (2, 4, 8, 8)
POS, NEG = [[torch.ones(1, 77, 8), {}]], [[torch.zeros(1, 77, 8), {}]]


def toy_unet(x_in, timesteps, context, control=None):
    """eps = 0.5 * x_in + mean(context): a fixed linear map, so runs are exactly reproducible."""
    return 0.5 * x_in + context.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def run(latent, **kw):
    args = dict(seed=42, steps=4, cfg=1.0, sampler_name="euler", scheduler="karras", positive=POS, negative=NEG)
    args.update(kw)
    return sample(toy_unet, MS, latent, **args)


def test_prepare_noise_is_a_seeded_cpu_randn():
    latent = torch.zeros(SHAPE)
    expected = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(1234))
    assert torch.equal(prepare_noise(latent, 1234), expected)
    assert torch.equal(prepare_noise(latent, 1234), prepare_noise(latent, 1234))
    assert not torch.equal(prepare_noise(latent, 1234), prepare_noise(latent, 1235))
    assert prepare_noise(latent, 0xFFFFFFFFFFFFFFFF).shape == SHAPE   # the whole seed range works


def test_prepare_noise_with_batch_index_draws_item_by_item():
    latent = torch.zeros(3, 4, 8, 8)
    g = torch.Generator("cpu").manual_seed(7)
    per_item = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(4)]   # indices 0..3, in order
    got = prepare_noise(latent, 7, batch_index=[3, 1, 3])
    assert torch.equal(got, torch.cat([per_item[3], per_item[1], per_item[3]]))
    # a lone index-0 item is the first [1, ...] draw of the seeded generator
    assert torch.equal(prepare_noise(torch.zeros(1, 4, 8, 8), 7, batch_index=[0]), per_item[0])


def hand_euler(x, sigmas, eps_of):
    for i in range(len(sigmas) - 1):
        d = eps_of(x, sigmas[i])              # for EPS, (x - D) / sigma = eps
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


def eps_of_pos(x, sigma):
    return 0.5 * x / torch.sqrt(sigma ** 2 + 1) + 1.0


def test_txt2img_pipeline_by_hand():
    latent = torch.zeros(SHAPE)
    out = run(latent)
    sigmas = SCHEDULERS["karras"](MS, 4)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    x = noise * torch.sqrt(1 + sigmas[0] ** 2)            # max denoise; empty latent is not scaled
    expected = hand_euler(x, sigmas, eps_of_pos) / 0.18215
    torch.testing.assert_close(out, expected)


def test_img2img_scales_latent_in_and_noises_with_sigma():
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    out = run(latent, denoise=0.5)
    sigmas = SCHEDULERS["karras"](MS, 8)[-5:]
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    x = latent * 0.18215 + noise * sigmas[0]               # not max denoise: + noise * sigma
    torch.testing.assert_close(out, hand_euler(x, sigmas, eps_of_pos) / 0.18215)


def test_nothing_to_do_returns_the_latent():
    latent = torch.randn(SHAPE)
    assert run(latent, denoise=0.0) is latent
    assert run(latent, start_step=4) is latent
    assert run(latent, start_step=10, last_step=10000) is latent


def test_advanced_window_and_disabled_noise():
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    sigmas = SCHEDULERS["karras"](MS, 4)
    out = run(latent, steps=4, start_step=1, last_step=3, disable_noise=True, force_full_denoise=False)
    window = sigmas[1:4]                                    # ends at sigma_3 > 0: leftover noise kept
    torch.testing.assert_close(out, hand_euler(latent * 0.18215, window, eps_of_pos) / 0.18215)
    out = run(latent, steps=4, start_step=1, last_step=3, disable_noise=True, force_full_denoise=True)
    full = torch.cat([sigmas[1:3], torch.zeros(1)])
    torch.testing.assert_close(out, hand_euler(latent * 0.18215, full, eps_of_pos) / 0.18215)


def test_same_seed_same_result_different_seed_differs():
    latent = torch.zeros(SHAPE)
    for name in ("euler", "euler_ancestral", "dpmpp_2m_sde"):
        a, b = run(latent, sampler_name=name), run(latent, sampler_name=name)
        assert torch.equal(a, b)
        assert not torch.equal(a, run(latent, sampler_name=name, seed=43))


def test_callback_and_cancel():
    seen = []
    run(torch.zeros(SHAPE), steps=5, callback=lambda i, x0, x, total: seen.append((i, x0.shape, x.shape, total)))
    assert seen == [(i, torch.Size(SHAPE), torch.Size(SHAPE), 5) for i in range(5)]

    class Stop(Exception):
        pass

    def cancel():
        raise Stop
    with pytest.raises(Stop):
        run(torch.zeros(SHAPE), cancel=cancel)


def test_noise_mask_keeps_the_unmasked_latent():
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1.0
    for name in ("euler", "ddim"):   # ddim blends with its own noise (seed + 1); euler with the initial noise
        out = run(latent, sampler_name=name, noise_mask=mask, denoise=1.0)
        torch.testing.assert_close(out[..., :4], latent[..., :4])   # final sigma 0: exactly the latent
        assert not torch.allclose(out[..., 4:], latent[..., 4:])


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="sampler"):
        run(torch.zeros(SHAPE), sampler_name="nope")
    with pytest.raises(ValueError, match="scheduler"):
        run(torch.zeros(SHAPE), scheduler="nope")
