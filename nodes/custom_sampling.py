"""Custom sampling (ComfyUI's comfy_extras/nodes_custom_sampler): SamplerCustom and
SamplerCustomAdvanced run any SAMPLER over any SIGMAS, guided by a GUIDER (CFG, basic, dual CFG,
perpendicular negative) from a NOISE source; AddNoise noises a latent as a sampler would.

Scheduler / sigma nodes are in custom_sampling_sigmas.py, SAMPLER nodes in custom_sampling_samplers.py."""
from __future__ import annotations

import torch

from nodegraph import Boolean, Combo, Float, Input, Int, Node, NodeInputError, Output, check_cancelled

from .sampling import SEED_MAX, StepProgress, check_latent, model_sampling_of, running_model
from .sd.model_options import SamplingRun
from .sd.sampling import CFGDenoiser, SamplerError, guided_sample
from .sd.sampling.guiders import DualCFGDenoiser, Guider, NoNoise, PerpNegDenoiser, SeededNoise
from .sd.sampling.model_sampling import process_latent_in, process_latent_out

CFG_INPUT = dict(min=0.0, max=100.0, step=0.1, round=0.01)


def sample_custom(guider: Guider, noise_source, seed: int, sampler, sigmas: torch.Tensor,
                  latent: dict) -> tuple[dict, dict]:
    """What both custom samplers do: (output, denoised_output). denoised_output is the x0 prediction of
    the last step (the output itself when no step ran). `seed` seeds the sampler's per-step noise."""
    model, samples = guider.model, latent["samples"]
    check_latent(model, samples)
    generator = torch.Generator("cpu").manual_seed(seed)  # model patches keep drawing from it (SamplingRun)
    noise = noise_source.generate(latent, generator)
    progress = StepProgress(max(len(sigmas) - 1, 0))
    ms = model_sampling_of(model)
    run = SamplingRun(ms, sigmas.to(model.load_device), generator)
    with running_model(model, samples, latent.get("noise_mask"), guider.positive) as model_fn:
        try:
            out = guided_sample(guider.denoiser(model_fn, run), ms, samples.to(model.load_device), noise, sigmas,
                                sampler, seed=seed, noise_mask=latent.get("noise_mask"), callback=progress,
                                cancel=check_cancelled, options=model.options, run=run)
        except SamplerError as exc:
            raise NodeInputError("sampler", f"{sampler.name} cannot run here: {exc}") from None
    output = {**latent, "samples": out.cpu()}
    x0 = progress.denoised_latent()
    return output, (output if x0 is None else {**latent, "samples": x0})


def cfg_guider(model, positive: list, negative: list, cfg: float) -> Guider:
    return Guider(model, positive, lambda fn, ms, **run: CFGDenoiser(fn, ms, positive, negative, cfg, **run))


