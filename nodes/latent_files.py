"""SaveLatent / LoadLatent: latents as files in ComfyUI's `.latent` format, both ways.

A `.latent` file is a safetensors file with `latent_tensor` (the unscaled LATENT samples, [B, 4, h, w])
and an empty `latent_format_version_0` tensor; its metadata holds the prompt and the workflow as JSON
text. Files without the version tensor are the older format, which stored latents scaled by 0.18215."""
from __future__ import annotations

import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from nodegraph import Combo, Hidden, Input, Node, NodeInputError, NodeOutput, Output, String, folders
from nodegraph.folders import UnsafePathError, write_atomic

from .image import annotated_file_hash, annotated_file_problem, annotated_image_path, save_path

LATENT_KEY, VERSION_KEY = "latent_tensor", "latent_format_version_0"
OLD_FORMAT_SCALE = 0.18215  # files without the version tensor hold latent * 0.18215


def latent_file_bytes(samples: torch.Tensor, metadata: dict[str, str] | None = None) -> bytes:
    return save_safetensors({LATENT_KEY: samples.detach().to("cpu").contiguous(), VERSION_KEY: torch.tensor([])},
                            metadata=metadata)


def read_latent_file(data: bytes, name: str) -> torch.Tensor:
    """The unscaled samples of a `.latent` file's bytes; ValueError saying what is wrong."""
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} is not a .latent file (not safetensors: {exc})") from exc
    if LATENT_KEY not in tensors:
        raise ValueError(f"{name} has no '{LATENT_KEY}' tensor (it holds {sorted(tensors)[:5]}); "
                         f"it is a safetensors file but not a latent saved by SaveLatent")
    samples = tensors[LATENT_KEY].float()
    if samples.ndim != 4:
        raise ValueError(f"{name}: '{LATENT_KEY}' has shape {tuple(samples.shape)}, expected [B, C, H, W]")
    return samples if VERSION_KEY in tensors else samples * (1.0 / OLD_FORMAT_SCALE)


class SaveLatent(Node):
    """Saves latents to the output folder as a .latent file (ComfyUI's format), with the prompt and workflow."""
    display_name = "SaveLatent"
    category = "_for_testing"
    output_node = True
    inputs = (Input("samples", "LATENT"), String("filename_prefix", "latents/ComfyUI"),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))

    def run(self, samples, filename_prefix="latents/ComfyUI", prompt=None, extra_pnginfo=None):
        root = folders.current().output
        folder, subfolder, stem, counter = save_path(filename_prefix, root, 0, 0)
        metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
        for key, value in (extra_pnginfo or {}).items():
            metadata[key] = json.dumps(value)
        name = f"{stem}_{counter:05}_.latent"
        write_atomic(folder / name, latent_file_bytes(samples["samples"], metadata))
        return NodeOutput(ui={"latents": [{"filename": name, "subfolder": subfolder, "type": "output"}]})


def _input_latents() -> list[str]:
    root = folders.current().input
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_file() and p.name.endswith(".latent"))


class LoadLatent(Node):
    """Loads a .latent file from the input folder (either ComfyUI format version)."""
    display_name = "LoadLatent"
    category = "_for_testing"
    inputs = (Combo("latent", _input_latents),)
    outputs = (Output("LATENT"),)

    @classmethod
    def fingerprint(cls, latent):
        return annotated_file_hash(latent)

    @classmethod
    def validate(cls, latent):
        return annotated_file_problem(latent, "latent") or True

    def run(self, latent):
        try:
            data = annotated_image_path(latent).read_bytes()
            return ({"samples": read_latent_file(data, latent)},)
        except UnsafePathError as exc:
            raise NodeInputError("latent", str(exc)) from exc
        except (OSError, ValueError) as exc:
            raise NodeInputError("latent", str(exc)) from exc


NODE_CLASS_MAPPINGS = {"SaveLatent": SaveLatent, "LoadLatent": LoadLatent}
