"""Style models (the STYLE_MODEL socket): the T2I-Adapter style adapter, which turns a CLIP vision tower's
hidden states into a few extra text tokens appended to the conditioning. Config read off the file's shapes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .checkpoint import load_weights
from .errors import ModelLoadError
from .model_detection import describe_state_dict
from .memory import module_parts
from .state_dict import load_state_dict

STYLE_HEADS = 8  # not visible in the weights; the released adapter (width 1024) uses 8


class _Block(nn.Module):
    """A CLIP residual attention block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); layer norms in float32."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _float_norm(self.ln_1, x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(_float_norm(self.ln_2, x))


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def _float_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return norm(x.float()).to(x.dtype)


class StyleAdapter(nn.Module):
    """CLIP vision hidden states [B, N, width] → style tokens [B, num_token, context_dim].

    Learned query tokens are appended to the image tokens, the sequence runs through a few CLIP blocks,
    and the query positions, layer-normed and projected, are the output. Parameter names are the file's
    (`transformer_layes` is the original spelling)."""

    def __init__(self, width: int, context_dim: int, heads: int, layers: int, num_token: int):
        super().__init__()
        self.transformer_layes = nn.Sequential(*[_Block(width, heads) for _ in range(layers)])
        self.num_token = num_token
        self.style_embedding = nn.Parameter(torch.zeros(1, num_token, width))
        self.ln_post = nn.LayerNorm(width)
        self.ln_pre = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries = self.style_embedding.to(x.dtype).expand(x.shape[0], -1, -1)
        x = _float_norm(self.ln_pre, torch.cat([x, queries], dim=1))  # (B, N + num_token, width)
        x = self.transformer_layes(x)
        x = _float_norm(self.ln_post, x[:, -self.num_token:])
        return x @ self.proj.to(x.dtype)


class StyleModel:
    """What StyleModelLoader returns: `get_cond(clip_vision_output)` → tokens [B, num_token, context_dim]."""

    def __init__(self, model: StyleAdapter):
        self.model = model

    def memory_parts(self):
        return module_parts(self.model)

    def get_cond(self, clip_vision_output) -> torch.Tensor:
        hidden = clip_vision_output.last_hidden_state
        width = self.model.style_embedding.shape[-1]
        if hidden.shape[-1] != width:
            raise ValueError(f"the CLIP vision output is {hidden.shape[-1]} wide but this style model takes "
                             f"{width}-wide hidden states (use the CLIP vision model it was trained with)")
        weight = self.model.proj
        with torch.inference_mode():
            tokens = self.model(hidden.to(weight.device, weight.dtype))
        return tokens.float().cpu().clone()


def build_style_model(sd: Mapping[str, torch.Tensor], path: str | Path | None = None) -> StyleModel:
    if "redux_down.weight" in sd:
        raise ModelLoadError(path, "this is a Flux Redux style model; only the SD1.x T2I-Adapter style model is supported")
    if "style_embedding" not in sd:
        raise ModelLoadError(path, f"not a style model: {describe_state_dict(sd)}")
    _, num_token, width = sd["style_embedding"].shape
    context_dim = sd["proj"].shape[1]
    layers = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"transformer_layes\.(\d+)\.", k))), default=-1)
    heads = STYLE_HEADS if width % STYLE_HEADS == 0 else 1
    model = load_weights(lambda: StyleAdapter(width, context_dim, heads, layers, num_token), sd, "style model",
                         path, torch.device("cpu"), torch.float32)
    return StyleModel(model)


def load_style_model(path: str | Path) -> StyleModel:
    return build_style_model(load_state_dict(path), path)
