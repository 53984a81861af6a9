"""`python -m tests.server.toy_server BASE PORT`: the real `serve()` with the pure-Python test
nodes (no torch), for tests that need a server process to kill, and for the benchmark."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nodegraph.cache import OutputCache
from nodegraph.folders import Folders
from nodegraph.server.app import serve

from .server_nodes import make_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--history-size", type=int, default=10000)
    parser.add_argument("--cache-budget", type=int, default=256 * 1024 * 1024)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = argparse.Namespace(listen="127.0.0.1", port=options.port, auth_token=None, insecure_no_auth=False,
                              max_upload_size=100, history_size=options.history_size, preview_method="none",
                              verbose=False, quiet=True)
    return serve(args, Folders(options.base), make_registry(), OutputCache(options.cache_budget))


if __name__ == "__main__":
    sys.exit(main())
