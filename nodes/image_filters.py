"""Image filters and colour nodes: invert, blend modes, Gaussian blur, sharpen, colour quantisation
(PIL), added noise, morphology and YCbCr conversion (kornia). Names, inputs and results as ComfyUI's."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from nodegraph import Combo, Float, Input, Int, Node, NodeInputError, Output

from .image_ops import bchw_to_image, convolve_reflect, gaussian_kernel, image_to_bchw, match_alpha, upscale

BLEND_MODES = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
DITHERS = ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]
MORPHOLOGY = ["erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"]


class ImageInvert(Node):
    display_name = "Invert Image"
    category = "image"
    inputs = (Input("image", "IMAGE"),)
    outputs = (Output("IMAGE"),)

    def run(self, image):
        return (1.0 - image,)


def blend(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """The blend layer of `b` over `a` (both 0..1)."""
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":  # the W3C formula
        d = torch.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, torch.sqrt(a))
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (d - a))
    if mode == "difference":
        return a - b  # as ComfyUI (signed; the result is clamped afterwards)
    raise ValueError(f"unknown blend mode {mode!r}; expected one of {BLEND_MODES}")


class ImageBlend(Node):
    """image1 mixed with the blend of image2 over it: image1 * (1 - blend_factor) + blend * blend_factor."""
    display_name = "Image Blend"
    category = "image/postprocessing"
    inputs = (Input("image1", "IMAGE"), Input("image2", "IMAGE"), Float("blend_factor", 0.5, min=0.0, max=1.0, step=0.01),
              Combo("blend_mode", BLEND_MODES))
    outputs = (Output("IMAGE"),)

    def run(self, image1, image2, blend_factor, blend_mode):
        image1, image2 = match_alpha(image1, image2)
        image2 = image2.to(image1)
        if image1.shape != image2.shape:
            image2 = bchw_to_image(upscale(image_to_bchw(image2), image1.shape[2], image1.shape[1], "bicubic", "center"))
            if image2.shape[0] not in (1, image1.shape[0]) or image2.shape[-1] != image1.shape[-1]:
                raise NodeInputError("image2", f"shape {tuple(image2.shape)} cannot be blended with image1 {tuple(image1.shape)}")
        mixed = image1 * (1 - blend_factor) + blend(image1, image2, blend_mode) * blend_factor
        return (torch.clamp(mixed, 0, 1),)


def _check_radius(image: torch.Tensor, radius: int, name: str) -> None:
    if radius >= min(image.shape[1], image.shape[2]):
        raise NodeInputError(name, f"{radius} is too large for a {image.shape[2]}x{image.shape[1]} image "
                                   f"(the mirrored border needs the radius below both sides)")


class ImageBlur(Node):
    """Gaussian blur over a (2 * blur_radius + 1)-pixel kernel; sigma is relative to the radius
    (ComfyUI's kernel spans -1..1), borders mirrored."""
    display_name = "Image Blur"
    category = "image/postprocessing"
    inputs = (Input("image", "IMAGE"), Int("blur_radius", 1, min=1, max=31, step=1),
              Float("sigma", 1.0, min=0.1, max=10.0, step=0.1))
    outputs = (Output("IMAGE"),)

    def run(self, image, blur_radius, sigma):
        if blur_radius == 0:
            return (image,)
        _check_radius(image, blur_radius, "blur_radius")
        kernel = gaussian_kernel(blur_radius * 2 + 1, sigma)
        return (bchw_to_image(convolve_reflect(image_to_bchw(image), kernel)),)


class ImageSharpen(Node):
    """Unsharp mask: the image minus alpha * 10 times its Gaussian blur, plus that much of itself."""
    display_name = "Image Sharpen"
    category = "image/postprocessing"
    inputs = (Input("image", "IMAGE"), Int("sharpen_radius", 1, min=1, max=31, step=1),
              Float("sigma", 1.0, min=0.1, max=10.0, step=0.01), Float("alpha", 1.0, min=0.0, max=5.0, step=0.01))
    outputs = (Output("IMAGE"),)

    def run(self, image, sharpen_radius, sigma, alpha):
        if sharpen_radius == 0:
            return (image,)
        _check_radius(image, sharpen_radius, "sharpen_radius")
        kernel = gaussian_kernel(sharpen_radius * 2 + 1, sigma).to(image.dtype) * -(alpha * 10)
        kernel[sharpen_radius, sharpen_radius] = kernel[sharpen_radius, sharpen_radius] - kernel.sum() + 1.0
        return (torch.clamp(bchw_to_image(convolve_reflect(image_to_bchw(image), kernel)), 0, 1),)


def bayer_matrix(order: int) -> np.ndarray:
    """The normalised order x order Bayer threshold matrix (values centred on 0, spread 1)."""
    matrix = np.zeros((1, 1), np.float32)
    for level in range(1, int(math.log2(order)) + 1):
        q = 4 ** level
        m = q * matrix
        matrix = np.block([[m - 1.5, m + 0.5], [m + 1.5, m - 0.5]]) / q
    return matrix


def quantize(rgb: np.ndarray, colors: int, dither: str) -> np.ndarray:
    """One uint8 [H, W, 3] image reduced to `colors` colours with PIL's median-cut palette."""
    image = Image.fromarray(rgb)
    palette = image.quantize(colors=colors)
    if dither == "none":
        out = image.quantize(palette=palette, dither=Image.Dither.NONE)
    elif dither == "floyd-steinberg":
        out = image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    else:  # ordered dithering: threshold offsets of one palette step, then the nearest colour
        order = int(dither.split("-")[-1])
        spread = 2 * 256 / (len(palette.getpalette()) // 3)
        offsets = spread * bayer_matrix(order) + 0.5
        tiled = np.tile(offsets, (math.ceil(rgb.shape[0] / order), math.ceil(rgb.shape[1] / order)))
        shifted = np.clip(rgb.astype(np.float32) + tiled[:rgb.shape[0], :rgb.shape[1], None], 0, 255).astype(np.uint8)
        out = Image.fromarray(shifted).quantize(palette=palette, dither=Image.Dither.NONE)
    return np.asarray(out.convert("RGB"))


class ImageQuantize(Node):
    """Reduces each image to at most `colors` colours (alpha is kept)."""
    display_name = "Image Quantize"
    category = "image/postprocessing"
    inputs = (Input("image", "IMAGE"), Int("colors", 256, min=1, max=256, step=1), Combo("dither", DITHERS))
    outputs = (Output("IMAGE"),)

    def run(self, image, colors, dither):
        if image.shape[-1] < 3:
            raise NodeInputError("image", f"needs RGB channels, got shape {tuple(image.shape)}")
        out = image.clone()
        for i in range(image.shape[0]):
            rgb = (image[i, ..., :3].clamp(0, 1) * 255).to(torch.uint8).numpy()  # truncated, as ComfyUI
            out[i, ..., :3] = torch.from_numpy(quantize(rgb, colors, dither).astype(np.float32) / 255)
        return (out,)


class ImageAddNoise(Node):
    """Adds Gaussian noise (strength x N(0, 1), drawn from the seed as ComfyUI draws it), clamped to 0..1."""
    category = "image"
    inputs = (Input("image", "IMAGE"),
              Int("seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                  tooltip="The random seed used for creating the noise."),
              Float("strength", 0.5, min=0.0, max=1.0, step=0.01))
    outputs = (Output("IMAGE"),)

    def run(self, image, seed, strength):
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn(image.size(), generator=generator).to(image)
        return (torch.clamp(image + strength * noise, 0.0, 1.0),)


class Morphology(Node):
    """Grey-scale morphology with a square kernel (kornia, as ComfyUI)."""
    display_name = "ImageMorphology"
    category = "image/postprocessing"
    inputs = (Input("image", "IMAGE"), Combo("operation", MORPHOLOGY), Int("kernel_size", 3, min=3, max=999, step=1))
    outputs = (Output("IMAGE"),)

    def run(self, image, operation, kernel_size):
        from kornia import morphology

        ops = {"erode": morphology.erosion, "dilate": morphology.dilation, "open": morphology.opening,
               "close": morphology.closing, "gradient": morphology.gradient, "top_hat": morphology.top_hat,
               "bottom_hat": morphology.bottom_hat}
        kernel = torch.ones(kernel_size, kernel_size, dtype=image.dtype)
        return (bchw_to_image(ops[operation](image_to_bchw(image), kernel)),)


class ImageRGBToYUV(Node):
    """Splits an RGB image into its Y, U (Cb) and V (Cr) planes, each as a grey image (kornia's YCbCr)."""
    category = "image/batch"
    inputs = (Input("image", "IMAGE"),)
    outputs = (Output("IMAGE", "Y"), Output("IMAGE", "U"), Output("IMAGE", "V"))

    def run(self, image):
        from kornia.color import rgb_to_ycbcr

        if image.shape[-1] != 3:
            raise NodeInputError("image", f"needs an RGB image, got shape {tuple(image.shape)}")
        planes = bchw_to_image(rgb_to_ycbcr(image_to_bchw(image)))
        return tuple(planes[..., k:k + 1].expand_as(image) for k in range(3))


class ImageYUVToRGB(Node):
    """Joins Y, U (Cb) and V (Cr) planes (each the mean of its image's channels) into an RGB image."""
    category = "image/batch"
    inputs = (Input("Y", "IMAGE"), Input("U", "IMAGE"), Input("V", "IMAGE"))
    outputs = (Output("IMAGE"),)

    def run(self, Y, U, V):  # noqa: N803  (ComfyUI's input names)
        from kornia.color import ycbcr_to_rgb

        shapes = {tuple(p.shape[:3]) for p in (Y, U, V)}
        if len(shapes) != 1:
            raise NodeInputError("U", f"Y, U and V must have one size, got {[tuple(p.shape) for p in (Y, U, V)]}")
        planes = torch.cat([p.mean(dim=-1, keepdim=True) for p in (Y, U, V)], dim=-1)
        return (bchw_to_image(ycbcr_to_rgb(image_to_bchw(planes))),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (ImageInvert, ImageBlend, ImageBlur, ImageSharpen, ImageQuantize,
                                                      ImageAddNoise, Morphology, ImageRGBToYUV, ImageYUVToRGB)}
