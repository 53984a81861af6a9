"""Layers whose weights stay in a narrow storage dtype (the file's fp16) while they compute in the
input's dtype (fp32 on the CPU): each weight is cast just before its op and dropped right after.

`enable_casting(module, compute_dtype)` switches the Linear / Conv / norm / embedding layers of a
loaded model to these subclasses in place (same parameters, same state-dict keys), so the model code
itself knows nothing about it. A cast fp16 → fp32 is exact, so the outputs equal those of a model
whose weights were cast once at load; only the resident memory differs.

On the CPU a weight is cast into one reused per-thread buffer (nodes.sd.scratch) rather than a fresh
tensor: a fresh 3.4 GB of fp32 weights per UNet call costs more in page faults than the conversion
itself (measured: +28 % CPU time per 256² step with fresh tensors; see docs/performance-history.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nodes.sd import few_rows, nnpack, scratch, winograd

COMPUTE_DTYPE_ATTR = "compute_dtype"


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _cast_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype`; on the CPU outside autograd, a view of this thread's scratch buffer, valid
    until the next weight is cast (the op that receives it has returned by then: CPU ops are synchronous)."""
    if weight.dtype == dtype:
        return weight
    if weight.device.type != "cpu" or (torch.is_grad_enabled() and not torch.is_inference_mode_enabled()):
        return weight.to(dtype)
    return scratch.buffer("cast weight", tuple(weight.shape), dtype).copy_(weight)


class CastLinear(nn.Linear):
    """Also the door to the weight-rows GEMM over few rows (nodes.sd.few_rows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if few_rows.linear_suits(x, self.in_features, self.out_features):
            return few_rows.linear(x, self.weight, _cast(self.bias, x.dtype), lambda w: _cast_weight(w, x.dtype))
        return F.linear(x, _cast_weight(self.weight, x.dtype), _cast(self.bias, x.dtype))


class CastConv2d(nn.Conv2d):
    """Also the door to the faster 3×3 convolutions: NNPACK's Winograd on large images (nodes.sd.nnpack),
    ours on smaller ones with many channels (nodes.sd.winograd), im2col with the weight-rows GEMM on very
    few pixels (nodes.sd.few_rows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = _cast(self.bias, x.dtype)
        if nnpack.suits(self, x):
            return nnpack.conv3x3(x, _cast_weight(self.weight, x.dtype), bias)
        if winograd.suits(self, x):
            return winograd.conv3x3(x, self.weight, bias, lambda w: _cast_weight(w, x.dtype))
        if few_rows.conv_suits(self, x):
            return few_rows.conv3x3(x, self.weight, bias, lambda w: _cast_weight(w, x.dtype))
        return self._conv_forward(x, _cast_weight(self.weight, x.dtype), bias)


class CastGroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, _cast(self.weight, x.dtype), _cast(self.bias, x.dtype), self.eps)


class CastLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, _cast(self.weight, x.dtype), _cast(self.bias, x.dtype), self.eps)


class CastEmbedding(nn.Embedding):
    """Looks up rows in the storage dtype and hands them on in the compute dtype."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = F.embedding(ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                          self.scale_grad_by_freq, self.sparse)
        return out.to(getattr(self, COMPUTE_DTYPE_ATTR, out.dtype))


# Exact types only: a subclass of nn.Linear from elsewhere may have its own forward.
_CASTING = {nn.Linear: CastLinear, nn.Conv2d: CastConv2d, nn.GroupNorm: CastGroupNorm,
            nn.LayerNorm: CastLayerNorm, nn.Embedding: CastEmbedding}


def enable_casting(module: nn.Module, compute_dtype: torch.dtype) -> nn.Module:
    """Make every plain layer of `module` cast its weights to the input's dtype; returns `module`.

    Modules with parameters that no casting layer owns (e.g. a bare nn.Parameter) are refused: they
    would meet fp32 inputs with fp16 weights in some op we cannot see.
    """
    for sub in module.modules():
        cast_type = _CASTING.get(type(sub))
        if cast_type is not None:
            sub.__class__ = cast_type
            setattr(sub, COMPUTE_DTYPE_ATTR, compute_dtype)
        elif type(sub) not in _CASTING.values():
            loose = [n for n, p in sub.named_parameters(recurse=False) if p.dtype != compute_dtype]
            if loose:
                raise TypeError(f"{type(sub).__name__} holds parameters {loose} outside castable layers; "
                                "load it in the compute dtype instead")
    setattr(module, COMPUTE_DTYPE_ATTR, compute_dtype)
    return module


def compute_dtype(module: nn.Module) -> torch.dtype:
    """The dtype `module` computes in: set by `enable_casting`, else that of its first float weight."""
    dtype = getattr(module, COMPUTE_DTYPE_ATTR, None)
    if dtype is not None:
        return dtype
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def weight_bytes(module: nn.Module) -> int:
    """Bytes of `module`'s parameters and buffers, each storage counted once."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.device.type == "meta":
            total += t.numel() * t.element_size()
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total
