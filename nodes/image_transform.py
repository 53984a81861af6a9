"""Image geometry nodes: crop, rotate, flip, stitch two images, resize-and-pad, scale to a largest
side. Names, inputs and behaviour as ComfyUI's; IMAGE is [B, H, W, C] in 0..1."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodegraph import Boolean, Combo, Input, Int, Node, Output
from nodegraph.contract import MAX_RESOLUTION

from .image_ops import bchw_to_image, image_to_bchw, upscale

ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]
FLIPS = ["x-axis: vertically", "y-axis: horizontally"]
SPACING_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                   "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def resize(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    return bchw_to_image(upscale(image_to_bchw(image), width, height, method, crop))


class ImageCrop(Node):
    display_name = "Image Crop"
    category = "image/transform"
    inputs = (Input("image", "IMAGE"),
              Int("width", 512, min=1, max=MAX_RESOLUTION, step=1), Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=1), Int("y", 0, min=0, max=MAX_RESOLUTION, step=1))
    outputs = (Output("IMAGE"),)

    def run(self, image, width, height, x, y):
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)  # the corner stays inside the image
        return (image[:, y:y + height, x:x + width, :],)


class ImageRotate(Node):
    """Rotates clockwise by the chosen angle."""
    category = "image/transform"
    inputs = (Input("image", "IMAGE"), Combo("rotation", ROTATIONS))
    outputs = (Output("IMAGE"),)

    def run(self, image, rotation):
        return (torch.rot90(image, k=ROTATIONS.index(rotation), dims=[2, 1]),)


class ImageFlip(Node):
    category = "image/transform"
    inputs = (Input("image", "IMAGE"), Combo("flip_method", FLIPS))
    outputs = (Output("IMAGE"),)

    def run(self, image, flip_method):
        return (torch.flip(image, dims=[1 if flip_method.startswith("x") else 2]),)


def _pad_across(image: torch.Tensor, size: int, axis: int, value: float) -> torch.Tensor:
    """Pad `image` evenly (extra on the far side) along axis 1 (height) or 2 (width) to `size`."""
    missing = size - image.shape[axis]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, before, after) if axis == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


class ImageStitch(Node):
    """Stitches image2 to image1 in the given direction, with optional spacing between them.
    Without image2, image1 is returned unchanged."""
    display_name = "Image Stitch"
    category = "image/transform"
    inputs = (Input("image1", "IMAGE"), Combo("direction", ["right", "down", "left", "up"], default="right"),
              Boolean("match_image_size", True), Int("spacing_width", 0, min=0, max=1024, step=2),
              Combo("spacing_color", list(SPACING_COLOURS), default="white"), Input("image2", "IMAGE", optional=True))
    outputs = (Output("IMAGE"),)

    def run(self, image1, direction, match_image_size, spacing_width, spacing_color, image2=None):
        if image2 is None:
            return (image1,)
        batch = max(image1.shape[0], image2.shape[0])  # the shorter batch repeats its last image
        image1, image2 = (torch.cat([im, im[-1:].repeat(batch - im.shape[0], 1, 1, 1)]) for im in (image1, image2))
        image2 = image2.to(image1)
        sideways = direction in ("left", "right")
        if match_image_size:
            h1, w1 = image1.shape[1:3]
            aspect = image2.shape[2] / image2.shape[1]
            width, height = (int(h1 * aspect), h1) if sideways else (w1, int(w1 / aspect))
            image2 = resize(image2, width, height, "lanczos")
        else:
            # grey level of the padding: the spacing colour when it is a grey, else black
            colour = SPACING_COLOURS[spacing_color]
            value = colour[0] if len(set(colour)) == 1 else 0.0
            axis = 1 if sideways else 2
            size = max(image1.shape[axis], image2.shape[axis])
            image1, image2 = _pad_across(image1, size, axis, value), _pad_across(image2, size, axis, value)
        channels = max(image1.shape[-1], image2.shape[-1])  # a missing alpha channel is opaque
        image1, image2 = (F.pad(im, (0, channels - im.shape[-1]), value=1.0) for im in (image1, image2))
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            shape = (batch, max(image1.shape[1], image2.shape[1]), spacing_width, channels) if sideways else \
                (batch, spacing_width, max(image1.shape[2], image2.shape[2]), channels)
            spacing = torch.zeros(shape, dtype=image1.dtype)
            rgb = torch.tensor(SPACING_COLOURS[spacing_color][:channels], dtype=image1.dtype)
            spacing[..., :rgb.shape[0]] = rgb
            if channels == 4:
                spacing[..., 3] = 1.0
            parts.insert(1, spacing)
        return (torch.cat(parts, dim=2 if sideways else 1),)


class ResizeAndPadImage(Node):
    """Fits the image inside target_width x target_height keeping its aspect ratio, centred on a
    white or black background."""
    category = "image/transform"
    inputs = (Input("image", "IMAGE"),
              Int("target_width", 512, min=1, max=MAX_RESOLUTION, step=1),
              Int("target_height", 512, min=1, max=MAX_RESOLUTION, step=1),
              Combo("padding_color", ["white", "black"]),
              Combo("interpolation", ["area", "bicubic", "nearest-exact", "bilinear", "lanczos"]))
    outputs = (Output("IMAGE"),)

    def run(self, image, target_width, target_height, padding_color, interpolation):
        b, h, w, c = image.shape
        scale = min(target_width / w, target_height / h)
        new_w, new_h = max(1, int(w * scale)), max(1, int(h * scale))
        resized = resize(image, new_w, new_h, interpolation)
        out = torch.full((b, target_height, target_width, c), 0.0 if padding_color == "black" else 1.0, dtype=image.dtype)
        top, left = (target_height - new_h) // 2, (target_width - new_w) // 2
        out[:, top:top + new_h, left:left + new_w, :] = resized
        return (out,)


class ImageScaleToMaxDimension(Node):
    """Scales the image so its larger side is largest_size, keeping the aspect ratio."""
    category = "image/upscaling"
    # ComfyUI's list, 'bilinear' twice included, so saved workflows and clients see the same options
    upscale_methods = ["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"]
    inputs = (Input("image", "IMAGE"), Combo("upscale_method", upscale_methods),
              Int("largest_size", 512, min=0, max=MAX_RESOLUTION, step=1))
    outputs = (Output("IMAGE"),)

    def run(self, image, upscale_method, largest_size):
        h, w = image.shape[1], image.shape[2]
        if h > w:
            w, h = round(w / h * largest_size), largest_size
        elif w > h:
            w, h = largest_size, round(h / w * largest_size)
        else:
            w = h = largest_size
        return (resize(image, max(1, w), max(1, h), upscale_method),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (ImageCrop, ImageRotate, ImageFlip, ImageStitch, ResizeAndPadImage,
                                                      ImageScaleToMaxDimension)}
