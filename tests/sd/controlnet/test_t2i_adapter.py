"""T2I-Adapters (full and light, diffusers' and the original layout) and diff ControlNets: tiny stand-ins
generated here into temporary folders and loaded through the ordinary loaders. References: diffusers'
FullAdapter / LightAdapter for the features and UNet2DConditionModel(down_intrablock_additional_residuals)
for how the UNet takes them; a full ControlNet for what a diff ControlNet plus its base model must equal."""
from __future__ import annotations

import pytest
import torch
from diffusers import T2IAdapter as DiffusersT2IAdapter
from safetensors.torch import save_file

from nodes.sd.controlnet import ORIGINAL_PREFIX, ControlNet, UnsupportedControlNetError, load_controlnet, load_diff_controlnet
from nodes.sd.lora import apply_lora
from nodes.sd.patcher import ModelPatcher
from nodes.sd.t2i_adapter import T2IAdapter
from nodes.sd.tiny import _init_weights
from nodes.sd.tiny_extras import make_tiny_controlnet, tiny_controlnet_model, tiny_lora_state_dict
from tests.sd.test_unet import reference_unet

ATOL = 1e-5
SIGMAS = torch.tensor([2.0, 2.0])


def diffusers_adapter(kind="full_adapter", channels=(32, 64), blocks=2, in_channels=3, seed=0):
    adapter = DiffusersT2IAdapter(in_channels=in_channels, channels=list(channels), num_res_blocks=blocks,
                                  downscale_factor=8, adapter_type=kind).eval()
    _init_weights(adapter, seed)
    return adapter


def tencent_layout(adapter: DiffusersT2IAdapter) -> dict[str, torch.Tensor]:
    """diffusers' full adapter written with TencentARC's key names (body blocks numbered over all levels)."""
    out = {}
    for key, value in adapter.state_dict().items():
        name = key.removeprefix("adapter.")
        parts = name.split(".")
        if parts[0] == "body" and parts[2] == "resnets":
            name = ".".join(["body", str(int(parts[1]) * 2 + int(parts[3]))] + parts[4:])
        elif parts[0] == "body" and parts[2] == "in_conv":
            name = ".".join(["body", str(int(parts[1]) * 2)] + parts[2:])
        out[name] = value.contiguous()
    return out


