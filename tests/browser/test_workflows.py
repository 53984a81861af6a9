"""Workflows as a person manages them: several open in tabs (unsaved marker, close with a prompt,
copy / paste from one to another, back after a reload), saved, saved as, renamed and deleted on
the server, the recent ones, the shipped examples as templates, and the API export."""
from __future__ import annotations

import json
from pathlib import Path

from nodegraph.workflow.ui_format import ui_to_api

from .conftest import save_doc_screenshot
from .test_subgraphs import select

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def tabs(editor) -> list[dict]:
    return editor.js("""[...document.querySelectorAll('#tabs .tab')].map(t => ({
        title: t.querySelector('.title').textContent, active: t.classList.contains('active'),
        modified: t.dataset.modified === 'true'}))""")


def wait_tabs(editor, count: int) -> None:
    editor.page.wait_for_function("n => document.querySelectorAll('#tabs .tab').length === n", arg=count)


def test_tabs_show_unsaved_changes_and_ask_before_closing(editor):
    page = editor.page
    assert tabs(editor) == [{"title": "Unsaved workflow", "active": True, "modified": False}]
    page.mouse.click(*editor.widget_pos(5, "steps", "right-arrow"))
    page.wait_for_selector("#tabs .tab.active[data-modified='true']")
    page.keyboard.press("Alt+n")  # a second tab, empty
    wait_tabs(editor, 2)
    assert editor.nodes() == [] and [t["active"] for t in tabs(editor)] == [False, True]
    page.click("#tabs .tab >> nth=0")
    page.wait_for_function("nodegraph.editor.nodes.length === 7")
    assert editor.widget_value(5, "steps") == 21 and tabs(editor)[0]["modified"]
    save_doc_screenshot(page, "workflow-tabs")

    page.click("#tabs .tab >> nth=0 >> .close")
    page.wait_for_selector(".ng-modal >> text=has changes that are not saved")
    page.click(".ng-modal button[data-action='cancel']")
    assert len(tabs(editor)) == 2
    page.click("#tabs .tab >> nth=0 >> .close")
    page.click(".ng-modal button[data-action='discard']")
    wait_tabs(editor, 1)
    assert editor.nodes() == []  # the other tab is shown
    page.click("#tabs .tab >> nth=0 >> .close")  # unchanged: closes without asking; a fresh tab replaces it
    page.wait_for_function("document.querySelectorAll('#tabs .tab').length === 1 && !document.querySelector('.ng-modal')")


def test_copy_in_one_tab_paste_in_another_each_with_its_own_undo(editor):
    page = editor.page
    select(editor, [2, 3])
    page.keyboard.press("Control+c")
    page.keyboard.press("Alt+n")
    wait_tabs(editor, 2)
    page.mouse.move(*editor.empty_spot(320, 260))
    page.keyboard.press("Control+v")
    page.wait_for_function("nodegraph.editor.nodes.length === 2")
    assert sorted(n["type"] for n in editor.nodes()) == ["CLIPTextEncode", "CLIPTextEncode"]
    page.wait_for_selector("#tabs .tab.active[data-modified='true']")
    page.click("#tabs .tab >> nth=0")
    page.wait_for_function("nodegraph.editor.nodes.length === 7")
    assert not tabs(editor)[0]["modified"]
    page.keyboard.press("Control+z")  # nothing to undo in this tab
    assert len(editor.nodes()) == 7
    page.click("#tabs .tab >> nth=1")
    page.wait_for_function("nodegraph.editor.nodes.length === 2")
    page.keyboard.press("Control+z")  # this tab's paste
    page.wait_for_function("nodegraph.editor.nodes.length === 0")

    page.wait_for_timeout(300)  # the debounced save of the open tabs
    editor.reload()  # both tabs come back
    assert [t["title"] for t in tabs(editor)] == ["Unsaved workflow", "Unsaved workflow"]


def test_save_save_as_rename_delete_and_recent_on_the_server(editor):
    page = editor.page
    folder = editor.server.layout.user / "default" / "workflows"
    for old in folder.glob("*.json"):  # left by other tests on this server
        old.unlink()

    def answer(text: str | None, button: str) -> None:
        page.wait_for_selector(".ng-modal")
        if text is not None:
            page.fill(".ng-modal input", text)
        page.click(f".ng-modal button[data-action='{button}']")

    page.keyboard.press("Control+s")  # unnamed: asks for a name
    answer("first", "save")
    page.wait_for_function("nodegraph.tabs.current.name === 'first.json'")
    assert json.loads((folder / "first.json").read_text())["nodes"]
    assert tabs(editor)[0] == {"title": "first", "active": True, "modified": False}

    page.mouse.click(*editor.widget_pos(5, "steps", "right-arrow"))
    page.wait_for_selector("#tabs .tab.active[data-modified='true']")
    page.keyboard.press("Control+s")  # named: saved without asking
    page.wait_for_selector("#tabs .tab.active[data-modified='false']")
    steps = lambda name: next(n for n in json.loads((folder / name).read_text())["nodes"] if n["id"] == 5)["widgets_values"][2]  # noqa: E731
    assert steps("first.json") == 21

    page.keyboard.press("Control+Shift+s")
    answer("second", "save")
    page.wait_for_function("nodegraph.tabs.current.name === 'second.json'")
    assert sorted(p.name for p in folder.glob("*.json")) == ["first.json", "second.json"]

    page.click("#btn-workflows")
    page.click("#panel-workflows [data-section='on the server'] li[data-name='second.json'] .rename")
    answer("third", "rename")
    page.wait_for_selector("#panel-workflows li[data-name='third.json']")
    assert sorted(p.name for p in folder.glob("*.json")) == ["first.json", "third.json"]
    assert tabs(editor)[0]["title"] == "third"  # the open tab follows its file
    page.click("#panel-workflows [data-section='on the server'] li[data-name='first.json'] .delete")
    answer(None, "delete")
    page.wait_for_function("!document.querySelector(\"#panel-workflows li[data-name='first.json']\")")
    assert [p.name for p in folder.glob("*.json")] == ["third.json"]
    recent = editor.js("[...document.querySelectorAll(\"#panel-workflows [data-section='recent'] li[data-name]\")].map(li => li.dataset.name)")
    assert recent == ["third.json"]
    save_doc_screenshot(page, "workflows-panel")

    page.click("#btn-new")
    page.click("#panel-workflows [data-section='recent'] li[data-name='third.json'] .open")
    page.wait_for_function("nodegraph.editor.nodes.length === 7")
    assert page.inner_text("#tabs .tab.active .title") == "third"


def test_templates_open_and_export_api(editor, sd_server):
    page = editor.page
    page.click("#btn-workflows")
    page.click("#panel-workflows li[data-template='img2img'] .open")
    template = json.loads((WORKFLOWS / "img2img.json").read_text())
    page.wait_for_function("n => nodegraph.editor.nodes.length === n", arg=len(template["nodes"]))
    assert [t["title"] for t in tabs(editor)] == ["Unsaved workflow", "img2img"]
    editor.allow_console_error("status of 404")  # its Load Image names a file this server lacks
    with page.expect_download() as download:
        page.click("#btn-export-api")
    exported = json.loads(Path(download.value.path()).read_text())
    expected = ui_to_api(template, sd_server.state.registry)
    assert {k: (v["class_type"], v["inputs"]) for k, v in exported.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in expected.items()}
