"""The wheel is the product: `python -m build` makes an sdist and, from it, a wheel holding the engine, the
node library, the demo models, the example workflows and the built editor. Installed into a fresh venv
outside the checkout, `nodegraph serve` serves the editor and `nodegraph run --example` writes a PNG.

Speed: the fresh venv sees this test venv's site-packages through a .pth line (appended after its own
site-packages, so the installed wheel shadows the checkout's editable install), and pip installs the
wheel with `--no-index`: it must find every declared dependency range satisfied by what is there
(checked again below, requirement by requirement) and downloads nothing; the multi-hundred-MB torch is
not unpacked again. The full resolution against another torch is tests/packaging/test_other_torch.py.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LITEGRAPH = "node_modules/@comfyorg/litegraph/dist/litegraph.es.js"
pytestmark = pytest.mark.skipif(not (ROOT / "web" / "node_modules" / "@comfyorg" / "litegraph").is_dir(),
                                reason="web/node_modules is missing: run `npm ci --prefix web` (./scripts/test does)")


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 600)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # build in a copy of the sources git knows, so nothing is written into the checkout
    src = out / "src"
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file() and not rel.startswith(("tests/", "training/", "bench/")):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    shutil.copytree(ROOT / "web" / "node_modules", src / "web" / "node_modules", symlinks=True)
    built = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "v"
    assert run([sys.executable, "-m", "venv", env]).returncode == 0
    site = Path(run([env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
                    ).stdout.strip())
    (site / "_reuse_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(dist.glob("nodegraph-*.whl"))
    installed = run([env / "bin" / "python", "-m", "pip", "install", "--no-index", "--force-reinstall", "--no-deps",
                     "--no-warn-script-location", wheel])
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return env


def in_venv(env: Path, code: str, cwd: Path) -> str:
    result = run([env / "bin" / "python", "-c", code], cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_sdist_carries_the_editor_and_no_tests(dist):
    import tarfile

    with tarfile.open(next(dist.glob("nodegraph-*.tar.gz"))) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"web/index.html", "web/src/canvas.js", f"web/{LITEGRAPH}", "workflows/txt2img.json", "setup.py",
            "nodes/sd/demo/nodegraph-demo.safetensors", "CHANGELOG.md", "constraints.txt"} <= names
    assert not any(n.startswith(("tests/", "training/")) for n in names)


def test_wheel_holds_engine_library_models_editor_and_examples_but_no_fixtures(dist):
    with zipfile.ZipFile(next(dist.glob("nodegraph-*.whl"))) as wheel:
        names = set(wheel.namelist())
    assert {"nodegraph/cli.py", "nodes/sd/unet.py", "nodegraph/web/index.html", f"nodegraph/web/{LITEGRAPH}",
            "nodegraph/web/src/main.js", "nodegraph/examples/txt2img.json",
            "nodes/sd/demo/nodegraph-demo.safetensors"} <= names
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"nodegraph", "nodes"}
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "nodes/sd/demo").rglob("*") if p.is_file()}
    assert shipped <= names, shipped - names  # every demo file, the depth estimator's folder included
    models = sorted(n for n in names if n.endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin")))
    assert all(n.startswith("nodes/sd/demo/nodegraph-demo") for n in models), models
    assert not any("tiny" in n and not n.endswith(".py") for n in names)


def test_installed_package_runs_outside_the_checkout(venv, tmp_path):
    where = in_venv(venv, "import nodegraph, nodes; print(nodegraph.__file__); print(nodes.__file__)", tmp_path)
    assert str(ROOT) not in where and str(venv) in where, where
    # every declared dependency range is met by what the venv sees (pip installed with --no-index)
    unmet = in_venv(venv, """
from importlib.metadata import requires, version, PackageNotFoundError
from packaging.requirements import Requirement
for line in requires("nodegraph"):
    req = Requirement(line)
    if req.marker and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        have = version(req.name)
    except PackageNotFoundError:
        print(req, "missing"); continue
    if not req.specifier.contains(have, prereleases=True):
        print(req, "has", have)
""", tmp_path)
    assert unmet == "", unmet
    version = run([venv / "bin" / "nodegraph", "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("nodegraph ")


EXAMPLES = ["txt2img"] + (["controlnet_depth"] if (ROOT / "workflows" / "controlnet_depth.json").exists() else [])


@pytest.mark.parametrize("example", EXAMPLES)
def test_run_an_example_writes_a_png_and_no_model_files(venv, tmp_path, example):
    home = tmp_path / "home"
    result = run([venv / "bin" / "nodegraph", "-q", "--base-dir", home, "run", "--example", example,
                  "--set", "KSampler.steps=3"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    pngs = [Path(p) for p in result.stdout.split() if p.endswith(".png")]
    assert pngs and all(p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not (home / "models").exists() or not any((home / "models").rglob("*.*"))
    unknown = run([venv / "bin" / "nodegraph", "run", "--example", "nope"], cwd=tmp_path)
    assert unknown.returncode == 2 and "txt2img" in unknown.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_with_the_editor_and_system_stats(venv, tmp_path):
    port = free_port()
    server = subprocess.Popen([venv / "bin" / "nodegraph", "-q", "--base-dir", tmp_path / "home", "serve",
                               "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(base + "/system_stats", timeout=5) as response:
                    stats = json.load(response)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-3000:]
                assert time.time() < deadline, "the server did not answer within 180 s"
                time.sleep(0.5)
        assert stats["system"]["nodegraph_version"]
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            page = response.read().decode()
        assert "<html" in page.lower() and "src/main.js" in page and "litegraph.css" in page
        with urllib.request.urlopen(f"{base}/{LITEGRAPH}", timeout=10) as response:
            assert response.status == 200 and len(response.read()) > 100_000
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_build_without_the_editor_library_fails_and_says_what_to_run(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for rel in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CHANGELOG.md", "constraints.txt"):
        shutil.copy2(ROOT / rel, src / rel)
    shutil.copytree(ROOT / "nodegraph", src / "nodegraph", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "web", src / "web", ignore=shutil.ignore_patterns("node_modules"))
    for kind in ("--sdist", "--wheel"):
        result = run([sys.executable, "-m", "build", "--no-isolation", kind, "--outdir", tmp_path / "out", src])
        assert result.returncode != 0
        assert "npm ci --prefix web" in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
