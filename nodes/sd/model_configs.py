"""LDM model configs (`.yaml`) for CheckpointLoader: the SD1 ones ComfyUI ships (bundled here) plus any
in models/configs, and what ComfyUI 0.3.64 takes from them — only the prediction type and the
text encoder's layer (CLIP skip); the architecture itself is always read from the weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nodegraph import folders

BUNDLED = Path(__file__).resolve().parent / "configs"


class ModelConfigError(ValueError):
    """A config file that cannot be read or asks for something nodegraph cannot do."""


@dataclass(frozen=True)
class CheckpointConfig:
    """What a config changes about a loaded checkpoint."""
    clip_layer: int | None  # CLIP skip as a layer index (-2 = the second-to-last layer), None = keep
    in_channels: int | None  # the UNet input the config was written for (a consistency check)
    context_dim: int | None


def config_names() -> list[str]:
    """The bundled SD1 configs and the user's, as CheckpointLoader lists them."""
    names = {p.name for p in BUNDLED.glob("*.yaml")} | set(folders.current().list_models("configs"))
    return sorted(names, key=str.lower)


def config_path(name: str) -> Path:
    """The user's config of that name (models/configs), else the bundled one."""
    try:
        return folders.current().model_path("configs", name)
    except FileNotFoundError:
        bundled = BUNDLED / name
        if "/" not in name and "\\" not in name and bundled.is_file():
            return bundled
        raise


def read_config(path: Path) -> CheckpointConfig:
    import yaml  # only CheckpointLoader reads configs: kept out of every run's start-up

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        params = document["model"]["params"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelConfigError(f"'{path.name}' is not an LDM model config (no model.params: "
                               f"{type(exc).__name__}: {exc})") from exc
    if params.get("parameterization") == "v":
        raise ModelConfigError(f"'{path.name}' is for a v-prediction model (SD2.x 768-v); nodegraph runs SD1.x "
                               "epsilon-prediction models: use v1-inference.yaml")
    clip_params = (params.get("cond_stage_config") or {}).get("params") or {}
    unet_params = (params.get("unet_config") or {}).get("params") or {}
    layer = clip_params.get("layer_idx")
    if layer is not None and (not isinstance(layer, int) or not -24 <= layer <= -1):
        raise ModelConfigError(f"'{path.name}': cond_stage_config layer_idx {layer!r} is not a layer from -24 to -1")
    return CheckpointConfig(clip_layer=layer, in_channels=unet_params.get("in_channels"),
                            context_dim=unet_params.get("context_dim"))
