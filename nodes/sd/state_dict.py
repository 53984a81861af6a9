"""Reading weight files into flat `{name: tensor}` dicts, safely.

`.safetensors` tensors are views of a private, copy-on-write mapping of the file (`NODEGRAPH_MMAP=1`,
the default): a load copies nothing, the weights share the page cache's memory, and only the pages a
model touches are ever read. With `NODEGRAPH_MMAP=0` (`--no-mmap`) each tensor is read with pread(2)
into memory of its own instead, so no mapping stays behind: a model file overwritten in place while
its model is in use then cannot crash the process (with a mapping, the kernel's SIGBUS would, as it
does for diffusers and ComfyUI; replacing a file by renaming a new one over it is safe either way).
Only the tensors asked for are read (`TensorSource`). Pickle-based files (`.ckpt/.pt/.pth/.bin`) are
read ONLY with `torch.load(weights_only=True)`, so a checkpoint cannot run code on this machine.
"""
from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import pickle
import struct
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from nodes.sd.errors import ModelLoadError

log = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
MMAP_ENV = "NODEGRAPH_MMAP"


def weights_mapped() -> bool:
    """Whether loaded .safetensors tensors view a mapping of their file: $NODEGRAPH_MMAP (default on), in
    the lean weight mode only. In the fp32 mode every weight is copied (cast) anyway, and one small
    tensor kept as it is (position ids) would hold the whole file's pages in the process."""
    from nodes.sd.device import env_flag, weight_mode

    return env_flag(MMAP_ENV, True) and weight_mode() == "lean"


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
    source = open_tensor_source(path)
    return {key: source.take(key) for key in list(source.shapes)}


class TensorSource:
    """Named tensors of one file, read when taken: `shapes` answers names, shapes and dtypes (meta
    tensors for a .safetensors file) without reading, `take(key)` returns the real tensor, read now."""

    def __init__(self, shapes: Mapping[str, torch.Tensor], take: Callable[[str], torch.Tensor],
                 path: Path | None = None, *, owned: bool = False,
                 take_many: Callable[[list[str]], Iterator[torch.Tensor]] | None = None):
        self.shapes = shapes
        self._take = take
        self._take_many = take_many
        self.path = path
        # False when taken tensors may view a mapping of the file that must not stay (torch.load(mmap=True)
        # with NODEGRAPH_MMAP=0), so a model that keeps them must copy them to let the mapping go.
        self.owned = owned

    def take(self, key: str) -> torch.Tensor:
        return self._take(key)

    def take_many(self, keys: list[str]) -> Iterator[torch.Tensor]:
        """`take` of each key in order; a file source reads ahead in parallel."""
        if self._take_many is not None:
            return self._take_many(list(keys))
        return map(self._take, keys)

    def with_prefix(self, prefix: str) -> TensorSource:
        """The tensors whose name starts with `prefix`, named without it."""
        n = len(prefix)
        many = None if self._take_many is None else (lambda keys: self._take_many([prefix + k for k in keys]))
        return TensorSource({k[n:]: v for k, v in self.shapes.items() if k.startswith(prefix)},
                            lambda key: self._take(prefix + key), self.path, owned=self.owned, take_many=many)

    @classmethod
    def of(cls, sd: Mapping[str, torch.Tensor], *, consume: bool = False, path: Path | None = None,
           owned: bool = True) -> TensorSource:
        """Over tensors already in memory; consume=True pops each from `sd` (a dict) as it is taken."""
        return cls(sd, sd.pop if consume else sd.__getitem__, path, owned=owned)


