"""Image batch, geometry, filter and compositing nodes against hand-derived values and independent
references (numpy, PIL, scipy, kornia). ComfyUI's own outputs for ImageBlur / ImageSharpen are the
conformance cases `image_blur_r2_s1`, `image_sharpen_r1_s1_a1`."""
import json

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from nodegraph import NodeInputError
from nodes.image import LoadImageOutput
from nodes.image_animation import SaveAnimatedPNG, SaveAnimatedWEBP
from nodes.image_batch import EmptyImage, GetImageSize, ImageBatch, ImageFromBatch, RebatchImages, RepeatImageBatch
from nodes.image_compositing import (ImageCompositeMasked, JoinImageWithAlpha, PorterDuffImageComposite,
                                     SplitImageWithAlpha)
from nodes.image_filters import (ImageAddNoise, ImageBlend, ImageBlur, ImageInvert, ImageQuantize, ImageRGBToYUV,
                                 ImageSharpen, ImageYUVToRGB, Morphology, bayer_matrix)
from nodes.image_transform import (ImageCrop, ImageFlip, ImageRotate, ImageScaleToMaxDimension, ImageStitch,
                                   ResizeAndPadImage)
from nodes.primitives import PreviewAny


def image(b=1, h=6, w=8, c=3, seed=0):
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


# -- batches ------------------------------------------------------------------------------------

def test_empty_image_colour_and_size():
    out = EmptyImage().run(5, 3, 2, 0xFF8000)[0]
    assert out.shape == (2, 3, 5, 3)
    assert torch.allclose(out[1, 2, 4], torch.tensor([1.0, 128 / 255, 0.0]))


def test_batch_repeat_select_rebatch_size():
    a, b = image(2, seed=1), image(1, h=3, w=4, seed=2)
    joined = ImageBatch().run(a, b)[0]
    assert joined.shape == (3, 6, 8, 3) and torch.equal(joined[:2], a)
    constant = torch.full((1, 3, 4, 3), 0.25)
    assert torch.allclose(ImageBatch().run(a, constant)[0][2], torch.full((6, 8, 3), 0.25))  # resized
    with pytest.raises(NodeInputError, match="channels"):
        ImageBatch().run(a, image(c=4))
    assert torch.equal(RepeatImageBatch().run(b, 3)[0], b.repeat(3, 1, 1, 1))
    assert torch.equal(ImageFromBatch().run(joined, 1, 5)[0], joined[1:])
    assert torch.equal(ImageFromBatch().run(joined, 7, 1)[0], joined[2:])
    batches = RebatchImages().run([a, joined[2:], a], [2])[0]
    assert [x.shape[0] for x in batches] == [2, 2, 1] and torch.equal(batches[1][1], a[0])
    assert GetImageSize().run(a) == (8, 6, 2)


# -- geometry -----------------------------------------------------------------------------------

def test_crop_rotate_flip_match_numpy():
    x = image(2, seed=3)
    a = x.numpy()
    assert np.array_equal(ImageCrop().run(x, 3, 2, 4, 1)[0].numpy(), a[:, 1:3, 4:7])
    assert ImageCrop().run(x, 512, 512, 100, 100)[0].shape == (2, 1, 1, 3)  # corner kept inside
    for k, name in enumerate(["none", "90 degrees", "180 degrees", "270 degrees"]):
        assert np.array_equal(ImageRotate().run(x, name)[0].numpy(), np.rot90(a, k=-k, axes=(1, 2)))
    assert np.array_equal(ImageFlip().run(x, "x-axis: vertically")[0].numpy(), a[:, ::-1])
    assert np.array_equal(ImageFlip().run(x, "y-axis: horizontally")[0].numpy(), a[:, :, ::-1])


