"""What a weight file looks like, from its keys and shapes: the words a loader uses when it is given a
file of the wrong kind ("... looks like a LoRA, not a GLIGEN model; put it in models/loras")."""
from __future__ import annotations

from typing import Mapping

import torch

# (what it is, the folder it belongs in, a test on the key set); the first match wins, so the more
# specific kinds come first (a diff ControlNet before a ControlNet, an SDXL checkpoint before SD1).
_KINDS: list[tuple[str, str, object]] = [
    ("a LoRA", "loras", lambda k, s: any(x in key for key in k for x in
                                          (".lora_up.", ".lora_down.", ".lora_A.", ".lora_B.", ".hada_w1_a", ".lokr_w1"))),
    ("an SDXL checkpoint", "checkpoints", lambda k, s: any(key.startswith("conditioner.embedders.") for key in k)),
    ("an SD2.x checkpoint", "checkpoints", lambda k, s: any(key.startswith("cond_stage_model.model.transformer.") for key in k)),
    ("an SD1.x checkpoint", "checkpoints", lambda k, s: "model.diffusion_model.input_blocks.0.0.weight" in k),
    ("a diff ControlNet", "controlnet", lambda k, s: "difference" in k),
    ("a ControlNet", "controlnet", lambda k, s: any(key.endswith("zero_convs.0.0.weight") for key in k)
     or "controlnet_cond_embedding.conv_in.weight" in k),
    ("a T2I-Adapter style model", "style_models", lambda k, s: "style_embedding" in k),
    ("a light T2I-Adapter", "controlnet", lambda k, s: "body.0.in_conv.weight" in k),
    ("a T2I-Adapter", "controlnet", lambda k, s: ("conv_in.weight" in k and "body.0.block1.weight" in k)
     or "adapter.body.0.resnets.0.block1.weight" in k),
    ("a GLIGEN model", "gligen", lambda k, s: "position_net.null_positive_feature" in k),
    ("a CLIP vision model", "clip_vision", lambda k, s: any(key.startswith(("vision_model.encoder.", "visual.transformer."))
                                                             for key in k)),
    ("a CLIP text encoder", "text_encoders", lambda k, s: any(key.startswith(("text_model.encoder.", "cond_stage_model.transformer."))
                                                               for key in k)),
    ("a VAE", "vae", lambda k, s: "decoder.conv_out.weight" in k or "first_stage_model.decoder.conv_out.weight" in k),
    ("a UNet (diffusion model only)", "diffusion_models", lambda k, s: "input_blocks.0.0.weight" in k
     or "diffusion_model.input_blocks.0.0.weight" in k),
    ("an upscale model", "upscale_models", lambda k, s: "conv_first.weight" in k or "model.0.weight" in k),
    ("a textual-inversion embedding", "embeddings", lambda k, s: bool({"string_to_param.*", "emb_params", "clip_l"} & k)
     or (len(k) == 1 and next(iter(s.values())).ndim == 2)),
]


def identify(sd: Mapping[str, torch.Tensor]) -> tuple[str, str] | None:
    """(what the weights look like, the models folder such files belong in), or None if unrecognised."""
    keys = set(sd)
    for words, folder, test in _KINDS:
        if test(keys, sd):
            return words, folder
    return None


def describe(sd: Mapping[str, torch.Tensor]) -> str:
    """A short phrase for an error message: "looks like a LoRA (it belongs in models/loras)"."""
    found = identify(sd)
    if found is not None:
        words, folder = found
        return f"looks like {words} (such files belong in models/{folder})"
    first = ", ".join(sorted(sd)[:4])
    return f"holds {len(sd)} tensors of no kind this program knows (first keys: {first})"
