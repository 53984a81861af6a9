"""Build hooks (everything else is in pyproject.toml): the wheel carries the built editor and the
example workflows, so that `pip install nodegraph && nodegraph serve` serves the editor and
`nodegraph run --example txt2img` runs, with neither npm nor a network.

* `build_py` copies `web/index.html`, `web/src/` and the pinned litegraph files from `web/node_modules`
  into the package as `nodegraph/web/` (same relative paths, so the page needs no rewriting), and
  `workflows/*.json` as `nodegraph/examples/`. An editable install (`pip install -e .`) copies nothing:
  it serves the checkout's own `web/` and `workflows/`.
* `sdist` refuses to build without `web/node_modules` (MANIFEST.in takes the litegraph copy from there),
  so an empty editor is never shipped silently.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
LITEGRAPH = Path("node_modules") / "@comfyorg" / "litegraph"
# what the page loads from the library (index.html's stylesheet, canvas.js's import) and its licence
LITEGRAPH_FILES = ("dist/litegraph.es.js", "dist/css/litegraph.css", "LICENSE", "package.json")
MISSING = ("the editor's canvas library is missing: {path} not found. Run `npm ci --prefix web` (it installs "
           "the pinned @comfyorg/litegraph from web/package-lock.json), then build again")


def editor_files(web: Path) -> list[Path]:
    """The editor's files relative to `web`; SystemExit with what to do when the library is absent."""
    missing = [web / LITEGRAPH / f for f in LITEGRAPH_FILES if not (web / LITEGRAPH / f).is_file()]
    if missing:
        raise SystemExit("error: " + MISSING.format(path=missing[0]))
    files = [Path("index.html")] + [p.relative_to(web) for p in sorted((web / "src").rglob("*")) if p.is_file()]
    return files + [LITEGRAPH / f for f in LITEGRAPH_FILES]


class BuildPyWithEditor(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the checkout's web/ and workflows/ are served as they are
        web, target = ROOT / "web", Path(self.build_lib) / "nodegraph"
        copies = [(web / rel, target / "web" / rel) for rel in editor_files(web)]
        copies += [(p, target / "examples" / p.name) for p in sorted((ROOT / "workflows").glob("*.json"))]
        for source, dest in copies:
            self.mkpath(str(dest.parent))
            self.copy_file(str(source), str(dest), preserve_mode=False)


class SdistWithEditor(sdist):
    def run(self) -> None:
        editor_files(ROOT / "web")  # fail early, with the fix, rather than ship an sdist without the editor
        super().run()


setup(cmdclass={"build_py": BuildPyWithEditor, "sdist": SdistWithEditor})
