"""The editor's UI format (LiteGraph serialisation) converted to the API format.

Positional `widgets_values` are mapped to input names through the node definitions (skipping the
seed's `control_after_generate` value), links are resolved through Reroutes, bypassed nodes and
PrimitiveNodes, and muted, bypassed and virtual nodes are dropped — what ComfyUI's frontend does
in `graphToPrompt`, so a UI file and its API conversion execute identically.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract import NodeSpecs, types_compatible
from ..errors import RegistrationError, WorkflowError
from ..registry import NodeRegistry
from .api_format import Prompt

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
SEED_CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
LEGACY_SEED_NAMES = frozenset({"seed", "noise_seed"})  # older frontends added the control by name


@dataclass(frozen=True)
class Link:
    id: int
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: str


def looks_like_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and (
        isinstance(data.get("links"), list) or data.get("version") == 1)


def ui_to_api(workflow: dict[str, Any], registry: NodeRegistry) -> Prompt:
    """Convert a UI-format workflow to an API prompt, using the registry's node definitions."""
    return _Converter(workflow, registry).convert()


class _Converter:
    def __init__(self, workflow: dict[str, Any], registry: NodeRegistry):
        if not looks_like_ui_workflow(workflow):
            raise WorkflowError("not a UI-format workflow (expected 'nodes' and 'links' arrays)")
        if (workflow.get("definitions") or {}).get("subgraphs"):
            raise WorkflowError("this workflow uses subgraphs, which nodegraph does not run yet; "
                                "unpack them in the editor (right-click > Unpack Subgraph) and save again")
        self.registry = registry
        self.nodes: dict[str, dict[str, Any]] = {}
        for node in workflow["nodes"]:
            if not isinstance(node, dict) or "id" not in node:
                raise WorkflowError(f"a node in 'nodes' has no id: {str(node)[:80]}")
            self.nodes[str(node["id"])] = node
        self.links = _parse_links(workflow.get("links") or [])
        self._specs: dict[str, NodeSpecs | None] = {}

    def convert(self) -> Prompt:
        prompt: Prompt = {}
        for node_id, node in self.nodes.items():
            kind = node.get("type")
            if kind in VIRTUAL_TYPES or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
                continue
            inputs = self._widget_inputs(node_id, node)
            for slot in node.get("inputs") or []:
                link_id = slot.get("link")
                if link_id is None:
                    continue
                source = self._resolve(link_id, slot.get("type", "*"))
                if source is None:
                    inputs.pop(slot.get("name"), None)  # origin muted or unreachable: input left empty
                elif source[0] == "value":
                    inputs[slot["name"]] = source[1]
                else:
                    inputs[slot["name"]] = [source[1], source[2]]
            entry: dict[str, Any] = {"class_type": kind, "inputs": inputs}
            entry["_meta"] = {"title": node.get("title") or self._display_name(kind)}
            prompt[node_id] = entry
        # An input whose origin node was dropped from the prompt is removed, as the frontend does.
        for entry in prompt.values():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] not in prompt:
                    del entry["inputs"][name]
        return prompt

    def _display_name(self, kind: str) -> str:
        definition = self.registry.get(kind)
        return definition.display_name if definition else str(kind)

    def _specs_of(self, kind: str) -> NodeSpecs | None:
        if kind not in self._specs:
            definition = self.registry.get(kind)
            try:
                self._specs[kind] = definition.specs() if definition else None
            except RegistrationError:
                self._specs[kind] = None
        return self._specs[kind]

    def _widget_inputs(self, node_id: str, node: dict[str, Any]) -> dict[str, Any]:
        values = node.get("widgets_values")
        specs = self._specs_of(node.get("type"))
        if specs is None or values is None:
            return {}
        widgets = [s for s in specs.declared() if s.is_widget]
        if isinstance(values, dict):  # some custom nodes save widgets by name
            return {s.name: values[s.name] for s in widgets if s.name in values}
        if not isinstance(values, list):
            raise WorkflowError(f"node {node_id} ({node.get('type')}): widgets_values must be a list")
        inputs: dict[str, Any] = {}
        position = 0
        for spec in widgets:
            if position >= len(values):
                break
            inputs[spec.name] = values[position]
            position += 1
            has_control = spec.options.get("control_after_generate") or spec.name in LEGACY_SEED_NAMES
            if (spec.type == "INT" and has_control and position < len(values)
                    and values[position] in SEED_CONTROL_VALUES):
                position += 1  # the frontend-only "control after generate" value
        return inputs

    def _resolve(self, link_id: Any, wanted_type: str, depth: int = 0) -> tuple | None:
        """Follow a link back to a real producer: ("link", id, slot), ("value", v) or None."""
        if depth > len(self.nodes) + 1:
            raise WorkflowError("a cycle of Reroute or bypassed nodes")
        link = self.links.get(_link_key(link_id))
        if link is None:
            raise WorkflowError(f"link {link_id} is used by a node but missing from 'links'")
        origin = self.nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowError(f"link {link.id} comes from node {link.origin_id}, which does not exist")
        kind, mode = origin.get("type"), origin.get("mode", MODE_ALWAYS)
        if kind == "Reroute" or mode == MODE_BYPASS:
            upstream = self._pass_through_input(origin, link.origin_slot, wanted_type)
            return None if upstream is None else self._resolve(upstream, wanted_type, depth + 1)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if kind in VIRTUAL_TYPES or mode == MODE_NEVER:
            return None
        return ("link", link.origin_id, link.origin_slot)

    def _pass_through_input(self, node: dict[str, Any], slot: int, wanted_type: str) -> Any:
        """The input link a bypassed node (or Reroute) forwards to its output `slot`: the same
        index if the type fits, else the first input of exactly that type, else the first that fits."""
        inputs = [i for i in (node.get("inputs") or []) if i.get("link") is not None]
        if node.get("type") == "Reroute":
            return inputs[0]["link"] if inputs else None
        all_inputs = node.get("inputs") or []
        if slot < len(all_inputs) and all_inputs[slot].get("link") is not None and \
                types_compatible(all_inputs[slot].get("type", "*"), wanted_type):
            return all_inputs[slot]["link"]
        for candidate in inputs:
            if candidate.get("type") == wanted_type:
                return candidate["link"]
        for candidate in inputs:
            if types_compatible(candidate.get("type", "*"), wanted_type):
                return candidate["link"]
        return None


def _link_key(link_id: Any) -> str:
    return str(link_id)


def _parse_links(raw: list[Any]) -> dict[str, Link]:
    links: dict[str, Link] = {}
    for item in raw:
        if isinstance(item, list) and len(item) >= 5:
            link = Link(int(item[0]), str(item[1]), int(item[2]), str(item[3]), int(item[4]),
                        str(item[5]) if len(item) > 5 else "*")
        elif isinstance(item, dict) and "id" in item:
            link = Link(int(item["id"]), str(item["origin_id"]), int(item["origin_slot"]),
                        str(item["target_id"]), int(item["target_slot"]), str(item.get("type", "*")))
        else:
            raise WorkflowError(f"a link must be [id, origin, slot, target, slot, type], got {str(item)[:80]}")
        links[_link_key(link.id)] = link
    return links
