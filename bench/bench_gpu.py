"""Issue 14's GPU checks as one command, for a machine with CUDA. Each part runs in a fresh process, so
that one's peak VRAM does not carry into the next; everything is printed as it is measured and written
to --out as JSON.

    python bench/bench_gpu.py --out DIR                     # every part (a few minutes on an H100-class card)
    python bench/bench_gpu.py --parts speed --batches 1 8 --steps 20
    python bench/bench_gpu.py --device cpu --size 64 --steps 2 --batches 1   # the script itself, on a CPU

Parts:
  speed        UNet steps per second at --size² (512), each --batches (1 and 8; a CFG pair each, so UNet
               batch 2 and 16), --steps timed steps after warm-up: ours (fp16 weights, SDPA) against
               diffusers' UNet2DConditionModel (fp16, SDPA) on the same random SD1.5 weights; peak VRAM
               of each (torch.cuda.max_memory_allocated, the weights included). Targets: it/s ≥ 1.2×
               diffusers', peak VRAM ≤ diffusers'.
  numerics     workflows/txt2img.json on the demo model through the engine, on the device and on the CPU:
               the PSNR of the device's image against the CPU's (target ≥ 35 dB in fp16).
  conformance  every ComfyUI conformance case (tests/conformance) on the device: its relative
               difference to ComfyUI's own CPU fp32 outputs, counted against the fp32 tolerance (5e-4)
               and wider ones — the demo model in fp16 rounds every op at ~5e-4.
  budget       two full-size checkpoints and a full-size ControlNet in one prompt, then the first
               checkpoint again, under a VRAM budget that holds one checkpoint and the ControlNet: the
               prompts run, the loads / offloads / reloads the memory manager counted, peak VRAM.
  lowvram      NODEGRAPH_LOWVRAM with a 4 GB budget: a --size² txt2img of --steps steps on a full-size
               checkpoint, streamed block by block: s/step and peak VRAM (target: under the budget).

With --device cpu the same code runs on the CPU (small --size and --steps): a check of the script itself
where no GPU is lent — its speed figures then mean nothing, and the budget parts have no manager.
The random full-size files are written to --workdir once (~2.1 GB each).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("speed", "numerics", "conformance", "budget", "lowvram")
CHECKPOINTS = ("sd15-random-a.safetensors", "sd15-random-b.safetensors")
CONTROLNET = "controlnet-random.safetensors"
HINT = "hint.png"
PROMPT = "a photograph of an astronaut riding a horse"
LOWVRAM_BUDGET = "4G"
# Relative differences the conformance part counts cases within: the fp32 tolerance (harness.REL_TOL)
# and wider ones, to show where fp16 puts the cases.
CONFORMANCE_LEVELS = (5e-4, 2e-3, 1e-2, 5e-2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true",
                    help="also time our UNet under torch.compile (inductor, frozen weights; compiles per batch)")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "nodegraph-gpu")
    ap.add_argument("--out", type=Path, default=None, help="folder for results.json and the images")
    ap.add_argument("--part-timeout", type=int, default=300, help="seconds before a part's process is stopped")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.out = args.out or args.workdir / "out"

    if args.worker:
        kind, *rest = args.worker
        print("RESULT " + json.dumps(WORKERS[kind](args, *rest)), flush=True)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": describe_device(args.device)}
    print("device:", results["device"], flush=True)

    def save() -> None:  # after every part: a call stopped at its time limit keeps what it measured
        (args.out / "results.json").write_text(json.dumps(results, indent=1))

    if {"speed", "budget", "lowvram"} & set(args.parts):
        write_files(args.workdir)
    if "speed" in args.parts:
        speed = results["speed"] = {}
        for batch in args.batches:
            for impl in ("ours", "diffusers"):
                speed[f"{impl} b{batch}"] = run_worker(args, "speed", impl, str(batch))
                save()
    if "numerics" in args.parts:
        results["numerics"] = numerics(args)
        save()
    for part in ("conformance", "budget", "lowvram"):
        if part in args.parts:
            results[part] = run_worker(args, part)
            save()
    if "speed" in args.parts and args.compile:  # last: each batch compiles for a minute or more
        for batch in args.batches:
            results["speed"][f"ours-compiled b{batch}"] = run_worker(args, "speed", "ours-compiled", str(batch))
            save()
    report(results, args)


def describe_device(device: str) -> str:
    import torch
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    return f"{device}, torch {torch.__version__}"


def run_worker(args, kind: str, *rest: str) -> dict:
    """This script again as a fresh process running one worker; its RESULT line parsed."""
    cmd = [sys.executable, __file__, "--device", args.device, "--size", str(args.size), "--steps", str(args.steps),
           "--workdir", str(args.workdir), "--out", str(args.out), "--worker", kind, *rest]
    print(f"-- {kind} {' '.join(rest)}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.part_timeout)
    except subprocess.TimeoutExpired:
        print(f"   stopped after {args.part_timeout} s", flush=True)
        return {"error": f"timed out after {args.part_timeout} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", flush=True)
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1], "wall_s": time.perf_counter() - t0}
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"   {json.dumps(result)}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------- files

def write_files(workdir: Path) -> None:
    """Two random SD1.5 checkpoints (different seeds: different files to the model cache), a random
    SD1.5 ControlNet in the original `control_model.` layout, fp16, and a hint image."""
    import numpy as np
    from PIL import Image

    from bench.bench_sd_stack import write_checkpoint
    for seed, name in enumerate(CHECKPOINTS):
        if not (workdir / name).exists():
            print(f"writing {name}", flush=True)
            write_checkpoint(workdir / name, seed=seed)
    if not (workdir / CONTROLNET).exists():
        write_controlnet(workdir / CONTROLNET)
    hint = np.zeros((512, 512, 3), np.uint8)
    hint[128:384, 128:384] = 255  # a white square: a canny-like control image
    Image.fromarray(hint).save(workdir / HINT)


def write_controlnet(path: Path, seed: int = 2) -> None:
    import torch
    from safetensors.torch import save_file

    from nodes.sd.controlnet import ControlNetConfig, ControlNetModel
    from nodes.sd.unet import SD15_UNET_CONFIG
    with torch.device("meta"):
        shapes = ControlNetModel(ControlNetConfig(unet=SD15_UNET_CONFIG)).state_dict()
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in shapes.items():
        scale = 1 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.05
        sd["control_model." + name] = (torch.randn(p.shape, generator=g) * scale).half()
    save_file(sd, str(path))


# ---------------------------------------------------------------------------------------------- speed

def speed_worker(args, impl: str, batch: str) -> dict:
    """`args.steps` UNet calls on a CFG pair per image (UNet batch 2 × `batch`), timed after 3 warm-ups."""
    import torch
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    path = args.workdir / CHECKPOINTS[0]
    if impl.startswith("ours"):
        from nodes.sd.checkpoint import load_checkpoint
        unet = load_checkpoint(path, device=device, use_cache=False).unet
        if impl == "ours-compiled":
            from nodes.sd.compiled_unet import _inductor_frozen
            unet = _inductor_frozen(unet)
        call = lambda x, t, c: unet(x, t, c)  # noqa: E731
    else:
        from bench.bench_vs_diffusers import diffusers_models
        unet = diffusers_models(path, dtype)[0].to(device)
        call = lambda x, t, c: unet(x, t, encoder_hidden_states=c).sample  # noqa: E731
    g = torch.Generator().manual_seed(1)
    n = 2 * int(batch)
    x = torch.randn(n, 4, args.size // 8, args.size // 8, generator=g).to(device, dtype)
    c = torch.randn(n, 77, 768, generator=g).to(device, dtype)
    t = torch.full((n,), 500.0, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
        t0 = time.perf_counter()
        for _ in range(3):
            out = call(x, t, c)
        sync()
        warm_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            out = call(x, t, c)
        sync()
        seconds = time.perf_counter() - t0
    return {"it_s": args.steps / seconds, "s_per_step": seconds / args.steps, "warm_up_s": warm_up,
            "dtype": str(dtype).removeprefix("torch."),
            "peak_vram_gb": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
            "finite": bool(torch.isfinite(out).all())}


# ------------------------------------------------------------------------------------------- numerics

def numerics(args) -> dict:
    """The default workflow on the demo model, once on the device and once on the CPU; PSNR between."""
    images = {}
    for device in (args.device, "cpu"):
        out = args.out / f"txt2img-{device.replace(':', '')}"
        cmd = [sys.executable, "-m", "nodegraph", "run", "workflows/txt2img.json", "--output-dir", str(out),
               "--base-dir", str(args.workdir / "home"), "--quiet"]
        print(f"-- numerics on {device}", flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.part_timeout,
                                  env={**os.environ, "NODEGRAPH_DEVICE": device})
        except subprocess.TimeoutExpired:
            return {"error": f"the run on {device} timed out after {args.part_timeout} s"}
        pngs = sorted(out.glob("*.png"))
        if proc.returncode != 0 or not pngs:
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", flush=True)
            return {"error": f"run on {device} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"}
        images[device] = pngs[-1]
    return {"psnr_db": psnr(images[args.device], images["cpu"]), "images": [str(p) for p in images.values()]}


def psnr(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image
    x = np.asarray(Image.open(a).convert("RGB"), np.float64)
    y = np.asarray(Image.open(b).convert("RGB"), np.float64)
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------- conformance

def conformance_worker(args) -> dict:
    """Every conformance case through the engine with NODEGRAPH_DEVICE set: relative differences."""
    os.environ["NODEGRAPH_DEVICE"] = args.device
    import tempfile

    import nodes
    from nodegraph import Executor, NodeRegistry, OutputCache, folders
    from tests.conformance import harness

    library = NodeRegistry()
    nodes.register_nodes(library)
    worst, failed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        folders.use(harness.conformance_layout(Path(tmp)))
        capture, executor = harness.capture_library(library), Executor(OutputCache(2 * 1024**3))
        t0 = time.perf_counter()
        for name in harness.case_names():
            try:
                outcome = harness.run_case(name, capture, executor)
            except AssertionError as exc:
                failed[name] = str(exc).splitlines()[0][:300]
                continue
            worst[name] = outcome.worst if not outcome.missing else math.inf
    values = sorted(worst.values())
    return {"cases": len(worst) + len(failed), "failed_to_run": failed, "seconds": time.perf_counter() - t0,
            "within": {f"{level:g}": sum(v <= level for v in values) for level in CONFORMANCE_LEVELS},
            "median": values[len(values) // 2] if values else None,
            "largest": sorted(worst.items(), key=lambda kv: -kv[1])[:12]}


# ------------------------------------------------------------------------------------ budget, lowvram

def txt2img(prefix: str, ckpt: str, seed: int, steps: int, size: int, controlnet: bool = False, base: int = 0) -> dict:
    """An API prompt: checkpoint → text encodes → (ControlNet) → KSampler → VAEDecode → SaveImage,
    node ids from `base` so that two chains share one prompt."""
    n = lambda i: str(base + i)  # noqa: E731
    p = {
        n(1): {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        n(2): {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": [n(1), 1]}},
        n(3): {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": [n(1), 1]}},
        n(4): {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        n(5): {"class_type": "KSampler", "inputs": {
            "model": [n(1), 0], "positive": [n(2), 0], "negative": [n(3), 0], "latent_image": [n(4), 0],
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        n(6): {"class_type": "VAEDecode", "inputs": {"samples": [n(5), 0], "vae": [n(1), 2]}},
        n(7): {"class_type": "SaveImage", "inputs": {"images": [n(6), 0], "filename_prefix": prefix}},
    }
    if controlnet:
        p[n(8)] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
        p[n(9)] = {"class_type": "LoadImage", "inputs": {"image": HINT}}
        p[n(10)] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": [n(2), 0], "negative": [n(3), 0], "control_net": [n(8), 0], "image": [n(9), 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
        p[n(5)]["inputs"]["positive"], p[n(5)]["inputs"]["negative"] = [n(10), 0], [n(10), 1]
    return p


class _StepClock:
    """Event sink: the time of each sampling progress event, for seconds per step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, event: str, data: dict) -> None:
        if event == "progress":
            self.times.append(time.perf_counter())

    def s_per_step(self) -> float | None:
        t = self.times
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None


