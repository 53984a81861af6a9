"""Textual-inversion embeddings: find the file behind `embedding:NAME` and read its vectors.

Files live in an embeddings directory or any folder below it, as `.safetensors`, `.pt` or `.bin`. Pickled
files are read only with `torch.load(weights_only=True)`: a file that needs arbitrary code is refused.
"""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

EXTENSIONS = (".safetensors", ".pt", ".bin")


def find_embedding_file(name: str, directory: str | os.PathLike) -> Path | None:
    """The file for `embedding:NAME`: NAME itself, else NAME plus each extension, in the directory then its
    subfolders (sorted). NAME may contain a relative folder; it may not climb out of the directory."""
    root = os.path.abspath(directory)
    if not name or not os.path.isdir(root):
        return None
    for folder in _folders_below(root):
        candidate = os.path.abspath(os.path.join(folder, name))
        if os.path.commonpath((folder, candidate)) != folder:
            continue  # "../x" or an absolute name
        for path in (candidate, *(candidate + ext for ext in EXTENSIONS)):
            if os.path.isfile(path):
                return Path(path)
    return None


def load_embedding_file(path: str | os.PathLike, width: int) -> torch.Tensor | None:
    """The vectors in one embedding file as a float32 `[n, width]` tensor, or None (with a warning naming
    the file) when it cannot be read or its vectors are not `width` wide."""
    path = str(path)
    try:
        stat = os.stat(path)
        data = _read_file(path, stat.st_mtime_ns, stat.st_size)
    except Exception as exc:  # missing, corrupt, or a pickle that needs more than tensors
        logger.warning("embedding file %s could not be read (only plain tensor files are loaded): %s", path, exc)
        return None

    vectors = _vectors_in(data, width)
    if vectors is None:
        logger.warning("embedding file %s holds no embedding tensor; ignored", path)
        return None
    if vectors.ndim == 0 or vectors.shape[-1] != width:
        logger.warning(
            "embedding file %s has vectors of shape %s, but this text encoder needs width %d; ignored",
            path, tuple(vectors.shape), width,
        )
        return None
    return vectors.detach().reshape(-1, width).to(torch.float32, copy=True)  # the cached original stays intact


@functools.lru_cache(maxsize=32)
def _read_file(path: str, mtime_ns: int, size: int) -> object:
    # mtime and size are in the key so an edited file is read again; failures are not cached.
    if path.lower().endswith(".safetensors"):
        import safetensors.torch

        return safetensors.torch.load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _vectors_in(data: object, width: int) -> torch.Tensor | None:
    """Pick the embedding tensor out of the known layouts."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, list):  # a list of {name: tensor}: keep the tensors of the right width
        rows = [t.reshape(-1, width) for item in data if isinstance(item, dict)
                for t in item.values() if isinstance(t, torch.Tensor) and t.shape[-1] == width]
        return torch.cat(rows) if rows else None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("string_to_param"), dict):  # A1111: {"string_to_param": {"*": tensor}, ...}
        return _first_tensor(data["string_to_param"])
    for key in ("emb_params", "clip_l"):  # kohya / SDXL-style files with one tensor per text encoder
        if isinstance(data.get(key), torch.Tensor):
            return data[key]
    return _first_tensor(data)  # plain {name: tensor}


def _first_tensor(mapping: dict) -> torch.Tensor | None:
    return next((v for v in mapping.values() if isinstance(v, torch.Tensor)), None)


def _folders_below(root: str) -> list[str]:
    """The root and every folder below it (symlinks followed, each real folder once, so loops end)."""
    folders, seen = [], set()
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        folders.append(dirpath)
        dirnames.sort()
    return folders
