"""Workflow formats: the API prompt the engine runs, the editor's UI graph, and PNG embedding."""
from .api_format import Prompt, is_link, normalize_api_prompt
from .document import WorkflowDocument, document_from_bytes, document_from_json, load_document, load_prompt
from .ui_format import ui_to_api

__all__ = ["Prompt", "WorkflowDocument", "document_from_bytes", "document_from_json", "is_link",
           "load_document", "load_prompt", "normalize_api_prompt", "ui_to_api"]