def test_stitch_directions_spacing_and_padding():
    left, right = torch.zeros(1, 4, 4, 3), torch.ones(1, 4, 6, 3)
    out = ImageStitch().run(left, "right", False, 2, "red", right)[0]
    assert out.shape == (1, 4, 12, 3)
    assert out[0, 0, :4].max() == 0 and torch.equal(out[0, 0, 4], torch.tensor([1.0, 0.0, 0.0]))
    assert out[0, 0, 6:].min() == 1
    up = ImageStitch().run(left, "up", False, 0, "white", right)[0]
    assert up.shape == (1, 8, 6, 3) and up[0, :4].min() == 1 and up[0, 4:, 1:5].max() == 0
    # the narrower image is padded with the spacing colour's grey (white) on both sides
    assert up[0, 4:, 0].min() == 1 and up[0, 4:, 5].min() == 1
    assert torch.equal(ImageStitch().run(left, "down", True, 0, "white")[0], left)  # no image2
    matched = ImageStitch().run(torch.zeros(2, 4, 4, 3), "right", True, 0, "white", torch.ones(1, 2, 4, 4))[0]
    assert matched.shape == (2, 4, 12, 4)  # image2 scaled to height 4 (width 8), alpha added, batch repeated
    assert matched[..., 3].min() == 1


def test_resize_and_pad_and_max_dimension():
    x = torch.ones(1, 4, 8, 3)
    out = ResizeAndPadImage().run(x, 16, 16, "black", "nearest-exact")[0]
    assert out.shape == (1, 16, 16, 3)
    assert out[0, 4:12].min() == 1 and out[0, :4].max() == 0 and out[0, 12:].max() == 0
    assert ImageScaleToMaxDimension().run(torch.rand(1, 30, 60, 3), "bilinear", 20)[0].shape == (1, 10, 20, 3)
    assert ImageScaleToMaxDimension().run(torch.rand(1, 60, 30, 3), "area", 20)[0].shape == (1, 20, 10, 3)


# -- filters ------------------------------------------------------------------------------------

def test_invert_and_blend_modes_hand_derived():
    a, b = torch.full((1, 1, 1, 3), 0.2), torch.full((1, 1, 1, 3), 0.6)
    assert torch.allclose(ImageInvert().run(a)[0], torch.full((1, 1, 1, 3), 0.8))
    expected = {"normal": 0.6, "multiply": 0.12, "screen": 1 - 0.8 * 0.4, "overlay": 2 * 0.2 * 0.6,
                # soft light with b > 0.5: a + (2b - 1)(D(a) - a), D(0.2) = ((16a - 12)a + 4)a = 0.448
                "soft_light": 0.2 + 0.2 * (0.448 - 0.2), "difference": 0.0}  # a - b = -0.4, clamped
    for mode, blended in expected.items():
        out = ImageBlend().run(a, b, 1.0, mode)[0]
        assert torch.allclose(out, torch.full_like(out, blended), atol=1e-6), mode
    half = ImageBlend().run(a, b, 0.5, "multiply")[0]
    assert torch.allclose(half, torch.full_like(half, 0.5 * 0.2 + 0.5 * 0.12))
    rgba = ImageBlend().run(torch.zeros(1, 2, 2, 4), torch.ones(1, 4, 4, 3), 1.0, "normal")[0]
    assert rgba.shape == (1, 2, 2, 4)


def comfy_kernel(size, sigma):
    grid = np.linspace(-1, 1, size)
    g = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def test_blur_and_sharpen_against_scipy():
    x = image(1, h=10, w=12, seed=4)
    blurred = ImageBlur().run(x, 2, 1.0)[0].numpy()
    k = comfy_kernel(5, 1.0)
    expected = np.stack([scipy.ndimage.correlate(x[0, ..., c].numpy(), k, mode="mirror") for c in range(3)], -1)
    assert np.allclose(blurred[0], expected, atol=1e-6)
    sharp = comfy_kernel(3, 1.0) * -10.0
    sharp[1, 1] += 1 - sharp.sum()
    expected = np.stack([scipy.ndimage.correlate(x[0, ..., c].numpy(), sharp, mode="mirror") for c in range(3)], -1)
    assert np.allclose(ImageSharpen().run(x, 1, 1.0, 1.0)[0][0].numpy(), np.clip(expected, 0, 1), atol=1e-6)
    with pytest.raises(NodeInputError, match="blur_radius"):
        ImageBlur().run(torch.rand(1, 4, 4, 3), 5, 1.0)


