"""Per-step cost of the model-options mechanism on a full-size SD1.5 UNet (random weights) at 256².

One denoiser step (CFG pair, batch 2, cfg 5) in one process, the variants interleaved and the minimum and
median kept (the machine is shared; interleaving makes background load hit every variant alike):

  baseline     (twice, baseline and baseline': their spread is the measurement noise)
               the step as it was before the mechanism: CFGDenoiser, UNet and attention from git commit
               7acc5d8 (materialised from git into a temporary package), the same weights
  no patches   today's CFGDenoiser + UNet with a MODEL that carries no options (the target: < 1 % over baseline)
  FreeU        FreeU(1.1, 1.2, 0.9, 0.2)
  PAG          PerturbedAttentionGuidance(3.0): one extra UNet pass (batch 1) per step, by design

Then the mechanism's own Python cost, which the UNet's time hides in the ratios above: the denoiser's per
step with a null UNet, and the UNet's hook points per forward on a tiny UNet (both in microseconds; on a
shared machine these are the figures that can resolve a sub-1 % difference).

    python bench/bench_model_options.py                  # 6 rounds, ~4 GB RAM; 10-45 min on 2 shared cores
    python bench/bench_model_options.py --rounds 4 --size 256 --threads 2
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE_COMMIT = "7acc5d8"  # main just before the model-options mechanism landed
BASELINE_FILES = {"attention.py": "nodes/sd/attention.py", "unet.py": "nodes/sd/unet.py",
                  "cfg.py": "nodes/sd/sampling/cfg.py", "model_sampling.py": "nodes/sd/sampling/model_sampling.py"}


def load_baseline(workdir: Path):
    """The pre-mechanism modules as a package `ng_baseline` (imports rewritten to stay inside it)."""
    package = workdir / "ng_baseline"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name, path in BASELINE_FILES.items():
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:{path}"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
        source = source.replace("from nodes.sd.attention import", "from .attention import")
        (package / name).write_text(source)
    sys.path.insert(0, str(workdir))
    return (importlib.import_module("ng_baseline.unet"), importlib.import_module("ng_baseline.cfg"),
            importlib.import_module("ng_baseline.model_sampling"))


def random_sd15_unet():
    from nodes.sd.tiny import _init_weights
    from nodes.sd.unet import SD15_UNET_CONFIG, UNetModel

    with torch.device("meta"):
        unet = UNetModel(SD15_UNET_CONFIG)
    unet = unet.to_empty(device="cpu").eval()
    _init_weights(unet, 0)
    return unet


def model_fn_for(unet):
    def model_fn(x, timesteps, context, control=None, **patch):
        return unet(x, timesteps, context, control=control, **patch)
    return model_fn


def make_variants(unet, baseline_unet, baseline_cfg, baseline_ms, cfg: float):
    from nodes.model_patches_guidance import PerturbedAttentionGuidance
    from nodes.model_patches_unet import FreeU
    from nodes.sd.patcher import ModelPatcher
    from nodes.sd.sampling.cfg import CFGDenoiser

    g = torch.Generator().manual_seed(1)
    positive = [[torch.randn(1, 77, 768, generator=g), {}]]
    negative = [[torch.randn(1, 77, 768, generator=g), {}]]
    model = ModelPatcher(unet)
    options = {"no patches": model.options,
               "FreeU": FreeU().run(model, 1.1, 1.2, 0.9, 0.2)[0].options,
               "PAG": PerturbedAttentionGuidance().run(model, 3.0)[0].options}
    variants = {name: baseline_cfg.CFGDenoiser(model_fn_for(baseline_unet), baseline_ms.ModelSamplingEPS(),
                                               positive, negative, cfg)
                for name in ("baseline", "baseline'")}  # the same thing twice: the A/A spread is the noise
    for name, opts in options.items():
        variants[name] = CFGDenoiser(model_fn_for(unet), model.model_sampling, positive, negative, cfg, options=opts)
    return variants


def time_steps(variants: dict, x: torch.Tensor, sigma: torch.Tensor, rounds: int) -> dict[str, dict[str, list]]:
    times = {name: {"wall": [], "cpu": []} for name in variants}
    names = list(variants)
    with torch.inference_mode():
        for denoiser in variants.values():  # warm-up: allocator, oneDNN primitives
            denoiser(x, sigma)
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
            for name in order:
                t0, c0 = time.perf_counter(), time.process_time()
                variants[name](x, sigma)
                times[name]["wall"].append(time.perf_counter() - t0)
                times[name]["cpu"].append(time.process_time() - c0)
    return times


def python_overhead(baseline_cfg, baseline_ms, calls: int = 200, trials: int = 30) -> tuple[float, float]:
    """µs per denoiser step with a UNet that costs nothing: before the mechanism vs no options now.
    Process CPU time, the best of many short interleaved trials (wall time on a shared machine is noise)."""
    from nodes.sd.sampling.cfg import CFGDenoiser
    from nodes.sd.sampling.model_sampling import ModelSamplingEPS

    null = lambda x, t, c, control=None, **kw: x  # noqa: E731
    pos, neg = [[torch.zeros(1, 77, 8), {}]], [[torch.zeros(1, 77, 8), {}]]
    x, sigma = torch.zeros(1, 4, 8, 8), torch.tensor([5.0])
    denoisers = {"baseline": baseline_cfg.CFGDenoiser(null, baseline_ms.ModelSamplingEPS(), pos, neg, 5.0),
                 "no patches": CFGDenoiser(null, ModelSamplingEPS(), pos, neg, 5.0)}
    best = {}
    with torch.inference_mode():
        for _ in range(trials):
            for name, d in denoisers.items():
                t0 = time.process_time()
                for _ in range(calls):
                    d(x, sigma)
                best[name] = min(best.get(name, float("inf")), (time.process_time() - t0) / calls * 1e6)
    return best["baseline"], best["no patches"]


def work_counts(denoiser, x: torch.Tensor, sigma: torch.Tensor) -> tuple[int, int]:
    """(tensor ops, Python function calls) of one denoiser step: deterministic counts, unlike timings.
    Counted on a second step, so one-time work (lazy imports, einops' caches) is left out."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountOps.ops += 1
            return func(*args, **(kwargs or {}))

    calls = 0

    def profile(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    with torch.inference_mode():
        with CountOps():
            denoiser(x, sigma)
        CountOps.ops = 0
        with CountOps():
            denoiser(x, sigma)
        ops = CountOps.ops
        sys.setprofile(profile)
        try:
            denoiser(x, sigma)
        finally:
            sys.setprofile(None)
    return ops, calls


def unet_python_overhead(baseline_unet_mod, calls: int = 50, trials: int = 30) -> tuple[float, float, float]:
    """µs per forward of a tiny SD1-layout UNet (4×4 latent, batch 1): the UNet's hook points with no
    patches, before the mechanism (twice: the A/A spread) vs now (CPU time, best trial)."""
    from nodes.sd.tiny import TINY_UNET_CONFIG, _init_weights
    from nodes.sd.unet import UNetModel

    now = UNetModel(TINY_UNET_CONFIG).eval()
    _init_weights(now, 0)
    with torch.device("meta"):
        before = baseline_unet_mod.UNetModel(TINY_UNET_CONFIG)
    before.load_state_dict(now.state_dict(), assign=True)
    before.eval()
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(1, 4, 4, 4, generator=g), torch.tensor([500.0]),
            torch.randn(1, 77, TINY_UNET_CONFIG.context_dim, generator=g))
    best = {}
    with torch.inference_mode():
        assert torch.equal(before(*args), now(*args))
        for _ in range(trials):
            for name, unet in (("baseline", before), ("baseline'", before), ("no patches", now)):
                t0 = time.process_time()
                for _ in range(calls):
                    unet(*args)
                best[name] = min(best.get(name, float("inf")), (time.process_time() - t0) / calls * 1e6)
    return best["baseline"], best["baseline'"], best["no patches"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size / 8)")
    ap.add_argument("--rounds", type=int, default=6, help="timed steps per variant (min and median kept)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        baseline_unet_mod, baseline_cfg, baseline_ms = load_baseline(Path(tmp))
        unet = random_sd15_unet()
        with torch.device("meta"):
            baseline_unet = baseline_unet_mod.UNetModel(unet.config)
        baseline_unet.load_state_dict(unet.state_dict(), assign=True)  # the same tensors, no copy
        baseline_unet.eval()

        latent = args.size // 8
        x = torch.randn(1, 4, latent, latent, generator=torch.Generator().manual_seed(0)) * 5.0
        sigma = torch.tensor([5.0])
        variants = make_variants(unet, baseline_unet, baseline_cfg, baseline_ms, cfg=5.0)
        with torch.inference_mode():
            ref = variants["baseline"](x, sigma)
            same = variants["no patches"](x, sigma)
        counts = {name: work_counts(variants[name], x, sigma) for name in ("baseline", "no patches", "FreeU", "PAG")}
        times = time_steps(variants, x, sigma, args.rounds)
        torch.set_num_threads(1)
        base_us, now_us = python_overhead(baseline_cfg, baseline_ms)
        unet_base_us, unet_again_us, unet_now_us = unet_python_overhead(baseline_unet_mod)

    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"SD1.5 UNet (random weights), {args.size}² (latent {latent}²), CFG pair, fp32 CPU, "
          f"{args.threads} threads, torch {torch.__version__}, {args.rounds} rounds; load average {' '.join(load)}")
    print(f"no-patch output vs baseline: max |diff| {float((same - ref).abs().max()):.2e} (same weights, same math)")
    base = times["baseline"]
    print("per step; 'paired' = median over rounds of (variant / baseline in the same round), which cancels")
    print("the load drifting between rounds; baseline' is the baseline again, so its ratios show the noise")
    print(f"{'variant':<12}{'min s':>8}{'median s':>10}{'cpu min s':>11}{'paired wall':>13}{'paired cpu':>12}")
    for name, t in times.items():
        wall = statistics.median(a / b for a, b in zip(t["wall"], base["wall"]))
        cpu = statistics.median(a / b for a, b in zip(t["cpu"], base["cpu"]))
        print(f"{name:<12}{min(t['wall']):>8.2f}{statistics.median(t['wall']):>10.2f}{min(t['cpu']):>11.2f}"
              f"{wall:>13.3f}{cpu:>12.3f}")
    print("work per step (deterministic): " + "; ".join(
        f"{name} {ops} tensor ops, {calls} Python calls" for name, (ops, calls) in counts.items()))
    print(f"denoiser's own cost per step (null UNet, CPU time, 1 thread): baseline {base_us:.1f} µs, "
          f"no patches {now_us:.1f} µs (+{now_us - base_us:.1f} µs = "
          f"{100 * (now_us - base_us) / 1e6 / min(base['cpu']):.4f} % of a step's CPU time)")
    print(f"UNet forward with no patches (tiny UNet, 4² latent, CPU time, 1 thread): baseline {unet_base_us:.1f} µs, "
          f"baseline again {unet_again_us:.1f} µs, no patches {unet_now_us:.1f} µs "
          f"({100 * (unet_now_us / unet_base_us - 1):+.2f} %; A/A {100 * (unet_again_us / unet_base_us - 1):+.2f} %)")


if __name__ == "__main__":
    main()
