"""Reading a .safetensors file's tensors with pread, several at once (nodes/sd/state_dict.py): the same
tensors as safetensors' own loader, in the order asked, and a file cut short after it was opened is a
ModelLoadError naming it (never a crash)."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from nodes.sd import state_dict
from nodes.sd.errors import ModelLoadError
from nodes.sd.state_dict import open_tensor_source


@pytest.fixture
def weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {f"layer{i}.weight": torch.randn(37, 5 + i, generator=g).to(torch.float16) for i in range(40)}
    tensors.update({"scalar": torch.tensor(3.5), "ids": torch.arange(77)[None], "empty": torch.zeros(0, 4),
                    "bf16": torch.randn(3, 3, generator=g).to(torch.bfloat16)})
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("ahead", [1, 10**9])  # one tensor at a time, and everything at once
def test_read_many_gives_what_safetensors_reads_in_order(weights, monkeypatch, ahead):
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


def test_a_file_cut_short_after_opening_names_the_file(weights):
    source = open_tensor_source(weights)
    os.truncate(weights, os.path.getsize(weights) // 2)
    with pytest.raises(ModelLoadError, match="w.safetensors"):
        list(source.take_many(list(source.shapes)))
