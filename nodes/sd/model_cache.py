"""Process-wide sharing of loaded model files: the same file (path + size + mtime) is loaded once.

Entries are held weakly, so a model lives exactly as long as something (a node output, a sampler)
uses it; the `keep_recent` most recently requested entries are also held strongly so that re-running
a workflow right after its outputs were dropped does not reload from disk. Editing or replacing the
file changes size/mtime and therefore the key, so stale weights are never served.
"""
from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime in ns): changes whenever the file is replaced or rewritten."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


class ModelCache:
    def __init__(self, keep_recent: int = 1):
        self.keep_recent = keep_recent
        self._weak: weakref.WeakValueDictionary[Hashable, Any] = weakref.WeakValueDictionary()
        self._recent: OrderedDict[Hashable, Any] = OrderedDict()
        # One lock for all loads: two nodes asking for the same file wait for one load, not two.
        self._lock = threading.RLock()

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self._lock:
            value = self._weak.get(key)
            if value is None:
                value = load()
                self._weak[key] = value
            else:
                log.debug("model cache hit: %s", key)
            self._recent[key] = value
            self._recent.move_to_end(key)
            while len(self._recent) > self.keep_recent:
                self._recent.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._weak.clear()
            self._recent.clear()

    def __len__(self) -> int:
        return len(self._weak)


MODEL_CACHE = ModelCache()
