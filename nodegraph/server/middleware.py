"""Middlewares: every error as JSON (never an HTML page, never a 500 for a bad request), the
security guard (loopback Host and same-origin checks, bearer-token auth) and cache headers.
"""
from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def json_error(status: int, message: str, *, type: str = "bad_request", details: str = "",
               **extra: Any) -> web.Response:
    """The error body used everywhere: ComfyUI's `{error: {type, message, details, extra_info}}`."""
    body = {"error": {"type": type, "message": message, "details": details, "extra_info": extra}}
    return web.json_response(body, status=status)


class BadRequest(Exception):
    """Raised by handlers for a request of the wrong shape: becomes a 400 (or `status`) JSON error."""

    def __init__(self, message: str, *, status: int = 400, type: str = "bad_request", details: str = ""):
        super().__init__(message)
        self.status, self.type, self.details = status, type, details


def is_loopback_host(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    """'127.0.0.1:8188' -> ('127.0.0.1', 8188); '[::1]:80' -> ('::1', 80)."""
    parts = urlsplit("//" + value)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_error(exc.status, str(exc), type=exc.type, details=exc.details)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        response = json_error(exc.status, reason or exc.reason, type=exc.reason.lower().replace(" ", "_"))
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except (ConnectionResetError, web.HTTPClientError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(500, "internal server error; see the server log", type="internal_error")


def security(*, auth_token: str | None, loopback_only: bool) -> Callable:
    """The guard. With no token, the server trusts only its own origin: a cross-site page (an
    `Origin` that differs from `Host`) gets 403, and a loopback-bound server also refuses a
    non-loopback `Host` (DNS rebinding). With a token, every request must carry it: `Authorization:
    Bearer <token>`, HTTP Basic with the token as password, or `?token=` (websockets, <img> URLs)."""
    token = auth_token.encode() if auth_token else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None:
            host, port = _split_host(request.headers.get("Host", ""))
            if loopback_only and not is_loopback_host(host):
                return json_error(403, "this server only answers requests addressed to localhost",
                                  type="forbidden_host")
            origin = request.headers.get("Origin")
            if origin is not None and not _same_origin(origin, host, port):
                return json_error(403, "cross-origin requests are not allowed", type="forbidden_origin")
        elif not _authorised(request, token):
            response = json_error(401, "missing or wrong auth token", type="unauthorized")
            response.headers["WWW-Authenticate"] = 'Bearer realm="nodegraph"'
            return response
        return await handler(request)

    return guard


def _same_origin(origin: str, host: str, port: int | None) -> bool:
    parts = urlsplit(origin)
    if not parts.scheme or not parts.hostname:
        return False  # "null" and other opaque origins
    if parts.hostname.lower() != host:
        return False
    try:
        origin_port = parts.port
    except ValueError:
        return False
    return origin_port is None or port is None or origin_port == port


def _authorised(request: web.Request, token: bytes) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    candidates = []
    if scheme.lower() == "bearer":
        candidates.append(value.strip())
    elif scheme.lower() == "basic":
        try:
            candidates.append(base64.b64decode(value.strip(), validate=True).decode().partition(":")[2])
        except (ValueError, UnicodeDecodeError):
            pass
    if "token" in request.query:
        candidates.append(request.query["token"])
    return any(hmac.compare_digest(c.encode(), token) for c in candidates)


@web.middleware
async def cache_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    path = request.path
    if path.endswith((".js", ".css")) or path.endswith(".json") and "index" in path or path in ("/", "/index.html"):
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def parse_json_body(raw: bytes, *, allow_empty: bool = False) -> Any:
    """A request body as JSON whatever its content type; BadRequest when it is not JSON."""
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("the request body is empty; expected JSON")
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply", type="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", type="invalid_json") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
