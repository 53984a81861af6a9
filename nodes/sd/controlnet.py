"""SD1.x ControlNet: a copy of the UNet encoder, fed a hint image, whose zero-conv outputs are added
to the UNet's skip connections. The model, loading its files, and the runtime object the sampler calls.

Files: the original layout (`control_model.` prefix or none) and the diffusers layout; "diff" ControlNets
(weights stored as differences to a base model) given that model; T2I-Adapter files go to nodes.sd.t2i_adapter.
Other kinds (Control-LoRA, union / SDXL / SD3 / Flux ControlNets) are refused by name.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nodes.image_ops import upscale
from nodes.sd import device as device_policy
from nodes.sd.checkpoint import load_weights
from nodes.sd.errors import ModelLoadError, NotAnSDCheckpointError
from nodes.sd.model_cache import MODEL_CACHE, file_identity
from nodes.sd.model_detection import describe_state_dict, unet_config_from_state_dict
from nodes.sd.state_dict import load_state_dict, split_by_prefix
from nodes.sd.unet import (UNetConfig, build_input_blocks, build_middle_block, build_time_embed,
                           input_block_channels, timestep_embedding)

log = logging.getLogger(__name__)

ORIGINAL_PREFIX = "control_model."
SD15_HINT_BLOCK_CHANNELS = (16, 32, 96, 256)
HINT_UPSCALE_METHOD = "nearest-exact"


class UnsupportedControlNetError(ModelLoadError):
    """A ControlNet-like file of a kind nodegraph does not run (adapter, LoRA, other architecture)."""


# ---------------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class ControlNetConfig:
    unet: UNetConfig
    hint_channels: int = 3
    hint_block_channels: tuple[int, ...] = SD15_HINT_BLOCK_CHANNELS  # one stride-2 step between widths


def build_hint_block(cfg: ControlNetConfig) -> nn.Sequential:
    """Hint image → features at latent size: conv_in, then (conv, conv stride 2) per width step, then a
    zero conv to the UNet's first width; SiLU between. Indices 0, 2, …, 14 for SD1.5's four widths."""
    widths = cfg.hint_block_channels
    convs = [nn.Conv2d(cfg.hint_channels, widths[0], 3, padding=1)]
    for c_in, c_out in zip(widths, widths[1:]):
        convs += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.Conv2d(c_in, c_out, 3, padding=1, stride=2)]
    convs.append(nn.Conv2d(widths[-1], cfg.unet.model_channels, 3, padding=1))
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, nn.SiLU()]
    return nn.Sequential(*layers[:-1])


class ControlNetModel(nn.Module):
    """Parameter names are the original file's keys without `control_model.`."""

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        self.config = config
        u = config.unet
        self.time_embed = build_time_embed(u)
        self.input_hint_block = build_hint_block(config)
        self.input_blocks = build_input_blocks(u)
        self.zero_convs = nn.ModuleList(nn.Sequential(nn.Conv2d(ch, ch, 1)) for ch in input_block_channels(u))
        ch = u.level_channels[-1]
        self.middle_block = build_middle_block(u)
        self.middle_block_out = nn.Sequential(nn.Conv2d(ch, ch, 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.middle_block_out[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.middle_block_out[0].weight.device

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> dict:
        """x (B, in_ch, h, w), hint (B, hint_ch, 8h, 8w), timesteps (B,), context (B, T, C) →
        {"output": [one residual per input block, in encoder order], "middle": [one residual]}."""
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.config.unet.model_channels).to(x.dtype))
        guided_hint = self.input_hint_block(hint)  # (B, model_channels, h, w)
        h, outputs = x, []
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:  # the hint joins right after conv_in
                h = h + guided_hint
            outputs.append(zero_conv(h))
        h = self.middle_block(h, emb, context)
        return {"output": outputs, "middle": [self.middle_block_out(h)]}


# ---------------------------------------------------------------------------------------------- files

def controlnet_state_dict(sd: Mapping[str, torch.Tensor], path: Path | str | None = None) -> dict[str, torch.Tensor]:
    """Any supported ControlNet file's tensors as original-layout keys without `control_model.`;
    UnsupportedControlNetError for the kinds we recognise but do not run, naming the file."""
    keys = set(sd)
    if "lora_controlnet" in keys:
        raise UnsupportedControlNetError(path, "this is a Control-LoRA (Stability AI); nodegraph runs full "
                                               "SD1.x ControlNets only")
    if f"{ORIGINAL_PREFIX}zero_convs.0.0.weight" in keys:
        if "difference" in keys:
            raise UnsupportedControlNetError(path, "this is a 'diff' ControlNet (its weights are differences to a "
                                                   "base model); load it with 'Load ControlNet Model (diff)' "
                                                   "(DiffControlNetLoader) and the model it was made for")
        return split_by_prefix(sd, ORIGINAL_PREFIX)
    if "zero_convs.0.0.weight" in keys:
        return dict(sd)
    if "controlnet_cond_embedding.conv_in.weight" in keys:
        if any(k.startswith("control_add_embedding.") for k in keys):
            raise UnsupportedControlNetError(path, "this is a Union ControlNet (several control types in one); "
                                                   "nodegraph runs single-type SD1.x ControlNets only")
        if any(k.startswith("add_embedding.") for k in keys):
            raise UnsupportedControlNetError(path, "this is an SDXL ControlNet (it has SDXL's size embedding); "
                                                   "nodegraph runs SD1.x ControlNets only")
        return controlnet_diffusers_to_original(sd, path)
    for needle, what in (("controlnet_blocks.0.weight", "an SD3 / Flux / HunyuanDiT ControlNet"),
                         ("controlnet_x_embedder.weight", "a Flux ControlNet"),
                         ("pos_embed_input.proj.weight", "an SD3 ControlNet")):
        if needle in keys:
            raise UnsupportedControlNetError(path, f"this is {what}; nodegraph runs SD1.x ControlNets only")
    if "style_embedding" in keys:
        raise UnsupportedControlNetError(path, "this is a T2I-Adapter style model; load it with 'Load Style Model' "
                                               "(StyleModelLoader) from models/style_models")
    raise UnsupportedControlNetError(path, f"not a ControlNet ({describe_state_dict(sd)})")


# diffusers ResBlock sub-layer → LDM sub-layer.
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2", "controlnet_mid_block": "middle_block_out.0",
        "controlnet_cond_embedding.conv_in": "input_hint_block.0"}


