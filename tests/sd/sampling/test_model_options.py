"""The model-options mechanism on the CFG side: hooks run in ComfyUI's order (pre-CFG, CFG function,
post-CFG) with what they are documented to see, extra guidance passes, the UNet wrapper, the inpainting
mask function, errors naming the patch node, and clones that never share a mutable option. The 'UNet' is
the analytic toy of test_cfg.py, so every expectation is computed by hand here."""

import pytest
import torch

from nodes.sd.model_options import ModelOptions, ModelPatchError, NO_OPTIONS, SamplingRun
from nodes.sd.patcher import ModelPatcher
from nodes.sd.sampling.cfg import CFGDenoiser, InpaintDenoiser
from nodes.sd.sampling.model_sampling import ModelSamplingEPS

from .test_cfg import MS, SIGMA, B, ToyUNet, expected_x0, text


class PatchAwareUNet(ToyUNet):
    """The toy UNet that also records the patch context it was given (None when not given at all)."""

    def __call__(self, x_in, timesteps, context, control=None, **kwargs):
        self.calls.append((x_in.shape[0], context.shape[1], control, kwargs.get("patch_context", "absent")))
        bias = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return 0.1 * x_in + bias + timesteps.view(-1, 1, 1, 1) / 1e4


@pytest.fixture
def x():
    return torch.randn(B, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def denoiser(options, cfg=3.0, unet=None):
    unet = unet or PatchAwareUNet()
    return CFGDenoiser(unet, MS, [[text(1.0), {}]], [[text(-1.0), {}]], cfg, options=options), unet


def test_no_options_is_the_plain_path(x):
    d, unet = denoiser(NO_OPTIONS)
    out = d(x, SIGMA)
    torch.testing.assert_close(out, expected_x0(x, SIGMA, -1.0) + (expected_x0(x, SIGMA, 1.0)
                                                                       - expected_x0(x, SIGMA, -1.0)) * 3.0)
    assert [c[3] for c in unet.calls] == ["absent"]  # the UNet is not even told about patches


def test_hooks_run_in_order_and_see_their_inputs(x):
    cond, uncond = expected_x0(x, SIGMA, 1.0), expected_x0(x, SIGMA, -1.0)
    seen = []

    def pre(step):
        seen.append("pre")
        torch.testing.assert_close(step.cond_denoised, cond)
        torch.testing.assert_close(step.uncond_denoised, uncond)
        assert step.cond_scale == 3.0 and step.conds[1] is not None and step.x is x
        return step.cond_denoised * 2, step.uncond_denoised

    def cfg_function(step):
        seen.append("cfg")
        torch.testing.assert_close(step.cond_denoised, cond * 2)  # what pre returned
        return step.cond_denoised - step.uncond_denoised

    def post(step):
        seen.append("post")
        return step.denoised + 1.0

    options = (NO_OPTIONS.with_post_cfg(post, source="Post").with_pre_cfg(pre, source="Pre")
               .with_cfg_function(cfg_function, source="Fn"))
    out = denoiser(options)[0](x, SIGMA)
    assert seen == ["pre", "cfg", "post"]
    torch.testing.assert_close(out, cond * 2 - uncond + 1.0)
    assert options.sources == ("Post", "Pre", "Fn")


def test_post_cfg_hooks_chain_and_the_default_formula_feeds_them(x):
    cond, uncond = expected_x0(x, SIGMA, 1.0), expected_x0(x, SIGMA, -1.0)
    options = (NO_OPTIONS.with_post_cfg(lambda s: s.denoised * 2, source="A")
               .with_post_cfg(lambda s: s.denoised - 1, source="B"))
    out = denoiser(options)[0](x, SIGMA)
    torch.testing.assert_close(out, (uncond + (cond - uncond) * 3.0) * 2 - 1)


def test_cfg1_skip_and_its_opt_out(x):
    seen = {}

    def post(step):
        seen["negative"], seen["uncond"] = step.conds[1], step.uncond_denoised.clone()
        return step.denoised

    d, unet = denoiser(NO_OPTIONS.with_post_cfg(post, source="P"), cfg=1.0)
    d(x, SIGMA)
    assert [c[0] for c in unet.calls] == [B] and seen["negative"] is None
    assert torch.count_nonzero(seen["uncond"]) == 0  # a skipped negative predicts zeros, as ComfyUI
    d, unet = denoiser(NO_OPTIONS.with_post_cfg(post, source="P", disable_cfg1_optimization=True), cfg=1.0)
    d(x, SIGMA)
    assert [c[0] for c in unet.calls] == [2 * B]
    torch.testing.assert_close(seen["uncond"], expected_x0(x, SIGMA, -1.0))


def test_an_extra_guidance_pass_can_carry_other_patches(x):
    """PAG's shape: the post-CFG hook predicts the positive again with an attention replacement added."""
    replacement = lambda q, k, v, pc: v  # noqa: E731

    def post(step):
        extra = step.options.with_attention_replacement("self", ("middle", 0), replacement, source="Post")
        (again,) = step.predict([step.conds[0]], step.x, step.sigma, extra)
        return step.denoised + (step.cond_denoised - again)

    d, unet = denoiser(NO_OPTIONS.with_post_cfg(post, source="Post"))
    d(x, SIGMA)
    assert [c[0] for c in unet.calls] == [2 * B, B]
    assert unet.calls[0][3] == "absent"
    pc = unet.calls[1][3]
    assert pc.patches.self_attention.replace == {("middle", 0): replacement}
    assert pc.cond_or_uncond == (0,) and pc.sigmas.shape == (B,)


def test_cond_or_uncond_follows_the_batch_order(x):
    """ComfyUI batches the last-listed chunk first: [negative, positive] -> (1, 0)."""
    patch = lambda h, pc: h  # noqa: E731
    d, unet = denoiser(NO_OPTIONS.with_input_block_patch(patch, source="P"))
    d(x, SIGMA)
    pc = unet.calls[0][3]
    assert pc.cond_or_uncond == (1, 0) and pc.patches.input_block == (patch,)
    torch.testing.assert_close(pc.sigmas, SIGMA)  # the latents' sigmas, not one per chunk


def test_unet_wrapper_sees_each_batched_call_and_may_change_it(x):
    calls = []

    def wrapper(apply, call):
        calls.append((call.x.shape[0], call.cond_or_uncond, call.sigma.shape[0]))
        return apply(call) * 0.5

    d, _ = denoiser(NO_OPTIONS.with_unet_wrapper(wrapper, source="W"), cfg=1.0)
    out = d(x, SIGMA)
    assert calls == [(B, (0,), B)]
    torch.testing.assert_close(out, expected_x0(x, SIGMA, 1.0) * 0.5)


def test_a_failing_patch_is_named(x):
    def broken(step):
        raise RuntimeError("shape mismatch deep inside")

    with pytest.raises(ModelPatchError, match=r"^Broken: sampling failed .*shape mismatch"):
        denoiser(NO_OPTIONS.with_post_cfg(broken, source="Broken"))[0](x, SIGMA)

    def refusing(step):
        raise ModelPatchError("SelfAttentionGuidance", "needs self-attention in the middle block")

    with pytest.raises(ModelPatchError, match="^SelfAttentionGuidance: needs"):
        denoiser(NO_OPTIONS.with_post_cfg(refusing, source="SelfAttentionGuidance"))[0](x, SIGMA)

    def out_of_memory(step):
        raise torch.OutOfMemoryError("no room")

    with pytest.raises(torch.OutOfMemoryError):  # left as is, for the memory policy to handle
        denoiser(NO_OPTIONS.with_post_cfg(out_of_memory, source="Big"))[0](x, SIGMA)


def test_denoise_mask_function_reshapes_the_inpainting_mask(x):
    latent, noise = torch.full_like(x, 2.0), torch.zeros_like(x)
    mask = torch.full_like(x, 0.5)
    run = SamplingRun(MS, torch.tensor([3.0, 0.0]))
    seen = []

    def binarise(sigma, m, r):
        seen.append((sigma.clone(), r is run))
        return (m > 0.25).to(m.dtype)

    inner = lambda xx, s: xx * 0 + 7.0  # noqa: E731
    out = InpaintDenoiser(inner, MS, latent, noise, mask, mask_function=binarise, run=run)(x, SIGMA)
    torch.testing.assert_close(out, torch.full_like(x, 7.0))  # the whole mask became 1: all repainted
    assert seen[0][1] and torch.equal(seen[0][0], SIGMA)


def test_options_are_immutable_and_clones_do_not_share_changes():
    base = ModelPatcher(torch.nn.Linear(2, 2))
    patched = base.with_options(base.options.with_post_cfg(lambda s: s.denoised, source="A"))
    assert base.options is NO_OPTIONS and len(patched.options.post_cfg) == 1
    assert patched.model is base.model
    again = patched.clone()
    again.options = again.options.with_pre_cfg(lambda s: (s.cond_denoised, s.uncond_denoised), source="B")
    assert patched.options.pre_cfg == () and again.options.sources == ("A", "B")
    with pytest.raises(Exception):
        patched.options.post_cfg = ()  # frozen
    with pytest.raises(ValueError, match="source"):
        NO_OPTIONS.with_post_cfg(lambda s: s.denoised, source="")


def test_model_sampling_defaults_to_sd1_and_follows_the_options():
    from nodes.sd.sampling.model_sampling import ModelSamplingDiscrete

    base = ModelPatcher(torch.nn.Linear(2, 2))
    assert isinstance(base.model_sampling, ModelSamplingEPS)
    v = ModelSamplingDiscrete("v_prediction")
    patched = base.with_options(base.options.with_model_sampling(v, source="ModelSamplingDiscrete"))
    assert patched.model_sampling is v and isinstance(base.model_sampling, ModelSamplingEPS)


def test_attention_site_keys_are_checked():
    with pytest.raises(ValueError, match="'input', 'middle' or 'output'"):
        NO_OPTIONS.with_attention_replacement("self", ("mid", 0), lambda q, k, v, pc: v, source="X")
    with pytest.raises(ValueError, match="'self' or 'cross'"):
        NO_OPTIONS.with_attention_patch("attn3", input=lambda *a: a[:3], source="X")
    assert isinstance(NO_OPTIONS, ModelOptions) and NO_OPTIONS.empty


def test_the_samplers_own_post_cfg_hooks_run_after_the_models(x):
    """CFG++ reads the unconditional prediction through a run-scoped hook of the same shape, after the
    MODEL's post-CFG hooks (as ComfyUI appends the sampler's function to the model's list)."""
    order = []
    d, _ = denoiser(NO_OPTIONS.with_post_cfg(lambda s: order.append("model") or s.denoised + 1, source="M"))
    d.post_cfg_functions.append(lambda s: order.append(("sampler", s.uncond_denoised.shape)) or s.denoised * 2)
    out = d(x, SIGMA)
    cond, uncond = expected_x0(x, SIGMA, 1.0), expected_x0(x, SIGMA, -1.0)
    assert order == ["model", ("sampler", x.shape)]
    torch.testing.assert_close(out, (uncond + (cond - uncond) * 3.0 + 1) * 2)
