"""CFG-side model options: the guidance patches behind RescaleCFG, APG, CFGZeroStar, CFGNorm, TCFG, Mahiro,
FreSca, Epsilon Scaling, Self-Attention Guidance, Perturbed-Attention Guidance and Differential Diffusion.

Each is a small callable with the hook signature of nodes/sd/model_options.py; the formulas follow the
papers (cited per class) and ComfyUI 0.3.64's arithmetic order, so results match its outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model_options import CFGStep, ModelPatchError, PatchContext, SamplingRun

Tensor = torch.Tensor

__all__ = [
    "RescaleCFG", "AdaptiveProjectedGuidance", "CFGZeroStar", "CFGNorm", "TangentialDampingCFG", "Mahiro",
    "FreSca", "EpsilonScaling", "PerturbedAttentionGuidance", "SelfAttentionGuidance", "DifferentialDiffusion",
    "frequency_scale", "gaussian_blur", "attention_with_scores", "identity_attention",
]


def _per_image(t: Tensor, ndim: int) -> Tensor:
    return t.reshape(t.shape[:1] + (1,) * (ndim - 1))


# ---------------------------------------------------------------------------------------------------
# CFG formulas

@dataclass(frozen=True)
class RescaleCFG:
    """CFG function. Lin et al. (2023) §3.4: do CFG on v-predictions and rescale the result to the positive's
    standard deviation, blended by `multiplier`: v = φ·v_cfg·std(v_pos)/std(v_cfg) + (1−φ)·v_cfg."""

    multiplier: float

    def __call__(self, step: CFGStep) -> Tensor:
        sigma = _per_image(step.sigma, step.x.ndim)
        x = step.x / (sigma * sigma + 1.0)  # the VP-scaled latent, in which v lives

        def to_v(denoised):
            return (x - denoised) * (sigma ** 2 + 1.0) ** 0.5 / sigma

        v_cond, v_uncond = to_v(step.cond_denoised), to_v(step.uncond_denoised)
        v_cfg = v_uncond + step.cond_scale * (v_cond - v_uncond)
        ratio = torch.std(v_cond, dim=(1, 2, 3), keepdim=True) / torch.std(v_cfg, dim=(1, 2, 3), keepdim=True)
        v_final = self.multiplier * (v_cfg * ratio) + (1.0 - self.multiplier) * v_cfg
        return x - v_final * sigma / (sigma * sigma + 1.0) ** 0.5


class AdaptiveProjectedGuidance:
    """Pre-CFG hook. Sadat et al. (2024), "Eliminating Oversaturation and Artifacts of High Guidance Scales
    in Diffusion Models": split the guidance cond−uncond into parts parallel and orthogonal to the positive,
    keep η of the parallel part, with an optional running average (momentum) and norm cap.

    The running average lives on the patch, reset when sigma goes up (a new run), as ComfyUI keeps it: a run
    split across KSamplerAdvanced stages continues its average."""

    def __init__(self, eta: float, norm_threshold: float, momentum: float):
        self.eta, self.norm_threshold, self.momentum = eta, norm_threshold, momentum
        self.running_average: Tensor | None = None
        self.previous_sigma: float | None = None

    def __call__(self, step: CFGStep) -> tuple[Tensor, Tensor]:
        cond, uncond = step.cond_denoised, step.uncond_denoised
        sigma = float(step.sigma[0])
        if self.previous_sigma is not None and sigma > self.previous_sigma:
            self.running_average = None
        self.previous_sigma = sigma
        guidance = cond - uncond
        if self.momentum != 0:
            if self.running_average is not None:
                guidance = self.momentum * self.running_average + guidance
            self.running_average = guidance
        if self.norm_threshold > 0:
            norm = guidance.norm(p=2, dim=[-1, -2, -3], keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        direction = cond / cond.norm(p=2, dim=[-1, -2, -3], keepdim=True).clamp_min(1e-12)
        parallel = (guidance * direction).sum(dim=[-1, -2, -3], keepdim=True) * direction
        modified = (guidance - parallel) + self.eta * parallel
        return (uncond + modified) + (cond - uncond) / step.cond_scale, uncond


@dataclass(frozen=True)
class CFGZeroStar:
    """Post-CFG hook. Fan et al. (2025), CFG-Zero*: scale the negative by the optimised
    s* = <ε_pos, ε_neg> / ‖ε_neg‖² (per image, on x − x0 predictions)."""

    def __call__(self, step: CFGStep) -> Tensor:
        positive = (step.x - step.cond_denoised).flatten(1)
        negative = (step.x - step.uncond_denoised).flatten(1)
        alpha = (positive * negative).sum(dim=1, keepdim=True) / ((negative ** 2).sum(dim=1, keepdim=True) + 1e-8)
        alpha = _per_image(alpha, step.x.ndim)
        uncond = step.uncond_denoised
        return step.denoised + uncond * (alpha - 1.0) + step.cond_scale * uncond * (1.0 - alpha)


@dataclass(frozen=True)
class CFGNorm:
    """Post-CFG hook: caps the per-pixel channel norm of the result at the positive prediction's, × strength."""

    strength: float

    def __call__(self, step: CFGStep) -> Tensor:
        norm_cond = torch.norm(step.cond_denoised, dim=1, keepdim=True)
        norm_result = torch.norm(step.denoised, dim=1, keepdim=True)
        scale = (norm_cond / (norm_result + 1e-8)).clamp(min=0.0, max=1.0)
        return step.denoised * scale * self.strength


