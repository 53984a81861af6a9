"""Tiny SD1-layout checkpoints with random weights (a few MB): test fixtures and the CLI's default model.

Same key layout and architecture family as SD1.5, only narrower, so everything that loads a tiny
checkpoint loads a real one through the same code path.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from nodes.sd.checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
from nodes.sd.unet import UNetConfig, UNetModel
from nodes.sd.vae import AutoencoderKL, VAEConfig

TINY_UNET_CONFIG = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=2,
    transformer_depth=(1, 1),  # attention at both levels: diffusers' CrossAttn{Down,Up}Block2D
    transformer_depth_middle=1,
    context_dim=32,
    num_heads=8,
)
TINY_VAE_CONFIG = VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=4, embed_dim=4)
TINY_CLIP_HIDDEN = 32


def tiny_clip_config_kwargs(hidden: int = TINY_CLIP_HIDDEN) -> dict:
    """transformers.CLIPTextConfig arguments. Heads policy: heads = max(1, hidden // 64), CLIP-L's 64-wide heads."""
    return dict(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=hidden,
    )


def make_tiny_checkpoint(
    path: str | Path, *, seed: int = 0, in_channels: int = 4, dtype: torch.dtype = torch.float32
) -> Path:
    """Write a single-file SD1-layout .safetensors (UNet + VAE + CLIP text encoder) with random weights."""
    from nodes.sd.clip.text_model import CLIPTextConfig, CLIPTextModel  # transformers' layout, without its import

    path = Path(path)
    unet = UNetModel(_replace_in_channels(TINY_UNET_CONFIG, in_channels))
    vae = AutoencoderKL(TINY_VAE_CONFIG)
    with torch.random.fork_rng(devices=[]):  # module init draws from the global RNG; keep it untouched
        clip = CLIPTextModel(CLIPTextConfig(**tiny_clip_config_kwargs()))

    sd: dict[str, torch.Tensor] = {}
    for prefix, module, salt in ((UNET_PREFIX, unet, 1), (VAE_PREFIX, vae, 2), (CLIP_PREFIX, clip, 3)):
        _init_weights(module, seed * 1000 + salt)
        for key, value in module.state_dict().items():
            value = value.detach()
            sd[prefix + key] = (value.to(dtype) if value.is_floating_point() else value).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"format": "pt", "nodegraph.tiny": "1", "seed": str(seed)})
    return path


def make_tiny_inpainting_checkpoint(path: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Inpainting variant: the UNet takes 9 channels (latent + mask + masked-image latent)."""
    return make_tiny_checkpoint(path, seed=seed, in_channels=9, dtype=dtype)


def _replace_in_channels(cfg: UNetConfig, in_channels: int) -> UNetConfig:
    from dataclasses import replace

    return replace(cfg, in_channels=in_channels)


@torch.no_grad()
def _init_weights(module: nn.Module, seed: int) -> None:
    """Deterministic init that keeps activations O(1): matrices N(0, 1/fan_in), norm scales ≈ 1.

    Default PyTorch init is fine too, but LDM zero-initialises output layers and HF uses tiny stds,
    which would make a random model's outputs ~0 and tests that compare outputs meaningless.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if p.ndim >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        elif name.endswith("weight"):  # GroupNorm / LayerNorm scale
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
