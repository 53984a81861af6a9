"""The two weight modes: `lean` keeps an fp16 file's weights in fp16 and computes in fp32 layer by layer,
`fp32` casts every weight at load. Same outputs, half the resident bytes; LoRA patches in fp32 either way."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from nodes.sd import device
from nodes.sd.checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, load_checkpoint
from nodes.sd.lora import LoRA
from nodes.sd.patcher import ModelPatcher
from nodes.sd.tiny import make_tiny_checkpoint
from nodes.sd.weight_casting import CastConv2d, compute_dtype, enable_casting, weight_bytes

pytestmark = pytest.mark.usefixtures("seeded")


@pytest.fixture(scope="module")
def fp16_checkpoint(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("fp16") / "tiny-fp16.safetensors", seed=3,
                                dtype=torch.float16)


def load(path, mode, monkeypatch):
    monkeypatch.setenv(device.WEIGHTS_ENV, mode)
    return load_checkpoint(path, device="cpu", use_cache=False)


def file_bytes(path, prefix: str) -> int:
    """Bytes the file stores for the tensors under `prefix` (read with safetensors itself)."""
    with safe_open(str(path), framework="pt") as f:
        tensors = [f.get_tensor(k) for k in f.keys() if k.startswith(prefix)]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_lean_mode_keeps_exactly_the_files_bytes_resident(fp16_checkpoint, monkeypatch):
    lean = load(fp16_checkpoint, "lean", monkeypatch)
    assert weight_bytes(lean.unet) == file_bytes(fp16_checkpoint, UNET_PREFIX)
    assert weight_bytes(lean.vae) == file_bytes(fp16_checkpoint, VAE_PREFIX)
    assert {p.dtype for p in lean.unet.parameters()} == {torch.float16}
    assert lean.unet.dtype == lean.vae.dtype == torch.float32  # what they compute in

    fp32 = load(fp16_checkpoint, "fp32", monkeypatch)
    assert weight_bytes(fp32.unet) == 2 * file_bytes(fp16_checkpoint, UNET_PREFIX)
    assert {p.dtype for p in fp32.unet.parameters()} == {torch.float32}

    # in every mode the UNet's and VAE's convs are the casting layer: the door to the Winograd convs
    for model in (lean.unet, lean.vae, fp32.unet, fp32.vae):
        assert not any(type(m) is torch.nn.Conv2d for m in model.modules())
        assert any(isinstance(m, CastConv2d) for m in model.modules())


def test_an_fp32_file_is_fp32_in_both_modes(tiny_checkpoint, monkeypatch):
    lean = load(tiny_checkpoint, "lean", monkeypatch)
    assert {p.dtype for p in lean.unet.parameters()} == {torch.float32}
    assert weight_bytes(lean.unet) == file_bytes(tiny_checkpoint, UNET_PREFIX)  # nothing narrowed, nothing widened


def test_lean_and_fp32_give_bit_identical_outputs(fp16_checkpoint, monkeypatch):
    lean, fp32 = load(fp16_checkpoint, "lean", monkeypatch), load(fp16_checkpoint, "fp32", monkeypatch)
    x, context = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    t = torch.tensor([999.0, 10.0])
    with torch.inference_mode():
        assert torch.equal(lean.unet(x, t, context), fp32.unet(x, t, context))
        assert torch.equal(lean.vae.decode(x), fp32.vae.decode(x))
        pixels = torch.rand(1, 3, 64, 64) * 2 - 1
        assert torch.equal(lean.vae.encode(pixels), fp32.vae.encode(pixels))


def test_clip_weights_come_out_of_the_file_in_its_dtype(fp16_checkpoint, monkeypatch):
    lean = load(fp16_checkpoint, "lean", monkeypatch)
    assert {v.dtype for v in lean.clip_state_dict.values() if v.is_floating_point()} == {torch.float16}
    assert sum(v.numel() * v.element_size() for v in lean.clip_state_dict.values()) \
        == file_bytes(fp16_checkpoint, CLIP_PREFIX)


def _lora_on_every_attention_projection(module, rank=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    patches = {}
    for name, p in module.named_parameters():
        if name.endswith(("to_q.weight", "to_v.weight")):
            out_f, in_f = p.shape
            patches[name] = LoRA(torch.randn(out_f, rank, generator=g), torch.randn(rank, in_f, generator=g),
                                 alpha=float(rank))
    return patches


def test_lora_patches_are_computed_and_kept_in_fp32_in_lean_mode(fp16_checkpoint, monkeypatch):
    lean, fp32 = load(fp16_checkpoint, "lean", monkeypatch), load(fp16_checkpoint, "fp32", monkeypatch)
    outputs = []
    for ck in (lean, fp32):
        patcher = ModelPatcher(ck.unet)
        keys = patcher.add_patches(_lora_on_every_attention_projection(ck.unet), strength=0.7)
        assert keys
        before = {k: v.clone() for k, v in ck.unet.state_dict().items()}
        with torch.inference_mode(), patcher.applied() as unet:
            patched = dict(unet.named_parameters())
            assert {patched[k].dtype for k in keys} == {torch.float32}  # not rounded back to fp16
            outputs.append(unet(torch.ones(1, 4, 8, 8), torch.tensor([500.0]), torch.ones(1, 77, 32)))
        patcher.unpatch_model()
        after = ck.unet.state_dict()
        assert all(torch.equal(after[k], before[k]) and after[k].dtype == before[k].dtype for k in before)
    assert torch.equal(outputs[0], outputs[1])


def test_model_dtype_is_the_compute_dtype(fp16_checkpoint, monkeypatch):
    lean = load(fp16_checkpoint, "lean", monkeypatch)
    assert ModelPatcher(lean.unet).model_dtype() == torch.float32


def test_casting_layers_match_plain_layers_and_refuse_loose_parameters():
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    reference = torch.nn.functional.conv2d(x, conv.weight.half().float(), conv.bias.half().float(), padding=1)
    wrapper = torch.nn.Sequential(conv).half()
    enable_casting(wrapper, torch.float32)
    assert isinstance(wrapper[0], CastConv2d) and compute_dtype(wrapper) == torch.float32
    assert torch.equal(wrapper(x), reference)

    class Loose(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3, dtype=torch.float16))

    with pytest.raises(TypeError, match="scale"):
        enable_casting(Loose(), torch.float32)


def test_an_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv(device.WEIGHTS_ENV, "tiny")
    with pytest.raises(ValueError, match="NODEGRAPH_WEIGHTS"):
        device.weight_mode()
