"""The websocket protocol: ComfyUI's message shapes and order, one frame per message, previews,
reconnecting mid-run, interrupt within one step, and the cache seen through `execution_cached`."""
from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import time

from PIL import Image

from .server_nodes import number_prompt, png_prompt, preview_prompt, slow_prompt
from .wsclient import WS, done, of_type


def test_status_on_connect_carries_the_sid(server):
    with WS(server.ws_url + "?clientId=abc") as ws:
        first = ws.recv()
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "abc"}}


def test_a_server_generated_sid_when_none_is_given(server):
    with WS(server.ws_url) as ws:
        first = ws.recv()
    assert first["type"] == "status" and len(first["data"]["sid"]) == 32


def test_message_sequence_of_one_prompt(server):
    with WS(server.ws_url + "?clientId=abc") as ws:
        ws.recv()
        prompt_id = server.queue(number_prompt(3.0), client_id="abc")["prompt_id"]
        messages = ws.until(done(prompt_id))
        # "done" means the history is already there
        assert server.get(f"/history/{prompt_id}").json()[prompt_id]["status"]["completed"] is True

    types = [m["type"] for m in messages]
    start = types.index("execution_start")
    assert types[start:start + 2] == ["execution_start", "execution_cached"]
    assert types[-3:] == ["execution_success", "status", "executing"], types
    assert messages[-2]["data"] == {"status": {"exec_info": {"queue_remaining": 0}}}
    assert "status" in types[:start]  # queued: queue_remaining 1 was broadcast

    data = {m["type"]: m["data"] for m in messages}
    assert set(data["execution_start"]) == {"prompt_id", "timestamp"}
    assert data["execution_cached"]["nodes"] == [] and data["execution_cached"]["prompt_id"] == prompt_id
    executing = [m["data"] for m in of_type(messages, "executing")]
    assert [e["node"] for e in executing] == ["1", "2", "3", None]
    assert executing[0] == {"node": "1", "display_node": "1", "prompt_id": prompt_id}
    assert data["executed"] == {"node": "3", "display_node": "3", "output": {"text": ["6.0"]}, "prompt_id": prompt_id}
    assert set(data["execution_success"]) == {"prompt_id", "timestamp"}
    state = of_type(messages, "progress_state")[-1]["data"]
    assert state["prompt_id"] == prompt_id and {n["state"] for n in state["nodes"].values()} == {"finished"}


def test_requeue_of_an_unchanged_workflow_runs_no_node(server, calls):
    with WS(server.ws_url + "?clientId=c") as ws:
        ws.recv()
        first = server.queue(number_prompt(5.0), client_id="c")["prompt_id"]
        ws.until(done(first))
        calls.clear()
        second = server.queue(number_prompt(5.0), client_id="c")["prompt_id"]
        messages = ws.until(done(second))
    assert sum(calls.values()) == 0
    cached = of_type(messages, "execution_cached")[0]["data"]
    assert sorted(cached["nodes"]) == ["1", "2", "3"]
    assert [m["data"]["node"] for m in of_type(messages, "executing")] == [None]
    # the cached output node is still visited: its UI is sent again
    assert of_type(messages, "executed")[0]["data"]["output"] == {"text": ["10.0"]}
    history = server.get(f"/history/{second}").json()[second]
    assert history["outputs"] == {"3": {"text": ["10.0"]}}
    assert ["execution_cached", cached] in history["status"]["messages"]


def test_progress_then_interrupt_lands_within_one_step(server):
    delay = 0.1
    with WS(server.ws_url + "?clientId=i") as ws:
        ws.recv()
        prompt_id = server.queue(slow_prompt(steps=500, delay=delay), client_id="i")["prompt_id"]
        progress = ws.until(lambda m: m["type"] == "progress" and m["data"]["value"] >= 2)[-1]["data"]
        assert progress == {"value": 2, "max": 500, "prompt_id": prompt_id, "node": "2"}
        assert server.post("/interrupt", {"prompt_id": "someone-else"}).status_code == 200  # not running: no-op
        sent = time.monotonic()
        assert server.post("/interrupt", {"prompt_id": prompt_id}).status_code == 200
        after = ws.until(lambda m: m["type"] == "execution_interrupted")
        elapsed = time.monotonic() - sent
        rest = ws.until(done(prompt_id))
    late_steps = [m["data"]["value"] for m in of_type(after, "progress")]
    assert len(late_steps) <= 1, late_steps  # at most the step that was running
    assert elapsed < 2 * delay + 0.5
    interrupted = of_type(after, "execution_interrupted")[0]["data"]
    assert interrupted["node_id"] == "2" and interrupted["node_type"] == "Slow" and interrupted["prompt_id"] == prompt_id
    assert interrupted["executed"] == ["1"]
    assert [m["type"] for m in rest][-2:] == ["status", "executing"]
    status = server.get(f"/history/{prompt_id}").json()[prompt_id]["status"]
    assert status["status_str"] == "error" and status["completed"] is False


def test_global_interrupt_and_the_queue_goes_on(server):
    with WS(server.ws_url + "?clientId=g") as ws:
        ws.recv()
        slow = server.queue(slow_prompt(steps=500, delay=0.05), client_id="g")["prompt_id"]
        after = server.queue(number_prompt(7.0), client_id="g")["prompt_id"]
        ws.until(lambda m: m["type"] == "progress")
        server.post("/interrupt", data=b"")
        ws.until(done(slow))
        ws.until(done(after))
    assert server.get(f"/history/{after}").json()[after]["status"]["status_str"] == "success"


