"""Image nodes: load from the input folder, save/preview as PNG with the workflow embedded,
resize and pad. Names, inputs and file naming follow ComfyUI so workflows and clients carry over."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
import string
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin, UnidentifiedImageError

from nodegraph import Combo, Float, Hidden, Input, Int, Node, NodeInputError, NodeOutput, Output, String, folders
from nodegraph.contract import MAX_RESOLUTION
from nodegraph.folders import UnsafePathError, safe_join, write_atomic

from .image_ops import IMAGE_UPSCALE_METHODS, bchw_to_image, image_to_bchw, tensor_to_pil, upscale

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
ANNOTATIONS = {" [input]": "input", " [output]": "output", " [temp]": "temp"}


def _input_images() -> list[str]:
    root = folders.current().input
    if not root.is_dir():
        return []
    return sorted((p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
                  key=str.lower)


def annotated_image_path(name: str) -> Path:
    """Resolve a LoadImage value ('a.png', 'sub/a.png', 'a.png [output]') inside its folder."""
    layout = folders.current()
    base = layout.input
    for suffix, kind in ANNOTATIONS.items():
        if name.endswith(suffix):
            name, base = name[: -len(suffix)], getattr(layout, kind)
            break
    return safe_join(base, name)


def annotated_file_hash(name: str) -> str | float:
    """sha256 of a file named as LoadImage names it, so the cache re-runs when the file changes
    (NaN, never equal, when it cannot be read: validation reports why)."""
    try:
        return hashlib.sha256(annotated_image_path(name).read_bytes()).hexdigest()
    except (OSError, UnsafePathError):
        return float("nan")


def annotated_file_problem(name: str, kind: str = "image") -> str | None:
    """ComfyUI's "Invalid image file: x" when the named file is missing or outside its folder."""
    try:
        path = annotated_image_path(name)
    except UnsafePathError as exc:
        return f"Invalid {kind} file: {name} ({exc})"
    return None if path.is_file() else f"Invalid {kind} file: {name}"


class LoadImage(Node):
    """Loads an image from the input folder; the mask is 1 − alpha (white = to repaint)."""
    display_name = "Load Image"
    category = "image"
    inputs = (Combo("image", _input_images, image_upload=True),)
    outputs = (Output("IMAGE"), Output("MASK"))

    @classmethod
    def fingerprint(cls, image):
        return annotated_file_hash(image)

    @classmethod
    def validate(cls, image):
        return annotated_file_problem(image) or True

    def run(self, image):
        try:
            path = annotated_image_path(image)
            return load_image_file(path)
        except UnsafePathError as exc:
            raise NodeInputError("image", str(exc)) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise NodeInputError("image", f"cannot decode {image!r} as an image ({exc})") from exc


def _output_images() -> list[str]:
    """Images in the output folder, as LoadImageOutput offers them (annotated ' [output]')."""
    root = folders.current().output
    if not root.is_dir():
        return []
    return sorted((p.relative_to(root).as_posix() + " [output]" for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")),
                  key=str.lower)


class LoadImageOutput(LoadImage):
    """Load an image from the output folder. When the refresh button is clicked, the node will update
    the image list and automatically select the first image, allowing for easy iteration."""
    display_name = "Load Image (from Outputs)"
    experimental = True
    inputs = (Combo("image", _output_images, image_upload=True, image_folder="output",
                    remote={"route": "/internal/files/output", "refresh_button": True,
                            "control_after_refresh": "first"}),)


def load_image_file(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All frames of an image file as IMAGE [B, H, W, 3] and MASK [B, H, W] (ComfyUI's rules)."""
    with Image.open(path) as pil:
        images, masks, size = [], [], None
        for frame in ImageSequence.Iterator(pil):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":  # 16-bit greyscale
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            if size is None:
                size = rgb.size
            elif rgb.size != size:
                continue  # frames of another size cannot share a batch
            images.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0))
            if "A" in frame.getbands():
                alpha = np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha))
            elif frame.mode == "P" and "transparency" in frame.info:
                alpha = np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
                masks.append(1.0 - torch.from_numpy(alpha))
            else:
                masks.append(torch.zeros((64, 64), dtype=torch.float32))
            if pil.format == "MPO":
                break  # MPO frames are views of one picture, not an animation
    if not images:
        raise ValueError(f"{path.name} has no frames")
    if any(m.shape != masks[0].shape for m in masks):
        masks = [m if m.shape == images[0].shape[:2] else torch.zeros(images[0].shape[:2]) for m in masks]
    return torch.stack(images), torch.stack(masks)


