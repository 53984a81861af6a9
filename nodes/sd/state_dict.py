"""Reading weight files into flat `{name: tensor}` dicts, safely.

`.safetensors` is memory-mapped; pickle-based files (`.ckpt/.pt/.pth/.bin`) are read ONLY with
`torch.load(weights_only=True)`, so a checkpoint cannot run code on this machine.
"""
from __future__ import annotations

import logging
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from nodes.sd.errors import ModelLoadError

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}


class _PickledMetadata:
    """Inert stand-in for training-time objects (Lightning callbacks, numpy scalars) found next to the
    weights in old .ckpt files. It swallows its arguments and state; we only keep tensors anyway."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


# Globals that real SD1.x .ckpt files contain besides tensors (e.g. sd-v1-4.ckpt stores its Lightning
# callback state). Allow-listing them as the inert class above keeps weights_only loading possible
# without ever importing or calling the real objects.
_METADATA_GLOBALS = [
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
]


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors in a weight file, on CPU. Unwraps a top-level `state_dict` (`params_ema`, `params`,
    or a lone) dict; drops non-tensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "file not found; check the path and the models folder")
    kind = _file_kind(path)
    if kind == "safetensors":
        sd = _load_safetensors(path)
    elif kind == "pickle":
        sd = _load_pickle(path)
    else:
        raise ModelLoadError(
            path,
            "not a .safetensors file nor a PyTorch checkpoint (unrecognised header); "
            "the file may be corrupt or not a model — re-download it",
        )
    return _tensors_only(path, sd)


def load_pickled_dict(path: str | Path) -> dict:
    """The whole dict a `.pt` / `.ckpt` file holds (keys and values of any kind `weights_only` allows:
    tensors, numbers, strings, lists, tuples, dicts), for formats that are more than flat tensors, such as
    A1111 hypernetworks. Read with `torch.load(weights_only=True)` like everything else."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "file not found; check the path and the models folder")
    if _file_kind(path) != "pickle":
        raise ModelLoadError(path, "not a PyTorch .pt / .ckpt file")
    return _load_pickle(path)


def split_by_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries whose key starts with `prefix`, with the prefix stripped."""
    n = len(prefix)
    return {k[n:]: v for k, v in sd.items() if k.startswith(prefix)}


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    # Unknown extension: sniff the first bytes instead of guessing from the name.
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        header_len = _safetensors_header_len(path)
        size = path.stat().st_size
        if header_len is not None and header_len + 8 > size:
            hint = f"the header claims {header_len} bytes but the file has only {size}: the file is truncated"
        else:
            hint = f"{type(e).__name__}: {e}"
        raise ModelLoadError(
            path, f"corrupt or truncated .safetensors file ({hint}); re-download or re-save it"
        ) from e


def _safetensors_header_len(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
        return struct.unpack("<Q", raw)[0] if len(raw) == 8 else None
    except OSError:
        return None


def _load_pickle(path: Path) -> dict:
    # mmap works only for the zip container torch.save has written since 1.6; legacy files are read whole.
    use_mmap = zipfile.is_zipfile(path)
    allowed = [(_PickledMetadata, name) for name in _METADATA_GLOBALS]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # noise for a refused file
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(str(e))
        if "global" in detail.lower():
            reason = (
                f"the file references Python objects other than tensors ({detail}) and was NOT unpickled, "
                "because loading it could run arbitrary code. If you trust its source, convert it to "
                ".safetensors with a trusted tool; otherwise delete it"
            )
        else:
            reason = (
                f"not a readable PyTorch checkpoint ({detail}); it is corrupt or truncated, or uses pickle "
                "features a weights-only load refuses. Nothing in it was executed; re-download it or use .safetensors"
            )
        raise ModelLoadError(path, reason) from e
    except Exception as e:  # garbage bytes make the unpickler fail in any number of ways (IndexError, ...)
        raise ModelLoadError(
            path, f"corrupt or truncated PyTorch checkpoint ({type(e).__name__}: {str(e)[:300]}); re-download it"
        ) from e
    if not isinstance(obj, dict):
        raise ModelLoadError(path, f"expected a dict of tensors, found a {type(obj).__name__}")
    return _unwrapped(obj)


# Top-level keys under which training code nests the weights (Lightning, BasicSR's EMA / plain params).
_WRAPPER_KEYS = ("state_dict", "params_ema", "params")


def _unwrapped(obj: dict) -> dict:
    """The weights dict inside a training checkpoint: under a known key, or the only entry."""
    for key in _WRAPPER_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key]
    if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        return next(iter(obj.values()))
    return obj


def _unpickler_detail(message: str) -> str:
    """The informative line of torch's long weights_only error (e.g. 'Unsupported global: GLOBAL os.system')."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("Unsupported", "WeightsUnpickler error: U")) or "GLOBAL" in ln:
            return ln.removeprefix("WeightsUnpickler error:").strip()[:300]
    return (lines[0] if lines else "unreadable pickle")[:300]


def _tensors_only(path: Path, sd: dict) -> dict[str, torch.Tensor]:
    tensors = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    dropped = len(sd) - len(tensors)
    if dropped:
        log.debug("%s: ignored %d non-tensor entries", path, dropped)
    if not tensors:
        raise ModelLoadError(path, "the file holds no tensors; it is not a model file")
    return tensors
