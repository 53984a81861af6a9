"""The SD1.x denoising UNet (LDM `openaimodel.UNetModel` layout), built from a small config.

Parameter names equal the checkpoint keys after `model.diffusion_model.` so weights load with
`load_state_dict(strict=True)`. The encoder builders are public so a ControlNet can copy the encoder.
Model-option patches (nodes/sd/model_options.py) come in through `forward(..., patch_context=...)`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nodes.sd.attention import SpatialTransformer
from nodes.sd.fast_ops import upsample2x_conv3x3
from nodes.sd.model_options import PatchContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4  # 9 for inpainting models: latent + mask + masked-image latent
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)  # per level; 0 = no attention at that level
    transformer_depth_middle: int = 1
    context_dim: int = 768
    num_heads: int = 8  # SD1 fixes the head count (head width = channels / 8)

    def __post_init__(self):
        if len(self.transformer_depth) != len(self.channel_mult):
            raise ValueError("transformer_depth needs one entry per channel_mult level")
        for ch in self.level_channels:
            if ch % 32 or ch % self.num_heads:
                raise ValueError(f"channel width {ch} must be a multiple of 32 (GroupNorm) and of num_heads")

    @property
    def level_channels(self) -> list[int]:
        return [self.model_channels * m for m in self.channel_mult]

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4


SD15_UNET_CONFIG = UNetConfig()


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim), cos half first (diffusers: flip_sin_to_cos=True, shift 0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """Two 3×3 convs with the timestep embedding added in between; 1×1 skip when widths differ."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)  # (B, Cout, H, W)
        h = h + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2 then 3×3 conv; `output_size` matches the skip exactly for odd latent sizes."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        if output_size is None or tuple(output_size) == (2 * x.shape[-2], 2 * x.shape[-1]):
            return upsample2x_conv3x3(x, self.conv)  # the same result as below, 0.44× the FLOPs
        x = F.interpolate(x, size=tuple(output_size), mode="nearest")
        return self.conv(x)


class TimestepSequential(nn.Sequential):
    """A UNet block: children receive what they need (ResBlock the embedding, transformers the context)."""

    def forward(self, x, emb, context, output_size=None, pc: PatchContext | None = None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, pc)
            elif isinstance(layer, Upsample):
                x = layer(x, output_size)
            else:
                x = layer(x)
        return x


# ---------------------------------------------------------------------------- builders (shared with ControlNet)

def build_time_embed(cfg: UNetConfig) -> nn.Sequential:
    ted = cfg.time_embed_dim
    return nn.Sequential(nn.Linear(cfg.model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))


def input_block_channels(cfg: UNetConfig) -> list[int]:
    """Output width of each input block, i.e. of each skip tensor (and each ControlNet zero conv)."""
    chans = [cfg.model_channels]
    for level, ch in enumerate(cfg.level_channels):
        chans += [ch] * cfg.num_res_blocks
        if level != len(cfg.channel_mult) - 1:
            chans.append(ch)  # downsample keeps the width
    return chans


def build_input_blocks(cfg: UNetConfig) -> nn.ModuleList:
    """conv_in, then per level: num_res_blocks × (ResBlock [+ SpatialTransformer]), then a Downsample."""
    blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.in_channels, cfg.model_channels, 3, padding=1))])
    ch = cfg.model_channels
    for level, out_ch in enumerate(cfg.level_channels):
        for _ in range(cfg.num_res_blocks):
            layers: list[nn.Module] = [ResBlock(ch, cfg.time_embed_dim, out_ch)]
            ch = out_ch
            if cfg.transformer_depth[level]:
                layers.append(SpatialTransformer(ch, cfg.num_heads, cfg.transformer_depth[level], cfg.context_dim))
            blocks.append(TimestepSequential(*layers))
        if level != len(cfg.channel_mult) - 1:
            blocks.append(TimestepSequential(Downsample(ch)))
    return blocks


def build_middle_block(cfg: UNetConfig) -> TimestepSequential:
    ch = cfg.level_channels[-1]
    return TimestepSequential(
        ResBlock(ch, cfg.time_embed_dim, ch),
        SpatialTransformer(ch, cfg.num_heads, cfg.transformer_depth_middle, cfg.context_dim),
        ResBlock(ch, cfg.time_embed_dim, ch),
    )


