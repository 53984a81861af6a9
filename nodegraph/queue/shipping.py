"""Output files made by a remote worker, brought to the server's output (and temp) folder.

A worker writes into a scratch folder of its own and sends the bytes of each file an output node
reported (`{filename, subfolder, type}` in its UI dict) with the `executed` event; a large file (a
saved checkpoint) is announced by its size instead, and the server pulls it in chunks, so neither side
holds it in memory whole. The server stores each file under the same name, or under the next free one
when another worker already used that name (ComfyUI's `<prefix>_<counter:05>_.png` counter, else
`name (n).ext`), and rewrites the references it passes on. Nothing here imports ray.
"""
from __future__ import annotations

import filecmp
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from ..folders import Folders, UnsafePathError, safe_join, write_atomic

SHIPPED_TYPES = ("output", "temp")  # files of type "input" are the server's own already
INLINE_LIMIT = 32 * 1024**2  # bytes sent with the event; larger files are pulled in chunks of this size
_COUNTER_NAME = re.compile(r"^(?P<stem>.*)_(?P<counter>\d{5,})_(?P<ext>\.[^.]*)?$")

# (type, subfolder, filename, the bytes, or the size of a file to pull)
ShippedFile = tuple[str, str, str, "bytes | int"]
FileRef = tuple[str, str, str]  # (type, subfolder, filename)
Fetch = Callable[[FileRef, int, int], bytes]  # (file, offset, length) -> bytes, from the worker


def file_refs(ui: Any) -> Iterator[dict[str, Any]]:
    """The file dicts of an output node's UI (`images`, `gifs`, `audio`, ...) that name a shipped type."""
    if not isinstance(ui, dict):
        return
    for files in ui.values():
        if isinstance(files, list):
            for file in files:
                if isinstance(file, dict) and isinstance(file.get("filename"), str) \
                        and file.get("type", "output") in SHIPPED_TYPES:
                    yield file


def ref_of(file: dict[str, Any]) -> FileRef:
    return (file.get("type", "output"), str(file.get("subfolder") or ""), file["filename"])


def scratch_path(ref: FileRef, layout: Folders) -> Path:
    """In the worker: where a file it reported is (inside its own output or temp folder)."""
    kind, subfolder, filename = ref
    root = layout.output if kind == "output" else layout.temp
    return safe_join(root, f"{subfolder}/{filename}" if subfolder else filename)


def collect(ui: Any, layout: Folders) -> list[ShippedFile]:
    """In the worker: the files `ui` names, read from the worker's own folders (large ones by size)."""
    shipped: list[ShippedFile] = []
    for file in file_refs(ui):
        ref = ref_of(file)
        try:
            path = scratch_path(ref, layout)
            size = path.stat().st_size
            shipped.append((*ref, path.read_bytes() if size <= INLINE_LIMIT else size))
        except (OSError, UnsafePathError):
            continue  # named but not written (or already confirmed and removed): nothing to send
    return shipped


def read_chunk(ref: FileRef, offset: int, length: int, layout: Folders) -> bytes:
    """In the worker: part of a large file, for the server to pull."""
    with scratch_path(ref, layout).open("rb") as handle:
        handle.seek(offset)
        return handle.read(min(length, INLINE_LIMIT))


def remove_scratch(refs: list[FileRef], layout: Folders) -> None:
    """In the worker: drop scratch copies the server has confirmed it stored."""
    for ref in refs:
        try:
            scratch_path(ref, layout).unlink(missing_ok=True)
        except (OSError, UnsafePathError):
            pass


class OutputPlacer:
    """On the server: stores shipped files, never overwriting a different file of the same name."""

    def __init__(self, layout: Folders):
        self.layout = layout
        self._lock = threading.Lock()  # one runner thread per worker places files at the same time

    def place(self, files: list[ShippedFile], fetch: Fetch | None = None) -> dict[FileRef, str]:
        """Store each file (pulling large ones through `fetch`); returns {worker's reference: the file
        name it has here}."""
        placed = {}
        for kind, subfolder, filename, data in files:
            if "/" in filename or "\\" in filename or not filename:
                raise UnsafePathError(f"a worker sent a file name with a separator: {filename!r}")
            root = self.layout.output if kind == "output" else self.layout.temp
            folder = safe_join(root, subfolder) if subfolder else root
            folder.mkdir(parents=True, exist_ok=True)
            ref = (kind, subfolder, filename)
            if isinstance(data, (bytes, bytearray)):
                with self._lock:
                    placed[ref] = self._store(folder, filename, bytes(data))
            elif fetch is not None:
                placed[ref] = self._store_pulled(folder, ref, int(data), fetch)
        return placed

    @staticmethod
    def _store(folder: Path, filename: str, data: bytes) -> str:
        target = folder / filename
        if target.exists():
            if target.stat().st_size == len(data) and target.read_bytes() == data:
                return filename  # the same file again (a cached output shown once more)
            filename = next_free_name(folder, filename)
            target = folder / filename
        write_atomic(target, data)
        return filename

    def _store_pulled(self, folder: Path, ref: FileRef, size: int, fetch: Fetch) -> str:
        handle, part = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                offset = 0
                while offset < size:
                    chunk = fetch(ref, offset, INLINE_LIMIT)
                    if not chunk:
                        raise OSError(f"{ref[2]}: the worker's file ended at {offset} of {size} bytes")
                    out.write(chunk)
                    offset += len(chunk)
            os.chmod(part, 0o644)
            with self._lock:
                filename, target = ref[2], folder / ref[2]
                if target.exists():
                    if target.stat().st_size == size and filecmp.cmp(part, target, shallow=False):
                        return filename
                    filename = next_free_name(folder, filename)
                os.replace(part, folder / filename)
                return filename
        finally:
            Path(part).unlink(missing_ok=True)


def next_free_name(folder: Path, filename: str) -> str:
    match = _COUNTER_NAME.match(filename)
    if match:
        stem, ext = match["stem"], match["ext"] or ""
        pattern = re.compile(re.escape(stem) + r"_(\d{5,})_" + re.escape(ext) + "$")
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
        return f"{stem}_{max(taken, default=0) + 1:05}_{ext}"
    stem, dot, ext = filename.rpartition(".")
    stem, ext = (stem, dot + ext) if dot and stem else (filename, "")
    n = 1
    while (folder / f"{stem} ({n}){ext}").exists():
        n += 1
    return f"{stem} ({n}){ext}"


def rename_in_ui(ui: Any, placed: dict[FileRef, str]) -> Any:
    """A copy of `ui` whose file dicts carry the names the server stored them under."""
    if not placed or not isinstance(ui, dict):
        return ui
    renamed: dict[str, Any] = {}
    for name, files in ui.items():
        if isinstance(files, list):
            files = [{**f, "filename": placed[ref_of(f)]} if isinstance(f, dict) and isinstance(f.get("filename"), str)
                     and ref_of(f) in placed else f for f in files]
        renamed[name] = files
    return renamed
