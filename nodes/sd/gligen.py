"""GLIGEN (position-conditioned boxes): a gated self-attention layer ("fuser") after the self-attention of every
UNet transformer block, attending over the image tokens plus one token per box, where each box token is made
from the box's phrase embedding and the box's coordinates (Fourier features) by a small MLP (position_net).

File format (ComfyUI's `models/gligen`, e.g. gligen_sd14_textbox_pruned): `<block path>.fuser.*` for each
transformer block that has one, in UNet order, and `position_net.*`. Config read off the shapes."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .attention import CrossAttention, FeedForward
from .checkpoint import load_weights
from .errors import ModelLoadError
from .memory import module_parts
from .model_options import ModelOptions
from .model_detection import describe_state_dict
from .state_dict import load_state_dict

log = logging.getLogger(__name__)

MAX_OBJECTS = 30     # box tokens per image (ComfyUI, and the GLIGEN release)
FOURIER_FREQS = 8    # sin and cos of each box coordinate at 8 frequencies (temperature 100)
SD2_CONTEXT = 1024   # SD2.x GLIGENs use 64-wide heads; SD1.x ones 8 heads, as the SD1 UNet


class GatedSelfAttention(nn.Module):
    """x + tanh(α_attn)·attn(norm1([x; linear(objs)]))[:x] then x + tanh(α_dense)·ff(norm2(x)).
    Parameter names are the file's (`linear`, `attn.to_q`, `ff.net.0.proj`, `norm1`, `alpha_attn`, ...)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int):
        super().__init__()
        self.linear = nn.Linear(context_dim, query_dim)
        self.attn = CrossAttention(query_dim, heads, query_dim // heads)
        self.ff = FeedForward(query_dim)
        self.norm1 = nn.LayerNorm(query_dim)
        self.norm2 = nn.LayerNorm(query_dim)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        n_visual = x.shape[1]  # x: (B, HW, C), objs: (B, MAX_OBJECTS, context_dim)
        objs = self.linear(objs)
        x = x + torch.tanh(self.alpha_attn) * self.attn(self.norm1(torch.cat([x, objs], dim=1)))[:, :n_visual]
        return x + torch.tanh(self.alpha_dense) * self.ff(self.norm2(x))


def fourier_features(boxes: torch.Tensor, freqs: int = FOURIER_FREQS, temperature: float = 100.0) -> torch.Tensor:
    """boxes [B, N, 4] → [B, N, freqs·2·4]: per frequency f, sin(f·xyxy) then cos(f·xyxy)."""
    bands = temperature ** (torch.arange(freqs, device=boxes.device, dtype=boxes.dtype) / freqs)
    angles = boxes.unsqueeze(-2) * bands.view(-1, 1)          # (B, N, freqs, 4)
    return torch.stack([angles.sin(), angles.cos()], dim=-2).flatten(-3)  # (B, N, freqs·2·4)


class PositionNet(nn.Module):
    """(boxes, masks, phrase embeddings) → box tokens; padding slots get the learned null features."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 512):
        super().__init__()
        self.position_dim = FOURIER_FREQS * 2 * 4
        self.linears = nn.Sequential(nn.Linear(in_dim + self.position_dim, hidden), nn.SiLU(),
                                     nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))
        self.null_positive_feature = nn.Parameter(torch.zeros(in_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(self.position_dim))

    def forward(self, boxes: torch.Tensor, masks: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        masks = masks.unsqueeze(-1)
        xyxy = fourier_features(boxes)
        embeddings = embeddings * masks + (1 - masks) * self.null_positive_feature.to(embeddings).view(1, 1, -1)
        xyxy = xyxy * masks + (1 - masks) * self.null_position_feature.to(xyxy).view(1, 1, -1)
        return self.linears(torch.cat([embeddings, xyxy], dim=-1))


class Gligen(nn.Module):
    """The fusers, in UNet transformer order, and the position net. `objects(...)` builds the box tokens for
    one sampling chunk; `fuse(x, objs, transformer_index)` is what runs after each self-attention."""

    def __init__(self, fusers: Sequence[GatedSelfAttention], position_net: PositionNet, key_dim: int):
        super().__init__()
        self.module_list = nn.ModuleList(fusers)
        self.position_net = position_net
        self.key_dim = key_dim

    def memory_parts(self):
        return module_parts(self)

    def objects(self, latent_shape: Sequence[int], boxes: Sequence[tuple], device) -> torch.Tensor:
        """Box tokens [B, MAX_OBJECTS, C] for a latent chunk [B, 4, h, w]. `boxes`: (phrase embedding [1, key_dim]
        or [key_dim], height, width, y, x) in latent pixels, as GLIGENTextBoxApply stores them; empty = no box."""
        batch, _, h, w = latent_shape
        if len(boxes) > MAX_OBJECTS:
            raise ValueError(f"GLIGEN takes at most {MAX_OBJECTS} boxes per image, got {len(boxes)}")
        coords = torch.zeros(MAX_OBJECTS, 4)
        masks = torch.zeros(MAX_OBJECTS)
        embeddings = torch.zeros(MAX_OBJECTS, self.key_dim)
        for i, (embedding, bh, bw, y, x) in enumerate(boxes):
            coords[i] = torch.tensor((x / w, y / h, (x + bw) / w, (y + bh) / h))
            masks[i] = 1.0
            embeddings[i] = embedding.reshape(-1).float().cpu()
        param = next(self.position_net.parameters())
        with torch.inference_mode():
            return self.position_net(coords.expand(batch, -1, -1).to(device, param.dtype),
                                     masks.expand(batch, -1).to(device, param.dtype),
                                     embeddings.expand(batch, -1, -1).to(device, param.dtype))

    def fuse(self, x: torch.Tensor, objs: torch.Tensor, transformer_index: int) -> torch.Tensor:
        if transformer_index >= len(self.module_list):
            raise IndexError(f"the UNet has more transformer blocks than this GLIGEN model's "
                             f"{len(self.module_list)} fusers; it was made for another model")
        fuser = self.module_list[transformer_index]
        return fuser(x, objs.to(device=x.device, dtype=x.dtype))


def gligen_unet_patches(entry: tuple, latent_shape: Sequence[int], device) -> Callable[[ModelOptions], ModelOptions]:
    """For a cond's "gligen" option `(kind, loaded GLIGEN, boxes)` at a latent chunk: a function adding the
    after-self-attention patch to the model options of that chunk's UNet call. kind "position" places the
    boxes; any other kind gives GLIGEN no boxes (all null tokens), as ComfyUI's set_empty."""
    kind, loaded, boxes = entry
    gligen: Gligen = loaded.model
    objs = gligen.objects(latent_shape, boxes if kind == "position" else (), device)

    def fuse(x: torch.Tensor, pc) -> torch.Tensor:
        return gligen.fuse(x, objs, pc.transformer_index)

    def add(options: ModelOptions) -> ModelOptions:
        return options.with_after_self_attention_patch(fuse, source="GLIGENTextBoxApply")
    return add


_BLOCK = re.compile(r"(input_blocks|middle_block|output_blocks)\.(\d+)\..*?\.fuser\.(.+)$")
_ORDER = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}


