"""The embedded demo models that the example workflows and the README's main job use, offline.

The **demo models** (`nodes/sd/demo/`, trained by this project: `training/`) are an SD1-architecture
checkpoint that draws one coloured shape on a plain background from a caption such as "a red circle on a
white background, top left", a rank-4 LoRA (outlined style), a Canny ControlNet and, where trained, a depth
estimator with its depth ControlNet. They ship inside the package and are *offered* to the loaders under
their names (`Folders.offer_embedded`): they appear in the lists beside the user's files, but nothing is
copied into a models folder, and a models folder the user points at is never written to. Random-weight
models are test fixtures only (`tests/tiny_models.py` writes them into the tests' temporary folders).
"""
from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "sd" / "demo"
DEFAULT_CHECKPOINT = "nodegraph-demo.safetensors"
DEMO_LORA = "nodegraph-demo-lora.safetensors"
DEMO_CONTROLNET = "nodegraph-demo-controlnet.safetensors"
DEMO_DEPTH_CONTROLNET = "nodegraph-demo-depth-controlnet.safetensors"
DEMO_DEPTH_MODEL = "nodegraph-demo-depth"  # a transformers DPT folder
# the demo ControlNet's Canny thresholds (kornia's scale): ComfyUI's 0.4 / 0.8 miss light-on-light edges
DEMO_CANNY_THRESHOLDS = (0.05, 0.1)
# folder kind -> name; the depth pair is offered only when it ships (training/export_depth.py)
DEMO_FILES = {"checkpoints": (DEFAULT_CHECKPOINT,), "loras": (DEMO_LORA,),
              "controlnet": (DEMO_CONTROLNET, DEMO_DEPTH_CONTROLNET), "depth": (DEMO_DEPTH_MODEL,)}
EXAMPLE_IMAGE = "example.png"


def offer_demo_models(folders) -> None:
    """List the shipped demo files in `folders` (see the module docstring); writes nothing."""
    for kind, names in DEMO_FILES.items():
        for name in names:
            if (DEMO_DIR / name).exists():
                folders.offer_embedded(kind, name, DEMO_DIR / name)


def ensure_default_checkpoint(folders) -> Path:
    """Offer the demo models to `folders`; return the path the default checkpoint loads from (a user's
    file of the same name, or the shipped one)."""
    if not (DEMO_DIR / DEFAULT_CHECKPOINT).exists():
        raise FileNotFoundError(f"the embedded demo model {DEMO_DIR / DEFAULT_CHECKPOINT} is missing from this "
                                f"installation; reinstall nodegraph, or rebuild it with `python -m training.run_all`")
    offer_demo_models(folders)
    return folders.model_path("checkpoints", DEFAULT_CHECKPOINT)


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
