"""Upscale models (ESRGAN, RealESRGAN, SwinIR, ...) through spandrel, which detects the architecture
from the file, and running one over an IMAGE in tiles with bounded memory, as ComfyUI does."""
from __future__ import annotations

import contextlib
import enum
import logging
import sys
import types
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator

import torch

from nodegraph.progress import ProgressBar

from . import device as device_policy
from .device import cpu_threads
from .errors import ModelLoadError
from .memory import module_parts
from .model_detection import describe_state_dict
from .state_dict import load_state_dict
from .tiling import tile_count, tiled_map

log = logging.getLogger(__name__)

# ComfyUI's ImageUpscaleWithModel: 512-pixel tiles overlapping by 32, halved on out-of-memory down to 128.
TILE = 512
OVERLAP = 32
MIN_TILE = 128
_SWINIR_DATAPARALLEL_KEY = "module.layers.0.residual_group.blocks.0.norm1.weight"


class ImageTooLargeError(ValueError):
    """The upscaled image would not fit in the memory available."""


class UpscaleModel:
    """The UPSCALE_MODEL socket: a spandrel ImageModelDescriptor (what ComfyUI passes, so ported
    nodes that call it or read `.scale` / `.model` keep working) plus the file it came from."""

    def __init__(self, descriptor: Any, path: Path | None = None):
        self.descriptor = descriptor
        self.path = path

    def __getattr__(self, name: str) -> Any:  # scale, model, architecture, size_requirements, ...
        return getattr(self.__dict__["descriptor"], name)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.descriptor(image)

    def memory_parts(self):
        return module_parts(self.descriptor.model)

    def __repr__(self) -> str:
        d = self.descriptor
        return f"UpscaleModel({d.architecture.name}, x{d.scale}, {self.path.name if self.path else 'state dict'})"


def load_upscale_model(path: str | Path) -> UpscaleModel:
    """The upscale model in a weight file, on the compute device; ModelLoadError naming the file and
    what it looks like when it is not a single-image model spandrel knows."""
    path = Path(path)
    state_dict = load_state_dict(path)
    if _SWINIR_DATAPARALLEL_KEY in state_dict:  # SwinIR saved from DataParallel
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError:
        raise ModelLoadError(path, f"not an upscale model of any architecture spandrel knows; "
                                   f"{describe_state_dict(state_dict)}") from None
    except Exception as exc:  # an architecture matched, but the weights do not build it
        raise ModelLoadError(path, f"the weights look like an upscale model but do not fit its architecture "
                                   f"({type(exc).__name__}: {str(exc)[:300]}); the file may be damaged") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelLoadError(path, f"a {descriptor.architecture.name} model ({descriptor.purpose}) needs more "
                                   "than an image; an upscale model must take a single image")
    descriptor.eval()
    descriptor.to(device_policy.compute_device())
    log.info("loaded upscale model %s: %s x%d (%s)", path.name, descriptor.architecture.name, descriptor.scale,
             descriptor.purpose)
    return UpscaleModel(descriptor, path)


@torch.inference_mode()
def upscale_image(model: UpscaleModel, image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> IMAGE [B, H·s, W·s, C'] in 0..1, in tiles of 512 pixels (halved while
    memory runs out, down to 128)."""
    descriptor = model.descriptor
    param = next(descriptor.model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    check_fits_in_memory(image.shape, descriptor.scale, descriptor.output_channels)
    pixels = image.movedim(-1, 1).to(device, dtype)

    def run(tile: torch.Tensor) -> torch.Tensor:
        return descriptor(tile)

    tile = TILE
    while True:
        steps = pixels.shape[0] * tile_count(pixels.shape[2], pixels.shape[3], tile, tile, OVERLAP)
        try:
            with cpu_threads(descriptor.model, pixels.shape[0] * min(pixels.shape[2], tile) * min(pixels.shape[3], tile)):
                result = tiled_map(pixels, run, tile=(tile, tile), overlap=OVERLAP, scale=descriptor.scale,
                                   out_channels=descriptor.output_channels, progress=ProgressBar(steps))
            break
        except Exception as exc:
            if not is_out_of_memory(exc) or tile // 2 < MIN_TILE:
                raise
            tile //= 2
            log.warning("upscale model ran out of memory; retrying with %d-pixel tiles", tile)
    return result.movedim(1, -1).clamp(0.0, 1.0)


def check_fits_in_memory(shape: tuple[int, ...], scale: int, channels: int) -> None:
    """ImageTooLargeError when the result of upscaling an IMAGE of `shape` [B, H, W, C] could not be
    held: the blend sums, the weights and the result, float32 (the tiles themselves are small)."""
    batch, height, width = shape[:3]
    needed = 4 * batch * (height * scale) * (width * scale) * (2 * channels + 1)
    available = available_memory()
    if available is not None and needed > available:
        raise ImageTooLargeError(
            f"upscaling {batch} image(s) of {width}x{height} by {scale} to {width * scale}x{height * scale} needs "
            f"about {needed / 2**30:.1f} GiB, but only {available / 2**30:.1f} GiB are free; "
            "upscale a smaller image or a smaller batch")


def available_memory() -> int | None:
    """Bytes of RAM the system can still hand out (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU or CPU allocation failure (torch raises both as RuntimeError subclasses)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def import_spandrel() -> types.ModuleType:
    """spandrel, or ModelLoadError saying how to install it.

    spandrel imports torchvision at start-up for two architectures that are not upscalers (LaMa
    inpainting, RestoreFormer face restoration). Where torchvision is absent (a CPU-only torch that has
    no matching torchvision build), those imports get a stand-in that refuses to run, and only while
    spandrel loads: no other library ever sees a torchvision module.
    """
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    if find_spec("spandrel") is None:
        raise RuntimeError("upscale models need the spandrel package, which is not installed: pip install spandrel")
    if find_spec("torchvision") is not None:
        import spandrel
        return spandrel
    with _torchvision_stand_in():
        import spandrel
    return spandrel


class _InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _needs_torchvision(*_args, **_kwargs):
    raise RuntimeError("this model architecture needs torchvision, which is not installed")


@contextlib.contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    modules = {name: types.ModuleType(name) for name in names}
    functional = modules["torchvision.transforms.functional"]
    functional.InterpolationMode = _InterpolationMode
    functional.rotate = functional.normalize = _needs_torchvision
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = functional
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in names:
            if sys.modules.get(name) is modules[name]:
                del sys.modules[name]
