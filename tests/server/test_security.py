"""Safe by default: loopback bind, same-origin only, token auth off loopback, no path escapes,
capped and checked uploads."""
from __future__ import annotations

import argparse
import http.client
import io
import os

import pytest
from PIL import Image

from nodegraph.folders import Folders
from nodegraph.server.app import serve

from .live import LiveServer
from .server_nodes import make_registry, number_prompt
from .wsclient import WS


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def _raw_get(port: int, path: str, headers: dict) -> tuple[int, bytes]:
    """A request with exactly these headers (requests would normalise Host and the path)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers.items():
        conn.putheader(k, v)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


# -- binding and the token ---------------------------------------------------------------------

def _args(**kw) -> argparse.Namespace:
    defaults = dict(listen="127.0.0.1", port=0, auth_token=None, insecure_no_auth=False, max_upload_size=100,
                    history_size=100, preview_method="none", verbose=False, quiet=True)
    return argparse.Namespace(**{**defaults, **kw})


def test_default_bind_is_loopback():
    from nodegraph.cli import _build_parser
    args = _build_parser().parse_args(["serve"])
    assert args.listen == "127.0.0.1" and args.auth_token is None and args.insecure_no_auth is False


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.168.1.10", "127.0.0.1,0.0.0.0", "::"])
def test_refuses_to_serve_other_addresses_without_a_token(tmp_path, capsys, monkeypatch, listen):
    monkeypatch.delenv("NODEGRAPH_AUTH_TOKEN", raising=False)
    code = serve(_args(listen=listen), Folders(tmp_path), make_registry(), None)
    assert code == 2
    assert "--auth-token" in capsys.readouterr().err
    assert not (tmp_path / "user" / "nodegraph.sqlite3").exists()  # nothing started


# -- origin and host checks (no token, loopback) -----------------------------------------------

def test_cross_origin_requests_are_refused(server):
    host = f"127.0.0.1:{server.port}"
    assert _raw_get(server.port, "/prompt", {"Host": host})[0] == 200
    assert _raw_get(server.port, "/prompt", {"Host": host, "Origin": f"http://{host}"})[0] == 200
    assert _raw_get(server.port, "/prompt", {"Host": f"localhost:{server.port}",
                                              "Origin": f"http://localhost:{server.port}"})[0] == 200
    for origin in ("http://evil.example", f"http://evil.example:{server.port}", "null",
                   f"http://127.0.0.1:{server.port + 1}"):
        status, body = _raw_get(server.port, "/prompt", {"Host": host, "Origin": origin})
        assert status == 403 and b"cross-origin" in body, origin
    # a POST from another site is refused before it can queue anything
    response = server.post("/prompt", {"prompt": number_prompt()}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert server.get("/prompt").json()["exec_info"]["queue_remaining"] == 0


def test_dns_rebinding_host_is_refused(server):
    status, body = _raw_get(server.port, "/prompt", {"Host": f"attacker.example:{server.port}"})
    assert status == 403 and b"localhost" in body


def test_cross_origin_websocket_is_refused(server):
    from websockets.exceptions import InvalidStatus
    with pytest.raises(InvalidStatus) as info:
        WS(server.ws_url, origin="http://evil.example")
    assert info.value.response.status_code == 403


# -- token auth --------------------------------------------------------------------------------

@pytest.fixture
def guarded(tmp_path):
    live = LiveServer(tmp_path / "home", make_registry(), auth_token="s3cret", loopback_only=False)
    yield live
    live.stop()


def test_token_is_required_everywhere(guarded):
    for path in ("/prompt", "/api/object_info", "/queue", "/history", "/view?filename=a.png", "/"):
        response = guarded.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["type"] == "unauthorized"
    assert guarded.get("/prompt", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/prompt", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert guarded.get("/prompt", params={"token": "s3cret"}).status_code == 200
    assert guarded.get("/prompt", auth=("any", "s3cret")).status_code == 200  # HTTP Basic, token as password
    posted = guarded.post("/prompt", {"prompt": number_prompt()}, headers={"Authorization": "Bearer s3cret"})
    assert posted.status_code == 200


def test_websocket_takes_the_token_in_the_query(guarded):
    from websockets.exceptions import InvalidStatus
    with pytest.raises(InvalidStatus) as info:
        WS(guarded.ws_url + "?clientId=a")
    assert info.value.response.status_code == 401
    with WS(guarded.ws_url + "?clientId=a&token=s3cret") as ws:
        assert ws.recv()["data"]["sid"] == "a"
    with WS(guarded.ws_url + "?clientId=b", additional_headers={"Authorization": "Bearer s3cret"}) as ws:
        assert ws.recv()["data"]["sid"] == "b"


# -- paths -------------------------------------------------------------------------------------

ESCAPES = [
    {"filename": "../secret.txt"},
    {"filename": "..%2Fsecret.txt"},
    {"filename": "/etc/passwd"},
    {"filename": "secret.txt", "subfolder": ".."},
    {"filename": "secret.txt", "subfolder": "../.."},
    {"filename": "secret.txt", "subfolder": "/etc"},
    {"filename": "passwd", "subfolder": "/etc"},
    {"filename": "a/../../secret.txt"},
    {"filename": "..\\secret.txt"},
    {"filename": "secret.txt", "subfolder": "sub\\..\\.."},
    {"filename": "secret.txt", "type": "../output"},
    {"filename": "link.txt", "type": "input"},
    {"filename": "secret.txt", "subfolder": "dirlink", "type": "input"},
]


def test_view_refuses_every_escape(server):
    secret = server.layout.base / "secret.txt"
    secret.write_text("top secret")
    (server.layout.input / "link.txt").symlink_to(secret)
    (server.layout.input / "dirlink").symlink_to(server.layout.base)
    for params in ESCAPES:
        response = server.get("/view", params=params)
        assert response.status_code in (400, 403, 404), params
        assert b"top secret" not in response.content
        assert "error" in response.json()


@pytest.mark.parametrize("path", [
    "/view?filename=..%2F..%2Fsecret.txt", "/view?filename=%2E%2E%2Fsecret.txt", "/view?filename=%252E%252E%252Fsecret.txt",
    "/view?filename=secret.txt&subfolder=%2E%2E", "/view?filename=secret.txt&subfolder=..%5C..",
    "/userdata/..%2F..%2Fsecret.txt", "/userdata/%2E%2E%2F%2E%2E%2Fsecret.txt", "/userdata/%2Fetc%2Fpasswd",
    "/userdata/..%252F..%252Fsecret.txt", "/api/userdata/workflows%2F..%2F..%2F..%2Fsecret.txt",
    "/../secret.txt", "/%2E%2E/secret.txt", "/static/..%2F..%2Fsecret.txt",
    "/userdata?dir=..", "/userdata?dir=%2Fetc", "/v2/userdata?path=..%2F..",
])
def test_encoded_separators_and_dots_are_refused(server, path):
    (server.layout.base / "secret.txt").write_text("top secret")
    status, body = _raw_get(server.port, path, {"Host": f"127.0.0.1:{server.port}"})
    assert status in (400, 403, 404), (path, status)
    assert b"top secret" not in body and b"root:" not in body


def test_userdata_write_cannot_escape(server):
    for path in ("/userdata/..%2Fevil.json", "/userdata/%2Ftmp%2Fevil.json", "/userdata/a%2F..%2F..%2Fevil.json",
                 "/userdata/x.json/move/..%2F..%2Fevil.json"):
        server.post("/userdata/x.json", data=b"{}")
        response = server.post(path, data=b"{}")
        assert response.status_code in (400, 403, 404), path
    assert not (server.layout.user / "evil.json").exists()
    assert not (server.layout.base / "evil.json").exists()


def test_upload_cannot_escape(server):
    outside = server.layout.base / "outside"
    outside.mkdir()
    (server.layout.input / "out").symlink_to(outside)
    cases = [({"image": ("../evil.png", _png())}, {}),
             ({"image": ("evil.png", _png())}, {"subfolder": "../.."}),
             ({"image": ("evil.png", _png())}, {"subfolder": "/tmp"}),
             ({"image": ("evil.png", _png())}, {"subfolder": "out"}),
             ({"image": ("evil.png", _png())}, {"type": "../user"})]
    for files, data in cases:
        response = server.post("/upload/image", files=files, data=data)
        assert response.status_code in (400, 403), (files, data)
    assert not list(outside.iterdir())
    assert not list(server.layout.base.glob("evil*"))


def test_upload_must_be_an_image(server):
    response = server.post("/upload/image", files={"image": ("x.png", b"<script>alert(1)</script>")})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_image"
    assert not (server.layout.input / "x.png").exists()
    assert server.post("/upload/image", files={"other": ("x.png", _png())}).status_code == 400
    assert server.post("/upload/image", data=b"not multipart").status_code == 400


def test_upload_size_is_capped(tmp_path):
    live = LiveServer(tmp_path / "home", make_registry(), max_upload_size=64 * 1024)
    try:
        big = io.BytesIO()
        Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(big, format="PNG")
        assert len(big.getvalue()) > 64 * 1024
        response = live.post("/upload/image", files={"image": ("big.png", big.getvalue())})
        assert response.status_code == 413 and "error" in response.json()
        assert not (live.layout.input / "big.png").exists()
        assert live.post("/upload/image", files={"image": ("small.png", _png())}).status_code == 200
        assert live.get("/features").json()["max_upload_size"] == 64 * 1024
    finally:
        live.stop()


def test_view_never_serves_active_content(server):
    (server.layout.output / "page.html").write_text("<script>alert(1)</script>")
    (server.layout.output / "pic.svg").write_text("<svg onload='alert(1)'/>")
    for name in ("page.html", "pic.svg"):
        response = server.get("/view", params={"filename": name})
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
