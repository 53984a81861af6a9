"""The `nodegraph` command holds the cyclic garbage collector off while it imports torch and the node
library, then freezes what start-up built and turns it back on (nodegraph/launch.py); the CLI used as
a library (as here) keeps its process's collector as it is."""
from __future__ import annotations

import gc

import pytest

from nodegraph import cli, launch


@pytest.fixture
def collector():
    yield
    gc.unfreeze()
    gc.enable()
    launch._collector_paused = False


def test_paused_until_startup_done_then_frozen_and_running(collector):
    launch.pause_collector()
    assert not gc.isenabled()
    start_up = [{} for _ in range(10)]  # tracked containers, standing for the imports' long-lived objects
    launch.startup_done()
    assert gc.isenabled() and gc.get_freeze_count() >= len(start_up)
    frozen = gc.get_freeze_count()
    later = [{} for _ in range(1000)]  # built after start-up: a second call must not freeze these
    launch.startup_done()  # once only
    # not == frozen: a frozen object that dies leaves the permanent generation (seen in a full run)
    assert gc.get_freeze_count() < frozen + len(later)


def test_a_library_caller_keeps_its_collector(collector):
    launch.startup_done()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()  # a caller that turned it off itself keeps it off
    launch.pause_collector()
    launch.startup_done()
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_the_cli_setup_ends_the_pause(collector, tmp_path, capsys):
    launch.pause_collector()
    assert cli.main(["--base-dir", str(tmp_path), "nodes"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() > 0