def test_quantize_against_pil():
    x = image(2, h=16, w=16, seed=5)
    out = ImageQuantize().run(x, 4, "none")[0]
    for i in range(2):
        assert len({tuple(p) for p in (out[i].reshape(-1, 3) * 255).round().int().tolist()}) <= 4
        pil = Image.fromarray((x[i] * 255).to(torch.uint8).numpy())
        reference = np.asarray(pil.quantize(palette=pil.quantize(colors=4), dither=Image.Dither.NONE).convert("RGB"))
        assert np.array_equal((out[i] * 255).round().byte().numpy(), reference)
    assert ImageQuantize().run(x, 2, "bayer-4")[0].shape == x.shape
    assert ImageQuantize().run(x, 8, "floyd-steinberg")[0].shape == x.shape


def test_bayer_matrix_hand_derived():
    assert np.allclose(bayer_matrix(2), np.array([[-1.5, 0.5], [1.5, -0.5]]) / 4)
    m4 = bayer_matrix(4)
    assert m4.shape == (4, 4) and sorted(((m4 * 16) + 7.5).round().astype(int).ravel().tolist()) == list(range(16))


def test_add_noise_is_seeded_normal_noise():
    x = torch.full((1, 4, 4, 3), 0.5)
    out = ImageAddNoise().run(x, 7, 0.1)[0]
    expected = torch.clamp(0.5 + 0.1 * torch.randn(1, 4, 4, 3, generator=torch.Generator().manual_seed(7)), 0, 1)
    assert torch.equal(out, expected)
    assert not torch.equal(ImageAddNoise().run(x, 8, 0.1)[0], out)


def test_morphology_against_scipy_and_yuv_round_trip():
    x = torch.zeros(1, 9, 9, 3)
    x[0, 4, 4] = 1.0
    dilated = Morphology().run(x, "dilate", 3)[0]
    assert torch.equal(dilated[0, ..., 0], torch.from_numpy(scipy.ndimage.grey_dilation(x[0, ..., 0].numpy(), size=(3, 3))))
    assert Morphology().run(dilated, "erode", 3)[0].sum() == 3  # erosion brings the single pixel back
    rgb = image(1, seed=6)
    y, u, v = ImageRGBToYUV().run(rgb)
    # BT.601 luma and the chroma offsets, by hand
    r, g, b = rgb[0, 0, 0]
    assert torch.allclose(y[0, 0, 0], (0.299 * r + 0.587 * g + 0.114 * b).expand(3), atol=1e-5)
    assert torch.allclose(u[0, 0, 0, 0], (b - y[0, 0, 0, 0]) * 0.564 + 0.5, atol=1e-3)
    assert torch.allclose(ImageYUVToRGB().run(y, u, v)[0], rgb, atol=1e-5)


# -- compositing --------------------------------------------------------------------------------

def test_composite_masked_hand_derived():
    dest, src = torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 3)
    out = ImageCompositeMasked().run(dest, src, 1, 2, False)[0]
    expected = torch.zeros(4, 4)
    expected[2:4, 1:3] = 1
    assert torch.equal(out[0, ..., 0], expected)
    mask = torch.tensor([[[1.0, 0.0], [0.5, 0.0]]])
    out = ImageCompositeMasked().run(dest, src, 3, 3, False, mask)[0]  # cut off at the edge
    assert out[0, 3, 3, 0] == 1 and out.sum() == 3
    assert ImageCompositeMasked().run(dest, src, 0, 0, True)[0].min() == 1  # resized to the destination
    assert ImageCompositeMasked().run(torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 4), 0, 0, False)[0].shape[-1] == 3