def _engine(args):
    """A home folder whose model folders link the random files; the registry; an executor."""
    from nodegraph import Executor, OutputCache, folders
    from nodegraph.registry import default_registry

    # Their images stay in the work folder: --out keeps to results.json and the numerics images.
    layout = folders.use(folders.Folders(args.workdir / "engine-home", output=args.workdir / "engine-output"))
    layout.ensure()
    for sub, names in (("checkpoints", CHECKPOINTS), ("controlnet", (CONTROLNET,))):
        (layout.models[0] / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = layout.models[0] / sub / name
            if not link.exists():
                link.symlink_to(args.workdir / name)
    if not (layout.input / HINT).exists():
        (layout.input / HINT).symlink_to(args.workdir / HINT)
    return default_registry(), Executor(OutputCache(0))  # no cache: every prompt runs its nodes


def _run_prompt(prompt: dict, registry, executor, clock=None) -> dict:
    from nodegraph import validate_prompt
    t0 = time.perf_counter()
    result = executor.execute(validate_prompt(prompt, registry), sink=clock)
    out = {"ok": result.ok, "seconds": time.perf_counter() - t0}
    if result.error is not None:
        out["error"] = f"{result.error.node_type}: {result.error.exception_message}"
    return out


def _peak_vram(device) -> float | None:
    import torch
    return torch.cuda.max_memory_allocated(device) / 2**30 if torch.device(device).type == "cuda" else None


def budget_worker(args) -> dict:
    """Checkpoints A and B (B with the ControlNet) in one prompt, then A again, under a budget that holds
    A and the ControlNet but not both checkpoints."""
    one = (args.workdir / CHECKPOINTS[0]).stat().st_size + (args.workdir / CONTROLNET).stat().st_size
    budget = one + 2**30  # + 1 GB of working memory: the file's fp16 bytes are what the models hold
    os.environ["NODEGRAPH_DEVICE"] = args.device
    os.environ["NODEGRAPH_VRAM_BUDGET"] = str(budget)
    from nodes.sd.device_memory import manager_for
    registry, executor = _engine(args)
    steps = min(args.steps, 4)
    both = {**txt2img("budget-a", CHECKPOINTS[0], 1, steps, args.size),
            **txt2img("budget-b", CHECKPOINTS[1], 2, steps, args.size, controlnet=True, base=100)}
    runs = [_run_prompt(both, registry, executor),
            _run_prompt(txt2img("budget-a-again", CHECKPOINTS[0], 3, steps, args.size), registry, executor)]
    manager = manager_for(args.device)
    stats = manager.stats if manager is not None else None
    return {"budget_gb": budget / 2**30, "runs": runs, "peak_vram_gb": _peak_vram(args.device),
            "loads": stats and stats.loads, "offloads": stats and stats.offloads, "reloads": stats and stats.reloads,
            "resident_at_end": [str(k) for k in manager.resident_keys()] if manager is not None else None}


def lowvram_worker(args) -> dict:
    os.environ["NODEGRAPH_DEVICE"] = args.device
    os.environ["NODEGRAPH_LOWVRAM"] = "1"
    os.environ["NODEGRAPH_VRAM_BUDGET"] = LOWVRAM_BUDGET
    registry, executor = _engine(args)
    clock = _StepClock()
    run = _run_prompt(txt2img("lowvram", CHECKPOINTS[0], 1, args.steps, args.size), registry, executor, clock)
    return {"budget": LOWVRAM_BUDGET, "run": run, "s_per_step": clock.s_per_step(),
            "peak_vram_gb": _peak_vram(args.device)}


WORKERS = {"speed": speed_worker, "conformance": conformance_worker, "budget": budget_worker,
           "lowvram": lowvram_worker}


# --------------------------------------------------------------------------------------------- report

def report(r: dict, args) -> None:
    print(f"\n=== issue 14 on {r['device']} ===")
    speed = r.get("speed", {})
    for batch in args.batches:
        ref = speed.get(f"diffusers b{batch}")
        for impl in ("ours", "ours-compiled"):
            ours = speed.get(f"{impl} b{batch}")
            if not ours or not ref or "error" in ours or "error" in ref:
                continue
            vram = ""
            if ours["peak_vram_gb"] is not None:
                vram = (f"; peak VRAM {ours['peak_vram_gb']:.2f} vs {ref['peak_vram_gb']:.2f} GB: "
                        f"{ours['peak_vram_gb'] / ref['peak_vram_gb']:.2f} (target <= 1)")
            print(f"UNet {args.size}² batch {batch} ({args.steps} steps): {impl} {ours['it_s']:.2f} it/s vs diffusers "
                  f"{ref['dtype']} SDPA {ref['it_s']:.2f}: {ours['it_s'] / ref['it_s']:.2f}× (target >= 1.2){vram}; "
                  f"warm-up {ours['warm_up_s']:.1f} s")
    if "numerics" in r:
        print(f"GPU vs CPU image PSNR: {r['numerics'].get('psnr_db', r['numerics'])} dB (target >= 35)")
    if "conformance" in r:
        c = r["conformance"]
        print(f"conformance on {args.device}: {c.get('cases')} cases; within {c.get('within')}; median "
              f"{c.get('median')}; failed to run: {len(c.get('failed_to_run', {}))}")
    for part in ("budget", "lowvram"):
        if part in r:
            print(f"{part}: {json.dumps(r[part])}")
    print(f"(all figures: {args.out / 'results.json'})")


if __name__ == "__main__":
    main()
