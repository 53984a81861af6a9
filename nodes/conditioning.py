"""Conditioning nodes: encode prompts with CLIP, CLIP skip, combine and place conditionings.

CONDITIONING is ComfyUI's list of `[cond [1, 77·k, C], options]`; options carry `pooled_output`,
`area` (h, w, y, x in latent pixels), `strength`, `control` and the like."""
from __future__ import annotations

import torch

from nodegraph import Float, Input, Int, Node, Output, String
from nodegraph.contract import MAX_RESOLUTION

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
        return ([[cond, {**options, "area": area, "strength": strength, "set_area_to_bounds": False}]
                 for cond, options in conditioning],)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (CLIPTextEncode, CLIPSetLastLayer, ConditioningCombine,
                                                      ConditioningSetArea)}
