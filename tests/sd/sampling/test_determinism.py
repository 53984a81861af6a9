"""Determinism: the same seed gives bit-identical latents in two fresh processes on the CPU, whatever
ran before (the second process runs the cases in reverse order). The cases are the conformance graphs
of the stochastic samplers: per-step generator noise, Brownian-tree noise, SDE solvers, a split run
whose second stage uses seed 0."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CASES = ["sampler_euler_ancestral", "sampler_dpmpp_2m_sde", "sampler_sa_solver", "sca_split_euler_ancestral_simple"]

CHILD = """
import hashlib, sys, tempfile
from pathlib import Path
import torch
import nodes
from nodegraph import Executor, NodeRegistry, OutputCache, folders, validate_prompt
from tests.conformance import harness

library = NodeRegistry()
nodes.register_nodes(library)
library = harness.capture_library(library)
with tempfile.TemporaryDirectory() as tmp:
    folders.use(harness.conformance_layout(Path(tmp)))
    executor = Executor(OutputCache(2 ** 30))
    for name in sys.argv[1:]:
        prompt = harness.load_case(name)
        for node in prompt.values():
            node["class_type"] = harness.CAPTURES.get(node["class_type"], node["class_type"])
        result = executor.execute(validate_prompt(prompt, library))
        assert result.ok, result.error
        for ui in result.outputs.values():
            for prefix, tensor in ui.get("capture", []):
                if prefix.startswith("latents/"):
                    digest = hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()
                    print(prefix, digest)
"""


def run_child(cases):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NODEGRAPH_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, *cases], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted(line for line in done.stdout.splitlines() if line.startswith("latents/"))


def test_same_seed_bit_identical_across_processes():
    first, second = run_child(CASES), run_child(CASES[::-1])
    assert len(first) >= len(CASES)
    assert first == second