@dataclass(frozen=True)
class TangentialDampingCFG:
    """Pre-CFG hook. Kwon et al. (2025), TCFG (arXiv 2503.18137): keep only the component of the negative
    score along the first right-singular vector of [negative; positive] scores (per image)."""

    def __call__(self, step: CFGStep) -> tuple[Tensor, Tensor]:
        cond, uncond = step.cond_denoised, step.uncond_denoised
        if step.conds[0] is None or step.conds[1] is None:
            return cond, uncond
        batch = cond.shape[0]
        positive = (step.x - cond).reshape(batch, 1, -1).float()
        negative = (step.x - uncond).reshape(batch, 1, -1).float()
        _, _, vh = torch.linalg.svd(torch.cat((negative, positive), dim=1), full_matrices=False)
        v1 = vh[:, 0:1, :]
        damped = ((negative @ v1.transpose(-2, -1)) * v1).reshape_as(uncond).to(uncond.dtype)
        return cond, step.x - damped


@dataclass(frozen=True)
class Mahiro:
    """Post-CFG hook (ComfyUI's "Mahiro"): blend the CFG result with the positive scaled by cfg ("leap"),
    weighted by the cosine similarity of the signed square roots of the scaled negative and the average of
    leap and result."""

    def __call__(self, step: CFGStep) -> Tensor:
        leap = step.cond_denoised * step.cond_scale
        negative_leap = step.uncond_denoised * step.cond_scale
        merge = (leap + step.denoised) / 2
        signed_root_neg = torch.sqrt(negative_leap.abs()) * negative_leap.sign()
        signed_root_merge = torch.sqrt(merge.abs()) * merge.sign()
        similarity = F.cosine_similarity(signed_root_neg, signed_root_merge).mean()
        weight = 2 * (similarity + 1)
        return (weight * step.denoised + (4 - weight) * leap) / 4


def frequency_scale(x: Tensor, scale_low: float, scale_high: float, cutoff: int) -> Tensor:
    """Scale the centred low-frequency box (±cutoff bins around DC on H and W) by scale_low and the rest by
    scale_high, in float32 through the 2-D FFT."""
    dtype = x.dtype
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.full(spectrum.shape, scale_high, device=x.device)
    centre = mask
    for dim in range(2, spectrum.ndim):
        mid = spectrum.shape[dim] // 2
        half = min(cutoff, mid)
        centre = centre.narrow(dim, mid - half, 2 * half)
    centre.fill_(scale_low)
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifftn(spectrum, dim=(-2, -1)).real.to(dtype)


