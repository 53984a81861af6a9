"""Animated image output: the frames of a batch saved as one animated WEBP or PNG (APNG) in the
output folder, with the prompt and workflow embedded where ComfyUI puts them (WEBP: EXIF entries,
PNG: `comf` chunks after the image data)."""
from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

from nodegraph import Boolean, Combo, Float, Hidden, Input, Int, Node, NodeInputError, NodeOutput, String, folders
from nodegraph.folders import write_atomic

from .image import save_path
from .image_ops import tensor_to_pil

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


def _frames(images) -> list[Image.Image]:
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3, 4):
        raise NodeInputError("images", f"expected an IMAGE [B, H, W, C] with frames, got shape {tuple(images.shape)}")
    return [tensor_to_pil(frame) for frame in images]


def _duration_ms(fps: float) -> int:
    return int(1000.0 / fps)


class SaveAnimatedWEBP(Node):
    category = "image/animation"
    output_node = True
    inputs = (Input("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
              Float("fps", 6.0, min=0.01, max=1000.0, step=0.01), Boolean("lossless", True),
              Int("quality", 80, min=0, max=100), Combo("method", list(WEBP_METHODS)),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))

    def run(self, images, fps, filename_prefix, lossless, quality, method, prompt=None, extra_pnginfo=None):
        frames = _frames(images)
        root = folders.current().output
        folder, subfolder, stem, counter = save_path(filename_prefix, root, images.shape[2], images.shape[1])
        exif = frames[0].getexif()
        if prompt is not None:
            exif[0x0110] = "prompt:" + json.dumps(prompt)  # the Model tag
        tag = 0x010F  # the Make tag, then downwards, one per extra_pnginfo key
        for key, value in (extra_pnginfo or {}).items():
            exif[tag] = f"{key}:{json.dumps(value)}"
            tag -= 1
        buffer = io.BytesIO()
        frames[0].save(buffer, format="WEBP", save_all=True, duration=_duration_ms(fps), append_images=frames[1:],
                       exif=exif, lossless=lossless, quality=quality, method=WEBP_METHODS[method])
        name = f"{stem}_{counter:05}_.webp"
        write_atomic(folder / name, buffer.getvalue())
        return NodeOutput(ui={"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                              "animated": (len(frames) != 1,)})


class SaveAnimatedPNG(Node):
    category = "image/animation"
    output_node = True
    inputs = (Input("images", "IMAGE"), String("filename_prefix", "ComfyUI"),
              Float("fps", 6.0, min=0.01, max=1000.0, step=0.01), Int("compress_level", 4, min=0, max=9),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO"))

    def run(self, images, fps, compress_level, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        frames = _frames(images)
        root = folders.current().output
        folder, subfolder, stem, counter = save_path(filename_prefix, root, images.shape[2], images.shape[1])
        info = PngImagePlugin.PngInfo()
        entries = ([("prompt", prompt)] if prompt is not None else []) + list((extra_pnginfo or {}).items())
        for key, value in entries:
            info.add(b"comf", key.encode("latin-1", "replace") + b"\0" +
                     json.dumps(value).encode("latin-1", "backslashreplace"), after_idat=True)
        buffer = io.BytesIO()
        frames[0].save(buffer, format="PNG", pnginfo=info, compress_level=compress_level, save_all=True,
                       duration=_duration_ms(fps), append_images=frames[1:])
        name = f"{stem}_{counter:05}_.png"
        write_atomic(folder / name, buffer.getvalue())
        return NodeOutput(ui={"images": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                              "animated": (True,)})


NODE_CLASS_MAPPINGS = {"SaveAnimatedWEBP": SaveAnimatedWEBP, "SaveAnimatedPNG": SaveAnimatedPNG}
