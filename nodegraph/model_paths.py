"""ComfyUI's `extra_model_paths.yaml` (`--extra-model-paths FILE`): more folders per model kind, with
the same keys and meaning as ComfyUI, so an existing file can be reused as it is.

    comfyui:                       # any name: one section per installation
        base_path: ~/ComfyUI/      # optional; ~ and $VARS expanded; relative = to the YAML file's folder
        is_default: true           # optional; this section's folders are searched before the others
        checkpoints: models/checkpoints/
        loras: |                   # several folders: one per line
            models/loras/
            /mnt/shared/loras/

Each folder-kind key (checkpoints, loras, vae, controlnet, ...) adds folders to that kind: below
`base_path` when one is given, else relative to the YAML file's folder (absolute paths as they are).
Stricter than ComfyUI, because these folders are only read and a typo should not pass silently:
a folder that does not exist, or one that leaves the section's `base_path`, is an error naming the
section and key; so are malformed YAML and values that are not text.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class ModelPathsError(ValueError):
    """An extra_model_paths.yaml that cannot be used; the message names the file, section and key."""


@dataclass(frozen=True)
class ExtraFolder:
    kind: str  # the YAML key: a folder kind such as "checkpoints"
    path: Path
    is_default: bool  # searched before the other folders of its kind
    where: str  # "file: section.key", for messages


def read_extra_model_paths(path: str | Path) -> list[ExtraFolder]:
    """The folders an extra_model_paths.yaml adds, in file order; ModelPathsError on bad input."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelPathsError(f"--extra-model-paths: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelPathsError(f"--extra-model-paths: cannot read {path}: {exc}") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelPathsError(f"{path}: not valid YAML: {exc}") from None
    if config is None:
        return []
    if not isinstance(config, dict):
        raise ModelPathsError(f"{path}: expected sections such as 'comfyui:' with folder keys below them, "
                              f"found a {type(config).__name__}")
    here = path.resolve().parent
    folders: list[ExtraFolder] = []
    for section, entries in config.items():
        if entries is None:
            continue  # ComfyUI skips an empty section
        if not isinstance(entries, dict):
            raise ModelPathsError(f"{path}: section '{section}' must map folder kinds to paths, "
                                  f"found a {type(entries).__name__}")
        entries = dict(entries)
        base = _base_path(path, section, entries.pop("base_path", None), here)
        is_default = _is_default(path, section, entries.pop("is_default", False))
        for kind, value in entries.items():
            where = f"{path}: {section}.{kind}"
            if not isinstance(value, str):
                raise ModelPathsError(f"{where}: expected a path (or several, one per line), found "
                                      f"{type(value).__name__} {value!r}")
            for line in value.split("\n"):
                line = line.strip()
                if line:
                    folders.append(ExtraFolder(str(kind), _folder(where, line, base, here), is_default, where))
    return folders


def _base_path(path: Path, section: str, value, here: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ModelPathsError(f"{path}: {section}.base_path must be a folder path, found {value!r}")
    base = Path(os.path.expandvars(os.path.expanduser(value.strip())))
    base = Path(os.path.normpath(base if base.is_absolute() else here / base))
    if not base.is_dir():
        raise ModelPathsError(f"{path}: {section}.base_path: folder {base} does not exist")
    return base


def _is_default(path: Path, section: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ModelPathsError(f"{path}: {section}.is_default must be true or false, found {value!r}")


def _folder(where: str, entry: str, base: Path | None, here: Path) -> Path:
    entry = os.path.expandvars(os.path.expanduser(entry))
    if base is not None:
        folder = Path(os.path.normpath(base / entry))
        if folder != base and base not in folder.parents:
            raise ModelPathsError(f"{where}: {entry!r} leaves the section's base_path {base}; give a folder "
                                  f"below it, or drop base_path and use absolute paths")
    else:
        folder = Path(os.path.normpath(entry if Path(entry).is_absolute() else here / entry))
    if not folder.is_dir():
        raise ModelPathsError(f"{where}: folder {folder} does not exist")
    return folder


def extra_folders_by_kind(folders: list[ExtraFolder]) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """(searched first: the is_default sections', searched after the models folders: the others), each
    kind -> folders in file order; a folder given twice for a kind counts once."""
    first: dict[str, list[Path]] = {}
    last: dict[str, list[Path]] = {}
    for folder in folders:
        target = first if folder.is_default else last
        paths = target.setdefault(folder.kind, [])
        if folder.path not in paths:
            paths.append(folder.path)
    return first, last
