"""Random-weight models in the real key layouts, written into a test's own (temporary) models folder:
test fixtures only; the product never writes them into a user's folders (nodes/default_model.py)."""
from __future__ import annotations

from pathlib import Path

TINY_CHECKPOINT = "nodegraph-tiny-random.safetensors"
TINY_CONTROLNET = "nodegraph-tiny-controlnet.safetensors"
TINY_LORA = "nodegraph-tiny-lora.safetensors"
TINY_DEPTH_MODEL = "nodegraph-tiny-depth"


def make_tiny_models(models_dir: Path) -> dict[str, Path]:
    """A tiny random checkpoint, ControlNet (shaped for it), LoRA and DPT depth model under
    `models_dir` (checkpoints/, controlnet/, loras/, depth/); returns kind -> path."""
    from nodes.sd.tiny import make_tiny_checkpoint
    from nodes.sd.tiny_extras import make_tiny_controlnet, make_tiny_depth_model, make_tiny_lora

    models_dir = Path(models_dir)
    made = {"checkpoint": make_tiny_checkpoint(models_dir / "checkpoints" / TINY_CHECKPOINT, seed=0),
            "controlnet": make_tiny_controlnet(models_dir / "controlnet" / TINY_CONTROLNET),
            "loras": make_tiny_lora(models_dir / "loras" / TINY_LORA),
            "depth": make_tiny_depth_model(models_dir / "depth" / TINY_DEPTH_MODEL)}
    return {kind: Path(path) for kind, path in made.items()}
