"""Train the demo UNet (SD1 layout, small) jointly with the small CLIP text encoder, on VAE latents of
the shapes data set's training split.

    python -m training.train_unet --seed 0        (needs build/demo-training/vae.safetensors)

ε-prediction on SD1's noise schedule (scaled-linear betas 0.00085..0.012, 1000 steps), latents scaled
by 0.18215 (the VAE was reparametrised for it), 10% of captions dropped to the empty prompt so that
classifier-free guidance works, min-SNR-5 loss weighting (faster convergence), and an EMA of the
weights, which is what gets exported.

The text encoder (CLIP architecture, real CLIP vocabulary and tokenizer, width 64, 2 layers) is trained
jointly, from a random init, with a lower learning rate. A frozen random encoder also carries the words
(its outputs differ per token), but then the UNet's cross-attention alone must learn to read them; in a
short CPU budget the jointly trained encoder learned colour and shape words noticeably faster, and there
is no pretrained CLIP of this size to start from. Only the words of the data set's captions get
gradients; every other token keeps its random embedding.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from nodes.sd.unet import UNetModel
from training import data
from training.common import (LATENT_SCALE, UNET_CONFIG, WORK_DIR, Log, StepBook, add_common_args, cosine_lr, env_info,
                             sd1_alphas_cumprod, setup, text_config_kwargs, tokenize, write_json)
from training.evaluate import generate, score
from training.train_vae import load_trained_vae


@torch.no_grad()
def encode_images(vae, images: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 64, 64, 3) -> scaled latent means and log-variances, on the VAE's device."""
    dev = next(vae.parameters()).device
    means, logvars = [], []
    for i in tqdm(range(0, len(images), batch), desc=f"encoding {len(images)} images", dynamic_ncols=True):
        m, lv = vae.encode_moments(data.to_tensor(images[i:i + batch]).to(dev))
        means.append(m * LATENT_SCALE)
        logvars.append(lv + 2 * np.log(LATENT_SCALE))
    return torch.cat(means), torch.cat(logvars)


def encode_dataset(vae, n: int, seed: int, split: str = "train", style: str = "filled", workers: int = 1):
    """`n` images of the split -> (scaled latent means, logvars, token ids, specs)."""
    scenes = data.make_scenes(n, seed=seed, split=split, style=style, workers=workers)
    means, logvars = encode_images(vae, scenes.images)
    return means, logvars, tokenize(scenes.captions), scenes.specs


def cached_latents(vae, work: Path, name: str, n: int, seed: int, device, **kw):
    """encode_dataset's first three results, cached in the work folder (CPU tensors on disk)."""
    path = work / f"latents_{name}_{seed}_{n}.pt"
    if path.exists():
        means, logvars, ids = torch.load(path, weights_only=False)[:3]
    else:
        means, logvars, ids, _ = encode_dataset(vae, n, seed, **kw)
        torch.save((means.cpu(), logvars.cpu(), ids), path)
    return means.to(device), logvars.to(device), ids.to(device)


def new_text_model(seed: int) -> CLIPTextModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(CLIPTextConfig(**text_config_kwargs()))


def new_unet(seed: int) -> UNetModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNetModel(UNET_CONFIG)


def diffusion_loss(unet, text_model, z0, ids, empty_ids, gen, *, dropout: float, alphas_cumprod, snr_gamma=5.0,
                   control_fn=None):
    """One ε-prediction loss on clean scaled latents z0 (B, 4, 8, 8) with caption ids (B, 77)."""
    b, dev = z0.shape[0], z0.device
    drop = torch.rand(b, generator=gen, device=dev) < dropout
    ids = torch.where(drop[:, None], empty_ids.expand(b, -1), ids)
    t = torch.randint(0, len(alphas_cumprod), (b,), generator=gen, device=dev)
    noise = torch.randn(z0.shape, generator=gen, device=dev)
    a = alphas_cumprod[t].view(b, 1, 1, 1)
    x_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
    context = text_model(input_ids=ids).last_hidden_state
    control = control_fn(x_t, t, context) if control_fn is not None else None
    eps = unet(x_t, t.float(), context, control=control)
    snr = (a / (1 - a)).view(b)
    weight = torch.clamp(snr, max=snr_gamma) / snr  # min-SNR-γ for ε-prediction
    return (weight * (eps - noise).pow(2).mean(dim=(1, 2, 3))).mean()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - decay)


def sample_latents(means, logvars, idx, gen):
    m, lv = means[idx], logvars[idx]
    return m + torch.exp(0.5 * lv) * torch.randn(m.shape, generator=gen, device=m.device)


