"""The SD1.x CLIP tokenizer: OpenAI CLIP's BPE (shipped as package data) plus ComfyUI's prompt handling,
emphasis weights, `embedding:NAME` vectors and 77-token chunks, so token ids match ComfyUI's exactly.
"""
from __future__ import annotations

import functools
import html
import logging
import os
import re
from pathlib import Path
from typing import Union

import torch

from .bpe import CLIPBPE
from .embeddings import find_embedding_file, load_embedding_file
from .prompt_weights import parse_prompt_weights

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
START_TOKEN = 49406  # <|startoftext|>
END_TOKEN = 49407  # <|endoftext|>, also the padding token for SD1.x
PAD_TOKEN = END_TOKEN
CHUNK_LENGTH = 77  # start + 75 content tokens + end
MAX_WORD_LENGTH = 8  # a word of this many tokens may be split across chunks; shorter words move whole
EMBEDDING_PREFIX = "embedding:"
_EMBEDDING_CUT = re.compile(r"[ \n](?=embedding:)")  # a segment is cut before each " embedding:" / "\nembedding:"

Token = Union[int, torch.Tensor]  # a vocabulary id, or one embedding vector `[width]`
Chunk = list[tuple[Token, float]]  # CHUNK_LENGTH (token, weight) pairs

_UNSET = object()


# Text ftfy.fix_text returns unchanged: printable ASCII, tabs and newlines, and no `&` (no HTML entity,
# which ftfy unescapes once more than html.unescape twice would). tests/sd/clip/test_bpe.py checks it.
_PLAIN_TEXT = re.compile(r"[\t\n\x20-\x25\x27-\x7e]*")


def clip_clean(text: str) -> str:
    """OpenAI CLIP's `basic_clean`: fix mojibake, quotes and widths with ftfy, unescape HTML twice, strip.

    The BPE tokenizer (as transformers' CLIPTokenizer with this as its `fix_text`) then collapses
    whitespace and lower-cases, which together is CLIP's own clean-up: bare `fix_text` leaves
    `&amp;amp;` alone when the text also holds a `<`, CLIP does not.
    """
    if not _PLAIN_TEXT.fullmatch(text):  # plain ASCII without entities or controls: ftfy changes nothing
        import ftfy  # imported on first need: with its tables it is a tenth of a cold start

        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


@functools.lru_cache(maxsize=None)
def _bpe_tokenizer(vocab_file: str, merges_file: str) -> CLIPBPE:
    """One BPE tokenizer per vocabulary (CLIP's, as transformers' slow CLIPTokenizer runs it with CLIP's
    clean-up), shared by every SD1Tokenizer."""
    return CLIPBPE(vocab_file, merges_file, clean=clip_clean)


class SD1Tokenizer:
    """Prompt text → chunks of 77 `(token, weight)` pairs, as ComfyUI's SD1 tokenizer packs them.

    `embeddings_dir` is where `embedding:NAME` looks (None: the words are plain text);
    `embedding_width` is the text encoder's width (768 for SD1.x), so files of another width are refused.
    """

    def __init__(self, embeddings_dir: str | os.PathLike | None = None, embedding_width: int = 768,
                 vocab_file: str | os.PathLike = DATA_DIR / "vocab.json",
                 merges_file: str | os.PathLike = DATA_DIR / "merges.txt"):
        self.embeddings_dir = embeddings_dir
        self.embedding_width = embedding_width
        self._bpe = _bpe_tokenizer(str(vocab_file), str(merges_file))
        self.vocab: dict[str, int] = self._bpe.get_vocab()

    def tokenize_text(self, text: str) -> list[int]:
        """CLIP's plain tokenization of the whole text: `[START, ids…, END]`, no weights, no chunks."""
        return self._bpe(text)["input_ids"]

    def tokenize_with_weights(self, text: str, *, embeddings_dir=_UNSET, disable_weights: bool = False) -> list[Chunk]:
        """Chunks of exactly 77 `(token, weight)` pairs; at least one, even for an empty prompt.

        As ComfyUI 0.3.64 does it: each weighted segment is cut only where ` embedding:` (or
        `\nembedding:`) begins, and each piece is tokenized whole by CLIP (clean-up, lower case, BPE).
        A piece is one group for the packing: 8 or more tokens may be split at a chunk boundary,
        fewer move whole to the next chunk.
        """
        directory = self.embeddings_dir if embeddings_dir is _UNSET else embeddings_dir
        segments = [(text, 1.0)] if disable_weights else parse_prompt_weights(text)
        groups: list[list[tuple[Token, float]]] = []
        for segment, weight in segments:
            for piece in _EMBEDDING_CUT.split(segment):
                if not piece:
                    continue
                if piece.startswith(EMBEDDING_PREFIX) and directory is not None:
                    vectors, piece = self._embedding_vectors(piece[len(EMBEDDING_PREFIX):].strip("\n"), directory)
                    if vectors is not None:
                        groups.append([(v, weight) for v in vectors])
                    if not piece:
                        continue
                groups.append([(t, weight) for t in self._bpe(piece)["input_ids"][1:-1]])
        return pack_chunks(groups)

    def _embedding_vectors(self, text: str, directory) -> tuple[torch.Tensor | None, str]:
        """(vectors or None, text left over to tokenize) for the text after `embedding:`.

        The name is the first whitespace-separated word; the rest is left over. A name not found is
        retried without its trailing commas, which stay in the leftover (`embedding:name,` keeps the comma).
        A name found nowhere is dropped with a warning, as in ComfyUI.
        """
        words = text.split()
        if not words:
            return None, ""
        name, leftover = words[0], " ".join(words[1:])
        path = find_embedding_file(name, directory)
        if path is None:
            stripped = name.strip(",")
            if stripped != name:
                path = find_embedding_file(stripped, directory)
                leftover = f"{name[len(stripped):]} {leftover}"
        if path is None:
            logger.warning("embedding:%s not found in %s; ignored", name, directory)
            return None, leftover
        return load_embedding_file(path, self.embedding_width), leftover


def pack_chunks(groups: list[list[tuple[Token, float]]]) -> list[Chunk]:
    """Pack per-word token groups into `[START, ≤75 tokens, END, PAD…]` chunks of 77.

    A group that does not fit in the current chunk moves whole to the next one (the current chunk is
    closed and padded), unless it has MAX_WORD_LENGTH or more tokens: then it is split at the boundary.
    """
    room = CHUNK_LENGTH - 1  # the last slot of a chunk is always END
    chunks: list[Chunk] = []
    chunk: Chunk = [(START_TOKEN, 1.0)]
    for group in groups:
        splittable = len(group) >= MAX_WORD_LENGTH
        while group:
            if len(chunk) + len(group) <= room:
                chunk += group
                break
            free = room - len(chunk)
            if splittable:
                chunk += group[:free]
                group = group[free:]
            chunk.append((END_TOKEN, 1.0))
            chunk += [(PAD_TOKEN, 1.0)] * (CHUNK_LENGTH - len(chunk))
            chunks.append(chunk)
            chunk = [(START_TOKEN, 1.0)]
    chunk.append((END_TOKEN, 1.0))
    chunk += [(PAD_TOKEN, 1.0)] * (CHUNK_LENGTH - len(chunk))
    chunks.append(chunk)
    return chunks

