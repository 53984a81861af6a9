"""Model patch nodes, guidance family: Self-Attention Guidance, Perturbed-Attention Guidance, APG,
CFGZeroStar, CFGNorm, TCFG, Mahiro and FreSca.

Each returns a clone of the MODEL with CFG hooks added (nodes/sd/model_options.py); the algorithms are in
nodes/sd/model_options_guidance.py. Names, inputs, defaults and ranges are ComfyUI 0.3.64's."""
from __future__ import annotations

from nodegraph import Float, Input, Int, Node, NodeInputError, Output

from .sd import model_options_guidance as guidance

MIDDLE_ATTENTION = ("middle", 0, 0)


def require_attention_site(model, site: tuple, why: str) -> None:
    """Refuse, at the patch node, a model without the attention the patch works on."""
    sites = getattr(model.model, "attention_sites", None)
    if sites is not None and tuple(site) not in sites():
        raise NodeInputError("model", f"{why}; this model has no self-attention at block {site[0]} {site[1]}")


class SelfAttentionGuidance(Node):
    """Blurs the parts of the negative prediction the middle block attends to most and guides away from
    the result (one extra UNet pass per step; the negative is always evaluated, even at cfg 1)."""
    display_name = "Self-Attention Guidance"
    category = "_for_testing"
    experimental = True
    inputs = (Input("model", "MODEL"), Float("scale", 0.5, min=-2.0, max=5.0, step=0.01),
              Float("blur_sigma", 2.0, min=0.0, max=10.0, step=0.1))
    outputs = (Output("MODEL"),)

    def run(self, model, scale, blur_sigma):
        require_attention_site(model, MIDDLE_ATTENTION, "SAG reads the middle block's self-attention map")
        if blur_sigma <= 0:
            raise NodeInputError("blur_sigma", "must be greater than 0 (it is the Gaussian blur's width)")
        sag = guidance.SelfAttentionGuidance(scale, blur_sigma)
        options = model.options.with_post_cfg(sag.guide, source="SelfAttentionGuidance",
                                              disable_cfg1_optimization=True)
        options = options.with_attention_replacement("self", MIDDLE_ATTENTION, sag.record,
                                                     source="SelfAttentionGuidance")
        return (model.with_options(options),)


class PerturbedAttentionGuidance(Node):
    """Guides away from a prediction whose middle-block self-attention is replaced by the identity
    (one extra UNet pass per step)."""
    category = "model_patches/unet"
    inputs = (Input("model", "MODEL"), Float("scale", 3.0, min=0.0, max=100.0, step=0.01, round=0.01))
    outputs = (Output("MODEL"),)

    def run(self, model, scale):
        require_attention_site(model, MIDDLE_ATTENTION, "PAG perturbs the middle block's self-attention")
        hook = guidance.PerturbedAttentionGuidance(scale)
        return (model.with_options(model.options.with_post_cfg(hook, source="PerturbedAttentionGuidance")),)


class APG(Node):
    """Adaptive Projected Guidance: damps the part of the guidance parallel to the positive prediction
    (less oversaturation at high CFG)."""
    display_name = "Adaptive Projected Guidance"
    category = "sampling/custom_sampling"
    inputs = (Input("model", "MODEL"),
              Float("eta", 1.0, min=-10.0, max=10.0, step=0.01,
                    tooltip="Controls the scale of the parallel guidance vector. Default CFG behavior at a setting of 1."),
              Float("norm_threshold", 5.0, min=0.0, max=50.0, step=0.1,
                    tooltip="Normalize guidance vector to this value, normalization disable at a setting of 0."),
              Float("momentum", 0.0, min=-5.0, max=1.0, step=0.01,
                    tooltip="Controls a running average of guidance during diffusion, disabled at a setting of 0."))
    outputs = (Output("MODEL"),)

    def run(self, model, eta, norm_threshold, momentum):
        hook = guidance.AdaptiveProjectedGuidance(eta, norm_threshold, momentum)
        return (model.with_options(model.options.with_pre_cfg(hook, source="APG")),)


class CFGZeroStar(Node):
    """CFG-Zero*: scales the negative prediction by its optimal projection onto the positive."""
    category = "advanced/guidance"
    inputs = (Input("model", "MODEL"),)
    outputs = (Output("MODEL", name="patched_model"),)

    def run(self, model):
        return (model.with_options(model.options.with_post_cfg(guidance.CFGZeroStar(), source="CFGZeroStar")),)


class CFGNorm(Node):
    """Caps the per-pixel norm of the CFG result at the positive prediction's."""
    category = "advanced/guidance"
    experimental = True
    inputs = (Input("model", "MODEL"), Float("strength", 1.0, min=0.0, max=100.0, step=0.01))
    outputs = (Output("MODEL", name="patched_model"),)

    def run(self, model, strength):
        return (model.with_options(model.options.with_post_cfg(guidance.CFGNorm(strength), source="CFGNorm")),)


class TCFG(Node):
    """TCFG – Tangential Damping CFG (2503.18137)

    Refine the uncond (negative) to align with the cond (positive) for improving quality."""
    display_name = "Tangential Damping CFG"
    category = "advanced/guidance"
    inputs = (Input("model", "MODEL"),)
    outputs = (Output("MODEL", name="patched_model"),)

    def run(self, model):
        return (model.with_options(model.options.with_pre_cfg(guidance.TangentialDampingCFG(), source="TCFG")),)


class Mahiro(Node):
    """Modify the guidance to scale more on the 'direction' of the positive prompt rather than the difference between the negative prompt."""
    display_name = "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)"
    category = "_for_testing"
    experimental = True
    inputs = (Input("model", "MODEL"),)
    outputs = (Output("MODEL", name="patched_model"),)

    def run(self, model):
        return (model.with_options(model.options.with_post_cfg(guidance.Mahiro(), source="Mahiro")),)


class FreSca(Node):
    """Applies frequency-dependent scaling to the guidance"""
    display_name = "FreSca"
    category = "_for_testing"
    experimental = True
    inputs = (Input("model", "MODEL"),
              Float("scale_low", 1.0, min=0, max=10, step=0.01, tooltip="Scaling factor for low-frequency components"),
              Float("scale_high", 1.25, min=0, max=10, step=0.01, tooltip="Scaling factor for high-frequency components"),
              Int("freq_cutoff", 20, min=1, max=10000, step=1,
                  tooltip="Number of frequency indices around center to consider as low-frequency"))
    outputs = (Output("MODEL"),)

    def run(self, model, scale_low, scale_high, freq_cutoff):
        hook = guidance.FreSca(scale_low, scale_high, freq_cutoff)
        return (model.with_options(model.options.with_pre_cfg(hook, source="FreSca")),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    SelfAttentionGuidance, PerturbedAttentionGuidance, APG, CFGZeroStar, CFGNorm, TCFG, Mahiro, FreSca)}
