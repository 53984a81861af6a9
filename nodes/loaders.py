"""Loader nodes: checkpoints (with or without an LDM config), diffusion models, text encoders,
standalone VAEs and LoRAs from the models folders.

Each model file is loaded once per process and shared (nodes.sd.model_cache); a file's size and
modification time are the nodes' fingerprint, so replacing a file re-runs its loader."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import torch

from nodegraph import Combo, Float, Input, Node, NodeInputError, Output, folders
from nodegraph.folders import UnsafePathError

from .sd import device as device_policy
from .sd.checkpoint import load_checkpoint, load_vae_file
from .sd.clip.clip import load_clip_from_state_dict
from .sd.components import FP8_FORMATS, load_clip, load_unet
from .sd.errors import ModelLoadError
from .sd.lora import LoraMatchError
from .sd.lora import apply_lora
from .sd.model_cache import MODEL_CACHE, file_identity
from .sd.model_configs import ModelConfigError, config_names, config_path, read_config
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


class CheckpointLoader(Node):
    """Loads an SD1.x checkpoint with an LDM config (.yaml). As in ComfyUI 0.3.64 the architecture is
    read from the weights; the config sets the text encoder's layer (CLIP skip) and the prediction type."""
    display_name = "Load Checkpoint With Config (DEPRECATED)"
    category = "advanced/loaders"
    deprecated = True
    inputs = (Combo("config_name", config_names), Combo("ckpt_name", model_choices("checkpoints")))
    outputs = (Output("MODEL"), Output("CLIP"), Output("VAE"))

    @classmethod
    def fingerprint(cls, config_name, ckpt_name):
        try:
            config = file_identity(config_path(config_name))[1:]
        except (OSError, ValueError):
            config = float("nan")
        return (config, file_fingerprint("checkpoints", ckpt_name))

    def run(self, config_name, ckpt_name):
        try:
            config = read_config(config_path(config_name))
        except (ModelConfigError, FileNotFoundError, UnsafePathError) as exc:
            raise NodeInputError("config_name", str(exc)) from exc
        with loading("ckpt_name"):
            model, clip, vae = load_checkpoint_models(folders.current().model_path("checkpoints", ckpt_name))
        unet = model.model.config if hasattr(model.model, "config") else None
        for field, value in (("in_channels", config.in_channels), ("context_dim", config.context_dim)):
            if unet is not None and value is not None and getattr(unet, field) != value:
                log.warning("%s: the config says %s=%s but the checkpoint has %s; the checkpoint's is used",
                            config_name, field, value, getattr(unet, field))
        if config.clip_layer is not None:
            clip.set_layer(max(config.clip_layer, -clip.encoder.num_layers))
        return (model, clip, vae)


class UNETLoader(Node):
    """Loads an SD1.x diffusion model (UNet) on its own: original or diffusers layout, or the UNet of a
    checkpoint. The fp8 choices round the weights through that format (held in the compute dtype)."""
    display_name = "Load Diffusion Model"
    category = "advanced/loaders"
    inputs = (Combo("unet_name", model_choices("diffusion_models")),
              Combo("weight_dtype", ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]))
    outputs = (Output("MODEL"),)

    @classmethod
    def fingerprint(cls, unet_name, **_):
        return file_fingerprint("diffusion_models", unet_name)

    def run(self, unet_name, weight_dtype):
        with loading("unet_name"):
            path = folders.current().model_path("diffusion_models", unet_name)
            device = device_policy.compute_device()

            def build():
                unet, _ = load_unet(load_state_dict(path), path=path, device=device,
                                    dtype=device_policy.unet_dtype(device), weight_format=FP8_FORMATS.get(weight_dtype))
                return ModelPatcher(unet, device, "cpu")

            model = MODEL_CACHE.get_or_load(("unet-file", *file_identity(path), str(device), weight_dtype), build)
        return (model.clone(),)


CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"]


class CLIPLoader(Node):
    """Loads a text encoder on its own. SD1.x models use CLIP-L (`stable_diffusion`); the other types
    are ComfyUI's recipes for other model families and are refused with a clear message."""
    display_name = "Load CLIP"
    category = "advanced/loaders"
    inputs = (Combo("clip_name", model_choices("text_encoders")), Combo("type", CLIP_TYPES),
              Combo("device", ["default", "cpu"], optional=True, advanced=True))
    outputs = (Output("CLIP"),)

    @classmethod
    def fingerprint(cls, clip_name, **_):
        return file_fingerprint("text_encoders", clip_name)

    def run(self, clip_name, type="stable_diffusion", device="default"):
        if type != "stable_diffusion":
            raise NodeInputError("type", f"'{type}' text encoders are for other model families; nodegraph runs "
                                         "SD1.x, whose text encoder is CLIP-L: use stable_diffusion")
        with loading("clip_name"):
            path = folders.current().model_path("text_encoders", clip_name)
            where = device_policy.compute_device() if device == "default" else torch.device("cpu")

            def build():
                return load_clip(load_state_dict(path), path=path, device=where,
                                 dtype=device_policy.text_encoder_dtype(where), embeddings_dir=embeddings_dir())

            clip = MODEL_CACHE.get_or_load(("clip-file", *file_identity(path), str(where), str(embeddings_dir())),
                                           build)
        return (clip.clone(),)


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


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (CheckpointLoaderSimple, CheckpointLoader, UNETLoader,
                                                      CLIPLoader, VAELoader, LoraLoader, LoraLoaderModelOnly)}
