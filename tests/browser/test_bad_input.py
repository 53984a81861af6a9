"""Bad input: files and pasted text that are not workflows are refused with a toast that says why,
the open graph untouched; a workflow with node types this server lacks opens with them marked,
and queueing it says which are missing."""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

from PIL import Image

from .conftest import save_doc_screenshot
from .test_editing import comparable, drop_file

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def paste_text(editor, text: str) -> None:
    """What the browser does on Ctrl+V with text on the clipboard."""
    editor.page.mouse.click(*editor.empty_spot())
    editor.js("""text => { const dt = new DataTransfer(); dt.setData('text/plain', text);
        document.querySelector('#graph').dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true})); }""", text)


def last_toast(editor, expected: str) -> str:
    toast = editor.page.wait_for_selector(f".ng-toast.error >> text={expected}")
    return toast.inner_text()


def test_what_is_not_a_workflow_is_refused_and_the_graph_kept(editor):
    before = comparable(editor.workflow())
    plain = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 90, 200)).save(plain, "PNG")
    for data, name, mime, reason in [
        (b'{"hello": [1, 2, 3]}', "random.json", "application/json", "random.json is not a ComfyUI workflow"),
        (plain.getvalue(), "photo.png", "image/png", "photo.png holds no workflow"),
        (b"\x00\x01 not text", "notes.json", "application/json", "notes.json is neither a workflow JSON"),
    ]:
        drop_file(editor, data, name, mime, editor.empty_spot())
        assert reason in last_toast(editor, reason)
    editor.js("""([x, y]) => {  // a 40 MB file: refused before it is read
        const file = new File([new Uint8Array(40 * 1024 * 1024)], 'huge.json', {type: 'application/json'});
        const dt = new DataTransfer(); dt.items.add(file);
        const target = document.elementFromPoint(x, y);
        for (const type of ['dragenter', 'dragover', 'drop'])
          target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, clientX: x, clientY: y, bubbles: true, cancelable: true})); }""",
              list(editor.empty_spot()))
    assert "huge.json is 40 MB: too large for a workflow" in last_toast(editor, "too large")

    paste_text(editor, '{"nodes": "no", "a": 1}')
    assert "not a ComfyUI workflow" in last_toast(editor, "Not pasted")
    paste_text(editor, "{oops")
    assert "not valid JSON" in last_toast(editor, "not valid JSON")

    assert comparable(editor.workflow()) == before
    assert editor.js("nodegraph.tabs.tabs.length") == 1


def test_pasted_workflow_text_opens_in_a_tab(editor):
    workflow = json.loads((WORKFLOWS / "img2img.json").read_text())
    editor.allow_console_error("status of 404")  # its Load Image names a file this server lacks
    paste_text(editor, json.dumps(workflow))
    editor.page.wait_for_function("nodegraph.tabs.tabs.length === 2")
    assert comparable(editor.workflow()) == comparable(workflow)


def test_unknown_node_types_open_marked_and_queueing_names_them(editor):
    page = editor.page
    workflow = json.loads((WORKFLOWS / "txt2img.json").read_text())
    workflow["nodes"].append({
        "id": 20, "type": "FancyUpscaler", "pos": [1200, 450], "size": [300, 120], "flags": {}, "order": 7, "mode": 0,
        "inputs": [{"name": "image", "type": "IMAGE", "link": 30}], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
        "properties": {"Node name for S&R": "FancyUpscaler"}, "widgets_values": [2, "lanczos"]})
    workflow["links"].append([30, 6, 0, 20, 0, "IMAGE"])
    next(n for n in workflow["nodes"] if n["id"] == 6)["outputs"][0]["links"].append(30)
    drop_file(editor, json.dumps(workflow).encode(), "with-unknown.json", "application/json", editor.empty_spot())
    page.wait_for_function("nodegraph.editor.nodes.length === 8")
    panel = page.wait_for_selector("#errors >> text=not installed")
    assert "FancyUpscaler" in panel.inner_text()
    assert editor.js("nodegraph.editor.nodeById(20).has_errors") is True
    x, y = editor.to_client([1200 + 150, 450 + 60])
    red, green, blue = editor.pixel((x, y))
    assert red > green + 20 and red > blue + 10  # drawn in red
    save_doc_screenshot(page, "missing-node-type")

    editor.allow_console_error("status of 400")
    page.click("#btn-queue")
    page.wait_for_selector("#errors >> text=FancyUpscaler does not exist")
    saved = next(n for n in editor.workflow()["nodes"] if n["id"] == 20)
    expected = copy.deepcopy(workflow["nodes"][-1])
    assert {k: saved[k] for k in ("type", "widgets_values", "inputs", "properties")} == \
        {k: expected[k] for k in ("type", "widgets_values", "inputs", "properties")}

