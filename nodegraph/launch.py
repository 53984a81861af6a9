"""The `nodegraph` command's entry point: restart with tcmalloc where it is installed (see
nodegraph.allocator), then the CLI. `nodegraph.cli.main(argv)` itself never restarts anything."""
from __future__ import annotations

import sys


def main() -> None:
    from .allocator import restart_with_tcmalloc

    restart_with_tcmalloc()  # before the CLI's imports: an exec throws away whatever was loaded
    from .cli import main as cli_main

    sys.exit(cli_main())
