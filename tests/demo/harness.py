"""Generating with the shipped demo models through the ordinary code paths: the checkpoint loader and
model detection, the CLIP text encoder and tokenizer, the ModelPatcher, the KSampler node's sampler
(nodes.sampling.run_sampler: noise, sigmas, CFG, sampler), LoRA patches (nodes.sd.lora.apply_lora),
ControlNet files (nodes.sd.controlnet.load_controlnet) and the VAE socket's decode.

Prompts are batched: one sampler run draws a whole batch, each row with its own conditioning and its
own noise (batch_index), which is what makes ≥ 50 held-out prompts affordable in a default test run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# NODEGRAPH_DEMO_DIR judges candidate weights (training/export.py --out …) without shipping them
DEMO_DIR = Path(os.environ.get("NODEGRAPH_DEMO_DIR") or Path(__file__).resolve().parents[2] / "nodes" / "sd" / "demo")
CHECKPOINT = DEMO_DIR / "nodegraph-demo.safetensors"
LORA = DEMO_DIR / "nodegraph-demo-lora.safetensors"
CONTROLNET = DEMO_DIR / "nodegraph-demo-controlnet.safetensors"
DEPTH_CONTROLNET = DEMO_DIR / "nodegraph-demo-depth-controlnet.safetensors"
DEPTH_MODEL = DEMO_DIR / "nodegraph-demo-depth"  # a transformers DPT folder, as models/depth/<name>/
CANNY_LOW, CANNY_HIGH = 0.05, 0.1  # the thresholds the ControlNet was trained with (training/common.py)

# The settings of the judged generations: few steps of a fast sampler at 64×64 (see the model card).
STEPS, CFG, SAMPLER, SCHEDULER = 12, 5.0, "euler", "normal"


@dataclass
class Demo:
    model: object  # ModelPatcher over the UNet
    clip: object  # nodes.sd.clip.CLIP
    vae: object  # nodes.sd.vae_runtime.VAE


def load_demo(path: Path = CHECKPOINT) -> Demo:
    from nodes.sd.checkpoint import load_checkpoint
    from nodes.sd.clip.clip import load_clip_from_state_dict
    from nodes.sd.patcher import ModelPatcher
    from nodes.sd.vae_runtime import VAE

    ckpt = load_checkpoint(path, device="cpu")
    clip = load_clip_from_state_dict(ckpt.clip_state_dict)
    return Demo(ModelPatcher(ckpt.unet, torch.device("cpu"), torch.device("cpu")), clip, VAE(ckpt.vae))


def encode(clip, prompts: list[str]) -> torch.Tensor:
    return torch.cat([clip.encode(p)[0] for p in prompts])


def generate(demo: Demo, prompts: list[str], *, seed: int = 0, steps: int = STEPS, cfg: float = CFG,
             sampler: str = SAMPLER, scheduler: str = SCHEDULER, negative: str = "", model=None, clip=None,
             control=None, size: int = 64, batch_index: list[int] | None = None) -> np.ndarray:
    """uint8 (N, size, size, 3): one image per prompt. Row i gets the noise of batch index
    `batch_index[i]` (default i), as a lone generation at that index would."""
    from nodes.sampling import run_sampler

    model = model if model is not None else demo.model
    clip = clip if clip is not None else demo.clip
    cond = encode(clip, prompts)
    uncond = encode(clip, [negative])
    extra = {} if control is None else {"control": control}
    latent = {"samples": torch.zeros(len(prompts), 4, size // 8, size // 8),
              "batch_index": list(batch_index or range(len(prompts)))}
    out = run_sampler(model, latent, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler, scheduler=scheduler,
                      positive=[[cond, dict(extra)]], negative=[[uncond, dict(extra)]])
    images = demo.vae.decode(out["samples"])
    return (images.numpy() * 255.0).round().astype(np.uint8)


def with_lora(demo: Demo, strength: float, path: Path = LORA):
    """(model, clip) with the demo LoRA at `strength`, as the Load LoRA node makes them."""
    from nodes.loaders import LoraLoader
    from nodes.sd.lora import apply_lora
    from nodes.sd.state_dict import load_state_dict

    if strength == 0:  # the node's own shortcut: nothing is patched
        return LoraLoader().run(demo.model, demo.clip, "unused", 0.0, 0.0)
    model, clip, _ = apply_lora(demo.model, demo.clip, load_state_dict(path), strength, strength, name=path.name)
    return model, clip


def canny(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the Canny node's output: float (N, H, W, 3) in {0, 1}."""
    from nodes.preprocess.canny import canny_edges

    return canny_edges(torch.from_numpy(images).float() / 255.0, CANNY_LOW, CANNY_HIGH)


def controlnet(edges: torch.Tensor, strength: float = 1.0, path: Path = CONTROLNET):
    """A ControlNet with its hint set, as Apply ControlNet (Advanced) puts it into a conditioning."""
    from nodes.sd.controlnet import load_controlnet

    net = load_controlnet(path, device="cpu")
    return net.set_cond_hint(edges.movedim(-1, 1), strength)


def depth(images: np.ndarray, folder: Path = DEPTH_MODEL) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> the DepthEstimation node's output with the demo depth estimator: float
    (N, H, W, 3), near = bright, each map normalised to 0..1."""
    from nodes.preprocess.depth import estimate_depth, load_depth_model

    return estimate_depth(load_depth_model(folder, device="cpu"), torch.from_numpy(images).float() / 255.0)


def depth_region(depth_map) -> np.ndarray:
    """The near region (> 0.5) of one normalised depth map (H, W, 3): the shape the depth ControlNet is
    asked to draw."""
    d = np.asarray(depth_map.detach().cpu().numpy() if hasattr(depth_map, "detach") else depth_map)
    return d[..., 0] > 0.5
