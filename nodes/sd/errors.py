"""Typed errors for loading SD model files; every message names the file and says what to do."""
from __future__ import annotations

from pathlib import Path


class ModelLoadError(Exception):
    """A model file could not be read or does not match the model it should hold."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        where = f"'{self.path}'" if self.path is not None else "state dict"
        super().__init__(f"Cannot load model file {where}: {reason}")


class NotAnSDCheckpointError(ModelLoadError):
    """The file holds weights, but not of an SD1.x model (e.g. SDXL, SD2, a LoRA, a ControlNet)."""


class MissingKeysError(ModelLoadError):
    """Weights the model needs are absent from the file (often a truncated or partial download)."""

    def __init__(self, path: str | Path | None, part: str, missing: list[str], mismatched: list[str] | None = None):
        self.part = part
        self.missing = list(missing)
        self.mismatched = list(mismatched or [])
        lines = []
        if self.missing:
            lines.append(f"{len(self.missing)} {part} weight(s) missing: {_preview(self.missing)}")
        if self.mismatched:
            lines.append(f"{len(self.mismatched)} {part} weight(s) with the wrong shape: {_preview(self.mismatched)}")
        lines.append("the file is incomplete or is not an SD1.x checkpoint; re-download it or pick another model")
        super().__init__(path, "; ".join(lines))


def _preview(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")
