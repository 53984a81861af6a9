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


DEFAULT_CONTROLNET = "nodegraph-tiny-controlnet.safetensors"
DEFAULT_LORA = "nodegraph-tiny-lora.safetensors"
DEFAULT_DEPTH_MODEL = "nodegraph-tiny-depth"


def ensure_default_extras(folders) -> dict[str, Path]:
    """Create the tiny ControlNet, LoRA and depth model that the ControlNet / LoRA example workflows
    use (models/controlnet, models/loras, models/depth), where no models folder has them yet.
    A part that cannot be made (e.g. transformers missing for the depth model) is skipped with a warning."""
    from .sd.tiny_extras import make_tiny_controlnet, make_tiny_depth_model, make_tiny_lora

    made: dict[str, Path] = {}
    for kind, name, make in (("controlnet", DEFAULT_CONTROLNET, make_tiny_controlnet),
                             ("loras", DEFAULT_LORA, make_tiny_lora)):
        try:
            made[kind] = folders.model_path(kind, name)
            continue
        except FileNotFoundError:
            pass
        path = folders.model_dirs(kind)[0] / name
        log.info("creating the embedded tiny %s (random weights) at %s", kind, path)
        tmp = path.with_suffix(".part")
        make(tmp)
        tmp.replace(path)
        made[kind] = path

    existing = [d / DEFAULT_DEPTH_MODEL for d in folders.model_dirs("depth") if (d / DEFAULT_DEPTH_MODEL).is_dir()]
    if existing:
        made["depth"] = existing[0]
        return made
    path = folders.model_dirs("depth")[0] / DEFAULT_DEPTH_MODEL
    tmp = path.with_name(path.name + ".part")
    try:
        log.info("creating the embedded tiny depth model (random weights) at %s", path)
        make_tiny_depth_model(tmp)
        tmp.replace(path)
        made["depth"] = path
    except ImportError as exc:
        log.warning("tiny depth model not created (%s); the depth example workflow needs one in %s", exc, path)
    return made
