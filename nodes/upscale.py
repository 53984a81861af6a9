"""Upscale-model nodes: UpscaleModelLoader (any single-image model spandrel detects in
models/upscale_models) and ImageUpscaleWithModel (tiled, bounded memory, progress per tile)."""
from __future__ import annotations

from nodegraph import Combo, Input, Node, NodeInputError, Output, folders

from .loaders import file_fingerprint, loading, model_choices
from .sd.model_cache import MODEL_CACHE, file_identity
from .sd.upscale_model import ImageTooLargeError, load_upscale_model, upscale_image


class UpscaleModelLoader(Node):
    """Loads an upscale model (ESRGAN, RealESRGAN, SwinIR, HAT, ...; the architecture is read from the file)."""
    display_name = "Load Upscale Model"
    category = "loaders"
    inputs = (Combo("model_name", model_choices("upscale_models")),)
    outputs = (Output("UPSCALE_MODEL"),)

    @classmethod
    def fingerprint(cls, model_name):
        return file_fingerprint("upscale_models", model_name)

    def run(self, model_name):
        with loading("model_name"):
            path = folders.current().model_path("upscale_models", model_name)
            return (MODEL_CACHE.get_or_load(("upscale-model", *file_identity(path)),
                                            lambda: load_upscale_model(path)),)


class ImageUpscaleWithModel(Node):
    """Upscales images with an upscale model, in 512-pixel tiles that overlap by 32 and are blended."""
    display_name = "Upscale Image (using Model)"
    category = "image/upscaling"
    inputs = (Input("upscale_model", "UPSCALE_MODEL"), Input("image", "IMAGE"))
    outputs = (Output("IMAGE"),)

    def run(self, upscale_model, image):
        channels = upscale_model.input_channels
        if image.ndim != 4 or image.shape[-1] < channels:
            raise NodeInputError("image", f"this {upscale_model.architecture.name} model takes images with "
                                          f"{channels} channel(s), got shape {tuple(image.shape)}")
        try:
            return (upscale_image(upscale_model, image[..., :channels]),)
        except ImageTooLargeError as exc:
            raise NodeInputError("image", str(exc)) from None


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (UpscaleModelLoader, ImageUpscaleWithModel)}
