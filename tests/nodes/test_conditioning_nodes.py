"""The conditioning nodes on hand-made CONDITIONING lists: every expected tensor and option is derived here by
hand from ComfyUI 0.3.64's rules (nodes.py, comfy_extras/nodes_ip2p.py, nodes_cond.py). Sampling with them is
pinned by the conformance cases area_pct_*, cond_* and inpaint_model_conditioning."""
import pytest
import torch

from nodes.conditioning import (ConditioningAverage, ConditioningConcat, ConditioningSetAreaPercentage,
                                ConditioningSetAreaStrength, ConditioningSetMask, ConditioningSetTimestepRange,
                                ConditioningZeroOut)
from nodes.conditioning_image import InpaintModelConditioning, InstructPixToPixConditioning
from nodes.sd.concat_inputs import BLANK_LATENT, concat_inputs
from nodes.sd.sampling.model_sampling import process_latent_in


def cond(value, tokens=77, pooled=None):
    options = {} if pooled is None else {"pooled_output": torch.full((1, 4), float(pooled))}
    return [torch.full((1, tokens, 4), float(value)), options]


def test_average_blends_to_with_the_first_from_entry_and_pads_with_zeros():
    to = [cond(1.0, 154, pooled=1.0), cond(3.0, 77)]
    src = [cond(10.0, 77, pooled=5.0), cond(99.0)]
    [(a, a_opts), (b, b_opts)] = ConditioningAverage().run(to, src, 0.25)[0]
    # first: 77 tokens of `from`, then zeros for the missing 77: 0.25·1 + 0.75·10 and 0.25·1 + 0
    assert torch.equal(a[:, :77], torch.full((1, 77, 4), 7.75)) and torch.equal(a[:, 77:], torch.full((1, 77, 4), 0.25))
    torch.testing.assert_close(a_opts["pooled_output"], torch.full((1, 4), 0.25 * 1 + 0.75 * 5))
    # second: no pooled of its own, so it blends `from`'s pooled with itself (= from's pooled)
    assert torch.equal(b, torch.full((1, 77, 4), 0.25 * 3 + 0.75 * 10))
    torch.testing.assert_close(b_opts["pooled_output"], torch.full((1, 4), 5.0))
    assert to[0][1]["pooled_output"][0, 0] == 1.0  # inputs untouched


def test_average_cuts_a_longer_from_to_the_to_length():
    [(out, _)] = ConditioningAverage().run([cond(0.0, 77)], [cond(2.0, 231)], 0.5)[0]
    assert out.shape == (1, 77, 4) and torch.equal(out, torch.ones(1, 77, 4))


def test_concat_appends_the_first_from_entry_to_every_to_entry():
    to = [cond(1.0), [torch.zeros(1, 154, 4), {"strength": 2.0}]]
    [(a, _), (b, b_opts)] = ConditioningConcat().run(to, [cond(5.0), cond(7.0)])[0]
    assert a.shape == (1, 154, 4) and a[0, 76, 0] == 1.0 and a[0, 77, 0] == 5.0
    assert b.shape == (1, 231, 4) and b[0, 153, 0] == 0.0 and b[0, 154, 0] == 5.0 and b_opts == {"strength": 2.0}


def test_zero_out_keeps_shapes_and_other_options():
    src = [[torch.ones(1, 154, 4), {"pooled_output": torch.ones(1, 4), "strength": 0.5}]]
    [(out, options)] = ConditioningZeroOut().run(src)[0]
    assert torch.equal(out, torch.zeros(1, 154, 4)) and torch.equal(options["pooled_output"], torch.zeros(1, 4))
    assert options["strength"] == 0.5 and torch.equal(src[0][0], torch.ones(1, 154, 4))


def test_option_setters_write_comfyui_keys_without_touching_the_input():
    src = [cond(1.0)]
    [(_, pct)] = ConditioningSetAreaPercentage().run(src, width=0.5, height=0.25, x=0.5, y=0.75, strength=1.5)[0]
    assert pct == {"area": ("percentage", 0.25, 0.5, 0.75, 0.5), "strength": 1.5, "set_area_to_bounds": False}
    [(_, strength)] = ConditioningSetAreaStrength().run(src, 0.3)[0]
    assert strength == {"strength": 0.3}
    [(_, window)] = ConditioningSetTimestepRange().run(src, 0.2, 0.6)[0]
    assert window == {"start_percent": 0.2, "end_percent": 0.6}
    assert src[0][1] == {}


@pytest.mark.parametrize("set_cond_area, bounds", [("default", False), ("mask bounds", True)])
def test_set_mask_adds_a_batch_axis_and_the_strength(set_cond_area, bounds):
    mask = torch.zeros(16, 16)
    [(_, options)] = ConditioningSetMask().run([cond(1.0)], mask, 0.7, set_cond_area)[0]
    assert options["mask"].shape == (1, 16, 16) and options["mask_strength"] == 0.7
    assert options["set_area_to_bounds"] is bounds