def test_porter_duff_hand_derived():
    src, dst = torch.full((1, 2, 2, 3), 0.8), torch.full((1, 2, 2, 3), 0.2)
    src_mask, dst_mask = torch.full((1, 2, 2), 0.5), torch.zeros(1, 2, 2)  # source alpha 0.5, destination opaque
    image, mask = PorterDuffImageComposite().run(src, src_mask, dst, dst_mask, "SRC_OVER")
    # alpha = 0.5 + 0.5 * 1 = 1; colour = 0.8 * 0.5 + 0.5 * 0.2 = 0.5
    assert torch.allclose(image, torch.full_like(image, 0.5)) and torch.allclose(mask, torch.zeros_like(mask))
    image, mask = PorterDuffImageComposite().run(src, src_mask, dst, dst_mask, "DST_IN")
    assert torch.allclose(image, torch.full_like(image, 0.2)) and torch.allclose(mask, torch.full_like(mask, 0.5))
    image, mask = PorterDuffImageComposite().run(src, src_mask, dst, dst_mask, "CLEAR")
    assert image.max() == 0 and mask.min() == 1


def test_split_and_join_alpha():
    rgba = image(2, c=4, seed=7)
    rgb, mask = SplitImageWithAlpha().run(rgba)
    assert torch.equal(rgb, rgba[..., :3]) and torch.allclose(mask, 1 - rgba[..., 3])
    assert torch.allclose(JoinImageWithAlpha().run(rgb, mask)[0], rgba, atol=1e-6)
    assert SplitImageWithAlpha().run(rgb)[1].max() == 0  # no alpha: fully opaque, mask 0
    joined = JoinImageWithAlpha().run(torch.zeros(1, 8, 8, 3), torch.ones(1, 2, 2))[0]
    assert joined.shape == (1, 8, 8, 4) and joined[..., 3].max() == 0  # mask resized to the image


# -- files and previews -------------------------------------------------------------------------

def test_animated_webp_and_png(layout):
    frames = torch.stack([torch.full((6, 8, 3), v) for v in (0.0, 0.5, 1.0)])
    ui = SaveAnimatedWEBP().run(frames, 4.0, "anim", True, 80, "default", prompt={"1": {}},
                                extra_pnginfo={"workflow": {"a": 1}}).ui
    assert ui["animated"] == (True,)
    with Image.open(layout.output / ui["images"][0]["filename"]) as webp:
        assert webp.n_frames == 3 and webp.size == (8, 6)
        exif = webp.getexif()
        assert json.loads(exif[0x0110].split(":", 1)[1]) == {"1": {}} and exif[0x010F].startswith("workflow:")
    ui = SaveAnimatedPNG().run(frames, 4.0, 4, "anim", prompt={"1": {}}).ui
    path = layout.output / ui["images"][0]["filename"]
    with Image.open(path) as png:
        assert png.n_frames == 3 and png.info.get("duration") == 250
    assert b"comfprompt\x00" in path.read_bytes()


def test_load_image_output_lists_and_reads_outputs(layout):
    Image.new("RGB", (4, 3), (255, 0, 0)).save(layout.output / "result.png")
    from nodes.image import _output_images
    assert _output_images() == ["result.png [output]"]
    img, mask = LoadImageOutput().run("result.png [output]")
    assert img.shape == (1, 3, 4, 3) and img[0, 0, 0, 0] == 1


@pytest.mark.parametrize("value, text", [("hi", "hi"), (3, "3"), (2.5, "2.5"), (True, "True"), (None, "None"),
                                         ({"a": [1, 2]}, '{"a": [1, 2]}')])
def test_preview_any_text(value, text):
    assert PreviewAny().run(value).ui == {"text": (text,)}


def test_preview_any_tensor_falls_back_to_str():
    assert PreviewAny().run(torch.zeros(2)).ui["text"][0] == str(torch.zeros(2))
