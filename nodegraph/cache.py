"""The output cache: node outputs kept across prompts under a byte budget, least recently used
evicted first. Keys come from cache_keys (content hashes of subgraphs).

Bytes are counted per distinct storage (see sizing), so a model shared by several entries is
counted once, and the figure reported is what the cache really holds.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .sizing import memory_parts

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 8 * 1024**3


@dataclass
class CacheEntry:
    outputs: list[list[Any]]  # per output slot, the list of values (ComfyUI list semantics)
    ui: dict[str, Any] | None
    parts: list[tuple[Any, int]]


class OutputCache:
    """LRU by bytes. `budget=0` disables caching (every node runs every time)."""

    def __init__(self, budget: int = DEFAULT_BUDGET):
        self.budget = max(0, int(budget))
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._part_refs: dict[Any, list[int]] = {}  # identity -> [refcount, nbytes]
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> None:
        if not self.enabled or key.startswith("volatile:"):
            return
        parts = list(memory_parts(outputs))
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = CacheEntry(outputs, ui, parts)
            for identity, nbytes in parts:
                ref = self._part_refs.get(identity)
                if ref is None:
                    self._part_refs[identity] = [1, nbytes]
                    self._bytes += nbytes
                else:
                    ref[0] += 1
            # Keep the newest entry even when it alone exceeds the budget: it is the one in use.
            while self._bytes > self.budget and len(self._entries) > 1:
                oldest = next(iter(self._entries))
                self._drop(oldest)
                self.evictions += 1

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        for identity, _ in entry.parts:
            ref = self._part_refs[identity]
            ref[0] -= 1
            if ref[0] == 0:
                self._bytes -= ref[1]
                del self._part_refs[identity]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._part_refs.clear()
            self._bytes = 0

    def stats(self) -> dict[str, Any]:
        return {"policy": "lru-bytes" if self.enabled else "none", "budget_bytes": self.budget,
                "used_bytes": self._bytes, "entries": len(self._entries), "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}


def parse_size(text: str) -> int:
    """'8GB', '512MB', '0', '1.5G' -> bytes."""
    units = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3, "GB": 1024**3,
             "T": 1024**4, "TB": 1024**4}
    raw = text.strip().upper().replace("IB", "B")
    number = raw.rstrip("KMGTB")
    unit = raw[len(number):]
    if unit not in units:
        raise ValueError(f"unknown size unit in {text!r}; use e.g. 512MB or 8GB")
    return int(float(number) * units[unit])
