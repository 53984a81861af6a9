"""Mask nodes against hand-made files: the value each channel must give."""
import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph.errors import NodeInputError
from nodes.mask import LoadImageMask


@pytest.fixture
def rgba_file(layout):
    pixels = np.zeros((4, 6, 4), dtype=np.uint8)
    pixels[..., 0] = 51   # red 0.2
    pixels[..., 1] = 255  # green 1.0
    pixels[..., 3] = 255
    pixels[1, 2, 3] = 0   # one transparent pixel
    Image.fromarray(pixels, "RGBA").save(layout.input / "m.png")
    return "m.png"


def test_colour_channels_are_value_over_255(rgba_file):
    (red,) = LoadImageMask().run(rgba_file, "red")
    (green,) = LoadImageMask().run(rgba_file, "green")
    assert red.shape == (1, 4, 6) and red.dtype == torch.float32
    assert torch.allclose(red, torch.full_like(red, 0.2))
    assert torch.equal(green, torch.ones_like(green))


def test_alpha_is_inverted(rgba_file):
    (mask,) = LoadImageMask().run(rgba_file, "alpha")
    expected = torch.zeros(1, 4, 6)
    expected[0, 1, 2] = 1.0
    assert torch.equal(mask, expected)


def test_greyscale_file_gives_its_value_on_every_colour_channel(layout):
    Image.fromarray(np.full((3, 3), 102, dtype=np.uint8), "L").save(layout.input / "g.png")
    for channel in ("red", "green", "blue"):
        (mask,) = LoadImageMask().run("g.png", channel)
        assert torch.allclose(mask, torch.full((1, 3, 3), 0.4))


def test_missing_alpha_gives_comfyui_empty_mask(layout):
    Image.new("RGB", (8, 8), "white").save(layout.input / "rgb.png")
    (mask,) = LoadImageMask().run("rgb.png", "alpha")
    assert torch.equal(mask, torch.zeros(1, 64, 64))


def test_not_an_image_names_the_input(layout):
    (layout.input / "bad.png").write_bytes(b"not a png")
    with pytest.raises(NodeInputError) as err:
        LoadImageMask().run("bad.png", "red")
    assert err.value.input_name == "image"
