"""OpenAI CLIP's byte-level BPE tokenizer, with the behaviour of transformers' slow CLIPTokenizer as the
SD1 tokenizer uses it (`bpe(text)["input_ids"]`, `get_vocab()`), so token ids are identical.

Why not transformers' class: importing it costs ~2.6 s on this project's 2-core machine, most of a cold
`nodegraph run`. The algorithm is CLIP's own (simple_tokenizer.py, MIT); tests/sd/clip/test_bpe.py
checks it against transformers' CLIPTokenizer on a broad set of prompts.
"""
from __future__ import annotations

import functools
import json
import re as std_re
from collections.abc import Callable

import regex

START, END = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenizer: special tokens, English contractions, letter runs, single digits, other symbol runs.
_WORDS = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                       regex.IGNORECASE)
_SPECIALS = std_re.compile(f"({std_re.escape(START)}|{std_re.escape(END)})")  # split exactly, case-sensitive


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


class CLIPBPE:
    """`bpe(text)` → `{"input_ids": [START, ids…, END]}`; `clean` is CLIP's text clean-up (ftfy + HTML)."""

    def __init__(self, vocab_file: str, merges_file: str, clean: Callable[[str], str]):
        with open(vocab_file, encoding="utf-8") as f:
            self.encoder: dict[str, int] = json.load(f)
        with open(merges_file, encoding="utf-8") as f:
            merges = f.read().strip().split("\n")[1:49152 - 256 - 2 + 1]  # CLIP uses the first 48,894 merges
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.clean = clean
        self._cache = {START: START, END: END}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    def __call__(self, text: str) -> dict[str, list[int]]:
        ids = [self.encoder[START]]
        for piece in _SPECIALS.split(text):
            if piece in (START, END):
                ids.append(self.encoder[piece])
            elif piece:
                ids.extend(self.encoder.get(token, self.encoder[END]) for token in self.tokenize(piece))
        ids.append(self.encoder[END])
        return {"input_ids": ids}

    def tokenize(self, text: str) -> list[str]:
        """BPE token strings of `text` after CLIP's clean-up, whitespace collapse and lower-casing."""
        text = " ".join(self.clean(text).split()).lower()
        tokens = []
        for word in _WORDS.findall(text):
            word = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
            tokens.extend(self._bpe(word).split(" "))
        return tokens

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            first, second = best
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        result = " ".join(word)
        self._cache[token] = result
        return result
