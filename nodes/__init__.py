"""The node library. `register_nodes(registry)` adds every built-in node.

Submodules are imported here, lazily, so `import nodes.sd...` in a test does not pay for all of
them, and a machine without torch still gets a registry (without the SD nodes) and a clear log.
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# Modules that define NODE_CLASS_MAPPINGS (and optionally NODE_DISPLAY_NAME_MAPPINGS).
NODE_MODULES = [
    "nodes.primitives",
    "nodes.loaders",
    "nodes.conditioning",
    "nodes.conditioning_image",
    "nodes.clip_vision",
    "nodes.gligen",
    "nodes.hypernetwork",
    "nodes.sampling",
    "nodes.custom_sampling",
    "nodes.custom_sampling_sigmas",
    "nodes.custom_sampling_samplers",
    "nodes.model_patches",
    "nodes.model_patches_guidance",
    "nodes.model_patches_unet",
    "nodes.latent",
    "nodes.latent_batch",
    "nodes.latent_transform",
    "nodes.latent_math",
    "nodes.latent_files",
    "nodes.image",
    "nodes.image_batch",
    "nodes.image_transform",
    "nodes.image_filters",
    "nodes.image_compositing",
    "nodes.image_animation",
    "nodes.mask",
    "nodes.strings",
    "nodes.preprocessors",
    "nodes.controlnet",
    "nodes.vae_tiled",
    "nodes.upscale",
    "nodes.merging",
    "nodes.saving",
]


def register_nodes(registry) -> None:
    for name in NODE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet
                continue
            if exc.name and exc.name.split(".")[0] in ("torch", "cv2", "transformers", "safetensors"):
                log.warning("%s unavailable: %s is not installed", name, exc.name)
                continue
            raise
        registry.register_all(module.NODE_CLASS_MAPPINGS, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None),
                              python_module="nodes")


def prepare_default_models(folders) -> None:
    """Offer the embedded demo models to the loaders (nothing is copied) and make input/example.png
    where it is missing (see nodes.default_model)."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        return  # no torch, no SD nodes: nothing would use the model
    from .default_model import ensure_example_image, offer_demo_models
    offer_demo_models(folders)
    ensure_example_image(folders)
