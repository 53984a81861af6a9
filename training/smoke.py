"""Every training stage for a few steps, in a scratch folder, with the real batch sizes of a preset: catches
a broken environment or device in a minute, before an hour-long run, and prints seconds per step so the
real run's `--steps` can be sized to the time there is.

    python -m training.smoke [--preset gpu] [--steps 40]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from training.run_all import PRESETS

SMALL = {"train_vae": {"--pool": "3000", "--eval-images": "64"},
         "train_unet": {"--images": "2000", "--eval-prompts": "6", "--eval-every": "100000"},
         "train_lora": {"--images": "1000", "--eval-prompts": "6"},
         "train_controlnet": {"--images": "1000", "--eval-prompts": "6"},
         "train_depth": {"--images": "500"}}
# (label, module, extra arguments, log file stem); the depth pair trains on the shipped checkpoint
STAGES = [(m, m, {}, m.removeprefix("train_")) for m in ("train_vae", "train_unet", "train_lora", "train_controlnet")]
STAGES += [("train_depth", "train_depth", {}, "depth"),
           ("train_controlnet --hint depth", "train_controlnet",
            {"--hint": "depth", "--base": "shipped", "--images": "500"}, "controlnet_depth")]


def per_step_seconds(log: Path) -> float | None:
    """From a stage's JSON-lines log: the mean time per step after the first logged step (warm-up)."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if '"loss"' in line]
    if len(rows) < 2:
        return None
    return (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / max(1, rows[-1]["step"] - rows[0]["step"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--report", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    import importlib

    report = {}
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as depth_work:
        for label, stage, extra, log_name in STAGES:
            preset = PRESETS[args.preset].get(label, [])
            kv = dict(zip(preset[::2], preset[1::2]))
            kv.update(SMALL[stage])
            kv.update(extra)
            folder = depth_work if "depth" in label else work  # the depth pair starts from the shipped model
            kv.update({"--steps": str(args.steps), "--work": folder, "--device": args.device})
            t = time.time()
            importlib.import_module(f"training.{stage}").main([x for kv_ in kv.items() for x in kv_])
            log = Path(folder) / f"{log_name}_log.jsonl"
            report[label] = {"wall_s": round(time.time() - t, 1), "s_per_step": per_step_seconds(log),
                             "batch": kv.get("--batch", "default")}
    print(json.dumps(report, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
