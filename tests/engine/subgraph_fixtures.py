"""UI workflows with subgraphs, in the shape ComfyUI's frontend (1.2x) saves them: instances are
nodes whose `type` is a definition's uuid, definitions live in the root's `definitions.subgraphs`
(nested ones too), their links are objects, their input node is -10 and their output node -20, and
an instance saves only its linked inputs plus one widget value per subgraph input that feeds a widget."""
from __future__ import annotations

import copy

SCALE = "6a0f3c1e-2b4d-4e8f-9a1b-3c5d7e9f1a2b"   # (a, factor widget) -> Multiply -> out
TWICE = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"   # a -> SCALE instance -> SCALE instance -> out
LOOP = "11111111-2222-4333-8444-555555555555"    # contains itself


def _io(name, type, link_ids, uid):
    return {"id": uid, "name": name, "type": type, "linkIds": link_ids, "localized_name": name, "pos": [0, 0]}


def _node(id, type, widgets=None, inputs=(), outputs=(), mode=0, properties=None):
    return {"id": id, "type": type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0, "mode": mode,
            "inputs": list(inputs), "outputs": list(outputs), "properties": properties or {},
            "widgets_values": widgets if widgets is not None else []}


def _link(id, origin, oslot, target, tslot, type):
    return {"id": id, "origin_id": origin, "origin_slot": oslot, "target_id": target, "target_slot": tslot, "type": type}


def _definition(uid, name, inputs, outputs, nodes, links):
    return {"id": uid, "version": 1, "revision": 0, "name": name, "config": {},
            "state": {"lastGroupId": 0, "lastNodeId": 20, "lastLinkId": 20, "lastRerouteId": 0},
            "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]}, "outputNode": {"id": -20, "bounding": [500, 0, 120, 60]},
            "inputs": inputs, "outputs": outputs, "widgets": [], "nodes": nodes, "groups": [], "links": links, "extra": {}}


def scale_definition(factor_in_definition=1.0):
    """Inputs `a` (FLOAT socket) and `factor` (feeds Multiply's factor widget); output FLOAT."""
    return _definition(
        SCALE, "Scale",
        [_io("a", "FLOAT", [1], "aaaaaaaa-0000-4000-8000-000000000001"),
         _io("factor", "FLOAT", [2], "aaaaaaaa-0000-4000-8000-000000000002")],
        [_io("FLOAT", "FLOAT", [3], "aaaaaaaa-0000-4000-8000-000000000003")],
        [_node(3, "Multiply", [factor_in_definition],
               inputs=[{"localized_name": "a", "name": "a", "type": "FLOAT", "link": 1},
                       {"localized_name": "factor", "name": "factor", "type": "FLOAT", "widget": {"name": "factor"},
                        "link": 2}],
               outputs=[{"localized_name": "FLOAT", "name": "FLOAT", "type": "FLOAT", "links": [3]}],
               properties={"Node name for S&R": "Multiply"})],
        [_link(1, -10, 0, 3, 0, "FLOAT"), _link(2, -10, 1, 3, 1, "FLOAT"), _link(3, 3, 0, -20, 0, "FLOAT")])


def twice_definition():
    """Two SCALE instances in a row (factor 3 on the first, the definition's own on the second)."""
    return _definition(
        TWICE, "Scale twice",
        [_io("a", "FLOAT", [1], "bbbbbbbb-0000-4000-8000-000000000001")],
        [_io("FLOAT", "FLOAT", [3], "bbbbbbbb-0000-4000-8000-000000000002")],
        [_node(4, SCALE, [3.0], inputs=[{"name": "a", "type": "FLOAT", "link": 1}],
               outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [2]}]),
         _node(5, SCALE, [], inputs=[{"name": "a", "type": "FLOAT", "link": 2}],
               outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [3]}])],
        [_link(1, -10, 0, 4, 0, "FLOAT"), _link(2, 4, 0, 5, 0, "FLOAT"), _link(3, 5, 0, -20, 0, "FLOAT")])


def workflow(instance_type=SCALE, widgets=(7.0,), definitions=None, mode=0):
    """Number(2) -> instance 10 -> Show."""
    return {
        "id": "c4a254bb-935e-4013-b380-5e36954de4b0", "revision": 0, "last_node_id": 10, "last_link_id": 2,
        "nodes": [
            _node(1, "Number", [2.0], outputs=[{"name": "value", "type": "FLOAT", "links": [1]}]),
            _node(10, instance_type, list(widgets), mode=mode, inputs=[{"name": "a", "type": "FLOAT", "link": 1}],
                  outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [2]}]),
            _node(2, "Show", inputs=[{"name": "value", "type": "FLOAT,STRING", "link": 2}]),
        ],
        "links": [[1, 1, 0, 10, 0, "FLOAT"], [2, 10, 0, 2, 0, "FLOAT"]],
        "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}, "frontendVersion": "1.27.10"},
        "version": 0.4,
        "definitions": {"subgraphs": definitions if definitions is not None else [scale_definition()]},
    }


def looping_definition(inner_type=LOOP):
    definition = copy.deepcopy(scale_definition())
    definition["id"], definition["name"] = LOOP, "Loop"
    definition["nodes"].append(_node(9, inner_type, [], inputs=[], outputs=[]))
    return definition
