"""What a model holds in memory, in the engine cache's terms: `(identity, nbytes)` per tensor
storage (see nodegraph.sizing). Shared weights have one identity, so clones count once."""
from __future__ import annotations

from typing import Iterable, Iterator

import torch


def tensor_parts(tensors: Iterable[torch.Tensor]) -> Iterator[tuple[tuple, int]]:
    for tensor in tensors:
        if tensor.device.type == "meta":
            continue
        storage = tensor.untyped_storage()
        yield ("storage", storage.data_ptr(), str(tensor.device)), storage.nbytes()


def module_parts(module: torch.nn.Module) -> Iterator[tuple[tuple, int]]:
    yield from tensor_parts(list(module.parameters()) + list(module.buffers()))