def controlnet_diffusers_key_map(keys) -> dict[str, str]:
    """{diffusers key: original key} for a diffusers `ControlNetModel` state dict's keys.

    Block positions come from the keys themselves: down block l, resnet j is input block
    1 + l·(R+1) + j (R resnets per level, the downsampler last); hint-embedding block j is
    `input_hint_block.{2j+2}` and its conv_out follows the last block. Unknown keys raise KeyError."""
    keys = list(keys)
    per_level = 1 + max((int(m.group(1)) for k in keys if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))),
                        default=-1)
    n_embed = 1 + max((int(m.group(1)) for k in keys
                       if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))), default=-1)
    rules = [
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(.+)",
         lambda l, j, layer, p: f"input_blocks.{1 + int(l) * (per_level + 1) + int(j)}.0.{_RESNET[layer]}.{p}"),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)",
         lambda l, j, p: f"input_blocks.{1 + int(l) * (per_level + 1) + int(j)}.1.{p}"),
        (r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)",
         lambda l, p: f"input_blocks.{1 + int(l) * (per_level + 1) + per_level}.0.op.{p}"),
        (r"mid_block\.resnets\.(\d+)\.(\w+)\.(.+)",
         lambda i, layer, p: f"middle_block.{2 * int(i)}.{_RESNET[layer]}.{p}"),
        (r"mid_block\.attentions\.0\.(.+)", lambda p: f"middle_block.1.{p}"),
        (r"controlnet_down_blocks\.(\d+)\.(.+)", lambda i, p: f"zero_convs.{i}.0.{p}"),
        (r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", lambda j, p: f"input_hint_block.{2 * int(j) + 2}.{p}"),
        (r"controlnet_cond_embedding\.conv_out\.(.+)", lambda p: f"input_hint_block.{2 * n_embed + 2}.{p}"),
        (r"(conv_in|time_embedding\.linear_[12]|controlnet_mid_block|controlnet_cond_embedding\.conv_in)\.(.+)",
         lambda top, p: f"{_TOP[top]}.{p}"),
    ]
    compiled = [(re.compile(pattern + "$"), fn) for pattern, fn in rules]
    mapping = {}
    for key in keys:
        for pattern, fn in compiled:
            m = pattern.match(key)
            if m is not None:
                try:
                    mapping[key] = fn(*m.groups())
                except KeyError:  # a ResBlock sub-layer we do not know
                    continue
                break
        else:
            raise KeyError(key)
    return mapping


