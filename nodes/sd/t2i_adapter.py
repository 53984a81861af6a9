"""T2I-Adapters (full and light, TencentARC's original layout or diffusers'): a small network that turns the hint
image into one feature map per UNet level, added to the UNet's encoder once per sampling (not per step).
Loaded through ControlNetLoader and applied by the ControlNet apply nodes, as ComfyUI does."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from . import device as device_policy
from .checkpoint import load_weights
from .controlnet import ControlNet, UnsupportedControlNetError, prepare_hint, broadcast_hint

log = logging.getLogger(__name__)

UNSHUFFLE = 8           # pixels per latent pixel: the hint is pixel-unshuffled 8×8 into channels
FULL_BLOCKS_PER_LEVEL = 2  # the released full adapters (ComfyUI assumes it too; not visible per level)
# Each level's features join the UNet after that level's last encoder block: with SD1's two ResBlocks per
# level, input blocks 2, 5, 8, 11 (ComfyUI's fixed pattern: two empty slots, then the features).
EMPTY_SLOTS_PER_LEVEL = 2


class _Downsample(nn.Module):
    """2×2 average pooling; an odd side is padded (and the padding counted), as the original adapter does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 2, 2, padding=[x.shape[2] % 2, x.shape[3] % 2])


class _FullBlock(nn.Module):
    """[downsample] [in_conv] → h = block2(relu(block1(x))) → h + (skep(x) or x). Kernel size from the file."""

    def __init__(self, c_in: int, c_out: int, ksize: int, *, down: bool, in_conv: bool, skep: bool, down_conv: bool):
        super().__init__()
        pad = ksize // 2
        self.in_conv = nn.Conv2d(c_in, c_out, ksize, 1, pad) if in_conv else None
        self.block1 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(c_out, c_out, ksize, 1, pad)
        self.skep = nn.Conv2d(c_in, c_out, ksize, 1, pad) if skep else None
        self.down = down
        if down:
            self.down_opt = nn.Module()
            if down_conv:
                self.down_opt.op = nn.Conv2d(c_in, c_in, 3, 2, 1)
            else:
                self.down_opt.op = _Downsample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = self.down_opt.op(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        h = self.block2(self.act(self.block1(x)))
        return h + (self.skep(x) if self.skep is not None else x)


class _LightBlock(nn.Module):
    """[downsample] → in_conv (1×1, to c_out/4) → residual 3×3 pairs → out_conv (1×1, to c_out)."""

    def __init__(self, c_in: int, c_out: int, blocks: int, *, down: bool):
        super().__init__()
        mid = c_out // 4
        self.in_conv = nn.Conv2d(c_in, mid, 1)
        self.body = nn.Sequential(*[_LightResidual(mid) for _ in range(blocks)])
        self.out_conv = nn.Conv2d(mid, c_out, 1)
        self.down = _Downsample() if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        return self.out_conv(self.body(self.in_conv(x)))


class _LightResidual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block1 = nn.Conv2d(c, c, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.act(self.block1(x))) + x


@dataclass(frozen=True)
class AdapterConfig:
    kind: str                  # "full" | "light"
    in_channels: int           # unshuffled: hint channels × 64
    channels: tuple[int, ...]  # feature width per level
    blocks_per_level: int
    ksize: int = 1             # full only
    down_conv: bool = False    # full only: strided conv instead of average pooling


class T2IAdapterModel(nn.Module):
    """hint [B, C, 8h, 8w] → one feature map per level (level l at 1/2^l of the latent size)."""

    def __init__(self, config: AdapterConfig, in_conv_blocks: frozenset[int] = frozenset(),
                 skep_blocks: frozenset[int] = frozenset()):
        super().__init__()
        self.config = config
        self.unshuffle = nn.PixelUnshuffle(UNSHUFFLE)
        ch, r = config.channels, config.blocks_per_level
        if config.kind == "full":
            self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, 1, 1)
            blocks = []
            for level in range(len(ch)):
                for j in range(r):
                    i = level * r + j
                    c_in = ch[level - 1] if (level and j == 0) else ch[level]
                    blocks.append(_FullBlock(c_in, ch[level], config.ksize, down=level > 0 and j == 0,
                                             in_conv=i in in_conv_blocks, skep=i in skep_blocks,
                                             down_conv=config.down_conv))
            self.body = nn.ModuleList(blocks)
        else:
            self.body = nn.ModuleList(
                _LightBlock(config.in_channels if level == 0 else ch[level - 1], ch[level], r, down=level > 0)
                for level in range(len(ch)))

    @property
    def hint_channels(self) -> int:
        return self.config.in_channels // (UNSHUFFLE * UNSHUFFLE)

    def forward(self, hint: torch.Tensor) -> list[torch.Tensor]:
        x = self.unshuffle(hint)
        features = []
        if self.config.kind == "full":
            x = self.conv_in(x)
            r = self.config.blocks_per_level
            for level in range(len(self.config.channels)):
                for block in self.body[level * r:(level + 1) * r]:
                    x = block(x)
                features.append(x)
        else:
            for block in self.body:
                x = block(x)
                features.append(x)
        return features


