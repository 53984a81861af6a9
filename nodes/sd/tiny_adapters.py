"""Tiny random adapters shaped for the tiny checkpoint (nodes.sd.tiny), in the real file formats: T2I-Adapters
(full, light), a T2I style model, a CLIP vision tower, a GLIGEN model. Test fixtures and the stand-ins the adapter example
workflows run on; their pictures are noise (they show the wiring), real files load through the same code."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from .t2i_adapter import AdapterConfig, T2IAdapterModel
from .tiny import TINY_CLIP_HIDDEN, TINY_UNET_CONFIG, _init_weights

TINY_T2I_ADAPTER = "nodegraph-tiny-t2i-adapter.safetensors"
TINY_GLIGEN = "nodegraph-tiny-gligen.safetensors"
TINY_VISION_WIDTH = 32


def _save(sd: dict[str, torch.Tensor], path: str | Path, seed: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path),
              metadata={"nodegraph.tiny": "1", "seed": str(seed)})
    return path


def make_tiny_t2i_adapter(path: str | Path, *, kind: str = "full", seed: int = 0) -> Path:
    """A T2I-Adapter in TencentARC's layout for the tiny UNet: one feature map per UNet level (widths 32, 64).
    Full: two blocks per level, 1×1 second convs, in_conv where the width changes (the released SD1.5
    adapters' shape); light: two residual pairs per level."""
    widths = tuple(TINY_UNET_CONFIG.model_channels * m for m in TINY_UNET_CONFIG.channel_mult)
    if kind == "full":
        config = AdapterConfig("full", 3 * 64, widths, 2, ksize=1)
        in_conv = frozenset(2 * level for level in range(1, len(widths)) if widths[level] != widths[level - 1])
        model = T2IAdapterModel(config, in_conv_blocks=in_conv)
    elif kind == "light":
        model = T2IAdapterModel(AdapterConfig("light", 3 * 64, widths, 2))
    else:
        raise ValueError(f"kind must be 'full' or 'light', not {kind!r}")
    _init_weights(model, seed * 1000 + 11)
    return _save(model.state_dict(), path, seed)


def make_tiny_style_model(path: str | Path, *, seed: int = 0, tokens: int = 4, layers: int = 2) -> Path:
    """A T2I style adapter from TINY_VISION_WIDTH-wide CLIP vision states to the tiny text width."""
    g = torch.Generator().manual_seed(seed)
    w, c = TINY_VISION_WIDTH, TINY_CLIP_HIDDEN

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    sd = {"style_embedding": r(1, tokens, w, scale=1.0), "proj": r(w, c),
          "ln_pre.weight": 1 + r(w), "ln_pre.bias": r(w), "ln_post.weight": 1 + r(w), "ln_post.bias": r(w)}
    for i in range(layers):
        p = f"transformer_layes.{i}."
        sd.update({p + "attn.in_proj_weight": r(3 * w, w), p + "attn.in_proj_bias": r(3 * w),
                   p + "attn.out_proj.weight": r(w, w), p + "attn.out_proj.bias": r(w),
                   p + "ln_1.weight": 1 + r(w), p + "ln_1.bias": r(w), p + "ln_2.weight": 1 + r(w), p + "ln_2.bias": r(w),
                   p + "mlp.c_fc.weight": r(4 * w, w), p + "mlp.c_fc.bias": r(4 * w),
                   p + "mlp.c_proj.weight": r(w, 4 * w), p + "mlp.c_proj.bias": r(w)})
    return _save(sd, path, seed)


def make_tiny_clip_vision(path: str | Path, *, seed: int = 0) -> Path:
    """A CLIP vision tower in transformers' layout: 28×28 images in 14×14 patches, width 32, 2 layers."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=TINY_VISION_WIDTH, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=1, image_size=28, patch_size=14, projection_dim=TINY_CLIP_HIDDEN,
                              hidden_act="quick_gelu")
    model = CLIPVisionModelWithProjection(config)
    _init_weights(model, seed * 1000 + 13)
    return _save(model.state_dict(), path, seed)


def make_tiny_gligen(path: str | Path, *, seed: int = 0) -> Path:
    """A GLIGEN for the tiny UNet in ComfyUI's file layout: a fuser after every transformer block's
    self-attention (`<block>.transformer_blocks.0.fuser.*`) and the position net (`position_net.*`), with
    non-zero gates so that it visibly acts."""
    from .attention import BasicTransformerBlock
    from .gligen import GatedSelfAttention, PositionNet
    from .unet import UNetModel

    with torch.device("meta"):
        unet = UNetModel(TINY_UNET_CONFIG)
    sd: dict[str, torch.Tensor] = {}
    for index, (name, block) in enumerate((n, m) for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)):
        dim = block.norm1.normalized_shape[0]
        fuser = GatedSelfAttention(dim, TINY_CLIP_HIDDEN, heads=8)
        _init_weights(fuser, seed * 1000 + 17 + index)
        with torch.no_grad():
            fuser.alpha_attn.fill_(0.5)
            fuser.alpha_dense.fill_(0.3)
        sd.update({f"{name}.fuser.{k}": v for k, v in fuser.state_dict().items()})
    net = PositionNet(TINY_CLIP_HIDDEN, TINY_CLIP_HIDDEN, hidden=64)
    _init_weights(net, seed * 1000 + 19)
    sd.update({f"position_net.{k}": v for k, v in net.state_dict().items()})
    return _save(sd, path, seed)