def evaluate(unet, text_model, vae, n: int, seed: int) -> dict:
    specs = data.heldout_prompts(n, seed=seed)
    images = generate(unet, text_model, vae, [s.caption for s in specs], seed=seed, steps=12, cfg=5.0)
    s = score(images, specs)
    return {"heldout_colour_acc": s["colour_acc"], "heldout_shape_acc": s["shape_acc"], "heldout_fill": s["fill"]}


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--text-lr", type=float, default=2e-4)
    ap.add_argument("--dropout", type=float, default=0.1, help="caption dropout (for CFG)")
    ap.add_argument("--images", type=int, default=2000, help="training images (encoded once)")
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--eval-prompts", type=int, default=24)
    args = ap.parse_args(argv)

    dev = setup(args.seed, device=args.device)
    work = Path(args.work)
    vae = load_trained_vae(work, dev)
    means, logvars, ids = cached_latents(vae, work, "train", args.images, args.seed, dev, workers=args.workers)
    print(f"latents {tuple(means.shape)}: mean {means.mean():.3f}, std {means.std():.3f}; training on {env_info(dev)}")
    empty_ids = tokenize([""]).to(dev)

    unet, text_model = new_unet(args.seed).to(dev), new_text_model(args.seed + 1).to(dev)
    unet.train(), text_model.train()
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_model).eval()
    for m in (ema_unet, ema_text):
        m.requires_grad_(False)
    opt = torch.optim.AdamW([{"params": unet.parameters(), "lr": args.lr, "base": args.lr},
                             {"params": text_model.parameters(), "lr": args.text_lr, "base": args.text_lr}],
                            weight_decay=0.01, fused=True)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    alphas = sd1_alphas_cumprod().to(dev)
    state_path, log = work / "unet_state.pt", Log(work / "unet_log.jsonl")
    start, history = 0, []
    if state_path.exists():
        st = torch.load(state_path, weights_only=False, map_location=dev)
        unet.load_state_dict(st["unet"]), text_model.load_state_dict(st["text"])
        ema_unet.load_state_dict(st["ema_unet"]), ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"]), gen.set_state(st["gen"].cpu())
        start, history = st["step"], st["history"]
        print(f"resuming at step {start}")

    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="UNet", dynamic_ncols=True)
    book = StepBook("UNet", bar, log, state_path, args.steps, args.max_minutes, save_at_end=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, g["base"], warmup=100)
        idx = torch.randint(0, len(means), (args.batch,), generator=gen, device=dev)
        z0 = sample_latents(means, logvars, idx, gen)
        loss = diffusion_loss(unet, text_model, z0, ids[idx], empty_ids, gen, dropout=args.dropout,
                              alphas_cumprod=alphas)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text_model.parameters()], 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay), ema_update(ema_text, text_model, decay)
        book.report(step, loss)
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            metrics = evaluate(ema_unet, ema_text, vae, args.eval_prompts, seed=7)
            history.append({"step": done, "loss_smoothed": book.smoothed, **metrics})
            log.write(step=done, **metrics)
            tqdm.write(f"step {done}: {metrics}")
        if book.checkpoint(step, lambda: dict(unet=unet.state_dict(), text=text_model.state_dict(),
                                              ema_unet=ema_unet.state_dict(), ema_text=ema_text.state_dict(),
                                              opt=opt.state_dict(), gen=gen.get_state(), history=history)):
            break
    train_s = time.time() - t0
    if book.stopped_at is not None:
        metrics = evaluate(ema_unet, ema_text, vae, args.eval_prompts, seed=7)
        history.append({"step": book.stopped_at, "loss_smoothed": book.smoothed, **metrics})
        tqdm.write(f"step {book.stopped_at}: {metrics}")

    save_file({k: v.cpu().contiguous() for k, v in ema_unet.state_dict().items()}, str(work / "unet.safetensors"))
    save_file({k: v.cpu().contiguous() for k, v in ema_text.state_dict().items()}, str(work / "text.safetensors"))
    write_json(work / "unet_metrics.json", {
        "steps": args.steps, "stopped_early_at_step": book.stopped_at, "batch": args.batch, "lr": args.lr,
        "text_lr": args.text_lr, "images": args.images,
        "caption_dropout": args.dropout, "ema": args.ema, "seed": args.seed, "final_loss_smoothed": book.smoothed,
        "history": history, "train_seconds_this_run": round(train_s, 1), "machine": env_info(dev),
        "unet_params": sum(p.numel() for p in unet.parameters()),
        "text_params": sum(p.numel() for p in text_model.parameters())})
    print(f"wrote {work / 'unet.safetensors'} and {work / 'text.safetensors'}")
    return book.stopped_at is None


def load_trained(work=WORK_DIR, device="cpu"):
    """(unet, text_model, vae) of a finished run, in eval mode, on `device`."""
    unet, text_model = UNetModel(UNET_CONFIG), CLIPTextModel(CLIPTextConfig(**text_config_kwargs()))
    unet.load_state_dict(load_file(str(Path(work) / "unet.safetensors")))
    text_model.load_state_dict(load_file(str(Path(work) / "text.safetensors")))
    return (unet.eval().requires_grad_(False).to(device), text_model.eval().requires_grad_(False).to(device),
            load_trained_vae(Path(work), device))


if __name__ == "__main__":
    main()
