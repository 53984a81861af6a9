"""Time one 64×64 image with 20 steps on the demo checkpoint: prompt encoding, KSampler (euler, CFG 5)
and VAE decode, through the ordinary loaders and nodes code. Target: ≤ 2 s on a CPU.

    python bench/bench_demo.py [--threads N] [--repeats R] [--sampler euler]

Prints the median and the machine's load average (the figure depends on what else runs).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="euler")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from tests.demo import harness

    demo = harness.load_demo()
    prompt = "a red circle on a white background, top left"
    harness.generate(demo, [prompt], seed=0, steps=2)  # warm-up: first-call allocations
    times = []
    for i in range(args.repeats):
        t = time.perf_counter()
        harness.generate(demo, [prompt], seed=i, steps=args.steps, sampler=args.sampler)
        times.append(time.perf_counter() - t)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"demo 64x64, {args.steps} steps {args.sampler}, CFG 5, {args.threads} thread(s): "
          f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}); "
          f"load average {load:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
