"""The `nodegraph` command restarts itself once with tcmalloc preloaded where it is installed
(nodegraph/allocator.py): the decision, and the real restart of `python -m nodegraph`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph.allocator import ALLOCATOR_ENV, PRELOADED_ENV, find_tcmalloc, preload_environment

ROOT = Path(__file__).resolve().parents[2]
LIB = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def test_the_library_is_preloaded_once_with_what_was_there_kept():
    env = preload_environment({"PATH": "/bin", "LD_PRELOAD": "/opt/libfoo.so"}, LIB)
    assert env["LD_PRELOAD"] == f"{LIB}:/opt/libfoo.so" and env["PATH"] == "/bin"
    assert env[PRELOADED_ENV] == LIB
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) > 1 << 40  # no stderr report per big tensor
    assert preload_environment(env, LIB) is None  # the restarted process does not restart again


@pytest.mark.parametrize("env, library", [
    ({}, None),  # not installed
    ({ALLOCATOR_ENV: "system"}, LIB),  # asked for glibc's
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, LIB),  # the user chose another allocator
    ({"LD_PRELOAD": LIB}, LIB),  # already there
])
def test_nothing_is_restarted(env, library):
    assert preload_environment(env, library) is None


def test_finds_a_library_in_the_folders_searched(tmp_path):
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert find_tcmalloc([str(tmp_path / "missing"), str(tmp_path)]) == str(tmp_path / "libtcmalloc_minimal.so.4")


def _allocator_line(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in (PRELOADED_ENV, "LD_PRELOAD", ALLOCATOR_ENV)}
    done = subprocess.run([sys.executable, "-m", "nodegraph", "-v", "validate", "workflows/txt2img.json"],
                          cwd=ROOT, env={**env, **extra_env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(line for line in done.stderr.splitlines() if "memory allocator" in line)


@pytest.mark.skipif(not sys.platform.startswith("linux") or find_tcmalloc() is None, reason="tcmalloc not installed")
def test_the_command_runs_with_tcmalloc_where_installed_and_without_when_asked():
    assert "tcmalloc" in _allocator_line({})
    assert "C library" in _allocator_line({ALLOCATOR_ENV: "system"})
