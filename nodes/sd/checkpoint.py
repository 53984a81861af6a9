"""Loading SD1.x single-file checkpoints and standalone VAE files into our UNet / VAE modules.

Modules are built on the meta device (no random init of ~1 GB of weights); every key and shape is
checked against the file's header first and mismatches are named; then each tensor is read, kept in
its storage dtype (the file's in the lean weight mode, see nodes.sd.device) and assigned in, one at a
time, so loading never holds the file and the model side by side.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nodes.sd import device as device_policy
from nodes.sd.errors import MissingKeysError, ModelLoadError, NotAnSDCheckpointError
from nodes.sd.model_cache import MODEL_CACHE, file_identity
from nodes.sd.model_detection import describe_state_dict, unet_config_from_state_dict, vae_config_from_state_dict
from nodes.sd.state_dict import TensorSource, load_state_dict, open_tensor_source, split_by_prefix
from nodes.sd.unet import UNetConfig, UNetModel
from nodes.sd.vae import AutoencoderKL, VAEConfig
from nodes.sd.vae_keys import is_diffusers_vae, vae_diffusers_to_ldm
from nodes.sd.weight_casting import enable_casting

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
# Standalone VAE .ckpt files also carry their training loss (discriminator, LPIPS) and EMA counters.
_VAE_FILE_IGNORED = ("loss.", "model_ema.")
_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


@dataclass(eq=False)
class LoadedCheckpoint:
    unet: UNetModel
    vae: AutoencoderKL
    clip_state_dict: dict[str, torch.Tensor]  # keys start with `text_model.` (transformers CLIPTextModel)
    unet_config: UNetConfig
    vae_config: VAEConfig
    path: Path | None

    @property
    def clip_weight_dtype(self) -> torch.dtype:
        """The file's dtype of the text encoder's weights (its token embedding's)."""
        token = self.clip_state_dict.get("text_model.embeddings.token_embedding.weight")
        return token.dtype if token is not None else torch.float32


def load_checkpoint(path: str | Path, *, device: torch.device | str | None = None, use_cache: bool = True) -> LoadedCheckpoint:
    """Load an SD1.x single-file checkpoint (.safetensors / .ckpt); shared process-wide per file.

    UNet in `unet_dtype(device)`, VAE in `vae_dtype(device)`, on `device` (default: compute_device()).
    The CLIP state dict stays on CPU in the file's dtype; the text-encoder code places it.
    """
    path = Path(path)
    dev = torch.device(device) if device is not None else device_policy.compute_device()
    if not use_cache:
        return _load_checkpoint_uncached(path, dev)
    key = ("checkpoint", *_identity(path), str(dev))
    return MODEL_CACHE.get_or_load(key, lambda: _load_checkpoint_uncached(path, dev))


def load_vae_file(path: str | Path, *, device: torch.device | str | None = None, use_cache: bool = True) -> AutoencoderKL:
    """Load a standalone VAE: LDM layout with or without `first_stage_model.`, or diffusers layout."""
    path = Path(path)
    dev = torch.device(device) if device is not None else device_policy.compute_device()
    if not use_cache:
        return _load_vae_uncached(path, dev)
    key = ("vae", *_identity(path), str(dev))
    return MODEL_CACHE.get_or_load(key, lambda: _load_vae_uncached(path, dev))


def checkpoint_from_state_dict(
    sd: Mapping[str, torch.Tensor] | TensorSource,
    *,
    device: torch.device | str = "cpu",
    path: Path | None = None,
    consume: bool = False,
) -> LoadedCheckpoint:
    """Build the models from a single-file state dict (full key names) or a lazy `TensorSource`.

    consume=True empties `sd` (a dict) while loading, so each source tensor is freed as soon as its
    model copy exists: peak memory ≈ the loaded models instead of file + models.
    """
    dev = torch.device(device)
    source = sd if isinstance(sd, TensorSource) else TensorSource.of(sd, consume=consume, path=path)
    path = path or source.path
    unet_source = source.with_prefix(UNET_PREFIX)
    if not unet_source.shapes:
        raise NotAnSDCheckpointError(path, f"no '{UNET_PREFIX}*' UNet weights; {describe_state_dict(source.shapes)}")
    unet_config = unet_config_from_state_dict(unet_source.shapes, path)
    unet = load_weights(lambda: UNetModel(unet_config), unet_source, "UNet", path, dev,
                        device_policy.unet_dtype(dev), lean=True)

    vae_source = source.with_prefix(VAE_PREFIX)
    if not vae_source.shapes:
        raise ModelLoadError(path, f"the checkpoint has no VAE ('{VAE_PREFIX}*' keys); load a VAE file separately")
    vae_source = _vae_attention_as_conv(vae_source)
    vae_config = vae_config_from_state_dict(vae_source.shapes, path)
    vae = load_weights(lambda: AutoencoderKL(vae_config), vae_source, "VAE", path, dev,
                       device_policy.vae_dtype(dev), lean=True)

    clip_keys = [k for k in source.shapes if k.startswith(CLIP_PREFIX)]
    clip_sd = clip_state_dict_from_checkpoint(dict(zip(clip_keys, _owned(source, clip_keys), strict=True)))
    if not clip_sd:
        log.warning("%s: no CLIP text encoder weights ('%s*'); text encoding will not work", path, CLIP_PREFIX)

    known = (UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)
    ignored = [k for k in source.shapes if not k.startswith(known)]
    if ignored:  # model_ema.*, alphas_cumprod, betas, ... : training leftovers we do not need (never read)
        log.debug("%s: ignored %d non-model tensors (e.g. %s)", path, len(ignored), ignored[0])
    log.info("loaded SD1.x checkpoint %s (UNet in_channels=%d, %s)", path, unet_config.in_channels, dev)
    return LoadedCheckpoint(unet, vae, clip_sd, unet_config, vae_config, path)


def clip_state_dict_from_checkpoint(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP weights with `cond_stage_model.transformer.` stripped; old layouts get `text_model.` inserted."""
    out = {}
    for key, value in split_by_prefix(sd, CLIP_PREFIX).items():
        if not key.startswith("text_model."):
            key = "text_model." + key
        if key.endswith("position_ids") and value.is_floating_point():
            value = value.round().long()  # some merges stored float, slightly-off ids
        out[key] = value
    return out


def vae_state_dict_from_file_sd(sd: Mapping[str, torch.Tensor], path: Path | None = None) -> dict[str, torch.Tensor]:
    """Normalise any supported VAE file layout to LDM keys without prefix."""
    if any(k.startswith(VAE_PREFIX) for k in sd):
        sd = split_by_prefix(sd, VAE_PREFIX)
    elif any(k.startswith("vae.") for k in sd):
        sd = split_by_prefix(sd, "vae.")
    sd = {k: v for k, v in sd.items() if not k.startswith(_VAE_FILE_IGNORED)}
    if is_diffusers_vae(sd):
        try:
            sd = vae_diffusers_to_ldm(sd)
        except KeyError as e:
            raise ModelLoadError(path, f"diffusers-format VAE with an unknown layout: {e.args[0]}") from e
    return _vae_attention_as_conv(sd)


def load_weights(
    make: Callable[[], nn.Module],
    sd: Mapping[str, torch.Tensor] | TensorSource,
    part: str,
    path: Path | None,
    device: torch.device,
    dtype: torch.dtype,
    *,
    consume: bool = False,
    lean: bool = False,
) -> nn.Module:
    """Build `make()` on meta, check keys and shapes against `sd`, then assign the tensors, in `dtype`.

    lean=True keeps a weight narrower than `dtype` in its own dtype when the weight mode is `lean`
    (nodes.sd.device.storage_dtype) and makes the module cast it as it computes; only for modules
    whose `dtype` property reports the compute dtype (UNet, VAE). consume=True pops each tensor from
    `sd` (a dict) as it is assigned, freeing the source early.
    """
    source = sd if isinstance(sd, TensorSource) else TensorSource.of(sd, consume=consume, path=path)
    module = build_on_meta(make)
    expected = module.state_dict()
    shapes = source.shapes
    missing = [k for k in expected if k not in shapes]
    mismatched = [
        f"{k} {tuple(shapes[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items() if k in shapes and shapes[k].shape != v.shape
    ]
    if missing or mismatched:
        raise MissingKeysError(path, part, missing, mismatched)
    unexpected = [k for k in shapes if k not in expected]
    if unexpected:
        log.warning("%s: ignoring %d unexpected %s weight(s): %s", path, len(unexpected), part,
                    ", ".join(unexpected[:10]) + (" ..." if len(unexpected) > 10 else ""))
    mode = device_policy.weight_mode() if lean else "fp32"
    tensors, narrow = {}, False
    keys = list(expected)
    for k, src in zip(keys, source.take_many(keys), strict=True):
        kept = device_policy.storage_dtype(src.dtype, dtype, mode)
        narrow |= src.is_floating_point() and kept != dtype
        tensor = src.to(device=device, dtype=kept)
        if tensor is src and not source.owned:
            tensor = src.clone()  # never keep a view of a mapped file or of the caller's dict
        tensors[k] = tensor
        del src, tensor
    module.load_state_dict(tensors, strict=True, assign=True)
    if narrow or lean:  # lean-capable modules always: the casting layers are also where the fast convs are
        enable_casting(module, dtype)
    return module.eval().requires_grad_(False)


_NO_INIT_LOCK = threading.Lock()
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_")


def build_on_meta(make: Callable[[], nn.Module]) -> nn.Module:
    """`make()` on the meta device with torch.nn.init's initialisers switched off: the file's weights
    replace them anyway, and a random init on meta goes through torch's Python reference kernels
    (0.75 s the first time in a process, then 0.2 s per SD1.5 UNet: most of a cold start's model build)."""
    with _NO_INIT_LOCK:
        saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
        for name in saved:
            setattr(nn.init, name, _no_init)
        try:
            with torch.device("meta"):
                return make()
        finally:
            for name, fn in saved.items():
                setattr(nn.init, name, fn)


def _no_init(tensor, *args, **kwargs):
    return tensor


def _owned(source: TensorSource, keys: list[str]) -> list[torch.Tensor]:
    """The tensors of `keys`, copied where they would view a mapped file."""
    return [t if source.owned else t.clone() for t in source.take_many(keys)]


def _load_checkpoint_uncached(path: Path, dev: torch.device) -> LoadedCheckpoint:
    return checkpoint_from_state_dict(open_tensor_source(path), device=dev, path=path)


def _load_vae_uncached(path: Path, dev: torch.device) -> AutoencoderKL:
    sd = vae_state_dict_from_file_sd(load_state_dict(path), path)
    extra = [k for k in sd if not k.startswith(_VAE_PARTS)]
    if extra and len(extra) == len(sd):
        raise NotAnSDCheckpointError(path, f"not a VAE file; {describe_state_dict(sd)}")
    config = vae_config_from_state_dict(sd, path)
    vae = load_weights(lambda: AutoencoderKL(config), TensorSource.of(sd, consume=True, path=path), "VAE", path,
                       dev, device_policy.vae_dtype(dev), lean=True)
    log.info("loaded VAE %s (%s)", path, dev)
    return vae


def _vae_attention_as_conv(sd):
    """Some re-saved SD checkpoints store the VAE mid-attention projections as Linear (C, C); our
    AttnBlock keeps 1×1 convs. Works on a dict and on a lazy TensorSource alike."""
    def is_linear(k, v):
        return ".mid.attn_1." in k and k.endswith(".weight") and v.ndim == 2

    if isinstance(sd, TensorSource):
        linear = {k for k, v in sd.shapes.items() if is_linear(k, v)}
        if not linear:
            return sd
        shapes = {k: v[:, :, None, None] if k in linear else v for k, v in sd.shapes.items()}
        return TensorSource(shapes, lambda k: sd.take(k)[:, :, None, None] if k in linear else sd.take(k),
                            sd.path, owned=sd.owned)
    return {k: v[:, :, None, None] if is_linear(k, v) else v for k, v in sd.items()}


def _identity(path: Path) -> tuple[str, int, int]:
    try:
        return file_identity(path)
    except OSError as e:
        raise ModelLoadError(path, f"cannot read the file ({e.strerror or e}); check the path and the models folder") from e
