"""The device memory manager with a fake device budget: loads, LRU eviction, reloads counted, a model in
use never evicted; and its wiring into ModelPatcher.applied() (on the CPU, with a forced manager)."""
from __future__ import annotations

import os

import pytest
import torch

from nodegraph.cache import parse_size
from nodes.sd import device_memory
from nodes.sd.device_memory import DeviceMemory, InsufficientMemoryError
from nodes.sd.patcher import ModelPatcher

MB = 1024**2


class FakeModel:
    """Records where it is; `weight_bytes` is whatever the test says."""

    def __init__(self, name: str, size: int):
        self.name, self.size, self.where, self.moves = name, size, "cpu", []

    @property
    def key(self):
        return self.name

    def weight_bytes(self):
        return self.size

    def load_to(self, device):
        self.where = str(device)
        self.moves.append(("load", str(device)))

    def offload(self):
        self.where = "cpu"
        self.moves.append(("offload", "cpu"))


def test_load_a_then_b_evicts_a_and_reloading_a_is_counted():
    gpu = DeviceMemory("cuda:0", budget=1000 * MB)
    a, b = FakeModel("A", 600 * MB), FakeModel("B", 600 * MB)
    with gpu.use(a):
        pass
    assert a.where == "cuda:0" and gpu.resident_keys() == ["A"]
    with gpu.use(b):
        pass
    assert (a.where, b.where) == ("cpu", "cuda:0") and gpu.resident_keys() == ["B"]
    with gpu.use(a):
        pass
    assert (a.where, b.where) == ("cuda:0", "cpu")
    assert gpu.stats.per_model["A"] == {"loads": 2, "reloads": 1, "offloads": 1}
    assert gpu.stats.per_model["B"] == {"loads": 1, "reloads": 0, "offloads": 1}
    assert (gpu.stats.loads, gpu.stats.reloads, gpu.stats.offloads) == (3, 1, 2)


def test_a_resident_model_is_not_loaded_again():
    gpu = DeviceMemory("cuda:0", budget=1000 * MB)
    a = FakeModel("A", 300 * MB)
    for _ in range(3):
        with gpu.use(a):
            pass
    assert a.moves == [("load", "cuda:0")] and gpu.stats.loads == 1


def test_eviction_takes_the_least_recently_used_first():
    gpu = DeviceMemory("cuda:0", budget=1000 * MB)
    a, b, c, d = (FakeModel(n, 300 * MB) for n in "ABCD")
    for m in (a, b, c):
        with gpu.use(m):
            pass
    with gpu.use(a):  # A is now the most recently used; B the least
        pass
    with gpu.use(d):
        pass
    assert b.where == "cpu" and {a.where, c.where, d.where} == {"cuda:0"}
    assert gpu.resident_keys() == ["C", "A", "D"]


def test_a_model_in_use_is_never_evicted():
    gpu = DeviceMemory("cuda:0", budget=1000 * MB)
    a, b = FakeModel("A", 600 * MB), FakeModel("B", 600 * MB)
    with gpu.use(a):
        with pytest.raises(InsufficientMemoryError, match="budget is 0.98 GB"):
            with gpu.use(b):
                pass
        assert a.where == "cuda:0" and b.where == "cpu"
    with gpu.use(b):  # A is idle now: it makes room
        pass
    assert (a.where, b.where) == ("cpu", "cuda:0")


def test_working_memory_counts_against_the_budget():
    gpu = DeviceMemory("cuda:0", budget=1000 * MB)
    a, b = FakeModel("A", 400 * MB), FakeModel("B", 400 * MB)
    with gpu.use(a):
        pass
    with gpu.use(b, working=100 * MB):  # 400 + 400 + 100 fits
        pass
    assert a.where == "cuda:0"
    with gpu.use(b, working=300 * MB):  # 400 + 400 + 300 does not: A goes
        pass
    assert a.where == "cpu"
    with pytest.raises(InsufficientMemoryError, match="working memory"):
        with gpu.use(b, working=700 * MB):
            pass


