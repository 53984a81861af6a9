"""Model-merging nodes (ComfyUI's advanced/model_merging): blend, add or subtract two diffusion models
or two text encoders. Each result is a clone of the first input whose weights carry the second's as
patches (nodes.sd.merge): nothing is copied until the merged model runs or is saved."""
from __future__ import annotations

from nodegraph import Float, Input, Node, Output

from .sd.merge import blend, block_ratio, merge_clips, merged

_RATIO = dict(min=0.0, max=1.0, step=0.01)
_MULTIPLIER = dict(min=-10.0, max=10.0, step=0.01)


class ModelMergeSimple(Node):
    """model1·ratio + model2·(1 − ratio), weight by weight."""
    category = "advanced/model_merging"
    inputs = (Input("model1", "MODEL"), Input("model2", "MODEL"), Float("ratio", 1.0, **_RATIO))
    outputs = (Output("MODEL"),)

    def run(self, model1, model2, ratio):
        return (merged(model1, model2, lambda _key: blend(ratio)),)


class ModelMergeBlocks(Node):
    """Like ModelMergeSimple with one ratio for the input blocks, one for the middle block and one for
    the output side (output blocks and the final layers)."""
    category = "advanced/model_merging"
    inputs = (Input("model1", "MODEL"), Input("model2", "MODEL"), Float("input", 1.0, **_RATIO),
              Float("middle", 1.0, **_RATIO), Float("out", 1.0, **_RATIO))
    outputs = (Output("MODEL"),)

    def run(self, model1, model2, input, middle, out):
        ratios = {"input": input, "middle": middle, "out": out}
        return (merged(model1, model2, lambda key: blend(block_ratio(key, ratios))),)


class ModelMergeSubtract(Node):
    """(model1 − model2)·multiplier: the difference LoraSave turns into a LoRA, or AddDifference's first half."""
    category = "advanced/model_merging"
    inputs = (Input("model1", "MODEL"), Input("model2", "MODEL"), Float("multiplier", 1.0, **_MULTIPLIER))
    outputs = (Output("MODEL"),)

    def run(self, model1, model2, multiplier):
        return (merged(model1, model2, lambda _key: (-multiplier, multiplier)),)


class ModelMergeAdd(Node):
    """model1 + model2, weight by weight (e.g. a base model plus a ModelMergeSubtract difference)."""
    category = "advanced/model_merging"
    inputs = (Input("model1", "MODEL"), Input("model2", "MODEL"))
    outputs = (Output("MODEL"),)

    def run(self, model1, model2):
        return (merged(model1, model2, lambda _key: (1.0, 1.0)),)


class CLIPMergeSimple(Node):
    """clip1·ratio + clip2·(1 − ratio), for the text encoders."""
    category = "advanced/model_merging"
    inputs = (Input("clip1", "CLIP"), Input("clip2", "CLIP"), Float("ratio", 1.0, **_RATIO))
    outputs = (Output("CLIP"),)

    def run(self, clip1, clip2, ratio):
        return (merge_clips(clip1, clip2, lambda _key: blend(ratio)),)


class CLIPMergeSubtract(Node):
    """(clip1 − clip2)·multiplier, for the text encoders."""
    category = "advanced/model_merging"
    inputs = (Input("clip1", "CLIP"), Input("clip2", "CLIP"), Float("multiplier", 1.0, **_MULTIPLIER))
    outputs = (Output("CLIP"),)

    def run(self, clip1, clip2, multiplier):
        return (merge_clips(clip1, clip2, lambda _key: (-multiplier, multiplier)),)


class CLIPMergeAdd(Node):
    """clip1 + clip2, for the text encoders."""
    category = "advanced/model_merging"
    inputs = (Input("clip1", "CLIP"), Input("clip2", "CLIP"))
    outputs = (Output("CLIP"),)

    def run(self, clip1, clip2):
        return (merge_clips(clip1, clip2, lambda _key: (1.0, 1.0)),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (
    ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd,
    CLIPMergeSimple, CLIPMergeSubtract, CLIPMergeAdd)}
