"""Widget inputs (a link dropped on a widget), PrimitiveNode driving several widgets, Reroute, and
the round trip of every example workflow and the repository's ComfyUI UI files through the page."""
from __future__ import annotations

import json
from pathlib import Path

from .conftest import save_doc_screenshot

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def saved_node(workflow: dict, node_id: int) -> dict:
    return next(n for n in workflow["nodes"] if n["id"] == node_id)


def test_a_link_dropped_on_a_widget_drives_it_and_leaving_restores_it(editor):
    page = editor.page
    number = editor.add_node_by_search("int", editor.empty_spot(250, 110))
    assert editor.node(number)["type"] == "PrimitiveInt"
    editor.set_number(number, "value", 3)
    editor.connect_to_widget(number, "INT", 5, "steps")
    (link,) = [l for l in editor.links() if l[1] == number]
    assert link[3] == 5 and link[5] == "INT"

    saved = editor.workflow()
    inputs = saved_node(saved, 5)["inputs"]
    steps = next(i for i, s in enumerate(inputs) if s["name"] == "steps")
    assert inputs[steps] == {**inputs[steps], "widget": {"name": "steps"}, "link": link[0]}
    assert [s["name"] for s in inputs] == ["model", "positive", "negative", "latent_image", "steps"]  # unlinked sockets left out
    assert [l for l in saved["links"] if l[0] == link[0]][0][4] == steps  # the link points at the saved index
    assert saved_node(saved, 5)["widgets_values"][2] == 20  # the widget's own value stays (unused while linked)
    sent = editor.sent_prompt(lambda: page.keyboard.press("Control+Enter"))
    assert sent["prompt"]["5"]["inputs"]["steps"] == [str(number), 0]
    assert sent["prompt"][str(number)]["inputs"]["value"] == 3
    editor.js("fetch('/api/interrupt', {method: 'POST'})")
    save_doc_screenshot(page, "widget-input")

    editor.detach_input(5, "steps")
    assert not [l for l in editor.links() if l[1] == number]
    assert editor.widget_value(5, "steps") == 20
    assert [s["name"] for s in saved_node(editor.workflow(), 5)["inputs"]] == ["model", "positive", "negative", "latent_image"]
    assert editor.js("w => nodegraph.__convert(w)['5'].inputs.steps", editor.workflow()) == 20


def test_a_primitive_node_drives_several_widgets_with_its_control(editor):
    page = editor.page
    second = editor.add_node_by_search("ksampler", editor.empty_spot(320, 270))
    primitive = editor.add_node_by_search("primitive", editor.empty_spot(250, 110))
    editor.connect_to_widget(primitive, "connect to widget input", 5, "seed")
    assert editor.js(f"nodegraph.editor.nodeById({primitive}).outputs[0].type") == "INT"
    assert editor.widget_value(primitive, "seed") == 42  # it took the widget's value
    editor.connect_to_widget(primitive, "INT", second, "seed")
    assert len([l for l in editor.links() if l[1] == primitive]) == 2

    editor.set_number(primitive, "seed", 1234)
    assert editor.widget_value(5, "seed") == editor.widget_value(second, "seed") == 1234
    # its control: pick "increment" from the combo's menu
    page.mouse.click(*editor.widget_pos(primitive, "control_after_generate"))
    page.click(".litecontextmenu .litemenu-entry >> text=increment")
    # a FLOAT widget refuses this INT primitive, with the reason
    editor.connect_to_widget(primitive, "INT", 5, "cfg")
    assert "FLOAT" in page.wait_for_selector(".ng-toast.error").inner_text()
    assert len([l for l in editor.links() if l[1] == primitive]) == 2

    sent = editor.sent_prompt(lambda: page.click("#btn-queue"))
    assert sent["prompt"]["5"]["inputs"]["seed"] == sent["prompt"][str(second)]["inputs"]["seed"] == 1234
    assert str(primitive) not in sent["prompt"]  # frontend-only
    editor.js("fetch('/api/queue', {method: 'POST', body: JSON.stringify({clear: true})}).then(() => fetch('/api/interrupt', {method: 'POST'}))")
    page.wait_for_function(f"nodegraph.editor.nodeById({primitive}).widgets[0].value === 1235")
    assert editor.widget_value(5, "seed") == editor.widget_value(second, "seed") == 1235
    assert editor.widget_value(5, "control_after_generate") == "fixed"  # the sampler's own control stays as set
    save_doc_screenshot(page, "primitive-node")

    # saved as ComfyUI saves it, and it comes back the same after a reload
    node = saved_node(editor.workflow(), primitive)
    assert node["widgets_values"] == [1235, "increment"]
    assert node["outputs"][0]["type"] == "INT" and node["outputs"][0]["widget"] == {"name": "seed"}
    page.wait_for_timeout(400)  # the debounced autosave
    editor.reload()
    assert editor.widget_value(primitive, "seed") == 1235
    assert editor.widget_value(primitive, "control_after_generate") == "increment"


