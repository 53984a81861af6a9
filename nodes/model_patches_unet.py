"""Model patch nodes, UNet family: FreeU, FreeU_V2, HyperTile, TomePatchModel, PatchModelAddDownscale
(Kohya Deep Shrink), and the attention multipliers (UNetSelfAttentionMultiply, UNetCrossAttentionMultiply,
CLIPAttentionMultiply).

Block and attention patches are model options (nodes/sd/model_options_unet.py); the multipliers are weight
patches on the clone (nodes/sd/weight_scale.py). Names, inputs, defaults and ranges are ComfyUI 0.3.64's."""
from __future__ import annotations

from nodegraph import Boolean, Combo, Float, Input, Int, Node, NodeInputError, Output

from .sd.model_options_unet import DeepShrink, FreeU as FreeUPatch, HyperTile as HyperTilePatch, TokenMerging
from .sd.weight_scale import scale_weights

# ComfyUI's order for PatchModelAddDownscale's methods (bicubic first: the default)
DOWNSCALE_METHODS = ["bicubic", "nearest-exact", "bilinear", "area", "bislerp"]


def _unet_config(model):
    config = getattr(model.model, "config", None)
    if config is None:
        raise NodeInputError("model", "this MODEL is not an SD1.x UNet; the patch needs its block layout")
    return config


def _freeu(model, b1, b2, s1, s2, v2: bool, source: str):
    config = _unet_config(model)
    mc = config.model_channels
    scales = tuple((width, b, s) for width, b, s in ((mc * 4, b1, s1), (mc * 2, b2, s2))
                   if width in config.level_channels)
    if not scales:
        raise NodeInputError("model", f"FreeU acts on decoder blocks {mc * 4} or {mc * 2} channels wide "
                             f"(model_channels ×4, ×2); this model's are {sorted(set(config.level_channels))}")
    patch = FreeUPatch(scales, v2=v2)
    return (model.with_options(model.options.with_output_block_patch(patch, source=source)),)


def _freeu_inputs(b1: float, b2: float):
    return (Input("model", "MODEL"), *(Float(name, default, min=0.0, max=10.0, step=0.01)
                                       for name, default in (("b1", b1), ("b2", b2), ("s1", 0.9), ("s2", 0.2))))


class FreeU(Node):
    """FreeU: boosts the decoder's backbone features (b) and damps the skips' low frequencies (s)."""
    category = "model_patches/unet"
    inputs = _freeu_inputs(1.1, 1.2)
    outputs = (Output("MODEL"),)

    def run(self, model, b1, b2, s1, s2):
        return _freeu(model, b1, b2, s1, s2, v2=False, source="FreeU")


class FreeU_V2(Node):
    """FreeU v2: the backbone boost is weighted by each pixel's normalised mean activation."""
    category = "model_patches/unet"
    inputs = _freeu_inputs(1.3, 1.4)
    outputs = (Output("MODEL"),)

    def run(self, model, b1, b2, s1, s2):
        return _freeu(model, b1, b2, s1, s2, v2=True, source="FreeU_V2")


class HyperTile(Node):
    """Splits the self-attention queries into tiles (faster at large sizes)."""
    category = "model_patches/unet"
    inputs = (Input("model", "MODEL"), Int("tile_size", 256, min=1, max=2048), Int("swap_size", 2, min=1, max=128),
              Int("max_depth", 0, min=0, max=10), Boolean("scale_depth", False))
    outputs = (Output("MODEL"),)

    def run(self, model, tile_size, swap_size, max_depth, scale_depth):
        patch = HyperTilePatch(tile_size, swap_size, max_depth, scale_depth)
        options = model.options.with_attention_patch("self", input=patch.tile, output=patch.untile, source="HyperTile")
        return (model.with_options(options),)


class TomePatchModel(Node):
    """Token merging: merges the most similar self-attention queries at full resolution (faster, slightly
    different images)."""
    category = "model_patches/unet"
    inputs = (Input("model", "MODEL"), Float("ratio", 0.3, min=0.0, max=1.0, step=0.01))
    outputs = (Output("MODEL"),)

    def run(self, model, ratio):
        patch = TokenMerging(ratio)
        options = model.options.with_attention_patch("self", input=patch.merge, output=patch.unmerge,
                                                     source="TomePatchModel")
        return (model.with_options(options),)


