"""Content-addressed cache keys of nodes.

A node's key hashes its class, its constant inputs, its fingerprint (external state such as a
file's contents) and, for each linked input, the key of the producer and the slot. Keys are thus
Merkle hashes of whole subgraphs: renumbering nodes or reusing a subgraph in another workflow
gives the same keys, and a change anywhere upstream changes every key below it. One pass, O(n).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import uuid
from typing import Any, Iterable

from .contract import NodeDefinition
from .graph import DependencyGraph
from .workflow.api_format import Prompt, is_link

log = logging.getLogger(__name__)


def compute_cache_keys(prompt: Prompt, definitions: dict[str, NodeDefinition], graph: DependencyGraph,
                       nodes: Iterable[str]) -> dict[str, str]:
    """Keys of `nodes` and all their ancestors."""
    keys: dict[str, str] = {}
    per_node_classes = {name for name, d in definitions.items() if d.not_idempotent or _takes_unique_id(d)}
    for root in nodes:
        # Iterative post-order: a node's key is computed after all of its producers' keys.
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            node_id, ready = stack.pop()
            if node_id in keys:
                continue
            if not ready:
                stack.append((node_id, True))
                stack.extend((s, False) for s in graph.sources(node_id) if s not in keys)
                continue
            definition = definitions[prompt[node_id]["class_type"]]
            keys[node_id] = _node_key(node_id, prompt[node_id], definition, keys, definition.name in per_node_classes)
    return keys


def _node_key(node_id: str, node: dict[str, Any], definition: NodeDefinition, keys: dict[str, str],
              per_node: bool) -> str:
    inputs = node.get("inputs", {})
    parts: list[Any] = [definition.name, definition.python_module]
    fingerprint = fingerprint_of(definition, inputs)
    if _is_nan(fingerprint):
        return "volatile:" + uuid.uuid4().hex  # NaN: "always re-run", and so must everything below
    parts.append(_canonical(fingerprint))
    if per_node:  # NOT_IDEMPOTENT, or the node sees its own id: never shared between nodes
        parts.append(["node", node_id])
    for name in sorted(inputs):
        value = inputs[name]
        if is_link(value):
            parts.append([name, "link", keys.get(str(value[0]), "missing"), int(value[1])])
        else:
            parts.append([name, _canonical(value)])
    return hashlib.blake2b(json.dumps(parts, separators=(",", ":")).encode(), digest_size=16).hexdigest()


def fingerprint_of(definition: NodeDefinition, inputs: dict[str, Any]) -> Any:
    """The node's fingerprint (IS_CHANGED) called with its constant inputs; linked ones are None,
    as in ComfyUI. An exception means "unknown", which re-runs the node (NaN)."""
    if definition.fingerprint is None:
        return False
    constants = {k: (None if is_link(v) else v) for k, v in inputs.items()}
    try:
        params = inspect.signature(definition.fingerprint).parameters.values()
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            names = {p.name for p in params}
            constants = {k: v for k, v in constants.items() if k in names}
        return definition.fingerprint(**constants)
    except Exception as exc:
        log.warning("%s: fingerprint failed (%s: %s); the node will re-run", definition.name, type(exc).__name__, exc)
        return float("nan")


def _takes_unique_id(definition: NodeDefinition) -> bool:
    try:
        return any(s.type == "UNIQUE_ID" for s in definition.specs().hidden)
    except Exception:
        return False


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _canonical(value: Any) -> Any:
    """A JSON-able, order-independent stand-in for a constant or fingerprint."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {"dict": sorted([str(k), _canonical(v)] for k, v in value.items())}
    if isinstance(value, (list, tuple)):
        return {"list": [_canonical(v) for v in value]}
    return {"repr": repr(value)}
