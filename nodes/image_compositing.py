"""Image compositing: paste with a mask, Porter-Duff operators on images with alpha masks, and
splitting / joining an alpha channel. Names, inputs and results as ComfyUI's.

A MASK used as alpha is ComfyUI's convention: mask = 1 - alpha (1 = transparent, the area to
repaint), as LoadImage returns it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nodegraph import Boolean, Combo, Input, Int, Node, NodeInputError, Output
from nodegraph.contract import MAX_RESOLUTION

from .image_ops import bchw_to_image, composite, image_to_bchw, masks_bchw, match_alpha, upscale


class ImageCompositeMasked(Node):
    """Pastes source into destination at (x, y) where the mask is 1 (the mask is resized to the source)."""
    category = "image"
    inputs = (Input("destination", "IMAGE"), Input("source", "IMAGE"),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=1), Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
              Boolean("resize_source", False), Input("mask", "MASK", optional=True))
    outputs = (Output("IMAGE"),)

    def run(self, destination, source, x, y, resize_source, mask=None):
        destination, source = match_alpha(destination, source)
        out = composite(image_to_bchw(destination).clone(), image_to_bchw(source), x, y, mask, 1, resize_source)
        return (bchw_to_image(out),)


# Porter-Duff operators on premultiplied colour: mode -> (alpha(sa, da), colour(s, d, sa, da)).
PORTER_DUFF = {
    "ADD": (lambda sa, da: torch.clamp(sa + da, 0, 1), lambda s, d, sa, da: torch.clamp(s + d, 0, 1)),
    "CLEAR": (lambda sa, da: torch.zeros_like(da), lambda s, d, sa, da: torch.zeros_like(d)),
    "DARKEN": (lambda sa, da: sa + da - sa * da, lambda s, d, sa, da: (1 - da) * s + (1 - sa) * d + torch.min(s, d)),
    "DST": (lambda sa, da: da, lambda s, d, sa, da: d),
    "DST_ATOP": (lambda sa, da: sa, lambda s, d, sa, da: sa * d + (1 - da) * s),
    "DST_IN": (lambda sa, da: sa * da, lambda s, d, sa, da: d * sa),
    "DST_OUT": (lambda sa, da: (1 - sa) * da, lambda s, d, sa, da: (1 - sa) * d),
    "DST_OVER": (lambda sa, da: da + (1 - da) * sa, lambda s, d, sa, da: d + (1 - da) * s),
    "LIGHTEN": (lambda sa, da: sa + da - sa * da, lambda s, d, sa, da: (1 - da) * s + (1 - sa) * d + torch.max(s, d)),
    "MULTIPLY": (lambda sa, da: sa * da, lambda s, d, sa, da: s * d),
    "OVERLAY": (lambda sa, da: sa + da - sa * da,
                lambda s, d, sa, da: torch.where(2 * d < da, 2 * s * d, sa * da - 2 * (da - s) * (sa - d))),
    "SCREEN": (lambda sa, da: sa + da - sa * da, lambda s, d, sa, da: s + d - s * d),
    "SRC": (lambda sa, da: sa, lambda s, d, sa, da: s),
    "SRC_ATOP": (lambda sa, da: da, lambda s, d, sa, da: da * s + (1 - sa) * d),
    "SRC_IN": (lambda sa, da: sa * da, lambda s, d, sa, da: s * da),
    "SRC_OUT": (lambda sa, da: (1 - da) * sa, lambda s, d, sa, da: (1 - da) * s),
    "SRC_OVER": (lambda sa, da: sa + (1 - sa) * da, lambda s, d, sa, da: s + (1 - sa) * d),
    "XOR": (lambda sa, da: (1 - da) * sa + (1 - sa) * da, lambda s, d, sa, da: (1 - da) * s + (1 - sa) * d),
}


def porter_duff(src: torch.Tensor, src_mask: torch.Tensor, dst: torch.Tensor, dst_mask: torch.Tensor,
                mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One [H, W, C] image pair with [H, W, 1] masks -> (colour, mask), straight (not premultiplied) colour."""
    sa, da = 1 - src_mask, 1 - dst_mask
    alpha_of, colour_of = PORTER_DUFF[mode]
    alpha = alpha_of(sa, da)
    colour = colour_of(src * sa, dst * da, sa, da)
    colour = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour))
    return torch.clamp(colour, 0, 1), 1 - alpha


def _fit(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H, W, C] resized (bicubic, centre crop) to height x width when it differs."""
    if plane.shape[:2] == (height, width):
        return plane
    return upscale(plane.movedim(-1, 0)[None], width, height, "bicubic", "center")[0].movedim(0, -1)


class PorterDuffImageComposite(Node):
    display_name = "Porter-Duff Image Composite"
    category = "mask/compositing"
    inputs = (Input("source", "IMAGE"), Input("source_alpha", "MASK"), Input("destination", "IMAGE"),
              Input("destination_alpha", "MASK"), Combo("mode", list(PORTER_DUFF), default="DST"))
    outputs = (Output("IMAGE"), Output("MASK"))

    def run(self, source, source_alpha, destination, destination_alpha, mode):
        source_alpha, destination_alpha = masks_bchw(source_alpha)[:, 0], masks_bchw(destination_alpha)[:, 0]
        if source.shape[-1] != destination.shape[-1]:
            raise NodeInputError("source", f"has {source.shape[-1]} channels, the destination {destination.shape[-1]} "
                                           f"(shapes {tuple(source.shape)} and {tuple(destination.shape)})")
        count = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
        images, masks = [], []
        for i in range(count):
            dst = destination[i]
            h, w = dst.shape[:2]
            dst_mask = _fit(destination_alpha[i][..., None], h, w)
            src = _fit(source[i], h, w)
            src_mask = _fit(source_alpha[i][..., None], h, w)
            image, mask = porter_duff(src, src_mask, dst, dst_mask, mode)
            images.append(image)
            masks.append(mask[..., 0])
        return (torch.stack(images), torch.stack(masks))


class SplitImageWithAlpha(Node):
    """The RGB channels, and the alpha channel as a MASK (1 - alpha; 0 where there is no alpha)."""
    display_name = "Split Image with Alpha"
    category = "mask/compositing"
    inputs = (Input("image", "IMAGE"),)
    outputs = (Output("IMAGE"), Output("MASK"))

    def run(self, image):
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return (image[..., :3], 1.0 - alpha)


class JoinImageWithAlpha(Node):
    """RGB plus an alpha channel from a MASK (alpha = 1 - mask, the mask resized to the image)."""
    display_name = "Join Image with Alpha"
    category = "mask/compositing"
    inputs = (Input("image", "IMAGE"), Input("alpha", "MASK"))
    outputs = (Output("IMAGE"),)

    def run(self, image, alpha):
        alpha = 1.0 - F.interpolate(masks_bchw(alpha), size=image.shape[1:3], mode="bilinear")[:, 0]
        count = min(len(image), len(alpha))
        return (torch.cat((image[:count, ..., :3], alpha[:count, ..., None].to(image)), dim=-1),)


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (ImageCompositeMasked, PorterDuffImageComposite,
                                                      SplitImageWithAlpha, JoinImageWithAlpha)}
