"""Every sampler against an independent reference on a toy problem whose denoiser is exact.

Toy data: each latent element is Gaussian with its own mean mu and variance v, so the ideal denoiser
is D(x, sigma) = mu + v / (v + sigma^2) * (x - mu). Both sides run in float64 on the same float32
sigmas; the reference is a diffusers scheduler driven step by step (its own karras sigmas), or a
hand-written loop where diffusers has no scheduler with the same update. Tolerance: |diff| <= 1e-5
(values are O(1)..O(15)); stochastic samplers get identical noise on both sides."""
import math

import pytest
import torch

from nodes.sd.model_options import NO_OPTIONS, CFGStep, SamplingRun
from nodes.sd.sampling.model_sampling import ModelSamplingEPS
from nodes.sd.sampling.noise import BrownianTreeNoiseSampler, default_noise_sampler
from nodes.sd.sampling.samplers import SAMPLER_NAMES, SAMPLERS
from nodes.sd.sampling.schedulers import SCHEDULERS

TOL = 1e-5
SHAPE = (2, 4, 6, 6)
gen = torch.Generator().manual_seed(0)
MU = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
VAR = torch.rand(SHAPE, generator=gen, dtype=torch.float64) * 0.8 + 0.2
TRAIN = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def toy_denoiser(x, sigma):
    s2 = sigma.to(x.dtype).view(-1, 1, 1, 1) ** 2
    return MU + VAR / (VAR + s2) * (x - MU)


def eps_at(x, sigma):
    """The EPS a perfect UNet would predict at k-diffusion x and scalar sigma."""
    return (x - toy_denoiser(x, sigma.reshape(1).expand(x.shape[0]))) / sigma


def start(sigmas, seed=1):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sigmas[0].double()


def run(name, sigmas, x, **options):
    return SAMPLERS[name](toy_denoiser, x, sigmas, seed=0, **options)


def drive_k(scheduler, x, sigma_of, **step_kw):
    """Run a k-space diffusers scheduler (sample = x0 + sigma * eps) with the toy EPS model."""
    sample = x.clone()
    for t in scheduler.timesteps:
        scheduler.scale_model_input(sample, t)          # sets step_index and the stage
        sigma = sigma_of(scheduler).double()
        sample = scheduler.step(eps_at(sample, sigma), t, sample, **step_kw).prev_sample
    return sample


def drive_vp(scheduler, x, **step_kw):
    """Run a VP-space diffusers scheduler (sample = alpha * x_k). Returns the final VP sample."""
    sample = x / torch.sqrt(1 + scheduler.sigmas[0].double() ** 2)
    for t in scheduler.timesteps:
        sigma = scheduler.sigmas[scheduler.step_index or 0].double()
        x_k = sample * torch.sqrt(1 + sigma ** 2)
        sample = scheduler.step(eps_at(x_k, sigma), t, sample, **step_kw).prev_sample
    return sample


def main_sigmas(scheduler):
    return torch.unique_consecutive(scheduler.sigmas)


def make(cls, n, **kw):
    s = cls(**TRAIN, use_karras_sigmas=True, **kw)
    s.set_timesteps(n)
    return s


def close(a, b, tol=TOL):
    assert a.shape == b.shape
    diff = (a - b).abs().max().item()
    assert diff <= tol, f"max |diff| = {diff:.3g} > {tol}"


# -- deterministic samplers vs diffusers -------------------------------------------------------------
def test_euler_vs_diffusers():
    from diffusers import EulerDiscreteScheduler
    s = make(EulerDiscreteScheduler, 8)
    x = start(s.sigmas)
    close(run("euler", s.sigmas, x), drive_k(s, x, lambda s: s.sigmas[s.step_index]))


def test_ddim_is_euler():
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 6)
    x = start(sig)
    assert torch.equal(run("ddim", sig, x), run("euler", sig, x))


