"""ControlNet nodes: load a ControlNet (or a T2I-Adapter, or a diff ControlNet over a model), and apply it
with a hint image to conditionings.

The apply nodes store a copy of the net, with its hint, strength and window, in each conditioning's
options under "control"; the sampler evaluates it (nodes.sd.controlnet.ControlNet). A net applied
to a conditioning that already has one chains onto it, and their residuals add up. See docs/controlnet.md.
"""
from __future__ import annotations

import logging

import torch

from nodegraph import Combo, Float, Input, Node, Output, folders
from nodegraph.progress import current_node

from .loaders import file_fingerprint, loading, model_choices
from .sd.controlnet import ControlNet, load_controlnet, load_diff_controlnet

log = logging.getLogger(__name__)


def _who(node_class: str) -> str:
    context = current_node()
    return f"{node_class} (node {context.node_id})" if context is not None else node_class


def hint_from_image(image: torch.Tensor, control_net: ControlNet, node_class: str) -> torch.Tensor | None:
    """IMAGE [B, H, W, C] → hint [B, C, H, W], checked against the net. None (with a warning) for an
    empty image; a wrong channel count is an error naming the input."""
    who = _who(node_class)
    if image.ndim != 4:
        raise ValueError(f"{who}: input 'image' must be an IMAGE [batch, height, width, channels], "
                         f"got shape {tuple(image.shape)}")
    if image.shape[-1] != control_net.hint_channels:
        raise ValueError(f"{who}: input 'image' has {image.shape[-1]} channel(s) but ControlNet "
                         f"'{control_net.name}' takes {control_net.hint_channels}-channel hints")
    if image.numel() == 0:
        log.warning("%s: input 'image' is empty (shape %s); the ControlNet is not applied", who, tuple(image.shape))
        return None
    black = [i + 1 for i in range(image.shape[0]) if not bool(image[i].any())]
    if black:
        which = "the hint image is" if image.shape[0] == 1 else f"hint image(s) {black} of {image.shape[0]} are"
        log.warning("%s: %s all black (no edges or depth found?); ControlNet '%s' still runs but is steered by "
                    "an empty hint", who, which, control_net.name)
    return image.movedim(-1, 1)


class ControlNetLoader(Node):
    """Loads an SD1.x ControlNet (original or diffusers layout) or T2I-Adapter (full or light) from
    models/controlnet or models/t2i_adapter."""
    display_name = "Load ControlNet Model"
    category = "loaders"
    inputs = (Combo("control_net_name", model_choices("controlnet")),)
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, control_net_name):
        return file_fingerprint("controlnet", control_net_name)

    def run(self, control_net_name):
        with loading("control_net_name"):
            return (load_controlnet(folders.current().model_path("controlnet", control_net_name)),)


class DiffControlNetLoader(Node):
    """Loads a 'diff' ControlNet, whose weights are differences to a base model, by adding them to this
    model's weights (LoRAs on the model included). A full ControlNet file loads as with ControlNetLoader."""
    display_name = "Load ControlNet Model (diff)"
    category = "loaders"
    inputs = (Input("model", "MODEL"), Combo("control_net_name", model_choices("controlnet")))
    outputs = (Output("CONTROL_NET"),)

    @classmethod
    def fingerprint(cls, control_net_name, **_):
        return file_fingerprint("controlnet", control_net_name)

    def run(self, model, control_net_name):
        with loading("control_net_name"):
            return (load_diff_controlnet(folders.current().model_path("controlnet", control_net_name), model),)


class ControlNetApply(Node):
    """Applies a ControlNet to one conditioning; the sampler lends it to the negative as well."""
    display_name = "Apply ControlNet (OLD)"
    category = "conditioning/controlnet"
    deprecated = True
    inputs = (Input("conditioning", "CONDITIONING"), Input("control_net", "CONTROL_NET"), Input("image", "IMAGE"),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, control_net, image, strength):
        if strength == 0:
            return (conditioning,)
        hint = hint_from_image(image, control_net, "ControlNetApply")
        if hint is None:
            return (conditioning,)
        out = []
        for cond, options in conditioning:
            net = control_net.copy().set_cond_hint(hint, strength)
            if options.get("control") is not None:
                net.set_previous_controlnet(options["control"])
            out.append([cond, {**options, "control": net, "control_apply_to_uncond": True}])
        return (out,)


class ControlNetApplyAdvanced(Node):
    """Applies a ControlNet to positive and negative conditioning, between start_percent and
    end_percent of the sampling (0 = first step, 1 = last)."""
    display_name = "Apply ControlNet"
    category = "conditioning/controlnet"
    inputs = (Input("positive", "CONDITIONING"), Input("negative", "CONDITIONING"),
              Input("control_net", "CONTROL_NET"), Input("image", "IMAGE"),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001),
              Input("vae", "VAE", optional=True))
    outputs = (Output("CONDITIONING", "positive"), Output("CONDITIONING", "negative"))

    def run(self, positive, negative, control_net, image, strength, start_percent, end_percent, vae=None):
        if strength == 0:
            return (positive, negative)
        hint = hint_from_image(image, control_net, "ControlNetApplyAdvanced")
        if hint is None:
            return (positive, negative)
        # One copy per distinct previous net: conds that shared a chain keep sharing one (so the
        # sampler can still batch positive and negative into one pass).
        nets: dict[int, ControlNet] = {}
        out = []
        for conditioning in (positive, negative):
            converted = []
            for cond, options in conditioning:
                previous = options.get("control")
                net = nets.get(id(previous))
                if net is None:
                    net = control_net.copy().set_cond_hint(hint, strength, (start_percent, end_percent), vae=vae)
                    net.set_previous_controlnet(previous)
                    nets[id(previous)] = net
                converted.append([cond, {**options, "control": net, "control_apply_to_uncond": False}])
            out.append(converted)
        return (out[0], out[1])


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (ControlNetLoader, DiffControlNetLoader, ControlNetApply,
                                                      ControlNetApplyAdvanced)}
NODE_DISPLAY_NAME_MAPPINGS = {name: cls.display_name for name, cls in NODE_CLASS_MAPPINGS.items()}
