"""The editor's UI format (LiteGraph serialisation) converted to the API format.

What ComfyUI's frontend does in `graphToPrompt`, so a UI file and its API conversion execute
identically: subgraphs are flattened (`subgraphs`), positional `widgets_values` are mapped to input
names through the node definitions (`widget_values`, which also reads the legacy shapes of older
files), links are resolved through Reroutes, bypassed nodes, PrimitiveNodes and subgraph boundaries,
and muted, bypassed and virtual nodes are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract import NodeSpecs, types_compatible
from ..errors import RegistrationError, WorkflowError
from ..registry import NodeRegistry
from .api_format import Prompt
from .subgraphs import SUBGRAPH_INPUT, SUBGRAPH_OUTPUT, SUBGRAPH_VALUE, flatten, subgraph_definitions
from .widget_values import widget_inputs

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
VALUE_TYPES = frozenset({"PrimitiveNode", SUBGRAPH_VALUE})
VIRTUAL_TYPES = frozenset({"Reroute", "Note", "MarkdownNote", SUBGRAPH_INPUT, SUBGRAPH_OUTPUT}) | VALUE_TYPES
# Node types renamed since older files were saved (the frontend patches them on load).
RENAMED_TYPES = {"T2IAdapterLoader": "ControlNetLoader", "ConditioningAverage ": "ConditioningAverage",
                 "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning"}
UNRESOLVED = None  # nothing reaches the input: a widget keeps its own value


@dataclass(frozen=True)
class Link:
    id: str
    origin_id: str
    origin_slot: int
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
        self.registry = registry
        nodes, links = flatten(workflow, subgraph_definitions(workflow))
        self.nodes: dict[str, dict[str, Any]] = {}
        for node in nodes:
            kind = node.get("type")
            self.nodes[node["id"]] = dict(node, type=RENAMED_TYPES.get(kind, kind)) if kind in RENAMED_TYPES else node
        self.links = _parse_links(links)
        self._specs: dict[str, NodeSpecs | None] = {}

    def convert(self) -> Prompt:
        prompt: Prompt = {}
        for node_id, node in self.nodes.items():
            kind = node.get("type")
            if kind in VIRTUAL_TYPES or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
                continue
            inputs = self._widget_inputs(node_id, node)
            for slot in node.get("inputs") or []:
                if slot.get("link") is None:
                    continue
                source = self._resolve(slot["link"], slot.get("type", "*"), set())
                name = (slot.get("widget") or {}).get("name") or slot.get("name")
                if source is UNRESOLVED:
                    continue
                inputs[name] = source[1] if source[0] == "value" else [source[1], source[2]]
            entry: dict[str, Any] = {"class_type": kind, "inputs": inputs}
            entry["_meta"] = {"title": node.get("title") or self._display_name(kind)}
            prompt[node_id] = entry
        # An input whose origin node was dropped from the prompt (muted) is removed, as the frontend does.
        for entry in prompt.values():
            for name, value in list(entry["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] not in prompt:
                    del entry["inputs"][name]
        return prompt

    def _display_name(self, kind: str) -> str:
        definition = self.registry.get(kind)
        return definition.display_name if definition else str(kind)

    def _specs_of(self, kind: Any) -> NodeSpecs | None:
        if not isinstance(kind, str):
            return None
        if kind not in self._specs:
            definition = self.registry.get(kind)
            try:
                self._specs[kind] = definition.specs() if definition else None
            except RegistrationError:
                self._specs[kind] = None
        return self._specs[kind]

    def _widget_inputs(self, node_id: str, node: dict[str, Any]) -> dict[str, Any]:
        specs = self._specs_of(node.get("type"))
        if specs is None:
            return {}
        values = node.get("widgets_values")
        if values is not None and not isinstance(values, (list, dict)):
            raise WorkflowError(f"node {node_id} ({node.get('type')}): widgets_values must be a list")
        return widget_inputs(specs, values)

    def _resolve(self, link_id: Any, wanted_type: str, seen: set[str]) -> tuple | None:
        """Follow a link back to a real producer: ("link", id, slot), ("value", v) or UNRESOLVED."""
        key = str(link_id)
        if key in seen:
            raise WorkflowError("a cycle of Reroute, bypassed or subgraph boundary nodes")
        seen.add(key)
        link = self.links.get(key)
        if link is None:
            raise WorkflowError(f"link {link_id} is used by a node but missing from 'links'")
        origin = self.nodes.get(link.origin_id)
        if origin is None:
            raise WorkflowError(f"link {link.id} comes from node {link.origin_id}, which does not exist")
        kind, mode = origin.get("type"), origin.get("mode", MODE_ALWAYS)
        if mode == MODE_BYPASS or kind in ("Reroute", SUBGRAPH_INPUT, SUBGRAPH_OUTPUT):
            upstream = self._pass_through_input(origin, link.origin_slot, wanted_type)
            return UNRESOLVED if upstream is None else self._resolve(upstream, wanted_type, seen)
        if kind in VALUE_TYPES:
            values = origin.get("widgets_values") or []
            return ("value", values[0]) if values else UNRESOLVED
        if kind in VIRTUAL_TYPES:
            return UNRESOLVED
        return ("link", link.origin_id, link.origin_slot)  # a muted origin is dropped afterwards

    def _pass_through_input(self, node: dict[str, Any], slot: int, wanted_type: str) -> Any:
        """The input link a node forwards to its output `slot`. A Reroute and a subgraph boundary
        forward the input of the same index; a bypassed node the same index if its type fits, else
        the first input of exactly the wanted type, else the first compatible one (the frontend's rule)."""
        inputs = node.get("inputs") or []
        if node.get("type") in ("Reroute", SUBGRAPH_INPUT, SUBGRAPH_OUTPUT) and node.get("mode", 0) != MODE_BYPASS:
            index = 0 if node.get("type") == "Reroute" else slot
            return inputs[index].get("link") if index < len(inputs) else None
        if wanted_type in ("*", ""):
            index = slot if slot < len(inputs) else 0
            return inputs[index].get("link") if inputs else None
        outputs = node.get("outputs") or []
        output_type = outputs[slot].get("type", "*") if slot < len(outputs) else "*"

        def fits(slot_type: str) -> bool:
            return types_compatible(output_type, slot_type) and types_compatible(wanted_type, slot_type)

        if slot < len(inputs) and fits(str(inputs[slot].get("type", "*"))):
            return inputs[slot].get("link")
        for candidate in inputs:
            if candidate.get("type") == wanted_type:
                return candidate.get("link")
        for candidate in inputs:
            if fits(str(candidate.get("type", "*"))):
                return candidate.get("link")
        return None


def _parse_links(raw: list[list[Any]]) -> dict[str, Link]:
    links: dict[str, Link] = {}
    for item in raw:
        try:
            link = Link(str(item[0]), str(item[1]), int(item[2]), str(item[5]))
        except (TypeError, ValueError) as exc:
            raise WorkflowError(f"a link must be [id, origin, slot, target, slot, type], got {str(item)[:80]}") from exc
        links[link.id] = link
    return links
