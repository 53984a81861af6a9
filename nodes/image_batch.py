"""Image batch nodes: make, join, repeat, split and regroup batches of IMAGEs ([B, H, W, C], 0..1),
and read an image's size. Names, inputs and behaviour as ComfyUI's."""
from __future__ import annotations

import torch

from nodegraph import Input, Int, Node, NodeInputError, Output
from nodegraph.contract import MAX_RESOLUTION

from .image_ops import bchw_to_image, image_to_bchw, upscale


class EmptyImage(Node):
    """A batch of images of one colour (an RGB value, 0xRRGGBB)."""
    display_name = "EmptyImage"
    category = "image"
    inputs = (Int("width", 512, min=1, max=MAX_RESOLUTION, step=1), Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
              Int("batch_size", 1, min=1, max=4096), Int("color", 0, min=0, max=0xFFFFFF, step=1, display="color"))
    outputs = (Output("IMAGE"),)

    def run(self, width, height, batch_size=1, color=0):
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 0xFF
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageBatch(Node):
    """image2 appended to image1 (resized bilinearly, centre crop, when its size differs)."""
    display_name = "Batch Images"
    category = "image"
    inputs = (Input("image1", "IMAGE"), Input("image2", "IMAGE"))
    outputs = (Output("IMAGE"),)

    def run(self, image1, image2):
        if image1.shape[-1] != image2.shape[-1]:
            raise NodeInputError("image2", f"has {image2.shape[-1]} channels, image1 has {image1.shape[-1]} "
                                           f"(shapes {tuple(image2.shape)} and {tuple(image1.shape)}); "
                                           f"join RGB with RGB (SplitImageWithAlpha drops an alpha channel)")
        if image1.shape[1:] != image2.shape[1:]:
            image2 = bchw_to_image(upscale(image_to_bchw(image2), image1.shape[2], image1.shape[1], "bilinear", "center"))
        return (torch.cat((image1, image2.to(image1)), dim=0),)


class RepeatImageBatch(Node):
    category = "image/batch"
    inputs = (Input("image", "IMAGE"), Int("amount", 1, min=1, max=4096))
    outputs = (Output("IMAGE"),)

    def run(self, image, amount):
        return (image.repeat((amount, 1, 1, 1)),)


class ImageFromBatch(Node):
    """Images batch_index .. batch_index + length - 1 of a batch (clamped to the batch)."""
    category = "image/batch"
    inputs = (Input("image", "IMAGE"), Int("batch_index", 0, min=0, max=4095), Int("length", 1, min=1, max=4096))
    outputs = (Output("IMAGE"),)

    def run(self, image, batch_index, length):
        start = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - start, length)
        return (image[start:start + length].clone(),)


class RebatchImages(Node):
    """Regroups a list of image batches into batches of batch_size."""
    display_name = "Rebatch Images"
    category = "image/batch"
    input_is_list = True
    inputs = (Input("images", "IMAGE"), Int("batch_size", 1, min=1, max=4096))
    outputs = (Output("IMAGE", is_list=True),)

    def run(self, images, batch_size):
        size = batch_size[0]
        singles = [batch[i:i + 1] for batch in images for i in range(batch.shape[0])]
        for single in singles[1:]:
            if single.shape[1:] != singles[0].shape[1:]:
                raise NodeInputError("images", f"images of different sizes cannot share a batch: "
                                               f"{tuple(singles[0].shape[1:])} and {tuple(single.shape[1:])}")
        return ([torch.cat(singles[i:i + size]) for i in range(0, len(singles), size)],)


class GetImageSize(Node):
    """Width, height and batch size of an image."""
    display_name = "Get Image Size"
    category = "image"
    inputs = (Input("image", "IMAGE"),)
    outputs = (Output("INT", "width"), Output("INT", "height"), Output("INT", "batch_size"))

    def run(self, image):
        return (image.shape[2], image.shape[1], image.shape[0])


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (EmptyImage, ImageBatch, RepeatImageBatch, ImageFromBatch,
                                                      RebatchImages, GetImageSize)}
