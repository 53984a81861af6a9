"""The SD1.x KL autoencoder (LDM `AutoencoderKL` layout): pixels [-1, 1] ↔ unscaled latents.

Parameter names equal the checkpoint keys after `first_stage_model.`. Latents are returned UNSCALED
(the sampler applies SD's 0.18215), and encode returns the posterior mean, as ComfyUI does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import nnpack
from .fast_ops import no_autograd, upsample2x_conv3x3


def activation_format(device: torch.device) -> torch.memory_format:
    """Where NNPACK takes the large 3×3 convs (CPU), NCHW, the only layout it reads; elsewhere
    channels-last: oneDNN's convolutions take NHWC as it is (NCHW is reordered to a blocked layout and back
    around every conv, ~134 MB each way at 512²) and the mid-block attention's token view is free —
    measured 0.86× the CPU time of the same decoder in NCHW with oneDNN alone (docs/performance-history.md)."""
    return torch.contiguous_format if device.type == "cpu" and nnpack.available() else torch.channels_last


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)  # 4 levels ⇒ downscale factor 8
    num_res_blocks: int = 2  # encoder; the decoder has one more per level
    z_channels: int = 4
    embed_dim: int = 4  # latent channels after quant_conv

    def __post_init__(self):
        for m in self.ch_mult:
            if (self.ch * m) % 32:
                raise ValueError(f"VAE width {self.ch * m} must be a multiple of 32 (GroupNorm)")

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


SD15_VAE_CONFIG = VAEConfig()


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = no_autograd()  # reuse each fresh buffer: at 512² every activation is 134 MB+
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        shortcut = self.nin_shortcut(x)
        return h.add_(shortcut) if inplace else shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels; q/k/v/proj are 1×1 convs in the checkpoint."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        tokens = rearrange(self.norm(x), "b c h w -> b 1 (h w) c").contiguous()
        # A 1×1 conv is a Linear over channels; applying it to token-major data gives SDPA contiguous
        # inputs, which its CPU kernel runs ~20% faster than channel-major views.
        q, k, v = (_as_linear(tokens, t) for t in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        out = _as_linear(out, self.proj_out)
        return x + rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w)


def _as_linear(tokens: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1×1 conv applied as a Linear over the channels of token-major data, in the tokens' dtype."""
    bias = conv.bias.to(tokens.dtype) if conv.bias is not None else None
    return F.linear(tokens, conv.weight.flatten(1).to(tokens.dtype), bias)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as trained


class Upsample(nn.Module):
    """Nearest ×2 then a 3×3 conv (`conv`, the checkpoint's weights), computed as one stride-2 transposed
    conv on the small input (fast_ops: 0.44× the FLOPs; measured 0.64–0.76× the time on the decoder's shapes)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x_conv3x3(x, self.conv)


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level; `attn` stays empty in SD's VAE but keeps the LDM module layout."""

    def __init__(self, blocks: list[nn.Module], resample: nn.Module | None, resample_name: str):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()
        if resample is not None:
            setattr(self, resample_name, resample)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        ch = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            out = cfg.ch * mult
            blocks = [ResnetBlock(ch if i == 0 else out, out) for i in range(cfg.num_res_blocks)]
            ch = out
            last = level == len(cfg.ch_mult) - 1
            self.down.append(Level(blocks, None if last else Downsample(ch), "downsample"))
        self.mid = MidBlock(ch)
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, 2 * cfg.z_channels, 3, padding=1)  # mean and log-variance

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, ch, H, W)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)  # (B, ch·mult[-1], H/f, W/f)
        return self.conv_out(F.silu(self.norm_out(h), inplace=no_autograd()))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, ch, 3, padding=1)
        self.mid = MidBlock(ch)
        # up[0] is the full-resolution level, as in the checkpoint, but it runs last.
        levels: list[Level] = []
        for level in reversed(range(len(cfg.ch_mult))):
            out = cfg.ch * cfg.ch_mult[level]
            blocks = [ResnetBlock(ch if i == 0 else out, out) for i in range(cfg.num_res_blocks + 1)]
            ch = out
            levels.insert(0, Level(blocks, Upsample(ch) if level else None, "upsample"))
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=no_autograd()))


class AutoencoderKL(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (weights may be kept narrower: nodes.sd.weight_casting)."""
        return getattr(self, "compute_dtype", None) or self.quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    def encode_moments(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels (B, 3, H, W) in [-1, 1] → posterior (mean, logvar), each (B, 4, H/8, W/8)."""
        pixels = pixels.to(self.device, self.dtype).contiguous(memory_format=activation_format(self.device))
        moments = self.quant_conv(self.encoder(pixels)).contiguous()
        mean, logvar = moments.chunk(2, dim=1)
        return mean.to(pixels.dtype), logvar.clamp(-30.0, 20.0).to(pixels.dtype)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, H, W) in [-1, 1] → unscaled latent mean (B, 4, H/8, W/8), in the input's dtype."""
        return self.encode_moments(pixels)[0]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """unscaled latent (B, 4, h, w) → pixels (B, 3, 8h, 8w), roughly in [-1, 1] (not clamped)."""
        z = self.post_quant_conv(latent.to(self.device, self.dtype))
        z = z.contiguous(memory_format=activation_format(self.device))
        return self.decoder(z).to(latent.dtype).contiguous()
