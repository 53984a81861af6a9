"""Monocular depth maps with transformers' depth-estimation models, loaded from a local folder.

A depth model is a transformers folder under `models/depth/<name>/`: `config.json`, the weights
(`model.safetensors`, or `pytorch_model.bin`, or a sharded index) and `preprocessor_config.json`,
exactly as `save_pretrained` / the hub repositories lay them out. Supported are the families that
`AutoModelForDepthEstimation` builds and that run on one image: DPT (Intel/dpt-large), MiDaS 3.0
(DPT-hybrid, Intel/dpt-hybrid-midas), Depth Anything v1/v2 (depth-anything/Depth-Anything-V2-*-hf),
and, best effort, the metric families (ZoeDepth, GLPN, DepthPro). Nothing is downloaded.

Output convention (what ControlNet depth models were trained on, MiDaS style): near is bright.
DPT/MiDaS and relative Depth Anything predict relative inverse depth (disparity: larger = nearer)
and are used as they are; metric models predict distance (larger = farther), so their prediction is
inverted (1 / depth) first. The map is resized (bicubic) to the input's size, then min-max
normalised per image to 0..1, and repeated to three channels. An image without depth variation
(e.g. a black or single-colour image, which carries no depth cues) gives a flat map of zeros.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from nodes.sd.model_cache import ModelCache

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
EXAMPLE_MODELS = "Intel/dpt-hybrid-midas or depth-anything/Depth-Anything-V2-Small-hf"
FOLDER_HINT = (f"put a transformers depth model such as {EXAMPLE_MODELS} (config.json + model.safetensors + "
               f"preprocessor_config.json) in models/depth/<name>/")
# Families whose prediction is a distance (far = large); the others predict inverse depth.
METRIC_MODEL_TYPES = frozenset({"zoedepth", "glpn", "depth_pro", "prompt_depth_anything"})
FLAT_INPUT_TOLERANCE = 1.0 / 512  # an image whose pixels all lie within this is "flat": no depth cues
BATCH_CHUNK = 4  # images per forward pass


class DepthModelError(Exception):
    """A depth model folder that is missing, incomplete or not a depth model."""

    def __init__(self, message: str, folder: str | Path | None = None):
        super().__init__(message)
        self.folder = None if folder is None else str(folder)


class MissingDepthModelError(DepthModelError, FileNotFoundError):
    """No folder of that name under any `models/depth/`."""


@dataclass(eq=False)
class DepthModel:
    """A loaded depth model with its image processor; shared between nodes (see `load_depth_model`)."""

    model: torch.nn.Module
    processor: Any
    folder: Path
    model_type: str
    output_kind: str  # "inverse" (larger = nearer) or "metric" (larger = farther)
    square_input: bool  # ViT DPT / DPT-hybrid: the processor must not keep the aspect ratio
    default_resolution: int | None
    device: torch.device
    dtype: torch.dtype = torch.float32
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


# --------------------------------------------------------------------------------------------
# Finding and checking a model folder (no transformers import: cheap enough for validation).

def find_depth_model(name: str, folders: Any = None) -> Path:
    """The folder of depth model `name` (a sub-folder of some `models/depth/`), or
    MissingDepthModelError saying where to put one."""
    from nodegraph import folders as folder_layout
    from nodegraph.folders import safe_join

    layout = folders or folder_layout.current()
    roots = layout.model_dirs("depth")
    if not isinstance(name, str) or not name.strip():
        raise MissingDepthModelError(f"no depth model selected; {FOLDER_HINT} "
                                     f"(searched: {', '.join(str(r) for r in roots)})")
    for root in roots:
        path = safe_join(root, name, allow_links_out=True)
        if path.is_dir():
            return path
    embedded = layout.embedded_path("depth", name)  # a model shipped with the code (nodes.default_model)
    if embedded is not None:
        return embedded
    raise MissingDepthModelError(
        f"depth model folder '{name}' not found; {FOLDER_HINT.replace('<name>', name)} "
        f"(searched: {', '.join(str(r) for r in roots)})", folder=roots[0] / name if roots else None)


def check_depth_model_folder(folder: str | Path) -> None:
    """Raise DepthModelError naming the folder and what is missing, unless it holds a config, the
    weights and the image-processor config."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingDepthModelError(f"depth model folder {folder} does not exist; {FOLDER_HINT}", folder)
    missing = []
    if not (folder / CONFIG_FILE).is_file():
        missing.append(f"{CONFIG_FILE} (the model configuration)")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("the weights (model.safetensors or pytorch_model.bin)")
    if not (folder / PROCESSOR_FILE).is_file():
        missing.append(f"{PROCESSOR_FILE} (the image processor: resize and normalisation)")
    if missing:
        raise DepthModelError(
            f"depth model folder {folder} is incomplete: missing {'; '.join(missing)}. Copy the whole model "
            f"repository (e.g. {EXAMPLE_MODELS}) into it, as save_pretrained writes it", folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DepthModelError(f"depth model folder {folder}: {CONFIG_FILE} is not readable JSON ({exc})", folder) from exc
    if not isinstance(config, dict) or not config.get("model_type"):
        raise DepthModelError(f"depth model folder {folder}: {CONFIG_FILE} has no 'model_type'; it is not a "
                              f"transformers model configuration", folder)


def folder_identity(folder: str | Path) -> tuple:
    """(resolved folder, (file, size, mtime_ns) of its model files): changes when any is replaced."""
    folder = Path(folder).resolve()
    files = []
    for name in (CONFIG_FILE, PROCESSOR_FILE, *WEIGHT_FILES):
        path = folder / name
        if path.is_file():
            st = path.stat()
            files.append((name, st.st_size, st.st_mtime_ns))
    return str(folder), tuple(files)


# --------------------------------------------------------------------------------------------
# Loading.

_CACHE = ModelCache(keep_recent=1)


def load_depth_model(folder: str | Path, device: torch.device | str | None = None) -> DepthModel:
    """Load (once) the depth model and image processor in `folder`. The same folder with unchanged
    files (size + mtime) on the same device gives the same shared object."""
    check_depth_model_folder(folder)
    if device is None:
        from nodes.sd.device import compute_device
        device = compute_device()
    device = torch.device(device)
    key = ("depth", folder_identity(folder), str(device))
    return _CACHE.get_or_load(key, lambda: _load(Path(folder), device))


def clear_cache() -> None:
    _CACHE.clear()


def _load(folder: Path, device: torch.device) -> DepthModel:
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES

    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # unknown model_type, malformed fields
        raise DepthModelError(f"depth model folder {folder}: cannot read {CONFIG_FILE}: {exc}", folder) from exc
    if config.model_type not in MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES:
        known = ", ".join(sorted(MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES))
        raise DepthModelError(
            f"depth model folder {folder} holds a '{config.model_type}' model, which is not a depth-estimation "
            f"model; expected one of: {known} ({FOLDER_HINT})", folder)
    log.info("loading depth model %s (%s) on %s", folder, config.model_type, device)
    try:
        model, info = transformers.AutoModelForDepthEstimation.from_pretrained(
            folder, config=config, local_files_only=True, dtype=torch.float32, output_loading_info=True)
        processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True, use_fast=False)
    except Exception as exc:
        raise DepthModelError(f"depth model folder {folder}: loading failed: {type(exc).__name__}: {exc}",
                              folder) from exc
    missing = list(info.get("missing_keys") or [])
    if missing:
        log.warning("depth model %s: %d weight(s) missing from the file and left random (e.g. %s); the depth "
                    "maps will be wrong. Re-download the model.", folder, len(missing), ", ".join(missing[:5]))
    model = model.to(device).eval()
    square = config.model_type == "dpt" and (getattr(config, "backbone_config", None) is None
                                             or bool(getattr(config, "is_hybrid", False)))
    kind = "metric" if (config.model_type in METRIC_MODEL_TYPES
                        or getattr(config, "depth_estimation_type", None) == "metric") else "inverse"
    return DepthModel(model=model, processor=processor, folder=folder, model_type=config.model_type,
                      output_kind=kind, square_input=square, default_resolution=_processor_resolution(processor),
                      device=device)


