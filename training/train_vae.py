"""Train the demo VAE (SD1 KL autoencoder layout, f = 8, 4 latent channels) on the shapes data set.

    python -m training.train_vae --seed 0              (CPU defaults; see training/README.md for the GPU run)

Loss: shape-weighted L1 + MSE, an L1 term on the colour-difference channels (Cb, Cr), an edge term (L1
between Sobel gradients, so outlines stay sharp) and a small KL term. Whole 64×64 images from the first
step, drawn from a pool rendered once (`--pool` scenes, 15% of them outlined: the VAE, like SD's, must be
able to show what the LoRA asks for; the UNet never sees outlines).

What the first (CPU) run taught, and why the loss looks like this: on 32×32 crops L1 plateaued at ~0.26
(a crop's GroupNorm statistics are not an image's), whole images fell below 0.1 quickly; and without
weighting, the decoder learned luminance and silhouettes long before colour: 20.6 dB held-out PSNR yet
every shape came back bluish grey, because the shape is ~10% of the pixels and a hue error is a small
RGB error. The shape weight and the chroma term aim the loss at exactly that.

Afterwards the posterior mean is reparametrised exactly (quant_conv scaled and shifted, post_quant_conv
compensated) so that latents have per-channel mean 0 and standard deviation 1/0.18215: the loaders and
samplers assume SD1's latent scale 0.18215, and with it the UNet's latents have unit variance.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from nodes.sd.vae import AutoencoderKL
from training import data
from training.common import (LATENT_SCALE, VAE_CONFIG, WORK_DIR, Log, StepBook, add_common_args, cosine_lr, env_info,
                             setup, write_json)

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
CHROMA = torch.tensor([[-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]])  # RGB -> (Cb, Cr)
OUTLINED_FRACTION = 0.15


def gradients(x: torch.Tensor) -> torch.Tensor:
    """Sobel x and y gradients of every channel: (B, C, H, W) -> (B, 2C, H, W)."""
    c = x.shape[1]
    k = torch.stack([SOBEL, SOBEL.T])[:, None].repeat(c, 1, 1, 1).to(x)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def image_pool(n: int, seed: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` scenes of any (colour, shape) pair (the VAE is not text-conditioned), 15% outlined:
    uint8 images (n, 3, 64, 64) and uint8 shape coverage (n, 1, 64, 64)."""
    n_outlined = int(n * OUTLINED_FRACTION)
    parts = [data.make_scenes(n - n_outlined, seed=seed, split="all", masks=True, workers=workers),
             data.make_scenes(n_outlined, seed=seed, split="all", style="outlined", masks=True, workers=workers)]
    images = torch.from_numpy(np.concatenate([p.images for p in parts])).permute(0, 3, 1, 2).contiguous()
    cover = torch.from_numpy(np.concatenate([p.masks for p in parts]) * 255).round().byte()[:, None]
    return images, cover


