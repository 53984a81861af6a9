"""Attention blocks of the SD1.x UNet: cross-attention, the GEGLU transformer block, SpatialTransformer.

Attribute names follow the original LDM code (`to_q`, `attn2`, `ff.net.0.proj`, `proj_in`, ...) so the
parameter names equal the checkpoint keys and LoRA / ControlNet weights map onto them directly.
Model-option patches (nodes/sd/model_options.py) reach the transformer blocks through a PatchContext;
without one, or with no attention patches in it, the blocks run their plain path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .fast_ops import no_autograd
from .model_options import AttentionPatches, PatchContext


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(d)) v over `heads` heads: (B, T, h·d), (B, S, h·d), (B, S, h·d) -> (B, T, h·d)."""
    q, k, v = (rearrange(t, "b t (h d) -> b h t d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d); scale d^-0.5 as in LDM
    return rearrange(out, "b h t d -> b t (h d)")


class CrossAttention(nn.Module):
    """Multi-head attention of queries from `x` over `context` (self-attention when context is None)."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                value: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context  # x: (B, T, C), context: (B, S, Cc)
        value = context if value is None else value  # a patch may give the values their own source
        return self.to_out(attention(self.to_q(x), self.to_k(context), self.to_v(value), self.heads))

    def patched(self, x: torch.Tensor, context: torch.Tensor | None, patches: AttentionPatches,
                pc: PatchContext) -> torch.Tensor:
        """The attention with model-option patches: input patches on (x, context, value), a replacement
        of the attention itself at this site if one is set, output patches on the result."""
        pc.heads, pc.dim_head = self.heads, self.to_q.out_features // self.heads
        value = None
        if patches.input:
            context = x if context is None else context
            value = context
            for patch in patches.input:
                x, context, value = patch(x, context, value, pc)
            if context.shape[0] != x.shape[0]:
                # A patch batched the queries differently (HyperTile tiles only them): ComfyUI's attention
                # kernels then view keys and values with the queries' batch size; do the same.
                context = context.reshape(x.shape[0], -1, context.shape[-1])
                value = value.reshape(x.shape[0], -1, value.shape[-1])
        replacement = patches.replacement_at(pc.block, pc.block_index)
        if replacement is None:
            out = self(x, context, value)
        else:
            context = x if context is None else context
            value = context if value is None else value
            out = self.to_out(replacement(self.to_q(x), self.to_k(context), self.to_v(value), pc))
        for patch in patches.output:
            out = patch(out, pc)
        return out


class GEGLU(nn.Module):
    """Linear to 2×inner, then value · GELU(gate) (value first, gate second, as in LDM)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        if no_autograd():
            # In the projection's own output, which nothing else holds: two fresh tensors of the
            # UNet's largest activation size fewer per block (see docs/performance-history.md, fifth pass).
            return value.mul_(torch.ops.aten.gelu_(gate))
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        # Indices 0 and 2 are the checkpoint's `ff.net.0.proj` / `ff.net.2`; 1 is a (no-op) dropout.
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention over the text context, GEGLU MLP; each residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim=context_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, pc: PatchContext | None = None) -> torch.Tensor:
        if pc is not None and pc.patches.transformer_active:
            return self._forward_patched(x, context, pc)
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))

    def _forward_patched(self, x: torch.Tensor, context: torch.Tensor, pc: PatchContext) -> torch.Tensor:
        patches = pc.patches
        x = x + self.attn1.patched(self.norm1(x), None, patches.self_attention, pc)
        for patch in patches.after_self_attention:
            x = patch(x, pc)
        x = x + self.attn2.patched(self.norm2(x), context, patches.cross_attention, pc)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Feature map → tokens → transformer blocks → feature map, added to the input.

    SD1.x projects in and out with 1×1 convolutions (SD2 switched to linear layers).
    """

    def __init__(self, channels: int, heads: int, depth: int, context_dim: int):
        super().__init__()
        dim_head = channels // heads
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, dim_head, context_dim) for _ in range(depth)
        )
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, pc: PatchContext | None = None) -> torch.Tensor:
        _, _, h, w = x.shape  # (B, C, H, W)
        x_in = x
        x = self.proj_in(self.norm(x))
        x = rearrange(x, "b c h w -> b (h w) c")
        if pc is not None:
            pc.activations_shape = tuple(x_in.shape)
        for i, block in enumerate(self.transformer_blocks):
            if pc is not None:
                pc.block_index = i
            x = block(x, context, pc)
        if pc is not None:
            pc.transformer_index += 1
        x = rearrange(x, "b (h w) c -> b c h w", h=h, w=w)
        return self.proj_out(x) + x_in
