"""Subgraphs: three nodes collapsed into one with Ctrl+Shift+E, queued and run (flattened as the
server flattens them), opened with a double-click, edited inside, left by the breadcrumb, unpacked;
ComfyUI's subgraph files (the engine's fixtures) convert as on the server."""
from __future__ import annotations

import pytest

from nodegraph.workflow.ui_format import ui_to_api

from .conftest import save_doc_screenshot


def api_of(editor, workflow=None) -> dict:
    prompt = editor.js("w => nodegraph.__convert(w ?? nodegraph.editor.serialize())", workflow)
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def server_api_of(editor, workflow) -> dict:
    prompt = ui_to_api(workflow, editor.server.state.registry)
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def relabel(prompt: dict, inner: set[str], instance: int) -> dict:
    """The flat prompt with the nodes that went into subgraph `instance` renamed 'instance:id'."""
    name = lambda i: f"{instance}:{i}" if i in inner else i  # noqa: E731
    return {name(k): {**v, "inputs": {n: [name(x[0]), x[1]] if isinstance(x, list) else x for n, x in v["inputs"].items()}}
            for k, v in prompt.items()}


def select(editor, ids) -> None:
    """Click the first node's title, Shift+click the others."""
    page = editor.page
    page.mouse.click(*editor.title_pos(ids[0]))
    page.keyboard.down("Shift")
    for node_id in ids[1:]:
        page.mouse.click(*editor.title_pos(node_id))
    page.keyboard.up("Shift")
    assert sorted(editor.js("nodegraph.editor.selectedNodes().map(n => n.id)")) == sorted(ids)


def collapse_into_subgraph(editor, ids) -> int:
    before = {n["id"] for n in editor.nodes()}
    select(editor, ids)
    editor.page.keyboard.press("Control+Shift+E")
    editor.page.wait_for_function("n => nodegraph.editor.nodes.length === n", arg=len(before) - len(ids) + 1)
    (instance,) = {n["id"] for n in editor.nodes()} - before
    return instance


def test_three_nodes_collapse_into_a_subgraph_that_runs(editor):
    editor.set_number(5, "steps", 2)
    flat = api_of(editor)
    instance = collapse_into_subgraph(editor, [2, 3, 5])

    saved = editor.workflow()
    (definition,) = saved["definitions"]["subgraphs"]
    assert sorted(n["type"] for n in definition["nodes"]) == ["CLIPTextEncode", "CLIPTextEncode", "KSampler"]
    assert [(i["name"], i["type"]) for i in definition["inputs"]] == [("clip", "CLIP"), ("model", "MODEL"), ("latent_image", "LATENT")]
    assert [(o["name"], o["type"]) for o in definition["outputs"]] == [("LATENT", "LATENT")]
    node = next(n for n in saved["nodes"] if n["id"] == instance)
    assert node["type"] == definition["id"]
    assert sorted(link[4] for link in saved["links"] if link[3] == instance) == [0, 1, 2]  # its inputs are wired

    prompt = api_of(editor)
    assert prompt == relabel(flat, {"2", "3", "5"}, instance)  # the same graph, inner ids "instance:id"
    assert prompt == server_api_of(editor, saved)

    since = editor.event_count()
    editor.page.keyboard.press("Control+Enter")
    editor.wait_event("execution_success", since, timeout=120)
    assert f"{instance}:5" in {str(e["data"]["node"]) for e in editor.events_of("executing", since)}
    editor.wait_images(7)


def test_open_edit_inside_go_back_up_and_unpack(editor):
    page = editor.page
    flat = api_of(editor)
    instance = collapse_into_subgraph(editor, [2, 3, 5])
    editor.double_click_for(editor.body_pos(instance), "#breadcrumb:not([hidden])")
    assert page.inner_text("#breadcrumb").split() == ["Workflow", "›", "New", "Subgraph"]
    assert sorted(n["type"] for n in editor.nodes()) == ["CLIPTextEncode", "CLIPTextEncode", "KSampler"]
    page.mouse.click(*editor.widget_pos(5, "steps", "right-arrow"))
    assert editor.widget_value(5, "steps") == 21
    save_doc_screenshot(page, "subgraph-open")

    page.click("#breadcrumb button[data-level='0']")
    page.wait_for_selector("#breadcrumb", state="hidden")
    assert instance in {n["id"] for n in editor.nodes()}
    assert api_of(editor)[f"{instance}:5"]["inputs"]["steps"] == 21

    page.mouse.click(*editor.title_pos(instance), button="right")
    page.click(".litecontextmenu .litemenu-entry >> text=Unpack subgraph")
    page.wait_for_function("nodegraph.editor.nodes.length === 7")
    saved = editor.workflow()
    assert not (saved.get("definitions") or {}).get("subgraphs")
    unpacked = api_of(editor)
    ids = {n["id"]: n["type"] for n in editor.nodes()}
    new_ids = {str(i) for i in ids if i not in (1, 4, 6, 7)}
    by_type = lambda p: sorted((v["class_type"], sorted(k for k, x in v["inputs"].items() if not isinstance(x, list))) for v in p.values())  # noqa: E731
    assert by_type(unpacked) == by_type(flat) and len(new_ids) == 3
    sampler = next(k for k in new_ids if unpacked[k]["class_type"] == "KSampler")
    assert unpacked[sampler]["inputs"]["steps"] == 21 and unpacked[sampler]["inputs"]["model"] == ["1", 0]
    assert unpacked["6"]["inputs"]["samples"] == [sampler, 0]


@pytest.mark.parametrize("case", ["one", "widget value", "nested", "nested definitions", "bypassed"])
def test_comfyui_subgraph_files_convert_as_on_the_server(editor, case):
    from tests.engine import subgraph_fixtures as fx

    twice = fx.twice_definition()
    twice["definitions"] = {"subgraphs": [fx.scale_definition(0.5)]}
    workflow = {
        "one": lambda: fx.workflow(),
        "widget value": lambda: fx.workflow(widgets=(), definitions=[fx.scale_definition(5.0)]),
        "nested": lambda: fx.workflow(fx.TWICE, widgets=(), definitions=[fx.twice_definition(), fx.scale_definition(0.5)]),
        "nested definitions": lambda: fx.workflow(fx.TWICE, widgets=(), definitions=[twice]),
        "bypassed": lambda: fx.workflow(mode=4),
    }[case]()
    assert api_of(editor, workflow) == server_api_of(editor, workflow)
