"""Reading a workflow from a file, text or PNG, whatever its format, into an API prompt."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WorkflowError
from ..registry import NodeRegistry
from .api_format import Prompt, looks_like_api_prompt, normalize_api_prompt
from .png import is_png, read_text_chunks
from .ui_format import looks_like_ui_workflow, ui_to_api


@dataclass
class WorkflowDocument:
    """A workflow as read: its format ("api" or "ui"), the parsed JSON, and where it came from.
    `ui` keeps the editor graph when there is one, to embed it again in saved PNGs."""

    kind: str
    data: dict[str, Any]
    source: str
    ui: dict[str, Any] | None = None

    def to_api(self, registry: NodeRegistry) -> Prompt:
        if self.kind == "ui":
            try:
                return normalize_api_prompt(ui_to_api(self.data, registry))
            except WorkflowError as exc:
                raise WorkflowError(exc.message, where=self.source) from exc
        return normalize_api_prompt(self.data)


def parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                            where=source) from exc


def document_from_json(data: Any, source: str) -> WorkflowDocument:
    """Detect the format of parsed JSON: UI graph, API prompt, or a POST /prompt body."""
    if not isinstance(data, dict):
        raise WorkflowError(f"a workflow must be a JSON object, got {type(data).__name__}", where=source)
    if looks_like_ui_workflow(data):
        return WorkflowDocument("ui", data, source, ui=data)
    if isinstance(data.get("prompt"), dict) and not looks_like_api_prompt(data):  # a /prompt request body
        workflow = ((data.get("extra_data") or {}).get("extra_pnginfo") or {}).get("workflow")
        return WorkflowDocument("api", data["prompt"], source, ui=workflow if isinstance(workflow, dict) else None)
    if looks_like_api_prompt(data):
        return WorkflowDocument("api", data, source)
    raise WorkflowError("neither an API prompt ({id: {class_type, inputs}}) nor a UI workflow "
                        "(with 'nodes' and 'links')", where=source)


def document_from_png(data: bytes, source: str) -> WorkflowDocument:
    """The workflow embedded in a PNG: the UI graph if present, else the API prompt."""
    chunks = read_text_chunks(data, source=source)
    ui = parse_json(chunks["workflow"], f"{source} [workflow chunk]") if "workflow" in chunks else None
    if "prompt" in chunks:
        prompt = parse_json(chunks["prompt"], f"{source} [prompt chunk]")
        if isinstance(ui, dict) and looks_like_ui_workflow(ui):
            return WorkflowDocument("ui", ui, source, ui=ui)
        return WorkflowDocument("api", prompt, source, ui=ui if isinstance(ui, dict) else None)
    if isinstance(ui, dict):
        return document_from_json(ui, source)
    raise WorkflowError("this PNG carries no workflow (no 'prompt' or 'workflow' text chunk)", where=source)


def load_document(path: str | Path) -> WorkflowDocument:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorkflowError("no such file", where=str(path)) from None
    except IsADirectoryError:
        raise WorkflowError("is a directory, not a workflow file", where=str(path)) from None
    except OSError as exc:
        raise WorkflowError(f"cannot read: {exc.strerror}", where=str(path)) from exc
    return document_from_bytes(raw, str(path))


def document_from_bytes(raw: bytes, source: str) -> WorkflowDocument:
    if is_png(raw):
        return document_from_png(raw, source)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkflowError("neither JSON text nor a PNG image", where=source) from None
    return document_from_json(parse_json(text, source), source)


def load_prompt(path: str | Path, registry: NodeRegistry) -> Prompt:
    """Shortcut: the API prompt of any workflow file."""
    return load_document(path).to_api(registry)
