"""Image-prompt nodes: load and run CLIP vision towers (CLIP_VISION → CLIP_VISION_OUTPUT), style models
that turn an image into extra prompt tokens, and unCLIP conditioning. The model code is in
nodes.sd.clip_vision and nodes.sd.style_model."""
from __future__ import annotations

import logging

import torch

from nodegraph import Combo, Float, Input, Node, NodeInputError, Output, folders

from .conditioning import with_options
from .loaders import file_fingerprint, loading, model_choices
from .sd.clip_vision import load_clip_vision
from .sd.model_cache import MODEL_CACHE, file_identity
from .sd.style_model import load_style_model

log = logging.getLogger(__name__)


class CLIPVisionLoader(Node):
    """Loads a CLIP vision tower (ViT-L/H/bigG, transformers or OpenAI layout) from models/clip_vision."""
    display_name = "Load CLIP Vision"
    category = "loaders"
    inputs = (Combo("clip_name", model_choices("clip_vision")),)
    outputs = (Output("CLIP_VISION"),)

    @classmethod
    def fingerprint(cls, clip_name):
        return file_fingerprint("clip_vision", clip_name)

    def run(self, clip_name):
        with loading("clip_name"):
            path = folders.current().model_path("clip_vision", clip_name)
            return (MODEL_CACHE.get_or_load(("clip-vision", *file_identity(path)), lambda: load_clip_vision(path)),)


class CLIPVisionEncode(Node):
    """Encodes an image with a CLIP vision tower; 'center' crops it to a square first, 'none' squashes it."""
    display_name = "CLIP Vision Encode"
    category = "conditioning"
    inputs = (Input("clip_vision", "CLIP_VISION"), Input("image", "IMAGE"), Combo("crop", ["center", "none"]))
    outputs = (Output("CLIP_VISION_OUTPUT"),)

    def run(self, clip_vision, image, crop):
        if image.ndim != 4 or image.shape[-1] < 3 or image.shape[0] == 0:
            raise NodeInputError("image", f"expected an IMAGE [batch, height, width, 3], got shape {tuple(image.shape)}")
        return (clip_vision.encode_image(image, crop=crop == "center"),)


class StyleModelLoader(Node):
    """Loads a T2I-Adapter style model from models/style_models."""
    display_name = "Load Style Model"
    category = "loaders"
    inputs = (Combo("style_model_name", model_choices("style_models")),)
    outputs = (Output("STYLE_MODEL"),)

    @classmethod
    def fingerprint(cls, style_model_name):
        return file_fingerprint("style_models", style_model_name)

    def run(self, style_model_name):
        with loading("style_model_name"):
            path = folders.current().model_path("style_models", style_model_name)
            return (MODEL_CACHE.get_or_load(("style-model", *file_identity(path)), lambda: load_style_model(path)),)


class StyleModelApply(Node):
    """Appends the style model's tokens for the image to every conditioning. 'multiply' scales the tokens
    by strength; 'attn_bias' leaves them and records a log(strength) attention bias (read by models that
    take an attention mask; the SD1.x UNet does not)."""
    display_name = "Apply Style Model"
    category = "conditioning/style_model"
    inputs = (Input("conditioning", "CONDITIONING"), Input("style_model", "STYLE_MODEL"),
              Input("clip_vision_output", "CLIP_VISION_OUTPUT"),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.001), Combo("strength_type", ["multiply", "attn_bias"]))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, style_model, clip_vision_output, strength, strength_type):
        try:
            tokens = style_model.get_cond(clip_vision_output)
        except ValueError as exc:
            raise NodeInputError("clip_vision_output", str(exc)) from None
        tokens = tokens.flatten(0, 1).unsqueeze(0)  # every image's tokens in one row: [1, B·n, C]
        if strength_type == "multiply":
            tokens = tokens * strength
        out = []
        for cond, options in conditioning:
            if tokens.shape[-1] != cond.shape[-1]:
                raise NodeInputError("style_model", f"the style model gives {tokens.shape[-1]}-wide tokens but the "
                                                    f"conditioning is {cond.shape[-1]} wide")
            options = dict(options)
            if "attention_mask" in options or (strength_type == "attn_bias" and strength != 1.0):
                options.update(_attention_bias(cond, options, tokens.shape[1],
                                               strength if strength_type == "attn_bias" else 1.0))
            out.append([torch.cat((cond, tokens.to(cond.device, cond.dtype)), dim=1), options])
        return (out,)


def _attention_bias(cond: torch.Tensor, options: dict, n_new: int, strength: float) -> dict:
    """ComfyUI's attention mask for appended style tokens: the existing mask (text tokens, then image-reference
    tokens) is widened by n_new columns/rows for the new tokens, whose columns get the bias log(strength)."""
    bias = torch.log(torch.tensor([strength]))
    ref_h, ref_w = options.get("attention_mask_img_shape", (1, 1))
    n_ref, n_txt = ref_h * ref_w, cond.shape[1]
    mask = options.get("attention_mask")
    if mask is None:
        mask = torch.zeros((cond.shape[0], n_txt + n_ref, n_txt + n_ref), dtype=torch.float16)
    if mask.dtype == torch.bool:
        mask = torch.log(mask.to(torch.float16))
    size = n_txt + n_new + n_ref
    new = torch.zeros((cond.shape[0], size, size), dtype=torch.float16)
    new[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
    new[:, :n_txt, n_txt + n_new:] = mask[:, :n_txt, n_txt:]
    new[:, n_txt + n_new:, :n_txt] = mask[:, n_txt:, :n_txt]
    new[:, n_txt + n_new:, n_txt + n_new:] = mask[:, n_txt:, n_txt:]
    new[:, :n_txt, n_txt:n_txt + n_new] = bias
    new[:, n_txt + n_new:, n_txt:n_txt + n_new] = bias
    return {"attention_mask": new.to(cond.device), "attention_mask_img_shape": (ref_h, ref_w)}


class unCLIPConditioning(Node):  # noqa: N801 - ComfyUI's class name
    """Adds an image embedding for unCLIP models (SD2.1-based image-variation models). An SD1.x UNet has no
    image-embedding input, so there it is carried along and has no effect, as in ComfyUI."""
    category = "conditioning"
    inputs = (Input("conditioning", "CONDITIONING"), Input("clip_vision_output", "CLIP_VISION_OUTPUT"),
              Float("strength", 1.0, min=-10.0, max=10.0, step=0.01),
              Float("noise_augmentation", 0.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning, clip_vision_output, strength, noise_augmentation):
        if strength == 0:
            return (conditioning,)
        entry = {"clip_vision_output": clip_vision_output, "strength": strength,
                 "noise_augmentation": noise_augmentation}
        return (with_options(conditioning, {"unclip_conditioning": [entry]}, append=True),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader,
                                                      StyleModelApply, unCLIPConditioning)}
NODE_DISPLAY_NAME_MAPPINGS = {name: cls.display_name for name, cls in NODE_CLASS_MAPPINGS.items() if cls.display_name}
