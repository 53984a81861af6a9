"""PNG text chunks (tEXt, zTXt, iTXt), read with the standard library only.

ComfyUI stores the API prompt under `prompt` and the editor's graph under `workflow`; the engine
must read them without PIL or torch.
"""
from __future__ import annotations

import struct
import zlib

from ..errors import WorkflowError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


def read_text_chunks(data: bytes, *, source: str = "PNG") -> dict[str, str]:
    """All text chunks of a PNG as {keyword: text}. A damaged file raises WorkflowError."""
    if not is_png(data):
        raise WorkflowError("not a PNG file", where=source)
    chunks: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    ended = False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            raise WorkflowError("the PNG file is truncated", where=source)
        pos += 12 + length
        try:
            if kind == b"tEXt":
                key, _, text = body.partition(b"\0")
                chunks[key.decode("latin-1")] = text.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                chunks[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]  # skip the compression-method byte (always zlib)
                _lang, _, rest = rest.partition(b"\0")
                _translated, _, text = rest.partition(b"\0")
                chunks[key.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
            elif kind == b"IEND":
                ended = True
                break
        except (zlib.error, UnicodeDecodeError, IndexError) as exc:
            raise WorkflowError(f"a text chunk of the PNG is damaged ({exc})", where=source) from exc
    if not ended:
        raise WorkflowError("the PNG file is truncated (no IEND chunk)", where=source)
    return chunks


def text_chunk(key: str, text: str) -> bytes:
    """One tEXt chunk (latin-1) or iTXt chunk (anything else), ready to splice into a PNG."""
    try:
        kind, body = b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        kind, body = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def add_text_chunks(png: bytes, texts: dict[str, str]) -> bytes:
    """Insert text chunks right after IHDR (as PIL does)."""
    if not is_png(png):
        raise WorkflowError("not a PNG file")
    ihdr_end = len(PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    extra = b"".join(text_chunk(k, v) for k, v in texts.items())
    return png[:ihdr_end] + extra + png[ihdr_end:]
