"""Low-VRAM mode: a model whose weights do not fit the device budget stays in CPU memory and each of its
blocks is copied onto the device just for its own forward call, then dropped again.

Only one block's weights (plus the few parameters held by the root module itself) are on the device at a
time, so SD1.5's UNet (1.7 GB in fp16, its largest block ~0.1 GB) runs on a 4 GB card next to its
activations, at the price of one host-to-device copy of every weight per call. The CPU tensors are
never replaced or moved, only shadowed: leaving the block restores them, bit for bit, even when its
forward raises.

`NODEGRAPH_LOWVRAM=1` (`--lowvram`) streams every model on a GPU; without it the patcher streams only a
model that cannot fit its budget (see ModelPatcher.applied).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

import torch
from torch import nn

from nodes.sd.device import env_flag

log = logging.getLogger(__name__)

LOWVRAM_ENV = "NODEGRAPH_LOWVRAM"

Transfer = Callable[[torch.Tensor, torch.device], torch.Tensor]


def lowvram_requested() -> bool:
    return env_flag(LOWVRAM_ENV, False)


def streaming_units(root: nn.Module) -> list[nn.Module]:
    """The blocks copied one at a time: the root's children, with a ModuleList (the UNet's input_blocks and
    output_blocks, a transformer's layers) standing for its elements."""
    units = []
    for child in root.children():
        if isinstance(child, nn.ModuleList):
            units.extend(unit for element in child for unit in ([element] if not isinstance(element, nn.ModuleList)
                                                                else streaming_units(element)))
        else:
            units.append(child)
    return units


def _copy_to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device, non_blocking=True)


class _Shadow:
    """Swaps a module's own tensors (not its children's) for device copies and back."""

    def __init__(self, modules: list[nn.Module], device: torch.device, transfer: Transfer):
        self.modules, self.device, self.transfer = modules, device, transfer
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # (tensor object, its CPU data)

    def enter(self) -> None:
        if self.saved:  # re-entered (a block called twice in one forward): already on the device
            return
        for module in self.modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                self.saved.append((tensor, tensor.data))
                tensor.data = self.transfer(tensor.data, self.device)

    def leave(self) -> None:
        for tensor, data in self.saved:
            tensor.data = data
        self.saved.clear()


@contextlib.contextmanager
def stream_blocks(root: nn.Module, device, transfer: Transfer = _copy_to) -> Iterator[nn.Module]:
    """`with stream_blocks(unet, "cuda") as unet:` — calls run on `device` with one block resident at a time.

    `transfer(tensor, device)` makes the device copy (a test passes one that records what is resident)."""
    device = torch.device(device)
    units = streaming_units(root)
    in_units = {id(p) for unit in units for p in list(unit.parameters()) + list(unit.buffers())}
    # Parameters the root holds outside any unit (a few, e.g. a positional table) stay for the whole block.
    loose = [m for m in root.modules() if m is not root and not any(m is u or _is_inside(m, u) for u in units)]
    resident = _Shadow([], device, transfer)
    for tensor in list(root.parameters(recurse=False)) + list(root.buffers(recurse=False)) + \
            [t for m in loose for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))]:
        if id(tensor) not in in_units:
            resident.saved.append((tensor, tensor.data))
            tensor.data = transfer(tensor.data, device)
    handles = []
    try:
        for unit in units:
            shadow = _Shadow([unit], device, transfer)
            handles.append(unit.register_forward_pre_hook(lambda _m, _a, s=shadow: s.enter()))
            handles.append(unit.register_forward_hook(lambda _m, _a, _o, s=shadow: s.leave(), always_call=True))
        log.debug("streaming %d blocks of %s onto %s", len(units), type(root).__name__, device)
        yield root
    finally:
        for handle in handles:
            handle.remove()
        resident.leave()


def _is_inside(module: nn.Module, unit: nn.Module) -> bool:
    return any(module is m for m in unit.modules())