def test_heun_vs_diffusers():
    from diffusers import HeunDiscreteScheduler
    s = make(HeunDiscreteScheduler, 6)
    x = start(s.sigmas)
    close(run("heun", main_sigmas(s), x), drive_k(s, x, lambda s: s.sigmas[s.step_index]))


def test_dpm_2_vs_diffusers():
    from diffusers import KDPM2DiscreteScheduler
    s = make(KDPM2DiscreteScheduler, 6)
    x = start(s.sigmas)
    sigma_of = lambda s: s.sigmas[s.step_index] if s.state_in_first_order else s.sigmas_interpol[s.step_index]
    close(run("dpm_2", main_sigmas(s), x), drive_k(s, x, sigma_of))


def test_lms_vs_diffusers():
    """ComfyUI's LMS lands on D(x, sigma_{n-1}) instead of taking the last multistep step to 0:
    diffusers' LMSDiscrete runs all but that step, then the exact denoiser finishes."""
    from diffusers import LMSDiscreteScheduler
    s = make(LMSDiscreteScheduler, 10)
    x = start(s.sigmas)
    sample = x.clone()
    for t in s.timesteps[:-1]:
        s.scale_model_input(sample, t)
        sample = s.step(eps_at(sample, s.sigmas[s.step_index].double()), t, sample, order=4).prev_sample
    expected = toy_denoiser(sample, s.sigmas[-2].double().reshape(1).expand(SHAPE[0]))
    close(run("lms", s.sigmas, x), expected)


def test_dpmpp_2m_vs_diffusers():
    from diffusers import DPMSolverMultistepScheduler
    s = make(DPMSolverMultistepScheduler, 10, algorithm_type="dpmsolver++", solver_order=2)
    x = start(s.sigmas)
    assert float(s.sigmas[-1]) == 0.0   # final VP sample equals the k-space one (alpha = 1)
    close(run("dpmpp_2m", s.sigmas, x), drive_vp(s, x))


