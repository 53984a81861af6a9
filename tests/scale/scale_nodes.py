"""Test-only nodes for several workers: a "checkpoint" whose load takes time and is counted per
worker process, a sampler-like node that uses it, and a node that kills its worker process."""
from __future__ import annotations

import collections
import os
import time

from nodegraph import Float, Input, Int, Node, Output, ProgressBar, String, check_cancelled

from tests.server import server_nodes

LOADS: collections.Counter = collections.Counter()  # per process: checkpoint name -> loads


class LoadBlob(Node):
    """Stands in for a checkpoint loader: takes `seconds` and holds `megabytes` of memory."""
    category = "test"
    inputs = (String("name", "a"), Float("seconds", 0.5, min=0, max=60), Int("megabytes", 1, min=0, max=64))
    outputs = (Output("BLOB"),)

    def run(self, name, seconds, megabytes):
        LOADS[name] += 1
        time.sleep(seconds)
        return ({"name": name, "data": bytearray(megabytes * 1024 * 1024)},)


class UseBlob(Node):
    """Stands in for a sampler: `steps` steps of `delay` seconds, cancellable, progress each step."""
    category = "test"
    inputs = (Input("blob", "BLOB"), Int("seed", 0, min=0, max=2**31), Int("steps", 3, min=1, max=1000),
              Float("delay", 0.01, min=0, max=10))
    outputs = (Output("FLOAT"),)

    def run(self, blob, seed, steps, delay):
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(delay)
            check_cancelled()
            bar.update(1)
        return (float(seed),)


class KillWorker(Node):
    """Ends the process it runs in, at once (a crashing custom node, an OOM kill)."""
    category = "test"
    inputs = (Input("a", "FLOAT", forceInput=True),)
    outputs = (Output("FLOAT"),)

    def run(self, a):
        os._exit(17)


def make_registry():
    registry = server_nodes.make_registry()
    registry.register_all([LoadBlob, UseBlob, KillWorker])
    return registry


def blob_prompt(name: str, seed: int, *, load: float = 0.5, steps: int = 3, delay: float = 0.01) -> dict:
    """LoadBlob(name) -> UseBlob(seed) -> Show."""
    return {"1": {"class_type": "LoadBlob", "inputs": {"name": name, "seconds": load, "megabytes": 1}},
            "2": {"class_type": "UseBlob", "inputs": {"blob": ["1", 0], "seed": seed, "steps": steps, "delay": delay}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}


def kill_prompt() -> dict:
    return {"1": {"class_type": "Number", "inputs": {"value": 1.0}},
            "2": {"class_type": "KillWorker", "inputs": {"a": ["1", 0]}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
