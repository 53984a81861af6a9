"""Model patch nodes, sampling family: ModelSamplingDiscrete / ContinuousEDM / ContinuousV (v-prediction,
LCM, x0, zero terminal SNR, EDM), RescaleCFG, DifferentialDiffusion and Epsilon Scaling.

Each returns a clone of the MODEL with one model option added (nodes/sd/model_options.py); the weights are
shared and never reloaded. Names, inputs, defaults and ranges are ComfyUI 0.3.64's."""
from __future__ import annotations

from nodegraph import Boolean, Combo, Float, Input, Node, NodeInputError, Output

from .sd.model_options_guidance import DifferentialDiffusion as DifferentialDiffusionMask
from .sd.model_options_guidance import EpsilonScaling as EpsilonScalingHook
from .sd.model_options_guidance import RescaleCFG as RescaleCFGFunction
from .sd.sampling.model_sampling import (
    ModelSamplingContinuousEDM as ContinuousEDM, ModelSamplingContinuousV as ContinuousV,
    ModelSamplingDiscrete as Discrete, ModelSamplingDiscreteDistilled as DiscreteDistilled,
)


def with_model_sampling(model, model_sampling, source: str):
    return model.with_options(model.options.with_model_sampling(model_sampling, source=source))


class ModelSamplingDiscrete(Node):
    """Reads the model as another parameterisation of SD's discrete schedule: v-prediction fine-tunes,
    LCM (with an LCM LoRA: 4-8 steps, sampler `lcm`), x0, and zero terminal SNR."""
    category = "advanced/model"
    inputs = (Input("model", "MODEL"),
              Combo("sampling", ["eps", "v_prediction", "lcm", "x0", "img_to_img"]),
              Boolean("zsnr", False))
    outputs = (Output("MODEL"),)

    def run(self, model, sampling, zsnr):
        schedule = DiscreteDistilled if sampling == "lcm" else Discrete
        return (with_model_sampling(model, schedule(sampling, zsnr=zsnr), "ModelSamplingDiscrete"),)


class ModelSamplingContinuousEDM(Node):
    """A continuous log-uniform sigma schedule (EDM-style models) with eps, v or EDM prediction."""
    category = "advanced/model"
    inputs = (Input("model", "MODEL"),
              Combo("sampling", ["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"]),
              Float("sigma_max", 120.0, min=0.0, max=1000.0, step=0.001, round=False),
              Float("sigma_min", 0.002, min=0.0, max=1000.0, step=0.001, round=False))
    outputs = (Output("MODEL"),)

    def run(self, model, sampling, sigma_max, sigma_min):
        if sampling in ("edm_playground_v2.5", "cosmos_rflow"):
            raise NodeInputError("sampling", f"'{sampling}' is for Playground v2.5 / Cosmos models (another "
                                 "latent format or flow schedule), not SD1.x; use v_prediction, edm or eps")
        _check_sigma_range(sigma_min, sigma_max)
        prediction = "edm" if sampling == "edm" else sampling
        sigma_data = 0.5 if sampling == "edm" else 1.0
        ms = ContinuousEDM(prediction, sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data)
        return (with_model_sampling(model, ms, "ModelSamplingContinuousEDM"),)


class ModelSamplingContinuousV(Node):
    """A continuous schedule with timesteps t = (2/π)·atan σ, for v-prediction models trained that way."""
    category = "advanced/model"
    inputs = (Input("model", "MODEL"), Combo("sampling", ["v_prediction"]),
              Float("sigma_max", 500.0, min=0.0, max=1000.0, step=0.001, round=False),
              Float("sigma_min", 0.03, min=0.0, max=1000.0, step=0.001, round=False))
    outputs = (Output("MODEL"),)

    def run(self, model, sampling, sigma_max, sigma_min):
        _check_sigma_range(sigma_min, sigma_max)
        ms = ContinuousV(sampling, sigma_min=sigma_min, sigma_max=sigma_max)
        return (with_model_sampling(model, ms, "ModelSamplingContinuousV"),)


def _check_sigma_range(sigma_min: float, sigma_max: float) -> None:
    # the schedule is log-spaced: zero or an inverted range would give NaN / reversed sigmas
    if sigma_min <= 0:
        raise NodeInputError("sigma_min", f"must be greater than 0 (the schedule is log-spaced), got {sigma_min}")
    if sigma_max <= sigma_min:
        raise NodeInputError("sigma_max", f"must be greater than sigma_min ({sigma_min}), got {sigma_max}")


class RescaleCFG(Node):
    """CFG on v-predictions, rescaled towards the positive prediction's standard deviation (for
    v-prediction / zero-terminal-SNR models at high CFG)."""
    category = "advanced/model"
    inputs = (Input("model", "MODEL"), Float("multiplier", 0.7, min=0.0, max=1.0, step=0.01))
    outputs = (Output("MODEL"),)

    def run(self, model, multiplier):
        return (model.with_options(model.options.with_cfg_function(RescaleCFGFunction(multiplier),
                                                                   source="RescaleCFG")),)


class DifferentialDiffusion(Node):
    """Inpainting with a soft mask: each pixel is repainted for the share of the steps its mask value gives."""
    display_name = "Differential Diffusion"
    category = "_for_testing"
    experimental = True
    inputs = (Input("model", "MODEL"), Float("strength", 1.0, min=0.0, max=1.0, step=0.01, optional=True))
    outputs = (Output("MODEL"),)

    def run(self, model, strength=1.0):
        return (model.with_options(model.options.with_denoise_mask_function(
            DifferentialDiffusionMask(strength), source="DifferentialDiffusion")),)


class EpsilonScaling(Node):
    """Epsilon Scaling (Ning et al. 2023): divides the predicted noise by a factor slightly above 1 to
    counter exposure bias."""
    category = "model_patches/unet"
    inputs = (Input("model", "MODEL"),
              Float("scaling_factor", 1.005, min=0.5, max=1.5, step=0.001, display="number"))
    outputs = (Output("MODEL"),)

    def run(self, model, scaling_factor):
        return (model.with_options(model.options.with_post_cfg(EpsilonScalingHook(scaling_factor),
                                                               source="Epsilon Scaling")),)


NODE_CLASS_MAPPINGS = {
    "ModelSamplingDiscrete": ModelSamplingDiscrete,
    "ModelSamplingContinuousEDM": ModelSamplingContinuousEDM,
    "ModelSamplingContinuousV": ModelSamplingContinuousV,
    "RescaleCFG": RescaleCFG,
    "DifferentialDiffusion": DifferentialDiffusion,
    "Epsilon Scaling": EpsilonScaling,
}
