"""The CLIP object that travels between nodes on the CLIP socket: tokenizer, text encoder, CLIP skip
and embeddings directory, cheap to clone (clones share the weights)."""
from __future__ import annotations

import contextlib
import copy
import os
import re
from typing import Iterator, Mapping

import torch

from .text_encoder import CLIPTextEncoder, build_text_model
from .tokenizer import Chunk, SD1Tokenizer

MAX_CLIP_SKIP = 24


class CLIP:
    """Text → conditioning for SD1.x.

    `text_model` is the transformers `CLIPTextModel`; its parameter names are the checkpoint's keys with
    `cond_stage_model.transformer.` removed (`text_model.encoder.layers.0.mlp.fc1.weight`, …).

    Patching (LoRA): `patcher` is None until a LoRA loader attaches a `ModelPatcher` over `text_model`
    to a clone. Every encode runs inside `_prepared()`, which writes this clone's patches into the shared
    module for the duration (`patcher.applied()`), or, with no patcher, makes sure no other clone's
    patches are left in it.
    """

    def __init__(self, tokenizer: SD1Tokenizer, encoder: CLIPTextEncoder, *, layer_idx: int = -1,
                 embeddings_dir: str | os.PathLike | None = None):
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.layer_idx = _checked_layer(layer_idx)
        self.embeddings_dir = embeddings_dir
        self.patcher = None

    @property
    def text_model(self) -> torch.nn.Module:
        return self.encoder.model

    def clone(self) -> "CLIP":
        """A new CLIP with its own settings (layer, embeddings dir, patcher clone) and the same weights."""
        other = copy.copy(self)  # tokenizer and encoder (hence text_model) are shared, not copied
        if self.patcher is not None and hasattr(self.patcher, "clone"):
            other.patcher = self.patcher.clone()
        return other

    def memory_parts(self):
        """For the engine's cache: the shared text-encoder weights (and a LoRA clone's adapters)."""
        if self.patcher is not None and hasattr(self.patcher, "memory_parts"):
            return self.patcher.memory_parts()
        from ..memory import module_parts
        return module_parts(self.text_model)

    def set_layer(self, layer_idx: int) -> None:
        """CLIP skip (CLIPSetLastLayer): −1 = last layer, −2 = the one before, … −24. Call it on a clone."""
        self.layer_idx = _checked_layer(layer_idx)

    def tokenize(self, text: str) -> list[Chunk]:
        """Chunks of 77 `(token id | embedding vector, weight)` pairs, as ComfyUI makes them."""
        return self.tokenizer.tokenize_with_weights(text, embeddings_dir=self.embeddings_dir)

    def encode_from_tokens(self, tokens: list[Chunk], return_pooled: bool = True):
        """cond `[1, 77·k, C]`, or `(cond, pooled [1, C])` when return_pooled."""
        with self._prepared():
            cond, pooled = self.encoder.encode(tokens, layer_idx=self.layer_idx)
        return (cond, pooled) if return_pooled else cond

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`(cond [1, 77·k, C], pooled [1, C])` for a prompt."""
        return self.encode_from_tokens(self.tokenize(text), return_pooled=True)

    @contextlib.contextmanager
    def _prepared(self) -> Iterator[torch.nn.Module]:
        """The text model with exactly this CLIP's weight patches in it, for the length of the block."""
        patcher = self.patcher
        if patcher is None:
            from nodes.sd.patcher import ModelPatcher  # imported late: most CLIPs are never patched

            device = next(self.text_model.parameters()).device
            patcher = ModelPatcher(self.text_model, device, device)  # no patches: restores the originals
        with patcher.applied() as module:
            yield module


def load_clip_from_state_dict(sd: Mapping[str, torch.Tensor], *, embeddings_dir: str | os.PathLike | None = None,
                              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> CLIP:
    """A CLIP from text-encoder weights keyed `text_model.…` (a checkpoint's `cond_stage_model.transformer.`
    prefix already removed). Old layouts without `text_model.` are accepted too. Raises CLIPLoadError."""
    if not any(k.startswith("text_model.") for k in sd):
        sd = {("text_model." + k if re.match(r"(embeddings|encoder|final_layer_norm)\.", k) else k): v
              for k, v in sd.items()}
    model = build_text_model(sd, device=device, dtype=dtype)
    encoder = CLIPTextEncoder(model)
    tokenizer = SD1Tokenizer(embeddings_dir=embeddings_dir, embedding_width=encoder.width)
    return CLIP(tokenizer, encoder, embeddings_dir=embeddings_dir)


def _checked_layer(layer_idx: int) -> int:
    if not isinstance(layer_idx, int) or not -MAX_CLIP_SKIP <= layer_idx <= -1:
        raise ValueError(f"CLIP layer must be an integer from -{MAX_CLIP_SKIP} to -1, got {layer_idx!r}")
    return layer_idx
