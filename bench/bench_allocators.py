"""The memory allocator's effect on a full-size SD1.5 UNet call and a 512² VAE decode on the CPU: one
fresh process per configuration (the C library's malloc as it is, with three sets of its tuning
variables, and tcmalloc preloaded), lean weights.

    python bench/bench_allocators.py [--workdir /tmp/nodegraph-bench] [--threads 2]

Prints, per configuration, the fastest CPU time of the UNet at 256² (3 calls) and 512² (2 calls) and
of the decode (2 calls), the process's peak RSS (the mapped weights included) and its minor page faults.
The checkpoint is the one bench_vs_diffusers.py writes (written here when missing).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEEP_FREED = {"MALLOC_TRIM_THRESHOLD_": str(64 << 30)}  # never hand the top of the heap back
CONFIGS = {
    "glibc": {},
    "glibc, no mmap for large blocks": {"MALLOC_MMAP_MAX_": "0", **KEEP_FREED},
    "glibc, mmap threshold 32 MB": {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), **KEEP_FREED},
    "glibc, top pad 1 GB": {"MALLOC_TOP_PAD_": str(1 << 30), **KEEP_FREED},
    "tcmalloc": "preload",
}


def worker(path: Path, threads: int) -> dict:
    import torch

    from bench.bench_vs_diffusers import loadavg, ours, peak_rss_gb, unet_inputs
    from nodes.sd.vae_runtime import VAE
    torch.set_num_threads(threads)
    models = ours(path, "lean")
    result = {}

    def fastest(name: str, fn, calls: int) -> None:
        fn()  # warm-up
        times = []
        for _ in range(calls):
            c0 = time.process_time()
            fn()
            times.append(time.process_time() - c0)
        result[name] = min(times)

    with torch.inference_mode():
        for size, calls in ((256, 3), (512, 2)):
            x, t, c = unet_inputs(size)
            fastest(f"unet {size}", lambda: models.unet(x, t, c), calls)
        z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(7))
        decode = VAE(models.vae).decode
        fastest("decode 512", lambda: decode(z), 2)
    result.update(peak_rss_gb=peak_rss_gb(), minor_faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
                  load=loadavg())
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nodegraph-bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    from bench.bench_vs_diffusers import bench_checkpoint
    path = bench_checkpoint(args.workdir)
    if args.worker:
        print("RESULT " + json.dumps(worker(path, args.threads)), flush=True)
        return

    from nodegraph.allocator import find_tcmalloc, preload_environment
    print(f"{'configuration':34s} {'UNet 256²':>10s} {'UNet 512²':>10s} {'decode 512²':>12s} {'peak RSS':>9s} "
          f"{'faults':>8s}  load   (CPU seconds)")
    for name, extra in CONFIGS.items():
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("MALLOC_")}
        if extra == "preload":  # as the `nodegraph` command preloads it
            env = preload_environment(env, find_tcmalloc())
            if env is None:
                print(f"{name:34s} not installed")
                continue
        else:
            env.update(extra)
        proc = subprocess.run([sys.executable, __file__, "--worker", "--workdir", str(args.workdir),
                               "--threads", str(args.threads)], env=env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{name:34s} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        print(f"{name:34s} {r['unet 256']:10.2f} {r['unet 512']:10.2f} {r['decode 512']:12.2f} "
              f"{r['peak_rss_gb']:7.2f} GB {r['minor_faults'] / 1e6:6.1f} M  {r['load']:.1f}", flush=True)


if __name__ == "__main__":
    main()
