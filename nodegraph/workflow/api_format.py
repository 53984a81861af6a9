"""The API "prompt" format — the one representation the engine executes.

`{node_id: {"class_type": str, "inputs": {name: value | [node_id, slot]}, "_meta": {...}}}`.
A 2-element list `[str, int]` is a link; `{"__value__": [...]}` wraps a literal list.
"""
from __future__ import annotations

from typing import Any

from ..errors import WorkflowError

Prompt = dict[str, dict[str, Any]]


def is_link(value: Any) -> bool:
    if type(value) is not list or len(value) != 2:  # fast path: most inputs are plain constants
        return False
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


def looks_like_api_prompt(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and ("class_type" in v or "inputs" in v) for v in data.values())


def normalize_api_prompt(data: Any) -> Prompt:
    """Check the structure and return a copy with string node ids and canonical links.

    Structural problems (not a dict, a node that is not an object, inputs that are not a dict)
    raise WorkflowError naming the node; semantic ones are left to validation.
    """
    if not isinstance(data, dict):
        raise WorkflowError(f"an API prompt must be a JSON object of nodes, got {type(data).__name__}")
    prompt: Prompt = {}
    for node_id, node in data.items():
        if not isinstance(node, dict):
            raise WorkflowError(f"node {node_id!s} must be an object with class_type and inputs, "
                                f"got {type(node).__name__}")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowError(f"node {node_id!s}: 'inputs' must be an object, got {type(inputs).__name__}")
        clean: dict[str, Any] = {}
        for name, value in inputs.items():
            clean[str(name)] = [str(value[0]), int(value[1])] if is_link(value) else value
        out = {"class_type": node.get("class_type"), "inputs": clean}
        if isinstance(node.get("_meta"), dict):
            out["_meta"] = dict(node["_meta"])
        prompt[str(node_id)] = out
    return prompt
