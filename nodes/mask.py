"""Mask nodes (MASK: float [B, H, W] in 0..1, or [H, W]): load from image files, convert from and to
images, solid masks, invert, crop, combine, feather, grow / shrink, threshold, preview.

Names, inputs and results as ComfyUI's; image files are read by nodes.image. Where two masks meet
(MaskComposite) they keep their own sizes, as ComfyUI: the overlap is combined; batches of different
sizes are refused with both shapes."""
from __future__ import annotations

import random
import string

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from nodegraph import folders
from nodegraph.contract import MAX_RESOLUTION, Boolean, Combo, Float, Hidden, Input, Int, Node, NodeOutput, Output
from nodegraph.errors import NodeInputError
from nodegraph.folders import UnsafePathError

from .image import _input_images, annotated_file_hash, annotated_file_problem, annotated_image_path, save_images

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
        return annotated_file_hash(image)

    @classmethod
    def validate(cls, image, channel="alpha"):
        return annotated_file_problem(image) or True

    def run(self, image, channel):
        try:
            return (mask_from_file(annotated_image_path(image), channel),)
        except UnsafePathError as exc:
            raise NodeInputError("image", str(exc)) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise NodeInputError("image", f"cannot decode {image!r} as an image ({exc})") from exc


def as_batch(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as [B, H, W]."""
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


class ImageToMask(Node):
    display_name = "Convert Image to Mask"
    category = "mask"
    inputs = (Input("image", "IMAGE"), Combo("channel", ["red", "green", "blue", "alpha"]))
    outputs = (Output("MASK"),)

    def run(self, image, channel):
        index = ["red", "green", "blue", "alpha"].index(channel)
        if index >= image.shape[-1]:
            raise NodeInputError("channel", f"the image has no {channel} channel (shape {tuple(image.shape)})")
        return (image[..., index],)


class MaskToImage(Node):
    display_name = "Convert Mask to Image"
    category = "mask"
    inputs = (Input("mask", "MASK"),)
    outputs = (Output("IMAGE"),)

    def run(self, mask):
        return (as_batch(mask)[..., None].expand(-1, -1, -1, 3),)


class ImageColorToMask(Node):
    """1 where the pixel has exactly this colour (0xRRGGBB, after rounding to 8 bits), else 0."""
    category = "mask"
    inputs = (Input("image", "IMAGE"), Int("color", 0, min=0, max=0xFFFFFF, step=1, display="color"))
    outputs = (Output("MASK"),)

    def run(self, image, color):
        levels = (torch.clamp(image[..., :3], 0, 1.0) * 255.0).round().to(torch.int64)
        packed = (levels[..., 0] << 16) + (levels[..., 1] << 8) + levels[..., 2]
        return ((packed == color).float(),)


class SolidMask(Node):
    category = "mask"
    inputs = (Float("value", 1.0, min=0.0, max=1.0, step=0.01),
              Int("width", 512, min=1, max=MAX_RESOLUTION, step=1), Int("height", 512, min=1, max=MAX_RESOLUTION, step=1))
    outputs = (Output("MASK"),)

    def run(self, value, width, height):
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask(Node):
    category = "mask"
    inputs = (Input("mask", "MASK"),)
    outputs = (Output("MASK"),)

    def run(self, mask):
        return (1.0 - mask,)


class CropMask(Node):
    category = "mask"
    inputs = (Input("mask", "MASK"), Int("x", 0, min=0, max=MAX_RESOLUTION, step=1), Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
              Int("width", 512, min=1, max=MAX_RESOLUTION, step=1), Int("height", 512, min=1, max=MAX_RESOLUTION, step=1))
    outputs = (Output("MASK"),)

    def run(self, mask, x, y, width, height):
        return (as_batch(mask)[:, y:y + height, x:x + width],)


COMBINE = {
    "multiply": lambda a, b: a * b,
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "and": lambda a, b: (a.round().bool() & b.round().bool()).float(),
    "or": lambda a, b: (a.round().bool() | b.round().bool()).float(),
    "xor": lambda a, b: (a.round().bool() ^ b.round().bool()).float(),
}


class MaskComposite(Node):
    """Combines source into destination at (x, y), over their overlap; the result is clamped to 0..1."""
    category = "mask"
    inputs = (Input("destination", "MASK"), Input("source", "MASK"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=1), Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
              Combo("operation", list(COMBINE)))
    outputs = (Output("MASK"),)

    def run(self, destination, source, x, y, operation):
        out = as_batch(destination).clone().float()
        source = as_batch(source).to(out)
        if source.shape[0] not in (1, out.shape[0]) and out.shape[0] != 1:
            raise NodeInputError("source", f"a batch of {source.shape[0]} masks cannot be combined with a batch of "
                                           f"{out.shape[0]} (shapes {tuple(source.shape)} and {tuple(out.shape)})")
        if out.shape[0] == 1 and source.shape[0] > 1:
            out = out.expand(source.shape[0], -1, -1).clone()
        right, bottom = min(x + source.shape[-1], out.shape[-1]), min(y + source.shape[-2], out.shape[-2])
        if right > x and bottom > y:
            region = out[:, y:bottom, x:right]
            out[:, y:bottom, x:right] = COMBINE[operation](region, source[:, :bottom - y, :right - x])
        return (torch.clamp(out, 0.0, 1.0),)


class FeatherMask(Node):
    """Fades the mask towards each edge over that many pixels, as ComfyUI computes it: the nth pixel
    from an edge is scaled by n / width of the fade. (ComfyUI's right and bottom fades start one
    pixel in and also scale the first column / row; kept, so masks match.)"""
    category = "mask"
    inputs = (Input("mask", "MASK"),
              Int("left", 0, min=0, max=MAX_RESOLUTION, step=1), Int("top", 0, min=0, max=MAX_RESOLUTION, step=1),
              Int("right", 0, min=0, max=MAX_RESOLUTION, step=1), Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=1))
    outputs = (Output("MASK"),)

    def run(self, mask, left, top, right, bottom):
        out = as_batch(mask).clone().float()
        h, w = out.shape[-2:]
        left, right, top, bottom = min(left, w), min(right, w), min(top, h), min(bottom, h)
        for i in range(left):
            out[:, :, i] *= (i + 1) / left
        for i in range(right):
            out[:, :, -i] *= (i + 1) / right  # -0 is column 0: ComfyUI's indexing
        for i in range(top):
            out[:, i, :] *= (i + 1) / top
        for i in range(bottom):
            out[:, -i, :] *= (i + 1) / bottom
        return (out,)


class GrowMask(Node):
    """Grows (expand > 0) or shrinks (< 0) the mask by that many pixels: repeated 3x3 grey dilation /
    erosion, over a cross (tapered corners) or a square."""
    category = "mask"
    inputs = (Input("mask", "MASK"), Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
              Boolean("tapered_corners", True))
    outputs = (Output("MASK"),)

    def run(self, mask, expand, tapered_corners):
        out = as_batch(mask).float()[:, None]
        if expand == 0:
            return (out[:, 0],)
        # max over the footprint = max_pool; the border repeats the edge (scipy's reflect mode, as ComfyUI)
        sign = 1.0 if expand > 0 else -1.0
        out = out * sign
        for _ in range(abs(expand)):
            padded = F.pad(out, (1, 1, 1, 1), mode="replicate")
            if tapered_corners:
                cross = torch.stack([padded[..., 1:-1, 1:-1], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1],
                                     padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]])
                out = cross.max(dim=0).values
            else:
                out = F.max_pool2d(padded, 3, stride=1)
        return ((out * sign)[:, 0],)


class ThresholdMask(Node):
    category = "mask"
    inputs = (Input("mask", "MASK"), Float("value", 0.5, min=0.0, max=1.0, step=0.01))
    outputs = (Output("MASK"),)

    def run(self, mask, value):
        return ((mask > value).float(),)


class MaskPreview(Node):
    """Shows a mask (white = 1) without keeping it (written to the temp folder)."""
    category = "mask"
    output_node = True
    inputs = (Input("mask", "MASK"), Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))

    def run(self, mask, prompt=None, extra_pnginfo=None):
        images = as_batch(mask)[..., None].expand(-1, -1, -1, 3)
        suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        saved = save_images(images, f"ComfyUI_temp_{suffix}", folders.current().temp, "temp", 4, prompt, extra_pnginfo)
        return NodeOutput(ui={"images": saved})


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (LoadImageMask, ImageToMask, MaskToImage, ImageColorToMask,
                                                      SolidMask, InvertMask, CropMask, MaskComposite, FeatherMask,
                                                      GrowMask, ThresholdMask, MaskPreview)}
