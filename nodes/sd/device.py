"""Where the SD models run and in which dtype: one small policy, overridable with NODEGRAPH_DEVICE.

fp16 UNet / text encoder on CUDA (fast, SD1 is trained to tolerate it); fp32 everywhere on CPU
(CPU half kernels are slow or missing); the VAE in bf16 where supported, else fp32, because the SD
VAE decoder overflows in fp16 and produces black images.
"""
from __future__ import annotations

import os

import torch

DEVICE_ENV = "NODEGRAPH_DEVICE"


def compute_device() -> torch.device:
    """CUDA if available, else CPU; `NODEGRAPH_DEVICE=cpu` (or `cuda:1`, ...) overrides."""
    override = os.environ.get(DEVICE_ENV, "").strip()
    if override:
        return torch.device(override)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def unet_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def text_encoder_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def vae_dtype(device: torch.device) -> torch.dtype:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
