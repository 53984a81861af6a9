"""HypernetworkLoader: an A1111 hypernetwork as self- and cross-attention input patches on a MODEL clone
(the model options); the checkpoint's weights are untouched. The model code is in nodes.sd.hypernetwork."""
from __future__ import annotations

from nodegraph import Combo, Float, Input, Node, Output, folders

from .loaders import file_fingerprint, loading, model_choices
from .sd.hypernetwork import Hypernetwork, load_hypernetwork
from .sd.model_cache import MODEL_CACHE, file_identity

SOURCE = "HypernetworkLoader"


class HypernetworkPatch:
    """Rewrites the key and value inputs of every attention whose width the hypernetwork has a module for."""

    def __init__(self, hypernetwork: Hypernetwork, strength: float):
        self.hypernetwork, self.strength = hypernetwork, float(strength)

    def __call__(self, x, context, value, pc):
        context, value = self.hypernetwork.apply(context, value, self.strength)
        return x, context, value

    def __repr__(self) -> str:
        return f"HypernetworkPatch({self.hypernetwork.name!r}, strength={self.strength})"


class HypernetworkLoader(Node):
    """Applies an A1111 hypernetwork (.pt from models/hypernetworks) to the model's attention at `strength`."""
    category = "loaders"
    inputs = (Input("model", "MODEL"), Combo("hypernetwork_name", model_choices("hypernetworks")),
              Float("strength", 1.0, min=-10.0, max=10.0, step=0.01))
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, hypernetwork_name, **_):
        return file_fingerprint("hypernetworks", hypernetwork_name)

    def run(self, model, hypernetwork_name, strength):
        with loading("hypernetwork_name"):
            path = folders.current().model_path("hypernetworks", hypernetwork_name)
            hypernetwork = MODEL_CACHE.get_or_load(("hypernetwork", *file_identity(path)),
                                                   lambda: load_hypernetwork(path))
        patch = HypernetworkPatch(hypernetwork, strength)
        options = model.options.with_attention_patch("self", input=patch, source=SOURCE)
        options = options.with_attention_patch("cross", input=patch, source=SOURCE)
        return (model.with_options(options),)


NODE_CLASS_MAPPINGS = {"HypernetworkLoader": HypernetworkLoader}