# ---------------------------------------------------------------------------------------------- files

def is_t2i_adapter(sd: Mapping[str, torch.Tensor]) -> bool:
    keys = set(sd)
    return ("body.0.in_conv.weight" in keys or ("conv_in.weight" in keys and "body.0.block1.weight" in keys)
            or any(k.startswith("adapter.body.0.") for k in keys))


def original_layout(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers' T2IAdapter keys (`adapter.body.{level}.resnets.{j}.…`) → the original layout."""
    if not any(k.startswith("adapter.") for k in sd):
        return dict(sd)
    light = any(re.match(r"adapter\.body\.\d+\.out_conv\.", k) for k in sd)
    per_level = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"adapter\.body\.0\.resnets\.(\d+)\.", k)))
    out = {}
    for key, value in sd.items():
        name = key.removeprefix("adapter.")
        if m := re.match(r"body\.(\d+)\.resnets\.(\d+)\.(.+)", name):
            level, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            name = f"body.{level}.body.{j}.{rest}" if light else f"body.{level * per_level + j}.{rest}"
        elif (m := re.match(r"body\.(\d+)\.in_conv\.(.+)", name)) and not light:
            name = f"body.{int(m.group(1)) * per_level}.in_conv.{m.group(2)}"
        out[name] = value
    return out