@dataclass(frozen=True)
class FreSca:
    """Pre-CFG hook. Huang et al. (2025), FreSca: scale the guidance cond−uncond differently below and
    above a frequency cutoff."""

    scale_low: float
    scale_high: float
    freq_cutoff: int

    def __call__(self, step: CFGStep) -> tuple[Tensor, Tensor]:
        cond, uncond = step.cond_denoised, step.uncond_denoised
        if step.conds[0] is None or step.conds[1] is None:
            return cond, uncond
        guidance = frequency_scale(cond - uncond, self.scale_low, self.scale_high, self.freq_cutoff)
        return guidance + uncond, uncond


@dataclass(frozen=True)
class EpsilonScaling:
    """Post-CFG hook. Ning et al. (2023), "Elucidating the Exposure Bias in Diffusion Models" (uniform
    schedule): the predicted noise x − x0 is divided by the scaling factor."""

    scaling_factor: float

    def __call__(self, step: CFGStep) -> Tensor:
        factor = self.scaling_factor if self.scaling_factor != 0 else 1e-9
        return step.x - (step.x - step.denoised) / factor


# ---------------------------------------------------------------------------------------------------
# Guidance with extra UNet passes

MIDDLE_SELF_ATTENTION = ("middle", 0)


@dataclass(frozen=True)
class PerturbedAttentionGuidance:
    """Post-CFG hook. Ahn et al. (2024), PAG: predict the positive again with the middle block's
    self-attention map replaced by the identity (the output is the values), and push away from that:
    x0 += (pos − pos_perturbed)·scale. One extra UNet pass per step, by design."""

    scale: float
    source: str = "PerturbedAttentionGuidance"

    def __call__(self, step: CFGStep) -> Tensor:
        if self.scale == 0:
            return step.denoised
        options = step.options.with_attention_replacement("self", MIDDLE_SELF_ATTENTION, identity_attention,
                                                          source=self.source)
        (perturbed,) = step.predict([step.conds[0]], step.x, step.sigma, options)
        return step.denoised + (step.cond_denoised - perturbed) * self.scale


def identity_attention(q: Tensor, k: Tensor, v: Tensor, pc: PatchContext) -> Tensor:
    """PAG's perturbed self-attention: an identity attention map, so the output is the values."""
    return v


def attention_with_scores(q: Tensor, k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Plain softmax attention that also returns its map: (B, T, h·d) in, out (B, T, h·d) and
    scores (B·h, T, S) with the batch major, as ComfyUI's attention_basic lays them out."""
    b, t, inner = q.shape
    d = inner // heads
    q, k, v = (x.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d) for x in (q, k, v))
    scores = (torch.bmm(q, k.transpose(1, 2)) * d ** -0.5).softmax(dim=-1)
    out = torch.bmm(scores.to(v.dtype), v)
    return out.reshape(b, heads, -1, d).permute(0, 2, 1, 3).reshape(b, -1, heads * d), scores


