"""Benchmark our SD1.5 UNet / VAE / checkpoint loader against diffusers on the same random weights.

Writes a full-size SD1.5-shaped fp16 checkpoint with random weights (~2.1 GB, never committed) to
--workdir, then measures each implementation in its own subprocess (so peak RSS is per implementation):
checkpoint load, UNet forward at 256² and 512² (batch 2 = a CFG pair), VAE decode at 512², fp32 CPU.
Also reports how far the two implementations' outputs differ on full-size weights.

    python bench/bench_sd_stack.py                 # ~10-15 min on 2 busy CPU cores
    python bench/bench_sd_stack.py --sizes 256 --steps 1
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SD15_DIFFUSERS_UNET = dict(cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
                           layers_per_block=2)
SD15_DIFFUSERS_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                          down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux


def write_checkpoint(path: Path, seed: int = 0) -> None:
    """SD1.5-shaped single file: UNet + VAE + CLIP-L text encoder, random N(0, 1/fan_in) weights in fp16."""
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.sd.unet import SD15_UNET_CONFIG, UNetModel
    from nodes.sd.vae import SD15_VAE_CONFIG, AutoencoderKL

    with torch.device("meta"):
        parts = {
            "model.diffusion_model.": UNetModel(SD15_UNET_CONFIG),
            "first_stage_model.": AutoencoderKL(SD15_VAE_CONFIG),
            "cond_stage_model.transformer.": CLIPTextModel(CLIPTextConfig(
                hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)),
        }
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, module in parts.items():
        for name, p in module.state_dict().items():
            if p.ndim >= 2:
                t = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
            elif name.endswith("weight"):
                t = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            else:
                t = 0.05 * torch.randn(p.shape, generator=g)
            sd[prefix + name] = t.half()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))


def inputs(size: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed + size)
    x = torch.randn(2, 4, size // 8, size // 8, generator=g)
    return x, torch.tensor([999.0, 500.0]), torch.randn(2, 77, 768, generator=g)


def load_models(impl: str, path: Path):
    if impl == "ours":
        from nodes.sd.checkpoint import load_checkpoint

        ck = load_checkpoint(path, device="cpu", use_cache=False)
        unet = lambda x, t, c: ck.unet(x, t, c)  # noqa: E731
        decode = ck.vae.decode
        keep = ck
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
        from safetensors.torch import load_file

        sd = load_file(str(path))
        with torch.device("meta"):  # same fast path as ours: no random init, assign the file's tensors
            d_unet = UNet2DConditionModel(**SD15_DIFFUSERS_UNET)
            d_vae = AutoencoderKL(**SD15_DIFFUSERS_VAE)
        d_unet.load_state_dict({k: v.float() for k, v in convert_ldm_unet_checkpoint(sd, SD15_DIFFUSERS_UNET).items()},
                               strict=True, assign=True)
        d_vae.load_state_dict({k: v.float() for k, v in convert_ldm_vae_checkpoint(sd, SD15_DIFFUSERS_VAE).items()},
                              strict=True, assign=True)
        # Our loader also hands back the CLIP weights (copied out of the file mapping); do the same work here.
        clip = {k: v.clone() for k, v in sd.items() if k.startswith("cond_stage_model.transformer.")}
        del sd
        d_unet.eval(), d_vae.eval()
        unet = lambda x, t, c: d_unet(x, t, encoder_hidden_states=c).sample  # noqa: E731
        decode = lambda z: d_vae.decode(z).sample  # noqa: E731
        keep = (d_unet, d_vae, clip)
    return unet, decode, keep


def memory_worker(impl: str, path: Path, out_dir: Path) -> dict:
    """Load, one 512² UNet call and one 512² decode: load time, RSS after load, peak RSS, outputs."""
    torch.set_num_threads(2)
    import diffusers.loaders.single_file_utils  # noqa: F401  imports are not part of the load time
    import nodes.sd.checkpoint  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: F401

    t0, c0 = time.perf_counter(), time.process_time()
    unet, decode, _keep = load_models(impl, path)
    result = {"load_s": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0,
              "rss_after_load_gb": peak_rss_gb()}
    with torch.inference_mode():
        outputs = {"unet_512": unet(*inputs(512)), "vae_512": decode(latent())}
    result["peak_rss_gb"] = peak_rss_gb()
    torch.save(outputs, out_dir / f"outputs-{impl}.pt")
    return result


def timing_worker(path: Path, sizes: list[int], steps: int) -> dict:
    """Both implementations in one process, calls alternated and the minimum kept: the machine is
    shared, and alternating makes background load hit both sides alike."""
    torch.set_num_threads(2)
    models = {impl: load_models(impl, path) for impl in ("ours", "diffusers")}
    times: dict[str, dict[str, float]] = {impl: {} for impl in models}
    with torch.inference_mode():
        for impl, (unet, _, _) in models.items():  # warm-up: oneDNN primitive creation, allocator
            unet(*inputs(min(sizes)))
        for _ in range(steps):
            for size in sizes:
                for impl, (unet, _, _) in models.items():
                    _timed(times[impl], f"unet_{size}", lambda: unet(*inputs(size)))
            for impl, (_, decode, _) in models.items():
                _timed(times[impl], "vae_decode_512", lambda: decode(latent()))
    return times


def _timed(record: dict, name: str, fn) -> None:
    """Keep the best wall time and the best process CPU time (all threads; steadier on a busy machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    record[f"{name}_s"] = min(wall, record.get(f"{name}_s", float("inf")))
    record[f"{name}_cpu_s"] = min(cpu, record.get(f"{name}_cpu_s", float("inf")))


def latent() -> torch.Tensor:
    return torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(7))


def run_worker(args, *extra) -> dict:
    cmd = [sys.executable, __file__, "--workdir", str(args.workdir), "--steps", str(args.steps),
           "--sizes", *map(str, args.sizes), "--worker", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"worker {extra} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/nodegraph-bench"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=2, help="timed calls per size and implementation (min is kept)")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    ckpt = args.workdir / "sd15-random-fp16.safetensors"

    if args.worker:
        if args.worker[0] == "memory":
            print(json.dumps(memory_worker(args.worker[1], ckpt, args.workdir)))
        else:
            print(json.dumps(timing_worker(ckpt, args.sizes, args.steps)))
        return

    if not ckpt.exists():
        t0 = time.perf_counter()
        write_checkpoint(ckpt)
        print(f"wrote {ckpt} ({ckpt.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s", flush=True)
    results = {impl: run_worker(args, "memory", impl) for impl in ("ours", "diffusers")}
    print("memory:", results, flush=True)
    for impl, times in run_worker(args, "timing").items():
        results[impl].update(times)

    ours, ref = (torch.load(args.workdir / f"outputs-{i}.pt") for i in ("ours", "diffusers"))
    print(f"\nSD stack, fp32 CPU, torch {torch.__version__}, 2 threads, UNet batch 2 (a CFG pair), VAE batch 1")
    print(f"{'metric':<20}{'ours':>10}{'diffusers':>12}{'ours/diffusers':>16}")
    for key in results["ours"]:
        a, b = results["ours"][key], results["diffusers"][key]
        print(f"{key:<20}{a:>10.2f}{b:>12.2f}{a / b:>16.2f}")
    for key in ours:
        err = (ours[key] - ref[key]).abs().max().item()
        print(f"max |ours - diffusers| {key}: {err:.2e} (output max {ref[key].abs().max().item():.2f})")


if __name__ == "__main__":
    main()
