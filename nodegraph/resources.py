"""Where the editor's static files and the example workflows are: inside the installed package (a wheel
built by setup.py carries both), else in the source checkout (an editable install, `./scripts/*`)."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent  # the repository root, when running from a checkout
EDITOR_LIBRARY = Path("node_modules") / "@comfyorg" / "litegraph"


def web_root() -> Path | None:
    """The folder whose index.html is the editor, or None when neither place has one."""
    for root in (PACKAGE / "web", CHECKOUT / "web"):
        if (root / "index.html").is_file():
            return root
    return None


def examples_dir() -> Path | None:
    """The folder of the shipped example workflows (`nodegraph run --example NAME`)."""
    for folder in (PACKAGE / "examples", CHECKOUT / "workflows"):
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    return None


def example_names() -> list[str]:
    folder = examples_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder else []


def example_path(name: str) -> Path:
    """The file of example `name` (with or without .json); FileNotFoundError listing the examples."""
    folder = examples_dir()
    stem = name[:-5] if name.endswith(".json") else name
    if folder is not None and "/" not in stem and "\\" not in stem and (folder / f"{stem}.json").is_file():
        return folder / f"{stem}.json"
    raise FileNotFoundError(f"no example workflow named {name!r}; the examples are: "
                            f"{', '.join(example_names()) or '(none installed)'}")
