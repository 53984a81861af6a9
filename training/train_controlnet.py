"""Train a demo ControlNet (SD1 ControlNet layout: a copy of the UNet encoder, a hint block and zero
convolutions) on Canny edge maps (`--hint canny`) or depth maps (`--hint depth`) of the shapes data set,
with the UNet and text encoder frozen.

    python -m training.train_controlnet --seed 0    (needs the UNet run in build/demo-training)
    python -m training.train_controlnet --hint depth --base shipped --work build/depth-training
                                                    (on the shipped checkpoint, no UNet run needed)

Initialised as ControlNet was: encoder and middle block copied from the trained UNet, the zero convs and
`middle_block_out` at 0 (so training starts from the plain UNet's output), the hint block random except
its last conv, also 0. Hints are the project's own Canny (nodes.preprocess.canny, kornia's threshold
scale) at low=0.05 / high=0.1, repeated to 3 channels in 0..1, exactly what the Canny node feeds the
Apply ControlNet node. Depth hints are the data set's exact depth (training/train_depth.py: the shape's
coverage, near = bright, 0..1 on 3 channels), the map the trained depth estimator approximates. Saved in
the original layout (`control_model.*`), fp16.
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
from tests.demo.judge import iou, judge
from training.common import (CANNY_HIGH, CANNY_LOW, HINT_BLOCK_CHANNELS, UNET_CONFIG, Log, StepBook, add_common_args,
                             cosine_lr, env_info, sd1_alphas_cumprod, setup, tokenize, write_json)
from training.evaluate import control_iou, generate
from training.train_unet import diffusion_loss, encode_images, load_trained, sample_latents

CONFIG = ControlNetConfig(unet=UNET_CONFIG, hint_channels=3, hint_block_channels=HINT_BLOCK_CHANNELS)


def hints_of(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> (N, 3, 64, 64) Canny edges in {0, 1}."""
    x = torch.from_numpy(images).float() / 255.0
    return torch.cat([canny_edges(x[i:i + 1000], CANNY_LOW, CANNY_HIGH) for i in range(0, len(x), 1000)]
                     ).permute(0, 3, 1, 2).contiguous()


def depth_hints_of(masks: np.ndarray) -> torch.Tensor:
    """float (N, 64, 64) shape coverage -> (N, 3, 64, 64) depth maps, near = 1 (the exact depth)."""
    return torch.from_numpy(masks).float()[:, None].expand(-1, 3, -1, -1).contiguous()


def scene_hints(kind: str, scenes: data.Scenes) -> torch.Tensor:
    return hints_of(scenes.images) if kind == "canny" else depth_hints_of(scenes.masks)


def hint_iou(kind: str, images: np.ndarray, hints: torch.Tensor) -> list[float]:
    """IoU of each generated shape with the hint's shape: the region the edges enclose, or the depth
    map's near region (> 0.5)."""
    maps = hints.permute(0, 2, 3, 1).cpu().numpy()
    if kind == "canny":
        return control_iou(images, maps)
    masks = [judge(im).mask for im in images]
    return [iou(m if m is not None else np.zeros(im.shape[:2], bool), h[..., 0] > 0.5)
            for m, im, h in zip(masks, images, maps)]


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


def other_caption(spec: data.Spec, rng: np.random.Generator) -> str:
    """The caption with its position phrase dropped (half) or replaced by another position (half)."""
    if rng.random() < 0.5:
        return data.caption_of(spec.colour, spec.shape, spec.background, None)
    others = [p for p in data.POSITIONS if p != spec.position]
    return data.caption_of(spec.colour, spec.shape, spec.background, others[rng.integers(len(others))])


def encode_with_hints(vae, n: int, seed: int, workers: int = 1, kind: str = "canny"):
    """Latents, token ids of the true captions and of captions whose position is dropped or wrong, hints."""
    scenes = data.make_scenes(n, seed=seed, split="train", workers=workers, masks=kind == "depth")
    means, logvars = encode_images(vae, scenes.images)
    rng = np.random.default_rng([seed, 5])
    other_ids = tokenize([other_caption(s, rng) for s in scenes.specs])
    return means.cpu(), logvars.cpu(), tokenize(scenes.captions), other_ids, scene_hints(kind, scenes)