def test_reconnect_mid_run_gets_prompt_node_and_progress_at_once(server):
    ws = WS(server.ws_url + "?clientId=r")
    ws.recv()
    prompt_id = server.queue(slow_prompt(steps=500, delay=0.05), client_id="r")["prompt_id"]
    ws.until(lambda m: m["type"] == "progress" and m["data"]["value"] >= 3)
    ws.close()
    time.sleep(0.2)
    with WS(server.ws_url + "?clientId=r") as again:
        status, executing, progress = again.recv(2), again.recv(2), again.recv(2)
        assert status["type"] == "status" and status["data"]["sid"] == "r"
        assert status["data"]["status"]["exec_info"]["queue_remaining"] == 1
        assert executing == {"type": "executing", "data": {"node": "2", "display_node": "2", "prompt_id": prompt_id}}
        assert progress["type"] == "progress" and progress["data"]["node"] == "2" and progress["data"]["value"] >= 3
        assert progress["data"]["max"] == 500 and progress["data"]["prompt_id"] == prompt_id
        server.post("/interrupt")
        again.until(done(prompt_id))
    # another client learns nothing of a run that is not its own
    with WS(server.ws_url + "?clientId=other") as other:
        other.recv()
        prompt_id = server.queue(slow_prompt(steps=500, delay=0.05), client_id="r")["prompt_id"]
        time.sleep(0.3)
        with WS(server.ws_url + "?clientId=stranger") as stranger:
            assert stranger.recv()["type"] == "status"
            server.post("/interrupt")
            messages = stranger.until(lambda m: m["type"] == "status" and
                                      m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
            assert of_type(messages, "executing") == [] and of_type(messages, "progress") == []


def test_prompts_without_client_id_broadcast_only_progress_and_status(server):
    with WS(server.ws_url + "?clientId=watcher") as ws:
        ws.recv()
        prompt_id = server.queue(slow_prompt(steps=3, delay=0.0))["prompt_id"]
        messages = ws.until(lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
        server.wait_history(prompt_id)
    kinds = {m["type"] for m in messages}
    assert "progress" in kinds and "status" in kinds
    assert not kinds & {"execution_start", "executing", "executed", "execution_success"}


def test_execution_error_message(server):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 1}},
              "2": {"class_type": "Fail", "inputs": {"a": ["1", 0], "message": "kaput"}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    with WS(server.ws_url + "?clientId=e") as ws:
        ws.recv()
        prompt_id = server.queue(prompt, client_id="e")["prompt_id"]
        messages = ws.until(done(prompt_id))
    error = of_type(messages, "execution_error")[0]["data"]
    assert {"prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type", "traceback",
            "current_inputs", "current_outputs", "timestamp"} <= set(error)
    assert (error["node_id"], error["node_type"], error["exception_message"]) == ("2", "Fail", "kaput")
    assert error["exception_type"] == "RuntimeError"
    assert server.get(f"/history/{prompt_id}").json()[prompt_id]["status"]["status_str"] == "error"


def test_previews_only_to_clients_that_ask(server):
    with WS(server.ws_url + "?clientId=ui") as ui, WS(server.ws_url + "?clientId=script") as script, \
            WS(server.ws_url + "?clientId=old&previews=1") as old:
        for ws in (ui, script, old):
            ws.recv()
        ui.send({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        assert ui.recv() == {"type": "feature_flags",
                             "data": {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}}
        runs = {}
        for name, ws in (("ui", ui), ("script", script), ("old", old)):
            prompt_id = server.queue(preview_prompt(value=len(runs), steps=3), client_id=name)["prompt_id"]
            runs[name] = ws.until(done(prompt_id))
    frames = {name: [m for m in messages if isinstance(m, bytes)] for name, messages in runs.items()}
    assert frames["script"] == []
    assert len(frames["ui"]) == 3 and len(frames["old"]) == 3
    event, length = struct.unpack(">II", frames["ui"][0][:8])
    meta = json.loads(frames["ui"][0][8:8 + length])
    assert event == 4 and meta["node_id"] == "2" and meta["image_type"] == "image/jpeg"
    assert Image.open(io.BytesIO(frames["ui"][0][8 + length:])).size == (8, 8)
    assert struct.unpack(">II", frames["old"][0][:8]) == (1, 1)
    assert Image.open(io.BytesIO(frames["old"][0][8:])).format == "JPEG"


def _read_frame(sock: socket.socket) -> tuple[bool, int, bytes]:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    b0, b1 = exact(2)
    length = b1 & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", exact(2))
    elif length == 127:
        (length,) = struct.unpack(">Q", exact(8))
    return bool(b0 & 0x80), b0 & 0x0F, exact(length)


def test_every_message_is_one_unfragmented_frame(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws?clientId=raw HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101") and b"permessage-deflate" not in head.lower()
    prompt_id = server.queue(png_prompt(2.0), client_id="raw")["prompt_id"]
    frames = []
    while True:
        fin, opcode, payload = _read_frame(sock)
        frames.append((fin, opcode))
        message = json.loads(payload)
        assert set(message) == {"type", "data"}
        if message["type"] == "executing" and message["data"]["node"] is None and message["data"]["prompt_id"] == prompt_id:
            break
    sock.close()
    assert len(frames) >= 8
    assert all(fin and opcode == 1 for fin, opcode in frames)
