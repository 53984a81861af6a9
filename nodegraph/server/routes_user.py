"""What the editor keeps on the server: `/users`, `/settings`, `/userdata` (saved workflows and
other files under `user/<user>/`), `/v2/userdata` and `/i18n`.

Single-user by default (user `default`); a `comfy-user` header selects a user created with
`POST /users`. Every path goes through `safe_join` below the user's own folder.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..folders import UnsafePathError, safe_join, write_atomic
from .middleware import BadRequest, parse_json_body

if TYPE_CHECKING:
    from .app import RouteList, ServerState

SETTINGS_FILE = "comfy.settings.json"
MAX_SETTINGS_BYTES = 4 * 1024 * 1024


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    return default if raw is None else raw.lower() in ("true", "1", "yes")



def _info(path: Path, root: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": st.st_size, "modified": st.st_mtime,
            "created": st.st_ctime}


def routes(state: "ServerState") -> "RouteList":
    users_root = state.layout.user
    users_file = users_root / "users.json"

    def known_users() -> dict[str, str]:
        try:
            users = json.loads(users_file.read_text())
            return users if isinstance(users, dict) else {}
        except (OSError, ValueError):
            return {}

    def user_root(request: web.Request) -> Path:
        user = request.headers.get("comfy-user", "")
        user = user if user and user in known_users() else "default"
        root = users_root / user
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve()

    def user_path(request: web.Request, rel: str) -> tuple[Path, Path]:
        root = user_root(request)
        if not rel or not rel.strip("/"):
            raise BadRequest("a file path is required")
        try:
            return safe_join(root, rel), root
        except UnsafePathError as exc:
            raise BadRequest(str(exc), status=403, type="forbidden_path") from None

    # -- users and settings ---------------------------------------------------------------------

    async def get_users(request: web.Request) -> web.Response:
        return web.json_response({"storage": "server", "migrated": True})

    async def post_users(request: web.Request) -> web.Response:
        body = parse_json_body(await request.read())
        name = body.get("username") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise BadRequest("'username' must be a non-empty string of at most 100 characters")
        users = known_users()
        if name in users.values():
            raise BadRequest("duplicate username", type="duplicate_user")
        user_id = re.sub(r"[^a-zA-Z0-9_-]+", "_", name.strip())[:40] + "_" + uuid.uuid4().hex
        users[user_id] = name
        (users_root / user_id).mkdir(parents=True, exist_ok=True)
        write_atomic(users_file, json.dumps(users, indent=2).encode())
        return web.json_response(user_id)

    def read_settings(request: web.Request) -> tuple[dict[str, Any], Path]:
        path = user_root(request) / SETTINGS_FILE
        try:
            settings = json.loads(path.read_text())
        except (OSError, ValueError):
            settings = {}
        return (settings if isinstance(settings, dict) else {}), path

    async def get_settings(request: web.Request) -> web.Response:
        return web.json_response(read_settings(request)[0])

    async def get_setting(request: web.Request) -> web.Response:
        return web.json_response(read_settings(request)[0].get(request.match_info["setting_id"]))

    async def post_settings(request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) > MAX_SETTINGS_BYTES:
            raise BadRequest("settings too large", status=413, type="too_large")
        body = parse_json_body(raw)
        if not isinstance(body, dict):
            raise BadRequest("settings must be a JSON object")
        settings, path = read_settings(request)
        settings.update(body)
        write_atomic(path, json.dumps(settings, indent=4).encode())
        return web.Response(status=200)

    async def post_setting(request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) > MAX_SETTINGS_BYTES:
            raise BadRequest("setting too large", status=413, type="too_large")
        value = parse_json_body(raw)
        settings, path = read_settings(request)
        settings[request.match_info["setting_id"]] = value
        write_atomic(path, json.dumps(settings, indent=4).encode())
        return web.Response(status=200)

    # -- userdata -------------------------------------------------------------------------------

    async def list_userdata(request: web.Request) -> web.Response:
        directory = request.query.get("dir")
        if not directory:
            raise BadRequest("query parameter 'dir' is required")
        folder, root = user_path(request, directory)
        if not folder.is_dir():
            raise BadRequest("directory not found", status=404, type="not_found")
        recurse, full, split = _flag(request, "recurse"), _flag(request, "full_info"), _flag(request, "split")
        files = []
        walker = folder.rglob("*") if recurse else folder.iterdir()
        for path in sorted(walker):
            if not path.is_file() or path.is_symlink() or path.name.startswith(".tmp-"):
                continue
            rel = path.relative_to(folder).as_posix()
            if full:
                files.append({**_info(path, folder), "path": rel})
            elif split:
                files.append([rel, *rel.split("/")])
            else:
                files.append(rel)
        return web.json_response(files)

    async def list_userdata_v2(request: web.Request) -> web.Response:
        rel = request.query.get("path", "")
        root = user_root(request)
        try:
            folder = safe_join(root, rel) if rel.strip("/") else root
        except UnsafePathError as exc:
            raise BadRequest(str(exc), status=403, type="forbidden_path") from None
        if not folder.is_dir():
            raise BadRequest("directory not found", status=404, type="not_found")
        entries = []
        for path in folder.iterdir():
            if path.name.startswith(".") or path.is_symlink():
                continue
            item: dict[str, Any] = {"name": path.name, "path": path.relative_to(root).as_posix(),
                                    "type": "directory" if path.is_dir() else "file"}
            if path.is_file():
                st = path.stat()
                item.update(size=st.st_size, modified=st.st_mtime)
            entries.append(item)
        entries.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return web.json_response(entries)

    async def get_userdata(request: web.Request) -> web.StreamResponse:
        path, _ = user_path(request, request.match_info["file"])
        if not path.is_file():
            raise BadRequest("file not found", status=404, type="not_found")
        content_type = "application/json" if path.suffix == ".json" else "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"})

    async def post_userdata(request: web.Request) -> web.Response:
        path, root = user_path(request, request.match_info["file"])
        if path.is_dir():
            raise BadRequest("a directory has that name", status=409, type="conflict")
        if path.exists() and not _flag(request, "overwrite", True):
            raise BadRequest("file exists", status=409, type="conflict")
        write_atomic(path, await request.read())
        if _flag(request, "full_info"):
            return web.json_response(_info(path, root))
        return web.json_response(path.relative_to(root).as_posix())

    async def delete_userdata(request: web.Request) -> web.Response:
        path, _ = user_path(request, request.match_info["file"])
        if not path.is_file():
            raise BadRequest("file not found", status=404, type="not_found")
        path.unlink()
        return web.Response(status=204)

    async def move_userdata(request: web.Request) -> web.Response:
        source, root = user_path(request, request.match_info["file"])
        dest, _ = user_path(request, request.match_info["dest"])
        if not source.is_file():
            raise BadRequest("file not found", status=404, type="not_found")
        if dest.exists() and not _flag(request, "overwrite", False):
            raise BadRequest("destination exists", status=409, type="conflict")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
        if _flag(request, "full_info"):
            return web.json_response(_info(dest, root))
        return web.json_response(dest.relative_to(root).as_posix())

    async def i18n(request: web.Request) -> web.Response:
        return web.json_response({})

    return [
        ("GET", "/users", get_users), ("POST", "/users", post_users),
        ("GET", "/settings", get_settings), ("POST", "/settings", post_settings),
        ("GET", "/settings/{setting_id}", get_setting), ("POST", "/settings/{setting_id}", post_setting),
        ("GET", "/userdata", list_userdata), ("GET", "/v2/userdata", list_userdata_v2),
        ("GET", "/userdata/{file}", get_userdata), ("POST", "/userdata/{file}", post_userdata),
        ("DELETE", "/userdata/{file}", delete_userdata),
        ("POST", "/userdata/{file}/move/{dest}", move_userdata),
        ("GET", "/i18n", i18n),
    ]