def gligen_from_state_dict(sd: Mapping[str, torch.Tensor], path=None, *, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32) -> Gligen:
    groups: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if m := _BLOCK.search(key):
            groups.setdefault((_ORDER[m.group(1)], int(m.group(2))), {})[m.group(3)] = value
    if "position_net.null_positive_feature" not in sd or not groups:
        raise ModelLoadError(path, f"not a GLIGEN model: {describe_state_dict(sd)}")
    fusers = []
    key_dim = None
    for where in sorted(groups):
        part = groups[where]
        query_dim, key_dim = part["linear.weight"].shape
        heads = query_dim // 64 if key_dim == SD2_CONTEXT else 8
        fusers.append(load_weights(lambda: GatedSelfAttention(query_dim, key_dim, heads), part,
                                   f"GLIGEN fuser {len(fusers)}", path, torch.device(device), dtype))
    position = {k[len("position_net."):]: v for k, v in sd.items() if k.startswith("position_net.")}
    sizes = (position["null_positive_feature"].shape[0], position["linears.4.weight"].shape[0],
             position["linears.0.weight"].shape[0])
    net = load_weights(lambda: PositionNet(*sizes[:2], hidden=sizes[2]), position, "GLIGEN position_net", path,
                       torch.device(device), dtype)
    log.info("GLIGEN %s: %d fusers, phrase width %d", path or "state dict", len(fusers), key_dim)
    return Gligen(fusers, net, key_dim).eval().requires_grad_(False)


def load_gligen(path: str | Path, device=None, dtype=None) -> Gligen:
    from . import device as device_policy
    dev = torch.device(device) if device is not None else device_policy.compute_device()
    return gligen_from_state_dict(load_state_dict(path), path, device=dev, dtype=dtype or device_policy.unet_dtype(dev))
