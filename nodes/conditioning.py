"""Conditioning nodes: encode prompts with CLIP, CLIP skip, combine, blend and place conditionings.

CONDITIONING is ComfyUI's list of `[cond [1, 77·k, C], options]`; options carry `pooled_output`,
`area` (h, w, y, x in latent pixels, or ("percentage", h, w, y, x)), `strength`, `mask`,
`start_percent` / `end_percent`, `control` and the like; the sampler reads them (nodes.sd.sampling.cfg)."""
from __future__ import annotations

import logging

import torch

from nodegraph import Combo, Float, Input, Int, Node, Output, String
from nodegraph.contract import MAX_RESOLUTION

log = logging.getLogger(__name__)


def with_options(conditioning: list, values: dict, append: bool = False) -> list:
    """A new CONDITIONING whose every entry's options are updated with `values` (tensors shared).

    append=True extends an existing list value instead of replacing it (ComfyUI's `append` mode)."""
    out = []
    for cond, options in conditioning:
        options = dict(options)
        for key, value in values.items():
            previous = options.get(key) if append else None
            options[key] = value if previous is None else previous + value
        out.append([cond, options])
    return out

from .sd.device import cpu_threads


class CLIPTextEncode(Node):
    """Encodes a text prompt with CLIP into an embedding that guides the diffusion model."""
    display_name = "CLIP Text Encode (Prompt)"
    category = "conditioning"
    inputs = (String("text", "", multiline=True, dynamic_prompts=True, tooltip="The text to be encoded."),
              Input("clip", "CLIP", tooltip="The CLIP model used for encoding the text."))
    outputs = (Output("CONDITIONING", tooltip="A conditioning containing the embedded text."),)

    def run(self, text, clip):
        if clip is None:
            raise RuntimeError("clip input is invalid: None. If the clip is from a checkpoint loader node, "
                               "your checkpoint does not contain a valid clip or text encoder model.")
        with torch.inference_mode(), cpu_threads(clip.text_model):
            cond, pooled = clip.encode(text)
        return ([[cond, {"pooled_output": pooled}]],)


class CLIPSetLastLayer(Node):
    """CLIP skip: use the output of an earlier text-encoder layer (−2 = the second to last)."""
    display_name = "CLIP Set Last Layer"
    category = "conditioning"
    inputs = (Input("clip", "CLIP"), Int("stop_at_clip_layer", -1, min=-24, max=-1, step=1))
    outputs = (Output("CLIP"),)

    def run(self, clip, stop_at_clip_layer):
        clip = clip.clone()
        clip.set_layer(stop_at_clip_layer)
        return (clip,)


class ConditioningCombine(Node):
    display_name = "Conditioning (Combine)"
    category = "conditioning"
    inputs = (Input("conditioning_1", "CONDITIONING"), Input("conditioning_2", "CONDITIONING"))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_1, conditioning_2):
        return (conditioning_1 + conditioning_2,)