class RecordingVAE:
    """Encodes an image to its per-8×8-block channel means (4 channels: R, G, B, mean), recording the inputs."""

    def __init__(self):
        self.seen = []

    def crop_to_multiple(self, image):
        h, w = image.shape[1] // 8 * 8, image.shape[2] // 8 * 8
        y, x = (image.shape[1] % 8) // 2, (image.shape[2] % 8) // 2
        return image[:, y:y + h, x:x + w, :]

    def encode(self, image):
        self.seen.append(image.clone())
        px = image[..., :3].movedim(-1, 1)
        px = torch.cat([px, px.mean(1, keepdim=True)], 1)
        return torch.nn.functional.avg_pool2d(px, 8)


def test_inpaint_model_conditioning_greys_the_masked_pixels_and_keeps_the_mask():
    pixels = torch.rand(1, 20, 19, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(20, 19)
    mask[:, :9] = 1.0   # left part repainted
    mask[0, 10] = 0.4   # rounds to 0: kept
    vae = RecordingVAE()
    pos, neg, latent = InpaintModelConditioning().run([cond(1.0)], [cond(2.0)], vae, pixels, mask, True)
    masked, original = vae.seen
    cropped = pixels[:, 2:18, 1:17]               # 20x19 → 16x16, offsets (20 % 8) // 2 = 2, (19 % 8) // 2 = 1
    assert torch.equal(original, cropped)
    expected = cropped.clone()
    expected[:, :, :8] = 0.5                      # mask columns 1..8 of the crop = image columns 0..8 → 1
    assert torch.equal(masked, expected)
    assert latent["noise_mask"].shape == (1, 1, 16, 16)
    assert torch.equal(latent["noise_mask"], mask[2:18, 1:17].view(1, 1, 16, 16))
    for conditioning in (pos, neg):
        options = conditioning[0][1]
        assert torch.equal(options["concat_latent_image"], vae.encode(expected))
        assert torch.equal(options["concat_mask"], latent["noise_mask"])
    _, _, plain = InpaintModelConditioning().run([cond(1.0)], [cond(2.0)], vae, pixels, mask, False)
    assert "noise_mask" not in plain


def test_inpaint_model_conditioning_resizes_a_mask_of_another_size_bilinearly():
    pixels = torch.full((1, 16, 16, 3), 0.2)
    small = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # left half, at 2x2
    _, _, latent = InpaintModelConditioning().run([cond(1.0)], [cond(1.0)], RecordingVAE(), pixels, small, True)
    expected = torch.nn.functional.interpolate(small.view(1, 1, 2, 2), size=(16, 16), mode="bilinear")
    assert torch.equal(latent["noise_mask"], expected)


def test_instruct_pix2pix_conditioning_returns_an_empty_latent_of_the_image_size():
    pixels = torch.rand(2, 16, 24, 3, generator=torch.Generator().manual_seed(2))
    vae = RecordingVAE()
    pos, neg, latent = InstructPixToPixConditioning().run([cond(1.0)], [cond(2.0)], vae, pixels)
    assert torch.equal(latent["samples"], torch.zeros(2, 4, 2, 3))
    assert torch.equal(pos[0][1]["concat_latent_image"], vae.encode(pixels))
    assert neg[0][1]["concat_latent_image"] is pos[0][1]["concat_latent_image"]


def test_unet_concat_inputs_follow_comfyui_for_inpainting_and_pix2pix_models():
    samples = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    assert concat_inputs(4, samples, None) is None
    # 9 channels, nothing given: repaint everywhere over the "black image" latent
    blank = concat_inputs(9, samples, None)
    assert torch.equal(blank[:, 0], torch.ones(2, 4, 4))
    assert torch.equal(blank[:, 1:, 0, 0], torch.tensor([BLANK_LATENT] * 2))
    # a noise mask at pixel size: resized bilinearly, rounded; the sampled latent (scaled) is the image
    noise_mask = torch.zeros(1, 1, 32, 32)
    noise_mask[..., :16] = 1.0
    masked = concat_inputs(9, samples, noise_mask)
    assert torch.equal(masked[:, 0, :, :2], torch.ones(2, 4, 2)) and torch.equal(masked[:, 0, :, 2:], torch.zeros(2, 4, 2))
    torch.testing.assert_close(masked[:, 1:], process_latent_in(samples))
    # InpaintModelConditioning's options win over the latent and its noise mask
    image = torch.full((1, 4, 4, 4), 2.0)
    options = {"concat_latent_image": image, "concat_mask": torch.ones(1, 1, 32, 32)}
    given = concat_inputs(9, samples, noise_mask, [[None, options]])
    assert torch.equal(given[:, 0], torch.ones(2, 4, 4))
    torch.testing.assert_close(given[:, 1:], process_latent_in(image).expand(2, -1, -1, -1))
    # 8 channels (InstructPix2Pix): the unscaled source latent, or zeros
    assert torch.equal(concat_inputs(8, samples, None), torch.zeros_like(samples))
    assert torch.equal(concat_inputs(8, samples, None, [[None, {"concat_latent_image": image}]]), image.expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="only 4 .*8 .*9"):
        concat_inputs(6, samples, None)