def controlnet_diffusers_to_original(sd: Mapping[str, torch.Tensor], path=None) -> dict[str, torch.Tensor]:
    try:
        mapping = controlnet_diffusers_key_map(sd)
    except KeyError as e:
        raise UnsupportedControlNetError(path, f"diffusers-format ControlNet with an unknown tensor '{e.args[0]}'; "
                                               "it is not an SD1.x ControlNet") from e
    return {mapping[k]: v for k, v in sd.items()}


def controlnet_config_from_state_dict(sd: Mapping[str, torch.Tensor], path=None) -> ControlNetConfig:
    """Architecture from the original-layout keys: the UNet part through the checkpoint's model
    detection, the hint block from its conv shapes."""
    # A ControlNet has no decoder; detection reads the output width from `out.2`, which equals the input width.
    in_ch, model_ch = sd["input_blocks.0.0.weight"].shape[1], sd["input_blocks.0.0.weight"].shape[0]
    probe = {**sd, "out.2.weight": torch.empty((in_ch, model_ch, 3, 3), device="meta")}
    try:
        unet = unet_config_from_state_dict(probe, path)
    except NotAnSDCheckpointError as e:
        raise UnsupportedControlNetError(path, f"not an SD1.x ControlNet: {e.reason}") from e
    convs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"input_hint_block\.(\d+)\.weight", k)))
    if len(convs) < 2 or len(convs) % 2:
        raise UnsupportedControlNetError(path, f"the hint block has {len(convs)} convolutions; an SD1.x ControlNet "
                                               "has an even number (conv_in, pairs per width step, conv_out)")
    widths = tuple(sd[f"input_hint_block.{convs[i]}.weight"].shape[0] for i in range(0, len(convs) - 1, 2))
    hint_channels = sd[f"input_hint_block.{convs[0]}.weight"].shape[1]
    return ControlNetConfig(unet=unet, hint_channels=hint_channels, hint_block_channels=widths)


def controlnet_from_state_dict(sd: Mapping[str, torch.Tensor], *, device: torch.device | str = "cpu",
                               dtype: torch.dtype | None = None, path=None) -> ControlNetModel:
    sd = controlnet_state_dict(sd, path)
    config = controlnet_config_from_state_dict(sd, path)
    dev = torch.device(device)
    model = load_weights(lambda: ControlNetModel(config), sd, "ControlNet", path, dev,
                         dtype or device_policy.unet_dtype(dev))
    log.info("loaded ControlNet %s (hint channels %d, %s)", path or "state dict", config.hint_channels, dev)
    return model


def load_controlnet(path: str | Path, *, device: torch.device | str | None = None) -> ControlNet:
    """A fresh ControlNet (or T2I-Adapter) runtime object over the file's model, loaded once per process."""
    from .t2i_adapter import T2IAdapter, adapter_from_state_dict, is_t2i_adapter

    path = Path(path)
    dev = torch.device(device) if device is not None else device_policy.compute_device()

    def build():
        sd = load_state_dict(path)
        if is_t2i_adapter(sd):
            return adapter_from_state_dict(sd, device=dev, dtype=device_policy.unet_dtype(dev), path=path)
        return controlnet_from_state_dict(sd, device=dev, path=path)

    model = MODEL_CACHE.get_or_load(("controlnet", *file_identity(path), str(dev)), build)
    if not isinstance(model, ControlNetModel):
        return T2IAdapter(model, name=path.name)
    # ControlNet "shuffle" models were trained with globally pooled residuals (ComfyUI's naming rule).
    pooled = path.stem.endswith(("_shuffle", "_shuffle_fp16"))
    return ControlNet(model, name=path.name, global_average_pooling=pooled)


