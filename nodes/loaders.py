"""Loader nodes: checkpoints, standalone VAEs and LoRAs from the models folders.

Each model file is loaded once per process and shared (nodes.sd.model_cache); a file's size and
modification time are the nodes' fingerprint, so replacing a file re-runs its loader."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

from nodegraph import Combo, Float, Input, Node, NodeInputError, Output, folders
from nodegraph.folders import UnsafePathError

from .sd import device as device_policy
from .sd.checkpoint import load_checkpoint, load_vae_file
from .sd.clip.clip import load_clip_from_state_dict
from .sd.errors import ModelLoadError
from .sd.lora import LoraMatchError
from .sd.lora import apply_lora
from .sd.model_cache import MODEL_CACHE, file_identity
from .sd.patcher import ModelPatcher
from .sd.state_dict import load_state_dict
from .sd.vae_runtime import VAE
from .sd.weight_casting import enable_casting

log = logging.getLogger(__name__)


@contextlib.contextmanager
def loading(input_name: str) -> Iterator[None]:
    """Blame the input whose file could not be used (the message already names the file)."""
    try:
        yield
    except (ModelLoadError, LoraMatchError, FileNotFoundError, UnsafePathError) as exc:
        raise NodeInputError(input_name, str(exc)) from exc


def model_choices(kind: str):
    return lambda: folders.current().list_models(kind)


def file_fingerprint(kind: str, name: str):
    try:
        return file_identity(folders.current().model_path(kind, name))[1:]
    except (OSError, ValueError):
        return float("nan")


def embeddings_dir() -> Path:
    dirs = folders.current().model_dirs("embeddings")
    return next((d for d in dirs if d.is_dir()), dirs[0])


def load_checkpoint_models(path: Path) -> tuple[ModelPatcher, object, VAE]:
    """MODEL, CLIP and VAE of a checkpoint file; the same objects for every caller of one file."""
    device = device_policy.compute_device()

    def build():
        ckpt = load_checkpoint(path, device=device)
        compute = device_policy.text_encoder_dtype(device)
        kept = device_policy.storage_dtype(ckpt.clip_weight_dtype, compute)  # lean: the file's fp16
        clip = load_clip_from_state_dict(ckpt.clip_state_dict, embeddings_dir=embeddings_dir(),
                                         device=device, dtype=kept)
        if kept != compute:
            enable_casting(clip.text_model, compute)
        return _Bundle(ModelPatcher(ckpt.unet, device, "cpu"), clip, VAE(ckpt.vae))

    bundle = MODEL_CACHE.get_or_load(("checkpoint-models", *file_identity(path), str(device), str(embeddings_dir())),
                                     build)
    # Clones: downstream nodes may add patches without touching the shared originals.
    return bundle.model.clone(), bundle.clip.clone(), bundle.vae


class _Bundle:
    """Holds one checkpoint's models (a weak-referenceable container for the model cache)."""

    def __init__(self, model, clip, vae):
        self.model, self.clip, self.vae = model, clip, vae


class CheckpointLoaderSimple(Node):
    """Loads an SD1.x checkpoint: the diffusion model, the text encoder and the VAE."""
    display_name = "Load Checkpoint"
    category = "loaders"
    inputs = (Combo("ckpt_name", model_choices("checkpoints"), tooltip="The checkpoint (model) to load."),)
    outputs = (Output("MODEL", tooltip="The model used for denoising latents."),
               Output("CLIP", tooltip="The CLIP model used for encoding text prompts."),
               Output("VAE", tooltip="The VAE model used for encoding and decoding images to and from latent space."))

    @classmethod
    def fingerprint(cls, ckpt_name):
        return file_fingerprint("checkpoints", ckpt_name)

    def run(self, ckpt_name):
        with loading("ckpt_name"):
            return load_checkpoint_models(folders.current().model_path("checkpoints", ckpt_name))


class VAELoader(Node):
    """Loads a standalone VAE file (original or diffusers layout)."""
    display_name = "Load VAE"
    category = "loaders"
    inputs = (Combo("vae_name", model_choices("vae")),)
    outputs = (Output("VAE"),)

    @classmethod
    def fingerprint(cls, vae_name):
        return file_fingerprint("vae", vae_name)

    def run(self, vae_name):
        with loading("vae_name"):
            path = folders.current().model_path("vae", vae_name)
            device = device_policy.compute_device()
            return (MODEL_CACHE.get_or_load(("vae-socket", *file_identity(path), str(device)),
                                            lambda: VAE(load_vae_file(path, device=device))),)


def read_lora(name: str) -> dict:
    path = folders.current().model_path("loras", name)
    return MODEL_CACHE.get_or_load(("lora", *file_identity(path)), lambda: _Weights(load_state_dict(path))).tensors


class _Weights:
    def __init__(self, tensors):
        self.tensors = tensors


class LoraLoader(Node):
    """Applies a LoRA to the diffusion model and the text encoder, as patches on clones: the
    checkpoint is never reloaded, and strengths of 0 leave the inputs untouched."""
    display_name = "Load LoRA"
    category = "loaders"
    inputs = (Input("model", "MODEL", tooltip="The diffusion model the LoRA will be applied to."),
              Input("clip", "CLIP", tooltip="The CLIP model the LoRA will be applied to."),
              Combo("lora_name", model_choices("loras"), tooltip="The name of the LoRA."),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01,
                    tooltip="How strongly to modify the diffusion model. This value can be negative."),
              Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01,
                    tooltip="How strongly to modify the CLIP model. This value can be negative."))
    outputs = (Output("MODEL", tooltip="The modified diffusion model."), Output("CLIP", tooltip="The modified CLIP model."))

    @classmethod
    def fingerprint(cls, lora_name, **_):
        return file_fingerprint("loras", lora_name)

    def run(self, model, clip, lora_name, strength_model, strength_clip):
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        with loading("lora_name"):
            new_model, new_clip, _ = apply_lora(model, clip, read_lora(lora_name), strength_model, strength_clip,
                                                name=lora_name)
        return (new_model, new_clip)


class LoraLoaderModelOnly(Node):
    """Applies a LoRA to the diffusion model only."""
    category = "loaders"
    inputs = (Input("model", "MODEL"), Combo("lora_name", model_choices("loras")),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01))
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, lora_name, **_):
        return file_fingerprint("loras", lora_name)

    def run(self, model, lora_name, strength_model):
        if strength_model == 0:
            return (model,)
        with loading("lora_name"):
            new_model, _, _ = apply_lora(model, None, read_lora(lora_name), strength_model, 0.0, name=lora_name)
        return (new_model,)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (CheckpointLoaderSimple, VAELoader, LoraLoader,
                                                      LoraLoaderModelOnly)}
