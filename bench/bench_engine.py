"""Engine overhead on synthetic graphs: load + validate + schedule, and a fully cached re-run.

    python bench/bench_engine.py [--sizes 100 1000 10000] [--repeat 5]

The graphs are layered DAGs of pure-Python nodes (each node takes two inputs from the previous
layer), written to JSON and read back, so 'load' includes JSON parsing. Growth is reported as the
time ratio between sizes next to n·log n's ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodegraph import Executor, OutputCache, validate_prompt  # noqa: E402
from nodegraph.graph import DependencyGraph  # noqa: E402
from nodegraph.workflow import load_prompt  # noqa: E402
from tests.engine.toy_nodes import make_registry  # noqa: E402


def synthetic(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    width = max(2, int(math.sqrt(n)))
    prompt: dict = {}
    previous: list[str] = []
    while len(prompt) < n - 1:
        layer = []
        for _ in range(min(width, n - 1 - len(prompt))):
            node_id = str(len(prompt) + 1)
            if not previous:
                prompt[node_id] = {"class_type": "Number", "inputs": {"value": rng.random()}}
            else:
                a, b = rng.choice(previous), rng.choice(previous)
                prompt[node_id] = {"class_type": "Add", "inputs": {"a": [a, 0], "b": [b, 0]}}
            layer.append(node_id)
        previous = layer
    prompt[str(n)] = {"class_type": "Show", "inputs": {"value": [previous[0], 0]}}
    return prompt


def timed(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    registry = make_registry()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"g{n}.json"
            path.write_text(json.dumps(synthetic(n)))

            def prepare():
                validated = validate_prompt(load_prompt(path, registry), registry)
                graph = DependencyGraph(validated.prompt)
                graph.run_order(graph.ancestors(validated.outputs), validated.outputs)
                return validated

            prepare_s = timed(prepare, args.repeat)
            validated = prepare()
            executor = Executor(OutputCache())
            first = executor.execute(validated)
            assert first.ok and len(first.executed) > 0
            cached_s = timed(lambda: executor.execute(validated), args.repeat)
            assert executor.execute(validated).executed == []
            uncached_s = timed(lambda: Executor(OutputCache(0)).execute(validated), max(1, args.repeat // 2))
            rows.append((n, prepare_s, cached_s, uncached_s))

    print(f"{'nodes':>7} {'load+validate+schedule':>24} {'cached re-run':>15} {'uncached run':>14}")
    for n, prep, cached, uncached in rows:
        print(f"{n:>7} {prep * 1000:>21.1f} ms {cached * 1000:>12.1f} ms {uncached * 1000:>11.1f} ms")
    print("\ngrowth between sizes (time ratio vs n·log n ratio):")
    for (n1, p1, c1, _), (n2, p2, c2, _) in zip(rows, rows[1:]):
        nlogn = (n2 * math.log(n2)) / (n1 * math.log(n1))
        print(f"  {n1} -> {n2}: prepare x{p2 / p1:.1f}, cached re-run x{c2 / c1:.1f}, n·log n x{nlogn:.1f}")


if __name__ == "__main__":
    main()
