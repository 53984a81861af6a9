"""Train the demo Canny ControlNet (SD1 ControlNet layout: a copy of the UNet encoder, a hint block and
zero convolutions) on Canny edge maps of the shapes data set, with the UNet and text encoder frozen.

    python -m training.train_controlnet --seed 0    (needs the UNet run in build/demo-training)

Initialised as ControlNet was: encoder and middle block copied from the trained UNet, the zero convs and
`middle_block_out` at 0 (so training starts from the plain UNet's output), the hint block random except
its last conv, also 0. Hints are the project's own Canny (nodes.preprocess.canny, kornia's threshold
scale) at low=0.05 / high=0.1, repeated to 3 channels in 0..1, exactly what the Canny node feeds the
Apply ControlNet node. Saved in the original layout (`control_model.*`), fp16.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from nodes.preprocess.canny import canny_edges
from nodes.sd.controlnet import ORIGINAL_PREFIX, ControlNet, ControlNetConfig, ControlNetModel
from training import data
from training.common import (CANNY_HIGH, CANNY_LOW, HINT_BLOCK_CHANNELS, LATENT_SCALE, UNET_CONFIG, WORK_DIR, Log,
                             cosine_lr, env_info, save_state, sd1_alphas_cumprod, setup, tokenize, write_json)
from training.evaluate import control_iou, generate
from training.train_unet import diffusion_loss, load_trained, sample_latents

CONFIG = ControlNetConfig(unet=UNET_CONFIG, hint_channels=3, hint_block_channels=HINT_BLOCK_CHANNELS)


def hints_of(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> (N, 3, 64, 64) Canny edges in {0, 1}."""
    x = torch.from_numpy(images).float() / 255.0
    return canny_edges(x, CANNY_LOW, CANNY_HIGH).permute(0, 3, 1, 2).contiguous()


def new_controlnet(unet, seed: int) -> ControlNetModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel(CONFIG)
    own = net.state_dict()
    copied = {k: v for k, v in unet.state_dict().items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(copied, strict=False)
    with torch.no_grad():
        for zc in net.zero_convs:
            zc[0].weight.zero_(), zc[0].bias.zero_()
        net.middle_block_out[0].weight.zero_(), net.middle_block_out[0].bias.zero_()
        last = net.input_hint_block[-1]
        last.weight.zero_(), last.bias.zero_()
    return net


@torch.no_grad()
def encode_with_hints(vae, n: int, seed: int, batch: int = 64):
    images, captions, specs = data.make_dataset(n, seed=seed, split="train")
    means, logvars = [], []
    for i in tqdm(range(0, n, batch), desc=f"encoding {n} images", dynamic_ncols=True):
        m, lv = vae.encode_moments(data.to_tensor(images[i:i + batch]))
        means.append(m * LATENT_SCALE)
        logvars.append(lv + 2 * np.log(LATENT_SCALE))
    return torch.cat(means), torch.cat(logvars), tokenize(captions), hints_of(images)


def evaluate_iou(unet, text_model, vae, net, n: int, seed: int, strength: float = 1.0) -> float:
    specs = data.heldout_prompts(n, seed=seed)
    plain = [s for s in specs if len(s.background) == 1][: max(1, n // 2)]
    images = np.stack([data.render(s) for s in plain])
    hints = hints_of(images)
    control = ControlNet(net, name="training").set_cond_hint(hints, strength)
    out = generate(unet, text_model, vae, [s.caption for s in plain], seed=seed, control=control)
    return float(np.mean(control_iou(out, hints.permute(0, 2, 3, 1).numpy())))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--eval-prompts", type=int, default=32)
    ap.add_argument("--work", default=str(WORK_DIR))
    args = ap.parse_args(argv)

    setup(args.seed)
    work = Path(args.work)
    unet, text_model, vae = load_trained(work)
    cache = work / f"latents_hints_{args.seed}_{args.images}.pt"
    if cache.exists():
        means, logvars, ids, hints = torch.load(cache, weights_only=False)
    else:
        means, logvars, ids, hints = encode_with_hints(vae, args.images, args.seed + 200)
        torch.save((means, logvars, ids, hints), cache)
    empty_ids = tokenize([""])
    net = new_controlnet(unet, args.seed + 3).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    gen = torch.Generator().manual_seed(args.seed)
    alphas = sd1_alphas_cumprod()
    state_path, log = work / "controlnet_state.pt", Log(work / "controlnet_log.jsonl")
    start = 0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        net.load_state_dict(st["net"]), opt.load_state_dict(st["opt"]), gen.set_state(st["gen"])
        start = st["step"]
    baseline = evaluate_iou(unet, text_model, vae, net, args.eval_prompts, seed=7, strength=0.0)
    t0, running = time.time(), None
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="ControlNet", dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, warmup=20)
        idx = torch.randint(0, len(means), (args.batch,), generator=gen)
        hint = hints[idx]
        loss = diffusion_loss(unet, text_model, sample_latents(means, logvars, idx, gen), ids[idx], empty_ids, gen,
                              dropout=0.1, alphas_cumprod=alphas,
                              control_fn=lambda x, t, ctx: net(x, hint, t.float(), ctx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        if step % 10 == 0:
            log.write(step=step, loss=loss.item(), smoothed=running)
        if (step + 1) % 100 == 0:
            save_state(state_path, net=net.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=step + 1)
    train_s = time.time() - t0
    net.eval().requires_grad_(False)
    final = evaluate_iou(unet, text_model, vae, net, args.eval_prompts, seed=7)
    out = work / "controlnet.safetensors"
    save_file({ORIGINAL_PREFIX + k: v.detach().half().contiguous() for k, v in net.state_dict().items()}, str(out),
              metadata={"nodegraph.demo": "canny", "canny_low": str(CANNY_LOW), "canny_high": str(CANNY_HIGH)})
    write_json(work / "controlnet_metrics.json", {
        "steps": args.steps, "batch": args.batch, "lr": args.lr, "images": args.images, "seed": args.seed,
        "final_loss_smoothed": running, "heldout_iou_without_control": baseline, "heldout_iou": final,
        "params": sum(p.numel() for p in net.parameters()), "canny": [CANNY_LOW, CANNY_HIGH],
        "train_seconds_this_run": round(train_s, 1), "machine": env_info()})
    print(f"IoU {baseline:.3f} (no control) -> {final:.3f}; wrote {out}")


if __name__ == "__main__":
    main()
