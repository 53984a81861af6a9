"""Train the demo VAE (SD1 KL autoencoder layout, f = 8, 4 latent channels) on the shapes data set.

    python -m training.train_vae --seed 0

Loss: L1 + MSE + an edge term (L1 between Sobel gradients, so shape outlines stay sharp) + a small KL term.
The first `--steps` see 32×32 crops around the shape (a crop costs a quarter of a whole image on CPU),
the last `--full-steps` whole 64×64 images. Measured: on crops L1 plateaued at ~0.26 (GroupNorm's
per-image statistics of a crop are not those of an image); on whole images it fell to 0.06 within 150
steps of batch 2. With hindsight the crop phase is mostly wasted; it is kept because the shipped VAE
was trained this way (see training/README.md for the exact commands). 15% of the images are drawn
outlined (the LoRA's style): the VAE, like SD's, must be able to show what a fine-tune asks for; the
UNet never sees outlines.

Afterwards the posterior mean is reparametrised exactly (quant_conv scaled and shifted, post_quant_conv
compensated) so that latents have per-channel mean 0 and standard deviation 1/0.18215: the loaders and
samplers assume SD1's latent scale 0.18215, and with it the UNet's latents have unit variance.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from nodes.sd.vae import AutoencoderKL
from training import data
from training.common import (LATENT_SCALE, VAE_CONFIG, WORK_DIR, Log, cosine_lr, env_info, save_state, setup,
                             write_json)

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0


def gradients(x: torch.Tensor) -> torch.Tensor:
    """Sobel x and y gradients of every channel: (B, C, H, W) -> (B, 2C, H, W)."""
    c = x.shape[1]
    k = torch.stack([SOBEL, SOBEL.T])[:, None].repeat(c, 1, 1, 1).to(x)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def batch_images(rng: np.random.Generator, n: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` fresh scenes (any colour/shape pair: the VAE is not text-conditioned), 15% outlined,
    cut to crop×crop around the shape (with jitter) when crop < 64: images (n, 3, crop, crop) in [-1, 1]
    and the shape's coverage (n, 1, crop, crop) in 0..1."""
    out, masks = [], []
    for _ in range(n):
        style = "outlined" if rng.random() < 0.15 else "filled"
        spec = data.sample_spec(rng, "all", style)
        img = data.render(spec)
        cover = data.shape_mask(spec.shape, spec.cx, spec.cy, spec.radius, style=style)
        if crop < data.SIZE:
            cx = int(np.clip(round(spec.cx + rng.uniform(-crop / 2, crop / 2)) - crop // 2, 0, data.SIZE - crop))
            cy = int(np.clip(round(spec.cy + rng.uniform(-crop / 2, crop / 2)) - crop // 2, 0, data.SIZE - crop))
            img, cover = img[cy:cy + crop, cx:cx + crop], cover[cy:cy + crop, cx:cx + crop]
        out.append(img)
        masks.append(cover)
    return data.to_tensor(np.stack(out)), torch.from_numpy(np.stack(masks))[:, None]


CHROMA = torch.tensor([[-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]])  # RGB -> (Cb, Cr)


def loss_fn(vae: AutoencoderKL, x: torch.Tensor, kl_weight: float, edge_weight: float,
            cover: torch.Tensor | None = None, shape_weight: float = 0.0, chroma_weight: float = 0.0):
    """`shape_weight` > 0 weighs the shape's pixels (1 + shape_weight) times the background's: the shape
    is ~10% of an image, and without it the decoder learned luminance and silhouettes long before it
    learned the shapes' colours (measured: 19.9 dB PSNR, yet grey shapes)."""
    mean, logvar = vae.encode_moments(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    rec = vae.decode(z)
    w = torch.ones_like(x[:, :1])
    if cover is not None and shape_weight:
        w = 1.0 + shape_weight * F.max_pool2d(cover, 3, 1, 1)  # the shape and a pixel around it
    w = w / w.mean()
    l1 = ((rec - x).abs() * w).mean()
    mse = ((rec - x).pow(2) * w).mean()  # large errors (a wrong colour) pull harder than under L1 alone
    edge = (gradients(rec) - gradients(x)).abs().mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    loss = l1 + mse + edge_weight * edge + kl_weight * kl
    if chroma_weight:  # colour differences, which RGB losses weigh far less than luminance
        chroma = torch.einsum("kc,bchw->bkhw", CHROMA.to(x), rec - x)
        loss = loss + chroma_weight * (chroma.abs() * w).mean()
    return loss, {"l1": l1.item(), "edge": edge.item(), "kl": kl.item()}


@torch.no_grad()
def psnr(vae: AutoencoderKL, images: torch.Tensor, batch: int = 16) -> float:
    """Mean PSNR (dB, pixels 0..1) of posterior-mean reconstructions."""
    vals = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        rec = vae.decode(vae.encode(x)).clamp(-1, 1)
        mse = ((rec - x) / 2).pow(2).mean(dim=(1, 2, 3))
        vals += (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).tolist()
    return float(np.mean(vals))


@torch.no_grad()
def reparametrise(vae: AutoencoderKL, images: torch.Tensor) -> dict:
    """Make posterior means per-channel zero-mean with std 1/LATENT_SCALE; the decoded images are unchanged."""
    means = torch.cat([vae.encode(images[i:i + 32]) for i in range(0, len(images), 32)])
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1600, help="steps on 32×32 crops")
    ap.add_argument("--full-steps", type=int, default=950, help="final steps on whole 64×64 images")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--full-batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--edge-weight", type=float, default=1.0)
    ap.add_argument("--shape-weight", type=float, default=0.0, help="extra loss weight on the shape's pixels")
    ap.add_argument("--chroma-weight", type=float, default=0.0, help="weight of an L1 term on Cb/Cr")
    ap.add_argument("--eval-images", type=int, default=64)
    ap.add_argument("--work", default=str(WORK_DIR))
    args = ap.parse_args(argv)

    setup(args.seed)
    from pathlib import Path

    work = Path(args.work)
    state_path, log = work / "vae_state.pt", Log(work / "vae_log.jsonl")
    vae = AutoencoderKL(VAE_CONFIG)
    with torch.no_grad():  # start with a narrow posterior (std ~0.05), or the sampling noise drowns the signal
        vae.quant_conv.bias[vae.config.embed_dim:] = -6.0
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99), fused=True)
    rng = np.random.default_rng([args.seed, 11])
    start = 0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        vae.load_state_dict(st["model"]), opt.load_state_dict(st["opt"])
        rng.bit_generator.state, start = st["rng"], st["step"]
        torch.set_rng_state(st["torch_rng"])
        print(f"resuming at step {start}")
    heldout = data.to_tensor(data.make_dataset(args.eval_images, seed=args.seed + 1, split="heldout")[0])

    total = args.steps + args.full_steps
    t0 = time.time()
    bar = tqdm(range(start, total), initial=start, total=total, desc="VAE", dynamic_ncols=True)
    for step in bar:
        full = step >= args.steps
        x, cover = batch_images(rng, args.full_batch if full else args.batch, data.SIZE if full else 32)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, total, args.lr)
        loss, parts = loss_fn(vae, x, args.kl_weight, args.edge_weight, cover, args.shape_weight, args.chroma_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(l1=f"{parts['l1']:.4f}", edge=f"{parts['edge']:.4f}", kl=f"{parts['kl']:.1f}")
        if step % 10 == 0 or step == total - 1:
            log.write(step=step, loss=loss.item(), **parts)
        if (step + 1) % 100 == 0 or step == total - 1:
            save_state(state_path, model=vae.state_dict(), opt=opt.state_dict(), rng=rng.bit_generator.state,
                       step=step + 1, torch_rng=torch.get_rng_state())
    train_s = time.time() - t0

    vae.eval()
    metrics = {"heldout_psnr_db": psnr(vae, heldout)}
    pool = data.to_tensor(data.make_dataset(256, seed=args.seed + 2, split="train")[0])
    metrics.update(reparametrise(vae, pool))
    metrics["heldout_psnr_db_after_reparam"] = psnr(vae, heldout)
    with torch.no_grad():
        lat = torch.cat([vae.encode(heldout[i:i + 32]) for i in range(0, len(heldout), 32)]) * LATENT_SCALE
    metrics["scaled_latent_std_heldout"] = lat.std(dim=(0, 2, 3)).tolist()
    metrics.update(steps=total, crop_steps=args.steps, full_steps=args.full_steps, batch=args.batch,
                   full_batch=args.full_batch, lr=args.lr, shape_weight=args.shape_weight, chroma_weight=args.chroma_weight,
                   kl_weight=args.kl_weight, edge_weight=args.edge_weight,
                   seed=args.seed, train_seconds_this_run=round(train_s, 1), machine=env_info(),
                   params=sum(p.numel() for p in vae.parameters()))
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(work / "vae.safetensors"))
    write_json(work / "vae_metrics.json", metrics)
    print(f"held-out PSNR {metrics['heldout_psnr_db']:.2f} dB; wrote {work / 'vae.safetensors'}")


def load_trained_vae(work=WORK_DIR) -> AutoencoderKL:
    vae = AutoencoderKL(VAE_CONFIG)
    vae.load_state_dict(load_file(str(work / "vae.safetensors")))
    return vae.eval().requires_grad_(False)


if __name__ == "__main__":
    main()