def open_tensor_source(path: str | Path) -> TensorSource:
    """A weight file's tensors, read lazily for .safetensors, all at once for pickle-based files."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "file not found; check the path and the models folder")
    kind = _file_kind(path)
    if kind == "safetensors":
        return _SafetensorsReader(path, mapped=weights_mapped()).source()
    if kind == "pickle":
        # torch.load(mmap=True): the tensors view a private mapping of the file, kept as a safetensors one is
        return TensorSource.of(_tensors_only(path, _load_pickle(path)), consume=True, path=path,
                               owned=weights_mapped())
    raise ModelLoadError(
        path,
        "not a .safetensors file nor a PyTorch checkpoint (unrecognised header); "
        "the file may be corrupt or not a model — re-download it",
    )


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


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_SAFETENSORS_ERRORS = (SafetensorError, OSError, ValueError, RuntimeError, TypeError, KeyError)


class _SafetensorsReader:
    """One open .safetensors file (its header checked by safetensors). A tensor is a view of a private
    mapping of the file when `mapped` (and its offset suits its dtype), else read with pread(2) into
    memory of its own; then several are read by a few threads at once (`read_many`): the reads and the
    page faults of the fresh memory run outside the GIL, which halves a copying load on 2 cores
    (docs/performance-history.md, first pass)."""

    def __init__(self, path: Path, *, mapped: bool = False):
        self.path = path
        with self._errors():
            checked = safe_open(str(path), framework="pt", device="cpu")  # validates header and offsets
            self.shapes = {}
            for key in checked.keys():
                info = checked.get_slice(key)
                self.shapes[key] = torch.empty(info.get_shape(), dtype=_SAFETENSORS_DTYPES[info.get_dtype()],
                                               device="meta")
            self._offsets, self._data_start = _safetensors_offsets(path)
            self._fd = os.open(path, os.O_RDONLY)  # one descriptor: the file checked above is the one read
        self._mapping = self._map() if mapped else None

    def _map(self) -> mmap.mmap | None:
        """The file as a MAP_PRIVATE mapping: a write to a view copies the page, never reaches the file."""
        try:
            return mmap.mmap(self._fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as e:  # a file system that cannot map files: read instead
            log.debug("%s: cannot map (%s); reading it", self.path, e)
            return None

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def read(self, key: str) -> torch.Tensor:
        meta = self.shapes[key]
        begin, end = self._offsets[key]
        start = self._data_start + begin
        if self._mapping is not None and start % meta.element_size() == 0 and end > begin:
            # a storage of its own over its bytes, so memory accounting sees each tensor's size
            return torch.frombuffer(self._mapping, dtype=meta.dtype, count=meta.numel(), offset=start).reshape(meta.shape)
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        if end > begin:
            view = memoryview(buffer.numpy())
            with self._errors():
                done = 0
                while done < len(view):
                    n = os.preadv(self._fd, [view[done:]], self._data_start + begin + done)
                    if n == 0:
                        raise OSError(f"unexpected end of file reading {key!r}")
                    done += n
        return buffer.view(meta.dtype).reshape(meta.shape)

    def read_many(self, keys: list[str]) -> Iterator[torch.Tensor]:
        """`read` of each key, in order, with up to READ_AHEAD_BYTES read ahead by READ_THREADS threads."""
        if self._mapping is not None:  # views: nothing to read ahead
            yield from map(self.read, keys)
            return
        with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="safetensors-read") as pool:
            pending: deque = deque()
            ahead, queued = 0, iter(keys)
            for key in queued:
                pending.append((pool.submit(self.read, key), self._nbytes(key)))
                ahead += pending[-1][1]
                while ahead > READ_AHEAD_BYTES and len(pending) > 1:
                    future, size = pending.popleft()
                    ahead -= size
                    yield future.result()
            while pending:
                yield pending.popleft()[0].result()

    def _nbytes(self, key: str) -> int:
        begin, end = self._offsets[key]
        return end - begin

    def source(self) -> TensorSource:
        if not self.shapes:
            raise ModelLoadError(self.path, "the file holds no tensors; it is not a model file")
        return TensorSource(self.shapes, self.read, self.path, owned=True, take_many=self.read_many)

    def _errors(self):
        return _safetensors_errors(self.path)


# Parallel reads for a checkpoint load: enough threads to overlap page faults and copies on a few cores,
# and a bounded window so an fp32 load never holds much more than one extra copy of what it converts.
READ_THREADS = min(4, os.cpu_count() or 1)
READ_AHEAD_BYTES = 256 * 1024**2


def _safetensors_offsets(path: Path) -> tuple[dict[str, tuple[int, int]], int]:
    """{name: (begin, end)} byte offsets within the data section, and where that section starts."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
    header.pop("__metadata__", None)
    return {k: tuple(v["data_offsets"]) for k, v in header.items()}, 8 + header_len


@contextlib.contextmanager
def _safetensors_errors(path: Path) -> Iterator[None]:
    """Turns whatever safetensors raises for a bad file into a ModelLoadError that says what is wrong."""
    try:
        yield
    except _SAFETENSORS_ERRORS as e:
        header_len = _safetensors_header_len(path)
        size = path.stat().st_size
        if header_len is not None and header_len + 8 > size:
            hint = f"the header claims {header_len} bytes but the file has only {size}: the file is truncated"
        elif isinstance(e, KeyError):
            hint = f"unsupported tensor dtype {e}"
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