@pytest.mark.parametrize("name, solver_type", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_uni_pc_vs_diffusers(name, solver_type):
    """ComfyUI stops UniPC at sigma 0.001 instead of 0 and returns x there (converted to k-space);
    diffusers is given the same final sigma and its VP result is divided by alpha(0.001).
    Our sigmas are passed as float64 here: in float32 the VP conversion (1 - alpha^2 at sigma 0.001)
    loses ~1e-1 relative precision in the last lambda, as in ComfyUI, see test_uni_pc_float32_rounding."""
    from diffusers import UniPCMultistepScheduler
    s = make(UniPCMultistepScheduler, 8, solver_order=3, solver_type=solver_type, predict_x0=True,
             lower_order_final=True)
    ours_sigmas = s.sigmas.clone().double()
    x = start(s.sigmas)
    s.sigmas[-1] = 0.001
    expected = drive_vp(s, x) * math.sqrt(1 + 0.001 ** 2)
    close(run(name, ours_sigmas, x), expected)


# -- stochastic samplers with injected noise ---------------------------------------------------------
def recorded_noise(seed=7):
    """A noise sampler that hands out the i-th standard-normal draw on its i-th call."""
    g = torch.Generator().manual_seed(seed)
    return lambda *_: torch.randn(SHAPE, generator=g, dtype=torch.float64)


def test_euler_ancestral_vs_diffusers():
    from diffusers import EulerAncestralDiscreteScheduler
    s = EulerAncestralDiscreteScheduler(**TRAIN)
    s.set_timesteps(8)
    x = start(s.sigmas)
    expected = drive_k(s, x, lambda s: s.sigmas[s.step_index], generator=torch.Generator().manual_seed(7))
    close(run("euler_ancestral", s.sigmas, x, noise_sampler=recorded_noise(7)), expected)


def drive_sde_dpmsolver(scheduler, x, noise_seed):
    """Run diffusers' SDE-DPM-Solver++ (VP form) with the toy EPS model and recorded noise; returns the
    final sample and the noises in order."""
    noises = [torch.randn(SHAPE, generator=torch.Generator().manual_seed(noise_seed + i), dtype=torch.float64)
              for i in range(len(scheduler.timesteps))]
    sample = x / torch.sqrt(1 + scheduler.sigmas[0].double() ** 2)
    for i, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[i].double()
        sample = scheduler.step(eps_at(sample * torch.sqrt(1 + sigma ** 2), sigma), t, sample,
                                variance_noise=noises[i]).prev_sample
    return sample, noises


@pytest.mark.parametrize("name, solver_type", [("dpmpp_2m_sde", "midpoint"), ("dpmpp_2m_sde_heun", "heun")])
def test_dpmpp_2m_sde_vs_diffusers(name, solver_type):
    from diffusers import DPMSolverMultistepScheduler
    s = make(DPMSolverMultistepScheduler, 10, algorithm_type="sde-dpmsolver++", solver_order=2,
             solver_type=solver_type)
    x = start(s.sigmas)
    expected, noises = drive_sde_dpmsolver(s, x, 100)
    calls = iter(noises)
    close(run(name, s.sigmas, x, noise_sampler=lambda *_: next(calls)), expected)


def test_ddpm_vs_diffusers():
    """DDPM ancestral steps between training timesteps, 'fixed_small' variance, same noise draws."""
    from diffusers import DDPMScheduler
    s = DDPMScheduler(**TRAIN, clip_sample=False)
    s.set_timesteps(timesteps=[999, 850, 600, 420, 250, 120, 40])
    abar = s.alphas_cumprod.double()[s.timesteps]
    sigmas = torch.cat([((1 - abar) / abar).sqrt(), torch.zeros(1, dtype=torch.float64)])
    x = start(sigmas)
    generator = torch.Generator().manual_seed(11)
    sample = x / torch.sqrt(1 + sigmas[0] ** 2)
    for i, t in enumerate(s.timesteps):
        x_k = sample * torch.sqrt(1 + sigmas[i] ** 2)
        sample = s.step(eps_at(x_k, sigmas[i]), t, sample, generator=generator).prev_sample
    close(run("ddpm", sigmas, x, noise_sampler=recorded_noise(11)), sample)


def test_dpmpp_sde_vs_diffusers():
    from diffusers import DPMSolverSDEScheduler
    s = make(DPMSolverSDEScheduler, 6)
    x = start(s.sigmas)
    s.noise_sampler = recorded_noise(3)
    sigma_of = lambda s: s.sigmas[s.step_index] if s.state_in_first_order else s.mid_point_sigma
    expected = drive_k(s, x, sigma_of)
    close(run("dpmpp_sde", main_sigmas(s), x, noise_sampler=recorded_noise(3)), expected)


def test_dpm_2_ancestral_vs_hand_written_steps():
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 6).double()
    x = start(sig)
    noise = recorded_noise(5)
    ref = x.clone()
    for i in range(len(sig) - 1):
        s, s_next = sig[i], sig[i + 1]
        up = min(s_next, (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
        down = (s_next ** 2 - up ** 2) ** 0.5
        d = eps_at(ref, s)
        if down == 0:
            ref = ref - d * s
        else:
            mid = torch.sqrt(s * down)                 # geometric mean = log-space midpoint
            ref = ref + eps_at(ref + d * (mid - s), mid) * (down - s) + noise() * up
    close(run("dpm_2_ancestral", sig, x, noise_sampler=recorded_noise(5)), ref)


def test_lcm_vs_hand_written_steps():
    sig = torch.tensor([14.6146, 2.0, 0.5, 0.0], dtype=torch.float64)
    x = start(sig)
    noise = recorded_noise(9)
    ref = x.clone()
    for i in range(3):
        ref = toy_denoiser(ref, sig[i].reshape(1).expand(2))
        if sig[i + 1] > 0:
            ref = ref + noise() * sig[i + 1]
    close(run("lcm", sig, x, noise_sampler=recorded_noise(9)), ref)


# -- CFG++ ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg_pp, base", [("euler_cfg_pp", "euler"), ("euler_ancestral_cfg_pp", "euler_ancestral"),
                                          ("dpmpp_2m_cfg_pp", "dpmpp_2m"), ("res_multistep_cfg_pp", "res_multistep"),
                                          ("res_multistep_ancestral_cfg_pp", "res_multistep_ancestral"),
                                          ("gradient_estimation_cfg_pp", "gradient_estimation")])
