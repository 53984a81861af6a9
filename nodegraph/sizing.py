"""How many bytes a cached value holds, counting shared storage once.

A value is broken into parts `(identity, nbytes)`: tensors by their storage, numpy arrays by their
buffer, models by their parameters (an object may define `memory_parts()`). The cache adds a part
only the first time it sees its identity, so a checkpoint shared by many LoRA clones counts once.
The engine never imports torch: tensors are recognised by duck typing.
"""
from __future__ import annotations

import sys
from typing import Any, Iterator

Part = tuple[Any, int]


def memory_parts(value: Any, _depth: int = 0) -> Iterator[Part]:
    if _depth > 8:
        return
    parts = getattr(value, "memory_parts", None)
    if callable(parts) and not isinstance(value, type):
        yield from parts()
        return
    storage = getattr(value, "untyped_storage", None)
    if callable(storage) and hasattr(value, "element_size"):  # a torch.Tensor
        s = storage()
        yield ("storage", s.data_ptr(), str(value.device)), s.nbytes()
        return
    if hasattr(value, "nbytes") and hasattr(value, "dtype"):  # a numpy array
        base = value.base if getattr(value, "base", None) is not None else value
        yield ("buffer", id(base)), int(base.nbytes)
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from memory_parts(item, _depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from memory_parts(item, _depth + 1)
        return
    yield ("object", id(value)), sys.getsizeof(value)