class PatchModelAddDownscale(Node):
    """Kohya Deep Shrink: shrinks the features after one input block early in sampling (large images
    without repeated subjects)."""
    display_name = "PatchModelAddDownscale (Kohya Deep Shrink)"
    category = "model_patches/unet"
    inputs = (Input("model", "MODEL"), Int("block_number", 3, min=1, max=32, step=1),
              Float("downscale_factor", 2.0, min=0.1, max=9.0, step=0.001),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", 0.35, min=0.0, max=1.0, step=0.001),
              Boolean("downscale_after_skip", True),
              Combo("downscale_method", DOWNSCALE_METHODS), Combo("upscale_method", DOWNSCALE_METHODS))
    outputs = (Output("MODEL"),)

    def run(self, model, block_number, downscale_factor, start_percent, end_percent, downscale_after_skip,
            downscale_method, upscale_method):
        blocks = len(getattr(model.model, "input_blocks", ()))
        if not 1 <= block_number < blocks:
            raise NodeInputError("block_number", f"this model has input blocks 1..{blocks - 1}; "
                                 f"block {block_number} does not exist")
        ms = model.model_sampling
        patch = DeepShrink(block_number, downscale_factor, ms.percent_to_sigma(start_percent),
                           ms.percent_to_sigma(end_percent), downscale_method, upscale_method)
        options = model.options.with_input_block_patch(patch.shrink, source="PatchModelAddDownscale",
                                                       after_skip=downscale_after_skip)
        options = options.with_output_block_patch(patch.restore, source="PatchModelAddDownscale")
        return (model.with_options(options),)


def _multipliers():
    return tuple(Float(name, 1.0, min=0.0, max=10.0, step=0.01) for name in ("q", "k", "v", "out"))


def _multiply_unet_attention(model, attention: str, q, k, v, out):
    clone = model.clone()
    scale_weights(clone, {f"{attention}.to_q": q, f"{attention}.to_k": k, f"{attention}.to_v": v,
                          f"{attention}.to_out.0": out})
    return (clone,)


class UNetSelfAttentionMultiply(Node):
    """Multiplies the UNet's self-attention q / k / v / output weights (weight patches on a clone)."""
    category = "_for_testing/attention_experiments"
    experimental = True
    inputs = (Input("model", "MODEL"), *_multipliers())
    outputs = (Output("MODEL"),)

    def run(self, model, q, k, v, out):
        return _multiply_unet_attention(model, "attn1", q, k, v, out)


class UNetCrossAttentionMultiply(Node):
    """Multiplies the UNet's cross-attention q / k / v / output weights (weight patches on a clone)."""
    category = "_for_testing/attention_experiments"
    experimental = True
    inputs = (Input("model", "MODEL"), *_multipliers())
    outputs = (Output("MODEL"),)

    def run(self, model, q, k, v, out):
        return _multiply_unet_attention(model, "attn2", q, k, v, out)


class CLIPAttentionMultiply(Node):
    """Multiplies the text encoder's self-attention q / k / v / output projections (weight patches on a
    CLIP clone, applied while it encodes)."""
    category = "_for_testing/attention_experiments"
    experimental = True
    inputs = (Input("clip", "CLIP"), *_multipliers())
    outputs = (Output("CLIP"),)

    def run(self, clip, q, k, v, out):
        from .sd.lora import _clip_patcher

        clone = clip.clone()
        patcher = _clip_patcher(clone)
        if patcher is getattr(clip, "patcher", None):  # never patch the input's own patcher
            patcher = clone.patcher = patcher.clone()
        scale_weights(patcher, {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v,
                                "self_attn.out_proj": out})
        return (clone,)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    FreeU, FreeU_V2, HyperTile, TomePatchModel, PatchModelAddDownscale,
    UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, CLIPAttentionMultiply)}