def test_cfg_pp_equals_its_base_sampler_when_uncond_equals_cond(cfg_pp, base):
    """With uncond = cond, re-noising along the unconditional prediction is the ordinary step.
    (Not dpmpp_2s_ancestral_cfg_pp: ComfyUI 0.3.64 shifts its second stage by D - D_uncond(x_2), which
    stays non-zero; its conformance case pins that.)"""
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 8).double()
    x = start(sig)
    close(SAMPLERS[cfg_pp](ToyCFG(cfg=4.0), x, sig, seed=5), SAMPLERS[base](ToyCFG(cfg=4.0), x, sig, seed=5), tol=1e-9)


def test_euler_cfg_pp_is_the_papers_update():
    """CFG++ (Chung et al. 2024, Algorithm 1 in the sigma form): x' = D_cfg + sigma' * eps_uncond, with
    eps_uncond = (x - D_uncond) / sigma; the last step returns D_cfg."""
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 6).double()
    x = start(sig)
    guided = ToyCFG(cfg=3.0, uncond_shift=0.3)
    ref = x.clone()
    for i in range(len(sig) - 1):
        s_b = sig[i].reshape(1).expand(SHAPE[0])
        cond = toy_denoiser(ref, s_b)
        uncond = cond + 0.3 * sig[i]
        d_cfg = uncond + (cond - uncond) * 3.0
        ref = d_cfg if sig[i + 1] == 0 else d_cfg + sig[i + 1] * (ref - uncond) / sig[i]
    close(SAMPLERS["euler_cfg_pp"](guided, x, sig, seed=0), ref, tol=1e-9)
    plain = SAMPLERS["euler"](ToyCFG(cfg=3.0, uncond_shift=0.3), x, sig, seed=0)
    assert (plain - ref).abs().max() > 1e-3          # and it is not plain Euler


def test_cfg_pp_needs_a_cfg_denoiser():
    from nodes.sd.sampling import SamplerError
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 3)
    with pytest.raises(SamplerError, match="euler_cfg_pp.*classifier-free guidance"):
        SAMPLERS["euler_cfg_pp"](toy_denoiser, start(sig), sig, seed=0)


# -- behaviour shared by all samplers ---------------------------------------------------------------
class ToyCFG:
    """The toy denoiser behind the CFG denoiser's interface: cond = toy_denoiser, uncond = toy_denoiser
    shifted by `uncond_shift` (0: the two agree), mixed with `cfg`, post-CFG functions applied."""

    def __init__(self, cfg=1.0, uncond_shift=0.0, dtype=None):
        self.cfg, self.shift, self.dtype = cfg, uncond_shift, dtype
        self.post_cfg_functions, self.disable_cfg1_optimization = [], False

    def __call__(self, x, sigma):
        cond = toy_denoiser(x, sigma).to(self.dtype or x.dtype)
        uncond = cond + self.shift * sigma.to(cond.dtype).view(-1, 1, 1, 1)
        denoised = uncond + (cond - uncond) * self.cfg
        for fn in self.post_cfg_functions:
            denoised = fn(CFGStep(x, sigma, self.cfg, (None, None), cond, uncond, NO_OPTIONS, SamplingRun(),
                                  None, denoised))
        return denoised


