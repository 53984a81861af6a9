"""The CLIP text encoder: a CLIPTextModel (text_model.py, in transformers' layout) built from a config read
off the checkpoint's tensor shapes, and ComfyUI's encoding of weighted 77-token chunks (CLIP skip,
embeddings, emphasis).
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch

from ..checkpoint import build_on_meta
from .text_model import CLIPTextConfig, CLIPTextModel
from .tokenizer import CHUNK_LENGTH, END_TOKEN, PAD_TOKEN, START_TOKEN, Chunk, Token

logger = logging.getLogger(__name__)

PREFIX = "text_model."
HEAD_DIM = 64  # every OpenAI CLIP text tower uses 64-wide heads: L 768/12, H 1024/16, bigG 1280/20
# Keys a checkpoint may carry that this model does not use: position_ids are always 0…n−1 here (as in
# ComfyUI); logit_scale and the projection only matter for CLIP's image-text score, not for SD1.
TOLERATED_EXTRA = re.compile(r"^(text_model\.)?(embeddings\.position_ids|logit_scale|text_projection(\.weight)?)$")
_PLACEHOLDER_ID = 0  # token id fed at embedding slots; its embedding is replaced before the encoder runs


class CLIPLoadError(ValueError):
    """A state dict that does not fit the CLIP text model; the message names the keys and shapes."""


def detect_text_config(sd: Mapping[str, torch.Tensor]) -> CLIPTextConfig:
    """The CLIPTextConfig that fits these `text_model.*` tensors.

    Read from shapes: vocabulary and width from the token embedding, positions from the position
    embedding, depth from the highest `encoder.layers.N`, MLP width from `fc1`. Heads are not visible
    in the shapes; they are `max(1, width // 64)` (SD1.5: 768 → 12).
    """
    try:
        vocab_size, width = sd[PREFIX + "embeddings.token_embedding.weight"].shape
        max_positions = sd[PREFIX + "embeddings.position_embedding.weight"].shape[0]
        intermediate = sd[PREFIX + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise CLIPLoadError(f"not a CLIP text model state dict: no {exc.args[0]!r}") from None
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k)))
    heads = max(1, width // HEAD_DIM)
    if width % heads:
        raise CLIPLoadError(f"text model width {width} is not a multiple of the {heads} heads assumed (64 per head)")
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_positions,
        hidden_act="quick_gelu", layer_norm_eps=1e-5,
        bos_token_id=START_TOKEN, eos_token_id=END_TOKEN, pad_token_id=PAD_TOKEN,
    )


def build_text_model(sd: Mapping[str, torch.Tensor], *, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> CLIPTextModel:
    """A CLIPTextModel with exactly these weights: every model key present, no unknown key, every shape
    equal, else CLIPLoadError listing all the mismatches. Float position_ids are rounded and checked."""
    sd = dict(sd)
    _check_position_ids(sd)
    config = detect_text_config(sd)
    # Built on meta, then the file's tensors (cast) are assigned in: no random init, no second copy.
    model = build_on_meta(lambda: CLIPTextModel(config))
    embeddings = model.text_model.embeddings
    embeddings.position_ids = torch.arange(config.max_position_embeddings, device=device).unsqueeze(0)

    expected = model.state_dict()
    weights = {k: v for k, v in sd.items() if not TOLERATED_EXTRA.match(k)}
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in weights]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in weights.items() if k not in expected]
    problems += [f"shape of {k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
                 for k, v in weights.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        shown = "; ".join(problems[:20]) + (f"; … {len(problems) - 20} more" if len(problems) > 20 else "")
        raise CLIPLoadError(f"CLIP text model weights do not fit ({len(problems)} problems): {shown}")
    weights = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in weights.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _check_position_ids(sd: dict[str, torch.Tensor]) -> None:
    ids = sd.get(PREFIX + "embeddings.position_ids")
    if ids is None:
        return
    ids = ids.round().long().flatten()  # some old checkpoints store them as slightly-off floats
    if not torch.equal(ids, torch.arange(ids.numel())):
        logger.warning("checkpoint position_ids are not 0…%d; ignored (positions are always 0…n−1)", ids.numel() - 1)


class CLIPTextEncoder:
    """Encodes token chunks with a CLIPTextModel: `[1, 77·k, C]` conditioning plus `[1, C]` pooled.

    The model is used where it lies (its device and dtype); outputs are float32 on `output_device`.
    """

    def __init__(self, model: CLIPTextModel, *, output_device: torch.device | str = "cpu"):
        self.model = model
        self.output_device = torch.device(output_device)

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "CLIPTextEncoder":
        """Move (or cast) the model in place; returns self."""
        self.model.to(device=device, dtype=dtype)
        return self

    def encode(self, chunks: Sequence[Chunk], layer_idx: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """ComfyUI's `encode_token_weights`: (cond `[1, 77·k, C]`, pooled `[1, C]`), float32.

        `layer_idx` is CLIP skip: −1 is the last layer; −k the output of layer `num_layers + 1 − k`
        with the final layer norm applied (−2 on a 12-layer model: layer 11). Where any weight ≠ 1 each
        token's vector is pulled from the empty prompt's: `z = (z − z_empty)·w + z_empty`.
        Pooled is the first chunk's final-normed vector at its first END token (no projection: SD1
        does not use it). Outputs are ordinary tensors, safe to modify outside inference mode.
        """
        if not chunks:
            chunks = [[(START_TOKEN, 1.0), (END_TOKEN, 1.0)] + [(PAD_TOKEN, 1.0)] * (CHUNK_LENGTH - 2)]
        length = len(chunks[0])
        if any(len(c) != length for c in chunks):
            raise ValueError(f"token chunks differ in length: {[len(c) for c in chunks]}")
        rows = [[token for token, _ in chunk] for chunk in chunks]
        weights = torch.tensor([[w for _, w in chunk] for chunk in chunks], dtype=torch.float32)
        weighted = bool((weights != 1.0).any())
        if weighted:  # the empty prompt rides in the same batch
            rows.append([START_TOKEN, END_TOKEN] + [PAD_TOKEN] * (length - 2))

        with torch.inference_mode():
            hidden, pooled = self._forward(rows, layer_idx)
            hidden = hidden.to(self.output_device, torch.float32)
            pooled = pooled.to(self.output_device, torch.float32)
            z = hidden[: len(chunks)]
            if weighted:
                z_empty = hidden[-1]
                w = weights.to(z.device)[..., None]  # (k, T, 1)
                z = torch.where(w != 1.0, (z - z_empty) * w + z_empty, z)
            cond = z.reshape(1, -1, z.shape[-1])  # (1, k·T, C)
            first_pooled = pooled[:1]
        return cond.clone(), first_pooled.clone()  # clones made outside inference mode are normal tensors

    def _forward(self, rows: list[list[Token]], layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states `(B, T, C)` at the chosen layer and pooled `(B, C)`, in the model's dtype."""
        device = self.model.device
        ids = torch.tensor([[t if isinstance(t, int) else _PLACEHOLDER_ID for t in row] for row in rows], device=device)
        slots = [(b, i, t) for b, row in enumerate(rows) for i, t in enumerate(row) if isinstance(t, torch.Tensor)]
        hidden_index = self._hidden_index(layer_idx)
        with _token_vectors_replaced(self.model.get_input_embeddings(), slots):
            out = self.model(input_ids=ids, output_hidden_states=hidden_index is not None)
        last = out.last_hidden_state  # already through the final layer norm
        if hidden_index is None:
            hidden = last
        else:
            hidden = self.model.text_model.final_layer_norm(out.hidden_states[hidden_index])
        eos = torch.tensor([_first_end(row) for row in rows], device=last.device)
        pooled = last[torch.arange(len(rows), device=last.device), eos]
        return hidden, pooled

    def _hidden_index(self, layer_idx: int) -> int | None:
        """Index into transformers' `hidden_states` (0 = embeddings, n = layer n) for CLIP skip, or None
        for the last layer. Like ComfyUI, a skip deeper than the model falls back to the last layer."""
        if layer_idx >= 0:
            raise ValueError(f"CLIP layer index must be negative (-1 = last layer), got {layer_idx}")
        if layer_idx == -1 or -layer_idx > self.num_layers:
            if -layer_idx > self.num_layers:
                logger.warning("CLIP skip %d is deeper than the model's %d layers; using the last layer",
                               layer_idx, self.num_layers)
            return None
        return self.num_layers + 1 + layer_idx


def _first_end(row: list[Token]) -> int:
    """Position of the first END token (where CLIP pools), or the last position if there is none."""
    return next((i for i, t in enumerate(row) if isinstance(t, int) and t == END_TOKEN), len(row) - 1)


@contextmanager
def _token_vectors_replaced(token_embedding: torch.nn.Module, slots: list[tuple[int, int, torch.Tensor]]) -> Iterator[None]:
    """While inside, the token embedding's output at `(row, position)` is the given vector instead.

    A forward hook, so the shared embedding table is never copied or changed.
    """
    if not slots:
        yield
        return

    def replace(module, inputs, output):
        output = output.clone()
        for row, pos, vector in slots:
            if vector.shape != output.shape[-1:]:
                raise ValueError(f"embedding vector of shape {tuple(vector.shape)} in a {output.shape[-1]}-wide model")
            output[row, pos] = vector.to(device=output.device, dtype=output.dtype)
        return output

    handle = token_embedding.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()
