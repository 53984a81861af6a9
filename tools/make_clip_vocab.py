"""Regenerate the SD1.x CLIP tokenizer files (vocab.json, merges.txt) shipped in nodes/sd/clip/data.

The source is OpenAI CLIP's BPE merges file `bpe_simple_vocab_16e6.txt(.gz)`, found inside MIT-licensed
wheels such as open-clip-torch. Fetch one without installing it, then run this script on it:

    pip download --no-deps open-clip-torch -d /tmp/w
    python tools/make_clip_vocab.py /tmp/w/open_clip_torch-*.whl

The input may be the wheel, the `.txt.gz` or the plain `.txt`. The outputs are checked against known
sha256 sums (docs/clip.md); a mismatch is an error and nothing is written.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import zipfile
from pathlib import Path

NUM_MERGES = 48_894  # 49,408 ids = 512 byte symbols + merges + 2 special tokens
VOCAB_SHA256 = "3f0c4f7d2086b61b38487075278ea9ed04edb53a03cbb045b86c27190fa8fb69"
MERGES_SHA256 = "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "nodes" / "sd" / "clip" / "data"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte map: printable Latin-1 bytes stand for themselves, the other 68 get U+0100 onwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def read_bpe_text(path: Path) -> str:
    """The merges file's text, from a wheel, a .gz or a plain .txt."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(("bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.txt"))]
            if not names:
                raise SystemExit(f"{path}: no bpe_simple_vocab_16e6.txt(.gz) inside")
            data = wheel.read(names[0])
            name = names[0]
    else:
        data, name = path.read_bytes(), path.name
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8")


def build_files(bpe_text: str) -> tuple[bytes, bytes]:
    """(vocab.json bytes, merges.txt bytes) in the layout transformers' CLIPTokenizer reads."""
    lines = bpe_text.split("\n")
    merges = lines[1 : NUM_MERGES + 1]  # line 0 is the version header
    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != 49_408:
        raise SystemExit(f"expected 49408 distinct tokens, got {len(vocab)}")
    vocab_bytes = json.dumps(vocab, ensure_ascii=False).encode("utf-8")
    merges_bytes = ("\n".join(["#version: 0.2", *merges]) + "\n").encode("utf-8")
    return vocab_bytes, merges_bytes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="wheel, bpe_simple_vocab_16e6.txt.gz or .txt")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the package data)")
    args = parser.parse_args(argv)

    vocab_bytes, merges_bytes = build_files(read_bpe_text(args.source))
    for label, data, expected in (("vocab.json", vocab_bytes, VOCAB_SHA256), ("merges.txt", merges_bytes, MERGES_SHA256)):
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise SystemExit(f"{label}: sha256 {digest} != expected {expected}; not written")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocab.json").write_bytes(vocab_bytes)
    (args.out / "merges.txt").write_bytes(merges_bytes)
    print(f"wrote {args.out / 'vocab.json'} ({len(vocab_bytes)} bytes), {args.out / 'merges.txt'} ({len(merges_bytes)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