def test_a_reroute_carries_a_link_and_takes_its_type(editor):
    page = editor.page
    reroute = editor.add_node_by_search("reroute", editor.empty_spot(80, 30))
    editor.connect(1, "MODEL", reroute, "")
    assert editor.js(f"nodegraph.editor.nodeById({reroute}).outputs[0].type") == "MODEL"
    editor.connect(reroute, "", 5, "model")
    assert editor.js("w => nodegraph.__convert(w)['5'].inputs.model", editor.workflow()) == ["1", 0]
    # its output is MODEL now: a CLIP input refuses it
    links = editor.links()
    editor.connect(reroute, "", 2, "clip")
    assert editor.links() == links
    assert str(reroute) not in editor.js("w => nodegraph.__convert(w)", editor.workflow())


def comparable(workflow: dict, original: dict | None = None) -> dict:
    """Nodes, links, widget values, groups and subgraph definitions: what 'the same graph' means.
    A node the original saved without widget values (older files) takes its defaults: not compared."""
    def plain(value):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return [plain(v) for v in value] if isinstance(value, list) else value

    def graph(g: dict, like: dict | None) -> dict:
        valueless = {str(n["id"]) for n in (like or g).get("nodes", []) if not n.get("widgets_values")}
        nodes = []
        for n in g.get("nodes", []):
            pos = n["pos"] if isinstance(n["pos"], list) else [n["pos"]["0"], n["pos"]["1"]]
            values = None if str(n["id"]) in valueless else json.dumps(plain(n.get("widgets_values")))
            nodes.append((str(n["id"]), n["type"], n.get("title"), [round(v) for v in pos], n.get("mode", 0), values))
        links = [tuple(l[:6]) if isinstance(l, list) else
                 (l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"])
                 for l in g.get("links") or [] if l]
        groups = [(gr.get("title"), [round(v) for v in gr["bounding"]], gr.get("color")) for gr in g.get("groups") or []]
        return {"nodes": sorted(nodes, key=str), "links": sorted(links, key=str), "groups": sorted(groups, key=str)}

    def definitions(g: dict | None) -> dict:
        return {d["id"]: d for d in ((g or {}).get("definitions") or {}).get("subgraphs", [])}

    out = graph(workflow, original)
    like = definitions(original)
    out["subgraphs"] = {i: {**graph(d, like.get(i)), "name": d.get("name"),
                            "inputs": [(x["name"], x["type"]) for x in d.get("inputs", [])],
                            "outputs": [(x["name"], x["type"]) for x in d.get("outputs", [])]}
                        for i, d in definitions(workflow).items()}
    return out


def round_trip_files() -> list[Path]:
    tests = Path(__file__).resolve().parents[1]
    return sorted(WORKFLOWS.glob("*.json")) + sorted((tests / "nodes" / "data" / "legacy_ui").glob("*.json"))


def test_every_example_and_comfyui_file_opens_and_saves_as_the_same_graph(editor, tmp_path):
    from tests.engine import subgraph_fixtures as fx

    page = editor.page
    editor.allow_console_error("status of 404")  # Load Image nodes name files this server lacks
    files = round_trip_files()
    nested = fx.workflow(fx.TWICE, widgets=(), definitions=[fx.twice_definition(), fx.scale_definition(0.5)])
    schema_1 = json.loads((WORKFLOWS / "txt2img.json").read_text())  # ComfyUI's other schema: version 1
    schema_1 = {"version": 1, "state": {"lastGroupId": 0, "lastNodeId": schema_1["last_node_id"],
                                        "lastLinkId": schema_1["last_link_id"], "lastRerouteId": 0},
                "nodes": schema_1["nodes"], "groups": [], "config": {}, "extra": {},
                "links": [{"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3], "target_slot": l[4],
                           "type": l[5]} for l in schema_1["links"]]}
    for name, workflow in [("subgraph.json", fx.workflow()), ("nested_subgraphs.json", nested), ("schema_1.json", schema_1)]:
        files.append(tmp_path / name)  # ComfyUI's subgraph format, as the engine's tests have it
        files[-1].write_text(json.dumps(workflow))
    different = []
    for path in files:
        original = json.loads(path.read_text())
        with page.expect_file_chooser() as chooser:
            page.click("#btn-open")
        chooser.value.set_files(str(path))
        page.wait_for_function("n => nodegraph.editor.nodes.length === n", arg=len(original["nodes"]))
        with page.expect_download() as download:
            page.click("#btn-download")
        saved = json.loads(Path(download.value.path()).read_text())
        if comparable(saved, original) != comparable(original):
            different.append(path.name)
    assert not different, f"changed by a load and save: {different}"
