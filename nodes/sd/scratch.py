"""Per-thread scratch buffers for the CPU's hand-written paths: a weight cast to the compute dtype
(weight_casting.py), a conv weight in the Winograd domain (winograd.py).

These are the largest short-lived tensors of a UNet step — up to 472 MB for the 2560 → 1280 conv's
transformed weight — and a fresh one per layer and step costs page faults: glibc's malloc returns each
block over 32 MB to the kernel when it is freed, and the next touches fresh pages (~1 s per GB on these
VMs; measured 3.9 GB of such allocations per 512² step before these buffers). A buffer here is
allocated once and reused by every later layer of the run; `run()` drops this thread's buffers when
the outermost CPU model run ends, so nothing stays held between prompts.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

import torch


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.by_name: dict[str, torch.Tensor] = {}
        self.runs = 0


_BUFFERS = _Buffers()


def buffer(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A tensor of `shape` and `dtype` on the CPU, contents undefined: a view of this thread's buffer
    `name`, grown when too small. Valid until the next `buffer(name, ...)` on this thread — the op that
    consumes it has returned by then, as CPU ops are synchronous."""
    n = math.prod(shape)
    held = _BUFFERS.by_name.get(name)
    if held is None or held.dtype != dtype or held.numel() < n:
        _BUFFERS.by_name.pop(name, None)  # free the old one before allocating the larger
        with torch.inference_mode(False):  # an ordinary tensor, writable in and out of inference mode
            held = _BUFFERS.by_name[name] = torch.empty(n, dtype=dtype)
    return held[:n].view(shape)


def held_bytes() -> int:
    """Bytes this thread's buffers hold."""
    return sum(t.numel() * t.element_size() for t in _BUFFERS.by_name.values())


def release() -> None:
    """Drop this thread's buffers now."""
    _BUFFERS.by_name.clear()


@contextlib.contextmanager
def run() -> Iterator[None]:
    """A CPU model run (nestable): this thread's buffers are dropped when the outermost one ends."""
    _BUFFERS.runs += 1
    try:
        yield
    finally:
        _BUFFERS.runs -= 1
        if _BUFFERS.runs == 0:
            release()
