"""Judge the demo depth pair (estimator + depth ControlNet) through the ordinary loaders and ship it to
nodes/sd/demo only if both pass, with model cards; the other demo files are left as they are.

    python -m training.export_depth [--work build/depth-training] [--force]

Judges (the thresholds of tests/demo/test_demo_models.py):
  estimator   DepthEstimation's path (the saved transformers folder, its image processor, per-image
              normalisation) on held-out scenes: IoU of the map's near region (> 0.5) with the true
              shape >= 0.7
  ControlNet  held-out prompts with plain backgrounds, hints made by the *estimator* from the rendered
              scenes (what a user's workflow does): IoU of the generated shape with the map's near region
              >= 0.7, above the same prompts at strength 0; also with prompts naming another position
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

from training import data
from training.common import DEMO_DIR, read_json, setup
from training.train_depth import judge_folder

DEPTH_MODEL_NAME = "nodegraph-demo-depth"
DEPTH_CONTROLNET_NAME = "nodegraph-demo-depth-controlnet.safetensors"
THRESHOLD = 0.7


def judge_controlnet(controlnet: Path, estimator: Path, n: int = 32, seed: int = 0) -> dict:
    from tests.demo import harness
    from tests.demo.judge import iou, judge

    demo = harness.load_demo()
    plain = [s for s in data.heldout_prompts(2 * n, seed=seed + 5) if len(s.background) == 1][:n // 2]
    maps = harness.depth(np.stack([data.render(s) for s in plain]), folder=estimator)
    targets = [harness.depth_region(m) for m in maps]
    out = {"judged_prompts": len(plain)}
    wrong = [data.caption_of(s.colour, s.shape, s.background, data.other_position(s.position)) for s in plain]
    for captions, label in (([s.caption for s in plain], ""), (wrong, "_wrong_position")):
        for strength, suffix in ((1.0, ""), (0.0, "_strength_0")):
            images = harness.generate(demo, captions, seed=seed,
                                      control=harness.controlnet(maps, strength, path=controlnet))
            ious = [iou(judge(im).mask if judge(im).mask is not None else np.zeros((64, 64), bool), t)
                    for im, t in zip(images, targets)]
            out[f"depth_controlnet_iou{label}{suffix}"] = float(np.mean(ious))
    return out


def write_cards(ship: Path, depth: dict, cn: dict, judged: dict) -> None:
    size = (ship / DEPTH_MODEL_NAME / "model.safetensors").stat().st_size / 1e6
    (ship / DEPTH_MODEL_NAME / "README.md").write_text(f"""# nodegraph-demo-depth

A tiny DPT (transformers `DPTForDepthEstimation`: ViT backbone in 8×8 patches of the 64×64 input, DPT
neck and head; {depth.get('params')} parameters, {size:.2f} MB) that predicts the demo data set's exact depth:
each shape is a flat cut-out in front of a flat backdrop, so near (bright) is the shape and the two-tone
backdrops are one plane. Loaded by the `DepthEstimation` node like Intel/dpt-large (config.json,
model.safetensors, preprocessor_config.json).

Trained by `python -m training.train_depth` ({depth.get('steps')} steps planned, stopped at
{depth.get('stopped_early_at_step') or depth.get('steps')}, batch {depth.get('batch')}, {depth.get('images')} images, MSE to the true
coverage) on a 2-core CPU. Judged through the node's path on {depth.get('judged_scenes')} held-out scenes: IoU of the
near region (> 0.5) with the true shape **{judged['depth_iou']:.3f}** (minimum {judged['depth_iou_min']:.3f}; two-tone
backgrounds {judged['depth_iou_two_tone']:.3f}).
""")
    (ship / (Path(DEPTH_CONTROLNET_NAME).stem + ".md")).write_text(f"""# nodegraph-demo-depth-controlnet.safetensors

A depth ControlNet for `nodegraph-demo.safetensors`: the shape follows the depth map's near region. Original
ControlNet layout (`control_model.*`), fp16, {cn.get('params')} parameters, trained by
`python -m training.train_controlnet --hint depth --base shipped` on the data set's exact depth maps
({cn.get('steps')} steps planned, stopped at {cn.get('stopped_early_at_step') or cn.get('steps')}, batch {cn.get('batch')}, lr {cn.get('lr')},
{cn.get('images')} images; UNet and text encoder frozen; half the captions' positions dropped or wrong).

Use: Depth Map (DepthEstimation) with `nodegraph-demo-depth`, Apply ControlNet strength 1.

Judged on {judged['judged_prompts']} held-out prompts, hints made by the estimator from the rendered scenes
(euler, 12 steps, CFG 5): IoU of the generated shape with the map's near region **{judged['depth_controlnet_iou']:.3f}**
(strength 0: {judged['depth_controlnet_iou_strength_0']:.3f}); prompts naming another position
**{judged['depth_controlnet_iou_wrong_position']:.3f}** (strength 0: {judged['depth_controlnet_iou_wrong_position_strength_0']:.3f}).
""")


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="build/depth-training")
    ap.add_argument("--force", action="store_true", help="ship even if the judges fail")
    args = ap.parse_args(argv)
    setup(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work)
    estimator, controlnet = work / "depth-model", work / "controlnet_depth.safetensors"
    judged = judge_folder(estimator, n=64, seed=11)
    judged.update(judge_controlnet(controlnet, estimator))
    (work / "depth_judged.json").write_text(json.dumps(judged, indent=2))
    print(json.dumps(judged, indent=2))
    failed = [name for name, ok in (
        ("estimator IoU >= 0.7", judged["depth_iou"] >= THRESHOLD),
        ("depth ControlNet IoU >= 0.7", judged["depth_controlnet_iou"] >= THRESHOLD),
        ("depth ControlNet beats strength 0", judged["depth_controlnet_iou"] > judged["depth_controlnet_iou_strength_0"]),
        ("depth ControlNet IoU >= 0.7 with another position named",
         judged["depth_controlnet_iou_wrong_position"] >= THRESHOLD)) if not ok]
    if failed and not args.force:
        print(f"NOT shipped to {DEMO_DIR}: the judges fail ({', '.join(failed)}); --force ships anyway")
        return False
    target = DEMO_DIR / DEPTH_MODEL_NAME
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copyfile(estimator / name, target / name)
    shutil.copyfile(controlnet, DEMO_DIR / DEPTH_CONTROLNET_NAME)
    write_cards(DEMO_DIR, read_json(work / "depth_metrics.json"), read_json(work / "controlnet_depth_metrics.json"),
                judged)
    print(f"shipped to {DEMO_DIR}")
    return True


if __name__ == "__main__":
    main()
