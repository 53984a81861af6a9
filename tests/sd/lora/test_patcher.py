"""ModelPatcher: lazy merge, bit-exact restore, clones sharing one module, stacking order."""
import threading

import pytest
import torch
from torch import nn

from nodes.sd.lora import Diff, LoRA
from nodes.sd.patcher import ModelPatcher, PatcherBusyError

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.lin = nn.Linear(12, 10).to(dtype)
        self.conv = nn.Conv2d(6, 8, 3, padding=1).to(dtype)

    def forward(self, x, img):
        return self.lin(x), self.conv(img)


class CountingLoRA(LoRA):
    """A LoRA that counts how often it is merged into a weight (whichever path computes ΔW)."""
    calls = 0

    def add_to(self, weight, strength):
        CountingLoRA.calls += 1
        return super().add_to(weight, strength)


def lora_for(net: Net, rank=3, counting=False):
    cls = CountingLoRA if counting else LoRA
    return {"lin.weight": cls(torch.randn(10, rank), torch.randn(rank, 12), alpha=1.0),
            "conv.weight": cls(torch.randn(8, rank, 1, 1), torch.randn(rank, 6, 3, 3), alpha=2.0)}


def snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def inputs():
    return torch.randn(2, 12), torch.randn(1, 6, 5, 5)


def test_unpatch_restores_bit_for_bit_and_keeps_the_original_storage():
    net = Net()
    before, ptrs = snapshot(net), {k: v.data_ptr() for k, v in net.state_dict().items()}
    p = ModelPatcher(net).clone()
    p.add_patches(lora_for(net), 0.8)
    p.patch_model()
    assert not torch.equal(net.lin.weight, before["lin.weight"])
    assert set(p.backup) == {"lin.weight", "conv.weight"}
    p.unpatch_model()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]) and v.data_ptr() == ptrs[k], k
    assert not p.backup


def test_unpatch_restores_half_precision_weights_exactly():
    net = Net(torch.float16)
    before = snapshot(net)
    p = ModelPatcher(net)
    p.add_patches(lora_for(net), 1.3)
    p.patch_model()
    assert net.lin.weight.dtype == torch.float16  # merged in fp32, cast back
    expected = (before["lin.weight"].float() + 1.3 * p.patches["lin.weight"][0][1].delta((10, 12))).half()
    assert torch.equal(net.lin.weight.detach(), expected)
    p.unpatch_model()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_strength_zero_gives_bit_identical_output():
    net = Net()
    x = inputs()
    base = ModelPatcher(net)
    with base.applied() as m:
        ref = m(*x)
    p = base.clone()
    p.add_patches(lora_for(net), 0.0)
    with p.applied() as m:
        out = m(*x)
    assert all(torch.equal(a, b) for a, b in zip(ref, out))
    assert not p.backup  # nothing was merged, nothing backed up


def test_two_loras_stack_in_order():
    net = Net()
    w = net.lin.weight.detach().clone()
    a, b = lora_for(net), lora_for(net)
    p1 = ModelPatcher(net).clone()
    p1.add_patches({"lin.weight": a["lin.weight"]}, 0.5)
    p2 = p1.clone()
    p2.add_patches({"lin.weight": b["lin.weight"]}, -0.25)
    assert [s for s, _ in p2.patches["lin.weight"]] == [0.5, -0.25]
    assert [s for s, _ in p1.patches["lin.weight"]] == [0.5]  # the clone's append did not leak back
    p2.patch_model()
    da, db = (x["lin.weight"].up @ x["lin.weight"].down for x in (a, b))
    torch.testing.assert_close(net.lin.weight.detach(), w + 0.5 * (1 / 3) * da - 0.25 * (1 / 3) * db)


def test_clones_share_the_module_weights_and_backup():
    net = Net()
    base = ModelPatcher(net)
    c1, c2 = base.clone(), base.clone()
    c1.add_patches(lora_for(net), 1.0)
    assert c1.model is c2.model is net
    assert c1.backup is c2.backup is base.backup
    assert c1.model.lin.weight.data_ptr() == c2.model.lin.weight.data_ptr()
    assert c1.is_clone(c2) and not c1.is_clone(ModelPatcher(Net()))
    c1.options = c1.options.with_post_cfg(lambda step: step.denoised, source="test")
    assert c2.options.post_cfg == () and c2.options.sources == ()


def test_patching_the_same_clone_twice_does_not_recompute():
    net = Net()
    p = ModelPatcher(net)
    p.add_patches(lora_for(net, counting=True), 1.0)
    CountingLoRA.calls = 0
    p.patch_model()
    assert CountingLoRA.calls == 2
    for _ in range(3):
        with p.applied():
            pass
    p.clone().patch_model()  # a clone without new patches (e.g. a sampler adding options) is the same merge
    assert CountingLoRA.calls == 2


def test_switching_clones_restores_the_originals_first():
    net = Net()
    before = snapshot(net)
    base = ModelPatcher(net)
    c1, c2 = base.clone(), base.clone()
    l1, l2 = lora_for(net), lora_for(net)
    c1.add_patches(l1, 1.0)
    c2.add_patches({"lin.weight": l2["lin.weight"]}, 1.0)
    c1.patch_model()
    c2.patch_model()
    # conv was patched by c1 only and must be back to the original; lin carries only c2's LoRA.
    assert torch.equal(net.conv.weight, before["conv.weight"])
    expected = before["lin.weight"] + (1 / 3) * (l2["lin.weight"].up @ l2["lin.weight"].down)
    torch.testing.assert_close(net.lin.weight.detach(), expected)
    base.patch_model()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_only_keys_of_the_model_with_fitting_shape_are_added():
    net = Net()
    p = ModelPatcher(net)
    got = p.add_patches({"lin.weight": Diff(torch.randn(10, 12)), "nope.weight": Diff(torch.randn(3)),
                         "conv.weight": Diff(torch.randn(7))}, 1.0)
    assert got == {"lin.weight"} and set(p.patches) == {"lin.weight"}


def test_another_clone_cannot_swap_weights_while_one_is_in_use():
    net = Net()
    base = ModelPatcher(net)
    other = base.clone()
    other.add_patches(lora_for(net), 1.0)
    with base.applied():
        with pytest.raises(PatcherBusyError):
            other.patch_model()
        with base.applied():  # re-entering the same clone is fine
            pass
    other.patch_model()


def test_other_threads_wait_for_the_block_to_finish():
    net = Net()
    base, other = ModelPatcher(net), ModelPatcher(net)
    other.add_patches(lora_for(net), 1.0)
    w = net.lin.weight.detach().clone()
    seen = []
    with base.applied():
        t = threading.Thread(target=other.patch_model)
        t.start()
        t.join(0.2)
        seen.append(torch.equal(net.lin.weight, w))
    t.join()
    assert seen == [True] and not torch.equal(net.lin.weight, w)


def test_model_size_counts_each_storage_once():
    net = Net()
    p = ModelPatcher(net)
    n = sum(t.numel() * 4 for t in net.parameters())
    assert p.model_size() == n == p.clone().model_size()
    p.add_patches(lora_for(net), 1.0)
    assert p.patches_size() > 0
