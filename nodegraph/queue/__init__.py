"""The prompt queue and history: one priority queue, persisted in SQLite, and the worker thread
that runs one prompt at a time. No torch, no aiohttp: the server wires it to HTTP.
"""
from .queue import PromptQueue, QueueItem, history_entry
from .worker import Worker

__all__ = ["PromptQueue", "QueueItem", "Worker", "history_entry"]
