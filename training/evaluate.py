"""Sampling and judging during training: the project's own KSampler pipeline (nodes.sd.sampling.sample)
on in-memory models, and the deterministic judges of tests/demo/judge.py, so the numbers a training
run prints are the numbers the tests check."""
from __future__ import annotations

import numpy as np
import torch

from nodes.sd.sampling import ModelSamplingEPS, sample
from tests.demo.judge import edge_shape_mask, iou, judge

MODEL_SAMPLING = ModelSamplingEPS()


@torch.no_grad()
def encode_text(text_model, ids: torch.Tensor) -> torch.Tensor:
    """(N, 77) ids -> (N, 77, C) last hidden state (final layer norm applied), as CLIPTextEncode at CLIP skip -1."""
    return text_model(input_ids=ids).last_hidden_state.float()


@torch.no_grad()
def generate(unet, text_model, vae, captions: list[str], *, seed: int = 0, steps: int = 12, cfg: float = 5.0,
             sampler: str = "euler", scheduler: str = "normal", negative: str = "", control=None,
             batch: int = 64) -> np.ndarray:
    """uint8 (N, 64, 64, 3) images, one per caption, through the KSampler pipeline (one seed per batch,
    noise drawn per batch item as ComfyUI does)."""
    from training.common import tokenize

    dev = next(unet.parameters()).device
    out = []
    for start in range(0, len(captions), batch):
        part = captions[start:start + batch]
        cond = encode_text(text_model, tokenize(part).to(dev))
        uncond = encode_text(text_model, tokenize([negative]).to(dev))
        options = {} if control is None else {"control": control}
        latent = torch.zeros(len(part), 4, 8, 8, device=dev)

        def model_fn(x, timesteps, context, control=None):
            return unet(x, timesteps, context, control=control).float()

        z = sample(model_fn, MODEL_SAMPLING, latent, seed=seed + start, steps=steps, cfg=cfg, sampler_name=sampler,
                   scheduler=scheduler, positive=[[cond, options]], negative=[[uncond, dict(options)]],
                   batch_index=list(range(len(part))))
        pixels = vae.decode(z).clamp(-1, 1)
        out.append(((pixels + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def score(images: np.ndarray, specs) -> dict:
    """Colour and shape accuracy, mean fill (style), per image verdicts."""
    verdicts = [judge(im) for im in images]
    colour = float(np.mean([v.colour == s.colour for v, s in zip(verdicts, specs)]))
    shape = float(np.mean([v.shape == s.shape for v, s in zip(verdicts, specs)]))
    fill = float(np.mean([v.fill for v in verdicts]))
    return {"colour_acc": colour, "shape_acc": shape, "fill": fill, "verdicts": verdicts}


def control_iou(images: np.ndarray, edges: np.ndarray) -> list[float]:
    """IoU of each image's judged shape mask (empty where none is found) with its edge map's shape."""
    masks = [judge(im).mask for im in images]
    return [iou(m if m is not None else np.zeros(im.shape[:2], bool), edge_shape_mask(e))
            for m, im, e in zip(masks, images, edges)]
