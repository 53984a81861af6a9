"""Subgraphs (ComfyUI's `definitions.subgraphs`) flattened into one graph the UI converter reads.

A subgraph instance is a node whose `type` is a definition's id. Its inner nodes become nodes with
colon-path ids (`"5:12"`, nested `"5:3:12"`, as ComfyUI's frontend numbers them). The boundary stays
as two virtual nodes that links resolve through, as the frontend resolves them: the definition's
input node (`"5:-10"`), whose output k forwards the instance's input k (a link from outside, or the
value of the instance's widget for that input), and the instance itself, whose output j forwards the
inner link that reaches the definition's output j. A missing definition or a subgraph that contains
itself is a ValidationError naming the node and the subgraph.
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import NodeError, ValidationError, WorkflowError

SUBGRAPH_INPUT = "__SubgraphInput__"    # virtual: output k = the instance's input k
SUBGRAPH_OUTPUT = "__SubgraphOutput__"  # virtual: output j = the inner producer of the subgraph's output j
SUBGRAPH_VALUE = "__SubgraphValue__"    # virtual: a constant (an instance widget's value)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
MAX_FLAT_NODES = 100_000  # nested instances multiply; a file that expands beyond this is refused
MODE_NEVER, MODE_BYPASS = 2, 4


def subgraph_definitions(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every definition by id: the root's `definitions.subgraphs` and any nested `definitions`."""
    found: dict[str, dict[str, Any]] = {}
    pending = [workflow]
    while pending:
        graph = pending.pop()
        for definition in ((graph.get("definitions") or {}).get("subgraphs") or []):
            if not isinstance(definition, dict) or not isinstance(definition.get("id"), str):
                raise WorkflowError("a subgraph definition has no id")
            if definition["id"] not in found:
                found[definition["id"]] = definition
                pending.append(definition)
    return found


def looks_like_subgraph_type(kind: Any) -> bool:
    return isinstance(kind, str) and bool(UUID.match(kind))


def flatten(workflow: dict[str, Any], definitions: dict[str, dict[str, Any]]) -> tuple[list[dict], list[list]]:
    """(nodes, links) of one flat graph: node ids and link ids are strings, links are
    `[id, origin_id, origin_slot, target_id, target_slot, type]`."""
    flat = _Flattener(definitions)
    flat.add_graph(workflow, prefix="", stack=())
    return flat.nodes, flat.links


class _Flattener:
    def __init__(self, definitions: dict[str, dict[str, Any]]):
        self.definitions = definitions
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []

    def add_graph(self, graph: dict[str, Any], prefix: str, stack: tuple[str, ...]) -> None:
        for link in _links_of(graph):
            self.links.append([prefix + str(link[0]), prefix + str(link[1]), link[2],
                               prefix + str(link[3]), link[4], link[5]])
        for node in graph.get("nodes") or []:
            if not isinstance(node, dict) or "id" not in node:
                raise WorkflowError(f"a node in 'nodes' has no id: {str(node)[:80]}")
            kind = node.get("type")
            definition = self.definitions.get(kind) if isinstance(kind, str) else None
            if definition is None and looks_like_subgraph_type(kind):
                raise _subgraph_error(prefix + str(node["id"]), kind, "missing_subgraph_definition",
                                      f"uses subgraph {kind}, whose definition is not in the file's "
                                      f"definitions.subgraphs (saved from another workflow?)")
            if definition is not None and node.get("mode", 0) not in (MODE_NEVER, MODE_BYPASS):
                self.add_instance(node, definition, prefix, stack)
            else:
                self.add_node(node, prefix)
            if len(self.nodes) > MAX_FLAT_NODES:
                raise WorkflowError(f"the subgraphs expand to more than {MAX_FLAT_NODES} nodes")

    def add_node(self, node: dict[str, Any], prefix: str) -> None:
        copy = dict(node, id=prefix + str(node["id"]))
        copy["inputs"] = [_renamed_input(i, prefix) for i in node.get("inputs") or [] if isinstance(i, dict)]
        self.nodes.append(copy)

    def add_instance(self, node: dict[str, Any], definition: dict[str, Any], prefix: str,
                     stack: tuple[str, ...]) -> None:
        instance_id = prefix + str(node["id"])
        if definition["id"] in stack:
            names = " -> ".join(_name(self.definitions[s]) for s in stack + (definition["id"],))
            raise _subgraph_error(instance_id, definition["id"], "subgraph_cycle",
                                  f"subgraph {_name(definition)} contains itself ({names})")
        inner = instance_id + ":"
        self.add_graph(definition, inner, stack + (definition["id"],))
        sub_inputs = [i for i in definition.get("inputs") or [] if isinstance(i, dict)]
        sub_outputs = [o for o in definition.get("outputs") or [] if isinstance(o, dict)]
        input_node_id = (definition.get("inputNode") or {}).get("id", -10)
        output_node_id = (definition.get("outputNode") or {}).get("id", -20)

        # The definition's input node: output k forwards the instance's input k.
        by_name = {i.get("name"): i for i in node.get("inputs") or [] if isinstance(i, dict)}
        widget_values = _instance_widget_values(node, definition, sub_inputs, input_node_id)
        forwarded = []
        for k, sub_input in enumerate(sub_inputs):
            outer = by_name.get(sub_input.get("name"))
            link = outer.get("link") if outer else None
            if link is None and k in widget_values:
                value_id = f"{inner}{input_node_id}:value{k}"
                self.nodes.append({"id": value_id, "type": SUBGRAPH_VALUE, "widgets_values": [widget_values[k]]})
                self.links.append([value_id, value_id, 0, inner + str(input_node_id), k, sub_input.get("type", "*")])
                link_id = value_id
            else:
                link_id = None if link is None else prefix + str(link)
            forwarded.append({"name": sub_input.get("name", ""), "type": sub_input.get("type", "*"), "link": link_id})
        self.nodes.append({"id": inner + str(input_node_id), "type": SUBGRAPH_INPUT, "inputs": forwarded})

        # The instance: output j forwards the inner link that reaches the definition's output j.
        reaching = {}
        for link in _links_of(definition):
            if str(link[3]) == str(output_node_id):
                reaching.setdefault(int(link[4]), []).append(link[0])
        returned = []
        for j, sub_output in enumerate(sub_outputs):
            link_ids = [i for i in sub_output.get("linkIds") or [] if i in reaching.get(j, [])] or reaching.get(j, [])
            returned.append({"name": sub_output.get("name", ""), "type": sub_output.get("type", "*"),
                             "link": inner + str(link_ids[-1]) if link_ids else None})
        self.nodes.append({"id": instance_id, "type": SUBGRAPH_OUTPUT, "inputs": returned,
                           "title": node.get("title") or _name(definition)})


