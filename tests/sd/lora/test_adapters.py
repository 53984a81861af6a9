"""Each LoRA format merges to W + strength·(alpha/rank)·ΔW, with ΔW computed here independently of nodes.sd.lora."""
import torch
import torch.nn.functional as F
from torch import nn

from nodes.sd.lora import Diff, LoHa, LoKr, LoRA, load_lora, split_lora_key
from nodes.sd.patcher import ModelPatcher

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 10)
        self.conv1 = nn.Conv2d(6, 8, 1)
        self.conv3 = nn.Conv2d(6, 8, 3, padding=1)


def merged(adapter: object, key: str, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(original, merged) weight of `key` after patching a fresh Net with `adapter` at `strength`."""
    net = Net()
    original = getattr(net, key.split(".")[0]).weight.detach().clone()
    patcher = ModelPatcher(net)
    assert patcher.add_patches({key: adapter}, strength) == {key}
    patcher.patch_model()
    return original, getattr(net, key.split(".")[0]).weight.detach()


def r(*shape):
    return torch.randn(*shape)


def test_lora_linear_kohya():
    up, down = r(10, 4), r(4, 12)
    w, got = merged(LoRA(up, down, alpha=2.0), "lin.weight", 0.7)
    torch.testing.assert_close(got, w + 0.7 * (2.0 / 4) * (up @ down))


def test_lora_without_alpha_has_scale_one():
    up, down = r(10, 4), r(4, 12)
    w, got = merged(LoRA(up, down), "lin.weight", 1.0)
    torch.testing.assert_close(got, w + up @ down)


def test_lora_conv_1x1_and_3x3():
    up, down = r(8, 3, 1, 1), r(3, 6, 1, 1)
    w, got = merged(LoRA(up, down, alpha=1.5), "conv1.weight", 0.9)
    torch.testing.assert_close(got, w + 0.9 * (1.5 / 3) * (up[:, :, 0, 0] @ down[:, :, 0, 0])[:, :, None, None])

    up, down = r(8, 3, 1, 1), r(3, 6, 3, 3)
    w, got = merged(LoRA(up, down, alpha=3.0), "conv3.weight", -0.5)
    expected = torch.einsum("or,rihw->oihw", up[:, :, 0, 0], down)
    torch.testing.assert_close(got, w + -0.5 * (3.0 / 3) * expected)


def test_locon_with_tucker_mid_equals_the_three_convs_in_a_row():
    up, mid, down = r(8, 3, 1, 1), r(3, 3, 3, 3), r(3, 6, 1, 1)
    w, got = merged(LoRA(up, down, mid, alpha=6.0), "conv3.weight", 0.8)
    delta = (got - w) / (0.8 * 6.0 / 3)
    x = r(2, 6, 7, 7)
    # ΔW as a conv must act like down (1×1) → mid (3×3) → up (1×1).
    expected = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up)
    torch.testing.assert_close(F.conv2d(x, delta, padding=1), expected, atol=1e-4, rtol=1e-4)


def test_loha_linear_and_conv():
    w1a, w1b, w2a, w2b = r(10, 4), r(4, 12), r(10, 4), r(4, 12)
    w, got = merged(LoHa(w1a, w1b, w2a, w2b, alpha=2.0), "lin.weight", 0.6)
    torch.testing.assert_close(got, w + 0.6 * (2.0 / 4) * ((w1a @ w1b) * (w2a @ w2b)))

    w1a, w1b, w2a, w2b = r(8, 2), r(2, 54), r(8, 2), r(2, 54)
    w, got = merged(LoHa(w1a, w1b, w2a, w2b, alpha=1.0), "conv3.weight", 1.0)
    torch.testing.assert_close(got, w + 0.5 * ((w1a @ w1b) * (w2a @ w2b)).reshape(8, 6, 3, 3))


def test_loha_tucker():
    # Tucker form: w_a [r, out], w_b [r, in], t [r, r, kh, kw]; factor[o, i, h, w] = Σ t[p,q,h,w]·w_a[p,o]·w_b[q,i].
    rk = 2
    t1, t2 = r(rk, rk, 3, 3), r(rk, rk, 3, 3)
    w1a, w1b, w2a, w2b = r(rk, 8), r(rk, 6), r(rk, 8), r(rk, 6)

    def factor(t, wa, wb):
        out = torch.zeros(8, 6, 3, 3)
        for p in range(rk):
            for q in range(rk):
                out += torch.outer(wa[p], wb[q])[:, :, None, None] * t[p, q]
        return out

    w, got = merged(LoHa(w1a, w1b, w2a, w2b, t1, t2, alpha=4.0), "conv3.weight", 1.0)
    torch.testing.assert_close(got, w + (4.0 / rk) * factor(t1, w1a, w1b) * factor(t2, w2a, w2b), atol=1e-4, rtol=1e-4)


def kron(a, b):
    """Block matrix with a[i, j]·b in block (i, j); for 4-D b, a is a 2-D [o1, i1] factor."""
    rows = [torch.cat([a[i, j] * b for j in range(a.shape[1])], dim=1) for i in range(a.shape[0])]
    return torch.cat(rows, dim=0)


def test_lokr_linear_whole_and_factorised():
    w1, w2 = r(2, 3), r(5, 4)
    w, got = merged(LoKr(w1=w1, w2=w2, alpha=7.0), "lin.weight", 0.5)
    torch.testing.assert_close(got, w + 0.5 * kron(w1, w2))  # no factorised side: alpha ignored

    w2a, w2b = r(5, 2), r(2, 4)
    w, got = merged(LoKr(w1=w1, w2_a=w2a, w2_b=w2b, alpha=1.0), "lin.weight", 1.0)
    torch.testing.assert_close(got, w + (1.0 / 2) * kron(w1, w2a @ w2b))

    w1a, w1b = r(2, 1), r(1, 3)
    w, got = merged(LoKr(w1_a=w1a, w1_b=w1b, w2=w2, alpha=3.0), "lin.weight", 1.0)
    torch.testing.assert_close(got, w + 3.0 * kron(w1a @ w1b, w2))


def test_lokr_conv():
    w1, w2 = r(2, 3), r(4, 2, 3, 3)
    w, got = merged(LoKr(w1=w1, w2=w2), "conv3.weight", 1.0)
    torch.testing.assert_close(got, w + kron(w1, w2))


def test_diff():
    d = r(10, 12)
    w, got = merged(Diff(d), "lin.weight", 0.25)
    torch.testing.assert_close(got, w + 0.25 * d)


def test_state_dict_suffixes_pick_the_adapter():
    key_map = {"x": "lin.weight"}
    up, down = r(10, 4), r(4, 12)
    for up_suffix, down_suffix in [(".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight"),
                                   (".lora.up.weight", ".lora.down.weight"), ("_lora.up.weight", "_lora.down.weight"),
                                   (".lora_B.default.weight", ".lora_A.default.weight"),
                                   (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight")]:
        res = load_lora({"x" + up_suffix: up, "x" + down_suffix: down, "x.alpha": torch.tensor(8.0)}, key_map, {})
        adapter = res.unet_patches["lin.weight"]
        assert isinstance(adapter, LoRA) and adapter.scale == 2.0 and not res.unmatched, up_suffix
    sd = {f"x.hada_w{i}_{s}": r(1) for i in (1, 2) for s in "ab"}
    assert isinstance(load_lora(sd, key_map, {}).unet_patches["lin.weight"], LoHa)
    assert isinstance(load_lora({"x.lokr_w1": r(2, 3), "x.lokr_w2": r(5, 4)}, key_map, {}).unet_patches["lin.weight"], LoKr)
    res = load_lora({"x.diff": r(10, 12), "x.diff_b": r(10)}, key_map, {})
    assert set(res.unet_patches) == {"lin.weight", "lin.bias"}
    assert split_lora_key("a_b.lora_up.weight") == ("a_b", "up")
    assert split_lora_key("something.else") is None


def test_dora_is_left_unmatched_rather_than_merged_wrongly():
    sd = {"x.lora_up.weight": r(10, 4), "x.lora_down.weight": r(4, 12), "x.dora_scale": r(10, 1)}
    res = load_lora(sd, {"x": "lin.weight"}, {})
    assert not res.unet_patches and sorted(res.unmatched) == sorted(sd)
