"""Typed exceptions of the engine.

Every user-facing failure is one of these, carrying what a person needs to act on it; the server
and the CLI turn them into JSON or a readable message at their edge only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class NodegraphError(Exception):
    """Base of all engine errors."""


class WorkflowError(NodegraphError):
    """A workflow file or document that cannot be read as a workflow at all.

    `where` locates the problem (a file name, `line 3, column 7`, a node id) when known.
    """

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.where = where


class RegistrationError(NodegraphError):
    """A node class that does not follow the node contract."""


@dataclass
class NodeError:
    """One validation problem, in ComfyUI's per-node error shape."""

    type: str
    message: str
    details: str = ""
    extra_info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "details": self.details,
                "extra_info": self.extra_info}


class ValidationError(NodegraphError):
    """A prompt that failed validation: a top-level error plus every node's own problems.

    `error` is ComfyUI's top-level `{type, message, details, extra_info}`; `node_errors` maps node
    id to `{errors: [...], dependent_outputs: [...], class_type}` exactly as ComfyUI's 400 answer.
    """

    def __init__(self, error: NodeError, node_errors: dict[str, dict[str, Any]] | None = None):
        self.error = error
        self.node_errors = node_errors or {}
        super().__init__(self.describe())

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error.to_json(), "node_errors": self.node_errors}

    def describe(self) -> str:
        """All problems, one per line, each naming node id, class and input."""
        lines = [self.error.message + (f": {self.error.details}" if self.error.details and not self.node_errors else "")]
        for node_id, entry in self.node_errors.items():
            for err in entry["errors"]:
                name = err.get("extra_info", {}).get("input_name")
                where = f"node {node_id} ({entry['class_type']})" + (f", input '{name}'" if name else "")
                detail = f" — {err['details']}" if err.get("details") else ""
                lines.append(f"  {where}: {err['message']}{detail}")
        return "\n".join(lines)


class NodeInputError(NodegraphError, ValueError):
    """Raised by a node about one of its inputs (a missing file, a wrong shape). The executor adds
    `input_name` to the `execution_error` event, so front ends can point at the input."""

    def __init__(self, input_name: str, message: str):
        super().__init__(f"input '{input_name}': {message}")
        self.input_name = input_name


class ExecutionInterrupted(NodegraphError):
    """Raised inside a run when its cancellation token was triggered."""


@dataclass
class NodeExecutionError(NodegraphError):
    """A node raised while running. Carries ComfyUI's `execution_error` fields."""

    node_id: str
    node_type: str
    exception_type: str
    exception_message: str
    traceback: list[str]
    current_inputs: dict[str, list[str]]
    input_name: str | None = None  # when the node blamed one of its inputs (NodeInputError)

    def __str__(self) -> str:
        return (f"node {self.node_id} ({self.node_type}) failed: "
                f"{self.exception_type}: {self.exception_message}")