COMFY_SAMPLER_NAMES = [  # ComfyUI 0.3.64's KSampler.SAMPLERS, in its order
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
STOCHASTIC = ["euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral",
              "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
              "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
              "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "er_sde", "seeds_2", "seeds_3",
              "sa_solver", "sa_solver_pece"]


def test_sampler_names_follow_comfyui_order():
    assert SAMPLER_NAMES == COMFY_SAMPLER_NAMES
    # two more loops serve only option nodes (SamplerEulerCFGpp 'alternative', SamplerLCMUpscale)
    assert set(SAMPLERS) - set(SAMPLER_NAMES) == {"euler_pp", "lcm_upscale"}


def test_euler_pp_by_hand():
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 5).double()
    x = start(sig)
    ref = x.clone()
    for i in range(len(sig) - 1):
        cond = toy_denoiser(ref, sig[i].reshape(1).expand(SHAPE[0]))
        uncond = cond + 0.3 * sig[i]
        d_cfg = uncond + (cond - uncond) * 3.0
        ref = ref + (ref - 2 * d_cfg + uncond) / sig[i] * (sig[i + 1] - sig[i])
    close(SAMPLERS["euler_pp"](ToyCFG(cfg=3.0, uncond_shift=0.3), x, sig, seed=0), ref, tol=1e-9)


def test_lcm_upscale():
    """Without upscaling it is LCM with noise from a generator seeded with the seed that has already
    drawn the initial noise (ComfyUI's global generator); with it, the latent grows step by step."""
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 4).double()
    x = start(sig)
    g = torch.Generator().manual_seed(9)
    torch.randn(SHAPE, generator=g)
    same_size = SAMPLERS["lcm_upscale"](ToyCFG(), x, sig, seed=9, total_upscale=1.0,
                                        resize=lambda t, w, h: torch.nn.functional.interpolate(t, size=(h, w)))
    lcm = SAMPLERS["lcm"](ToyCFG(), x, sig, seed=9,
                          noise_sampler=lambda *_: torch.randn(SHAPE, generator=g, dtype=torch.float64))
    close(same_size, lcm, tol=1e-12)
    sizes = []

    def resize(t, w, h):
        sizes.append((h, w))
        return torch.nn.functional.interpolate(t, size=(h, w))
    out = SAMPLERS["lcm_upscale"](lambda t, s: t * 0.5, x, sig, seed=9, total_upscale=2.0, resize=resize)
    assert sizes == [(9, 9), (12, 12)] and out.shape == (2, 4, 12, 12)   # 3 upscale points: 1, 1.5, 2


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_callback_cancel_and_convergence_in_float32(name):
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 12)
    x = start(sig).float()
    seen = []
    denoiser = ToyCFG(dtype=torch.float32)
    out = SAMPLERS[name](denoiser, x, sig, seed=3, callback=seen.append)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    steps = [info["i"] for info in seen]
    if name == "dpm_fast":        # third-order steps: 12 model calls in 5 steps
        assert steps == list(range(5))
    elif name == "dpm_adaptive":  # one report per attempted step, however many the error control takes
        assert steps == list(range(len(steps))) and len(steps) > 2
    else:
        assert steps == list(range(12))
    assert set(seen[0]) == {"i", "x", "sigma", "sigma_hat", "denoised"}
    z = (out.double() - MU) / VAR.sqrt()          # a draw from the data: |N(0, 1)| has mean 0.80
    if name not in ("lcm", "dpm_fast", "dpm_adaptive"):
        # lcm assumes a consistency model (it shrinks here); dpm_fast / dpm_adaptive stop at sigma_min
        assert 0.55 < z.abs().mean() < 1.05
    again = SAMPLERS[name](denoiser, x, sig, seed=3)
    assert torch.equal(out, again)                                        # same seed, same result
    assert denoiser.post_cfg_functions == [] and not denoiser.disable_cfg1_optimization  # CFG++ cleans up

    class Cancelled(Exception):
        pass
    polls = []

    def cancel():
        polls.append(1)
        if len(polls) == 3:
            raise Cancelled
    with pytest.raises(Cancelled):
        SAMPLERS[name](denoiser, x, sig, seed=3, cancel=cancel)
    assert len(polls) == 3
    assert denoiser.post_cfg_functions == []


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_depend_on_seed(name):
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 5)
    x = start(sig).float()
    assert not torch.equal(SAMPLERS[name](ToyCFG(), x, sig, seed=1), SAMPLERS[name](ToyCFG(), x, sig, seed=2))


