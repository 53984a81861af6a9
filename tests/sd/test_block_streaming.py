"""Low-VRAM block streaming (nodes/sd/block_streaming.py), on the CPU with a recording transfer: the same
output, one block's weights on the "device" at a time, the CPU tensors untouched afterwards."""
from __future__ import annotations

import pytest
import torch

from nodes.sd.block_streaming import stream_blocks, streaming_units
from nodes.sd.tiny import TINY_UNET_CONFIG
from nodes.sd.unet import UNetModel


class RecordingTransfer:
    """Copies a tensor (as a host-to-device copy would) and remembers which copies exist."""

    def __init__(self):
        self.copies: dict[int, torch.Tensor] = {}
        self.count = 0

    def __call__(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        copy = tensor.clone()
        self.copies[copy.data_ptr()] = copy
        self.count += 1
        return copy


def _unet():
    torch.manual_seed(0)
    unet = UNetModel(TINY_UNET_CONFIG).eval()
    for p in unet.parameters():  # the tiny model's zero-initialised outputs would hide a wrong weight
        p.data.normal_(0, 0.05)
    x, t, ctx = torch.randn(2, 4, 16, 16), torch.tensor([500.0, 500.0]), torch.randn(2, 5, 32)
    return unet, (x, t, ctx)


def _on_device(unet: torch.nn.Module, transfer: RecordingTransfer) -> set[int]:
    """ids of the parameters currently shadowed by a device copy."""
    return {id(p) for p in unet.parameters() if p.data.data_ptr() in transfer.copies}


def test_streamed_forward_equals_the_plain_forward_and_restores_every_tensor():
    unet, inputs = _unet()
    with torch.no_grad():
        expected = unet(*inputs)
    originals = {name: p.data_ptr() for name, p in unet.named_parameters()}
    transfer = RecordingTransfer()
    with torch.no_grad(), stream_blocks(unet, "cpu", transfer):
        got = unet(*inputs)
        again = unet(*inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    assert transfer.count >= 2 * len(originals)  # every weight copied once per call
    assert all(p.data_ptr() == originals[name] for name, p in unet.named_parameters())
    assert not unet._forward_pre_hooks and not any(u._forward_pre_hooks for u in streaming_units(unet))


def test_one_block_on_the_device_at_a_time():
    unet, inputs = _unet()
    units = streaming_units(unet)
    assert len(units) >= len(unet.input_blocks) + len(unet.output_blocks) + 2
    transfer = RecordingTransfer()
    seen = []

    def check(unit):
        def hook(_module, _args):
            resident = _on_device(unet, transfer)
            seen.append(resident == {id(p) for p in unit.parameters()})
        return hook

    with torch.no_grad(), stream_blocks(unet, "cpu", transfer):
        handles = [u.register_forward_pre_hook(check(u)) for u in units]  # after streaming's own pre-hook
        unet(*inputs)
        for h in handles:
            h.remove()
        assert _on_device(unet, transfer) == set()  # between calls nothing stays on the device
    assert len(seen) == len(units) and all(seen)


def test_a_failing_block_leaves_the_cpu_weights_in_place():
    unet, inputs = _unet()
    originals = {name: p.data_ptr() for name, p in unet.named_parameters()}
    with torch.no_grad(), stream_blocks(unet, "cpu", RecordingTransfer()):
        with pytest.raises(RuntimeError):
            unet(inputs[0][:, :3], inputs[1], inputs[2])  # wrong channel count: the first conv raises
    assert all(p.data_ptr() == originals[name] for name, p in unet.named_parameters())


@pytest.mark.parametrize("budget, lowvram, streams", [(10**12, "", False), (10**12, "1", True), (1000, "", True)])
def test_the_patcher_streams_a_model_that_does_not_fit_or_when_asked(monkeypatch, budget, lowvram, streams):
    """On a GPU the patcher hands a model to the memory manager when it fits the budget, and streams it
    block by block when it does not (or NODEGRAPH_LOWVRAM=1). Simulated on the CPU with a managed 'device'."""
    from nodes.sd import device_memory
    from nodes.sd.patcher import ModelPatcher

    manager = device_memory.DeviceMemory(torch.device("cpu"), budget)
    monkeypatch.setattr(device_memory, "manager_for", lambda device: manager)
    monkeypatch.setenv("NODEGRAPH_LOWVRAM", lowvram)
    unet, inputs = _unet()
    with torch.no_grad():
        expected = unet(*inputs)
    patcher = ModelPatcher(unet)
    with torch.no_grad(), patcher.applied("cpu") as module:
        hooked = any(u._forward_pre_hooks for u in streaming_units(module))
        torch.testing.assert_close(module(*inputs), expected, rtol=0, atol=0)
        assert hooked == streams
        assert (manager.resident_bytes() > 0) == (not streams)
    assert not any(u._forward_pre_hooks for u in streaming_units(unet))