def adapter_from_state_dict(sd: Mapping[str, torch.Tensor], *, device="cpu", dtype=torch.float32,
                            path: str | Path | None = None) -> T2IAdapterModel:
    sd = original_layout(sd.get("adapter", sd) if isinstance(sd.get("adapter"), Mapping) else sd)
    keys = set(sd)
    if "body.0.in_conv.weight" in keys and "body.0.out_conv.weight" in keys:
        levels = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"body\.(\d+)\.", k)))
        blocks = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"body\.0\.body\.(\d+)\.", k)))
        config = AdapterConfig("light", sd["body.0.in_conv.weight"].shape[1],
                               tuple(sd[f"body.{i}.out_conv.weight"].shape[0] for i in range(levels)), blocks)
        make = lambda: T2IAdapterModel(config)  # noqa: E731
    elif "conv_in.weight" in keys:
        cin = sd["conv_in.weight"].shape[1]
        if cin in (256, 768):
            raise UnsupportedControlNetError(path, "this is an SDXL T2I-Adapter (16× pixel unshuffle); "
                                                   "nodegraph runs SD1.x adapters only")
        n = 1 + max(int(m.group(1)) for k in keys if (m := re.match(r"body\.(\d+)\.", k)))
        r = FULL_BLOCKS_PER_LEVEL
        if n % r:
            raise UnsupportedControlNetError(path, f"a full T2I-Adapter has {r} blocks per level; this file has {n}")
        config = AdapterConfig("full", cin, tuple(sd[f"body.{i}.block1.weight"].shape[0] for i in range(0, n, r)), r,
                               ksize=sd["body.0.block2.weight"].shape[2],
                               down_conv=any(k.endswith("down_opt.op.weight") for k in keys))
        in_conv = frozenset(i for i in range(n) if f"body.{i}.in_conv.weight" in keys)
        skep = frozenset(i for i in range(n) if f"body.{i}.skep.weight" in keys)
        make = lambda: T2IAdapterModel(config, in_conv, skep)  # noqa: E731
    else:
        raise UnsupportedControlNetError(path, "not a T2I-Adapter (no conv_in or body.0.in_conv)")
    if config.in_channels % (UNSHUFFLE * UNSHUFFLE):
        raise UnsupportedControlNetError(path, f"the adapter's {config.in_channels} input channels are not a multiple "
                                               f"of {UNSHUFFLE * UNSHUFFLE} (an 8x8 pixel unshuffle)")
    model = load_weights(make, sd, "T2I-Adapter", path, torch.device(device), dtype)
    log.info("loaded %s T2I-Adapter %s (%d levels, hint channels %d)", config.kind, path or "state dict",
             len(config.channels), model.hint_channels)
    return model


def load_t2i_adapter(sd: Mapping[str, torch.Tensor], path: Path, device=None) -> "T2IAdapter":
    dev = torch.device(device) if device is not None else device_policy.compute_device()
    model = adapter_from_state_dict(sd, device=dev, dtype=device_policy.unet_dtype(dev), path=path)
    return T2IAdapter(model, name=path.name)


# ---------------------------------------------------------------------------------------------- runtime

class T2IAdapter(ControlNet):
    """The runtime object on the CONTROL_NET socket for an adapter: same hint, strength, window and chaining
    as a ControlNet, but its features are computed once per latent size and go to the "input" residuals."""

    def __init__(self, model: T2IAdapterModel, *, name: str = ""):
        super().__init__(model, name=name)
        self._features: dict[tuple, list] = {}

    @property
    def hint_channels(self) -> int:
        return 3  # an RGB IMAGE; one-channel adapters (sketch, canny) average the channels, as ComfyUI

    def copy(self) -> "T2IAdapter":
        c = T2IAdapter(self.model, name=self.name)
        c.cond_hint_original, c.strength = self.cond_hint_original, self.strength
        c.timestep_percent_range, c.vae = self.timestep_percent_range, self.vae
        return c

    def cleanup(self) -> None:
        self._features = {}
        super().cleanup()

    def _residuals(self, x_in, timesteps, context, batch_size) -> dict:
        """{"input": [...]}: the features for this latent size and batch, computed once and reused every step."""
        key = (tuple(x_in.shape), batch_size)
        features = self._features.get(key)
        if features is None:
            hint = prepare_hint(self.cond_hint_original.float(), x_in.shape[2] * UNSHUFFLE, x_in.shape[3] * UNSHUFFLE)
            if self.model.hint_channels == 1 and hint.shape[1] > 1:
                hint = hint.mean(1, keepdim=True)
            hint = broadcast_hint(hint, x_in.shape[0], batch_size)
            first = next(self.model.parameters())
            with torch.inference_mode():
                levels = self.model(hint.to(first.device, first.dtype))
            slots = []
            for feature in levels:
                slots += [None] * EMPTY_SLOTS_PER_LEVEL + [feature]
            features = self._features[key] = slots[::-1]  # consumed from the end: input block 0 pops the last
        return {"input": list(features)}

    def memory_parts(self):
        from .memory import tensor_parts
        yield from super().memory_parts()
        yield from tensor_parts([f for slots in self._features.values() for f in slots if f is not None])