# -- saving ---------------------------------------------------------------------------------

def _expand_prefix(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    return re.sub(r"%(width|height|year|month|day|hour|minute|second)%", lambda m: str(values[m.group(1)]), prefix)


def save_path(prefix: str, root: Path, width: int, height: int) -> tuple[Path, str, str, int]:
    """Folder, subfolder, file stem and the next counter for `prefix` (ComfyUI's naming:
    `<stem>_<counter:05>_.png`, counter = highest existing + 1)."""
    prefix = _expand_prefix(prefix, width, height)
    try:
        target = safe_join(root, prefix)
    except UnsafePathError as exc:
        raise NodeInputError("filename_prefix", f"{exc}; it must stay inside {root}") from None
    folder, stem = target.parent, target.name
    subfolder = folder.relative_to(root.resolve()).as_posix() if folder != root.resolve() else ""
    pattern = re.compile(re.escape(stem.replace("%batch_num%", "")) + r"_(\d+)_?")
    counter = 0
    if folder.is_dir():
        for entry in os.listdir(folder):
            match = pattern.match(entry.replace("%batch_num%", ""))
            if match:
                counter = max(counter, int(match.group(1)))
    return folder, subfolder, stem, counter + 1


def write_png_atomically(image: Image.Image, path: Path, info: PngImagePlugin.PngInfo | None, level: int) -> None:
    """Encode to PNG, then write atomically: no half-written PNG is ever visible."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=level)
    write_atomic(path, buffer.getvalue())


def save_images(images: torch.Tensor, prefix: str, root: Path, kind: str, level: int,
                prompt: Any = None, extra_pnginfo: Any = None) -> list[dict[str, str]]:
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise NodeInputError("images", f"expected an IMAGE [B, H, W, C], got shape {tuple(images.shape)}")
    folder, subfolder, stem, counter = save_path(prefix, root, images.shape[2], images.shape[1])
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for batch_number, image in enumerate(images):
        info = None
        if prompt is not None or extra_pnginfo:
            info = PngImagePlugin.PngInfo()
            if prompt is not None:
                info.add_text("prompt", json.dumps(prompt))
            for key, value in (extra_pnginfo or {}).items():
                info.add_text(key, json.dumps(value))
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        write_png_atomically(tensor_to_pil(image), folder / name, info, level)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


class SaveImage(Node):
    """Saves images to the output folder as PNG, with the prompt and workflow embedded."""
    display_name = "Save Image"
    category = "image"
    output_node = True
    inputs = (Input("images", "IMAGE", tooltip="The images to save."),
              String("filename_prefix", "ComfyUI", tooltip="May contain sub-folders and %width%, %date% style fields."),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))

    def run(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        layout = folders.current()
        saved = save_images(images, filename_prefix, layout.output, "output", 4, prompt, extra_pnginfo)
        return NodeOutput(ui={"images": saved})


class PreviewImage(Node):
    """Shows images without keeping them (written to the temp folder)."""
    display_name = "Preview Image"
    category = "image"
    output_node = True
    inputs = (Input("images", "IMAGE"), Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))

    def run(self, images, prompt=None, extra_pnginfo=None):
        suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        saved = save_images(images, f"ComfyUI_temp_{suffix}", folders.current().temp, "temp", 1, prompt, extra_pnginfo)
        return NodeOutput(ui={"images": saved})


# -- resizing -------------------------------------------------------------------------------

def _keep_aspect(width: int, height: int, old_w: int, old_h: int) -> tuple[int, int]:
    if width == 0 and height == 0:
        return old_w, old_h
    if width == 0:
        width = max(1, round(old_w * height / old_h))
    elif height == 0:
        height = max(1, round(old_h * width / old_w))
    return width, height


def resize_image(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    return bchw_to_image(upscale(image_to_bchw(image), max(1, width), max(1, height), method, crop))


class ImageScale(Node):
    """Resizes images; a width or height of 0 keeps the aspect ratio."""
    display_name = "Upscale Image"
    category = "image/upscaling"
    inputs = (Input("image", "IMAGE"), Combo("upscale_method", IMAGE_UPSCALE_METHODS),
              Int("width", 512, min=0, max=MAX_RESOLUTION, step=1), Int("height", 512, min=0, max=MAX_RESOLUTION, step=1),
              Combo("crop", ["disabled", "center"]))
    outputs = (Output("IMAGE"),)

    def run(self, image, upscale_method, width, height, crop):
        width, height = _keep_aspect(width, height, image.shape[2], image.shape[1])
        return (resize_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    display_name = "Upscale Image By"
    category = "image/upscaling"
    inputs = (Input("image", "IMAGE"), Combo("upscale_method", IMAGE_UPSCALE_METHODS),
              Float("scale_by", 1.0, min=0.01, max=8.0, step=0.01))
    outputs = (Output("IMAGE"),)

    def run(self, image, upscale_method, scale_by):
        return (resize_image(image, round(image.shape[2] * scale_by), round(image.shape[1] * scale_by), upscale_method),)


class ImageScaleToTotalPixels(Node):
    display_name = "Scale Image to Total Pixels"
    category = "image/upscaling"
    inputs = (Input("image", "IMAGE"), Combo("upscale_method", IMAGE_UPSCALE_METHODS),
              Float("megapixels", 1.0, min=0.01, max=16.0, step=0.01))
    outputs = (Output("IMAGE"),)

    def run(self, image, upscale_method, megapixels):
        total = megapixels * 1024 * 1024
        scale = (total / (image.shape[2] * image.shape[1])) ** 0.5
        return (resize_image(image, round(image.shape[2] * scale), round(image.shape[1] * scale), upscale_method),)


class ImagePadForOutpaint(Node):
    """Pads an image for outpainting: new area grey, with a mask that is 1 there and fades
    (quadratically over `feathering` px) into the original image along the padded edges."""
    display_name = "Pad Image for Outpainting"
    category = "image"
    inputs = (Input("image", "IMAGE"),
              Int("left", 0, min=0, max=MAX_RESOLUTION, step=8), Int("top", 0, min=0, max=MAX_RESOLUTION, step=8),
              Int("right", 0, min=0, max=MAX_RESOLUTION, step=8), Int("bottom", 0, min=0, max=MAX_RESOLUTION, step=8),
              Int("feathering", 40, min=0, max=MAX_RESOLUTION, step=1))
    outputs = (Output("IMAGE"), Output("MASK"))

    def run(self, image, left, top, right, bottom, feathering):
        b, h, w, c = image.shape
        out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=torch.float32)
        out[:, top:top + h, left:left + w, :] = image
        mask = torch.ones((h + top + bottom, w + left + right), dtype=torch.float32)
        inner = torch.zeros((h, w), dtype=torch.float32)
        if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
            ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
            xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
            big = torch.full((h, w), float(max(h, w)))
            distance = torch.minimum(torch.minimum(ys if top else big, (h - 1 - ys) if bottom else big),
                                     torch.minimum(xs if left else big, (w - 1 - xs) if right else big))
            inside = distance < feathering
            inner[inside] = ((feathering - distance[inside]) / feathering) ** 2
        mask[top:top + h, left:left + w] = inner
        return (out, mask.unsqueeze(0))


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (LoadImage, LoadImageOutput, SaveImage, PreviewImage, ImageScale,
                                                      ImageScaleBy, ImageScaleToTotalPixels, ImagePadForOutpaint)}
