"""Train the demo LoRA: rank 4 on the demo UNet, teaching a style the base model never saw — shapes
drawn as a thick outline instead of filled — from the same captions (no trigger word: at strength 1
every shape comes out outlined, at 0 nothing changes).

    python -m training.train_lora --seed 0        (needs the UNet run in build/demo-training)

Adapters on every attention projection (to_q/k/v/out), the feed-forward layers, proj_in/proj_out and the
ResBlock convolutions of the UNet; up ("B") initialised to 0 so training starts from the base model,
down from N(0, 1/fan_in). Saved in kohya's format: `lora_unet_<diffusers path>.lora_down.weight`,
`.lora_up.weight` and `.alpha` (= rank, so the scale is 1), which nodes.sd.lora loads like any SD1 LoRA.
The text encoder is not adapted (the style needs no new words).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from nodes.sd.diffusers_keys import unet_diffusers_to_ldm
from training import data
from training.common import (UNET_CONFIG, Log, StepBook, add_common_args, cosine_lr, env_info,
                             sd1_alphas_cumprod, setup, tokenize, write_json)
from training.evaluate import generate, score
from training.train_unet import cached_latents, diffusion_loss, load_trained, sample_latents

TARGET_SUFFIXES = (".to_q", ".to_k", ".to_v", ".to_out.0", ".ff.net.0.proj", ".ff.net.2", ".proj_in", ".proj_out",
                   ".conv1", ".conv2")


class LoRAModule(nn.Module):
    """y = base(x) + (alpha / rank) · up(down(x)); down has the base layer's kernel, up is 1×1."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, gen: torch.Generator):
        dev = base.weight.device
        super().__init__()
        self.base, self.scale = base, alpha / rank
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        else:
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        with torch.no_grad():
            fan_in = self.down.weight[0].numel()
            self.down.weight.copy_(torch.randn(self.down.weight.shape, generator=gen) / math.sqrt(fan_in))
            self.up.weight.zero_()
        self.to(dev)

    def forward(self, x):
        return self.base(x) + self.scale * self.up(self.down(x))


def attach_lora(unet: nn.Module, rank: int, alpha: float, seed: int) -> dict[str, LoRAModule]:
    """Wrap the target layers in place; {kohya base name: module}."""
    gen = torch.Generator().manual_seed(seed)
    ldm_to_diffusers = {l: d for d, l in unet_diffusers_to_ldm(UNET_CONFIG).items()}
    modules = dict(unet.named_modules())
    out = {}
    for name in sorted(modules):
        dname = ldm_to_diffusers.get(name + ".weight")
        if dname is None or not dname[: -len(".weight")].endswith(TARGET_SUFFIXES):
            continue
        base = modules[name]
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            continue
        parent_name, _, child = name.rpartition(".")
        lora = LoRAModule(base, rank, alpha, gen)
        setattr(modules[parent_name] if parent_name else unet, child, lora)
        out["lora_unet_" + dname[: -len(".weight")].replace(".", "_")] = lora
    return out


def kohya_state_dict(loras: dict[str, LoRAModule], rank: int, alpha: float, dtype=torch.float16) -> dict:
    sd = {}
    for base, m in loras.items():
        sd[f"{base}.lora_down.weight"] = m.down.weight.detach().cpu().to(dtype).contiguous()
        sd[f"{base}.lora_up.weight"] = m.up.weight.detach().cpu().to(dtype).contiguous()
        sd[f"{base}.alpha"] = torch.tensor(float(alpha)).to(dtype)
    return sd


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--eval-prompts", type=int, default=24)
    args = ap.parse_args(argv)

    dev = setup(args.seed, device=args.device)
    work = Path(args.work)
    unet, text_model, vae = load_trained(work, dev)
    alpha = float(args.rank)
    means, logvars, ids = cached_latents(vae, work, "outlined", args.images, args.seed + 100, dev, style="outlined",
                                         workers=args.workers)
    empty_ids = tokenize([""]).to(dev)

    specs = data.heldout_prompts(args.eval_prompts, seed=7)
    captions = [s.caption for s in specs]
    base_fill = score(generate(unet, text_model, vae, captions, seed=7), specs)["fill"]

    loras = attach_lora(unet, args.rank, alpha, args.seed)
    params = [p for m in loras.values() for p in (m.down.weight, m.up.weight)]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, fused=True)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    alphas = sd1_alphas_cumprod().to(dev)
    state_path, log = work / "lora_state.pt", Log(work / "lora_log.jsonl")
    start = 0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False, map_location=dev)
        for name, m in loras.items():
            m.down.weight.data.copy_(st["lora"][name + ".down"]), m.up.weight.data.copy_(st["lora"][name + ".up"])
        opt.load_state_dict(st["opt"]), gen.set_state(st["gen"].cpu())
        start = st["step"]
    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="LoRA", dynamic_ncols=True)
    book = StepBook("LoRA", bar, log, state_path, args.steps, args.max_minutes)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, warmup=20)
        idx = torch.randint(0, len(means), (args.batch,), generator=gen, device=dev)
        loss = diffusion_loss(unet, text_model, sample_latents(means, logvars, idx, gen), ids[idx], empty_ids, gen,
                              dropout=0.1, alphas_cumprod=alphas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        book.report(step, loss)
        if book.checkpoint(step, lambda: dict(lora={f"{n}.{p}": getattr(m, p).weight.detach().clone()
                                                    for n, m in loras.items() for p in ("down", "up")},
                                              opt=opt.state_dict(), gen=gen.get_state())):
            break
    train_s = time.time() - t0

    unet.eval()
    s = score(generate(unet, text_model, vae, captions, seed=7), specs)
    out = work / "lora.safetensors"
    save_file(kohya_state_dict(loras, args.rank, alpha), str(out),
              metadata={"ss_network_dim": str(args.rank), "ss_network_alpha": str(alpha),
                        "ss_network_module": "networks.lora", "nodegraph.demo": "outlined style"})
    write_json(work / "lora_metrics.json", {
        "steps": args.steps, "stopped_early_at_step": book.stopped_at, "batch": args.batch, "lr": args.lr, "rank": args.rank, "alpha": alpha,
        "images": args.images, "seed": args.seed, "final_loss_smoothed": book.smoothed, "layers": len(loras),
        "params": sum(p.numel() for p in params), "heldout_fill_base": base_fill, "heldout_fill_lora": s["fill"],
        "heldout_colour_acc_lora": s["colour_acc"], "heldout_shape_acc_lora": s["shape_acc"],
        "train_seconds_this_run": round(train_s, 1), "machine": env_info(dev)})
    print(f"fill {base_fill:.3f} -> {s['fill']:.3f}; wrote {out}")
    return book.stopped_at is None


if __name__ == "__main__":
    main()
