"""Train the demo depth estimator: a tiny transformers DPT (ViT backbone, DPT neck and head) that predicts
the shapes data set's exact depth, saved as a transformers folder that `DepthEstimation` loads like
Intel/dpt-large.

    python -m training.train_depth --seed 0

The data set's depth is known exactly: each shape is a flat cut-out standing in front of a flat backdrop,
so its relative inverse depth (MiDaS convention, near = bright) is the shape's coverage, 1 on the shape,
0 on the backdrop, antialiased at the rim. A two-tone backdrop is one plane: a black/white split is a
colour edge, not a depth edge, which is what the model must learn beyond "saturated = near".
Judged through the node's own path (`nodes.preprocess.depth`: the saved folder, the image processor,
per-image normalisation): IoU of the map's near region (> 0.5) with the true shape, held-out scenes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training import data
from training.common import Log, StepBook, add_common_args, cosine_lr, env_info, setup, write_json

# 64×64 input in 8×8-pixel patches (an 8×8 token grid; 16-pixel patches are 2x faster but coarser than
# the shapes' points); the neck reassembles at 32, 16, 8 and 4 and the head upsamples to 128, which the
# node resizes to the image. A narrow decoder (16 fusion channels): 0.5 s per batch of 32 on one CPU
# thread against 0.8 s at 32. ~0.26 M parameters.
DEPTH_CONFIG = dict(image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=128, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 16, 32, 32],
                    fusion_hidden_size=16, head_hidden_size=8, hidden_act="gelu")
PROCESSOR = dict(size={"height": 64, "width": 64}, keep_aspect_ratio=False, ensure_multiple_of=8,
                 do_normalize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
NEAR = 0.5  # a normalised depth above this is the near region (the shape)


def new_depth_model(seed: int):
    from transformers import DPTConfig, DPTForDepthEstimation

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DPTForDepthEstimation(DPTConfig(**DEPTH_CONFIG))


def save_depth_model(model, folder: Path) -> Path:
    """The transformers folder layout (config.json, model.safetensors, preprocessor_config.json)."""
    from transformers import DPTImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(**PROCESSOR).save_pretrained(folder)
    return folder


def pixel_values(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> what the image processor makes of it: (N, 3, 64, 64), (x - 0.5) / 0.5."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def near_region(depth_bhwc) -> list[np.ndarray]:
    """Bool (H, W) masks of the near region of normalised depth maps [N, H, W, 3]."""
    d = np.asarray(depth_bhwc)[..., 0]
    return [m > NEAR for m in d]


def judge_folder(folder: Path, n: int = 64, seed: int = 11) -> dict:
    """The node's own path on held-out scenes: mean IoU of the map's near region with the true shape."""
    from nodes.preprocess.depth import clear_cache, estimate_depth, load_depth_model
    from tests.demo.judge import iou

    clear_cache()
    model = load_depth_model(folder, device="cpu")
    scenes = data.make_scenes(n, seed=seed, split="heldout", masks=True)
    depth = estimate_depth(model, torch.from_numpy(scenes.images).float() / 255.0)
    ious = [iou(m, t > 0.5) for m, t in zip(near_region(depth.numpy()), scenes.masks)]
    two_tone = [i for i, s in enumerate(scenes.specs) if len(s.background) == 2]
    return {"depth_iou": float(np.mean(ious)), "depth_iou_min": float(np.min(ious)),
            "depth_iou_two_tone": float(np.mean([ious[i] for i in two_tone])) if two_tone else None,
            "judged_scenes": n}


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, workers=1)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--images", type=int, default=4000)
    args = ap.parse_args(argv)

    dev = setup(args.seed, device=args.device)
    work = Path(args.work)
    scenes = data.make_scenes(args.images, seed=args.seed + 300, split="train", masks=True, workers=args.workers)
    pixels, target = pixel_values(scenes.images).to(dev), torch.from_numpy(scenes.masks).to(dev)
    model = new_depth_model(args.seed + 4).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    state_path, log = work / "depth_state.pt", Log(work / "depth_log.jsonl")
    start = 0
    if state_path.exists():
        st = torch.load(state_path, weights_only=False, map_location=dev)
        model.load_state_dict(st["model"]), opt.load_state_dict(st["opt"]), gen.set_state(st["gen"].cpu())
        start = st["step"]
    t0 = time.time()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="depth", dynamic_ncols=True)
    book = StepBook("depth", bar, log, state_path, args.steps, args.max_minutes)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, args.steps, args.lr, warmup=50)
        idx = torch.randint(0, len(pixels), (args.batch,), generator=gen, device=dev)
        x = pixels[idx]
        flip = torch.rand(args.batch, generator=gen, device=dev) < 0.5  # mirrored scenes: same depth rule
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], target[idx].flip(-1), target[idx])
        pred = model(pixel_values=x).predicted_depth
        pred = torch.nn.functional.interpolate(pred[:, None], size=y.shape[-2:], mode="bilinear",
                                               align_corners=False)[:, 0]
        loss = torch.nn.functional.mse_loss(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        book.report(step, loss)
        if book.checkpoint(step, lambda: dict(model=model.state_dict(), opt=opt.state_dict(), gen=gen.get_state())):
            break
    train_s = time.time() - t0
    folder = save_depth_model(model.eval().cpu(), work / "depth-model")
    judged = judge_folder(folder)
    write_json(work / "depth_metrics.json", {
        "steps": args.steps, "stopped_early_at_step": book.stopped_at, "batch": args.batch, "lr": args.lr,
        "images": args.images, "seed": args.seed, "final_loss_smoothed": book.smoothed, **judged,
        "params": sum(p.numel() for p in model.parameters()), "config": DEPTH_CONFIG,
        "train_seconds_this_run": round(train_s, 1), "machine": env_info(dev)})
    print(json.dumps(judged), f"wrote {folder}")
    return book.stopped_at is None


if __name__ == "__main__":
    main()
