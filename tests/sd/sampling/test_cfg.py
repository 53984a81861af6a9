"""CFG and conditioning: batching, cfg = 1 shortcut, weighted averages of area/mask/strength conds,
start/end windows, the ControlNet hook and inpainting. The 'UNet' is a small analytic function, so every
expectation is computed by hand here. Tolerance: torch.testing.assert_close defaults (float32)."""

import pytest
import torch

from nodes.sd.sampling.cfg import CFGDenoiser, ControlProvider, InpaintDenoiser
from nodes.sd.sampling.model_sampling import ModelSamplingEPS

MS = ModelSamplingEPS()
B, H, W = 2, 32, 32


class ToyUNet:
    """eps = 0.1 * x_in + mean(context) + t / 1e4; records every call (batch size, context length, control)."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_in, timesteps, context, control=None):
        self.calls.append((x_in.shape[0], context.shape[1], control))
        bias = context.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        extra = 0.0 if control is None else control["middle"][0]
        return 0.1 * x_in + bias + timesteps.view(-1, 1, 1, 1) / 1e4 + extra


def text(value, chunks=1):
    return torch.full((1, 77 * chunks, 8), float(value))


def expected_x0(x, sigma, ctx_mean):
    """What the toy UNet yields for one cond over the whole latent: x0 = x - eps * sigma."""
    s = sigma.view(-1, 1, 1, 1)
    x_in = x / torch.sqrt(s ** 2 + 1)
    t = MS.timestep(sigma).view(-1, 1, 1, 1)
    return x - (0.1 * x_in + ctx_mean + t / 1e4) * s


@pytest.fixture
def x():
    return torch.randn(B, 4, H, W, generator=torch.Generator().manual_seed(0))


SIGMA = torch.tensor([3.0, 3.0])


def test_cfg_one_skips_the_uncond_pass(x):
    unet = ToyUNet()
    d = CFGDenoiser(unet, MS, [[text(1.0), {}]], [[text(-1.0), {}]], cfg=1.0)
    out = d(x, SIGMA)
    assert len(unet.calls) == 1 and unet.calls[0][0] == B
    torch.testing.assert_close(out, expected_x0(x, SIGMA, 1.0))


def test_cfg_batches_cond_and_uncond_in_one_forward(x):
    unet = ToyUNet()
    d = CFGDenoiser(unet, MS, [[text(1.0), {}]], [[text(-1.0), {}]], cfg=7.5)
    out = d(x, SIGMA)
    assert [c[0] for c in unet.calls] == [2 * B]
    cond, uncond = expected_x0(x, SIGMA, 1.0), expected_x0(x, SIGMA, -1.0)
    torch.testing.assert_close(out, uncond + (cond - uncond) * 7.5)


def test_different_token_lengths_batch_by_repetition_up_to_ratio_4(x):
    unet = ToyUNet()
    d = CFGDenoiser(unet, MS, [[text(1.0, chunks=2), {}]], [[text(-1.0), {}]], cfg=3.0)
    out = d(x, SIGMA)
    assert unet.calls == [(2 * B, 154, None)]                 # one forward, 77 repeated to 154
    cond, uncond = expected_x0(x, SIGMA, 1.0), expected_x0(x, SIGMA, -1.0)
    torch.testing.assert_close(out, uncond + (cond - uncond) * 3.0)

    unet = ToyUNet()
    CFGDenoiser(unet, MS, [[text(1.0, chunks=5), {}]], [[text(-1.0), {}]], cfg=3.0)(x, SIGMA)
    assert sorted(c[1] for c in unet.calls) == [77, 385]      # ratio 5 > 4: separate forwards


def test_multiple_conds_are_a_weighted_average_by_strength(x):
    unet = ToyUNet()
    pos = [[text(1.0), {}], [text(4.0), {"strength": 3.0}]]
    out = CFGDenoiser(unet, MS, pos, [[text(0.0), {}]], cfg=1.0)(x, SIGMA)
    expected = (expected_x0(x, SIGMA, 1.0) * 1 + expected_x0(x, SIGMA, 4.0) * 3) / 4
    torch.testing.assert_close(out, expected)


def feather_weights(size, offset, full, ramp_max=8):
    """Per-pixel weight along one axis of an area cond, derived from the rule: a linear ramp of
    min(8, size // 4) pixels on each side that does not touch the latent border."""
    w = [1.0] * size
    ramp = min(ramp_max, size // 4)
    for t in range(ramp):
        if offset != 0:
            w[t] *= (t + 1) / ramp
    for t in range(ramp):
        if size + offset < full:
            w[size - 1 - t] *= (t + 1) / ramp
    return torch.tensor(w)


@pytest.mark.parametrize("size, area", [
    (32, (16, 12, 8, 0)),    # h, w, y, x in latent pixels: touches the left border only; ramps of 4 / 3 px
    (64, (40, 48, 8, 16)),   # large enough for the full 8 px ramp on all four sides
])
def test_area_cond_is_feathered_and_blended(size, area):
    H = W = size
    x = torch.randn(B, 4, H, W, generator=torch.Generator().manual_seed(1))
    unet = ToyUNet()
    pos = [[text(1.0), {}], [text(5.0), {"area": area, "strength": 2.0}]]
    out = CFGDenoiser(unet, MS, pos, [[text(0.0), {}]], cfg=1.0)(x, SIGMA)
    h, w, y, x0 = area
    weight = 2.0 * feather_weights(h, y, H).view(-1, 1) * feather_weights(w, x0, W).view(1, -1)
    full = expected_x0(x, SIGMA, 1.0)
    crop = x[:, :, y:y + h, x0:x0 + w]
    area_pred = expected_x0(crop, SIGMA, 5.0)   # the UNet ran on the crop only
    expected = full.clone()
    expected[:, :, y:y + h, x0:x0 + w] = (full[:, :, y:y + h, x0:x0 + w] + area_pred * weight) / (1 + weight)
    torch.testing.assert_close(out, expected)
    if size == 32:
        assert weight[0, 5] == pytest.approx(2.0 * 0.25)   # top edge (y = 8) ramps over 4 px: first row 1/4
        assert weight[8, 0] == pytest.approx(2.0)           # x = 0 is the border: no ramp
    else:
        assert weight[0, 20] == pytest.approx(2.0 / 8)      # 8 px ramp


def test_area_cond_gets_a_same_area_uncond_partner(x):
    """ComfyUI adds, for an area cond, an uncond restricted to the same area (text of the smallest
    enclosing uncond), so guidance inside the area is computed against a matching uncond."""
    unet = ToyUNet()
    area = (16, 16, 8, 8)
    pos = [[text(1.0), {}], [text(5.0), {"area": area}]]
    d = CFGDenoiser(unet, MS, pos, [[text(-1.0), {}]], cfg=2.0)
    out = d(x, SIGMA)
    assert len(d.prepared[1]) == 2 and d.prepared[1][1]["area"] == area
    w = feather_weights(16, 8, H).view(-1, 1) * feather_weights(16, 8, W).view(1, -1)
    crop = x[:, :, 8:24, 8:24]

    def blend(full_mean, area_mean):
        full = expected_x0(x, SIGMA, full_mean)
        full[:, :, 8:24, 8:24] = (full[:, :, 8:24, 8:24] + expected_x0(crop, SIGMA, area_mean) * w) / (1 + w)
        return full
    cond, uncond = blend(1.0, 5.0), blend(-1.0, -1.0)
    torch.testing.assert_close(out, uncond + (cond - uncond) * 2.0)


def test_mask_and_mask_strength(x):
    unet = ToyUNet()
    mask = torch.zeros(64, 64)
    mask[:, 32:] = 1.0        # right half (pixel-space mask, resized to the latent)
    pos = [[text(1.0), {}], [text(3.0), {"mask": mask, "mask_strength": 0.5, "strength": 2.0}]]
    out = CFGDenoiser(unet, MS, pos, [[text(0.0), {}]], cfg=1.0)(x, SIGMA)
    m = torch.nn.functional.interpolate(mask.view(1, 1, 64, 64), size=(H, W), mode="bilinear").view(H, W)
    weight = m * 0.5 * 2.0
    expected = (expected_x0(x, SIGMA, 1.0) + expected_x0(x, SIGMA, 3.0) * weight) / (1 + weight)
    torch.testing.assert_close(out, expected)


def test_start_end_percent_window(x):
    pos = [[text(1.0), {}], [text(9.0), {"start_percent": 0.5, "end_percent": 1.0}]]
    sigma_start = MS.percent_to_sigma(0.5)        # ~ 1.2: the cond joins once sigma drops below it
    high, low = torch.tensor([10.0, 10.0]), torch.tensor([0.5, 0.5])
    d = CFGDenoiser(ToyUNet(), MS, pos, [[text(0.0), {}]], cfg=1.0)
    assert low[0] < sigma_start < high[0]
    torch.testing.assert_close(d(x, high), expected_x0(x, high, 1.0))
    torch.testing.assert_close(d(x, low), (expected_x0(x, low, 1.0) + expected_x0(x, low, 9.0)) / 2)


class FakeControl:
    def __init__(self, value):
        self.value, self.calls = value, []

    def get_control(self, x_in, timesteps, context, sigma, batch_size):
        self.calls.append((x_in.shape[0], batch_size))
        return {"middle": [torch.full((x_in.shape[0], 1, 1, 1), self.value)], "output": []}


def test_control_provider_hook(x):
    control = FakeControl(0.5)
    assert isinstance(control, ControlProvider)
    unet = ToyUNet()
    d = CFGDenoiser(unet, MS, [[text(1.0), {"control": control}]], [[text(-1.0), {}]], cfg=2.0)
    out = d(x, SIGMA)
    # a cond with a control and one without cannot share a forward; the uncond gets control=None
    assert sorted((c[0], c[2] is None) for c in unet.calls) == [(B, False), (B, True)]
    assert control.calls == [(B, 1)]
    cond, uncond = expected_x0(x, SIGMA, 1.5), expected_x0(x, SIGMA, -1.0)
    torch.testing.assert_close(out, uncond + (cond - uncond) * 2.0)


def test_control_apply_to_uncond_lends_the_control(x):
    control = FakeControl(0.25)
    unet = ToyUNet()
    pos = [[text(1.0), {"control": control, "control_apply_to_uncond": True}]]
    d = CFGDenoiser(unet, MS, pos, [[text(-1.0), {}]], cfg=2.0)
    out = d(x, SIGMA)
    assert [c[0] for c in unet.calls] == [2 * B] and control.calls == [(2 * B, 2)]
    cond, uncond = expected_x0(x, SIGMA, 1.25), expected_x0(x, SIGMA, -0.75)
    torch.testing.assert_close(out, uncond + (cond - uncond) * 2.0)


def test_inpaint_denoiser_keeps_unmasked_region(x):
    latent, noise = torch.randn_like(x), torch.randn_like(x)
    mask = torch.zeros_like(x)
    mask[..., :16] = 1.0   # repaint the left half
    seen = {}

    def inner(x_in, sigma):
        seen["x"] = x_in
        return x_in * 0.5

    out = InpaintDenoiser(inner, MS, latent, noise, mask)(x, SIGMA)
    s = SIGMA.view(-1, 1, 1, 1)
    expected_in = x * mask + (latent + noise * s) * (1 - mask)
    torch.testing.assert_close(seen["x"], expected_in)
    torch.testing.assert_close(out, expected_in * 0.5 * mask + latent * (1 - mask))


def test_dtype_cast_for_half_precision_models(x):
    seen = {}

    def unet(x_in, timesteps, context, control=None):
        seen["dtypes"] = (x_in.dtype, context.dtype, timesteps.dtype)
        return torch.zeros_like(x_in)

    out = CFGDenoiser(unet, MS, [[text(1.0), {}]], [], cfg=1.0, dtype=torch.bfloat16)(x, SIGMA)
    assert seen["dtypes"] == (torch.bfloat16, torch.bfloat16, torch.float32)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x)
