"""Tensor operations on IMAGE ([B, H, W, C] in 0..1), MASK ([B, H, W]) and latents ([B, C, h, w]):
resizing with ComfyUI's method names, centre cropping, and PIL conversion."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
LATENT_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]


def center_crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B, C, H, W] in the middle to the aspect ratio of width x height."""
    old_w, old_h = samples.shape[3], samples.shape[2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples[:, :, y:old_h - y, x:old_w - x]


def upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize [B, C, H, W] to (height, width) with one of ComfyUI's method names."""
    if crop == "center":
        samples = center_crop_to_aspect(samples, width, height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    return F.interpolate(samples, size=(height, width), mode=method)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    out = []
    for item in samples:  # [C, H, W]
        array = np.clip(item.movedim(0, -1).float().cpu().numpy() * 255.0, 0, 255).astype(np.uint8)
        mode = "L" if array.shape[-1] == 1 else None
        pil = Image.fromarray(array[..., 0] if mode else array, mode=mode)
        resized = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        if resized.ndim == 2:
            resized = resized[..., None]
        out.append(torch.from_numpy(resized).movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors ([N, C]), magnitudes interpolated linearly."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    dot = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    lerp = (1 - t) * ua + t * ub
    slerp = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / so.clamp_min(1e-8)
    direction = torch.where(so.abs() < 1e-4, lerp, slerp)
    return direction * ((1 - t) * na + t * nb)


def _bislerp_axis(x: torch.Tensor, new_len: int, axis: int) -> torch.Tensor:
    """Resize one spatial axis of [B, C, H, W] by slerp between neighbouring samples."""
    x = x.movedim(axis, -1)  # [..., L]
    length = x.shape[-1]
    pos = (torch.arange(new_len, dtype=torch.float32) + 0.5) * length / new_len - 0.5
    pos = pos.clamp(0, length - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=length - 1)
    t = (pos - lo.float()).to(x.dtype)
    a, b = x[..., lo], x[..., hi]  # [B, C, H', new_len]
    a2, b2 = a.movedim(1, -1).reshape(-1, x.shape[1]), b.movedim(1, -1).reshape(-1, x.shape[1])
    t2 = t.expand(a.shape[0], a.shape[2], new_len).reshape(-1, 1)
    mixed = _slerp(a2, b2, t2).reshape(a.shape[0], a.shape[2], new_len, x.shape[1]).movedim(-1, 1)
    return mixed.movedim(-1, axis)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear-style resize that slerps latent vectors instead of averaging them (keeps their norm)."""
    samples = samples.float()
    return _bislerp_axis(_bislerp_axis(samples, width, 3), height, 2)


def image_to_bchw(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(-1, 1)


def bchw_to_image(samples: torch.Tensor) -> torch.Tensor:
    return samples.movedim(1, -1)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One [H, W, C] image in 0..1 to a PIL image (RGB, RGBA or L)."""
    array = np.clip(255.0 * image.float().cpu().numpy(), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image to [H, W, 3] float32 in 0..1."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
