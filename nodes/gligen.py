"""GLIGEN nodes: load a GLIGEN model and place phrases in boxes (GLIGENTextBoxApply). The boxes ride in the
conditioning under ComfyUI's "gligen" key; the sampler turns them into an after-self-attention patch for the
conditions that carry them (nodes.sd.gligen, nodes.sd.sampling.cfg)."""
from __future__ import annotations

import torch

from nodegraph import Combo, Input, Int, Node, NodeInputError, Output, String, folders
from nodegraph.contract import MAX_RESOLUTION

from .loaders import file_fingerprint, loading, model_choices
from .sd.device import cpu_threads
from .sd.gligen import MAX_OBJECTS, Gligen, load_gligen
from .sd.model_cache import MODEL_CACHE, file_identity


class LoadedGligen:
    """The GLIGEN socket value. `.model` is the Gligen module (ComfyUI's conditionings hold a patcher whose
    `.model` is the module; node packs that read the "gligen" key find it there too)."""

    def __init__(self, model: Gligen, name: str):
        self.model, self.name = model, name

    def memory_parts(self):
        return self.model.memory_parts()


class GLIGENLoader(Node):
    """Loads a GLIGEN model (position-conditioned boxes) from models/gligen."""
    category = "loaders"
    inputs = (Combo("gligen_name", model_choices("gligen")),)
    outputs = (Output("GLIGEN"),)

    @classmethod
    def fingerprint(cls, gligen_name):
        return file_fingerprint("gligen", gligen_name)

    def run(self, gligen_name):
        with loading("gligen_name"):
            path = folders.current().model_path("gligen", gligen_name)
            model = MODEL_CACHE.get_or_load(("gligen", *file_identity(path)), lambda: load_gligen(path))
        return (LoadedGligen(model, path.name),)


class GLIGENTextBoxApply(Node):
    """Asks for `text` inside the box (x, y, width, height, in pixels): the phrase's pooled CLIP embedding
    and the box are added to every conditioning's GLIGEN boxes (up to 30)."""
    category = "conditioning/gligen"
    inputs = (Input("conditioning_to", "CONDITIONING"), Input("clip", "CLIP"), Input("gligen_textbox_model", "GLIGEN"),
              String("text", "", multiline=True, dynamic_prompts=True),
              Int("width", 64, min=8, max=MAX_RESOLUTION, step=8), Int("height", 64, min=8, max=MAX_RESOLUTION, step=8),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8))
    outputs = (Output("CONDITIONING"),)

    def run(self, conditioning_to, clip, gligen_textbox_model, text, width, height, x, y):
        with torch.inference_mode(), cpu_threads(clip.text_model):
            _, pooled = clip.encode(text)
        if pooled.shape[-1] != gligen_textbox_model.model.key_dim:
            raise NodeInputError("gligen_textbox_model", f"GLIGEN '{gligen_textbox_model.name}' takes "
                                 f"{gligen_textbox_model.model.key_dim}-wide phrase embeddings but this CLIP gives "
                                 f"{pooled.shape[-1]}: it was made for another model")
        box = (pooled, height // 8, width // 8, y // 8, x // 8)
        out = []
        for cond, options in conditioning_to:
            options = dict(options)
            previous = list(options["gligen"][2]) if "gligen" in options else []
            if len(previous) >= MAX_OBJECTS:
                raise NodeInputError("conditioning_to", f"the conditioning already has {len(previous)} GLIGEN boxes; "
                                                        f"GLIGEN takes at most {MAX_OBJECTS}")
            options["gligen"] = ("position", gligen_textbox_model, previous + [box])
            out.append([cond, options])
        return (out,)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (GLIGENLoader, GLIGENTextBoxApply)}
