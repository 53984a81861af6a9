"""Latent batch nodes: take items from a batch, repeat it, join two batches, choose how the items'
noise is seeded, and regroup lists of latents into batches of a given size.

A LATENT may carry `batch_index` (which item of the original batch each one is): the samplers draw
each item's noise as that item of the original batch would get it (ComfyUI's rule), so an item taken
from a batch is sampled exactly as it was inside it."""
from __future__ import annotations


import torch
import torch.nn.functional as F

from nodegraph import Combo, Input, Int, Node, Output

from .image_ops import repeat_to_batch_size, upscale


def _batch_index(latent: dict) -> list[int]:
    return list(latent.get("batch_index", range(latent["samples"].shape[0])))


class LatentFromBatch(Node):
    """Items batch_index .. batch_index + length - 1 of a batch (clamped to the batch)."""
    display_name = "Latent From Batch"
    category = "latent/batch"
    inputs = (Input("samples", "LATENT"), Int("batch_index", 0, min=0, max=63), Int("length", 1, min=1, max=64))
    outputs = (Output("LATENT"),)

    def run(self, samples, batch_index, length):
        s = samples["samples"]
        start = min(s.shape[0] - 1, batch_index)
        length = min(s.shape[0] - start, length)
        out = {**samples, "samples": s[start:start + length].clone()}
        if "noise_mask" in samples:
            masks = samples["noise_mask"]
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                masks = repeat_to_batch_size(masks, s.shape[0])
                out["noise_mask"] = masks[start:start + length].clone()
        out["batch_index"] = _batch_index(samples)[start:start + length]
        return (out,)


class RepeatLatentBatch(Node):
    display_name = "Repeat Latent Batch"
    category = "latent/batch"
    inputs = (Input("samples", "LATENT"), Int("amount", 1, min=1, max=64))
    outputs = (Output("LATENT"),)

    def run(self, samples, amount):
        s = samples["samples"]
        out = {**samples, "samples": s.repeat((amount,) + (1,) * (s.ndim - 1))}
        masks = samples.get("noise_mask")
        if masks is not None and masks.shape[0] > 1:
            masks = repeat_to_batch_size(masks, s.shape[0])
            out["noise_mask"] = masks.repeat((amount,) + (1,) * (masks.ndim - 1))
        if "batch_index" in samples:
            # Repeats get new indices past the original ones, so each repeat draws other noise.
            index = samples["batch_index"]
            offset = max(index) - min(index) + 1
            out["batch_index"] = index + [i + k * offset for k in range(1, amount) for i in index]
        return (out,)


class LatentBatch(Node):
    """samples2 appended to samples1 (resized bilinearly, centre crop, when its size differs)."""
    category = "latent/batch"
    inputs = (Input("samples1", "LATENT"), Input("samples2", "LATENT"))
    outputs = (Output("LATENT"),)

    def run(self, samples1, samples2):
        a, b = samples1["samples"], samples2["samples"]
        if a.shape[1:] != b.shape[1:]:
            b = upscale(b, a.shape[-1], a.shape[-2], "bilinear", "center")
        return ({**samples1, "samples": torch.cat((a, b.to(a))), "batch_index": _batch_index(samples1) + _batch_index(samples2)},)


class LatentBatchSeedBehavior(Node):
    """fixed: every item gets the first item's noise; random: each its own (the batch index is dropped)."""
    category = "latent/advanced"
    inputs = (Input("samples", "LATENT"), Combo("seed_behavior", ["random", "fixed"], default="fixed"))
    outputs = (Output("LATENT"),)

    def run(self, samples, seed_behavior):
        out = dict(samples)
        if seed_behavior == "random":
            out.pop("batch_index", None)
        else:
            first = samples.get("batch_index", [0])[0]
            out["batch_index"] = [first] * samples["samples"].shape[0]
        return (out,)


class RebatchLatents(Node):
    """Regroups a list of latent batches into batches of batch_size (same-size latents are joined,
    a size change starts a new batch); noise masks and batch indices follow their items."""
    display_name = "Rebatch Latents"
    category = "latent/batch"
    input_is_list = True
    inputs = (Input("latents", "LATENT"), Int("batch_size", 1, min=1, max=4096))
    outputs = (Output("LATENT", is_list=True),)

    def run(self, latents, batch_size):
        size = batch_size[0]
        groups: list[list[tuple[torch.Tensor, torch.Tensor, list[int]]]] = []
        seen = 0
        for latent in latents:
            item = _items(latent, seen)
            seen += len(item[2])
            if groups and groups[-1][0][0].shape[-2:] == item[0].shape[-2:]:
                groups[-1].append(item)
            else:
                groups.append([item])
        out = []
        for group in groups:
            samples = torch.cat([g[0] for g in group])
            masks = torch.cat([g[1] for g in group])
            index = [i for g in group for i in g[2]]
            for start in range(0, samples.shape[0], size):
                latent = {"samples": samples[start:start + size], "noise_mask": masks[start:start + size],
                          "batch_index": index[start:start + size]}
                if latent["noise_mask"].mean() == 1.0:
                    del latent["noise_mask"]  # an all-ones mask is no mask
                out.append(latent)
        return (out,)


def _items(latent: dict, offset: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(samples, a noise mask per item at pixel size, batch indices) of one latent of the list."""
    samples = latent["samples"]
    b, _, h, w = samples.shape
    mask = latent.get("noise_mask")
    if mask is None:
        mask = torch.ones((b, 1, h * 8, w * 8))
    else:
        mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        if mask.shape[-2:] != (h * 8, w * 8):
            mask = F.interpolate(mask, size=(h * 8, w * 8), mode="bilinear")
        mask = repeat_to_batch_size(mask, b)
    index = list(latent.get("batch_index", [offset + i for i in range(b)]))
    return samples, mask, index


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (LatentFromBatch, RepeatLatentBatch, LatentBatch,
                                                      LatentBatchSeedBehavior, RebatchLatents)}