def save(sd, path):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def hint(batch=1, size=64, seed=1):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def adapter_features(net: T2IAdapter, image, latent=8, rows=1, chunks=1):
    net = net.copy().set_cond_hint(image, 1.0)
    control = net.get_control(torch.zeros(rows, 4, latent, latent), torch.zeros(rows), None, SIGMAS[:rows], chunks)
    return [f for f in control["input"][::-1] if f is not None]


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_full_adapter_features_equal_diffusers(tmp_path, layout):
    reference = diffusers_adapter()
    sd = reference.state_dict() if layout == "diffusers" else tencent_layout(reference)
    net = load_controlnet(save(sd, tmp_path / "t2iadapter_tiny.safetensors"), device="cpu")
    assert isinstance(net, T2IAdapter) and net.hint_channels == 3
    image = hint()
    with torch.no_grad():
        expected = reference(image)
    ours = adapter_features(net, image)
    assert [f.shape for f in ours] == [e.shape for e in expected] == [(1, 32, 8, 8), (1, 64, 4, 4)]
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_light_adapter_features_equal_diffusers(tmp_path):
    reference = diffusers_adapter("light_adapter", channels=(32, 64), blocks=3)
    net = load_controlnet(save(reference.state_dict(), tmp_path / "t2i_light.safetensors"), device="cpu")
    image = hint(size=128)
    with torch.no_grad():
        expected = reference(image)
    ours = adapter_features(net, image, latent=16)
    assert len(ours) == len(expected) == 3
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_one_channel_adapter_takes_the_mean_of_the_rgb_hint(tmp_path):
    reference = diffusers_adapter(in_channels=1)
    net = load_controlnet(save(reference.state_dict(), tmp_path / "sketch.safetensors"), device="cpu")
    image = hint()
    with torch.no_grad():
        expected = reference(image.mean(1, keepdim=True))
    for a, b in zip(adapter_features(net, image), expected):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_adapter_features_join_the_unet_where_diffusers_adds_them(tiny, tmp_path):
    reference = diffusers_adapter(seed=4)
    net = load_controlnet(save(reference.state_dict(), tmp_path / "t2i.safetensors"), device="cpu")
    net = net.copy().set_cond_hint(hint(), 0.7)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([100.0, 800.0]), torch.randn(2, 77, 32)
    control = net.get_control(x, t, ctx, SIGMAS, 2)
    assert [f is None for f in control["input"]] == [False, True, True, False, True, True]  # blocks 5 and 2
    ref_unet = reference_unet(tiny.unet)
    with torch.no_grad():
        features = [0.7 * f.repeat(2, 1, 1, 1) for f in reference(hint())]
        expected = ref_unet(x, t, encoder_hidden_states=ctx, down_intrablock_additional_residuals=features).sample
        actual = tiny.unet(x, t, ctx, control=control)
        plain = tiny.unet(x, t, ctx)
    assert (expected - plain).abs().max() > 1e-2  # the adapter changes the prediction
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_adapter_window_strength_and_chaining_with_a_controlnet(tmp_path, tiny_controlnet):
    net = load_controlnet(save(diffusers_adapter().state_dict(), tmp_path / "t2i.safetensors"), device="cpu")
    adapter = net.copy().set_cond_hint(hint(), 0.5, (0.5, 1.0))
    adapter.set_previous_controlnet(tiny_controlnet.copy().set_cond_hint(hint(), 1.0))

    class Sampling:
        def percent_to_sigma(self, p):
            return {0.0: 1e9, 0.5: 1.0, 1.0: 0.0}[p]

    adapter.pre_run(Sampling())
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([5.0, 5.0]), torch.randn(2, 77, 32)
    early = adapter.get_control(x, t, ctx, torch.tensor([3.0, 3.0]), 2)   # sigma 3 > 1: adapter skipped
    assert "input" not in early and len(early["output"]) == 6
    late = adapter.get_control(x, t, ctx, torch.tensor([0.5, 0.5]), 2)
    assert len(late["output"]) == 6 and len(late["middle"]) == 1
    full = [f for f in adapter_features(net, hint(), rows=2, chunks=2)]
    torch.testing.assert_close(late["input"][-3], 0.5 * full[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("sd, message", [
    ({"conv_in.weight": torch.zeros(32, 256, 3, 3), "body.0.block1.weight": torch.zeros(32, 32, 3, 3),
      "body.0.block2.weight": torch.zeros(32, 32, 1, 1)}, "SDXL T2I-Adapter"),
    ({"style_embedding": torch.zeros(1, 8, 32), "proj": torch.zeros(32, 16)}, "Load Style Model"),
])
def test_other_adapter_kinds_are_refused_by_name(tmp_path, sd, message):
    with pytest.raises(UnsupportedControlNetError, match=message):
        load_controlnet(save(sd, tmp_path / "other.safetensors"), device="cpu")


# -- diff ControlNets -----------------------------------------------------------------------------------

def make_diff_controlnet(path, base_unet, seed=3):
    """A diff file: control_model.X − unet X where the UNet has X, the net's own tensors otherwise."""
    full = tiny_controlnet_model(seed=seed).state_dict()
    base = base_unet.state_dict()
    sd = {ORIGINAL_PREFIX + k: (v - base[k]) if k in base else v for k, v in full.items()}
    sd["difference"] = torch.tensor([])
    save(sd, path)
    return full


def test_diff_controlnet_plus_its_model_equals_the_full_controlnet(tiny, tmp_path):
    model = ModelPatcher(tiny.unet, "cpu", "cpu")
    full = make_diff_controlnet(tmp_path / "diff_tiny.safetensors", tiny.unet)
    net = load_diff_controlnet(tmp_path / "diff_tiny.safetensors", model, device="cpu")
    loaded = net.model.state_dict()
    shared = [k for k in full if k in tiny.unet.state_dict()]
    assert len(shared) > 100 and set(loaded) == set(full)
    for key, value in full.items():
        torch.testing.assert_close(loaded[key], value, atol=1e-6, rtol=0)

    with pytest.raises(UnsupportedControlNetError, match="DiffControlNetLoader"):
        load_controlnet(tmp_path / "diff_tiny.safetensors", device="cpu")
    # a full file through the diff loader loads as usual
    plain = load_diff_controlnet(make_tiny_controlnet(tmp_path / "full.safetensors"), model, device="cpu")
    assert isinstance(plain, ControlNet) and plain.model is not net.model


def test_diff_controlnet_is_built_on_the_models_patched_weights(tiny, tmp_path):
    base = ModelPatcher(tiny.unet, "cpu", "cpu")
    lora_model, _, _ = apply_lora(base, None, tiny_lora_state_dict(seed=2), 1.0, 0.0, name="tiny-lora")
    make_diff_controlnet(tmp_path / "diff.safetensors", tiny.unet)
    plain = load_diff_controlnet(tmp_path / "diff.safetensors", base, device="cpu").model.state_dict()
    patched = load_diff_controlnet(tmp_path / "diff.safetensors", lora_model, device="cpu").model.state_dict()
    key = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    with lora_model.applied() as unet:
        with_lora = unet.state_dict()[key].clone()
    with base.applied() as unet:  # the originals back in the module
        original = unet.state_dict()[key].clone()
    assert (with_lora - original).abs().max() > 1e-3
    torch.testing.assert_close(patched[key] - plain[key], with_lora - original, atol=1e-5, rtol=0)