def _processor_resolution(processor: Any) -> int | None:
    size = getattr(processor, "size", None)
    if isinstance(size, dict):
        if "height" in size:
            return int(size["height"])
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
    return None


# --------------------------------------------------------------------------------------------
# Inference.

def estimate_depth(model: DepthModel, image_bhwc: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
    """Depth maps of a batch of images: float32 [B, H, W, 3] on the CPU, same B/H/W as the input,
    near = bright, each map min-max normalised to 0..1 (see the module docstring).

    `resolution` is the side the model sees (for aspect-keeping processors, such as Depth
    Anything's, the side that scales least; the processor rounds it to its patch multiple); None or
    0 keeps the model's own (its preprocessor_config: 384 for DPT/MiDaS, 518 for Depth Anything)."""
    if image_bhwc.ndim != 4:
        raise ValueError(f"expected an IMAGE tensor [B, H, W, C], got shape {tuple(image_bhwc.shape)}")
    b, h, w = image_bhwc.shape[:3]
    out = torch.zeros((b, h, w, 3), dtype=torch.float32)
    if b == 0 or h == 0 or w == 0:
        return out
    rgb = _to_rgb(image_bhwc)
    spread = rgb.flatten(1).amax(1) - rgb.flatten(1).amin(1)
    todo = [i for i in range(b) if spread[i] > FLAT_INPUT_TOLERANCE]  # the others stay flat (zeros)
    for start in range(0, len(todo), BATCH_CHUNK):
        index = todo[start:start + BATCH_CHUNK]
        raw = predict_raw(model, rgb[index], resolution, (h, w))
        if model.output_kind == "metric":
            raw = torch.reciprocal(raw.clamp_min(1e-3))
        out[index] = normalise_depth(raw).unsqueeze(-1).expand(-1, -1, -1, 3)
    return out


def normalise_depth(depth: torch.Tensor) -> torch.Tensor:
    """Per-map min-max to 0..1 of [N, H, W]; a map without variation becomes zeros."""
    depth = torch.nan_to_num(depth.to(torch.float32), nan=0.0, posinf=0.0, neginf=0.0)
    flat = depth.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    span = hi - lo
    scale = torch.maximum(hi.abs(), lo.abs())
    varies = span > scale * 1e-6
    span = torch.where(varies, span, torch.ones_like(span))
    result = ((depth - lo[:, None, None]) / span[:, None, None]).clamp(0.0, 1.0)
    return result * varies[:, None, None]


def predict_raw(model: DepthModel, rgb_bhwc: torch.Tensor, resolution: int | None,
                target_size: tuple[int, int]) -> torch.Tensor:
    """The model's prediction for a chunk of RGB 0..1 images, resized to `target_size`: [N, H, W]."""
    processor = model.processor
    kwargs: dict[str, Any] = {"return_tensors": "pt", "do_rescale": False, "input_data_format": "channels_last"}
    if resolution:
        size = getattr(processor, "size", None)
        if isinstance(size, dict) and "height" in size and "width" in size:
            kwargs["size"] = {"height": int(resolution), "width": int(resolution)}
        else:
            log.warning("depth model %s: its image processor has no fixed size; resolution %s ignored",
                        model.folder.name, resolution)
    if model.square_input:
        kwargs["keep_aspect_ratio"] = False  # ViT position grids of these models are square
    images = [img.numpy() for img in rgb_bhwc]
    inputs = processor(images=images, **kwargs)
    pixel_values = inputs["pixel_values"].to(model.device, model.dtype)
    with model.lock, torch.inference_mode():
        outputs = model.model(pixel_values=pixel_values)
    if type(processor).__name__.startswith("DPTImageProcessor") or not hasattr(processor, "post_process_depth_estimation"):
        depth = outputs.predicted_depth
        if depth.ndim == 4:
            depth = depth[:, 0]
        depth = F.interpolate(depth.float().unsqueeze(1), size=target_size, mode="bicubic", align_corners=False)[:, 0]
        return depth.cpu()
    # Families with their own post-processing (padding removal, ...): let the processor do it.
    sizes = [target_size] * len(images)
    extra = {"source_sizes": sizes} if _accepts(processor.post_process_depth_estimation, "source_sizes") else {}
    results = processor.post_process_depth_estimation(outputs, target_sizes=sizes, **extra)
    return torch.stack([r["predicted_depth"].float().reshape(target_size).cpu() for r in results])


def _accepts(fn: Any, name: str) -> bool:
    import inspect
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _to_rgb(image_bhwc: torch.Tensor) -> torch.Tensor:
    """[B, H, W, C] -> contiguous float32 CPU [B, H, W, 3] in 0..1 (grey repeated, alpha dropped)."""
    image = torch.nan_to_num(image_bhwc.detach().to("cpu", torch.float32)).clamp(0.0, 1.0)
    c = image.shape[-1]
    if c >= 3:
        image = image[..., :3]
    else:
        image = image[..., :1].expand(-1, -1, -1, 3)
    return image.contiguous()


def describe(model: DepthModel) -> str:
    return f"{model.folder.name} ({model.model_type}, {model.output_kind} depth, resolution {model.default_resolution})"


__all__: Sequence[str] = ("DepthModel", "DepthModelError", "MissingDepthModelError", "check_depth_model_folder",
                          "estimate_depth", "find_depth_model", "folder_identity", "load_depth_model",
                          "normalise_depth")
