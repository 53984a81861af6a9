"""Mask nodes against hand-derived values and scipy (GrowMask is scipy's grey dilation / erosion in
ComfyUI)."""
import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from nodegraph import NodeInputError
from nodes.mask import (CropMask, FeatherMask, GrowMask, ImageColorToMask, ImageToMask, InvertMask, MaskComposite,
                        MaskPreview, MaskToImage, SolidMask, ThresholdMask)


def test_image_mask_conversions():
    rgba = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for k, channel in enumerate(["red", "green", "blue", "alpha"]):
        assert torch.equal(ImageToMask().run(rgba, channel)[0], rgba[..., k])
    with pytest.raises(NodeInputError, match="no alpha channel"):
        ImageToMask().run(rgba[..., :3], "alpha")
    image = MaskToImage().run(rgba[..., 0])[0]
    assert image.shape == (2, 3, 4, 3) and torch.equal(image[..., 2], rgba[..., 0])
    assert MaskToImage().run(torch.ones(5, 6))[0].shape == (1, 5, 6, 3)  # an [H, W] mask


def test_image_color_to_mask_hand_derived():
    image = torch.zeros(1, 1, 3, 3)
    image[0, 0, 0] = torch.tensor([1.0, 128 / 255, 0.0])  # 0xFF8000
    image[0, 0, 1] = torch.tensor([1.0, 127.4 / 255, 0.0])  # rounds to 0xFF7F00
    image[0, 0, 2] = torch.tensor([1.0, 127.6 / 255, 0.0])  # rounds to 0xFF8000
    assert ImageColorToMask().run(image, 0xFF8000)[0].tolist() == [[[1.0, 0.0, 1.0]]]


def test_solid_invert_crop_threshold():
    assert torch.equal(SolidMask().run(0.25, 3, 2)[0], torch.full((1, 2, 3), 0.25))
    mask = torch.arange(12.0).reshape(1, 3, 4) / 11
    assert torch.allclose(InvertMask().run(mask)[0], 1 - mask)
    assert torch.equal(CropMask().run(mask, 1, 1, 2, 5)[0], mask[:, 1:, 1:3])
    assert torch.equal(ThresholdMask().run(mask, 0.5)[0], (mask > 0.5).float())


@pytest.mark.parametrize("operation, expected", [
    ("multiply", [0.42, 0.0]), ("add", [1.0, 0.6]), ("subtract", [0.1, 0.0]),
    ("and", [1.0, 0.0]), ("or", [1.0, 1.0]), ("xor", [0.0, 1.0])])
def test_mask_composite_operations_hand_derived(operation, expected):
    destination = torch.tensor([[[0.7, 0.0, 0.9]]])  # 1 x 1 x 3; and / or / xor round to 0 or 1
    source = torch.tensor([[[0.6, 0.6]]])             # placed at x = 0, covering columns 0..1
    out = MaskComposite().run(destination, source, 0, 0, operation)[0]
    assert torch.allclose(out[0, 0, :2], torch.tensor(expected)) and out[0, 0, 2] == pytest.approx(0.9)


def test_mask_composite_offset_and_batches():
    out = MaskComposite().run(torch.zeros(4, 4), torch.ones(3, 3), 2, 3, "add")[0]
    expected = torch.zeros(1, 4, 4)
    expected[0, 3, 2:] = 1
    assert torch.equal(out, expected)
    assert MaskComposite().run(torch.zeros(1, 4, 4), torch.ones(2, 2, 2), 0, 0, "add")[0].shape == (2, 4, 4)
    with pytest.raises(NodeInputError, match=r"\(3, 2, 2\) and \(2, 4, 4\)"):
        MaskComposite().run(torch.zeros(2, 4, 4), torch.ones(3, 2, 2), 0, 0, "add")


def test_feather_mask_hand_derived():
    out = FeatherMask().run(torch.ones(1, 1, 6), 3, 0, 0, 0)[0]
    assert torch.allclose(out[0, 0], torch.tensor([1 / 3, 2 / 3, 1, 1, 1, 1]))
    # ComfyUI's right fade: column -i gets (i + 1) / right, so column 0 (i = 0) gets 1/3 and the
    # last column 2/3
    out = FeatherMask().run(torch.ones(1, 1, 6), 0, 0, 3, 0)[0]
    assert torch.allclose(out[0, 0], torch.tensor([1 / 3, 1, 1, 1, 1, 2 / 3]))
    out = FeatherMask().run(torch.ones(1, 4, 1), 0, 2, 0, 0)[0]
    assert torch.allclose(out[0, :, 0], torch.tensor([0.5, 1, 1, 1]))


@pytest.mark.parametrize("expand", [-2, -1, 1, 3])
@pytest.mark.parametrize("tapered", [True, False])
def test_grow_mask_matches_scipy(expand, tapered):
    mask = (torch.rand(2, 11, 13, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    mask[0, 4:8, 4:9] = 0.6
    c = 0 if tapered else 1
    footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    expected = []
    for m in mask.numpy():
        for _ in range(abs(expand)):
            op = scipy.ndimage.grey_erosion if expand < 0 else scipy.ndimage.grey_dilation
            m = op(m, footprint=footprint)
        expected.append(m)
    assert np.array_equal(GrowMask().run(mask, expand, tapered)[0].numpy(), np.stack(expected))


def test_mask_preview_writes_a_grey_png(layout):
    mask = torch.zeros(1, 4, 5)
    mask[0, 1, 2] = 1.0
    saved = MaskPreview().run(mask).ui["images"]
    assert saved[0]["type"] == "temp"
    with Image.open(layout.temp / saved[0]["subfolder"] / saved[0]["filename"]) as png:
        pixels = np.asarray(png.convert("RGB"))
    assert pixels.shape == (4, 5, 3) and pixels[1, 2].tolist() == [255, 255, 255] and pixels.sum() == 3 * 255
