"""The `nodegraph` command's entry point: restart with tcmalloc where it is installed (see
nodegraph.allocator), then the CLI. `nodegraph.cli.main(argv)` itself never restarts anything.

The command also holds Python's cyclic garbage collector off while it starts: importing torch and
the node library creates ~170k long-lived objects, and each full collection during that walks all of
them (~0.15 s apiece here). Once the node library is loaded (`startup_done`, called by the CLI) those
objects are frozen — later collections skip them — and the collector runs as usual. Measured on the
demo workflow: 4.0–4.1 s instead of 4.8–5.0 s from process start to PNG, +4 MB peak RSS (the start-up's
own garbage cycles, kept)."""
from __future__ import annotations

import gc
import sys

_collector_paused = False


def main() -> None:
    from .allocator import restart_with_tcmalloc

    restart_with_tcmalloc()  # before the CLI's imports: an exec throws away whatever was loaded
    pause_collector()
    from .cli import main as cli_main

    sys.exit(cli_main())


def pause_collector() -> None:
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def startup_done() -> None:
    """The long-lived start-up objects exist now: freeze them and let the collector run again. Does
    nothing unless `pause_collector` paused it (the CLI called as a library, e.g. by tests, keeps its
    process's collector as it is)."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()