def build_output_blocks(cfg: UNetConfig) -> nn.ModuleList:
    """Mirror of the encoder: per level (deepest first) num_res_blocks+1 blocks, each eating one skip."""
    skips = input_block_channels(cfg)
    blocks = nn.ModuleList()
    ch = cfg.level_channels[-1]
    for level in reversed(range(len(cfg.channel_mult))):
        out_ch = cfg.level_channels[level]
        for i in range(cfg.num_res_blocks + 1):
            layers: list[nn.Module] = [ResBlock(ch + skips.pop(), cfg.time_embed_dim, out_ch)]
            ch = out_ch
            if cfg.transformer_depth[level]:
                layers.append(SpatialTransformer(ch, cfg.num_heads, cfg.transformer_depth[level], cfg.context_dim))
            if level and i == cfg.num_res_blocks:
                layers.append(Upsample(ch))
            blocks.append(TimestepSequential(*layers))
    return blocks


class ControlShapeError(ValueError):
    """A ControlNet residual does not fit the UNet activation it is added to."""


def _apply_control(h: torch.Tensor, control: dict | None, name: str, index: int) -> torch.Tensor:
    # ComfyUI's convention: residual lists are consumed from the end; None entries mean "nothing here".
    if not control or not control.get(name):
        return h
    residual = control[name].pop()
    if residual is None:
        return h
    if residual.shape[1:] != h.shape[1:] or residual.shape[0] not in (1, h.shape[0]):
        raise ControlShapeError(
            f"control residual '{name}' for block {index} has shape {tuple(residual.shape)} but the UNet "
            f"activation is {tuple(h.shape)}; the ControlNet does not match this SD1.x model"
        )
    return h + residual.to(h.dtype)


class UNetModel(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        self.time_embed = build_time_embed(config)
        self.input_blocks = build_input_blocks(config)
        self.middle_block = build_middle_block(config)
        self.output_blocks = build_output_blocks(config)
        self.out = nn.Sequential(
            nn.GroupNorm(32, config.model_channels), nn.SiLU(), nn.Conv2d(config.model_channels, config.out_channels, 3, padding=1)
        )

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (weights may be kept narrower: nodes.sd.weight_casting)."""
        return getattr(self, "compute_dtype", None) or self.out[2].weight.dtype

    def attention_sites(self) -> list[tuple[str, int, int]]:
        """(block, number, index) of every transformer block: where attention patches can act."""
        sites = []
        for name, blocks in (("input", self.input_blocks), ("middle", [self.middle_block]), ("output", self.output_blocks)):
            for number, block in enumerate(blocks):
                for layer in block:
                    if isinstance(layer, SpatialTransformer):
                        sites += [(name, number, i) for i in range(len(layer.transformer_blocks))]
        return sites

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        control: dict[str, list[torch.Tensor | None]] | None = None,
        patch_context: PatchContext | None = None,
    ) -> torch.Tensor:
        """x (B, in_ch, H, W), timesteps (B,) or scalar, context (B, T, context_dim) → eps (B, out_ch, H, W).

        `control`: ControlNet residuals `{"input"?, "middle": [1], "output": [one per input block]}`;
        output residual k is added to the skip of input block k. The caller's lists are not modified.
        `patch_context`: model-option patches for this evaluation (None, or one whose patches are all empty,
        runs the plain network).
        """
        pc = patch_context if patch_context is not None and patch_context.patches.active else None
        in_dtype = x.dtype
        x, context = x.to(self.dtype), context.to(self.dtype)
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        control = {k: list(v) for k, v in control.items() if v is not None} if control else None

        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(self.dtype))  # (B, 4C)
        if pc is not None:
            pc.original_shape, pc.transformer_index = tuple(x.shape), 0
        h, hs = x, []
        for i, block in enumerate(self.input_blocks):
            if pc is not None:
                pc.block = ("input", i)
            h = _apply_control(block(h, emb, context, pc=pc), control, "input", i)
            if pc is not None:
                for patch in pc.patches.input_block:
                    h = patch(h, pc)
            hs.append(h)
            if pc is not None:
                for patch in pc.patches.input_block_after_skip:
                    h = patch(h, pc)
        if pc is not None:
            pc.block = ("middle", 0)
        h = _apply_control(self.middle_block(h, emb, context, pc=pc), control, "middle", 0)
        for i, block in enumerate(self.output_blocks):
            skip = _apply_control(hs.pop(), control, "output", len(hs))
            if pc is not None:
                pc.block = ("output", i)
                for patch in pc.patches.output_block:
                    h, skip = patch(h, skip, pc)
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, output_size=hs[-1].shape[-2:] if hs else None, pc=pc)
        return self.out(h).to(in_dtype)
