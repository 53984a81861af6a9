"""Editing without running a model: typed sockets, errors on nodes, undo, and the ways a
workflow comes in and goes out (file, server, reload, PNG drop, API-format JSON, image upload)."""
from __future__ import annotations

import copy
import io
import json
import shutil
from pathlib import Path

from PIL import Image, PngImagePlugin

from nodegraph.workflow.ui_format import ui_to_api

from .conftest import save_doc_screenshot

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _plain(value):
    """JSON values as both sides write them: 8.0 and 8 alike, no widgets = []."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def comparable(workflow: dict) -> dict:
    """The parts of a workflow a person would call 'the same graph'."""
    return {
        "nodes": sorted((n["id"], n["type"], n.get("title"), [round(v) for v in n["pos"]], n.get("mode", 0),
                         json.dumps(_plain(n.get("widgets_values") or []))) for n in workflow["nodes"]),
        "links": sorted(tuple(link[:6]) for link in workflow["links"]),
    }


def test_a_wrong_type_connection_is_refused_with_the_reason(editor):
    links = editor.links()
    # MODEL output of Load Checkpoint onto the CLIP input of the negative prompt
    editor.connect(1, "MODEL", 3, "clip")
    assert editor.links() == links
    toast = editor.page.wait_for_selector(".ng-toast.error")
    assert "MODEL" in toast.inner_text() and "clip" in toast.inner_text()
    save_doc_screenshot(editor.page, "wrong-type-refused")
    # a right-type drag still works (it replaces the existing CLIP link)
    editor.connect(1, "CLIP", 3, "clip")
    assert len(editor.links()) == len(links)


def test_an_invalid_value_shows_an_error_on_that_node_and_input(editor):
    workflow = json.loads((WORKFLOWS / "txt2img.json").read_text())
    for node in workflow["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            node["widgets_values"] = ["no-such-model.safetensors"]
    editor.load(workflow)
    before = comparable(editor.workflow())
    editor.allow_console_error("status of 400")  # the browser logs the refused POST /prompt
    editor.page.click("#btn-queue")
    panel = editor.page.wait_for_selector("#errors .ng-error-item")
    assert "#1 Load Checkpoint · ckpt_name" in panel.inner_text()
    assert "no-such-model.safetensors" in editor.page.inner_text("#errors")
    error = editor.state(1)["error"]
    assert "ckpt_name" in error["inputs"] and error["messages"]
    assert comparable(editor.workflow()) == before  # the graph is untouched
    save_doc_screenshot(editor.page, "validation-error")
    # a missing required input is shown on its node too
    editor.load(json.loads((WORKFLOWS / "txt2img.json").read_text()))
    editor.js("nodegraph.editor.nodeById(5).disconnectInput(1)")
    editor.page.click("#btn-queue")
    editor.page.wait_for_selector("#errors .ng-error-item[data-node='5']")
    assert "positive" in editor.state(5)["error"]["inputs"]


def test_save_reload_gives_the_same_graph(editor):
    page = editor.page
    # edit: move a node by its title, change a value with the widget arrow
    start = editor.title_pos(4)
    editor.drag(start, (start[0] + 60, start[1] + 40))
    page.mouse.click(*editor.widget_pos(5, "steps", "right-arrow"))
    assert editor.node(5)["widgets"]["steps"] == 21
    edited = comparable(editor.workflow())
    page.wait_for_timeout(400)  # the debounced autosave

    editor.reload()
    assert comparable(editor.workflow()) == edited

    # download = the same graph in ComfyUI's UI format
    with page.expect_download() as info:
        page.click("#btn-download")
    saved = json.loads(Path(info.value.path()).read_text())
    assert saved["version"] == 0.4 and comparable(saved) == edited

    # named on the server (Ctrl+S asks for a name the first time), then opened again from the list
    page.keyboard.press("Control+s")
    page.fill(".ng-modal input", "my txt2img")
    page.keyboard.press("Enter")
    on_disk = editor.server.layout.user / "default" / "workflows" / "my txt2img.json"
    page.wait_for_function("nodegraph.tabs.current.name === 'my txt2img.json'")
    assert comparable(json.loads(on_disk.read_text())) == edited
    page.click("#btn-new")
    assert editor.nodes() == []
    page.click("#btn-workflows")
    page.click("#panel-workflows [data-section='on the server'] li[data-name='my txt2img.json'] .open")
    page.wait_for_function("nodegraph.editor.nodes.length === 7")
    assert comparable(editor.workflow()) == edited
    assert page.inner_text("#tabs .tab.active .title") == "my txt2img"
    save_doc_screenshot(page, "workflows-on-server")


def drop_file(editor, data: bytes, name: str, mime: str, at) -> None:
    """Drop a file on the page at client position `at` (what the OS does on drag & drop)."""
    editor.js("""([bytes, name, mime, x, y]) => {
        const file = new File([new Uint8Array(bytes)], name, {type: mime});
        const dt = new DataTransfer();
        dt.items.add(file);
        const target = document.elementFromPoint(x, y);
        for (const type of ['dragenter', 'dragover', 'drop'])
          target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, clientX: x, clientY: y, bubbles: true, cancelable: true}));
    }""", [list(data), name, mime, at[0], at[1]])


def png_with(chunks: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_a_dropped_png_restores_its_workflow(editor, sd_server):
    workflow = json.loads((WORKFLOWS / "txt2img.json").read_text())
    workflow["nodes"][1]["widgets_values"] = ["a PNG-borne prompt — ünïcode ✓"]
    workflow["nodes"][1]["title"] = "From the PNG"
    editor.page.click("#btn-new")
    drop_file(editor, png_with({"workflow": json.dumps(workflow), "prompt": "{}"}), "made-here.png", "image/png",
              editor.empty_spot())
    editor.page.wait_for_function("nodegraph.editor.nodes.length === 7")
    assert comparable(editor.workflow()) == comparable(workflow)
    save_doc_screenshot(editor.page, "png-dropped")

    # a PNG with only the API prompt (as some tools write) is laid out automatically
    prompt = ui_to_api(json.loads((WORKFLOWS / "txt2img.json").read_text()), sd_server.state.registry)
    editor.page.click("#btn-new")
    drop_file(editor, png_with({"prompt": json.dumps(prompt)}), "api-only.png", "image/png", editor.empty_spot())
    editor.page.wait_for_function("nodegraph.editor.nodes.length === 7")
    assert_laid_out(editor)
    assert api_of(editor) == strip_meta(prompt)


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def api_of(editor) -> dict:
    return strip_meta(editor.js("(() => { const m = nodegraph; return m.__convert(m.editor.serialize()); })()"))


def assert_laid_out(editor) -> None:
    nodes = editor.nodes()
    for a in nodes:
        for b in nodes:
            if a["id"] < b["id"]:
                apart = (a["pos"][0] + a["size"][0] <= b["pos"][0] or b["pos"][0] + b["size"][0] <= a["pos"][0]
                         or a["pos"][1] + a["size"][1] <= b["pos"][1] - 30 or b["pos"][1] + b["size"][1] <= a["pos"][1] - 30)
                assert apart, f"nodes {a['id']} and {b['id']} overlap"


def test_api_format_json_opens_laid_out(editor, sd_server, tmp_path):
    prompt = ui_to_api(json.loads((WORKFLOWS / "img2img.json").read_text()), sd_server.state.registry)
    path = tmp_path / "img2img_api.json"
    path.write_text(json.dumps(prompt))
    editor.allow_console_error("status of 404")  # its Load Image names a file this server lacks
    with editor.page.expect_file_chooser() as chooser:
        editor.page.click("#btn-open")
    chooser.value.set_files(str(path))
    editor.page.wait_for_function(f"nodegraph.editor.nodes.length === {len(prompt)}")
    assert_laid_out(editor)
    assert api_of(editor) == strip_meta(prompt)
    save_doc_screenshot(editor.page, "api-json-laid-out")


LEGACY_UI = Path(__file__).resolve().parents[1] / "nodes" / "data" / "legacy_ui"


def test_the_page_builds_the_same_prompt_as_the_server(editor, sd_server):
    """Every example workflow and the ComfyUI files of 2023 (legacy widget values) convert alike."""
    different = []
    for path in sorted(WORKFLOWS.glob("*.json")) + sorted(LEGACY_UI.glob("*.json")):
        workflow = json.loads(path.read_text())
        expected = strip_meta(ui_to_api(workflow, sd_server.state.registry))
        if strip_meta(editor.js("w => nodegraph.__convert(w)", workflow)) != expected:
            different.append(path.name)
    assert not different


def test_muted_bypassed_reroute_and_primitive_convert_as_on_the_server(editor, sd_server):
    workflow = json.loads((WORKFLOWS / "txt2img.json").read_text())
    variant = copy.deepcopy(workflow)
    by_id = {n["id"]: n for n in variant["nodes"]}
    # Reroute between Load Checkpoint's MODEL and KSampler; a bypassed CLIP Set Last Layer on the CLIP path
    variant["nodes"].append({"id": 20, "type": "Reroute", "pos": [600, 150], "size": [75, 26], "mode": 0,
                             "inputs": [{"name": "", "type": "*", "link": 30}],
                             "outputs": [{"name": "", "type": "MODEL", "links": [31]}], "properties": {}})
    variant["nodes"].append({"id": 21, "type": "CLIPSetLastLayer", "pos": [200, 500], "size": [300, 60], "mode": 4,
                             "inputs": [{"name": "clip", "type": "CLIP", "link": 32}],
                             "outputs": [{"name": "CLIP", "type": "CLIP", "links": [33]}],
                             "properties": {}, "widgets_values": [-2]})
    variant["nodes"].append({"id": 22, "type": "PrimitiveNode", "pos": [600, 700], "size": [200, 80], "mode": 0,
                             "outputs": [{"name": "INT", "type": "INT", "links": [34], "widget": {"name": "steps"}}],
                             "properties": {}, "widgets_values": [7, "fixed"]})
    variant["links"] = [link for link in variant["links"] if link[0] not in (3, 1)]
    variant["links"] += [[30, 1, 0, 20, 0, "MODEL"], [31, 20, 0, 5, 0, "MODEL"], [32, 1, 1, 21, 0, "CLIP"],
                         [33, 21, 0, 2, 0, "CLIP"], [34, 22, 0, 5, 4, "INT"]]
    by_id[5]["inputs"][0]["link"] = 31
    by_id[2]["inputs"][0]["link"] = 33
    by_id[5]["inputs"].append({"name": "steps", "type": "INT", "link": 34, "widget": {"name": "steps"}})
    by_id[3]["mode"] = 2  # muted negative prompt: its input to KSampler is dropped
    expected = strip_meta(ui_to_api(variant, sd_server.state.registry))
    got = strip_meta(editor.js("w => nodegraph.__convert(w)", variant))
    assert got == expected
    assert got["5"]["inputs"]["steps"] == 7 and got["5"]["inputs"]["model"] == ["1", 0]
    assert got["2"]["inputs"]["clip"] == ["1", 1] and "negative" not in got["5"]["inputs"]


def test_upload_an_image_into_load_image(editor, sd_server, tmp_path):
    page = editor.page
    page.click("#btn-new")
    node = editor.add_node_by_search("load image", editor.empty_spot())
    image = tmp_path / "my photo.png"
    Image.new("RGB", (32, 24), (10, 120, 220)).save(image)
    with page.expect_file_chooser() as chooser:
        page.mouse.click(*editor.widget_pos(node, "upload"))
    chooser.value.set_files(str(image))
    page.wait_for_function(f"nodegraph.editor.nodeById({node}).widgets[0].value === 'my photo.png'")
    assert (sd_server.layout.input / "my photo.png").exists()
    editor.wait_images(node)
    assert "my photo.png" in editor.js("nodegraph.choicesOf('LoadImage', 'image')")
    save_doc_screenshot(page, "load-image-uploaded")
    # a second image dropped onto the node replaces it
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (250, 200, 0)).save(out, "PNG")
    drop_file(editor, out.getvalue(), "dropped.png", "image/png", editor.title_pos(node))
    page.wait_for_function(f"nodegraph.editor.nodeById({node}).widgets[0].value === 'dropped.png'")
    assert editor.workflow()["nodes"][0]["widgets_values"] == ["dropped.png", "image"]


def test_model_lists_refresh_from_the_server(editor, sd_server, clean_models):
    from nodes.default_model import DEFAULT_CHECKPOINT

    checkpoints = sd_server.layout.model_dirs("checkpoints")[0]
    checkpoints.mkdir(parents=True, exist_ok=True)
    source = sd_server.layout.model_path("checkpoints", DEFAULT_CHECKPOINT)  # offered from the package
    added = checkpoints / "another-model.safetensors"
    shutil.copyfile(source, added)
    clean_models.append(added)
    assert "another-model.safetensors" not in editor.js("nodegraph.choicesOf('CheckpointLoaderSimple', 'ckpt_name')")
    editor.page.click("#btn-refresh")
    editor.page.wait_for_function(
        "nodegraph.choicesOf('CheckpointLoaderSimple', 'ckpt_name').includes('another-model.safetensors')")
    # the combo on the existing node offers it: click its value, pick it from the menu
    editor.page.mouse.click(*editor.widget_pos(1, "ckpt_name"))
    editor.page.click(".litecontextmenu .litemenu-entry >> text=another-model.safetensors")
    assert editor.node(1)["widgets"]["ckpt_name"] == "another-model.safetensors"


def test_delete_undo_redo_and_copy_paste(editor):
    page = editor.page
    page.mouse.click(*editor.title_pos(6))
    page.keyboard.press("Delete")
    assert 6 not in {n["id"] for n in editor.nodes()}
    page.wait_for_timeout(300)
    page.keyboard.press("Control+z")
    page.wait_for_function("nodegraph.editor.nodes.length === 7")
    assert len(editor.links()) == 9
    page.keyboard.press("Control+y")
    page.wait_for_function("nodegraph.editor.nodes.length === 6")
    page.keyboard.press("Control+z")
    page.wait_for_function("nodegraph.editor.nodes.length === 7")
    page.mouse.click(*editor.title_pos(4))
    page.keyboard.press("Control+c")
    page.mouse.move(*editor.empty_spot())
    page.keyboard.press("Control+v")
    page.wait_for_function("nodegraph.editor.nodes.length === 8")
    assert len(editor.node_ids_of("EmptyLatentImage")) == 2


def test_the_default_graph_is_the_example_txt2img():
    web_copy = Path(__file__).resolve().parents[2] / "web" / "src" / "default_workflow.json"
    assert json.loads(web_copy.read_text()) == json.loads((WORKFLOWS / "txt2img.json").read_text()), \
        "copy workflows/txt2img.json to web/src/default_workflow.json"
