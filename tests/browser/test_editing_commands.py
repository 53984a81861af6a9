"""Editing as a person does it: undo / redo of every kind of change, copy / paste (with input
links), duplicate, select all and delete, bypass and mute with their colours, and the node menu's
title, colour, collapse, pin, align and distribute."""
from __future__ import annotations

import pytest

from .conftest import save_doc_screenshot
from .test_subgraphs import select


def press_and_wait(editor, key: str, predicate: str, arg=None) -> None:
    editor.page.keyboard.press(key)
    editor.page.wait_for_function(predicate, arg=arg)


def test_undo_and_redo_every_kind_of_change(editor):
    page = editor.page
    node = lambda i: editor.js(f"(() => {{ const n = nodegraph.editor.nodeById({i}); return n && {{pos: [...n.pos], mode: n.mode}}; }})()")  # noqa: E731
    depth = editor.undo_depth()

    start = editor.title_pos(4)  # move a node
    editor.drag(start, (start[0] + 80, start[1] + 50))
    moved = node(4)["pos"]
    editor.wait_checkpoint(depth := depth + 1)
    page.mouse.click(*editor.widget_pos(5, "steps", "right-arrow"))  # a widget value
    editor.wait_checkpoint(depth := depth + 1)
    editor.detach_input(5, "model")  # remove a link
    editor.wait_checkpoint(depth := depth + 1)
    page.mouse.click(*editor.title_pos(6))
    page.keyboard.press("Control+b")  # bypass
    editor.wait_checkpoint(depth := depth + 1)
    page.keyboard.press("Control+g")  # a group around it
    editor.wait_checkpoint(depth := depth + 1)
    assert len(editor.workflow()["groups"]) == 1

    press_and_wait(editor, "Control+z", "nodegraph.editor.serialize().groups.length === 0")
    press_and_wait(editor, "Control+z", "nodegraph.editor.nodeById(6).mode === 0")
    press_and_wait(editor, "Control+z", "nodegraph.editor.nodeById(5).inputs[0].link !== null")
    press_and_wait(editor, "Control+z", "nodegraph.editor.nodeById(5).widgets.find(w => w.name === 'steps').value === 20")
    press_and_wait(editor, "Control+z", "nodegraph.editor.nodeById(4).pos[0] === 400")
    assert node(4)["pos"] == [400, 600]
    press_and_wait(editor, "Control+y", "p => nodegraph.editor.nodeById(4).pos[0] === p", moved[0])
    press_and_wait(editor, "Control+Shift+z", "nodegraph.editor.nodeById(5).widgets.find(w => w.name === 'steps').value === 21")
    press_and_wait(editor, "Control+y", "nodegraph.editor.nodeById(5).inputs[0].link === null")
    # a new edit after undo drops the redo steps
    press_and_wait(editor, "Control+z", "nodegraph.editor.nodeById(5).inputs[0].link !== null")
    page.mouse.click(*editor.widget_pos(5, "cfg", "right-arrow"))
    editor.page.wait_for_function("nodegraph.undo.redoStack.length === 0")


def test_copy_paste_with_and_without_links_duplicate_select_all_delete(editor):
    page = editor.page
    select(editor, [2, 3])
    page.keyboard.press("Control+c")
    page.mouse.move(*editor.empty_spot(320, 260))
    press_and_wait(editor, "Control+v", "nodegraph.editor.nodes.length === 9")
    pasted = sorted(set(editor.node_ids_of("CLIPTextEncode")) - {2, 3})
    assert all(editor.js(f"nodegraph.editor.nodeById({i}).inputs[0].link") is None for i in pasted)
    assert sorted(editor.js("nodegraph.editor.selectedNodes().map(n => n.id)")) == pasted
    assert {editor.widget_value(i, "text") for i in pasted} == {editor.widget_value(2, "text"), ""}

    page.mouse.move(*editor.empty_spot(320, 260))
    press_and_wait(editor, "Control+Shift+v", "nodegraph.editor.nodes.length === 11")
    kept = sorted(set(editor.node_ids_of("CLIPTextEncode")) - {2, 3, *pasted})
    for i in kept:  # their CLIP input still comes from Load Checkpoint
        link = editor.js(f"(() => {{ const n = nodegraph.editor.nodeById({i}); return nodegraph.editor.links().find(l => l[0] === n.inputs[0].link); }})()")
        assert link[1] == 1 and link[2] == 1
    save_doc_screenshot(page, "pasted-with-links")

    press_and_wait(editor, "Control+d", "nodegraph.editor.nodes.length === 13")  # duplicate the pasted pair
    press_and_wait(editor, "Control+a", "nodegraph.editor.selectedNodes().length === 13")
    press_and_wait(editor, "Delete", "nodegraph.editor.nodes.length === 0")
    editor.wait_checkpoint(1)
    press_and_wait(editor, "Control+z", "nodegraph.editor.nodes.length === 13")
    assert len(editor.links()) == 9 + 2  # the default graph's links and the two kept on paste


