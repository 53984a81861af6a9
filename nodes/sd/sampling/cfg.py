"""Classifier-free guidance over CONDITIONING lists: the denoiser the samplers call.

A CONDITIONING is a list of [cond_tensor [1, 77*k, C], options]. Recognised options (ComfyUI's keys):
  area            (h, w, y, x) in latent pixels (ConditioningSetArea stores pixel values // 8), or
                  ("percentage", h, w, y, x) as fractions of the latent size
  strength        multiplies the cond's weight (default 1)
  mask            [B?, H, W] weight map, resized bilinearly to the latent; `mask_strength` scales it;
                  `set_area_to_bounds` crops the evaluation to the mask's bounding box
  start_percent / end_percent   the cond is only active while sigma is inside that window
  control         a ControlProvider (see below); `control_apply_to_uncond` lends it to the negative
  cross_attn_controlnet   the ControlNets' context instead of the text (CLIPTextEncodeControlnet)
  gligen          ("position", GLIGEN, boxes): an after-self-attention UNet patch for this cond only
                  (nodes/sd/gligen.py); lent to a negative without one, as ComfyUI does
Several conds in one list are blended by weighted average, weight = mask * strength, with area
conds feathered over 8 latent pixels at edges that are not on the latent's border.

A MODEL's sampling options (nodes/sd/model_options.py) act here: pre-CFG hooks, a replacement CFG
function, post-CFG hooks, a UNet wrapper, the UNet-side patches handed to `model_fn`, and the inpainting
mask function. With no options the denoiser takes exactly the plain path."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ..model_options import (
    NO_OPTIONS, CFGStep, ModelCall, ModelOptions, ModelPatchError, PatchContext, PostCFGHook, SamplingRun,
)
from .model_sampling import ModelSampling

FEATHER = 8          # latent pixels of linear fade at the inner edges of an area cond
MAX_PAD_RATIO = 4    # cond/uncond token lengths are batched by repetition up to this ratio


@runtime_checkable
class ControlProvider(Protocol):
    """What a ControlNet (or a chain of them) offers the sampler; it is stored in a cond's options
    under "control" and called once per batched UNet evaluation that includes that cond.

    get_control(x_in, timesteps, context, sigma, batch_size) -> {"middle": [...], "output": [...]} | None
        x_in      the UNet input, already scaled: x / sqrt(sigma^2 + 1), shape [N, 4, h, w]
        timesteps the UNet timesteps (float, nearest table index), shape [N]
        context   the cross-attention context for the same rows, [N, 77*k, C]
        sigma     the k-diffusion sigmas of the rows, shape [N]; providers use it for their
                  start/end window (skip when sigma > sigma(start) or sigma < sigma(end))
        batch_size how many conditioning chunks are concatenated in x_in (N = batch_size * latent
                  batch), so a per-image hint can be tiled to N rows
      Returning None means 'no residuals at this sigma'; the UNet is then called with control=None.
    Optional: pre_run(model_sampling) before sampling (to turn percents into sigmas) and cleanup()
    after it; both are called when present."""

    def get_control(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                    sigma: torch.Tensor, batch_size: int) -> dict | None: ...


ModelFn = Callable[..., torch.Tensor]  # (x_in, timesteps, context, control=None[, patch_context=]) -> eps


@dataclass
class _Chunk:
    """One cond evaluated at the current x: the (cropped) input, its weight map and where it goes."""
    input_x: torch.Tensor
    mult: torch.Tensor
    context: torch.Tensor
    area: tuple | None
    control: Any
    # Per-cond additions (conds that have them are batched only with conds that share them, as ComfyUI):
    control_context: torch.Tensor | None = None  # cross_attn_controlnet: the ControlNets' own context
    unet_patches: Callable[[ModelOptions], ModelOptions] | None = None  # e.g. GLIGEN's boxes


class CFGDenoiser:
    """denoiser(x, sigma_batch) -> x0 = uncond + (cond - uncond) * cfg, both from one batched UNet pass
    (the uncond pass is skipped entirely when cfg == 1, unless an option or the sampler disables that).

    post_cfg_functions: post-CFG hooks of the running sampler itself (not of the MODEL), the same
    PostCFGHook shape as the MODEL's (fn(step: CFGStep) -> x0), run after them, as ComfyUI appends a
    sampler's sampler_post_cfg_function to the model's; the CFG++ samplers use one (with
    disable_cfg1_optimization) to read the unconditional prediction.

    `options`: the MODEL's sampling options; `run`: state shared by their hooks for this sampling run.
    `model_fn` is given `patch_context=` only when the options patch the UNet."""

    def __init__(self, model_fn: ModelFn, model_sampling: ModelSampling, positive: list, negative: list,
                 cfg: float, *, dtype: torch.dtype | None = None, options: ModelOptions = NO_OPTIONS,
                 run: SamplingRun | None = None):
        self.model_fn, self.ms, self.cfg, self.dtype = model_fn, model_sampling, float(cfg), dtype
        self.options = options
        self.run = run if run is not None else SamplingRun(model_sampling)
        self.conds = [_convert(positive), _convert(negative)]
        self._resolved_for = None
        self.model_calls = 0
        self.post_cfg_functions: list[PostCFGHook] = []
        self.disable_cfg1_optimization = False

    # -- preparation (ComfyUI's process_conds) ------------------------------------------------
    def _resolve(self, x: torch.Tensor):
        dims = tuple(x.shape[2:])
        if self._resolved_for == dims:
            return
        conds = [[_resolve_area_and_mask(c, dims, x.device) for c in lst] for lst in self.conds]
        for lst in conds:
            for c in lst:
                if "start_percent" in c:
                    c["sigma_start"] = self.ms.percent_to_sigma(c["start_percent"])
                if "end_percent" in c:
                    c["sigma_end"] = self.ms.percent_to_sigma(c["end_percent"])
        for k, lst in enumerate(conds):   # every area cond gets a same-area partner in the other lists
            for c in lst:
                for j, other in enumerate(conds):
                    if j != k:
                        _add_same_area_partner(other, c)
        for lst in conds:
            for c in lst:
                pre_run = getattr(c.get("control"), "pre_run", None)
                if pre_run is not None:
                    pre_run(self.ms)
        _lend_control_to_uncond([c for c in conds[0] if c.get("control_apply_to_uncond")], conds[1])
        _lend_control_to_uncond(conds[0], conds[1], key="gligen")  # ComfyUI lends GLIGEN boxes the same way
        self.prepared, self._resolved_for = conds, dims

    # -- evaluation --------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.options.empty:
            return self._denoise(x, sigma)
        try:
            return self._denoise(x, sigma)
        except (ModelPatchError, torch.OutOfMemoryError):  # OOM stays itself: the memory policy handles it
            raise
        except (RuntimeError, IndexError) as exc:  # torch's shape and kernel errors from inside the UNet
            raise ModelPatchError(", ".join(dict.fromkeys(self.options.sources)),
                                  f"sampling failed with this model patch applied: {exc}") from exc

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self._resolve(x)
        positive, negative = self.prepared
        options = self.options
        skip_uncond = math.isclose(self.cfg, 1.0) and not (options.disable_cfg1_optimization
                                                         or self.disable_cfg1_optimization)
        conds = (positive, None if skip_uncond else negative)
        cond, uncond = self.calc_cond_batch(list(conds), x, sigma)
        if not options.guides_cfg and not self.post_cfg_functions:
            return uncond + (cond - uncond) * self.cfg
        step = self.cfg_step(x, sigma, self.cfg, conds, cond, uncond)
        for hook in options.pre_cfg:
            step.cond_denoised, step.uncond_denoised = hook(step)
        return self.mix(step)

    # The pieces of ComfyUI's cfg_function, for guiders that combine more than two predictions.
    def cfg_step(self, x, sigma, cond_scale: float, conds: tuple, cond, uncond) -> CFGStep:
        return CFGStep(x, sigma, cond_scale, conds, cond, uncond, self.options, self.run, self.calc_cond_batch)

    def mix(self, step: CFGStep) -> torch.Tensor:
        """The options' CFG function, or uncond + (cond - uncond) * scale; then the post-CFG hooks."""
        if self.options.cfg_function is not None:
            step.denoised = self.options.cfg_function(step)
        else:
            step.denoised = step.uncond_denoised + (step.cond_denoised - step.uncond_denoised) * step.cond_scale
        return self.post_cfg(step)

    def post_cfg(self, step: CFGStep) -> torch.Tensor:
        """The MODEL's post-CFG hooks, then the running sampler's post_cfg_functions, on step.denoised."""
        for hook in self.options.post_cfg:
            step.denoised = hook(step)
        for hook in self.post_cfg_functions:
            step.denoised = hook(step)
        return step.denoised

    def calc_cond_batch(self, cond_lists: list, x: torch.Tensor, sigma: torch.Tensor,
                        options: ModelOptions | None = None) -> list[torch.Tensor]:
        """Weighted average prediction per cond list (None = skipped, returns zeros). `options` overrides
        the denoiser's own for this evaluation (an extra guidance pass with other patches)."""
        options = self.options if options is None else options
        out = [torch.zeros_like(x) for _ in cond_lists]
        counts = [torch.ones_like(x) * 1e-37 for _ in cond_lists]
        to_run = [(chunk, k) for k, lst in enumerate(cond_lists) if lst is not None for c in lst
                  if (chunk := _area_and_mult(c, x, sigma)) is not None]
        while to_run:
            first = to_run[0][0]
            batch = [to_run.pop(j) for j in reversed(range(len(to_run))) if _can_concat(to_run[j][0], first)]
            chunks = [chunk for chunk, _ in batch]
            n = len(chunks)
            call = ModelCall(torch.cat([c.input_x for c in chunks]), torch.cat([sigma] * n),
                             _concat_context([c.context for c in chunks]), None, tuple(k for _, k in batch))
            control_context = None if first.control_context is None else \
                _concat_context([c.control_context for c in chunks])
            batch_options = options if first.unet_patches is None else first.unet_patches(options)
            outputs = self._apply_model(call, chunks[-1].control, sigma, batch_options, control_context)
            for (chunk, k), pred in zip(batch, outputs.chunk(n)):
                o, cnt = out[k], counts[k]
                if chunk.area is not None:
                    h, w, y, x0 = chunk.area
                    o, cnt = o[:, :, y:y + h, x0:x0 + w], cnt[:, :, y:y + h, x0:x0 + w]
                o += pred * chunk.mult
                cnt += chunk.mult
        return [o / cnt for o, cnt in zip(out, counts)]

    def _apply_model(self, call: ModelCall, control, latent_sigma: torch.Tensor, options: ModelOptions,
                     control_context: torch.Tensor | None = None):
        """One batched model evaluation -> x0, through the options' UNet wrapper when there is one.
        `control_context`: what the ControlNets attend to instead of the text (CLIPTextEncodeControlnet)."""
        self.model_calls += 1
        if control is not None:
            call.control = control.get_control(self.ms.calculate_input(call.sigma, call.x),
                                               self.ms.timestep(call.sigma).float(),
                                               call.context if control_context is None else control_context,
                                               call.sigma, len(call.cond_or_uncond))
        pc = None
        if options.unet.active:
            pc = PatchContext(options.unet, latent_sigma, call.cond_or_uncond, self.run)
        if options.unet_wrapper is not None:
            return options.unet_wrapper(lambda c: self._evaluate(c, pc), call)
        return self._evaluate(call, pc)

    def _evaluate(self, call: ModelCall, pc: PatchContext | None) -> torch.Tensor:
        """The UNet in the model's parameterisation: out(calculate_input(x), t(sigma)) -> calculate_denoised."""
        sigma, x = call.sigma, call.x
        x_in = self.ms.calculate_input(sigma, x)
        timesteps = self.ms.timestep(sigma).float()
        dtype = self.dtype or x_in.dtype
        if pc is None:
            out = self.model_fn(x_in.to(dtype), timesteps, call.context.to(dtype), control=call.control)
        else:
            out = self.model_fn(x_in.to(dtype), timesteps, call.context.to(dtype), control=call.control,
                                patch_context=pc)
        return self.ms.calculate_denoised(sigma, out.float() if self.dtype else out, x)

    def cleanup(self):
        for lst in getattr(self, "prepared", ()):
            for c in lst:
                fn = getattr(c.get("control"), "cleanup", None)
                if fn is not None:
                    fn()