def loss_fn(vae: AutoencoderKL, x: torch.Tensor, cover: torch.Tensor, *, kl_weight: float, edge_weight: float,
            shape_weight: float, chroma_weight: float):
    """`x` in [-1, 1]; `cover` in 0..1. The shape's pixels (and one around it) weigh (1 + shape_weight)
    times the background's."""
    mean, logvar = vae.encode_moments(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    rec = vae.decode(z)
    w = 1.0 + shape_weight * F.max_pool2d(cover, 3, 1, 1)
    w = w / w.mean()
    l1 = ((rec - x).abs() * w).mean()
    mse = ((rec - x).pow(2) * w).mean()  # large errors (a wrong colour) pull harder than under L1 alone
    chroma = (torch.einsum("kc,bchw->bkhw", CHROMA.to(x), rec - x).abs() * w).mean()
    edge = (gradients(rec) - gradients(x)).abs().mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    loss = l1 + mse + chroma_weight * chroma + edge_weight * edge + kl_weight * kl
    return loss, {"l1": l1.detach(), "chroma": chroma.detach(), "edge": edge.detach(), "kl": kl.detach()}


@torch.no_grad()
def psnr(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> float:
    """Mean PSNR (dB, pixels 0..1) of posterior-mean reconstructions."""
    vals = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        rec = vae.decode(vae.encode(x)).clamp(-1, 1)
        mse = ((rec - x) / 2).pow(2).mean(dim=(1, 2, 3))
        vals += (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).tolist()
    return float(np.mean(vals))


@torch.no_grad()
def shape_colour_error(vae: AutoencoderKL, images: torch.Tensor, cover: torch.Tensor, batch: int = 64) -> float:
    """Mean absolute error (0..255) of the shape's mean RGB colour after a round trip: what PSNR hides."""
    errs = []
    for i in range(0, len(images), batch):
        x, m = images[i:i + batch], (cover[i:i + batch] > 0.9).float()
        rec = vae.decode(vae.encode(x)).clamp(-1, 1)
        area = m.sum(dim=(2, 3)).clamp_min(1)
        errs.append((((rec - x) * m).sum(dim=(2, 3)) / area).abs().mean(dim=1) * 127.5)
    return float(torch.cat(errs).mean())


@torch.no_grad()
def reparametrise(vae: AutoencoderKL, images: torch.Tensor) -> dict:
    """Make posterior means per-channel zero-mean with std 1/LATENT_SCALE; the decoded images are unchanged."""
    means = torch.cat([vae.encode(images[i:i + 64]) for i in range(0, len(images), 64)])
    mu = means.mean(dim=(0, 2, 3))
    sigma = means.std(dim=(0, 2, 3))
    k = (1.0 / LATENT_SCALE) / sigma  # (4,)
    c = vae.config.embed_dim
    q, p = vae.quant_conv, vae.post_quant_conv
    q.weight[:c] *= k[:, None, None, None]
    q.bias[:c] = (q.bias[:c] - mu) * k
    q.bias[c:] += 2.0 * torch.log(k)
    p.bias += p.weight[:, :, 0, 0] @ mu
    p.weight /= k[None, :, None, None]
    return {"latent_mean_before": mu.tolist(), "latent_std_before": sigma.tolist(), "scale": k.tolist()}


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--pool", type=int, default=20000, help="scenes rendered once and drawn from")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--edge-weight", type=float, default=1.0)
    ap.add_argument("--shape-weight", type=float, default=10.0, help="extra loss weight on the shape's pixels")
    ap.add_argument("--chroma-weight", type=float, default=2.0, help="weight of the L1 term on Cb/Cr")
    ap.add_argument("--eval-images", type=int, default=256)
    args = ap.parse_args(argv)

    dev = setup(args.seed, device=args.device)
    work = Path(args.work)
    state_path, log = work / "vae_state.pt", Log(work / "vae_log.jsonl")
    vae = AutoencoderKL(VAE_CONFIG).to(dev)
    with torch.no_grad():  # start with a narrow posterior (std ~0.05), or the sampling noise drowns the signal
        vae.quant_conv.bias[vae.config.embed_dim:] = -6.0
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99), fused=True)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    start = 0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False, map_location=dev)
        vae.load_state_dict(st["model"]), opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"].cpu()), torch.set_rng_state(st["torch_rng"].cpu())
        if dev.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"].cpu())
        start = st["step"]
        print(f"resuming at step {start}")
    t0 = time.time()
    images, cover = image_pool(args.pool, args.seed, args.workers)
    images, cover = images.to(dev), cover.to(dev)
    print(f"rendered {len(images)} scenes in {time.time() - t0:.1f} s; training on {env_info(dev)}")

    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="VAE", dynamic_ncols=True)
    book = StepBook("VAE", bar, log, state_path, args.steps, args.max_minutes, save_at_end=True)
    for step in bar:
        idx = torch.randint(0, len(images), (args.batch,), generator=gen, device=dev)
        x = images[idx].float().div(127.5).sub(1.0)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr)
        loss, parts = loss_fn(vae, x, cover[idx].float() / 255, kl_weight=args.kl_weight,
                              edge_weight=args.edge_weight, shape_weight=args.shape_weight,
                              chroma_weight=args.chroma_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if book.due(step):  # the VAE's loss parts rather than one smoothed loss
            parts = {k: round(v.item(), 5) for k, v in parts.items()}
            bar.set_postfix(l1=f"{parts['l1']:.4f}", chroma=f"{parts['chroma']:.4f}", kl=f"{parts['kl']:.1f}")
            log.write(step=step, loss=loss.item(), **parts)
        if book.checkpoint(step, lambda: dict(model=vae.state_dict(), opt=opt.state_dict(), gen=gen.get_state(),
                                              torch_rng=torch.get_rng_state(),
                                              cuda_rng=torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None)):
            break
    train_s = time.time() - t0

    vae.eval()
    held = data.make_scenes(args.eval_images, seed=args.seed + 1, split="heldout", masks=True)
    heldout = data.to_tensor(held.images).to(dev)
    held_cover = torch.from_numpy(held.masks)[:, None].to(dev)
    metrics = {"heldout_psnr_db": psnr(vae, heldout),
               "heldout_shape_colour_error": shape_colour_error(vae, heldout, held_cover)}
    pool = data.to_tensor(data.make_dataset(1024, seed=args.seed + 2, split="train")[0]).to(dev)
    metrics.update(reparametrise(vae, pool))
    metrics["heldout_psnr_db_after_reparam"] = psnr(vae, heldout)
    with torch.no_grad():
        lat = torch.cat([vae.encode(heldout[i:i + 64]) for i in range(0, len(heldout), 64)]) * LATENT_SCALE
    metrics["scaled_latent_std_heldout"] = lat.std(dim=(0, 2, 3)).tolist()
    metrics.update(steps=args.steps, stopped_early_at_step=book.stopped_at, batch=args.batch, pool=args.pool, lr=args.lr, shape_weight=args.shape_weight,
                   chroma_weight=args.chroma_weight, kl_weight=args.kl_weight, edge_weight=args.edge_weight,
                   seed=args.seed, train_seconds_this_run=round(train_s, 1), machine=env_info(dev),
                   params=sum(p.numel() for p in vae.parameters()))
    save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(work / "vae.safetensors"))
    write_json(work / "vae_metrics.json", metrics)
    print(f"held-out PSNR {metrics['heldout_psnr_db']:.2f} dB, shape colour error "
          f"{metrics['heldout_shape_colour_error']:.1f}/255; wrote {work / 'vae.safetensors'}")
    return book.stopped_at is None


def load_trained_vae(work=WORK_DIR, device="cpu") -> AutoencoderKL:
    vae = AutoencoderKL(VAE_CONFIG)
    vae.load_state_dict(load_file(str(Path(work) / "vae.safetensors")))
    return vae.eval().requires_grad_(False).to(device)


if __name__ == "__main__":
    main()