def evaluate_iou(unet, text_model, vae, net, n: int, seed: int, strength: float = 1.0, wrong_position=False,
                 kind: str = "canny") -> float:
    """Mean IoU of the generated shape with the hint's shape, on held-out prompts with plain
    backgrounds; `wrong_position`: the prompts name another position than the hints show."""
    specs = data.heldout_prompts(n, seed=seed)
    plain = [s for s in specs if len(s.background) == 1][: max(1, n // 2)]
    images = np.stack([data.render(s) for s in plain])
    masks = np.stack([data.shape_mask(s.shape, s.cx, s.cy, s.radius) for s in plain])
    hints = hints_of(images) if kind == "canny" else depth_hints_of(masks)
    control = ControlNet(net, name="training").set_cond_hint(hints.to(net.device), strength)
    captions = [data.caption_of(s.colour, s.shape, s.background, data.other_position(s.position))
                if wrong_position else s.caption for s in plain]
    out = generate(unet, text_model, vae, captions, seed=seed, control=control)
    return float(np.mean(hint_iou(kind, out, hints)))


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--eval-prompts", type=int, default=32)
    ap.add_argument("--hint", choices=("canny", "depth"), default="canny", help="what the ControlNet reads")
    ap.add_argument("--base", choices=("work", "shipped"), default="work",
                    help="the frozen UNet / text encoder / VAE: the run in --work, or the shipped checkpoint "
                         "(nodes/sd/demo, unpacked into --work)")
    ap.add_argument("--other-caption", type=float, default=0.5,
                    help="share of captions whose position is dropped or wrong, so that the edges must place "
                         "the shape (with true captions only, the net learns to lean on the text)")
    args = ap.parse_args(argv)

    dev = setup(args.seed, device=args.device)
    work, kind = Path(args.work), args.hint
    name = "controlnet" if kind == "canny" else f"controlnet_{kind}"  # file names in the work folder
    if args.base == "shipped":
        from training.export import unpack_shipped_checkpoint
        unpack_shipped_checkpoint(work)
    unet, text_model, vae = load_trained(work, dev)
    cache = work / (f"latents_hints2_{args.seed}_{args.images}.pt" if kind == "canny"
                    else f"latents_{kind}_{args.seed}_{args.images}.pt")
    if cache.exists():
        tensors = torch.load(cache, weights_only=False)
    else:
        tensors = encode_with_hints(vae, args.images, args.seed + 200, args.workers, kind)
        torch.save(tensors, cache)
    means, logvars, ids, other_ids, hints = (t.to(dev) for t in tensors)
    empty_ids = tokenize([""]).to(dev)
    net = new_controlnet(unet, args.seed + 3).to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    alphas = sd1_alphas_cumprod().to(dev)
    state_path, log = work / f"{name}_state.pt", Log(work / f"{name}_log.jsonl")
    start = 0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False, map_location=dev)
        net.load_state_dict(st["net"]), opt.load_state_dict(st["opt"]), gen.set_state(st["gen"].cpu())
        start = st["step"]
    baseline = evaluate_iou(unet, text_model, vae, net, args.eval_prompts, seed=7, strength=0.0, kind=kind)
    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="ControlNet", dynamic_ncols=True)
    book = StepBook(name, bar, log, state_path, args.steps, args.max_minutes)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, warmup=20)
        idx = torch.randint(0, len(means), (args.batch,), generator=gen, device=dev)
        hint = hints[idx]
        other = torch.rand(args.batch, generator=gen, device=dev) < args.other_caption
        batch_ids = torch.where(other[:, None], other_ids[idx], ids[idx])
        loss = diffusion_loss(unet, text_model, sample_latents(means, logvars, idx, gen), batch_ids, empty_ids, gen,
                              dropout=0.1, alphas_cumprod=alphas,
                              control_fn=lambda x, t, ctx: net(x, hint, t.float(), ctx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        book.report(step, loss)
        if book.checkpoint(step, lambda: dict(net=net.state_dict(), opt=opt.state_dict(), gen=gen.get_state())):
            break
    train_s = time.time() - t0
    net.eval().requires_grad_(False)
    final = evaluate_iou(unet, text_model, vae, net, args.eval_prompts, seed=7, kind=kind)
    wrong = evaluate_iou(unet, text_model, vae, net, args.eval_prompts, seed=7, wrong_position=True, kind=kind)
    wrong_base = evaluate_iou(unet, text_model, vae, net, args.eval_prompts, seed=7, strength=0.0, wrong_position=True,
                              kind=kind)
    out = work / f"{name}.safetensors"
    metadata = ({"nodegraph.demo": "canny", "canny_low": str(CANNY_LOW), "canny_high": str(CANNY_HIGH)}
                if kind == "canny" else {"nodegraph.demo": kind})
    save_file({ORIGINAL_PREFIX + k: v.detach().cpu().half().contiguous() for k, v in net.state_dict().items()},
              str(out), metadata=metadata)
    write_json(work / f"{name}_metrics.json", {"hint": kind, "base": args.base,
        "steps": args.steps, "stopped_early_at_step": book.stopped_at, "batch": args.batch, "lr": args.lr, "images": args.images, "seed": args.seed,
        "final_loss_smoothed": book.smoothed, "heldout_iou_without_control": baseline, "heldout_iou": final,
        "heldout_iou_wrong_position": wrong, "heldout_iou_wrong_position_without_control": wrong_base,
        "other_caption": args.other_caption,
        "params": sum(p.numel() for p in net.parameters()), "canny": [CANNY_LOW, CANNY_HIGH] if kind == "canny" else None,
        "train_seconds_this_run": round(train_s, 1), "machine": env_info(dev)})
    print(f"IoU {baseline:.3f} (no control) -> {final:.3f}; prompts naming another position: {wrong_base:.3f} -> "
          f"{wrong:.3f}; wrote {out}")
    return book.stopped_at is None


if __name__ == "__main__":
    main()
