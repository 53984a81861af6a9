"""The websocket hub: `/ws?clientId=`, routing of execution events to sockets, binary previews.

Events come from the worker thread: they are serialised there (one JSON text per message, sent
as one unfragmented text frame) and handed to the event loop, where each socket has its own
outbound queue and writer task, so one slow client never delays the others. The hub also keeps
what runs now (per running prompt: node, last progress) for clients that reconnect mid-run.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSMsgType, web

from ..queue.relay import encode_jpeg

log = logging.getLogger(__name__)

# Without a client id, ComfyUI sends only these execution events, to everybody.
BROADCAST_WITHOUT_CLIENT = frozenset({"execution_interrupted", "progress", "progress_state"})
PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4
JPEG = 1
MAX_BACKLOG = 1000  # messages queued for one socket before previews are dropped for it


def dumps(event: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": event, "data": data}, separators=(",", ":"), default=str)


@dataclass(eq=False)
class Client:
    sid: str
    ws: web.WebSocketResponse
    wants_previews: bool = False
    preview_metadata: bool = False
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    writer: asyncio.Task | None = None

    def send(self, message: str | bytes) -> None:
        self.outbox.put_nowait(message)

    async def write_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            try:
                if isinstance(message, str):
                    await self.ws.send_str(message)
                else:
                    await self.ws.send_bytes(message)
            except (ConnectionError, RuntimeError, asyncio.CancelledError):
                return


@dataclass
class RunState:
    """What one running prompt is doing, for a client that reconnects mid-run."""
    prompt_id: str | None = None
    client_id: str | None = None
    executing: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None


class Hub:
    def __init__(self, *, queue_remaining: Callable[[], int], max_upload_size: int, previews_enabled: bool = True):
        self.clients: dict[str, Client] = {}
        self.running: dict[str, RunState] = {}  # prompt id -> state, in start order
        self.queue_remaining = queue_remaining
        self.max_upload_size = max_upload_size
        self.previews_enabled = previews_enabled
        self.loop: asyncio.AbstractEventLoop | None = None
        self._post_lock = threading.Lock()
        self._unsent_status: list[int] | None = None  # the last status posted, while nothing follows it

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # -- from any thread ------------------------------------------------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed while shutting down
            pass

    def publish(self, event: str, data: dict[str, Any], client_id: str | None) -> None:
        """An execution event of a prompt whose `extra_data.client_id` is `client_id`."""
        view, message = _state_view(event, data), dumps(event, data)
        with self._post_lock:
            self._unsent_status = None  # a later status must come after this message
            self._post(self._dispatch, event, view, message, client_id)

    def broadcast_status(self) -> None:
        """Queue size to everybody. Consecutive status messages with nothing else posted between
        them are merged (the later count wins), so a burst of POSTs is one message per socket."""
        with self._post_lock:
            remaining = self.queue_remaining()
            box = self._unsent_status
            if box is not None:
                box[0] = remaining
                return
            box = self._unsent_status = [remaining]
            self._post(self._send_status, box)

    def preview(self, image: Any, data: dict[str, Any], client_id: str | None) -> None:
        """A sampler preview: a PIL image, JPEG-encoded here in the worker thread only if someone wants
        it, or JPEG bytes a remote worker encoded."""
        if not self.previews_enabled or not self._anyone_wants_preview(client_id):
            return
        jpeg = bytes(image) if isinstance(image, (bytes, bytearray)) else encode_jpeg(image)
        if jpeg is None:
            return
        with self._post_lock:
            self._unsent_status = None
            self._post(self._send_preview, jpeg, data, client_id)

    def wants_preview(self, client_id: str | None) -> bool:
        return self.previews_enabled and self._anyone_wants_preview(client_id)

    def _anyone_wants_preview(self, client_id: str | None) -> bool:
        if client_id is not None:
            client = self.clients.get(client_id)
            return client is not None and client.wants_previews
        return any(c.wants_previews for c in list(self.clients.values()))

    # -- on the event loop ----------------------------------------------------------------------

    def status_message(self, sid: str | None = None, remaining: int | None = None) -> str:
        remaining = self.queue_remaining() if remaining is None else remaining
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": remaining}}}
        if sid is not None:
            data["sid"] = sid
        return dumps("status", data)

    def _send_status(self, box: list[int]) -> None:
        with self._post_lock:
            if self._unsent_status is box:
                self._unsent_status = None
            remaining = box[0]
        message = self.status_message(remaining=remaining)
        for client in list(self.clients.values()):
            client.send(message)

    def _dispatch(self, event: str, view: dict[str, Any], message: str, client_id: str | None) -> None:
        self._track(event, view, client_id)
        if client_id is not None:
            client = self.clients.get(client_id)
            if client is not None:
                client.send(message)
        elif event in BROADCAST_WITHOUT_CLIENT:
            for client in list(self.clients.values()):
                client.send(message)

    def _track(self, event: str, view: dict[str, Any], client_id: str | None) -> None:
        prompt_id = view.get("prompt_id")
        if not isinstance(prompt_id, str):
            return
        if event == "execution_start":
            self.running.pop(prompt_id, None)  # a prompt run again (its worker was lost) starts afresh
            self.running[prompt_id] = RunState(prompt_id, client_id)
        elif event == "executing":
            if view.get("node") is None:
                self.running.pop(prompt_id, None)
            else:
                state = self.running.setdefault(prompt_id, RunState(prompt_id, client_id))
                state.executing, state.progress = view, None
        elif event == "progress" and prompt_id in self.running:
            self.running[prompt_id].progress = view

    def _send_preview(self, jpeg: bytes, data: dict[str, Any], client_id: str | None) -> None:
        targets = [self.clients.get(client_id)] if client_id is not None else list(self.clients.values())
        plain = meta_frame = None
        for client in targets:
            if client is None or not client.wants_previews or client.outbox.qsize() > MAX_BACKLOG:
                continue
            if client.preview_metadata:
                if meta_frame is None:
                    node = data.get("node")
                    meta = json.dumps({"node_id": node, "prompt_id": data.get("prompt_id"), "display_node_id": node,
                                       "parent_node_id": None, "real_node_id": node,
                                       "image_type": "image/jpeg"}).encode()
                    meta_frame = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + jpeg
                client.send(meta_frame)
            else:
                if plain is None:
                    plain = struct.pack(">II", PREVIEW_IMAGE, JPEG) + jpeg
                client.send(plain)

    # -- the /ws route --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # No compression and no fragmentation: each message is one plain text frame.
        ws = web.WebSocketResponse(compress=False, heartbeat=30.0, max_msg_size=1024 * 1024)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        sid = sid[:200]
        client = Client(sid, ws, wants_previews=request.query.get("previews", "").lower() in ("1", "true", "yes"))
        old = self.clients.get(sid)
        if old is not None:  # the same id reconnected: the new socket replaces the old one
            old.send(None)  # type: ignore[arg-type]
            await old.ws.close()
        self.clients[sid] = client
        client.send(self.status_message(sid))
        self._send_snapshot(client)
        client.writer = asyncio.create_task(client.write_loop())
        first = True
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and first:
                    self._client_message(client, msg.data)
                first = False
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.send(None)  # type: ignore[arg-type]
        return ws

    def _send_snapshot(self, client: Client) -> None:
        for state in list(self.running.values()):
            if state.executing is None or (state.client_id is not None and state.client_id != client.sid):
                continue
            client.send(dumps("executing", state.executing))
            if state.progress is not None and state.progress.get("node") == state.executing.get("node"):
                client.send(dumps("progress", state.progress))

    def _client_message(self, client: Client, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("type") != "feature_flags":
            return
        flags = message.get("data") if isinstance(message.get("data"), dict) else {}
        client.wants_previews = True  # a client that negotiates features is a UI: it shows previews
        client.preview_metadata = bool(flags.get("supports_preview_metadata"))
        client.send(dumps("feature_flags", {"supports_preview_metadata": True,
                                            "max_upload_size": self.max_upload_size}))

    async def close_all(self) -> None:
        for client in list(self.clients.values()):
            client.send(None)  # type: ignore[arg-type]
            await client.ws.close()
        self.clients.clear()


def _state_view(event: str, data: dict[str, Any]) -> dict[str, Any]:
    """The small copy of an event the hub keeps (taken in the sending thread)."""
    if event in ("executing", "progress", "execution_start"):
        return dict(data)
    return {"prompt_id": data.get("prompt_id")}
