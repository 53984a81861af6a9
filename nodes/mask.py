"""Mask nodes (MASK: float [B, H, W] in 0..1, or [H, W]): loading masks from image files.

The family grows here (ImageToMask, MaskComposite, GrowMask, ...); image files are read by nodes.image."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nodegraph.contract import Combo, Node, Output
from nodegraph.errors import NodeInputError
from nodegraph.folders import UnsafePathError

from .image import _input_images, annotated_image_path

CHANNELS = ("alpha", "red", "green", "blue")


def mask_from_file(path, channel: str) -> torch.Tensor:
    """One channel of an image file as a MASK [1, H, W]: the colour channels as they are (value / 255),
    alpha inverted (transparent = 1, the region to repaint), as ComfyUI reads it. A file without the
    channel gives ComfyUI's empty 64x64 mask."""
    band = channel[0].upper()
    with Image.open(path) as pil:
        frame = ImageOps.exif_transpose(pil)
        if frame.mode == "I":  # 16-bit greyscale
            frame = frame.point(lambda v: v * (1 / 255))
        if frame.mode == "P" and "transparency" in frame.info or frame.mode not in ("RGB", "RGBA", "L", "LA"):
            frame = frame.convert("RGBA")
        if band not in frame.getbands():
            if band in "RGB" and "L" in frame.getbands():
                frame = frame.convert("RGBA" if "A" in frame.getbands() else "RGB")
            else:
                return torch.zeros((1, 64, 64), dtype=torch.float32)
        values = torch.from_numpy(np.asarray(frame.getchannel(band), dtype=np.float32) / 255.0)
    if band == "A":
        values = 1.0 - values
    return values.unsqueeze(0)


class LoadImageMask(Node):
    """Loads one channel of an image from the input folder as a mask."""
    display_name = "Load Image (as Mask)"
    category = "mask"
    inputs = (Combo("image", _input_images, image_upload=True), Combo("channel", CHANNELS))
    outputs = (Output("MASK"),)

    @classmethod
    def fingerprint(cls, image, channel):
        try:
            return hashlib.sha256(annotated_image_path(image).read_bytes()).hexdigest()
        except (OSError, UnsafePathError):
            return float("nan")

    @classmethod
    def validate(cls, image, channel="alpha"):
        try:
            path = annotated_image_path(image)
        except UnsafePathError as exc:
            return f"Invalid image file: {image} ({exc})"
        return True if path.is_file() else f"Invalid image file: {image}"

    def run(self, image, channel):
        try:
            return (mask_from_file(annotated_image_path(image), channel),)
        except UnsafePathError as exc:
            raise NodeInputError("image", str(exc)) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise NodeInputError("image", f"cannot decode {image!r} as an image ({exc})") from exc


NODE_CLASS_MAPPINGS = {"LoadImageMask": LoadImageMask}
