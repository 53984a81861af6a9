"""OpenAI CLIP's tokenizer algorithm, written again here from its description, as an independent
reference for the tests: vocabulary from the merges file, CLIP's clean-up, byte-level BPE by merge rank.
It shares no code with nodes/sd/clip."""
from __future__ import annotations

import html
from pathlib import Path

import ftfy
import regex

MERGES = Path(__file__).resolve().parents[3] / "nodes" / "sd" / "clip" / "data" / "merges.txt"
WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", regex.IGNORECASE
)


def byte_symbols() -> dict[int, str]:
    keep = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    moved = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep}  # insertion order is vocabulary order: printable bytes first
    table.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return table


class ReferenceTokenizer:
    def __init__(self, merges_path: Path = MERGES):
        merges = [tuple(line.split()) for line in merges_path.read_text(encoding="utf-8").split("\n")[1:48_895]]
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_symbol = byte_symbols()

    def bpe(self, token: str) -> list[str]:
        if token in ("<|startoftext|>", "<|endoftext|>"):
            return [token]
        parts = list(token[:-1]) + [token[-1] + "</w>"]
        while len(parts) > 1:
            pairs = set(zip(parts, parts[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def clean(self, text: str) -> str:
        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return regex.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """[START, ids…, END] for the whole text, as OpenAI's SimpleTokenizer (plus start/end) gives."""
        ids = []
        for word in WORD_PATTERN.findall(self.clean(text)):
            mapped = "".join(self.byte_symbol[b] for b in word.encode("utf-8"))
            ids += [self.encoder[piece] for piece in self.bpe(mapped)]
        return [49406, *ids, 49407]