def test_bypass_and_mute_show_their_colours_and_leave_the_prompt(editor):
    page = editor.page
    inside = lambda i: editor.to_client([editor.node(i)["pos"][0] + 8, editor.node(i)["pos"][1] + editor.node(i)["size"][1] - 6])  # noqa: E731
    normal = editor.pixel(inside(6))
    page.mouse.click(*editor.title_pos(6))
    page.keyboard.press("Control+b")
    bypassed = editor.pixel(inside(6))
    assert bypassed[0] > normal[0] + 15 and bypassed[2] > normal[2] + 15 and bypassed[1] <= normal[1] + 5  # purple
    page.mouse.click(*editor.title_pos(4))
    page.keyboard.press("Control+m")
    assert editor.node(4)["mode"] == 2 and editor.node(6)["mode"] == 4
    save_doc_screenshot(page, "bypass-and-mute")
    prompt = editor.js("nodegraph.__convert(nodegraph.editor.serialize())")
    assert "6" not in prompt and "4" not in prompt and "latent_image" not in prompt["5"]["inputs"]
    page.keyboard.press("Control+m")  # again: back
    assert editor.node(4)["mode"] == 0


def test_node_menu_title_colour_collapse_pin_align_distribute(editor):
    page = editor.page
    x, y = editor.title_pos(4)
    box = editor.double_click_for((x, y), ".graphdialog input")  # rename
    box.fill("Size")
    page.keyboard.press("Enter")
    assert editor.node(4)["title"] == "Size"

    def menu(node_id, *entries):
        page.mouse.click(*editor.title_pos(node_id), button="right")
        for entry in entries:
            page.click(f".litecontextmenu .litemenu-entry >> text='{entry}'")

    menu(4, "Colors", "red")
    assert editor.js("nodegraph.editor.nodeById(4).color") is not None
    menu(7, "Collapse")
    assert editor.js("nodegraph.editor.nodeById(7).flags.collapsed") is True
    menu(1, "Pin")
    start = editor.title_pos(1)
    editor.drag(start, (start[0] + 100, start[1] + 100))
    assert editor.node(1)["pos"] == [30, 200]  # a pinned node stays put

    select(editor, [2, 3, 4])
    menu(4, "Align Selected To", "Left")
    assert {editor.node(i)["pos"][0] for i in (2, 3, 4)} == {400}
    # Uneven gaps. The move may put node 3's title under node 2 (drawn on top), where a click would hit
    # node 2, so this selection is made in the page (the clicks above already select the same three).
    editor.js("""(() => { const e = nodegraph.editor; e.nodeById(3).pos[1] = 300;
        e.canvas.selectItems([2, 3, 4].map(i => e.nodeById(i))); e.drawNow(); })()""")
    menu(4, "Distribute Nodes", "Vertically")
    nodes = sorted((editor.node(i) for i in (2, 3, 4)), key=lambda n: n["pos"][1])
    gaps = [b["pos"][1] - (a["pos"][1] + a["size"][1]) for a, b in zip(nodes, nodes[1:])]
    assert abs(gaps[0] - gaps[1]) < 1
    saved = {n["id"]: n for n in editor.workflow()["nodes"]}
    assert saved[4]["title"] == "Size" and saved[4]["color"] and saved[7]["flags"]["collapsed"] and saved[1]["flags"]["pinned"]


def test_groups_around_a_selection_rename_colour_move_resize_remove(editor):
    page = editor.page
    select(editor, [2, 3])
    page.keyboard.press("Control+g")
    (group,) = editor.workflow()["groups"]
    x, y, w, h = group["bounding"]
    for i in (2, 3):  # both nodes inside it
        n = editor.node(i)
        assert x <= n["pos"][0] and n["pos"][0] + n["size"][0] <= x + w and y <= n["pos"][1] - 30 and n["pos"][1] + n["size"][1] <= y + h
    title = lambda: editor.to_client([editor.workflow()["groups"][0]["bounding"][0] + 40, editor.workflow()["groups"][0]["bounding"][1] + 10])  # noqa: E731

    editor.double_click_for(title(), ".graphdialog input").fill("Prompts")
    page.keyboard.press("Enter")
    page.mouse.click(*title(), button="right")
    page.click(".litecontextmenu .litemenu-entry >> text='Edit Group'")
    page.click(".litecontextmenu .litemenu-entry >> text='Color'")
    page.click(".litecontextmenu .litemenu-entry >> text='green'")
    (group,) = editor.workflow()["groups"]
    assert group["title"] == "Prompts" and group["color"]

    before = {i: editor.node(i)["pos"] for i in (2, 3, 4)}
    start = title()
    editor.drag(start, (start[0] + 100, start[1] + 60))  # the group moves with its nodes
    dx, dy = (editor.workflow()["groups"][0]["bounding"][i] - group["bounding"][i] for i in (0, 1))
    assert dx > 50 and dy > 30
    for i in (2, 3):
        assert editor.node(i)["pos"] == pytest.approx([before[i][0] + dx, before[i][1] + dy], abs=0.01)
    assert editor.node(4)["pos"] == before[4]
    save_doc_screenshot(page, "group")

    gx, gy, gw, gh = editor.workflow()["groups"][0]["bounding"]
    corner = editor.to_client([gx + gw - 4, gy + gh - 4])
    editor.drag(corner, (corner[0] + 60, corner[1] + 40))  # resize from the corner
    assert editor.workflow()["groups"][0]["bounding"][2] > gw + 30

    page.mouse.click(*title(), button="right")
    page.click(".litecontextmenu .litemenu-entry >> text='Remove group (keep its nodes)'")
    assert editor.workflow()["groups"] == []
    assert {2, 3} <= {n["id"] for n in editor.nodes()}
    editor.wait_checkpoint(1)
    page.keyboard.press("Control+z")
    page.wait_for_function("nodegraph.editor.serialize().groups.length === 1")
