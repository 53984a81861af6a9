"""Files: `/view` (with re-encoding and channel selection), `/upload/image`, `/upload/mask`,
`/view_metadata/{folder}` and `/internal/files/{type}`.

Every path from a request goes through `folders.safe_join` (no `..`, no absolute path, no symlink
that leads out, no separators hidden in a file name); uploads must be images PIL can read.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import mimetypes
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..folders import MODEL_FOLDERS, UnsafePathError, safe_join, write_atomic
from .middleware import BadRequest

if TYPE_CHECKING:
    from .app import RouteList, ServerState

FOLDER_TYPES = ("input", "output", "temp")
UNSAFE_CONTENT_TYPES = frozenset({"text/html", "text/javascript", "application/javascript", "text/css",
                                  "application/xhtml+xml", "image/svg+xml", "application/xml", "text/xml"})


def check_file_name(name: Any) -> str:
    """A bare file name: no separators, no '..', nothing hidden in it."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise BadRequest("a file name is required (at most 255 characters)")
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or ".." in name:
        raise BadRequest(f"invalid file name {name[:80]!r}: no path separators or '..'", type="invalid_path")
    if any(ord(c) < 32 for c in name):
        raise BadRequest("invalid file name: control characters", type="invalid_path")
    return name


def _folder(state: "ServerState", kind: str) -> Path:
    if kind not in FOLDER_TYPES:
        raise BadRequest(f"type must be one of {', '.join(FOLDER_TYPES)}, got {str(kind)[:40]!r}")
    return getattr(state.layout, kind)


def _join(base: Path, subfolder: str, name: str | None = None) -> Path:
    try:
        path = safe_join(base, subfolder or "") if subfolder else Path(base).resolve()
        return safe_join(path, name) if name is not None else path
    except UnsafePathError as exc:
        raise BadRequest(str(exc), status=403, type="forbidden_path") from None


def split_annotation(name: str) -> tuple[str, str | None]:
    """'a.png [output]' -> ('a.png', 'output')."""
    for kind in FOLDER_TYPES:
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, None


def _reencode(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if channel == "rgb":
            image = image.convert("RGB")
        elif channel == "a":
            alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
            image = Image.new("RGBA", image.size, (0, 0, 0, 0))
            image.putalpha(alpha)
        if preview:
            fmt, _, quality_text = preview.partition(";")
            fmt = fmt.strip().lower()
            if fmt not in ("webp", "jpeg", "jpg"):
                raise BadRequest("preview must be 'webp;QUALITY' or 'jpeg;QUALITY'")
            try:
                quality = int(quality_text) if quality_text.strip() else 90
            except ValueError:
                raise BadRequest("preview quality must be an integer") from None
            quality = min(100, max(1, quality))
            buffer = io.BytesIO()
            if fmt == "webp":
                image.save(buffer, format="WEBP", quality=quality)
                return buffer.getvalue(), "image/webp"
            image.convert("RGB").save(buffer, format="JPEG", quality=quality)
            return buffer.getvalue(), "image/jpeg"
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), "image/png"


def _check_image(data: bytes) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as exc:
        raise BadRequest(f"the upload is not an image this server can read ({type(exc).__name__})",
                         type="invalid_image") from None


def _store(data: bytes, folder: Path, name: str, overwrite: bool) -> str:
    """Write `data` as `name` in `folder` with ComfyUI's rules: without overwrite a taken name
    becomes 'name (1).ext', 'name (2).ext'..., unless the existing file is identical (same
    sha256), whose name is then reused. The write is atomic (temp file + rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return _store_in(data, folder, name, overwrite)
    except UnsafePathError as exc:
        raise BadRequest(str(exc), status=403, type="forbidden_path") from None


def _store_in(data: bytes, folder: Path, name: str, overwrite: bool) -> str:
    target = safe_join(folder, name)
    if not overwrite:
        stem, ext = os.path.splitext(name)
        digest = hashlib.sha256(data).digest()
        n = 0
        while target.exists():
            if target.is_file() and hashlib.sha256(target.read_bytes()).digest() == digest:
                return target.name
            n += 1
            target = safe_join(folder, f"{stem} ({n}){ext}")
    write_atomic(target, data)
    return target.name


def _merge_mask(original: Path, mask_data: bytes) -> bytes:
    """The original image with its alpha replaced by the mask's alpha; PNG text chunks kept."""
    from PIL import Image, PngImagePlugin

    with Image.open(original) as source, Image.open(io.BytesIO(mask_data)) as mask:
        info = PngImagePlugin.PngInfo()
        for key, value in (source.info or {}).items():
            if isinstance(key, str) and isinstance(value, str):
                info.add_text(key, value)
        merged = source.convert("RGBA")
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.size != merged.size:
            alpha = alpha.resize(merged.size, Image.LANCZOS)
        merged.putalpha(alpha)
        buffer = io.BytesIO()
        merged.save(buffer, format="PNG", pnginfo=info, compress_level=4)
        return buffer.getvalue()


