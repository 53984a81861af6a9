"""The version is written once (nodegraph/__init__.py): the CLI, the package metadata and the changelog
agree with it."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nodegraph

ROOT = Path(__file__).resolve().parents[2]


def test_cli_prints_the_version():
    out = subprocess.run([sys.executable, "-m", "nodegraph", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"nodegraph {nodegraph.__version__}"


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nodegraph.__version__"}


def test_the_changelog_has_an_entry_for_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", text, re.M)
    assert releases and releases[0] == nodegraph.__version__, releases
    assert re.fullmatch(r"\d+\.\d+\.\d+", nodegraph.__version__)
