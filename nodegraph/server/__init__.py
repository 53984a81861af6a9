"""The ComfyUI-compatible HTTP + websocket server (aiohttp). See docs/server.md."""
from .app import create_app, serve

__all__ = ["create_app", "serve"]
