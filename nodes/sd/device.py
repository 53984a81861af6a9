"""Where the SD models run, in which dtype they compute and in which dtype their weights are kept:
one small policy, overridable with NODEGRAPH_DEVICE and NODEGRAPH_WEIGHTS.

fp16 UNet / text encoder on CUDA (fast, SD1 is trained to tolerate it); fp32 compute everywhere on CPU
(CPU half kernels are slow or missing); the VAE in bf16 where supported, else fp32, because the SD
VAE decoder overflows in fp16 and produces black images. Weights narrower than the compute dtype
(an fp16 file on the CPU) stay narrow in the "lean" mode and are cast layer by layer as they are
used (nodes.sd.weight_casting); the "fp32" mode casts them all once at load, as before.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from . import scratch

DEVICE_ENV = "NODEGRAPH_DEVICE"


def compute_device() -> torch.device:
    """CUDA if available, else CPU; `NODEGRAPH_DEVICE=cpu` (or `cuda:1`, ...) overrides."""
    override = os.environ.get(DEVICE_ENV, "").strip()
    if override:
        return torch.device(override)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """A yes/no environment switch (NODEGRAPH_LOWVRAM, NODEGRAPH_COMPILE, NODEGRAPH_MMAP): `default`
    unless set to one of 1/true/yes/on or 0/false/no/off."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in _TRUE else False if value in _FALSE else default


WEIGHTS_ENV = "NODEGRAPH_WEIGHTS"
WEIGHT_MODES = ("lean", "fp32")
# lean: half the resident memory of fp32 for an fp16 file, bit-identical outputs (fp16 -> fp32 is exact);
# what the per-layer cast costs is measured in docs/performance.md ("What the lean cast costs").
DEFAULT_WEIGHT_MODE = "lean"


def weight_mode() -> str:
    """`lean` (weights stay in the file's dtype when it is narrower than the compute dtype) or `fp32`
    (every weight cast to the compute dtype at load); `NODEGRAPH_WEIGHTS` overrides the default."""
    mode = os.environ.get(WEIGHTS_ENV, "").strip().lower() or DEFAULT_WEIGHT_MODE
    if mode not in WEIGHT_MODES:
        raise ValueError(f"{WEIGHTS_ENV}={mode!r}: expected one of {', '.join(WEIGHT_MODES)}")
    return mode


def storage_dtype(file_dtype: torch.dtype, compute: torch.dtype, mode: str | None = None) -> torch.dtype:
    """The dtype a weight is kept in: the file's when lean and narrower than `compute`, else `compute`.
    Non-float tensors (ids, counters) keep their dtype."""
    if not file_dtype.is_floating_point:
        return file_dtype
    if (mode or weight_mode()) == "lean" and file_dtype.itemsize < compute.itemsize:
        return file_dtype
    return compute


def unet_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def text_encoder_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def vae_dtype(device: torch.device) -> torch.dtype:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


# Small work runs single-threaded on the CPU: when another process holds a core, every op's thread
# barrier waits for the scheduler, which swamps small ops (measured on the tiny model at an 8×8 latent
# with one core busy: 18 ms per UNet call with 1 thread, 2.7 s with 2). The work of a call is counted as
# the model's parameters × the spatial positions of its input (the latent's, batch included): under
# SMALL_WORK — a 100 M-parameter model on one 8×8 latent — one thread. Counting parameters alone put
# SD1.5's VAE (84 M) on one thread for a 512² decode, 1.9× its two-thread time (issue 14's fourth pass).
SMALL_MODEL_PARAMETERS = 100_000_000
SMALL_WORK = SMALL_MODEL_PARAMETERS * 64
THREADS_ENV = "NODEGRAPH_THREADS"


def default_cpu_threads() -> int:
    """$NODEGRAPH_THREADS, else torch's default intra-op thread count."""
    override = os.environ.get(THREADS_ENV, "").strip()
    return max(1, int(override)) if override else _DEFAULT_THREADS


def cpu_threads_for(module: torch.nn.Module, positions: int | None = None) -> int:
    """Intra-op threads for running `module` on the CPU over `positions` spatial positions (None: not
    known, e.g. tokens): $NODEGRAPH_THREADS, else 1 for small work (see SMALL_WORK), else torch's default."""
    if os.environ.get(THREADS_ENV, "").strip():
        return default_cpu_threads()
    count = getattr(module, "_nodegraph_parameter_count", None)
    if count is None:
        count = sum(p.numel() for p in module.parameters())
        module._nodegraph_parameter_count = count
    if count >= SMALL_MODEL_PARAMETERS or (positions is not None and count * positions >= SMALL_WORK):
        return _DEFAULT_THREADS
    return 1


def latent_positions(x: torch.Tensor) -> int:
    """Spatial positions of a (B, C, H, W) tensor, batch included: the `positions` of cpu_threads."""
    return x.shape[0] * x.shape[-2] * x.shape[-1]


_DEFAULT_THREADS = torch.get_num_threads()


@contextlib.contextmanager
def cpu_threads(module: torch.nn.Module, positions: int | None = None) -> Iterator[None]:
    """A CPU model run: the block runs with `cpu_threads_for(module, positions)` intra-op threads
    (restored after), and the scratch buffers its layers reuse (nodes.sd.scratch) are dropped when the
    outermost run ends. Does nothing for a model on another device."""
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    wanted = cpu_threads_for(module, positions)
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        with scratch.run():
            yield
    finally:
        if wanted != before:
            torch.set_num_threads(before)
