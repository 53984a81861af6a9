"""Saving models (ComfyUI's advanced/model_merging savers and LoraSave): a merged or patched model
written as one `.safetensors` file in the original layout, into the output folder with ComfyUI's
naming (`<prefix>_00001_.safetensors`) and the prompt and workflow in the file's metadata."""
from __future__ import annotations

from pathlib import Path

from nodegraph import Boolean, Combo, Hidden, Input, Int, Node, NodeInputError, NodeOutput, String, folders

from .image import save_path
from .sd.lora_extract import LORA_TYPES, clip_lora_names, extract_lora, unet_lora_names
from .sd.lora import _clip_patcher
from .sd.save_model import checkpoint_tensors, clip_tensors, run_metadata, vae_tensors, write_safetensors

# SD1 models predict the noise; ComfyUI records that in every checkpoint it saves.
_PREDICTION = {"modelspec.predict_key": "epsilon"}
_HIDDEN = (Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))


def output_file(prefix: str) -> tuple[Path, dict[str, str]]:
    """The next free `<prefix>_<counter:05>_.safetensors` in the output folder, and its UI entry."""
    root = folders.current().output
    folder, subfolder, stem, counter = save_path(prefix, root, 0, 0)
    name = f"{stem}_{counter:05}_.safetensors"
    return folder / name, {"filename": name, "subfolder": subfolder, "type": "output"}


def saved(path: Path, tensors: dict, metadata: dict | None, entry: dict) -> NodeOutput:
    write_safetensors(path, tensors, metadata)
    return NodeOutput(ui={"models": [entry]})


class CheckpointSave(Node):
    """Saves MODEL, CLIP and VAE as one SD1 checkpoint (`.safetensors`, original layout) that ComfyUI,
    A1111 and the checkpoint loaders here load; LoRAs and merges are baked in."""
    display_name = "Save Checkpoint"
    category = "advanced/model_merging"
    output_node = True
    inputs = (Input("model", "MODEL"), Input("clip", "CLIP"), Input("vae", "VAE"),
              String("filename_prefix", "checkpoints/ComfyUI"), *_HIDDEN)

    def run(self, model, clip, vae, filename_prefix, prompt=None, extra_pnginfo=None):
        path, entry = output_file(filename_prefix)
        return saved(path, checkpoint_tensors(model, clip, vae), run_metadata(prompt, extra_pnginfo, **_PREDICTION),
                     entry)


class ModelSave(Node):
    """Saves the diffusion model alone (keys `model.diffusion_model.…`), for Load Diffusion Model."""
    category = "advanced/model_merging"
    output_node = True
    inputs = (Input("model", "MODEL"), String("filename_prefix", "diffusion_models/ComfyUI"), *_HIDDEN)

    def run(self, model, filename_prefix, prompt=None, extra_pnginfo=None):
        path, entry = output_file(filename_prefix)
        return saved(path, checkpoint_tensors(model, None, None), run_metadata(prompt, extra_pnginfo, **_PREDICTION),
                     entry)


class CLIPSave(Node):
    """Saves the text encoder alone (transformers names, `text_model.…`), for Load CLIP; as ComfyUI,
    the file name gets `_clip_l` after the prefix."""
    category = "advanced/model_merging"
    output_node = True
    inputs = (Input("clip", "CLIP"), String("filename_prefix", "clip/ComfyUI"), *_HIDDEN)

    def run(self, clip, filename_prefix, prompt=None, extra_pnginfo=None):
        path, entry = output_file(f"{filename_prefix}_clip_l")
        return saved(path, clip_tensors(clip), run_metadata(prompt, extra_pnginfo, format="pt"), entry)


class VAESave(Node):
    """Saves the VAE alone (LDM names: `encoder.…`, `decoder.…`), for Load VAE."""
    category = "advanced/model_merging"
    output_node = True
    inputs = (Input("vae", "VAE"), String("filename_prefix", "vae/ComfyUI_vae"), *_HIDDEN)

    def run(self, vae, filename_prefix, prompt=None, extra_pnginfo=None):
        path, entry = output_file(filename_prefix)
        return saved(path, vae_tensors(vae), run_metadata(prompt, extra_pnginfo), entry)


class LoraSave(Node):
    """Extracts a LoRA (kohya format) from a model difference — ModelMergeSubtract / CLIPMergeSubtract
    output — by truncated SVD, and saves it to the output folder."""
    display_name = "Extract and Save Lora"
    category = "_for_testing"
    output_node = True
    experimental = True
    inputs = (String("filename_prefix", "loras/ComfyUI_extracted_lora"),
              Int("rank", 8, min=1, max=4096, step=1),
              Combo("lora_type", list(LORA_TYPES)),
              Boolean("bias_diff", True),
              Input("model_diff", "MODEL", optional=True, tooltip="The ModelSubtract output to be converted to a lora."),
              Input("text_encoder_diff", "CLIP", optional=True,
                    tooltip="The CLIPSubtract output to be converted to a lora."))

    def run(self, filename_prefix, rank, lora_type, bias_diff, model_diff=None, text_encoder_diff=None):
        if model_diff is None and text_encoder_diff is None:
            return NodeOutput(ui={})  # as ComfyUI: nothing connected, nothing saved
        if not hasattr(getattr(model_diff, "model", None), "config") and model_diff is not None:
            raise NodeInputError("model_diff", "this MODEL is not an SD1 UNet; LoRAs are extracted from SD1 models")
        tensors = {}
        if model_diff is not None:
            tensors.update(extract_lora(model_diff, unet_lora_names(model_diff), rank=rank, lora_type=lora_type,
                                        bias_diff=bias_diff))
        if text_encoder_diff is not None:
            patcher = _clip_patcher(text_encoder_diff)
            tensors.update(extract_lora(patcher, clip_lora_names(patcher), rank=rank, lora_type=lora_type,
                                        bias_diff=bias_diff))
        path, entry = output_file(filename_prefix)
        metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(rank),
                    "nodegraph.lora_type": lora_type}
        return saved(path, tensors, metadata, entry)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (CheckpointSave, ModelSave, CLIPSave, VAESave, LoraSave)}
