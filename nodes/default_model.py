"""The embedded models that the example workflows and the README's main job use, offline.

* The **demo models** (`nodes/sd/demo/`, trained by this project: `training/`): an SD1-architecture
  checkpoint that draws one coloured shape on a plain background from a caption such as "a red circle on
  a white background, top left", a rank-4 LoRA (outlined style) and a Canny ControlNet. They ship with
  the code and are copied into the models folders on first use (26 MB, once), so they appear in the
  loaders' lists like any file a user puts there, and nothing a user does there can change the shipped files.
* The **tiny random stand-ins** (generated on first use, a few MB, seconds): a checkpoint, LoRA,
  ControlNet and depth model with random weights in the real key layouts. Only the depth ControlNet
  workflow still uses them (no depth ControlNet is trained for the demo model); tests use them where
  they need a model that loads in milliseconds.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).resolve().parent / "sd" / "demo"
DEFAULT_CHECKPOINT = "nodegraph-demo.safetensors"
DEMO_LORA = "nodegraph-demo-lora.safetensors"
DEMO_CONTROLNET = "nodegraph-demo-controlnet.safetensors"
# the demo ControlNet's Canny thresholds (kornia's scale): ComfyUI's 0.4 / 0.8 miss light-on-light edges
DEMO_CANNY_THRESHOLDS = (0.05, 0.1)
DEMO_FILES = {"checkpoints": DEFAULT_CHECKPOINT, "loras": DEMO_LORA, "controlnet": DEMO_CONTROLNET}

TINY_CHECKPOINT = "nodegraph-tiny-random.safetensors"
DEFAULT_CONTROLNET = "nodegraph-tiny-controlnet.safetensors"
DEFAULT_LORA = "nodegraph-tiny-lora.safetensors"
DEFAULT_DEPTH_MODEL = "nodegraph-tiny-depth"
EXAMPLE_IMAGE = "example.png"


def _install(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    shutil.copyfile(source, tmp)
    tmp.replace(target)


def ensure_default_checkpoint(folders) -> Path:
    """Install the demo checkpoint, LoRA and ControlNet into the first models folder where no models
    folder has them yet; return the checkpoint's path."""
    for kind, name in DEMO_FILES.items():
        try:
            folders.model_path(kind, name)
            continue
        except FileNotFoundError:
            pass
        source = DEMO_DIR / name
        if not source.exists():
            raise FileNotFoundError(f"the embedded demo model {source} is missing from this installation; "
                                    f"reinstall nodegraph, or rebuild it with `python -m training.run_all`")
        target = folders.model_dirs(kind)[0] / name
        log.info("installing the embedded demo model %s into %s", name, target.parent)
        _install(source, target)
    return folders.model_path("checkpoints", DEFAULT_CHECKPOINT)


def ensure_tiny_checkpoint(folders) -> Path:
    """Create models/checkpoints/<TINY_CHECKPOINT> (random weights) where no models folder has it."""
    try:
        return folders.model_path("checkpoints", TINY_CHECKPOINT)
    except FileNotFoundError:
        pass
    from .sd.tiny import make_tiny_checkpoint

    path = folders.model_dirs("checkpoints")[0] / TINY_CHECKPOINT
    log.info("creating the tiny random checkpoint at %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    make_tiny_checkpoint(tmp, seed=0)
    tmp.replace(path)
    return path


def ensure_example_image(folders) -> Path:
    """input/example.png, which the img2img, inpaint and ControlNet workflows load: a blue square on a
    white background, top left (the demo model's world), with an alpha channel that is transparent over
    the top-left quarter (LoadImage's mask: what the inpaint workflow repaints). The demo model has only
    ever seen one shape per image, so the example repaints the shape rather than adding a second."""
    import numpy as np
    from PIL import Image

    path = Path(folders.input) / EXAMPLE_IMAGE
    if path.exists():
        return path
    rgba = np.full((64, 64, 4), 242, np.uint8)
    rgba[8:32, 8:32, :3] = (35, 65, 225)
    rgba[..., 3] = 255
    rgba[:40, :40, 3] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def ensure_default_extras(folders) -> dict[str, Path]:
    """Create the tiny random checkpoint, ControlNet, LoRA and depth model (models/checkpoints,
    models/controlnet, models/loras, models/depth) where no models folder has them yet. A part that
    cannot be made (e.g. transformers missing for the depth model) is skipped with a warning."""
    from .sd.tiny_extras import make_tiny_controlnet, make_tiny_depth_model, make_tiny_lora

    made: dict[str, Path] = {"checkpoint": ensure_tiny_checkpoint(folders)}
    for kind, name, make in (("controlnet", DEFAULT_CONTROLNET, make_tiny_controlnet),
                             ("loras", DEFAULT_LORA, make_tiny_lora)):
        try:
            made[kind] = folders.model_path(kind, name)
            continue
        except FileNotFoundError:
            pass
        path = folders.model_dirs(kind)[0] / name
        log.info("creating the embedded tiny %s (random weights) at %s", kind, path)
        path.parent.mkdir(parents=True, exist_ok=True)
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