def test_two_models_used_together_both_stay_until_the_block_ends():
    gpu = DeviceMemory("cuda:0", budget=1000 * MB)
    unet, controlnet, other = FakeModel("unet", 500 * MB), FakeModel("cn", 300 * MB), FakeModel("x", 300 * MB)
    with gpu.use(other):
        pass
    with gpu.use(unet, controlnet):
        assert unet.where == controlnet.where == "cuda:0" and other.where == "cpu"
        with pytest.raises(InsufficientMemoryError):
            with gpu.use(other):
                pass


def test_a_model_nobody_holds_leaves_the_books():
    gpu = DeviceMemory("cuda:0", budget=1000 * MB)
    a = FakeModel("A", 600 * MB)
    with gpu.use(a):
        pass
    del a
    assert gpu.resident_keys() == [] and gpu.resident_bytes() == 0


def test_budget_strings():
    assert parse_size("6GB") == 6 * 1024**3
    assert parse_size("512 MiB") == 512 * MB
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    assert parse_size("1000") == 1000


def test_memory_options_on_the_command_line_reach_the_model_code(monkeypatch):
    from nodegraph import cli
    from nodes.sd.block_streaming import lowvram_requested
    from nodes.sd.device import weight_mode
    from nodes.sd.state_dict import weights_mapped

    for env in cli.MEMORY_ENV.values():
        monkeypatch.setenv(env, "")  # recorded, so what the options set is undone after the test
    assert weights_mapped()  # the default
    args = cli._build_parser().parse_args(["run", "w.json", "--vram-budget", "3GB", "--lowvram", "--weights", "fp32",
                                           "--ram-budget", "6GB", "--no-mmap"])
    cli._export_memory_options(args)
    assert os.environ["NODEGRAPH_MMAP"] == "0"
    assert device_memory.vram_budget(torch.device("cuda")) == 3 * 1024**3
    assert lowvram_requested() and weight_mode() == "fp32"
    assert os.environ["NODEGRAPH_RAM_BUDGET"] == "6GB"
    with pytest.raises(cli.UsageError, match="--vram-budget"):
        cli._export_memory_options(cli._build_parser().parse_args(["run", "w.json", "--vram-budget", "lots"]))


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv(device_memory.VRAM_BUDGET_ENV, "3GB")
    assert device_memory.vram_budget(torch.device("cuda:0")) == 3 * 1024**3
    assert device_memory.manager_for("cpu") is None  # nothing to move on the CPU


class TinyNet(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.proj = torch.nn.Linear(width, width)

    def forward(self, x):
        return self.proj(x)


def test_patchers_go_through_the_manager_and_evict_each_other(monkeypatch):
    """Two models whose weights do not fit together: using one offloads the other (counted), and a
    LoRA-patched model comes back with its originals restored before it moves."""
    net_a, net_b = TinyNet(64), TinyNet(64)  # 16.6 kB each
    budget = 20_000
    gpu = DeviceMemory(torch.device("cpu"), budget)  # a fake device: moves are no-ops, the books are real
    monkeypatch.setattr(device_memory, "manager_for", lambda device: gpu)
    a, b = ModelPatcher(net_a), ModelPatcher(net_b)
    original = net_a.proj.weight.detach().clone()
    from nodes.sd.lora import LoRA
    a.add_patches({"proj.weight": LoRA(torch.ones(64, 1), torch.ones(1, 64), alpha=1.0)}, strength=0.5)
    x = torch.ones(1, 64)
    with a.applied() as module:
        patched_out = module(x)
        assert not torch.equal(net_a.proj.weight, original)
    with b.applied():
        pass
    assert gpu.stats.offloads == 1 and torch.equal(net_a.proj.weight, original)  # offloaded = unpatched
    with a.applied() as module:
        assert torch.equal(module(x), patched_out)  # patches written again after the reload
    assert gpu.stats.reloads == 1


def test_a_patcher_in_use_keeps_its_place(monkeypatch):
    net_a, net_b = TinyNet(64), TinyNet(64)
    gpu = DeviceMemory(torch.device("cpu"), 20_000)
    monkeypatch.setattr(device_memory, "manager_for", lambda device: gpu)
    a, b = ModelPatcher(net_a), ModelPatcher(net_b)
    with a.applied():
        with pytest.raises(InsufficientMemoryError):
            with b.applied():
                pass
    assert gpu.stats.offloads == 0