class SelfAttentionGuidance:
    """Hong et al. (2023), "Improving Sample Quality of Diffusion Models Using Self-Attention Guidance".

    Two hooks: an attention replacement at the middle block's first self-attention records the negative's
    attention map (`record`), and a post-CFG hook (`guide`) blurs the negative prediction where that map is
    most attended, runs the negative again on the blurred latent and adds (blurred − that)·scale."""

    threshold = 1.0
    kernel_size = 9

    def __init__(self, scale: float, blur_sigma: float, source: str = "SelfAttentionGuidance"):
        self.scale, self.blur_sigma, self.source = scale, blur_sigma, source

    def record(self, q: Tensor, k: Tensor, v: Tensor, pc: PatchContext) -> Tensor:
        if 1 not in pc.cond_or_uncond:
            from .attention import attention
            return attention(q, k, v, pc.heads)
        out, scores = attention_with_scores(q, k, v, pc.heads)
        rows = pc.heads * (q.shape[0] // len(pc.cond_or_uncond))
        index = pc.cond_or_uncond.index(1)
        pc.run.scratch[id(self)] = scores[rows * index:rows * (index + 1)]
        return out

    def guide(self, step: CFGStep) -> Tensor:
        if min(step.denoised.shape[2:]) <= 4:  # too small for the blur's reflection padding; ComfyUI skips too
            return step.denoised
        scores = step.run.scratch.get(id(self))
        if scores is None:
            raise ModelPatchError(self.source, "no self-attention map was recorded in the UNet's middle block "
                                               "for the negative prompt; this model cannot use SAG")
        uncond = step.uncond_denoised
        degraded = self._blur_where_attended(uncond, scores)
        (again,) = step.predict([step.conds[1]], degraded + step.x - uncond, step.sigma)
        return step.denoised + (degraded - again) * self.scale

    def _blur_where_attended(self, x0: Tensor, scores: Tensor) -> Tensor:
        b, _, lh, lw = x0.shape
        _, queries, keys = scores.shape
        # mean over heads, then total attention each key token receives; > 1 means above average
        mask = scores.reshape(b, -1, queries, keys).mean(1).sum(1) > self.threshold
        rows, cols = _map_shape(keys, lh, lw, self.source)
        mask = F.interpolate(mask.reshape(b, rows, cols).unsqueeze(1).to(scores.dtype), (lh, lw))
        blurred = gaussian_blur(x0, self.kernel_size, self.blur_sigma)
        return blurred * mask + x0 * (1 - mask)


def _map_shape(tokens: int, height: int, width: int, source: str) -> tuple[int, int]:
    """The (rows, cols) grid of a token count: the divisor nearest sqrt(tokens·h/w), searched outwards."""
    guess = round(math.sqrt((height / width) * tokens))
    for offset in range(math.floor(math.sqrt(tokens) / 2)):
        for rows in (guess + offset, max(1, guess - offset)):
            if tokens % rows == 0:
                return rows, tokens // rows
    raise ModelPatchError(source, f"cannot lay {tokens} attention tokens out as a {height}x{width}-shaped grid")


def gaussian_blur(image: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Separable Gaussian (kernel_size taps, reflection padding), per channel."""
    half = (kernel_size - 1) * 0.5
    pdf = torch.exp(-0.5 * (torch.linspace(-half, half, steps=kernel_size) / sigma).pow(2))
    taps = (pdf / pdf.sum()).to(device=image.device, dtype=image.dtype)
    kernel = torch.mm(taps[:, None], taps[None, :]).expand(image.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(image, [pad] * 4, mode="reflect"), kernel, groups=image.shape[-3])


# ---------------------------------------------------------------------------------------------------
# Inpainting

@dataclass(frozen=True)
class DifferentialDiffusion:
    """Denoise-mask function. Levin & Fried (2023), "Differential Diffusion": a soft mask becomes a binary
    one that grows as sampling proceeds — a pixel is repainted while its mask value ≥ the fraction of the
    run (in timesteps) still to go; `strength` < 1 blends that with the soft mask."""

    strength: float = 1.0

    def __call__(self, sigma: Tensor, mask: Tensor, run: SamplingRun) -> Tensor:
        ms, sigmas = run.model_sampling, run.sigmas
        sigma_to = ms.sigma_min
        if sigmas[-1] > sigma_to:
            sigma_to = sigmas[-1]
        ts_from, ts_to = ms.timestep(sigmas[0]), ms.timestep(sigma_to)
        threshold = (ms.timestep(sigma[0]) - ts_to) / (ts_from - ts_to)
        binary = (mask >= threshold).to(mask.dtype)
        if self.strength and self.strength < 1:
            return self.strength * binary + (1 - self.strength) * mask
        return binary

