"""The CLIP text transformer in plain torch, with transformers' CLIPTextModel parameter names, config
attributes and outputs, so checkpoints, LoRA key maps and the encoder code use it unchanged.

Why not transformers' own class: importing `transformers.models.clip` costs ~2.6 s on this project's
2-core machine (most of a cold `nodegraph run`); this is the same arithmetic in ~100 lines, checked
against transformers' CLIPTextModel in tests/sd/clip/test_bpe.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class CLIPTextConfig:
    """The fields of transformers' CLIPTextConfig that the text tower uses (same names and defaults)."""
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1
    projection_dim: int = 512  # unused by the text tower; kept so configs round-trip


class TextModelOutput(NamedTuple):
    last_hidden_state: torch.Tensor          # (B, T, C), through the final layer norm
    hidden_states: tuple[torch.Tensor, ...] | None  # embeddings, then each layer's output (when asked)


_ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
}


class CLIPAttention(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        width = config.hidden_size
        self.heads = config.num_attention_heads
        self.k_proj, self.v_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.q_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class CLIPMLP(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.act = _ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        # Given uninitialised weights: the checkpoint's replace them, and a random init on the meta
        # device (how models are built here) would import torch._dynamo, seconds of a cold start.
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size,
                                            _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                               _weight=torch.empty(config.max_position_embeddings, config.hidden_size))
        # On the CPU even when built on meta: arange on meta goes through torch's reference kernels, which
        # import sympy (seconds of a cold start); 77 ids cost nothing.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings, device="cpu")[None],
                             persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, :input_ids.shape[1]]
        return self.token_embedding(input_ids) + self.position_embedding(positions)


class CLIPTextTransformer(nn.Module):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class CLIPTextModel(nn.Module):
    """`model(input_ids=ids, output_hidden_states=bool)` → TextModelOutput; causal self-attention, no
    padding mask (SD pads with the end token and attends to it, as transformers does without a mask)."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.config = config
        self.text_model = CLIPTextTransformer(config)

    @property
    def device(self) -> torch.device:
        return self.text_model.final_layer_norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_model.final_layer_norm.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.token_embedding

    def forward(self, input_ids: torch.Tensor, output_hidden_states: bool = False) -> TextModelOutput:
        x = self.text_model.embeddings(input_ids)
        hidden = [x] if output_hidden_states else None
        for layer in self.text_model.encoder.layers:
            x = layer(x, None)
            if hidden is not None:
                hidden.append(x)
        return TextModelOutput(self.text_model.final_layer_norm(x), tuple(hidden) if hidden is not None else None)
