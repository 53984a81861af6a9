"""Reading a .safetensors file's tensors (nodes/sd/state_dict.py), as views of a private mapping (the
default) or with pread, several at once (`--no-mmap`): the same tensors as safetensors' own loader, in
the order asked; a mapped tensor is a view of the file that a write never reaches, and keeps its values
when the file is replaced; without the mapping a file cut short after it was opened is a ModelLoadError
naming it (never a crash)."""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.sd import state_dict
from nodes.sd.errors import ModelLoadError
from nodes.sd.state_dict import open_tensor_source


@pytest.fixture(autouse=True)
def lean_and_mapped(monkeypatch):
    """The defaults, whatever weight mode the suite runs in; tests that read say so."""
    monkeypatch.setenv("NODEGRAPH_WEIGHTS", "lean")
    monkeypatch.delenv(state_dict.MMAP_ENV, raising=False)


@pytest.fixture
def weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {f"layer{i}.weight": torch.randn(37, 5 + i, generator=g).to(torch.float16) for i in range(40)}
    tensors.update({"scalar": torch.tensor(3.5), "ids": torch.arange(77)[None], "empty": torch.zeros(0, 4),
                    "bf16": torch.randn(3, 3, generator=g).to(torch.bfloat16)})
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("mapped, ahead", [("1", 0), ("0", 1), ("0", 10**9)])  # read: one at a time, all at once
def test_read_many_gives_what_safetensors_reads_in_order(weights, monkeypatch, mapped, ahead):
    monkeypatch.setenv(state_dict.MMAP_ENV, mapped)
    monkeypatch.setattr(state_dict, "READ_AHEAD_BYTES", ahead)
    expected = load_file(str(weights))
    source = open_tensor_source(weights)
    keys = sorted(expected, reverse=True)
    got = list(source.take_many(keys))
    assert len(got) == len(keys)
    for key, tensor in zip(keys, got):
        assert tensor.dtype == expected[key].dtype and tensor.shape == expected[key].shape, key
        assert torch.equal(tensor, expected[key]), key
    prefixed = source.with_prefix("layer1")
    assert [t.shape for t in prefixed.take_many(["0.weight", ".weight"])] == [(37, 15), (37, 6)]


def test_a_file_cut_short_after_opening_names_the_file_when_reading(weights, monkeypatch):
    monkeypatch.setenv(state_dict.MMAP_ENV, "0")
    source = open_tensor_source(weights)
    os.truncate(weights, os.path.getsize(weights) // 2)
    with pytest.raises(ModelLoadError, match="w.safetensors"):
        list(source.take_many(list(source.shapes)))


def test_mapped_tensors_view_the_file_and_each_has_its_own_storage(weights):
    source = open_tensor_source(weights)
    keys = [k for k in source.shapes if k.startswith("layer")]
    tensors = list(source.take_many(keys))
    storages = {t.untyped_storage().data_ptr() for t in tensors}
    assert len(storages) == len(keys)  # memory accounting counts each weight's bytes, not the file's
    assert sum(t.untyped_storage().nbytes() for t in tensors) == sum(t.numel() * 2 for t in tensors)
    # consecutive in the file, so consecutive in the mapping: views, not copies
    by_address = sorted(tensors, key=lambda t: t.data_ptr())
    for a, b in zip(by_address, by_address[1:]):
        assert b.data_ptr() == a.data_ptr() + a.numel() * a.element_size()


def test_a_write_to_a_mapped_tensor_never_reaches_the_file(weights):
    expected = load_file(str(weights))["layer3.weight"]
    tensor = open_tensor_source(weights).take("layer3.weight")
    tensor.add_(1)  # what an in-place LoRA patch would do
    assert torch.equal(load_file(str(weights))["layer3.weight"], expected)
    assert torch.equal(tensor, expected + 1)


def test_a_file_replaced_after_loading_leaves_the_loaded_tensors_as_they_were(weights):
    expected = load_file(str(weights))["layer5.weight"]
    tensor = open_tensor_source(weights).take("layer5.weight")
    replacement = weights.with_name("new.safetensors")
    save_file({"layer5.weight": torch.zeros(37, 10, dtype=torch.float16)}, str(replacement))
    os.replace(replacement, weights)  # how downloaders and our own model saving replace a file
    assert torch.equal(tensor, expected)


def test_a_tensor_at_an_offset_its_dtype_cannot_view_is_read_instead(tmp_path):
    # a hand-written file: a uint8 tensor of 3 bytes puts the float32 one at byte 3 of the data
    floats = torch.tensor([1.5, -2.0, 3.25])
    header = {"a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
              "b": {"dtype": "F32", "shape": [3], "data_offsets": [3, 15]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "odd.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes([7, 8, 9]) + floats.numpy().tobytes())
    source = open_tensor_source(path)
    assert torch.equal(source.take("b"), floats)
    assert source.take("a").tolist() == [7, 8, 9]


def test_mapped_only_in_the_lean_weight_mode_and_unless_turned_off(monkeypatch):
    monkeypatch.setenv("NODEGRAPH_WEIGHTS", "lean")
    monkeypatch.delenv(state_dict.MMAP_ENV, raising=False)
    assert state_dict.weights_mapped()
    monkeypatch.setenv(state_dict.MMAP_ENV, "0")
    assert not state_dict.weights_mapped()
    monkeypatch.setenv(state_dict.MMAP_ENV, "1")
    monkeypatch.setenv("NODEGRAPH_WEIGHTS", "fp32")  # every weight is cast (copied) anyway
    assert not state_dict.weights_mapped()
