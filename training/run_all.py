"""Run the whole demo training in order and record each stage's wall time (build/demo-training/times.json).

    python -m training.run_all [--seed 0] [--from unet] [--preset gpu]

`--preset cpu` (the default) uses each script's own defaults, sized for a 2-core CPU in about an hour;
`--preset gpu` the run that made the shipped weights on a lent H100 (training/README.md; there the
LoRA and ControlNet were trained on the fp16-rounded base, which the shipped checkpoint is).
"""
from __future__ import annotations

import argparse
import importlib
import time

from training.common import WORK_DIR, env_info, read_json, write_json

STAGES = ("train_vae", "train_unet", "train_lora", "train_controlnet", "export")
PRESETS: dict[str, dict[str, list[str]]] = {
    "cpu": {},
    "gpu": {  # the shipped run (training/README.md): ~12 minutes of training loops on one H100
        "train_vae": ["--steps", "5800", "--batch", "64", "--pool", "100000"],
        "train_unet": ["--steps", "2610", "--batch", "256", "--images", "60000", "--lr", "1e-3", "--text-lr", "5e-4",
                       "--ema", "0.999", "--eval-every", "2000", "--eval-prompts", "60"],
        "train_lora": ["--steps", "1500", "--batch", "128", "--images", "10000"],
        "train_controlnet": ["--steps", "5000", "--batch", "128", "--images", "20000"],
        "train_depth": ["--steps", "3000", "--batch", "128", "--images", "20000"],
        "train_controlnet --hint depth": ["--steps", "5000", "--batch", "128", "--images", "20000"],
    },
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from", dest="start", default="vae", help="first stage: vae, unet, lora, controlnet, export")
    ap.add_argument("--to", dest="stop", default="export", help="last stage")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    first = next(i for i, s in enumerate(STAGES) if s.endswith(args.start))
    last = next(i for i, s in enumerate(STAGES) if s.endswith(args.stop))
    times = read_json(WORK_DIR / "times.json")
    for stage in STAGES[first:last + 1]:
        t = time.time()
        module = importlib.import_module(f"training.{stage}")
        stage_args = [] if stage == "export" else ["--seed", str(args.seed), "--device", args.device,
                                                   *PRESETS[args.preset].get(stage, [])]
        module.main(stage_args)
        times[stage] = {"wall_s": round(time.time() - t, 1), "machine": env_info(), "preset": args.preset}
        write_json(WORK_DIR / "times.json", times)


if __name__ == "__main__":
    main()
