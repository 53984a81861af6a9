"""The SD1 noise schedule and the sigma schedules, against closed forms computed here and against
diffusers where it builds the same schedule. Tolerances are stated per check."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from nodes.sd.sampling.model_sampling import SD1_LATENT_SCALE, ModelSamplingEPS, process_latent_in, process_latent_out
from nodes.sd.sampling.schedulers import (SCHEDULER_NAMES, SCHEDULERS, calculate_sigmas, slice_for_advanced)

MS = ModelSamplingEPS()


def sd1_sigma_table():
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)
    return np.sqrt((1 - abar) / abar)


def test_sigma_table_matches_closed_form():
    table = sd1_sigma_table()
    np.testing.assert_allclose(MS.sigmas.numpy(), table, rtol=1e-6)   # float32 storage
    assert MS.sigmas.dtype == torch.float32
    assert float(MS.sigma_min) == pytest.approx(0.0292, abs=5e-5)
    assert float(MS.sigma_max) == pytest.approx(14.6146, abs=5e-5)


def test_sigma_table_matches_diffusers_alphas_cumprod():
    from diffusers import EulerDiscreteScheduler
    s = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    np.testing.assert_allclose(MS.alphas_cumprod.numpy(), s.alphas_cumprod.numpy(), rtol=1e-6)


def test_timestep_is_nearest_log_sigma_index():
    table = sd1_sigma_table()
    for idx in (0, 1, 17, 500, 998, 999):
        assert float(MS.timestep(torch.tensor(table[idx], dtype=torch.float32))) == idx
    # halfway in log space between 100 and 101 rounds to one of them; slightly off rounds to the nearer
    between = math.exp(0.49 * math.log(table[100]) + 0.51 * math.log(table[101]))
    assert float(MS.timestep(torch.tensor(between))) == 101
    t = MS.timestep(torch.tensor([14.6146, 1.0, 0.03]))
    assert t.dtype == torch.float32 and t.shape == (3,)


def test_sigma_interpolates_log_linearly():
    table = sd1_sigma_table()
    assert float(MS.sigma(torch.tensor(250.0))) == pytest.approx(table[250], rel=1e-6)
    expected = math.exp(0.75 * math.log(table[250]) + 0.25 * math.log(table[251]))
    assert float(MS.sigma(torch.tensor(250.25))) == pytest.approx(expected, rel=1e-6)
    assert float(MS.sigma(torch.tensor(-5.0))) == pytest.approx(table[0], rel=1e-6)   # clamped


def test_percent_to_sigma():
    assert MS.percent_to_sigma(0.0) == 999999999.9
    assert MS.percent_to_sigma(1.0) == 0.0
    assert MS.percent_to_sigma(0.5) == pytest.approx(float(MS.sigma(torch.tensor(499.5))), rel=1e-6)


def test_eps_parameterisation_and_noise_scaling():
    x, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    sigma = torch.tensor([2.0, 0.5])
    s = sigma.view(2, 1, 1, 1)
    torch.testing.assert_close(MS.calculate_input(sigma, x), x / torch.sqrt(s ** 2 + 1))
    torch.testing.assert_close(MS.calculate_denoised(sigma, eps, x), x - eps * s)
    latent, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    sig = torch.tensor(14.6146)
    torch.testing.assert_close(MS.noise_scaling(sig, noise, latent, max_denoise=True), latent + noise * math.sqrt(1 + 14.6146 ** 2))
    torch.testing.assert_close(MS.noise_scaling(sig, noise, latent, max_denoise=False), latent + noise * 14.6146)
    assert MS.inverse_noise_scaling(sig, latent) is latent
    assert SD1_LATENT_SCALE == 0.18215
    torch.testing.assert_close(process_latent_out(process_latent_in(latent)), latent)
    torch.testing.assert_close(process_latent_in(latent), latent * 0.18215)


def test_scheduler_names_in_comfyui_order():
    assert SCHEDULER_NAMES == ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                               "normal", "linear_quadratic", "kl_optimal"]


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 4, 20])
def test_every_schedule_has_steps_plus_one_decreasing_sigmas_ending_in_zero(name, steps):
    s = SCHEDULERS[name](MS, steps)
    assert s.dtype == torch.float32
    assert len(s) == steps + 1 or name == "beta"   # beta drops repeated timesteps
    assert float(s[-1]) == 0.0
    assert bool((s[:-1] - s[1:] > 0).all())


SMIN, SMAX = 0.029167532920837402, 14.614640235900879   # float32 table ends as Python floats
# karras / exponential / kl_optimal are evaluated in float32 like ComfyUI (linspace, then ** 7 or exp or
# tan), which is good to ~1.5e-5 relative at the small end; the float64 closed forms use rtol 3e-5.
F32_RTOL = 3e-5


def test_karras_closed_form_and_diffusers():
    n, rho = 10, 7.0
    i = np.arange(n)
    expected = (SMAX ** (1 / rho) + i / (n - 1) * (SMIN ** (1 / rho) - SMAX ** (1 / rho))) ** rho
    got = SCHEDULERS["karras"](MS, n)
    np.testing.assert_allclose(got[:-1].numpy(), expected, rtol=F32_RTOL)
    from diffusers import EulerDiscreteScheduler
    d = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                               beta_schedule="scaled_linear", use_karras_sigmas=True)
    d.set_timesteps(n)
    np.testing.assert_allclose(got.numpy(), d.sigmas.numpy(), rtol=F32_RTOL, atol=1e-6)


def test_exponential_closed_form_and_diffusers():
    n = 12
    expected = np.exp(np.linspace(math.log(SMAX), math.log(SMIN), n))
    got = SCHEDULERS["exponential"](MS, n)
    np.testing.assert_allclose(got[:-1].numpy(), expected, rtol=F32_RTOL)
    from diffusers import EulerDiscreteScheduler
    d = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                               beta_schedule="scaled_linear", use_exponential_sigmas=True)
    d.set_timesteps(n)
    np.testing.assert_allclose(got.numpy(), d.sigmas.numpy(), rtol=F32_RTOL, atol=1e-6)


def test_simple_takes_every_kth_table_entry_from_the_top():
    table = sd1_sigma_table()
    got = SCHEDULERS["simple"](MS, 8)   # stride 125: indices 999, 874, ..., 124
    np.testing.assert_allclose(got.numpy(), [table[999 - 125 * i] for i in range(8)] + [0.0], rtol=1e-6)
    got = SCHEDULERS["simple"](MS, 3)   # stride 333.33: indices 999, 666 (int(333.3)=333), 333
    np.testing.assert_allclose(got.numpy(), [table[999], table[666], table[333], 0.0], rtol=1e-6)


def test_normal_and_sgm_uniform_space_timesteps_linearly():
    table = sd1_sigma_table()

    def sigma_at(t):  # log-linear interpolation in the table
        lo, hi = math.floor(t), math.ceil(t)
        return math.exp((1 - (t - lo)) * math.log(table[lo]) + (t - lo) * math.log(table[hi]))

    n = 7
    normal = [sigma_at(t) for t in np.linspace(999, 0, n)] + [0.0]
    np.testing.assert_allclose(SCHEDULERS["normal"](MS, n).numpy(), normal, rtol=1e-5)
    sgm = [sigma_at(t) for t in np.linspace(999, 0, n + 1)[:-1]] + [0.0]
    np.testing.assert_allclose(SCHEDULERS["sgm_uniform"](MS, n).numpy(), sgm, rtol=1e-5)


def test_ddim_uniform():
    table = sd1_sigma_table()
    got = SCHEDULERS["ddim_uniform"](MS, 10)   # stride 100 from index 1, reversed, then 0
    np.testing.assert_allclose(got.numpy(), [table[i] for i in range(901, 0, -100)] + [0.0], rtol=1e-6)


def test_beta_uses_beta_ppf_quantiles():
    table = sd1_sigma_table()
    n = 10
    ts = [round(scipy.stats.beta.ppf(1 - i / n, 0.6, 0.6) * 999) for i in range(n)]
    expected = [table[t] for k, t in enumerate(ts) if k == 0 or t != ts[k - 1]] + [0.0]
    np.testing.assert_allclose(SCHEDULERS["beta"](MS, n).numpy(), expected, rtol=1e-6)
    assert ts[0] == 999


def test_kl_optimal_closed_form():
    n = 9
    r = np.arange(n) / (n - 1)
    expected = np.tan(r * math.atan(SMIN) + (1 - r) * math.atan(SMAX))
    np.testing.assert_allclose(SCHEDULERS["kl_optimal"](MS, n)[:-1].numpy(), expected, rtol=F32_RTOL)
    assert torch.isfinite(SCHEDULERS["kl_optimal"](MS, 1)).all()   # ComfyUI gives NaN here (0/0)


def test_linear_quadratic_is_linear_then_quadratic_with_matching_ends():
    n = 10
    s = SCHEDULERS["linear_quadratic"](MS, n).double() / SMAX
    frac = 1 - s.numpy()                                   # noise fraction removed so far
    np.testing.assert_allclose(frac[:5], np.arange(5) * 0.025 / 5, atol=1e-6)   # linear part
    assert frac[-1] == pytest.approx(1.0)
    second = np.diff(frac[5:], 2)
    np.testing.assert_allclose(second, second[0], rtol=1e-4)                     # constant 2nd difference
    assert float(SCHEDULERS["linear_quadratic"](MS, n)[0]) == pytest.approx(SMAX, rel=1e-6)


def test_denoise_keeps_the_low_noise_tail():
    full = SCHEDULERS["karras"](MS, 20)
    torch.testing.assert_close(calculate_sigmas(MS, "karras", 10, denoise=0.5), full[-11:])
    torch.testing.assert_close(calculate_sigmas(MS, "karras", 10, denoise=1.0), SCHEDULERS["karras"](MS, 10))
    torch.testing.assert_close(calculate_sigmas(MS, "karras", 10, denoise=None), SCHEDULERS["karras"](MS, 10))
    # int(steps / denoise): 10 / 0.3 = 33.3 -> 33
    torch.testing.assert_close(calculate_sigmas(MS, "normal", 10, denoise=0.3), SCHEDULERS["normal"](MS, 33)[-11:])
    assert len(calculate_sigmas(MS, "karras", 10, denoise=0.0)) == 0
    assert len(calculate_sigmas(MS, "karras", 10, denoise=-1)) == 0


@pytest.mark.parametrize("sampler", ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"])
def test_discard_penultimate_sigma_samplers(sampler):
    longer = SCHEDULERS["karras"](MS, 11)
    got = calculate_sigmas(MS, "karras", 10, sampler_name=sampler)
    torch.testing.assert_close(got, torch.cat([longer[:-2], longer[-1:]]))
    assert len(got) == 11
    assert len(calculate_sigmas(MS, "karras", 10, sampler_name="euler")) == 11
    torch.testing.assert_close(calculate_sigmas(MS, "karras", 10, sampler_name="euler"), SCHEDULERS["karras"](MS, 10))


def test_slice_for_advanced():
    s = SCHEDULERS["karras"](MS, 10)
    torch.testing.assert_close(slice_for_advanced(s, 0, 10000), s)
    part = slice_for_advanced(s, 3, 6, force_full_denoise=False)
    torch.testing.assert_close(part, s[3:7])
    full = slice_for_advanced(s, 3, 6, force_full_denoise=True)
    torch.testing.assert_close(full[:-1], s[3:6])
    assert float(full[-1]) == 0.0
    assert float(s[6]) != 0.0                      # the caller's schedule is untouched
    assert slice_for_advanced(s, 10, None) is None   # nothing left to sample
    torch.testing.assert_close(slice_for_advanced(s, 9, None), s[9:])
