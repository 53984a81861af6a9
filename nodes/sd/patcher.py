"""ModelPatcher: the MODEL socket type — a torch module plus the weight patches (LoRA …) and the sampling
options (nodes/sd/model_options.py) on it.

Clones share the module and its backups; only one clone's patches are written into the module at a time.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import uuid
import weakref
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from nodes.sd import device_memory
from nodes.sd.block_streaming import lowvram_requested, stream_blocks
from nodes.sd.lora import Adapter
from nodes.sd.model_options import NO_OPTIONS, ModelOptions
from nodes.sd.sampling.model_sampling import ModelSampling, ModelSamplingEPS
from nodes.sd.weight_casting import compute_dtype, weight_bytes

log = logging.getLogger(__name__)

__all__ = ["ModelPatcher", "PatcherBusyError"]

Device = torch.device | str


class PatcherBusyError(RuntimeError):
    """A clone asked to patch a module that another clone is using right now (inside `applied()`)."""


class _SharedState:
    """Per-module state every ModelPatcher over that module shares: originals of patched weights, what is applied."""

    def __init__(self):
        self.lock = threading.RLock()
        self.backup: dict[str, torch.Tensor] = {}   # weight key → original tensor (on the offload device)
        self.applied: tuple[str, torch.device] | None = None  # (patches_uuid, device) written into the module
        self.in_use = 0                               # depth of `applied()` blocks holding the current weights
        self.residency: _Residency | None = None      # the device memory manager's handle on the module


class _Residency:
    """What the device memory manager moves for one module (shared by all its patchers): loading puts the
    module on the device (patches are written by patch_model after), offloading moves it back to the
    offload device and restores the originals there."""

    def __init__(self, module: nn.Module, state: _SharedState, offload_device: torch.device):
        self._module = weakref.ref(module)  # the state lives as long as the module: no strong cycle
        self._state = state
        self.offload_device = offload_device

    @property
    def key(self) -> object:
        return self

    def weight_bytes(self) -> int:
        module = self._module()
        return weight_bytes(module) if module is not None else 0

    def load_to(self, device) -> None:
        module = self._module()
        if module is not None:
            with torch.inference_mode(False), torch.no_grad():
                module.to(device)

    def offload(self) -> None:
        module = self._module()
        if module is None:
            return
        with torch.inference_mode(False), torch.no_grad():
            module.to(self.offload_device)
            _restore_originals(module, self._state)  # the backups live on the offload device: no copies

    def __repr__(self) -> str:
        module = self._module()
        return f"<{type(module).__name__ if module is not None else 'dead'} weights>"


def _restore_originals(module: nn.Module, state: _SharedState) -> None:
    """Put every backed-up original weight back (same storage, same bits when on the same device)."""
    if state.backup:
        weights = dict(module.state_dict(keep_vars=True))
        for key, original in state.backup.items():
            param = weights[key]
            param.data = original if original.device == param.device else original.to(param.device)
        state.backup.clear()
    state.applied = None


# Keyed by the module itself, so even independently created patchers of one module coordinate.
_STATES: "weakref.WeakKeyDictionary[nn.Module, _SharedState]" = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _state_for(module: nn.Module) -> _SharedState:
    with _STATES_LOCK:
        state = _STATES.get(module)
        if state is None:
            state = _STATES[module] = _SharedState()
        return state


# What an SD1.x checkpoint samples as unless a ModelSampling* node says otherwise; stateless, shared.
SD1_MODEL_SAMPLING = ModelSamplingEPS()


class ModelPatcher:
    """A module with pending weight patches. `patch_model()` merges them in; `unpatch_model()` restores the originals.

    `patches[key]` is a list of (strength, adapter) applied in order: W' = W + Σ strength·ΔW, computed in fp32
    and cast back to the weight's dtype. Patching is lazy and idempotent: the patch set written into the module
    is remembered (on state shared by all clones), so patching the same clone again costs nothing, and patching
    another clone first restores the originals.

    `options` (ModelOptions, immutable) holds what changes sampling without touching weights; patch nodes
    return `model.with_options(model.options.with_...(...))`.
    """

    def __init__(self, model: nn.Module, load_device: Device = "cpu", offload_device: Device = "cpu"):
        self.model = model
        self.load_device = torch.device(load_device)
        self.offload_device = torch.device(offload_device)
        self.patches: dict[str, list[tuple[float, Adapter]]] = {}
        self.patches_uuid = uuid.uuid4().hex
        self.options: ModelOptions = NO_OPTIONS
        self._state = _state_for(model)

    # -- cloning and patch bookkeeping --------------------------------------------------------------

    def clone(self) -> ModelPatcher:
        """Same module and backups; own copies of the patch lists and model_options."""
        n = ModelPatcher.__new__(ModelPatcher)
        n.model, n.load_device, n.offload_device, n._state = self.model, self.load_device, self.offload_device, self._state
        n.patches = {k: list(v) for k, v in self.patches.items()}
        n.patches_uuid = self.patches_uuid  # same patches ⇒ same merged weights: no re-merge when switching
        n.options = self.options  # immutable: sharing it is copying it
        return n

    def with_options(self, options: ModelOptions) -> ModelPatcher:
        """A clone that samples with `options` (same weights and weight patches)."""
        n = self.clone()
        n.options = options
        return n

    @property
    def model_sampling(self) -> ModelSampling:
        """The schedule and parameterisation to sample with: a ModelSampling* node's choice, else SD1's."""
        return self.options.model_sampling or SD1_MODEL_SAMPLING

    def is_clone(self, other: Any) -> bool:
        return isinstance(other, ModelPatcher) and other.model is self.model

    @property
    def backup(self) -> dict[str, torch.Tensor]:
        return self._state.backup

    def _weights(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict(keep_vars=True))

    def _tensor(self, key: str) -> torch.Tensor:
        """One parameter or buffer by name, without listing them all."""
        try:
            return self.model.get_parameter(key)
        except AttributeError:
            return self.model.get_buffer(key)

    def fitting_keys(self, patches: Mapping[str, Adapter]) -> set[str]:
        """The keys of `patches` that name a weight of this module whose size matches the adapter's ΔW."""
        weights = self._weights()
        fit = set()
        for key, adapter in patches.items():
            w = weights.get(key)
            if w is None:
                continue
            if adapter.delta_numel() != w.numel():
                log.debug("patch for %s does not fit: ΔW has %d values, the weight %s", key,
                            adapter.delta_numel(), tuple(w.shape))
                continue
            fit.add(key)
        return fit

    def add_patches(self, patches: Mapping[str, Adapter], strength: float = 1.0) -> set[str]:
        """Append (strength, adapter) to each key's list (so chained LoRAs stack in order); return the keys used.

        Keys that are not weights of this module, or whose ΔW has the wrong size, are skipped.
        """
        used = self.fitting_keys(patches)
        for key in patches:
            if key in used:
                self.patches.setdefault(key, []).append((float(strength), patches[key]))
        if used:
            self.patches_uuid = uuid.uuid4().hex
        return used

    def patched_keys(self) -> set[str]:
        """Keys with at least one patch that changes the weight (non-zero strength, or a merge that scales
        the weight itself) — the weights `patch_model` will change."""
        return {k for k, plist in self.patches.items() if any(a.changes_weight(s) for s, a in plist)}

    def weight(self, key: str, device: Device | None = None) -> torch.Tensor:
        """This clone's weight `key` (the original with this clone's patches) in fp32, computed aside:
        the module is not touched, whichever clone's patches it holds. For merges and for saving."""
        state = self._state
        with state.lock, torch.inference_mode(False), torch.no_grad():
            original = state.backup.get(key)
            if original is None:
                original = self._tensor(key).data
            device = torch.device(device) if device is not None else original.device
            if not any(a.changes_weight(s) for s, a in self.patches.get(key, ())):
                return original.to(device=device, dtype=torch.float32, copy=True)
            return self.patched_weight(key, original.to(torch.float32), device)

    # -- writing weights -----------------------------------------------------------------------------

    def patched_weight(self, key: str, original: torch.Tensor, device: Device | None = None) -> torch.Tensor:
        """original + Σ strength·ΔW in fp32 on `device`. Patches that change nothing (zero strength) are skipped.

        The result is cast back to the original dtype, except where the original is kept narrower than
        the module computes (lean weights: fp16 kept, fp32 computed): then it stays in the compute dtype,
        so a patched model computes exactly what it computes with all weights in fp32, as ComfyUI does.
        """
        device = torch.device(device) if device is not None else original.device
        w = original.to(device=device, dtype=torch.float32, copy=True)
        for strength, adapter in self.patches.get(key, ()):
            if adapter.changes_weight(strength):
                try:
                    adapter.add_to(w, strength)
                except (ValueError, RuntimeError) as e:
                    raise ValueError(f"cannot patch {key}: {e}") from e
        return w.to(self.patched_dtype(original.dtype))

    def patched_dtype(self, original: torch.dtype) -> torch.dtype:
        """The dtype a patched weight is kept (and saved) in: the original's, or the compute dtype when the
        original is kept narrower (lean fp16 weights computing in fp32)."""
        compute = compute_dtype(self.model)
        return compute if original.itemsize < compute.itemsize else original

    def patch_model(self, device: Device | None = None) -> nn.Module:
        """Write this clone's patched weights into the module on `device` (default: load_device); return the module.

        A no-op when this patch set is already applied there. Otherwise the originals are restored first (whichever
        clone patched them), then each patched weight is backed up once (on the offload device) and replaced.
        """
        device = torch.device(device) if device is not None else self.load_device
        state = self._state
        # Merged weights must be ordinary tensors even when a sampler calls this under inference_mode.
        with state.lock, torch.inference_mode(False), torch.no_grad():
            token = (self.patches_uuid, device)
            if state.applied == token:
                return self.model
            if state.in_use:
                raise PatcherBusyError("this model is being used by another clone; cannot switch its patches now")
            self._restore()
            weights = self._weights()
            for key in sorted(self.patched_keys()):
                param = weights[key]
                original = param.data
                patched = self.patched_weight(key, original, device)
                if original.device != self.offload_device:
                    original = original.to(self.offload_device, copy=True)
                state.backup[key] = original
                param.data = patched
            self.model.to(device)
            state.applied = token
            return self.model

    def unpatch_model(self, device_to: Device | None = None) -> nn.Module:
        """Restore every patched weight bit-for-bit (whichever clone patched it); optionally move the module."""
        with self._state.lock, torch.inference_mode(False), torch.no_grad():
            if self._state.in_use:
                raise PatcherBusyError("cannot unpatch a model while it is in use")
            self._restore()
            if device_to is not None:
                self.model.to(device_to)
            return self.model

    def _restore(self) -> None:
        _restore_originals(self.model, self._state)

    @contextlib.contextmanager
    def applied(self, device: Device | None = None, working: int = 0) -> Iterator[nn.Module]:
        """`with patcher.applied(device) as module:` — the module carries this clone's patches for the whole block.

        Weights stay patched afterwards (the next use of the same clone is free); another clone that tries to
        switch patches while the block runs gets PatcherBusyError (same thread) or waits (other threads).
        On a GPU the block runs under the device memory manager: `working` bytes (the call's activations)
        and the weights must fit its budget; idle models are offloaded to make room, never this one.
        """
        device = torch.device(device) if device is not None else self.load_device
        state = self._state
        with state.lock:
            if self._streams_on(device, working):  # patched where the weights stay, then streamed
                placement = stream_blocks(self.patch_model(self.offload_device), device)
            else:
                placement = self._resident_on(device, working)
            with placement as streamed:
                module = streamed if streamed is not None else self.patch_model(device)
                state.in_use += 1
                try:
                    yield module
                finally:
                    state.in_use -= 1

    def _streams_on(self, device: torch.device, working: int) -> bool:
        """Low-VRAM mode for this call: asked for (NODEGRAPH_LOWVRAM), or the weights and the call's working
        memory exceed the device budget on their own. The module then stays on the offload device and
        block_streaming copies one block at a time onto `device`."""
        manager = device_memory.manager_for(device)
        if manager is None:
            return False
        if not lowvram_requested() and self.model_size() + working <= manager.budget:
            return False
        if self._state.residency is not None:
            manager.drop(self._state.residency)  # resident from an earlier call: back to the offload device
        log.info("streaming %s block by block onto %s (low-VRAM mode)", type(self.model).__name__, device)
        return True

    def _resident_on(self, device: torch.device, working: int):
        """Room for the weights (and `working` bytes) on a GPU, from the device memory manager."""
        manager = device_memory.manager_for(device)
        if manager is None:
            return contextlib.nullcontext()
        state = self._state
        if state.residency is None:
            state.residency = _Residency(self.model, state, self.offload_device)
        return manager.use(state.residency, working=working)

    # -- facts for the cache and the memory manager ---------------------------------------------------

    def is_applied(self, device: Device | None = None) -> bool:
        device = torch.device(device) if device is not None else self.load_device
        return self._state.applied == (self.patches_uuid, device)

    def model_size(self) -> int:
        """Bytes of the module's parameters and buffers (shared by all clones; count it once per module)."""
        return weight_bytes(self.model)

    def memory_parts(self):
        """For the engine's cache: the shared weights (one identity per storage, so every clone of
        a checkpoint counts them once) plus this clone's own adapters."""
        from .memory import module_parts, tensor_parts
        yield from module_parts(self.model)
        adapters = {id(a): a for plist in self.patches.values() for _, a in plist}
        yield from tensor_parts(t for a in adapters.values() for t in vars(a).values() if isinstance(t, torch.Tensor))
        for adapter in adapters.values():  # a merge holds another model's weights, not tensors of its own
            if hasattr(adapter, "memory_parts"):
                yield from adapter.memory_parts()

    def patches_size(self) -> int:
        """Bytes held by this clone's adapters (the extra memory a LoRA clone costs)."""
        adapters = {id(a): a for plist in self.patches.values() for _, a in plist}
        return sum(a.nbytes() for a in adapters.values())

    def model_dtype(self) -> torch.dtype:
        """The dtype the model computes in (its inputs' dtype), whatever dtype its weights are kept in."""
        return compute_dtype(self.model)

    def __repr__(self) -> str:
        return (f"ModelPatcher({type(self.model).__name__}, {len(self.patches)} patched keys, "
                f"load={self.load_device}, offload={self.offload_device})")