@pytest.mark.parametrize("name", sorted(set(SAMPLER_NAMES) - set(STOCHASTIC)))
def test_deterministic_samplers_ignore_seed(name):
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 5)
    x = start(sig).float()
    assert torch.equal(SAMPLERS[name](ToyCFG(), x, sig, seed=1), SAMPLERS[name](ToyCFG(), x, sig, seed=2))


def test_trivial_schedules_return_x():
    x = torch.randn(SHAPE)
    for name in SAMPLER_NAMES:
        assert SAMPLERS[name](ToyCFG(), x, torch.tensor([]), seed=0) is x
        assert SAMPLERS[name](ToyCFG(), x, torch.tensor([1.0]), seed=0) is x


def test_uni_pc_single_step_returns_rescaled_input_like_comfyui():
    sig = torch.tensor([14.6146, 0.0])
    x = torch.randn(SHAPE)
    out = SAMPLERS["uni_pc"](toy_denoiser, x, sig, seed=0)
    torch.testing.assert_close(out, x / math.sqrt(1 + 14.6146 ** 2) * math.sqrt(1 + 0.001 ** 2))


# -- noise samplers ---------------------------------------------------------------------------------
def test_default_noise_sampler_seeding():
    """ComfyUI 0.3.64: a generator on x's device seeded with the seed itself, one randn per step (on the
    CPU the first draw therefore repeats the initial noise; the conformance cases pin this)."""
    x = torch.zeros(SHAPE)
    draws = default_noise_sampler(x, 42)
    g = torch.Generator().manual_seed(42)
    assert torch.equal(draws(None, None), torch.randn(SHAPE, generator=g))
    assert torch.equal(draws(None, None), torch.randn(SHAPE, generator=g))
    assert torch.equal(default_noise_sampler(x, 2 ** 64 - 1)(None, None),
                       torch.randn(SHAPE, generator=torch.Generator().manual_seed(2 ** 64 - 1)))


def test_brownian_tree_matches_torchsde_seeded_like_k_diffusion():
    import torchsde
    x = torch.zeros(SHAPE)
    smin, smax = torch.tensor(0.0292), torch.tensor(14.6146)
    ours = BrownianTreeNoiseSampler(x, smin, smax, seed=1234)
    tree = torchsde.BrownianTree(smin, torch.zeros(SHAPE), smax, entropy=1234)
    s, s_next = torch.tensor(3.0), torch.tensor(1.5)
    expected = -tree(s_next, s) / (s - s_next).sqrt()   # stepping down: W(sigma_next) - W(sigma)
    torch.testing.assert_close(ours(s, s_next), expected)
    torch.testing.assert_close(ours(s, s_next), BrownianTreeNoiseSampler(x, smin, smax, seed=1234)(s, s_next))
    assert not torch.equal(ours(s, s_next), BrownianTreeNoiseSampler(x, smin, smax, seed=1)(s, s_next))


def test_uni_pc_float32_rounding():
    """With float32 sigmas the VP conversion at the final sigma 0.001 rounds like ComfyUI's; the result
    stays within 5e-4 of the float64 computation (visually irrelevant, but not bit-equal)."""
    sig = SCHEDULERS["karras"](ModelSamplingEPS(), 8)
    x = start(sig)
    diff = (run("uni_pc", sig, x) - run("uni_pc", sig.double(), x)).abs().max().item()
    assert 1e-7 < diff < 5e-4
