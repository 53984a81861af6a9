"""Opt-in `torch.compile` of the UNet (`--compile` / NODEGRAPH_COMPILE=1): inductor with frozen weights.

Measured on full-size SD1.5 (docs/performance-history.md, first pass): 0.85× the eager UNet call at 256²
and 0.95× at 512² on 2 CPU cores, after a first call that compiles for 1–2 minutes. Without freezing,
inductor was 1.29× slower than eager; freezing folds the weights into the compiled graph as constants
(prepacked for oneDNN), which is where the gain is — and why it stays opt-in:
- each model, weight-patch set (LoRA strengths), latent shape and batch compiles again (1–2 minutes);
  frozen graphs are not reused from inductor's disk cache;
- the folded weights are fp32 copies, so the lean weights' memory saving is gone while compiled.
Only the plain UNet call is compiled: with ControlNet residuals or model-option patches (FreeU, SAG, ...)
the call runs eagerly. A compile that fails falls back to eager for that model, with a warning.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import torch

from nodes.sd.device import env_flag

log = logging.getLogger(__name__)

COMPILE_ENV = "NODEGRAPH_COMPILE"


def compile_requested() -> bool:
    return env_flag(COMPILE_ENV, False)


def _inductor_frozen(module: torch.nn.Module) -> Callable[..., Any]:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(module, dynamic=False)


# The compiled form lives on the module itself (outside nn.Module's registry, so it is no submodule): it
# goes when the model goes, and a new patch set replaces it. `None` marks a module whose compile failed.
_ATTR = "_nodegraph_compiled"
_LOCK = threading.Lock()


def unet_caller(unet: torch.nn.Module, patches_uuid: str,
                compile_fn: Callable[[torch.nn.Module], Callable[..., Any]] = _inductor_frozen) -> Callable[..., Any]:
    """`call(x, timesteps, context, control=None, patch_context=None)`: the UNet, compiled for the plain call
    when compiling was asked for, else `unet` itself."""
    if not compile_requested() or any(m._forward_pre_hooks for m in unet.modules()):
        return unet  # not asked for, or streamed block by block (low-VRAM): weights must stay live

    def eager(x, timesteps, context, control=None, patch_context=None):
        return unet(x, timesteps, context, control=control, patch_context=patch_context)

    def call(x, timesteps, context, control=None, patch_context=None):
        plain = control is None and (patch_context is None or not patch_context.patches.active)
        held = unet.__dict__.get(_ATTR, ())
        if not plain or held is None:
            return eager(x, timesteps, context, control, patch_context)
        with _LOCK:
            held = unet.__dict__.get(_ATTR, ())
            if not held or held[0] != patches_uuid:  # first use, or other LoRA strengths: their weights differ
                log.warning("compiling the UNet with torch.compile (--compile): the first step of each model, "
                            "LoRA set and image size takes one to two minutes on a CPU")
                held = (patches_uuid, compile_fn(unet))
                object.__setattr__(unet, _ATTR, held)
        try:
            return held[1](x, timesteps, context)
        except Exception as exc:  # a backend without a compiler, an unsupported op: run as before
            log.warning("torch.compile failed (%s: %s); the UNet runs without it", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")
            object.__setattr__(unet, _ATTR, None)
            return eager(x, timesteps, context, control, patch_context)

    return call
