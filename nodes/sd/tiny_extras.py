"""Tiny random companions of the tiny checkpoint (nodes.sd.tiny): a ControlNet, a LoRA and a depth model.

Real file formats (original `control_model.` ControlNet, kohya LoRA, a transformers folder) shaped
for TINY_UNET_CONFIG / the tiny CLIP, so the example workflows and tests run the real loading code.
"""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from nodes.sd.controlnet import ORIGINAL_PREFIX, ControlNetConfig, ControlNetModel
from nodes.sd.diffusers_keys import unet_diffusers_to_ldm
from nodes.sd.tiny import TINY_CLIP_HIDDEN, TINY_UNET_CONFIG, _init_weights, tiny_clip_config_kwargs
from nodes.sd.unet import UNetConfig, UNetModel

TINY_HINT_BLOCK_CHANNELS = (16, 16, 32, 32)  # three stride-2 steps: hint at 8× the latent, as SD1.5
TINY_CONTROLNET_CONFIG = ControlNetConfig(unet=TINY_UNET_CONFIG, hint_channels=3,
                                          hint_block_channels=TINY_HINT_BLOCK_CHANNELS)
ATTENTION_LAYERS = (".to_q", ".to_k", ".to_v", ".to_out.0")  # diffusers names in the UNet's transformers
CLIP_ATTENTION_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
CLIP_LAYERS = CLIP_ATTENTION_LAYERS + ("mlp.fc1", "mlp.fc2")


def tiny_controlnet_model(*, seed: int = 0, hint_channels: int = 3) -> ControlNetModel:
    """The tiny ControlNet with deterministic random weights (zero convs too: a trained net's are not 0)."""
    model = ControlNetModel(replace(TINY_CONTROLNET_CONFIG, hint_channels=hint_channels)).eval()
    _init_weights(model, seed * 1000 + 7)
    return model


def make_tiny_controlnet(path: str | Path, *, seed: int = 0, hint_channels: int = 3, prefix: bool = True,
                         dtype: torch.dtype = torch.float32) -> Path:
    """Write an original-layout ControlNet .safetensors (keys `control_model.*`, or bare with prefix=False)."""
    path = Path(path)
    head = ORIGINAL_PREFIX if prefix else ""
    sd = {head + k: v.detach().to(dtype).contiguous()
          for k, v in tiny_controlnet_model(seed=seed, hint_channels=hint_channels).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={"format": "pt", "nodegraph.tiny": "1", "seed": str(seed)})
    return path


def tiny_lora_state_dict(*, seed: int = 0, rank: int = 4, alpha: float = 4.0) -> dict[str, torch.Tensor]:
    """kohya-format LoRA for every attention projection of the tiny UNet and every q/k/v/out/fc layer of
    the tiny CLIP."""
    return random_lora_state_dict(TINY_UNET_CONFIG, tiny_clip_config_kwargs(TINY_CLIP_HIDDEN),
                                  seed=seed, rank=rank, alpha=alpha)


def random_lora_state_dict(unet_config: UNetConfig, clip_config: dict, *, seed: int = 0, rank: int = 4,
                           alpha: float = 4.0, unet_layers=ATTENTION_LAYERS, clip_layers=CLIP_LAYERS
                           ) -> dict[str, torch.Tensor]:
    """kohya-format LoRA (`lora_unet_<diffusers path>` / `lora_te_<path>`, `.lora_up/.lora_down/.alpha`)
    on the UNet weights whose diffusers name ends with one of `unet_layers` and the CLIP layers named
    in `clip_layers` (clip_config: transformers.CLIPTextConfig arguments). Random up *and* down (a
    trained LoRA, not a fresh one whose up is 0), sized so that ΔW ≈ 0.3·|W|."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        unet_shapes = {k: v.shape for k, v in UNetModel(unet_config).state_dict().items()}
    layers = [(f"lora_unet_{d[:-len('.weight')].replace('.', '_')}", unet_shapes[l])
              for d, l in sorted(unet_diffusers_to_ldm(unet_config).items())
              if d.endswith(".weight") and d[:-len(".weight")].endswith(tuple(unet_layers))]
    hidden, inner = clip_config["hidden_size"], clip_config["intermediate_size"]
    for i in range(clip_config["num_hidden_layers"]):
        for name in clip_layers:
            shape = {"mlp.fc1": (inner, hidden), "mlp.fc2": (hidden, inner)}.get(name, (hidden, hidden))
            layers.append((f"lora_te_text_model_encoder_layers_{i}_{name.replace('.', '_')}", torch.Size(shape)))
    sd = {}
    for base, (out_f, in_f) in layers:
        sd[f"{base}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) / math.sqrt(in_f)
        sd[f"{base}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * 0.3 / math.sqrt(rank)
        sd[f"{base}.alpha"] = torch.tensor(float(alpha))
    return sd


def make_tiny_lora(path: str | Path, *, seed: int = 0, rank: int = 4, alpha: float = 4.0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tiny_lora_state_dict(seed=seed, rank=rank, alpha=alpha), str(path),
              metadata={"ss_network_dim": str(rank), "ss_network_alpha": str(alpha), "nodegraph.tiny": "1"})
    return path


def make_tiny_depth_model(folder: str | Path, *, seed: int = 0) -> Path:
    """A tiny randomly initialised DPT (MiDaS-like, 32×32 input) saved with save_pretrained, plus its
    image-processor config: what models/depth/<name>/ holds for a real model."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor  # heavy; only here

    folder = Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DPTForDepthEstimation(DPTConfig(
            image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=37, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16, head_hidden_size=16))
    model.save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False,
                      ensure_multiple_of=16).save_pretrained(folder)
    return folder
