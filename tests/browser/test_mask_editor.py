"""The mask editor: a stroke painted with the mouse on a Load Image node's image is saved through
/upload/mask into the image's alpha (as ComfyUI does), the node loads the new file, and a workflow
using its MASK output gets the painted area; invert, clear and erase."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from .conftest import save_doc_screenshot


def mask_workflow(image: str) -> dict:
    """Load Image → MASK → Convert Mask to Image → Save Image."""
    return {
        "last_node_id": 3, "last_link_id": 2, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [40, 80], "size": [320, 320], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}, {"name": "MASK", "type": "MASK", "links": [1]}],
             "properties": {}, "widgets_values": [image, "image"]},
            {"id": 2, "type": "MaskToImage", "pos": [420, 80], "size": [220, 60], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "mask", "type": "MASK", "link": 1}], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
             "properties": {}},
            {"id": 3, "type": "SaveImage", "pos": [700, 80], "size": [300, 300], "flags": {}, "order": 2, "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [], "properties": {}, "widgets_values": ["masktest"]},
        ],
        "links": [[1, 1, 1, 2, 0, "MASK"], [2, 2, 0, 3, 0, "IMAGE"]],
    }


def open_mask_editor(editor, node_id: int = 1) -> None:
    page = editor.page
    page.mouse.click(*editor.title_pos(node_id), button="right")
    page.click(".litecontextmenu .litemenu-entry >> text=Open in mask editor")
    page.wait_for_function("document.querySelector('.ng-mask-editor canvas.mask')?.getBoundingClientRect().width > 0")


def image_point(editor, fx: float, fy: float) -> tuple[float, float]:
    """A point of the shown image, as fractions of its width and height, in client pixels."""
    box = editor.page.query_selector(".ng-mask-editor canvas.mask").bounding_box()
    return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy


def saved_alpha(editor) -> np.ndarray:
    value = editor.js("nodegraph.editor.nodeById(1).widgets[0].value")
    assert value.startswith("clipspace/clipspace-mask-") and value.endswith(" [input]")
    path = editor.server.layout.input / value.removesuffix(" [input]")
    with Image.open(path) as image:
        assert image.mode == "RGBA" and image.size == (64, 48)
        return np.asarray(image)[:, :, 3]


def test_paint_a_mask_save_it_and_use_it_in_a_workflow(editor):
    page = editor.page
    Image.new("RGB", (64, 48), (20, 120, 200)).save(editor.server.layout.input / "to-mask.png")
    editor.load(mask_workflow("to-mask.png"))
    editor.js("nodegraph.refreshDefinitions({quiet: true})")
    open_mask_editor(editor)
    page.fill(".ng-mask-editor input[name=size]", "8")
    page.fill(".ng-mask-editor input[name=hardness]", "1")
    editor.drag(image_point(editor, 0.1, 0.5), image_point(editor, 0.9, 0.5), steps=12)  # a horizontal stroke
    save_doc_screenshot(page, "mask-editor")
    page.click(".ng-mask-editor [data-action=save]")
    page.wait_for_selector(".ng-mask-editor", state="detached")

    alpha = saved_alpha(editor)
    assert alpha[24, 10:54].max() == 0  # painted: transparent
    assert alpha[:12].min() == 255 and alpha[36:].min() == 255  # the rest untouched
    with Image.open(editor.server.layout.input / editor.js("nodegraph.editor.nodeById(1).widgets[0].value").removesuffix(" [input]")) as image:
        assert np.abs(np.asarray(image.convert("RGB"))[5, 5].astype(int) - (20, 120, 200)).max() <= 1  # the colours kept

    since = editor.event_count()
    page.keyboard.press("Control+Enter")
    done = editor.wait_event("executed", since, timeout=60)
    (ref,) = done["data"]["output"]["images"]
    with Image.open(editor.server.layout.output / ref["subfolder"] / ref["filename"]) as out:
        mask = np.asarray(out.convert("L"))
    assert mask[24, 12:52].min() > 250 and mask[4, 4] < 5  # MASK = 1 - alpha: the stroke

    # again: erase the middle of the stroke, then invert the whole mask
    open_mask_editor(editor)
    page.click(".ng-mask-editor [data-mode=erase]")
    page.fill(".ng-mask-editor input[name=size]", "12")
    editor.drag(image_point(editor, 0.5, 0.3), image_point(editor, 0.5, 0.7), steps=6)
    page.click(".ng-mask-editor [data-action=invert]")
    page.click(".ng-mask-editor [data-action=save]")
    page.wait_for_selector(".ng-mask-editor", state="detached")
    alpha = saved_alpha(editor)
    assert alpha[24, 32] == 0 and alpha[24, 12] == 255 and alpha[4, 4] == 0  # erased, then inverted

    open_mask_editor(editor)
    page.click(".ng-mask-editor [data-action=clear]")
    page.click(".ng-mask-editor [data-action=save]")
    page.wait_for_selector(".ng-mask-editor", state="detached")
    assert saved_alpha(editor).min() == 255
    assert json.dumps(editor.workflow()).count("clipspace-mask-") == 1
