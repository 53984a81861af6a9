"""Model-sampling variants (what ModelSamplingDiscrete / ContinuousEDM / ContinuousV select) against
independent references: diffusers' v-prediction Euler step and whole Euler loop, its zero-terminal-SNR
rescale and LCM scalings and timesteps, and hand-derived values for the continuous schedules."""

import math

import pytest
import torch

from nodes.sd.sampling.model_sampling import (
    ModelSamplingContinuousEDM, ModelSamplingContinuousV, ModelSamplingDiscrete, ModelSamplingDiscreteDistilled,
    ModelSamplingEPS,
)

diffusers = pytest.importorskip("diffusers")
SD1 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def test_eps_is_unchanged_by_the_refactor():
    eps, disc = ModelSamplingEPS(), ModelSamplingDiscrete("eps")
    assert torch.equal(eps.sigmas, disc.sigmas) and torch.equal(eps.log_sigmas, disc.log_sigmas)
    x, out, s = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([3.0, 0.5])
    torch.testing.assert_close(eps.calculate_denoised(s, out, x), x - out * s.view(-1, 1, 1, 1))


def test_v_prediction_x0_equals_diffusers_euler_step():
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(**SD1, prediction_type="v_prediction")
    sched.set_timesteps(10)
    ms = ModelSamplingDiscrete("v_prediction")
    g = torch.Generator().manual_seed(0)
    for i in (0, 4, 9):
        sched._step_index = None
        sample, v = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(1, 4, 8, 8, generator=g,
                                                                                             dtype=torch.float64)
        sched._step_index = i
        ref = sched.step(v, sched.timesteps[i], sample).pred_original_sample
        sigma = sched.sigmas[i].to(torch.float64).reshape(1)
        torch.testing.assert_close(ms.calculate_denoised(sigma, v, sample), ref, rtol=1e-6, atol=1e-6)


def test_v_prediction_euler_sampling_equals_diffusers_loop():
    """The whole KSampler pipeline (v-pred, euler, 'normal' sigmas taken by diffusers too) against
    diffusers' EulerDiscreteScheduler driven with the same model function and initial noise."""
    from diffusers import EulerDiscreteScheduler

    from nodes.sd.sampling.ksampler import prepare_noise, sample

    ms = ModelSamplingDiscrete("v_prediction")
    latent = torch.zeros(1, 4, 8, 8)
    context = torch.zeros(1, 77, 8)

    def v_model(x_in, timesteps, ctx, control=None):  # a fixed smooth "v-predictor" (no t: exact timesteps differ)
        return 0.3 * x_in + 0.1 * torch.sin(x_in)

    steps = 8
    ours = sample(v_model, ms, latent, seed=5, steps=steps, cfg=1.0, sampler_name="euler", scheduler="karras",
                  positive=[[context, {}]], negative=[[context, {}]])

    sched = EulerDiscreteScheduler(**SD1, prediction_type="v_prediction", use_karras_sigmas=True)
    sched.set_timesteps(steps)
    # same sigma schedule: ComfyUI's karras uses the model's exact sigma range
    from nodes.sd.sampling.schedulers import calculate_sigmas
    sigmas = calculate_sigmas(ms, "karras", steps)
    sched.sigmas = sigmas.to(torch.float32)
    x = prepare_noise(latent, 5) * math.sqrt(1 + float(sigmas[0]) ** 2)  # ComfyUI's max-denoise noising
    for i in range(steps):
        sched._step_index = i
        scaled = x / (sched.sigmas[i] ** 2 + 1) ** 0.5
        x = sched.step(v_model(scaled, None, None), sched.timesteps[0], x).prev_sample
    torch.testing.assert_close(ours * 0.18215, x, rtol=1e-4, atol=1e-4)


def test_zero_terminal_snr_equals_diffusers_rescale():
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - rescale_zero_terminal_snr(betas), dim=0)
    ref = ((1 - abar) / abar) ** 0.5
    ms = ModelSamplingDiscrete("eps", zsnr=True)
    torch.testing.assert_close(ms.sigmas[:-1].double(), ref[:-1], rtol=2e-6, atol=0)
    assert abar[-1] < 1e-12  # true zero SNR; ComfyUI keeps ᾱ_T = 4.8973451890853435e-08 instead:
    assert float(ms.sigma_max) == pytest.approx(math.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08),
                                                rel=1e-6)
    assert float(ms.sigma_min) == pytest.approx(float(ModelSamplingEPS().sigma_min), rel=1e-6)  # first step kept