class SamplerCustom(Node):
    """Samples a latent with a chosen sampler and sigma schedule under classifier-free guidance."""
    category = "sampling/custom_sampling"
    inputs = (
        Input("model", "MODEL"), Boolean("add_noise", True),
        Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
        Float("cfg", 8.0, **CFG_INPUT), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
        Input("sampler", "SAMPLER"), Input("sigmas", "SIGMAS"), Input("latent_image", "LATENT"),
    )
    outputs = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def run(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        # the per-step noise uses noise_seed even when add_noise is off, as in ComfyUI
        noise = SeededNoise(noise_seed) if add_noise else NoNoise()
        return sample_custom(cfg_guider(model, positive, negative, cfg), noise, noise_seed, sampler, sigmas,
                             latent_image)


class SamplerCustomAdvanced(Node):
    """Samples a latent with a noise source, a guider, a sampler and a sigma schedule."""
    category = "sampling/custom_sampling"
    inputs = (Input("noise", "NOISE"), Input("guider", "GUIDER"), Input("sampler", "SAMPLER"),
              Input("sigmas", "SIGMAS"), Input("latent_image", "LATENT"))
    outputs = (Output("LATENT", "output"), Output("LATENT", "denoised_output"))

    def run(self, noise, guider, sampler, sigmas, latent_image):
        return sample_custom(guider, noise, noise.seed, sampler, sigmas, latent_image)


class CFGGuider(Node):
    """Classifier-free guidance: positive against negative, scaled by cfg."""
    category = "sampling/custom_sampling/guiders"
    inputs = (Input("model", "MODEL"), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Float("cfg", 8.0, **CFG_INPUT))
    outputs = (Output("GUIDER"),)

    def run(self, model, positive, negative, cfg):
        return (cfg_guider(model, positive, negative, cfg),)


class BasicGuider(Node):
    """No guidance: the model's prediction for one conditioning."""
    category = "sampling/custom_sampling/guiders"
    inputs = (Input("model", "MODEL"), Input("conditioning", "CONDITIONING"))
    outputs = (Output("GUIDER"),)

    def run(self, model, conditioning):
        return (cfg_guider(model, conditioning, [], 1.0),)


class DualCFGGuider(Node):
    """Two guidance terms: cond1 against cond2 (cfg_conds) and cond2 against the negative
    (cfg_cond2_negative), added ('regular') or nested."""
    category = "sampling/custom_sampling/guiders"
    inputs = (Input("model", "MODEL"), Input("cond1", "CONDITIONING"), Input("cond2", "CONDITIONING"),
              Input("negative", "CONDITIONING"), Float("cfg_conds", 8.0, **CFG_INPUT),
              Float("cfg_cond2_negative", 8.0, **CFG_INPUT), Combo("style", ["regular", "nested"]))
    outputs = (Output("GUIDER"),)

    def run(self, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style):
        nested = style == "nested"
        return (Guider(model, cond1, lambda fn, ms, **run: DualCFGDenoiser(fn, ms, cond1, cond2, negative, cfg_conds,
                                                                           cfg_cond2_negative, nested, **run)),)


class PerpNegGuider(Node):
    """Perp-Neg: guidance away from the negative only where it is perpendicular to the positive."""
    category = "_for_testing"
    experimental = True
    inputs = (Input("model", "MODEL"), Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Input("empty_conditioning", "CONDITIONING"), Float("cfg", 8.0, **CFG_INPUT),
              Float("neg_scale", 1.0, min=0.0, max=100.0, step=0.01))
    outputs = (Output("GUIDER"),)

    def run(self, model, positive, negative, empty_conditioning, cfg, neg_scale):
        return (Guider(model, positive, lambda fn, ms, **run: PerpNegDenoiser(fn, ms, positive, negative,
                                                                              empty_conditioning, cfg, neg_scale,
                                                                              **run)),)


class RandomNoise(Node):
    """Seeded Gaussian noise, drawn as KSampler draws it."""
    category = "sampling/custom_sampling/noise"
    inputs = (Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),)
    outputs = (Output("NOISE"),)

    def run(self, noise_seed):
        return (SeededNoise(noise_seed),)


class DisableNoise(Node):
    """No initial noise (for a latent that is already noisy); stochastic samplers then use seed 0."""
    category = "sampling/custom_sampling/noise"
    outputs = (Output("NOISE"),)

    def run(self):
        return (NoNoise(),)


class AddNoise(Node):
    """Adds noise to a latent at the level a sigma schedule starts from (|sigma_first - sigma_last|)."""
    category = "_for_testing/custom_sampling/noise"
    experimental = True
    inputs = (Input("model", "MODEL"), Input("noise", "NOISE"), Input("sigmas", "SIGMAS"),
              Input("latent_image", "LATENT"))
    outputs = (Output("LATENT"),)

    def run(self, model, noise, sigmas, latent_image):
        if len(sigmas) == 0:
            return (latent_image,)
        samples = latent_image["samples"]
        noisy = noise.generate(latent_image)
        scale = torch.abs(sigmas[0] - sigmas[-1]) if len(sigmas) > 1 else sigmas[0]
        if torch.count_nonzero(samples) > 0:  # an empty latent is not scaled, as in ComfyUI
            samples = process_latent_in(samples)
        noisy = process_latent_out(model_sampling_of(model).noise_scaling(scale, noisy, samples))
        return ({**latent_image, "samples": torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)},)


NODE_CLASS_MAPPINGS = {
    "SamplerCustom": SamplerCustom, "SamplerCustomAdvanced": SamplerCustomAdvanced,
    "CFGGuider": CFGGuider, "BasicGuider": BasicGuider, "DualCFGGuider": DualCFGGuider,
    "PerpNegGuider": PerpNegGuider, "RandomNoise": RandomNoise, "DisableNoise": DisableNoise, "AddNoise": AddNoise,
}
