"""CLIP vision encoders (the CLIP_VISION socket) on transformers' CLIPVisionModelWithProjection: the config
read off the file's shapes, ComfyUI's image preprocessing, and the CLIP_VISION_OUTPUT that unCLIP, style
models and IP-Adapter-style node packs read (`image_embeds`, `last_hidden_state`, `penultimate_hidden_states`)."""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # transformers is imported where a vision model is built: it costs seconds of a cold start
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from . import device as device_policy
from .device import cpu_threads
from .errors import ModelLoadError
from .model_detection import describe_state_dict
from .memory import module_parts
from .state_dict import load_state_dict

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# Heads and activation are not visible in the weights. The released towers: ViT-L/14 (OpenAI, 1024 wide,
# quick_gelu), ViT-H/14 and ViT-bigG/14 (LAION OpenCLIP, 1280 / 1664 wide, gelu), all with 16 heads.
# Other widths (test models) get 64-wide heads and OpenAI's quick_gelu.
KNOWN_TOWERS = {1024: (16, "quick_gelu"), 1280: (16, "gelu"), 1664: (16, "gelu")}
PREFIX = "vision_model."
# Tensors a CLIP vision file may carry besides the vision tower: the text half of a full CLIP model,
# position ids (always 0..n-1 here), the image-text logit scale.
_IGNORED = re.compile(r"^(text_model\.|text_projection|logit_scale|vision_model\.embeddings\.position_ids)")


class ClipVisionOutput:
    """What CLIPVisionEncode returns; fields readable as attributes or items (`out["image_embeds"]`)."""

    def __init__(self, last_hidden_state: torch.Tensor, penultimate_hidden_states: torch.Tensor,
                 image_embeds: torch.Tensor):
        self.last_hidden_state = last_hidden_state              # [B, 1 + patches, width], before post-layernorm
        self.penultimate_hidden_states = penultimate_hidden_states  # output of the second-to-last layer
        self.image_embeds = image_embeds                        # [B, projection_dim]
        self.mm_projected = None                                # LLaVA projector output; no SD1 tower has one

    def __getitem__(self, key: str):
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        setattr(self, key, value)

    def memory_parts(self):
        from .memory import tensor_parts
        return tensor_parts([self.last_hidden_state, self.penultimate_hidden_states, self.image_embeds])


