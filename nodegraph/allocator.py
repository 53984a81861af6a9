"""The memory allocator the `nodegraph` command runs with: tcmalloc where it is installed (Linux).

Every tensor op on the CPU allocates its output. glibc's malloc hands each block above 32 MB back to
the kernel when it is freed, so the next op's output is fresh memory again and every page of it
faults — on a VM each first touch costs about 1 s per GB. tcmalloc keeps freed memory for reuse: a
512² VAE decode took 0.74–0.90× the time, a full-size SD1.5 UNet step 0.81–0.98× (how dear a page fault
is depends on the hour; docs/performance.md, "Allocators, measured once more", bench/bench_allocators.py).
PyTorch's own CPU launcher (torch.backends.xeon.run_cpu) preloads it for the same reason. A library
cannot be swapped in after the process has started, so the command starts itself again once with
LD_PRELOAD set, before anything heavy is imported.

`NODEGRAPH_ALLOCATOR=system` keeps the C library's allocator; nothing happens where tcmalloc is not
installed (Debian/Ubuntu: `apt install libtcmalloc-minimal4`).
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ALLOCATOR_ENV = "NODEGRAPH_ALLOCATOR"
# Set in the restarted process: what it runs with, and the guard against restarting twice.
PRELOADED_ENV = "NODEGRAPH_PRELOADED_ALLOCATOR"

_LIBRARY_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                 "/usr/local/lib")
# tcmalloc reports every allocation over 1 GB on stderr by default; a large decode makes several.
_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 62)}


def find_tcmalloc(dirs: Sequence[str] = _LIBRARY_DIRS) -> str | None:
    """The path of an installed tcmalloc, or None."""
    for directory in dirs:
        for name in _LIBRARY_NAMES:
            candidate = Path(directory) / name
            if candidate.is_file():
                return str(candidate)
    found = ctypes.util.find_library("tcmalloc_minimal")
    return found if found and os.path.isabs(found) else None


def preload_environment(env: Mapping[str, str], library: str | None) -> dict[str, str] | None:
    """The environment to restart with so that `library` is preloaded, or None to run as we are:
    no library, asked for the system allocator, or a tcmalloc already preloaded (by us or the user)."""
    if library is None or env.get(ALLOCATOR_ENV, "").strip().lower() == "system":
        return None
    preload = env.get("LD_PRELOAD", "")
    if PRELOADED_ENV in env or "tcmalloc" in preload or "jemalloc" in preload:
        return None
    return {**_QUIET, **env, "LD_PRELOAD": f"{library}:{preload}" if preload else library,
            PRELOADED_ENV: library}


def restart_with_tcmalloc() -> None:
    """exec() this same command again with tcmalloc preloaded, when `preload_environment` says so.
    Returns (and the command runs as it is) everywhere else, or if the exec fails."""
    if not sys.platform.startswith("linux") or not getattr(sys, "orig_argv", None):
        return
    env = preload_environment(os.environ, find_tcmalloc())
    if env is None:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError:
        return


def describe() -> str:
    """Which allocator this process runs with, for the log: what is mapped into it, not what was asked."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    for line in maps.splitlines():
        if "libtcmalloc" in line:
            return f"tcmalloc ({line.split()[-1]})"
    return "the C library's (install libtcmalloc-minimal4 for faster CPU steps; docs/performance.md)"
