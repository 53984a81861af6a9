"""A1111 hypernetwork files: every activation and layer-norm variant, dropout gaps, NovelAI's original layout,
written here as A1111 writes them (torch.save of its dict) and read back; the MLPs are checked against the
formula written out by hand. Bad files: a LoRA, an SDXL checkpoint, a truncated .pt, a pickle payload."""
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nodes.sd.errors import ModelLoadError
from nodes.sd.hypernetwork import load_hypernetwork

WIDTHS = (32, 64)


def a1111_module(dim, structure, activation, layer_norm, activate_output, dropout, g):
    """The state of one HypernetworkModule as A1111 builds it: Sequential `linear` of Linear, [activation],
    [LayerNorm], [Dropout] per step; indices count every layer, so dropout leaves gaps."""
    state, index, plan = {}, 0, []
    for i in range(len(structure) - 1):
        w = torch.randn(int(dim * structure[i + 1]), int(dim * structure[i]), generator=g) * 0.3
        b = torch.randn(w.shape[0], generator=g) * 0.1
        state[f"linear.{index}.weight"], state[f"linear.{index}.bias"] = w, b
        plan.append(("linear", w, b))
        index += 1
        last = i >= len(structure) - 2
        if activation != "linear" and (not last or activate_output):
            if activation == "prelu":
                slope = torch.tensor([0.2])
                state[f"linear.{index}.weight"] = slope
                plan.append(("prelu", slope))
            else:
                plan.append((activation,))
            index += 1
        if layer_norm:
            lw, lb = 1 + 0.1 * torch.randn(w.shape[0], generator=g), 0.1 * torch.randn(w.shape[0], generator=g)
            state[f"linear.{index}.weight"], state[f"linear.{index}.bias"] = lw, lb
            plan.append(("norm", lw, lb))
            index += 1
        if dropout and not last:
            index += 1  # a Dropout: no tensors, one index
    return state, plan


def reference_mlp(plan, x):
    for step in plan:
        kind = step[0]
        if kind == "linear":
            x = x @ step[1].T + step[2]
        elif kind == "norm":
            x = F.layer_norm(x, step[1].shape, step[1], step[2], 1e-5)
        elif kind == "prelu":
            x = torch.where(x >= 0, x, step[1] * x)
        else:
            x = {"relu": F.relu, "leakyrelu": F.leaky_relu, "elu": F.elu, "swish": F.hardswish, "tanh": torch.tanh,
                 "sigmoid": torch.sigmoid, "softsign": F.softsign, "mish": F.mish, "gelu": F.gelu, "silu": F.silu}[kind](x)
    return x


def write_hypernetwork(path, activation="linear", layer_norm=False, activate_output=False, dropout=False,
                       structure=(1, 2, 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    data, plans = {}, {}
    for dim in WIDTHS:
        (k_state, k_plan), (v_state, v_plan) = (a1111_module(dim, structure, activation, layer_norm, activate_output,
                                                             dropout, g) for _ in range(2))
        data[dim] = [k_state, v_state]
        plans[dim] = (k_plan, v_plan)
    data.update({"layer_structure": list(structure), "activation_func": activation, "is_layer_norm": layer_norm,
                 "weight_initialization": "Normal", "use_dropout": dropout, "activate_output": activate_output,
                 "last_layer_dropout": False, "dropout_structure": [0.0] * len(structure), "name": "test",
                 "step": 1000, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "v1-5"})
    torch.save(data, path)
    return plans


@pytest.mark.parametrize("activation, layer_norm, activate_output, dropout", [
    ("linear", False, False, False), ("relu", True, False, True), ("leakyrelu", False, True, False),
    ("elu", True, True, False), ("swish", False, False, True), ("tanh", True, False, False),
    ("sigmoid", False, True, False), ("softsign", False, False, False), ("mish", True, True, True),
    ("gelu", False, False, False), ("silu", True, False, False), ("prelu", True, True, False),
])
def test_every_variant_equals_the_written_out_formula(tmp_path, activation, layer_norm, activate_output, dropout):
    plans = write_hypernetwork(tmp_path / "hn.pt", activation, layer_norm, activate_output, dropout,
                               structure=(1, 2, 1.5, 1))
    hn = load_hypernetwork(tmp_path / "hn.pt")
    assert sorted(hn.modules) == list(WIDTHS)
    for dim in WIDTHS:
        context, value = torch.randn(2, 5, dim), torch.randn(2, 5, dim)
        with torch.no_grad():
            k, v = hn.apply(context, value, 0.7)
        torch.testing.assert_close(k, context + reference_mlp(plans[dim][0], context) * 0.7, atol=1e-5, rtol=0)
        torch.testing.assert_close(v, value + reference_mlp(plans[dim][1], value) * 0.7, atol=1e-5, rtol=0)
    other = torch.randn(1, 3, 48)  # a width the file has no module for passes through
    assert hn.apply(other, other, 1.0)[0] is other


def test_novelai_original_layout(tmp_path):
    g = torch.Generator().manual_seed(4)
    data = {}
    for dim in WIDTHS:
        data[dim] = [{"linear1.weight": torch.randn(2 * dim, dim, generator=g) * 0.2, "linear1.bias": torch.zeros(2 * dim),
                      "linear2.weight": torch.randn(dim, 2 * dim, generator=g) * 0.2, "linear2.bias": torch.ones(dim)}
                     for _ in range(2)]
    torch.save(data, tmp_path / "nai.pt")
    hn = load_hypernetwork(tmp_path / "nai.pt")
    x = torch.randn(1, 4, 32)
    k_state = data[32][0]
    expected = x + ((x @ k_state["linear1.weight"].T + k_state["linear1.bias"]) @ k_state["linear2.weight"].T
                    + k_state["linear2.bias"])
    with torch.no_grad():
        torch.testing.assert_close(hn.apply(x, x, 1.0)[0], expected, atol=1e-5, rtol=0)


def test_wrong_files_say_what_they_are(tmp_path):
    save_file({"lora_unet_a.lora_up.weight": torch.zeros(2, 2), "lora_unet_a.lora_down.weight": torch.zeros(2, 2)},
              str(tmp_path / "lora.safetensors"))
    with pytest.raises(ModelLoadError, match=r"lora\.safetensors.*not an A1111 hypernetwork.*LoRA"):
        load_hypernetwork(tmp_path / "lora.safetensors")
    torch.save({"conditioner.embedders.0.transformer.text_model.x": torch.zeros(1)}, tmp_path / "sdxl.pt")
    with pytest.raises(ModelLoadError, match=r"sdxl\.pt.*not an A1111 hypernetwork.*SDXL"):
        load_hypernetwork(tmp_path / "sdxl.pt")
    write_hypernetwork(tmp_path / "full.pt")
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"cut\.pt.*(corrupt|truncated)"):
        load_hypernetwork(tmp_path / "cut.pt")
    torch.save({32: [{}, {}], "activation_func": "threshold"}, tmp_path / "odd.pt")
    with pytest.raises(ModelLoadError, match="activation 'threshold'"):
        load_hypernetwork(tmp_path / "odd.pt")


def test_a_pickle_payload_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for protocol, says in ((2, "NOT unpickled"), (pickle.HIGHEST_PROTOCOL, "Nothing in it was executed")):
        (tmp_path / "evil.pt").write_bytes(pickle.dumps({32: [Payload(), {}], "activation_func": "linear"}, protocol))
        with pytest.raises(ModelLoadError, match=rf"evil\.pt.*{says}"):
            load_hypernetwork(tmp_path / "evil.pt")
        assert not marker.exists()