def _instance_widget_values(node: dict[str, Any], definition: dict[str, Any], sub_inputs: list[dict],
                            input_node_id: Any) -> dict[int, Any]:
    """The instance's `widgets_values`, by subgraph input index. The instance shows a widget for
    each subgraph input that feeds a widget inside, in input order; their values are saved there."""
    values = node.get("widgets_values")
    if not isinstance(values, list) or not values:
        return {}
    widget_links = set()
    for inner_node in definition.get("nodes") or []:
        for slot in inner_node.get("inputs") or [] if isinstance(inner_node, dict) else []:
            if isinstance(slot, dict) and slot.get("widget") and slot.get("link") is not None:
                widget_links.add(slot["link"])
    fed: set[int] = set()
    for link in _links_of(definition):
        if str(link[1]) == str(input_node_id) and link[0] in widget_links:
            fed.add(int(link[2]))
    by_index: dict[int, Any] = {}
    position = 0
    for k, _ in enumerate(sub_inputs):
        if k in fed and position < len(values):
            by_index[k] = values[position]
            position += 1
    return by_index


def _links_of(graph: dict[str, Any]) -> list[list[Any]]:
    """A graph's links as 6-lists (the root saves arrays, subgraph definitions save objects)."""
    out = []
    for item in graph.get("links") or []:
        if item is None:
            continue  # deleted links leave holes in some old files
        if isinstance(item, list) and len(item) >= 5:
            out.append([item[0], item[1], item[2], item[3], item[4], item[5] if len(item) > 5 else "*"])
        elif isinstance(item, dict) and "id" in item:
            out.append([item["id"], item.get("origin_id"), item.get("origin_slot", 0), item.get("target_id"),
                        item.get("target_slot", 0), item.get("type", "*")])
        else:
            raise WorkflowError(f"a link must be [id, origin, slot, target, slot, type], got {str(item)[:80]}")
    return out


def _renamed_input(slot: dict[str, Any], prefix: str) -> dict[str, Any]:
    link = slot.get("link")
    return dict(slot, link=None if link is None else prefix + str(link))


def _name(definition: dict[str, Any]) -> str:
    return f"'{definition.get('name') or 'unnamed'}' ({definition.get('id')})"


def _subgraph_error(node_id: str, subgraph: str, kind: str, message: str) -> ValidationError:
    error = NodeError(kind, f"node {node_id} {message}", extra_info={"subgraph": subgraph})
    return ValidationError(NodeError("invalid_prompt", f"Invalid subgraph in node {node_id}: {message}"),
                           {node_id: {"errors": [error.to_json()], "dependent_outputs": [], "class_type": subgraph}})
