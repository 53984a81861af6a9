"""Which models live on the compute device: a byte budget, least-recently-used eviction to the offload
device, and counts of every load, offload and reload. A model in use is never evicted.

On the CPU there is nothing to move (the compute device is the offload device), so the manager only
matters on a GPU: `--vram-budget` (NODEGRAPH_VRAM_BUDGET) caps what the models may hold there, by
default the card's memory minus a margin, so two checkpoints and a ControlNet take turns on a card
that holds one.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Protocol

from nodegraph.cache import parse_size

log = logging.getLogger(__name__)

VRAM_BUDGET_ENV = "NODEGRAPH_VRAM_BUDGET"
# Left free for activations, cuDNN workspaces and the CUDA context when no budget is given.
DEFAULT_VRAM_MARGIN = 1536 * 1024**2


class InsufficientMemoryError(MemoryError):
    """A model or a request cannot fit in the memory it is allowed, even after evicting what is idle."""


class Loadable(Protocol):
    """What the manager moves. `key` identifies the weights (clones of one model share it)."""

    @property
    def key(self) -> object: ...

    def weight_bytes(self) -> int: ...

    def load_to(self, device) -> None: ...

    def offload(self) -> None: ...


@dataclass
class MemoryStats:
    loads: int = 0      # moves onto the device (first loads and reloads)
    reloads: int = 0    # loads of a model that had been offloaded before
    offloads: int = 0   # evictions to the offload device
    per_model: dict = field(default_factory=dict)  # key -> {"loads", "reloads", "offloads"}

    def count(self, key, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        entry = self.per_model.setdefault(key, {"loads": 0, "reloads": 0, "offloads": 0})
        entry[what] += 1


class DeviceMemory:
    """Models resident on one device under `budget` bytes of weights (plus the working memory a call asks for).

    `with manager.use(model_a, model_b, working=bytes):` loads both (evicting idle models, least
    recently used first, until weights + working fit), keeps them resident and pinned for the block,
    and leaves them resident afterwards (the next use is free) until something else needs the room.
    Models are held weakly: one that nobody uses any more leaves the books (and frees its memory).
    """

    def __init__(self, device, budget: int):
        self.device = device
        self.budget = int(budget)
        self.stats = MemoryStats()
        self._resident: OrderedDict[object, tuple[weakref.ref, int]] = OrderedDict()  # LRU first
        self._in_use: dict[object, int] = {}
        self._offloaded: set[object] = set()
        self._lock = threading.RLock()

    def resident_bytes(self) -> int:
        self._prune()
        return sum(size for _, size in self._resident.values())

    def resident_keys(self) -> list:
        """Keys on the device, least recently used first."""
        self._prune()
        return list(self._resident)

    def _prune(self) -> None:
        for key in [k for k, (ref, _) in self._resident.items() if ref() is None]:
            del self._resident[key]

    @contextlib.contextmanager
    def use(self, *models: Loadable, working: int = 0) -> Iterator[None]:
        with self._lock:
            for model in models:
                self._in_use[model.key] = self._in_use.get(model.key, 0) + 1
            try:
                self._make_resident(models, int(working))
            except BaseException:
                self._release(models)
                raise
        try:
            yield
        finally:
            with self._lock:
                self._release(models)

    def drop(self, model: Loadable) -> None:
        """Offload `model` if it is resident and idle (it is about to run another way, e.g. streamed)."""
        with self._lock:
            if model.key in self._resident and not self._in_use.get(model.key):
                self._offload(model.key)

    def evict_all(self) -> None:
        """Offload every idle model (e.g. before a job that needs the whole device)."""
        with self._lock:
            for key in [k for k in self._resident if not self._in_use.get(k)]:
                self._offload(key)

    # -- internals ----------------------------------------------------------------------------------

    def _release(self, models) -> None:
        for model in models:
            left = self._in_use.get(model.key, 0) - 1
            if left > 0:
                self._in_use[model.key] = left
            else:
                self._in_use.pop(model.key, None)

    def _make_resident(self, models, working: int) -> None:
        self._prune()
        wanted = {m.key: m for m in models}
        needed = working + sum(m.weight_bytes() for k, m in wanted.items() if k not in self._resident)
        pinned = sum(size for k, (_, size) in self._resident.items() if self._in_use.get(k) or k in wanted)
        if pinned + needed > self.budget:
            raise InsufficientMemoryError(
                f"needs {_gb(needed)} on {self.device} ({_gb(working)} working memory) besides "
                f"{_gb(pinned)} of models in use; the budget is {_gb(self.budget)}")
        for key in list(self._resident):  # least recently used first
            if self.resident_bytes() + needed <= self.budget:
                break
            if not self._in_use.get(key) and key not in wanted:
                self._offload(key)
        for key, model in wanted.items():
            if key in self._resident:
                self._resident.move_to_end(key)
                continue
            model.load_to(self.device)
            self._resident[key] = (weakref.ref(model), model.weight_bytes())
            self.stats.count(key, "loads")
            if key in self._offloaded:
                self.stats.count(key, "reloads")
            log.debug("loaded %s onto %s (%s resident)", key, self.device, _gb(self.resident_bytes()))

    def _offload(self, key) -> None:
        ref, _ = self._resident.pop(key)
        model = ref()
        if model is None:
            return
        model.offload()
        self._offloaded.add(key)
        self.stats.count(key, "offloads")
        log.info("offloaded %s from %s to make room", key, self.device)


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB"


_MANAGERS: dict[str, DeviceMemory] = {}
_MANAGERS_LOCK = threading.Lock()


def manager_for(device) -> DeviceMemory | None:
    """The process's manager for a compute device; None for the CPU (nothing to move there)."""
    import torch

    device = torch.device(device)
    if device.type == "cpu" or device.type == "meta":
        return None
    name = str(device)
    with _MANAGERS_LOCK:
        if name not in _MANAGERS:
            _MANAGERS[name] = DeviceMemory(device, vram_budget(device))
        return _MANAGERS[name]


def vram_budget(device) -> int:
    """NODEGRAPH_VRAM_BUDGET if set, else the device's total memory minus DEFAULT_VRAM_MARGIN."""
    text = os.environ.get(VRAM_BUDGET_ENV, "").strip()
    if text:
        return parse_size(text)
    import torch

    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 0
    return max(0, total - DEFAULT_VRAM_MARGIN)