class ConditioningSetArea(Node):
    """Restricts a conditioning to a rectangle of the image (area composition)."""
    display_name = "Conditioning (Set Area)"
    category = "conditioning"
    inputs = (Input("conditioning", "CONDITIONING"),
              Int("width", 64, min=64, max=MAX_RESOLUTION, step=8), Int("height", 64, min=64, max=MAX_RESOLUTION, step=8),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, width, height, x, y, strength):
        area = (height // 8, width // 8, y // 8, x // 8)
        return (with_options(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage(Node):
    """Restricts a conditioning to a rectangle given as fractions of the image (resolved at sampling)."""
    display_name = "Conditioning (Set Area with Percentage)"
    category = "conditioning"
    inputs = (Input("conditioning", "CONDITIONING"),
              Float("width", 1.0, min=0, max=1.0, step=0.01), Float("height", 1.0, min=0, max=1.0, step=0.01),
              Float("x", 0, min=0, max=1.0, step=0.01), Float("y", 0, min=0, max=1.0, step=0.01),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, width, height, x, y, strength):
        area = ("percentage", height, width, y, x)
        return (with_options(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength(Node):
    """Sets the weight of a conditioning where it is blended with others."""
    category = "conditioning"
    inputs = (Input("conditioning", "CONDITIONING"), Float("strength", 1.0, min=0.0, max=10.0, step=0.01))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, strength):
        return (with_options(conditioning, {"strength": strength}),)


class ConditioningSetMask(Node):
    """Weights a conditioning by a mask (resized to the latent at sampling); 'mask bounds' also
    evaluates it only inside the mask's bounding box."""
    display_name = "Conditioning (Set Mask)"
    category = "conditioning"
    inputs = (Input("conditioning", "CONDITIONING"), Input("mask", "MASK"),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01), Combo("set_cond_area", ["default", "mask bounds"]))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, mask, strength, set_cond_area):
        if mask.ndim < 3:
            mask = mask.unsqueeze(0)
        return (with_options(conditioning, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                            "mask_strength": strength}),)


class ConditioningAverage(Node):
    """Blends conditioning_to with the first entry of conditioning_from:
    to·to_strength + from·(1 − to_strength), token by token (from is cut or zero-padded to to's length)."""
    # ComfyUI's display-name table spells the key "ConditioningAverage " (trailing space), so its
    # display name is the class name; kept identical.
    category = "conditioning"
    inputs = (Input("conditioning_to", "CONDITIONING"), Input("conditioning_from", "CONDITIONING"),
              Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_to, conditioning_from, conditioning_to_strength):
        if len(conditioning_from) > 1:
            log.warning("ConditioningAverage: conditioning_from holds %d conds; only the first is used",
                        len(conditioning_from))
        cond_from, options_from = conditioning_from[0]
        pooled_from = options_from.get("pooled_output")
        weight = conditioning_to_strength
        out = []
        for cond_to, options in conditioning_to:
            tokens = cond_to.shape[1]
            other = cond_from[:, :tokens]
            if other.shape[1] < tokens:
                padding = torch.zeros((1, tokens - other.shape[1], cond_to.shape[2]), dtype=other.dtype)
                other = torch.cat([other, padding.to(other.device)], dim=1)
            options = dict(options)
            pooled_to = options.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                options["pooled_output"] = pooled_to * weight + pooled_from * (1.0 - weight)
            out.append([cond_to * weight + other * (1.0 - weight), options])
        return (out,)


class ConditioningConcat(Node):
    """Appends the tokens of conditioning_from's first entry to every entry of conditioning_to."""
    display_name = "Conditioning (Concat)"
    category = "conditioning"
    inputs = (Input("conditioning_to", "CONDITIONING"), Input("conditioning_from", "CONDITIONING"))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_to, conditioning_from):
        if len(conditioning_from) > 1:
            log.warning("ConditioningConcat: conditioning_from holds %d conds; only the first is used",
                        len(conditioning_from))
        cond_from = conditioning_from[0][0]
        return ([[torch.cat((cond, cond_from), 1), dict(options)] for cond, options in conditioning_to],)


class ConditioningZeroOut(Node):
    """Every embedding (and the pooled output) set to zeros of the same shape."""
    category = "advanced/conditioning"
    inputs = (Input("conditioning", "CONDITIONING"),)
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning):
        out = []
        for cond, options in conditioning:
            options = dict(options)
            for key in ("pooled_output", "conditioning_lyrics"):
                if options.get(key) is not None:
                    options[key] = torch.zeros_like(options[key])
            out.append([torch.zeros_like(cond), options])
        return (out,)


class ConditioningSetTimestepRange(Node):
    """Makes a conditioning act only between `start` and `end` of the sampling (0 = first step, 1 = last)."""
    category = "advanced/conditioning"
    inputs = (Input("conditioning", "CONDITIONING"),
              Float("start", 0.0, min=0.0, max=1.0, step=0.001), Float("end", 1.0, min=0.0, max=1.0, step=0.001))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, start, end):
        return (with_options(conditioning, {"start_percent": start, "end_percent": end}),)


class CLIPTextEncodeControlnet(Node):
    """Encodes a separate prompt that only ControlNets see as their cross-attention context."""
    category = "_for_testing/conditioning"
    experimental = True
    inputs = (Input("clip", "CLIP"), Input("conditioning", "CONDITIONING"),
              String("text", "", multiline=True, dynamic_prompts=True))
    outputs = (Output("CONDITIONING"),)

    def run(self, clip, conditioning, text):
        with torch.inference_mode(), cpu_threads(clip.text_model):
            cond, pooled = clip.encode(text)
        return (with_options(conditioning, {"cross_attn_controlnet": cond, "pooled_output_controlnet": pooled}),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine, ConditioningSetArea, ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength, ConditioningSetMask, ConditioningAverage, ConditioningConcat, ConditioningZeroOut,
    ConditioningSetTimestepRange, CLIPTextEncodeControlnet)}