class InpaintDenoiser:
    """Keeps the unmasked region on the original latent (noise_mask: 1 = repaint, 0 = keep): before
    each call the kept region is replaced by latent + noise * sigma, and after it by the latent.
    A model option's `denoise_mask_function(sigma, mask, run)` may reshape the mask at each call."""

    def __init__(self, denoiser, model_sampling: ModelSampling, latent: torch.Tensor,
                 noise: torch.Tensor, mask: torch.Tensor, *, mask_function=None, run: SamplingRun | None = None):
        self.denoiser, self.ms, self.latent, self.noise, self.mask = denoiser, model_sampling, latent, noise, mask
        self.mask_function, self.run = mask_function, run if run is not None else SamplingRun(model_sampling)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mask = self.mask if self.mask_function is None else self.mask_function(sigma, self.mask, self.run)
        keep = 1.0 - mask
        x = x * mask + self.ms.noise_scaling(sigma, self.noise, self.latent) * keep
        return self.denoiser(x, sigma) * mask + self.latent * keep


# -- conditioning helpers ------------------------------------------------------------------------
def _convert(conditioning: list) -> list[dict]:
    out = []
    for tensor, options in conditioning:
        c = dict(options)
        c["cross_attn"] = tensor
        out.append(c)
    return out


def _resolve_area_and_mask(c: dict, dims: tuple, device) -> dict:
    c = dict(c)
    area = c.get("area")
    if area is not None and area[0] == "percentage":
        fractions = area[1:]
        c["area"] = tuple(max(1, round(fractions[d] * dims[d])) for d in range(2)) + \
            tuple(round(fractions[d + 2] * dims[d]) for d in range(2))
    mask = c.get("mask")
    if mask is not None:
        mask = mask.to(device)
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if tuple(mask.shape[1:]) != dims:
            mask = F.interpolate(mask.unsqueeze(1), size=dims, mode="bilinear", align_corners=False).squeeze(1)
        if c.get("set_area_to_bounds", False):
            c["area"] = _mask_bounds(mask)
        c["mask"] = mask
    return c


