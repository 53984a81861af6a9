"""The prompt queue and history: one priority queue, persisted in SQLite, and the backends that run
its prompts (the embedded worker thread; Ray worker actors). No torch, no aiohttp, no ray here.
"""
from .backend import Backend, RayOptions
from .queue import PromptQueue, QueueItem, history_entry
from .worker import Worker

__all__ = ["Backend", "PromptQueue", "QueueItem", "RayOptions", "Worker", "history_entry"]