def load_diff_controlnet(path: str | Path, base_model, *, device: torch.device | str | None = None) -> ControlNet:
    """A ControlNet from a file whose weights are differences to `base_model` (a MODEL patcher): each
    `control_model.X` that is also a UNet weight X becomes base X (with the model's patches, e.g. LoRAs)
    plus the difference, added in the file's dtype as ComfyUI adds them. A full ControlNet file (no
    `difference` marker) loads as usual."""
    path = Path(path)
    dev = torch.device(device) if device is not None else device_policy.compute_device()
    sd = load_state_dict(path)
    if "difference" not in sd:
        return load_controlnet(path, device=device)

    def build():
        # ordinary tensors (they become parameters), even when the node runs under inference mode
        with torch.inference_mode(False), torch.no_grad(), base_model.applied() as unet:
            base = unet.state_dict()
            full = {}
            for key, value in sd.items():
                name = key[len(ORIGINAL_PREFIX):] if key.startswith(ORIGINAL_PREFIX) else None
                if name is not None and name in base:
                    value = value + base[name].to(value.device, value.dtype)
                full[key] = value
        full.pop("difference")
        log.info("diff ControlNet %s: %d weights added to the model's", path.name,
                 sum(1 for k in sd if k.startswith(ORIGINAL_PREFIX) and k[len(ORIGINAL_PREFIX):] in base))
        return controlnet_from_state_dict(full, device=dev, path=path)

    key = ("diff-controlnet", *file_identity(path), id(base_model.model), base_model.patches_uuid, str(dev))
    return ControlNet(MODEL_CACHE.get_or_load(key, build), name=path.name)


# ---------------------------------------------------------------------------------------------- runtime