def _mask_bounds(mask: torch.Tensor) -> tuple:
    """(h, w, y, x) of the box around the mask's non-zero pixels, at least 8x8."""
    bounds = mask.abs().max(dim=0).values
    ys, xs = torch.nonzero(bounds, as_tuple=True)
    if len(ys) == 0:
        return (8, 8, 0, 0)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return (max(8, y1 - y0 + 1), max(8, x1 - x0 + 1), y0, x0)


def _area_and_mult(c: dict, x: torch.Tensor, sigma: torch.Tensor) -> _Chunk | None:
    """The cond's view of x and its weight at this sigma; None when outside its start/end window."""
    if "sigma_start" in c and sigma[0] > c["sigma_start"]:
        return None
    if "sigma_end" in c and sigma[0] < c["sigma_end"]:
        return None
    input_x, area = x, None
    if "area" in c:
        h, w, y, x0 = c["area"]
        h, w = min(x.shape[2] - y, h), min(x.shape[3] - x0, w)
        area = (h, w, y, x0)
        input_x = x[:, :, y:y + h, x0:x0 + w]
    if "mask" in c:
        mask = c["mask"][:input_x.shape[0]] * c.get("mask_strength", 1.0)
        if area is not None:
            mask = mask[:, area[2]:area[2] + area[0], area[3]:area[3] + area[1]]
        mask = mask.unsqueeze(1).repeat(input_x.shape[0] // mask.shape[0], input_x.shape[1], 1, 1)
    else:
        mask = torch.ones_like(input_x)
    mult = mask * c.get("strength", 1.0)
    if "mask" not in c and area is not None:
        _feather(mult, area, x.shape[2:])
    context = _rows(c["cross_attn"].to(x.device), x.shape[0])
    control_context = c.get("cross_attn_controlnet")
    if control_context is not None:
        control_context = _rows(control_context.to(x.device), x.shape[0])
    unet_patches = None
    if c.get("gligen") is not None:
        from ..gligen import gligen_unet_patches  # only GLIGEN conditionings need it
        unet_patches = gligen_unet_patches(c["gligen"], input_x.shape, input_x.device)
    return _Chunk(input_x, mult, context, area, c.get("control"), control_context, unet_patches)


def _rows(context: torch.Tensor, rows: int) -> torch.Tensor:
    """A [1, T, C] context repeated to `rows` batch rows."""
    if context.shape[0] < rows:
        context = context.repeat([math.ceil(rows / context.shape[0]), 1, 1])[:rows]
    return context


def _feather(mult: torch.Tensor, area: tuple, full: tuple):
    """Linear ramp over up to 8 px on every edge of the area that does not touch the latent border."""
    for d in range(2):
        size, offset = area[d], area[d + 2]
        ramp = min(FEATHER, mult.shape[2 + d] // 4)
        if offset != 0:
            for t in range(ramp):
                mult.narrow(d + 2, t, 1).mul_((1.0 / ramp) * (t + 1))
        if size + offset < full[d]:
            for t in range(ramp):
                mult.narrow(d + 2, size - 1 - t, 1).mul_((1.0 / ramp) * (t + 1))


def _can_concat(a: _Chunk, b: _Chunk) -> bool:
    if a.input_x.shape != b.input_x.shape or a.control is not b.control or a.unet_patches is not b.unet_patches:
        return False
    if (a.control_context is None) != (b.control_context is None):
        return False
    s1, s2 = a.context.shape, b.context.shape
    if s1 != s2:
        if s1[0] != s2[0] or s1[2] != s2[2]:
            return False
        if math.lcm(s1[1], s2[1]) // min(s1[1], s2[1]) > MAX_PAD_RATIO:
            return False
    return True


def _concat_context(contexts: list[torch.Tensor]) -> torch.Tensor:
    """Batch contexts of 77*k tokens by repeating each up to the LCM length (attention over repeated
    keys/values is unchanged)."""
    length = math.lcm(*[c.shape[1] for c in contexts])
    return torch.cat([c.repeat(1, length // c.shape[1], 1) if c.shape[1] < length else c for c in contexts])


def _add_same_area_partner(others: list[dict], c: dict):
    """ComfyUI's create_cond_with_same_area_if_none: an area cond whose area has no exact match in
    the other list gets one, carrying the text of the smallest cond there that contains its area."""
    if "area" not in c:
        return

    def inside(a, outer):
        return a[2] >= outer[2] and a[3] >= outer[3] and \
            a[0] + a[2] <= outer[0] + outer[2] and a[1] + a[3] <= outer[1] + outer[3]

    smallest = None
    for o in others:
        if "area" in o:
            if inside(c["area"], o["area"]):
                if smallest is None or "area" not in smallest or \
                        math.prod(smallest["area"][:2]) > math.prod(o["area"][:2]):
                    smallest = o
        elif smallest is None:
            smallest = o
    if smallest is None or ("area" in smallest and smallest["area"] == c["area"]):
        return
    partner = dict(c)
    partner["cross_attn"] = smallest["cross_attn"]
    others.append(partner)


def _lend_control_to_uncond(controlled: list[dict], negative: list[dict], key: str = "control"):
    """Old 'Apply ControlNet' semantics: whole-image negatives without a control borrow the positives'.
    key="gligen": the same for GLIGEN boxes, which ComfyUI lends from every positive."""
    controls = [c[key] for c in controlled if "area" not in c and c.get(key) is not None]
    if any("area" not in n and n.get(key) is not None for n in negative):
        return
    free = [k for k, n in enumerate(negative) if "area" not in n and n.get(key) is None]
    for j, control in enumerate(controls):
        if not free:
            return
        k = free[j % len(free)]
        negative[k] = dict(negative[k], **{key: control})
