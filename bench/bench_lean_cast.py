"""What the lean weights' per-layer cast costs a full-size SD1.5 UNet call on the CPU, three ways:

    python bench/bench_lean_cast.py [--size 256] [--rounds 6] [--workdir /tmp/nodegraph-bench]

1. the lean UNet with its weights mapped from the file, the lean UNet with copied weights (`--no-mmap`)
   and the fp32 UNet, in one process, called in turn with the order turning round by round: each lean
   call's CPU time over the same round's fp32 call (the median and range of those ratios);
2. torch.profiler over `--profile-calls` calls of each mode: the ops whose time differs most, and the
   lean call's shares of GroupNorm, SiLU and the out-of-place adds (what fusing them could save);
3. the cast itself, `copy_` from fp16 into fp32, into a block the size of a few-row block (in the
   cache) and into one far larger than the cache.

Run it as the `nodegraph` command runs (tcmalloc preloaded) or not; it prints which allocator it has.
The checkpoint is the one bench_vs_diffusers.py writes (written here when missing).
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_vs_diffusers import bench_checkpoint, loadavg, ours, unet_inputs  # noqa: E402

MODES = {"lean mapped": ("lean", "1"), "lean copied": ("lean", "0"), "fp32": ("fp32", "0")}
# What a fused GroupNorm + SiLU (and in-place adds around them) could save at most.
SHARE_OPS = ("aten::native_group_norm", "aten::silu", "aten::add")


def load_unets(path: Path) -> dict:
    unets = {}
    for name, (weights, mmap) in MODES.items():
        os.environ["NODEGRAPH_MMAP"] = mmap
        unets[name] = ours(path, weights).unet
    return unets


def alternate(unets: dict, inputs, rounds: int) -> dict[str, list[float]]:
    """CPU seconds of each call, round by round, the order turning."""
    order = list(unets)
    times: dict[str, list[float]] = {name: [] for name in order}
    for name in order:
        unets[name](*inputs)  # warm-up: first touch of the mapped pages, scratch buffers
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            c0 = time.process_time()
            unets[name](*inputs)
            times[name].append(time.process_time() - c0)
    return times


def profile_split(unets: dict, inputs, calls: int) -> dict[str, collections.Counter]:
    """Self time per op (ms per call) of the lean mapped and fp32 calls."""
    per_op = {}
    for name in ("lean mapped", "fp32"):
        counter: collections.Counter = collections.Counter()
        for _ in range(calls):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                unets[name](*inputs)
            for event in prof.key_averages():
                counter[event.key] += event.self_cpu_time_total / 1e3 / calls
        per_op[name] = counter
    return per_op


def cast_rate(elements: int, repeats: int = 20) -> float:
    """G elements per second of an fp16 → fp32 `copy_` of `elements` (best of `repeats`)."""
    src, dst = torch.randn(elements).half(), torch.empty(elements)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return elements / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--profile-calls", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nodegraph-bench"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from nodegraph import allocator
    path = bench_checkpoint(args.workdir)
    print(f"allocator: {allocator.describe()}; {args.threads} threads; load {loadavg():.1f}", flush=True)

    unets = load_unets(path)
    inputs = unet_inputs(args.size)
    with torch.inference_mode():
        times = alternate(unets, inputs, args.rounds)
        per_op = profile_split(unets, inputs, args.profile_calls)

    print(f"\nUNet {args.size}² batch 2, CPU seconds per call (median of {args.rounds}):")
    for name, values in times.items():
        print(f"  {name:12s} {statistics.median(values):.3f}  {[round(v, 2) for v in values]}")
    for name in ("lean mapped", "lean copied"):
        ratios = sorted(a / b for a, b in zip(times[name], times["fp32"]))
        print(f"  {name} vs fp32: {(statistics.median(ratios) - 1) * 100:+.1f} % "
              f"(range {(ratios[0] - 1) * 100:+.1f} … {(ratios[-1] - 1) * 100:+.1f} %)")

    lean, fp32 = per_op["lean mapped"], per_op["fp32"]
    print(f"\ntorch.profiler, self time in ms per call (lean {sum(lean.values()):.0f}, fp32 {sum(fp32.values()):.0f}); "
          "the ops that differ most:")
    for op in sorted(set(lean) | set(fp32), key=lambda k: -abs(lean[k] - fp32[k]))[:8]:
        print(f"  {op:50s} lean {lean[op]:8.1f}  fp32 {fp32[op]:8.1f}  {lean[op] - fp32[op]:+7.1f}")

    total = sum(lean.values())
    shares = ", ".join(f"{op.removeprefix('aten::')} {lean[op] / total * 100:.1f} %" for op in SHARE_OPS)
    print(f"  shares of the lean call: {shares}")

    in_cache, in_memory = cast_rate(4 << 20), cast_rate(64 << 20)
    weights = sum(p.numel() for p in unets["fp32"].parameters())
    print(f"\nfp16 → fp32 copy_: {in_cache:.1f} G elements/s into 16 MB, {in_memory:.1f} G/s into 256 MB; the UNet's "
          f"{weights / 1e6:.0f} M weights at those rates: {weights / in_cache / 1e9 * 1e3:.0f}–"
          f"{weights / in_memory / 1e9 * 1e3:.0f} ms per call")


if __name__ == "__main__":
    main()
