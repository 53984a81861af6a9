"""Per-conv A/B of the CPU paths a 3×3 conv can take: oneDNN (torch's own, in the layout the model runs),
our Winograd F(4×4, 3×3) (nodes/sd/winograd.py) and NNPACK (nodes/sd/nnpack.py), on the SD1.5 UNet's and
VAE decoder's shapes; and for the ×2 upsamplers, the transposed conv against NNPACK's banded conv.

    python bench/bench_convs.py [--rounds 5] [--threads 2] [--only vae|unet|small]

Each round runs every path once, alternated; medians are printed with each path's time over the best
of the others, and each result's largest difference from float64 relative to the output's largest value.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodes.sd import fast_ops, nnpack, winograd  # noqa: E402

# (batch, in, out, height = width, upsample): the VAE decoder at 512², the UNet at 512² (a CFG batch of 2),
# small-channel convs such as ControlNet's hint encoder.
SHAPES = {
    "vae": [(1, 512, 512, 64, False), (1, 512, 512, 128, False), (1, 512, 256, 256, False), (1, 256, 256, 256, False),
            (1, 256, 128, 512, False), (1, 128, 128, 512, False), (1, 512, 512, 128, True), (1, 256, 256, 256, True)],
    "unet": [(2, 320, 320, 64, False), (2, 640, 320, 64, False), (2, 960, 320, 64, False), (2, 640, 640, 48, False),
             (2, 640, 640, 32, False), (2, 1280, 1280, 16, False), (2, 640, 640, 32, True)],
    "small": [(1, 32, 32, 256, False), (1, 64, 64, 512, False), (1, 96, 96, 256, False), (1, 128, 128, 128, False)],
}


def unbanded(fn):
    """fn() with the whole image as one band (NNPACK's workspace then grows to ~1.8× input + output)."""
    before, nnpack.BAND_BYTES = nnpack.BAND_BYTES, 1 << 62
    try:
        return fn()
    finally:
        nnpack.BAND_BYTES = before


def paths(n, cin, cout, hw, upsample):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, hw, hw, generator=g)
    weight = torch.randn(cout, cin, 3, 3, generator=g) / (3 * cin**0.5)
    bias = torch.randn(cout, generator=g)
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
    conv.weight.data, conv.bias.data = weight, bias
    x_last = x.contiguous(memory_format=torch.channels_last)
    fns = {}
    if upsample:
        fns["transposed NCHW"] = lambda: F.conv_transpose2d(x, fast_ops.subpixel_weight(weight), bias, stride=2, padding=1)
        fns["transposed NHWC"] = lambda: F.conv_transpose2d(x_last, fast_ops.subpixel_weight(weight), bias, stride=2, padding=1)
        fns["nnpack banded"] = lambda: nnpack.conv3x3(x, weight, bias, upsample=True)
        fns["nnpack whole"] = lambda: unbanded(lambda: nnpack.conv3x3(x, weight, bias, upsample=True))
    else:
        fns["onednn NCHW"] = lambda: F.conv2d(x, weight, bias, padding=1)
        fns["onednn NHWC"] = lambda: F.conv2d(x_last, weight, bias, padding=1)
        if min(cin, cout) >= 64:
            fns["winograd (ours)"] = lambda: winograd.conv3x3(x, weight, bias)
        fns["nnpack"] = lambda: nnpack.conv3x3(x, weight, bias)
    xe = F.interpolate(x.double(), scale_factor=2.0, mode="nearest") if upsample else x.double()
    exact = F.conv2d(xe, weight.double(), bias.double(), padding=1)
    return fns, exact


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=sorted(SHAPES), nargs="+", default=sorted(SHAPES))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.pop("NODEGRAPH_NNPACK", None)
    if not nnpack.available():
        sys.exit("this torch build has no NNPACK (or the CPU lacks AVX2)")
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    with torch.inference_mode():
        for family in args.only:
            for shape in SHAPES[family]:
                fns, exact = paths(*shape)
                scale = exact.abs().max().item()
                errors = {k: (f().double() - exact).abs().max().item() / scale for k, f in fns.items()}  # + warm-up
                times: dict[str, list[float]] = {k: [] for k in fns}
                for _ in range(args.rounds):
                    for k, f in fns.items():
                        t0 = time.perf_counter()
                        f()
                        times[k].append(time.perf_counter() - t0)
                med = {k: statistics.median(v) for k, v in times.items()}
                n, cin, cout, hw, up = shape
                label = f"{family} {n}×{cin}→{cout} @{hw}²" + (" ×2 up" if up else "")
                cells = []
                for k, t in med.items():
                    others = min(v for j, v in med.items() if j != k)
                    cells.append(f"{k} {t * 1e3:.0f} ms ({t / others:.2f}×, err {errors[k]:.0e})")
                print(f"{label}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