def prepare_hint(image_nchw: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre crop to the target aspect, then nearest-exact resize to (height, width)."""
    return upscale(image_nchw, width, height, HINT_UPSCALE_METHOD, "center")


def broadcast_hint(hint: torch.Tensor, rows: int, chunks: int) -> torch.Tensor:
    """Tile a hint batch to `rows` = chunks × latent batch rows: one image serves every row; a batch
    of hints is cycled (or cut) to the latent batch and repeated for each conditioning chunk."""
    if hint.shape[0] == 1 or hint.shape[0] == rows:
        return hint
    per_chunk = max(1, rows // max(1, chunks))
    reps = -(-per_chunk // hint.shape[0])
    one = hint.repeat(reps, 1, 1, 1)[:per_chunk]
    return one.repeat(rows // per_chunk, 1, 1, 1)


class ControlNet:
    """A ControlNet with its hint, strength and sigma window: what the apply nodes put into a
    conditioning under "control" (a ControlProvider, see nodes.sd.sampling.cfg).

    `copy()` shares the model; `set_cond_hint` / `set_previous_controlnet` return self so the nodes
    can chain calls. A chain is evaluated from the first net applied to the last; residuals add up."""

    def __init__(self, model: ControlNetModel, *, name: str = "", global_average_pooling: bool = False):
        self.model = model
        self.name = name
        self.global_average_pooling = global_average_pooling
        self.cond_hint_original: torch.Tensor | None = None  # [B, C, H, W], 0..1
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.vae = None  # accepted for ComfyUI parity; SD1.x ControlNets take the hint in pixel space
        self.previous_controlnet: ControlNet | None = None
        self.sigma_range: tuple[float, float] | None = None  # set by pre_run
        self._hints: dict[tuple, torch.Tensor] = {}

    @property
    def hint_channels(self) -> int:
        return self.model.config.hint_channels

    def copy(self) -> ControlNet:
        c = ControlNet(self.model, name=self.name, global_average_pooling=self.global_average_pooling)
        c.cond_hint_original, c.strength = self.cond_hint_original, self.strength
        c.timestep_percent_range, c.vae = self.timestep_percent_range, self.vae
        return c

    def set_cond_hint(self, cond_hint: torch.Tensor, strength: float = 1.0,
                      timestep_percent_range: tuple[float, float] = (0.0, 1.0), vae=None) -> ControlNet:
        self.cond_hint_original = cond_hint
        self.strength = float(strength)
        self.timestep_percent_range = (float(timestep_percent_range[0]), float(timestep_percent_range[1]))
        self.vae = vae
        self._hints = {}
        return self

    def set_previous_controlnet(self, previous: ControlNet | None) -> ControlNet:
        self.previous_controlnet = previous
        return self

    def chain(self) -> list[ControlNet]:
        """This net and its predecessors, last applied first."""
        out, net = [], self
        while net is not None:
            out.append(net)
            net = net.previous_controlnet
        return out

    # -- ControlProvider -------------------------------------------------------------------------
    def pre_run(self, model_sampling) -> None:
        start, end = self.timestep_percent_range
        self.sigma_range = (model_sampling.percent_to_sigma(start), model_sampling.percent_to_sigma(end))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model_sampling)

    def cleanup(self) -> None:
        self._hints = {}
        if self.previous_controlnet is not None:
            self.previous_controlnet.cleanup()

    def get_control(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                    sigma: torch.Tensor, batch_size: int) -> dict | None:
        previous = None
        if self.previous_controlnet is not None:
            previous = self.previous_controlnet.get_control(x_in, timesteps, context, sigma, batch_size)
        if self.sigma_range is not None:
            s = float(sigma.reshape(-1)[0])
            if s > self.sigma_range[0] or s < self.sigma_range[1]:
                return previous  # outside the window: the net is not evaluated at all
        if self.cond_hint_original is None:
            raise RuntimeError(f"'{self.name}' has no hint image; apply it with an Apply ControlNet node")
        return self._merge(self._residuals(x_in, timesteps, context, batch_size), previous, x_in.dtype)

    def _residuals(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, batch_size: int) -> dict:
        """This net's own residuals for one batched UNet call (strength not applied yet)."""
        model = self.model
        hint = self._hint_for(x_in, batch_size, model.device, model.dtype)
        return model(x_in.to(model.device, model.dtype), hint, timesteps.to(model.device),
                     context.to(model.device, model.dtype))

    def _hint_for(self, x: torch.Tensor, batch_size: int, device, dtype) -> torch.Tensor:
        size = (x.shape[2] * 8, x.shape[3] * 8)
        resized = self._hints.get(size)
        if resized is None:  # once per latent size: img2img passes at several sizes share the net
            resized = prepare_hint(self.cond_hint_original.float(), *size).to(device, dtype)
            self._hints = {size: resized}
        key = (size, x.shape[0], batch_size)
        batched = self._hints.get(key)
        if batched is None:
            batched = self._hints[key] = broadcast_hint(resized, x.shape[0], batch_size)
        return batched

    def _merge(self, residuals: dict, previous: dict | None, dtype: torch.dtype) -> dict:
        """This net's residuals × strength, plus the previous nets' (lists aligned from the start; None = nothing)."""
        out: dict[str, list] = {}
        for key in ("input", "middle", "output"):
            if key not in residuals and key not in (previous or {}):
                continue
            mine = []
            for r in residuals.get(key, []):
                if r is not None:
                    if self.global_average_pooling:
                        r = r.mean(dim=(2, 3), keepdim=True).expand_as(r)
                    r = (r * self.strength).to(dtype)
                mine.append(r)
            for i, p in enumerate((previous or {}).get(key, [])):
                if i >= len(mine):
                    mine.append(p)
                elif p is not None:
                    mine[i] = p if mine[i] is None else p + mine[i]
            out[key] = mine
        return out

    def memory_parts(self):
        """For the engine's cache: the model weights (one identity per storage, so every copy of a
        net counts them once), the hints, and the same for the nets earlier in the chain."""
        from nodes.sd.memory import module_parts, tensor_parts

        for net in self.chain():
            yield from module_parts(net.model)
            hints = [] if net.cond_hint_original is None else [net.cond_hint_original]
            yield from tensor_parts(hints + list(net._hints.values()))

    def __repr__(self) -> str:
        return (f"ControlNet({self.name!r}, strength={self.strength}, percent={self.timestep_percent_range}, "
                f"chain={len(self.chain())})")
