"""A1111 hypernetworks: per attention width, two small MLPs that rewrite the key and value inputs of every
attention of that width (`k + mlp_k(k)·strength`, `v + mlp_v(v)·strength`), as A1111 and ComfyUI apply them.

File format (`.pt`, read with `torch.load(weights_only=True)`): `{width: [key module state, value module
state], ..., "activation_func", "is_layer_norm", "activate_output", "use_dropout", ...}`; a module state is
the `linear.N.*` tensors of its Sequential (NovelAI's original files: `linear1` / `linear2`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .errors import ModelLoadError
from .model_detection import describe_state_dict
from .state_dict import load_pickled_dict, load_state_dict

log = logging.getLogger(__name__)

# A1111's names (ComfyUI supports the first nine); "swish" is Hardswish in A1111, and any other
# parameter-free torch activation is accepted by its lower-cased class name, as A1111 does.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.Hardswish,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softsign": nn.Softsign, "mish": nn.Mish,
    **{name.lower(): cls for name, cls in vars(nn.modules.activation).items()
       if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == "torch.nn.modules.activation"
       and name not in ("Threshold", "MultiheadAttention", "Softmax2d")},
}
ACTIVATIONS["swish"] = nn.Hardswish  # not overwritten by the loop (there is no nn.Swish), kept explicit


class HypernetworkError(ModelLoadError):
    """A file that is not a usable A1111 hypernetwork; the message says what it is instead."""


def build_module(state: Mapping[str, torch.Tensor], activation: str, layer_norm: bool, activate_output: bool,
                 path=None) -> nn.Sequential:
    """One MLP from its tensors, in the order they were saved: Linear, [activation], [LayerNorm], …
    The activation follows every Linear but the last (unless activate_output); dropout is left out
    (inference). ComfyUI leaves its dropout layers in training mode, so its images are randomly perturbed
    when a file asks for dropout; A1111 evaluates them off at inference, as here."""
    names = [k[: -len(".weight")] for k in state if k.endswith(".weight")]
    linears = sum(1 for n in names if state[n + ".weight"].ndim == 2)
    layers: list[nn.Module] = []
    i, done = 0, 0
    while i < len(names):
        weight, bias = state[names[i] + ".weight"], state.get(names[i] + ".bias")
        if weight.ndim != 2 or bias is None:
            raise HypernetworkError(path, f"'{names[i]}' should be a Linear layer (2-D weight and a bias), "
                                          f"found a weight of shape {tuple(weight.shape)}")
        linear = nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight, "bias": bias})
        layers.append(linear)
        done += 1
        if activation != "linear" and (done < linears or activate_output):
            act = ACTIVATIONS[activation]()
            if isinstance(act, nn.PReLU):  # its slope was saved right after the Linear
                i += 1
                act.load_state_dict({"weight": state[names[i] + ".weight"]})
            layers.append(act)
        if layer_norm:
            i += 1
            if i >= len(names):
                raise HypernetworkError(path, "is_layer_norm is set but a layer norm is missing after the last Linear")
            norm = nn.LayerNorm(weight.shape[0])
            norm.load_state_dict({"weight": state[names[i] + ".weight"], "bias": state[names[i] + ".bias"]})
            layers.append(norm)
        i += 1
    return nn.Sequential(*layers).eval().requires_grad_(False)


class Hypernetwork:
    """The loaded file: `modules[width] = (key MLP, value MLP)`. `patch(strength)` is the attention-input
    patch (normed x, context, value, …) → (x, context', value') for self- and cross-attention alike."""

    def __init__(self, modules: dict[int, tuple[nn.Module, nn.Module]], name: str = ""):
        self.modules = modules
        self.name = name

    def memory_parts(self):
        from .memory import module_parts
        for pair in self.modules.values():
            for module in pair:
                yield from module_parts(module)

    def apply(self, context: torch.Tensor, value: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.modules.get(context.shape[-1])
        if pair is None:
            return context, value
        key_mlp, value_mlp = pair
        weight = next(key_mlp.parameters())
        if weight.device != context.device or weight.dtype != context.dtype:
            key_mlp.to(context.device, context.dtype)
            value_mlp.to(context.device, context.dtype)
        return context + key_mlp(context) * strength, value + value_mlp(value) * strength


def parse_hypernetwork(data: Mapping[Any, Any], path=None) -> Hypernetwork:
    widths = [k for k in data if _as_width(k) is not None]
    if not widths:
        tensors = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        what = describe_state_dict(tensors) if tensors else "no attention widths and no tensors"
        raise HypernetworkError(path, f"not an A1111 hypernetwork ({what})")
    activation = data.get("activation_func") or "linear"
    if activation not in ACTIVATIONS:
        raise HypernetworkError(path, f"activation '{activation}' is not one A1111 offers "
                                      f"({', '.join(sorted(ACTIVATIONS))})")
    options = dict(activation=activation, layer_norm=bool(data.get("is_layer_norm", False)),
                   activate_output=bool(data.get("activate_output", False)), path=path)
    modules = {}
    for key in widths:
        pair = data[key]
        if not isinstance(pair, (list, tuple)) or len(pair) < 2 or not all(isinstance(p, Mapping) for p in pair[:2]):
            raise HypernetworkError(path, f"width {key}: expected two module states (key, value), "
                                          f"found {type(pair).__name__}")
        modules[_as_width(key)] = (build_module(pair[0], **options), build_module(pair[1], **options))
    log.info("hypernetwork %s: widths %s, activation %s, layer norm %s", Path(path).name if path else "",
             sorted(modules), activation, options["layer_norm"])
    return Hypernetwork(modules, name=Path(path).name if path else "")


def _as_width(key) -> int | None:
    try:
        return int(key)
    except (TypeError, ValueError):
        return None


def load_hypernetwork(path: str | Path) -> Hypernetwork:
    path = Path(path)
    if path.suffix.lower() in (".safetensors", ".sft"):
        sd = load_state_dict(path)
        raise HypernetworkError(path, f"not an A1111 hypernetwork (those are .pt files): {describe_state_dict(sd)}")
    return parse_hypernetwork(load_pickled_dict(path), path)
