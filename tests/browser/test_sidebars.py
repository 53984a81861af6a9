"""The panels: the history as a gallery (full-size view, the workflow that made a result), the node
library (search, click and drag a node onto the canvas) and the model browser (sizes, metadata,
drag a model onto the canvas for its loader)."""
from __future__ import annotations

from .conftest import save_doc_screenshot


def colour_workflow(color: int) -> dict:
    """EmptyImage → Save Image: runs in an instant."""
    return {
        "last_node_id": 2, "last_link_id": 1, "version": 0.4, "groups": [], "config": {}, "extra": {},
        "nodes": [
            {"id": 1, "type": "EmptyImage", "pos": [40, 80], "size": [300, 150], "flags": {}, "order": 0, "mode": 0,
             "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "properties": {}, "widgets_values": [48, 32, 1, color]},
            {"id": 2, "type": "SaveImage", "pos": [400, 80], "size": [300, 300], "flags": {}, "order": 1, "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [], "properties": {}, "widgets_values": ["gallery"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }


def test_history_gallery_full_size_and_the_workflow_that_made_it(editor):
    page = editor.page
    editor.js("fetch('/api/history', {method: 'POST', body: JSON.stringify({clear: true})})")
    for color in (0xFF0000, 0x00FF00):
        editor.load(colour_workflow(color))
        since = editor.event_count()
        page.keyboard.press("Control+Enter")
        editor.wait_event("execution_success", since, timeout=60)
    page.click("#btn-queue-panel")
    page.wait_for_function("document.querySelectorAll('#queue-panel .gallery .tile img').length === 2")
    page.wait_for_function("[...document.querySelectorAll('#queue-panel .gallery img')].every(i => i.naturalWidth > 0)")
    save_doc_screenshot(page, "history-gallery")

    page.click("#queue-panel .gallery .tile >> nth=1 >> img")  # the older one (red)
    page.wait_for_function("document.querySelector('.ng-lightbox img')?.naturalWidth === 48")
    assert "preview" not in editor.js("document.querySelector('.ng-lightbox img').src")  # the full-size file
    page.keyboard.press("Escape")
    page.click("#queue-panel .gallery .tile >> nth=1 >> .load")
    page.wait_for_function("nodegraph.tabs.tabs.length === 2")
    assert editor.widget_value(1, "color") == 0xFF0000


def test_node_library_search_click_and_drag(editor):
    page = editor.page
    page.click("#btn-new")
    page.click("#btn-library")
    page.fill("#panel-library input.filter", "latent")
    page.wait_for_selector("#panel-library li.node[data-type='EmptyLatentImage']")
    assert page.is_visible("#panel-library details[data-category='latent'] >> li.node[data-type='EmptyLatentImage']")
    assert not page.query_selector("#panel-library li.node[data-type='CheckpointLoaderSimple']")  # filtered out
    page.click("#panel-library li.node[data-type='EmptyLatentImage']")
    page.wait_for_function("nodegraph.editor.nodes.length === 1")
    save_doc_screenshot(page, "node-library")

    page.fill("#panel-library input.filter", "vae decode")
    target = editor.empty_spot(340, 120)
    page.drag_and_drop("#panel-library li.node[data-type='VAEDecode']", "#graph",
                       target_position={"x": target[0], "y": target[1] - page.query_selector("#graph").bounding_box()["y"]})
    page.wait_for_function("nodegraph.editor.nodes.length === 2")
    (decode,) = editor.node_ids_of("VAEDecode")
    gx, gy = editor.js("p => nodegraph.editor.toGraph(p)", list(target))
    assert abs(editor.node(decode)["pos"][0] - gx) < 2 and abs(editor.node(decode)["pos"][1] - gy) < 2


def test_model_browser_sizes_metadata_and_drag_for_a_loader(editor):
    from nodes.default_model import DEFAULT_CHECKPOINT

    page = editor.page
    page.click("#btn-new")
    page.click("#btn-models")
    page.click("#panel-models details[data-folder='checkpoints'] > summary")
    item = page.wait_for_selector(f"#panel-models li.model[data-name='{DEFAULT_CHECKPOINT}']")
    size = editor.server.layout.model_path("checkpoints", DEFAULT_CHECKPOINT).stat().st_size
    assert item.query_selector(".size").inner_text() == f"{size / 1024 / 1024:.1f} MB"
    item.click()
    info = page.wait_for_selector("#panel-models .model-info >> text=procedural")  # its safetensors metadata
    assert f"{size:,}" in page.inner_text("#panel-models .model-info") and info
    save_doc_screenshot(page, "model-browser")

    target = editor.empty_spot(340, 120)
    page.drag_and_drop(f"#panel-models li.model[data-name='{DEFAULT_CHECKPOINT}']", "#graph",
                       target_position={"x": target[0], "y": target[1] - page.query_selector("#graph").bounding_box()["y"]})
    page.wait_for_function("nodegraph.editor.nodes.length === 1")
    (loader,) = editor.node_ids_of("CheckpointLoaderSimple")
    assert editor.widget_value(loader, "ckpt_name") == DEFAULT_CHECKPOINT