class ClipVision:
    """A loaded CLIP vision tower: `encode_image(image, crop=True)` → ClipVisionOutput."""

    def __init__(self, model: CLIPVisionModelWithProjection, *, image_mean=OPENAI_MEAN, image_std=OPENAI_STD):
        self.model = model
        self.image_size = model.config.image_size
        self.image_mean, self.image_std = image_mean, image_std

    def memory_parts(self):
        return module_parts(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ComfyUI's ClipVisionModel methods that node packs call.
    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_sd(self, sd: Mapping[str, torch.Tensor]):
        return self.model.load_state_dict(sd, strict=False)

    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        """IMAGE [B, H, W, C] in 0..1 → the tower's outputs, float32 on the CPU."""
        pixels = clip_preprocess(image.to(self.device), self.image_size, self.image_mean, self.image_std, crop)
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode(), cpu_threads(self.model):
            out = self.model(pixel_values=pixels.to(dtype), output_hidden_states=True)
        return ClipVisionOutput(out.last_hidden_state.float().cpu().clone(),
                                out.hidden_states[-2].float().cpu().clone(),
                                out.image_embeds.float().cpu().clone())


def clip_preprocess(image: torch.Tensor, size: int, mean=OPENAI_MEAN, std=OPENAI_STD, crop: bool = True) -> torch.Tensor:
    """IMAGE [B, H, W, C] → normalised pixels [B, 3, size, size], as ComfyUI prepares them: RGB only;
    unless already size×size, resized with antialiased bicubic so the short side is `size` and
    centre-cropped (crop=True), or squashed to size×size (crop=False); quantised to 8 bits; normalised."""
    if image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"expected an IMAGE [batch, height, width, 3], got shape {tuple(image.shape)}")
    pixels = image[..., :3].movedim(-1, 1).float()
    if pixels.shape[2] != size or pixels.shape[3] != size:
        if crop:
            scale = size / min(pixels.shape[2], pixels.shape[3])
            target = (round(scale * pixels.shape[2]), round(scale * pixels.shape[3]))
        else:
            target = (size, size)
        pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
        top, left = (pixels.shape[2] - size) // 2, (pixels.shape[3] - size) // 2
        pixels = pixels[:, :, top:top + size, left:left + size]
    pixels = torch.clip(255.0 * pixels, 0, 255).round() / 255.0
    mean = torch.tensor(mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
    return (pixels - mean) / std


def detect_vision_config(sd: Mapping[str, torch.Tensor]) -> CLIPVisionConfig:
    """The CLIPVisionConfig that fits these `vision_model.*` / `visual_projection.*` tensors."""
    from transformers import CLIPVisionConfig

    try:
        width, channels, patch, _ = sd[PREFIX + "embeddings.patch_embedding.weight"].shape
        positions = sd[PREFIX + "embeddings.position_embedding.weight"].shape[0]
        intermediate = sd[PREFIX + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]!r}") from None
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k)))
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ValueError(f"{positions} position embeddings are not 1 + a square number of patches")
    heads, act = KNOWN_TOWERS.get(width, (max(1, width // 64), "quick_gelu"))
    projection = sd.get("visual_projection.weight")
    return CLIPVisionConfig(hidden_size=width, intermediate_size=intermediate, num_hidden_layers=layers,
                            num_attention_heads=heads, num_channels=channels, patch_size=patch,
                            image_size=grid * patch, hidden_act=act, layer_norm_eps=1e-5,
                            projection_dim=projection.shape[0] if projection is not None else width)


def openai_to_transformers(sd: Mapping[str, torch.Tensor], prefix: str = "visual.") -> dict[str, torch.Tensor]:
    """OpenAI / OpenCLIP layout (`visual.transformer.resblocks.N.attn.in_proj_weight`, `visual.proj`, ...)
    → transformers' names; the fused q/k/v projection is split in thirds (q, k, v order)."""
    renames = {"class_embedding": "embeddings.class_embedding", "conv1.weight": "embeddings.patch_embedding.weight",
               "positional_embedding": "embeddings.position_embedding.weight",
               "ln_pre.weight": "pre_layrnorm.weight", "ln_pre.bias": "pre_layrnorm.bias",
               "ln_post.weight": "post_layernorm.weight", "ln_post.bias": "post_layernorm.bias"}
    block = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
             "attn.out_proj": "self_attn.out_proj"}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif name in renames:
            out[PREFIX + renames[name]] = value
        elif m := re.match(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$", name):
            layer, kind = m.groups()
            for part, tensor in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{PREFIX}encoder.layers.{layer}.self_attn.{part}.{kind}"] = tensor.contiguous()
        elif (m := re.match(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$", name)) and m.group(2) in block:
            layer, module, kind = m.groups()
            out[f"{PREFIX}encoder.layers.{layer}.{block[module]}.{kind}"] = value
    return out


def build_clip_vision(sd: Mapping[str, torch.Tensor], *, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32, path: str | Path | None = None) -> ClipVision:
    """A ClipVision with exactly these weights (transformers or OpenAI layout); ModelLoadError otherwise."""
    if any(k.startswith("visual.transformer.resblocks.") for k in sd):
        sd = openai_to_transformers(sd)
    if not any(k.startswith(PREFIX + "encoder.layers.") for k in sd):
        raise ModelLoadError(path, f"not a CLIP vision model: {describe_state_dict(sd)}")
    try:
        config = detect_vision_config(sd)
    except ValueError as exc:
        raise ModelLoadError(path, f"CLIP vision weights are incomplete: {exc}") from None
    from transformers import CLIPVisionModelWithProjection

    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config)
    model = model.to_empty(device=device).to(dtype)
    embeddings = model.vision_model.embeddings
    embeddings.position_ids.copy_(torch.arange(embeddings.num_positions, device=device).unsqueeze(0))
    expected = model.state_dict()
    weights = {k: v for k, v in sd.items() if not _IGNORED.match(k)}
    if "visual_projection.weight" not in weights:  # a tower saved without its projection: identity, as ComfyUI
        weights["visual_projection.weight"] = torch.eye(config.hidden_size)
        log.warning("CLIP vision file %s has no visual_projection; image_embeds are the pooled output", path)
    problems = [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    problems += [f"{k}: file {tuple(v.shape)}, model {tuple(expected[k].shape)}"
                 for k, v in weights.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        shown = "; ".join(problems[:12]) + (f"; … {len(problems) - 12} more" if len(problems) > 12 else "")
        raise ModelLoadError(path, f"CLIP vision weights do not fit ({len(problems)} problems): {shown}")
    model.load_state_dict(weights, strict=True)
    return ClipVision(model.eval().requires_grad_(False))


def load_clip_vision(path: str | Path) -> ClipVision:
    device = device_policy.compute_device()
    return build_clip_vision(load_state_dict(path), device=device, dtype=device_policy.text_encoder_dtype(device),
                             path=path)