def test_lcm_timesteps_and_scalings_equal_diffusers():
    from diffusers import LCMScheduler

    ms = ModelSamplingDiscreteDistilled("lcm")
    assert len(ms.sigmas) == 50
    full = ModelSamplingEPS().sigmas
    expected_t = torch.arange(19, 1000, 20)  # diffusers' lcm_origin_timesteps for 50 original steps
    assert torch.equal(ms.sigmas, full[expected_t])
    assert torch.equal(ms.timestep(ms.sigmas), expected_t.float())
    torch.testing.assert_close(ms.sigma(expected_t.float()), ms.sigmas)

    sched = LCMScheduler(**SD1)
    for t in (19, 499, 999):
        sigma = full[t].reshape(1)
        c_skip, c_out = sched.get_scalings_for_boundary_condition_discrete(torch.tensor(t))
        # read our scalings off calculate_denoised: out = eps, x0 = x - eps·σ, result c_out·x0 + c_skip·x
        ones, zeros = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
        ours_c_out = -ms.calculate_denoised(sigma, ones, zeros) / sigma
        ours_c_skip = ms.calculate_denoised(sigma, zeros, ones) - ours_c_out
        torch.testing.assert_close(ours_c_out.flatten(), torch.as_tensor(c_out, dtype=torch.float32).flatten())
        torch.testing.assert_close(ours_c_skip.flatten(), torch.as_tensor(c_skip, dtype=torch.float32).flatten())


def test_x0_and_img_to_img():
    x, out, s = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), torch.tensor([2.0])
    x0 = ModelSamplingDiscrete("x0")
    assert torch.equal(x0.calculate_denoised(s, out, x), out)
    torch.testing.assert_close(x0.calculate_input(s, x), x / math.sqrt(5.0))
    i2i = ModelSamplingDiscrete("img_to_img")
    assert torch.equal(i2i.calculate_input(s, x), x) and torch.equal(i2i.calculate_denoised(s, out, x), out)


def test_continuous_edm_by_hand():
    ms = ModelSamplingContinuousEDM("edm", sigma_min=0.002, sigma_max=120.0, sigma_data=0.5)
    assert float(ms.sigma_min) == pytest.approx(0.002, rel=1e-5) and float(ms.sigma_max) == pytest.approx(120, rel=1e-5)
    s = torch.tensor([0.5, 7.0])
    torch.testing.assert_close(ms.timestep(s), 0.25 * s.log())
    torch.testing.assert_close(ms.sigma(ms.timestep(s)), s)
    assert ms.percent_to_sigma(0.5) == pytest.approx(math.sqrt(0.002 * 120.0), rel=1e-5)  # halfway in log σ
    x, out = torch.ones(2, 1, 1, 1), torch.ones(2, 1, 1, 1)
    sd = 0.5
    expected = sd ** 2 / (s ** 2 + sd ** 2) + s * sd / (s ** 2 + sd ** 2) ** 0.5
    torch.testing.assert_close(ms.calculate_denoised(s, out, x).flatten(), expected)
    torch.testing.assert_close(ms.calculate_input(s, x).flatten(), 1 / (s ** 2 + sd ** 2) ** 0.5)


def test_continuous_v_by_hand():
    ms = ModelSamplingContinuousV("v_prediction", sigma_min=0.03, sigma_max=500.0)
    s = torch.tensor([0.03, 1.0, 500.0])
    torch.testing.assert_close(ms.timestep(s), torch.atan(s) * 2 / math.pi)
    assert float(ms.timestep(torch.tensor(1.0))) == pytest.approx(0.5)
    torch.testing.assert_close(ms.sigma(ms.timestep(s)), s, rtol=1e-4, atol=0)
    # v-prediction with sigma_data 1: x0 = x/(σ²+1) − v·σ/sqrt(σ²+1)
    x, v = torch.full((3, 1, 1, 1), 2.0), torch.full((3, 1, 1, 1), 0.5)
    torch.testing.assert_close(ms.calculate_denoised(s, v, x).flatten(), 2 / (s ** 2 + 1) - 0.5 * s / (s ** 2 + 1) ** 0.5)


def test_unknown_prediction_is_refused():
    with pytest.raises(ValueError, match="unknown prediction type 'eps2'"):
        ModelSamplingDiscrete("eps2")