def routes(state: "ServerState") -> "RouteList":
    layout = state.layout

    async def view(request: web.Request) -> web.StreamResponse:
        query = request.query
        name, annotated = split_annotation(query.get("filename", ""))
        check_file_name(name)
        kind = annotated or query.get("type") or "output"
        base = _folder(state, kind)
        path = _join(base, query.get("subfolder", ""), name)
        if not path.is_file():
            raise BadRequest("file not found", status=404, type="not_found")
        preview, channel = query.get("preview"), query.get("channel", "rgba").lower()
        if channel not in ("rgba", "rgb", "a"):
            raise BadRequest("channel must be rgba, rgb or a")
        headers = {"Content-Disposition": f'filename="{name}"'.encode("latin-1", "replace").decode("latin-1"),
                   "X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"}
        if preview or channel != "rgba":
            loop = asyncio.get_running_loop()
            try:
                body, content_type = await loop.run_in_executor(None, _reencode, path, preview, channel)
            except BadRequest:
                raise
            except Exception as exc:
                raise BadRequest(f"cannot re-encode this file as an image: {type(exc).__name__}",
                                 status=415, type="not_an_image") from None
            return web.Response(body=body, content_type=content_type, headers=headers)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type in UNSAFE_CONTENT_TYPES:
            content_type = "application/octet-stream"
        headers["Content-Type"] = content_type
        return web.FileResponse(path, headers=headers)

    async def _read_upload(request: web.Request) -> tuple[bytes, str, str, Path, bool, Any]:
        if not request.content_type.startswith("multipart/"):
            raise BadRequest("expected a multipart/form-data upload with an 'image' file")
        try:
            form = await request.post()
        except web.HTTPException:
            raise
        except Exception as exc:  # the multipart parser's own errors: the body is malformed
            raise BadRequest(f"malformed multipart body: {type(exc).__name__}") from None
        image = form.get("image")
        if image is None or not hasattr(image, "file"):
            raise BadRequest("no 'image' file in the upload")
        kind = form.get("type", "input")
        if not isinstance(kind, str):
            raise BadRequest("'type' must be text")
        base = _folder(state, kind or "input")
        subfolder = form.get("subfolder", "")
        if not isinstance(subfolder, str):
            raise BadRequest("'subfolder' must be text")
        folder = _join(base, subfolder)
        name = check_file_name(image.filename)
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        data = image.file.read()
        if len(data) > state.max_upload_size:
            raise BadRequest("the upload is too large", status=413, type="too_large")
        return data, name, subfolder, folder, overwrite, form

    async def upload_image(request: web.Request) -> web.Response:
        data, name, subfolder, folder, overwrite, form = await _read_upload(request)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _check_image, data)
        stored = await loop.run_in_executor(None, _store, data, folder, name, overwrite)
        return web.json_response({"name": stored, "subfolder": subfolder, "type": form.get("type", "input") or "input"})

    async def upload_mask(request: web.Request) -> web.Response:
        data, name, subfolder, folder, overwrite, form = await _read_upload(request)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _check_image, data)
        try:
            ref = json.loads(form.get("original_ref", ""))
        except (TypeError, ValueError):
            raise BadRequest("'original_ref' must be JSON {filename, subfolder, type}") from None
        if not isinstance(ref, dict):
            raise BadRequest("'original_ref' must be a JSON object")
        ref_name, annotated = split_annotation(check_file_name(ref.get("filename")))
        ref_sub = ref.get("subfolder") or ""
        if not isinstance(ref_sub, str):
            raise BadRequest("'original_ref.subfolder' must be text")
        original = _join(_folder(state, annotated or ref.get("type") or "input"), ref_sub, ref_name)
        if not original.is_file():
            raise BadRequest("the original image was not found", status=404, type="not_found")
        try:
            merged = await loop.run_in_executor(None, _merge_mask, original, data)
        except Exception as exc:
            raise BadRequest(f"cannot apply the mask: {type(exc).__name__}: {exc}", type="invalid_image") from None
        stored = await loop.run_in_executor(None, _store, merged, folder, name, overwrite)
        return web.json_response({"name": stored, "subfolder": subfolder, "type": form.get("type", "input") or "input"})

    async def view_metadata(request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            raise BadRequest(f"unknown model folder {folder[:40]!r}", status=404, type="not_found")
        name = request.query.get("filename", "")
        if not name.endswith(".safetensors"):
            raise BadRequest("only .safetensors files have metadata", status=404, type="not_found")
        try:
            path = layout.model_path(folder, name)
        except UnsafePathError as exc:
            raise BadRequest(str(exc), status=403, type="forbidden_path") from None
        except FileNotFoundError:
            raise BadRequest("model file not found", status=404, type="not_found") from None
        try:
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > 100 * 1024 * 1024:
                    raise ValueError("header too large")
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            raise BadRequest("not a readable safetensors file", status=404, type="not_found") from None
        return web.json_response(header.get("__metadata__", {}) if isinstance(header, dict) else {})

    async def internal_files(request: web.Request) -> web.Response:
        base = _folder(state, request.match_info["kind"])
        if not base.is_dir():
            return web.json_response([])
        entries = [e for e in os.scandir(base) if e.is_file() and not e.name.startswith(".")]
        entries.sort(key=lambda e: e.stat().st_mtime, reverse=True)
        return web.json_response([e.name for e in entries])

    return [
        ("GET", "/view", view),
        ("POST", "/upload/image", upload_image), ("POST", "/upload/mask", upload_mask),
        ("GET", "/view_metadata/{folder}", view_metadata),
        ("GET", "/internal/files/{kind}", internal_files),
    ]
