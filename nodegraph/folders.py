"""Where models, inputs, outputs, temporary files and user data live, and safe paths inside them.

The layout is ComfyUI's (`models/checkpoints`, `models/loras`, ..., `input/`, `output/`, `temp/`,
`user/`), so an existing ComfyUI models folder can be pointed at with `--models-dir` (or an
extra_model_paths.yaml, `nodegraph.model_paths`). The active layout is one explicit object
(`use()` / `current()`), set once by the CLI or server. Models folders are only ever read; embedded
models (files shipped with the code, `offer_embedded`) are listed after the user's own, never copied.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
# folder key -> sub-folder names searched, in ComfyUI's order (its aliases included: a file in
# models/unet is a diffusion model, one in models/clip a text encoder).
MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",),
    "configs": ("configs",),
    "loras": ("loras",),
    "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"),
    "clip": ("clip", "text_encoders"),
    "diffusion_models": ("unet", "diffusion_models"),
    "unet": ("unet", "diffusion_models"),
    "clip_vision": ("clip_vision",),
    "style_models": ("style_models",),
    "embeddings": ("embeddings",),
    "diffusers": ("diffusers",),
    "vae_approx": ("vae_approx",),
    "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",),
    "upscale_models": ("upscale_models",),
    "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",),
    "model_patches": ("model_patches",),
    "depth": ("depth",),
}
# Kinds whose files are not weights (ComfyUI lists only `.yaml` model configs).
FOLDER_EXTENSIONS: dict[str, frozenset[str]] = {"configs": frozenset({".yaml"})}
# A folder that holds any of these is a models folder; a folder holding `models/` with them is a
# ComfyUI installation, and `--models-dir ~/ComfyUI` means its `models/`.
_MODEL_SUBFOLDERS = frozenset(sub for subs in MODEL_FOLDERS.values() for sub in subs)


def models_root(path: Path) -> Path:
    """The models folder meant by `path`: `path` itself, or `path/models` when `path` is a ComfyUI
    tree (it has `models/` with model sub-folders and none of its own)."""
    path = Path(path)
    inner = path / "models"

    def has_model_folders(folder: Path) -> bool:
        return any((folder / sub).is_dir() for sub in _MODEL_SUBFOLDERS)

    if inner.is_dir() and has_model_folders(inner) and not has_model_folders(path):
        return inner
    return path


class UnsafePathError(ValueError):
    """A requested path would leave its base folder."""


@dataclass
class Folders:
    base: Path
    models: list[Path] = field(default_factory=list)  # searched in order; default: base/models
    input: Path | None = None
    output: Path | None = None
    temp: Path | None = None
    user: Path | None = None
    # folder kind -> extra folders of that kind alone (extra_model_paths.yaml, nodegraph.model_paths):
    # `extra_first` (is_default sections) searched before `models`, `extra` after
    extra: dict[str, list[Path]] = field(default_factory=dict)
    extra_first: dict[str, list[Path]] = field(default_factory=dict)
    # folder kind -> {name: file or model folder shipped with the code}: listed last, read-only
    embedded: dict[str, dict[str, Path]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = Path(self.base).resolve()
        self.user_models = bool(self.models)  # folders the user named: never created or written to
        self.models = [models_root(Path(m)).resolve() for m in self.models] or [self.base / "models"]
        self.extra = {kind: [Path(p).resolve() for p in paths] for kind, paths in self.extra.items()}
        self.extra_first = {kind: [Path(p).resolve() for p in paths] for kind, paths in self.extra_first.items()}
        self.input = Path(self.input or self.base / "input").resolve()
        self.output = Path(self.output or self.base / "output").resolve()
        self.temp = Path(self.temp or self.base / "temp").resolve()
        self.user = Path(self.user or self.base / "user").resolve()

    def model_dirs(self, kind: str) -> list[Path]:
        if kind not in MODEL_FOLDERS:
            raise KeyError(f"unknown model folder {kind!r}; known: {', '.join(MODEL_FOLDERS)}")
        aliases = MODEL_FOLDERS[kind]
        dirs = [d for alias in aliases for d in self.extra_first.get(alias, ())]
        dirs += [root / sub for root in self.models for sub in aliases]
        for extra in (d for alias in aliases for d in self.extra.get(alias, ())):
            if extra not in dirs:
                dirs.append(extra)
        return list(dict.fromkeys(dirs))

    def extra_folders_spec(self) -> dict[str, dict[str, list[str]]]:
        """The extra_model_paths folders as JSON, for a worker that builds its own layout (Ray)."""
        return {"extra": {k: [str(p) for p in v] for k, v in self.extra.items()},
                "extra_first": {k: [str(p) for p in v] for k, v in self.extra_first.items()}}

    def offer_embedded(self, kind: str, name: str, path: Path) -> None:
        """List `path` (a model file or folder shipped with the code) under `name` in `kind`'s folders,
        after the user's own files; a user's file of the same name wins. Nothing is copied."""
        if kind not in MODEL_FOLDERS:
            raise KeyError(f"unknown model folder {kind!r}; known: {', '.join(MODEL_FOLDERS)}")
        self.embedded.setdefault(kind, {})[name] = Path(path)

    def embedded_path(self, kind: str, name: str) -> Path | None:
        path = self.embedded.get(kind, {}).get(name)
        return path if path is not None and path.exists() else None

    def list_models(self, kind: str, extensions: frozenset[str] | None = None) -> list[str]:
        """Model files of a folder, as '/'-separated names relative to it, sorted."""
        extensions = extensions or FOLDER_EXTENSIONS.get(kind, MODEL_EXTENSIONS)
        names: set[str] = set()
        for folder in self.model_dirs(kind):
            if not folder.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for filename in filenames:
                    if Path(filename).suffix.lower() in extensions:
                        names.add((Path(dirpath) / filename).relative_to(folder).as_posix())
        names.update(n for n, p in self.embedded.get(kind, {}).items()
                     if p.is_file() and Path(n).suffix.lower() in extensions)
        return sorted(names, key=str.lower)

    def list_model_dirs(self, kind: str) -> list[str]:
        """Sub-folders that themselves hold a model (e.g. a transformers depth model folder)."""
        names: set[str] = set()
        for folder in self.model_dirs(kind):
            if folder.is_dir():
                names.update(p.name for p in folder.iterdir() if p.is_dir() and (p / "config.json").exists())
        names.update(n for n, p in self.embedded.get(kind, {}).items() if (p / "config.json").exists())
        return sorted(names)

    def model_path(self, kind: str, name: str) -> Path:
        """The file for a model name from `list_models`, or FileNotFoundError saying where to put it."""
        for folder in self.model_dirs(kind):
            # Model files may be symlinks to another disk: only the name itself must stay inside.
            path = safe_join(folder, name, allow_links_out=True)
            if path.exists():
                return path
        embedded = self.embedded_path(kind, name)
        if embedded is not None:
            return embedded
        places = ", ".join(str(f) for f in self.model_dirs(kind))
        raise FileNotFoundError(f"model '{name}' not found; put the file in one of: {places}")

    def ensure(self) -> None:
        """Create our own folders; a models folder the user named is never created or written to."""
        own = [] if self.user_models else [self.models[0]]
        for path in (self.input, self.output, self.temp, self.user, *own):
            path.mkdir(parents=True, exist_ok=True)


def safe_join(base: Path, relative: str, *, allow_links_out: bool = False) -> Path:
    """`base / relative`, refusing anything that would land outside `base`: '..', absolute paths,
    drive letters, NUL bytes, or (unless `allow_links_out`) symlinks that point away."""
    if not isinstance(relative, str) or "\0" in relative:
        raise UnsafePathError("invalid file name")
    cleaned = relative.replace("\\", "/")
    if cleaned.startswith("/") or (len(cleaned) > 1 and cleaned[1] == ":"):
        raise UnsafePathError(f"absolute paths are not allowed: {relative!r}")
    if any(part == ".." for part in cleaned.split("/")):
        raise UnsafePathError(f"'..' is not allowed in {relative!r}")
    base = Path(base).resolve()
    if allow_links_out:
        return base / cleaned
    path = (base / cleaned).resolve()
    if path != base and base not in path.parents:
        raise UnsafePathError(f"{relative!r} leaves {base}")
    return path


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file beside it and a rename, so no reader ever sees
    a half-written file; the file gets the ordinary mode (mkstemp alone would leave it private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_current: Folders | None = None


def use(folders: Folders) -> Folders:
    global _current
    _current = folders
    return folders


def current() -> Folders:
    """The active layout; by default rooted at $NODEGRAPH_HOME or the working directory."""
    global _current
    if _current is None:
        _current = Folders(Path(os.environ.get("NODEGRAPH_HOME", ".")))
    return _current
