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


# -- batches, compositing, kernels (shared by the latent, image and mask families) ----------------

def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The first `batch_size` items, repeating the batch when it is shorter (ComfyUI's rule)."""
    if tensor.shape[0] > batch_size:
        return tensor[:batch_size]
    if tensor.shape[0] < batch_size:
        repeats = -(-batch_size // tensor.shape[0])
        return tensor.repeat((repeats,) + (1,) * (tensor.ndim - 1))[:batch_size]
    return tensor


def masks_bchw(mask: torch.Tensor) -> torch.Tensor:
    """A MASK ([H, W], [B, H, W] or [B, 1, H, W]) as [B, 1, H, W] float."""
    return mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """Paste `source` into `destination` ([B, C, H, W], changed in place and returned) at pixel
    (x, y) — latent pixels times `multiplier` — blending by `mask` (resized bilinearly to the source,
    1 = source). Parts of the source outside the destination are cut off."""
    source = source.to(destination.device, destination.dtype)
    if resize_source:
        source = F.interpolate(source, size=destination.shape[-2:], mode="bilinear")
    source = repeat_to_batch_size(source, destination.shape[0])
    x = max(-source.shape[-1] * multiplier, min(x, destination.shape[-1] * multiplier))
    y = max(-source.shape[-2] * multiplier, min(y, destination.shape[-2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[-1], top + source.shape[-2]
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = F.interpolate(masks_bchw(mask).to(destination.device), size=source.shape[-2:], mode="bilinear")
        mask = repeat_to_batch_size(mask, source.shape[0])
    visible_w = destination.shape[-1] - left + min(0, x)
    visible_h = destination.shape[-2] - top + min(0, y)
    mask = mask[:, :, :visible_h, :visible_w]
    region = destination[..., top:bottom, left:right]
    destination[..., top:bottom, left:right] = mask * source[..., :visible_h, :visible_w] + (1 - mask) * region
    return destination


def gaussian_kernel(size: int, sigma: float, device=None) -> torch.Tensor:
    """ComfyUI's blur kernel: a normalised Gaussian over a size x size grid whose coordinates run
    from -1 to 1 (not pixels), so sigma is in units of the kernel's half-width."""
    axis = torch.linspace(-1, 1, size, device=device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    kernel = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def convolve_reflect(samples: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each channel of [B, C, H, W] convolved with one odd square kernel, borders reflected."""
    radius = kernel.shape[-1] // 2
    channels = samples.shape[1]
    padded = F.pad(samples, (radius, radius, radius, radius), mode="reflect")
    weight = kernel.to(samples.dtype).expand(channels, 1, *kernel.shape)
    return F.conv2d(padded, weight, groups=channels)


def match_alpha(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make two IMAGEs' channel counts agree: the source's extra channels (alpha) are dropped, and an
    RGB source gets an opaque alpha channel when the destination has one. (ComfyUI pads the
    destination in that second case, which leaves the counts different; the intent is kept here.)"""
    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        source = F.pad(source, (0, destination.shape[-1] - source.shape[-1]), value=1.0)
    return destination, source
