"""Run the whole demo training in order and record each stage's wall time (build/demo-training/times.json).

    python -m training.run_all [--seed 0] [--from unet]
"""
from __future__ import annotations

import argparse
import importlib
import time

from training.common import WORK_DIR, env_info, read_json, write_json

STAGES = ("train_vae", "train_unet", "train_lora", "train_controlnet", "export")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from", dest="start", default="vae", help="first stage: vae, unet, lora, controlnet, export")
    args = ap.parse_args(argv)
    names = [s for s in STAGES]
    first = next(i for i, s in enumerate(names) if s.endswith(args.start))
    times = read_json(WORK_DIR / "times.json")
    for stage in names[first:]:
        t = time.time()
        module = importlib.import_module(f"training.{stage}")
        module.main([] if stage == "export" else ["--seed", str(args.seed)])
        times[stage] = {"wall_s": round(time.time() - t, 1), "machine": env_info()}
        write_json(WORK_DIR / "times.json", times)


if __name__ == "__main__":
    main()
