"""The embedded default checkpoint that the example workflows and the README's main job use.

Until the project's trained demo model ships, it is a tiny SD1-architecture model with random
weights, generated on first use (a few MB, seconds) — real loading code, real file format."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "nodegraph-tiny-random.safetensors"


def ensure_default_checkpoint(folders) -> Path:
    """Create models/checkpoints/<DEFAULT_CHECKPOINT> in the first models folder if no models
    folder has it yet; return its path."""
    try:
        return folders.model_path("checkpoints", DEFAULT_CHECKPOINT)
    except FileNotFoundError:
        pass
    from .sd.tiny import make_tiny_checkpoint

    path = folders.model_dirs("checkpoints")[0] / DEFAULT_CHECKPOINT
    log.info("creating the embedded default model (tiny, random weights) at %s", path)
    tmp = path.with_suffix(".part")
    make_tiny_checkpoint(tmp, seed=0)
    tmp.replace(path)
    return path
