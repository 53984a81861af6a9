"""A real server on 127.0.0.1 (a free port) in a background thread, for tests and the benchmark."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from nodegraph.folders import Folders
from nodegraph.server.app import STATE, create_app


class LiveServer:
    def __init__(self, base: Path, registry, **options: Any):
        self.layout = Folders(base)
        self.app = create_app(self.layout, registry, **options)
        self.state = self.app[STATE]
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server did not start")
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.http = requests.Session()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def stop(self) -> None:
        self.http.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(20)

    # -- helpers --------------------------------------------------------------------------------

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        if body is not None and "data" not in kw and "files" not in kw:
            kw["data"] = json.dumps(body)
        return self.http.post(self.url + path, timeout=30, **kw)

    def queue(self, prompt: dict, **fields: Any) -> dict:
        response = self.post("/prompt", {"prompt": prompt, **fields})
        assert response.status_code == 200, response.text
        return response.json()

    def wait_history(self, prompt_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").json()
            if entry:
                return entry[prompt_id]
            time.sleep(0.02)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s")

    def wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/prompt").json()["exec_info"]["queue_remaining"] == 0:
                return
            time.sleep(0.02)
        raise TimeoutError("queue did not drain")


def wait_until(predicate, timeout: float = 10, interval: float = 0.02) -> None:
    """Poll `predicate` until it is true; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s")
        time.sleep(interval)
