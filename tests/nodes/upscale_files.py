"""Tiny upscale-model files in the layouts real ones use, written by the tests: ESRGAN in the original
`model.N` layout (.pth), Real-ESRGAN x4plus in BasicSR's layout (`conv_first`, `body.N.rdbK`, under
`params_ema`), Real-ESRGAN Compact (SRVGGNet), SwinIR saved from DataParallel (`module.` prefix).
The modules come from spandrel itself, so its forward pass is the reference."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from nodes.sd.upscale_model import import_spandrel

import_spandrel()
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402


def _seeded(build, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_esrgan(scale: int = 4, seed: int = 0) -> ESRGAN:
    return _seeded(lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale), seed)


def tiny_compact(scale: int = 2, seed: int = 0, *, pointwise: bool = False) -> Compact:
    """SRVGGNetCompact; pointwise=True keeps only the centre tap of every 3x3 kernel, so each output
    pixel depends on one input pixel (a model any tiling must reproduce exactly)."""
    model = _seeded(lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale), seed)
    if pointwise:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Conv2d):
                    centre = module.weight[:, :, 1, 1].clone()
                    module.weight.zero_()
                    module.weight[:, :, 1, 1] = centre * 3
    return model


def tiny_swinir(seed: int = 0) -> SwinIR:
    return _seeded(lambda: SwinIR(img_size=16, in_chans=3, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                                  mlp_ratio=2.0, upscale=2, upsampler="pixelshuffledirect"), seed)


def write_esrgan_original(path: Path, model: ESRGAN) -> Path:
    """The original ESRGAN `.pth`: a plain pickled dict of `model.N...` tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, path)
    return path


# original ESRGAN layout -> BasicSR (Real-ESRGAN) names, for a 4x model
_BASICSR_NAMES = [
    (r"^model\.0\.", "conv_first."),
    (r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3."),
    (r"^model\.3\.", "conv_up1."),
    (r"^model\.6\.", "conv_up2."),
    (r"^model\.8\.", "conv_hr."),
    (r"^model\.10\.", "conv_last."),
]


def write_realesrgan_x4plus(path: Path, model: ESRGAN) -> Path:
    """Real-ESRGAN's x4plus `.pth`: BasicSR names under `params_ema`."""
    blocks = sum(1 for k in model.state_dict() if re.match(r"model\.1\.sub\.\d+\.RDB1\.conv1\.0\.weight", k))
    renamed = {}
    for key, value in model.state_dict().items():
        new = re.sub(rf"^model\.1\.sub\.{blocks}\.", "conv_body.", key)
        for pattern, replacement in _BASICSR_NAMES:
            new = re.sub(pattern, replacement, new)
        assert new != key, key
        renamed[new] = value.clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": renamed}, path)
    return path


def write_safetensors(path: Path, model: torch.nn.Module, prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_pth(path: Path, model: torch.nn.Module, prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({prefix + k: v.clone() for k, v in model.state_dict().items()}, path)
    return path


@torch.inference_mode()
def reference_upscale(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """spandrel's module on the whole IMAGE [B, H, W, C] at once, clamped as spandrel's descriptor does."""
    out = torch.cat([model(image[i:i + 1].movedim(-1, 1)) for i in range(image.shape[0])])
    return out.clamp(0, 1).movedim(1, -1)
