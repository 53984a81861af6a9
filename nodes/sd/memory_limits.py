"""How much memory a UNet or VAE call will need (estimated from its shapes before anything is
allocated) and how much it may use, so a request that cannot fit is refused with a clear error (or a
VAE decode is tiled) instead of the kernel's OOM killer taking the process and its queue down.

The limit is NODEGRAPH_RAM_BUDGET (bytes, e.g. `8GB`) when set, else the memory the system reports
available (cgroup limit included); on a GPU, the device memory manager's budget minus resident models.
The constants were measured on SD1.5 shapes in fp32 (docs/performance-history.md, fourth pass) and carry
a safety margin; they scale with the model's width, so the tiny test models get small estimates.
"""
from __future__ import annotations

import os
from pathlib import Path

from nodegraph import NodeInputError
from nodegraph.cache import parse_size

from .device_memory import InsufficientMemoryError, manager_for

RAM_BUDGET_ENV = "NODEGRAPH_RAM_BUDGET"

# Peak working memory, in activation values per pixel and per channel of the model's widest level:
# a VAE decode holds several full-size activations of the decoder's base width at once (input, norm
# output, conv outputs, skip) and its convs' scratch (oneDNN's reorders; NNPACK's bands, ~330 MB at most).
# Measured for SD1.5's 128 channels in fp32 (glibc, above the loaded weights): 7.9 at 512² and 7.1 at
# 768² with NNPACK, 8.4 and 6.0 without (issue 14's fourth pass).
VAE_DECODE_VALUES_PER_PIXEL_CHANNEL = 8
VAE_ENCODE_VALUES_PER_PIXEL_CHANNEL = 6
# A UNet call, per latent pixel and batch row (a CFG pair is two rows), per base channel: the skip
# connections of every input block (~6.4) plus the transformer working set at the first level (~13).
UNET_VALUES_PER_LATENT_PIXEL_CHANNEL = 40


class RequestTooLargeError(NodeInputError, InsufficientMemoryError):
    """A request whose estimated working memory exceeds the limit; names the input, estimate and limit
    (the executor adds the node)."""

    def __init__(self, input_name: str, what: str, estimate: int, limit: int, hint: str = ""):
        self.estimate, self.limit = estimate, limit
        message = (f"{what} needs about {format_bytes(estimate)} of working memory, more than the "
                   f"{format_bytes(limit)} available ({limit_source()}); nothing was allocated")
        super().__init__(input_name, message + (f". {hint}" if hint else ""))


def format_bytes(n: int | float) -> str:
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.0f} kB"


def limit_source() -> str:
    return f"{RAM_BUDGET_ENV}" if os.environ.get(RAM_BUDGET_ENV, "").strip() else "free system memory"


def memory_limit(device=None) -> int:
    """Bytes a single call may allocate on `device` (CPU RAM unless a CUDA device is given)."""
    manager = manager_for(device) if device is not None else None
    if manager is not None:
        import torch

        free, _ = torch.cuda.mem_get_info(manager.device)
        return min(free, max(0, manager.budget - manager.resident_bytes()))
    text = os.environ.get(RAM_BUDGET_ENV, "").strip()
    if text:
        return parse_size(text)
    return available_ram()


def available_ram() -> int:
    """MemAvailable from /proc/meminfo, capped by a cgroup v2 memory limit; a large number elsewhere."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    try:
        cgroup_max = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        cgroup_now = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if cgroup_max != "max":
            room = int(cgroup_max) - cgroup_now
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    if available is None:  # not Linux: trust the machine (the estimate still guards absurd requests)
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 1 << 40
    return max(0, available)


def vae_decode_bytes(batch: int, height: int, width: int, channels: int = 128, dtype_size: int = 4) -> int:
    """Working memory of decoding `batch` latents into height × width pixels with a `channels`-wide decoder."""
    return batch * height * width * channels * VAE_DECODE_VALUES_PER_PIXEL_CHANNEL * dtype_size


def vae_encode_bytes(batch: int, height: int, width: int, channels: int = 128, dtype_size: int = 4) -> int:
    return batch * height * width * channels * VAE_ENCODE_VALUES_PER_PIXEL_CHANNEL * dtype_size


def unet_call_bytes(rows: int, latent_height: int, latent_width: int, channels: int = 320,
                    dtype_size: int = 4) -> int:
    """Working memory of one UNet call on `rows` latents (cond and uncond of a CFG step are two rows)."""
    return rows * latent_height * latent_width * channels * UNET_VALUES_PER_LATENT_PIXEL_CHANNEL * dtype_size


def require(input_name: str, what: str, estimate: int, device=None, hint: str = "") -> None:
    """Raise RequestTooLargeError when `estimate` bytes exceed the limit for `device`."""
    limit = memory_limit(device)
    if estimate > limit:
        raise RequestTooLargeError(input_name, what, estimate, limit, hint)


def sampling_bytes(model, samples) -> int:
    """Working memory of one UNet call of a sampler on `samples` (cond and uncond: 2 rows per latent)."""
    b, _, h, w = samples.shape
    channels = getattr(getattr(model.model, "config", None), "model_channels", 320)
    return unet_call_bytes(2 * b, h, w, channels)


def require_for_sampling(model, samples, input_name: str = "latent_image") -> None:
    """Refuse a sampling run whose UNet calls cannot fit."""
    b, _, h, w = samples.shape
    require(input_name, f"sampling {b} latent(s) of {w * 8}x{h * 8} (one UNet call on {2 * b} rows)",
            sampling_bytes(model, samples), model.load_device)
