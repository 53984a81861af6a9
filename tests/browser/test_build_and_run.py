"""A person's first run: the page opens on the default graph; txt2img is built on an empty
canvas with the mouse and keyboard, queued with Ctrl+Enter, and its image arrives in Save Image.
Then the seed moves as its control says, a re-queue marks cached nodes, and interrupt stops a run."""
from __future__ import annotations

from .conftest import save_doc_screenshot


def test_page_loads_on_the_default_graph(editor):
    titles = sorted(n["title"] for n in editor.nodes())
    assert titles == sorted(["Load Checkpoint", "Positive prompt", "Negative prompt", "Empty Latent Image",
                             "KSampler", "VAE Decode", "Save Image"])
    assert len(editor.links()) == 9
    assert editor.node(1)["widgets"]["ckpt_name"] == "nodegraph-demo.safetensors"
    assert editor.page.inner_text("#queue-counter") == "Queue: 0"
    save_doc_screenshot(editor.page, "default-graph")
    # console errors fail the test in the fixture's teardown


def test_build_txt2img_from_an_empty_canvas_and_queue_it(editor):
    page = editor.page
    page.click("#btn-new")
    assert editor.nodes() == []
    spots = {  # where each node is dropped, in graph units
        "Load Checkpoint": (0, 200), "CLIP Text Encode": (420, 20), "negative": (420, 300),
        "Empty Latent Image": (420, 560), "KSampler": (820, 200), "VAE Decode": (1200, 200), "Save Image": (1200, 400),
    }
    editor.js("nodegraph.editor.setView({scale: 0.62, offset: [30, 30]})")
    ids = {}
    for key, query in [("Load Checkpoint", "load checkpoint"), ("CLIP Text Encode", "clip text encode"),
                       ("negative", "cliptextencode"), ("Empty Latent Image", "empty latent"),
                       ("KSampler", "ksampler"), ("VAE Decode", "vae decode"), ("Save Image", "save image")]:
        ids[key] = editor.add_node_by_search(query, editor.to_client(spots[key]))
    types = {k: editor.node(v)["type"] for k, v in ids.items()}
    assert types == {"Load Checkpoint": "CheckpointLoaderSimple", "CLIP Text Encode": "CLIPTextEncode",
                     "negative": "CLIPTextEncode", "Empty Latent Image": "EmptyLatentImage", "KSampler": "KSampler",
                     "VAE Decode": "VAEDecode", "Save Image": "SaveImage"}
    ckpt, pos, neg, latent, sampler, decode, save = (ids[k] for k in spots)
    for args in [(ckpt, "MODEL", sampler, "model"), (ckpt, "CLIP", pos, "clip"), (ckpt, "CLIP", neg, "clip"),
                 (pos, "CONDITIONING", sampler, "positive"), (neg, "CONDITIONING", sampler, "negative"),
                 (latent, "LATENT", sampler, "latent_image"), (sampler, "LATENT", decode, "samples"),
                 (ckpt, "VAE", decode, "vae"), (decode, "IMAGE", save, "images")]:
        editor.connect(*args)
    assert len(editor.links()) == 9

    editor.set_text(pos, "text", "a red circle")
    editor.set_text(neg, "text", "blurry")
    editor.set_number(latent, "width", 64)
    editor.set_number(latent, "height", 64)
    editor.set_number(sampler, "steps", 2)
    assert editor.node(pos)["widgets"]["text"] == "a red circle"
    seed_before = editor.node(sampler)["widgets"]["seed"]
    assert editor.node(sampler)["widgets"]["control_after_generate"] == "randomize"
    save_doc_screenshot(page, "built-from-scratch")

    since = editor.event_count()
    page.mouse.click(*editor.empty_spot())
    page.keyboard.press("Control+Enter")
    editor.wait_event("execution_start", since)
    progress = editor.wait_event("progress", since)
    assert str(progress["data"]["node"]) == str(sampler)
    editor.wait_event("execution_success", since, timeout=90)
    editor.wait_images(save)
    assert editor.canvas_pixels_in_node_images(save)["distinct"] > 20  # an image, not a flat panel
    assert page.inner_text("#queue-counter") == "Queue: 0"
    # "randomize" moved the seed once the prompt was queued
    assert editor.node(sampler)["widgets"]["seed"] != seed_before
    save_doc_screenshot(page, "image-in-save-node")

    # The API prompt the page sent matches the server's own conversion of the same workflow.
    entry = editor.server.get(f"/history/{editor.js('nodegraph.lastPromptId')}").json()
    (item,) = entry.values()
    _, _, sent_prompt, extra, _ = item["prompt"]
    assert extra["extra_pnginfo"]["workflow"]["nodes"]
    assert sent_prompt[str(sampler)]["inputs"]["steps"] == 2
    assert sent_prompt[str(pos)]["inputs"]["text"] == "a red circle"

    # Full size on double-click of the image.
    x, y = editor.to_client([editor.node(save)["pos"][0] + 120, editor.node(save)["pos"][1] + editor.node(save)["size"][1] - 60])
    editor.double_click_for((x, y), ".ng-lightbox")
    page.wait_for_function("document.querySelector('.ng-lightbox img')?.naturalWidth > 0")
    page.keyboard.press("Escape")
    assert page.query_selector(".ng-lightbox") is None

    # A second run with the seed fixed: nothing upstream changed, so those nodes are marked cached.
    editor.js("""id => { const n = nodegraph.editor.nodeById(id);
        n.widgets.find(w => w.name === 'control_after_generate').value = 'fixed';
        n.widgets.find(w => w.name === 'seed').value += 1; }""", sampler)
    since = editor.event_count()
    page.click("#btn-queue")
    cached = editor.wait_event("execution_cached", since)["data"]["nodes"]
    assert {str(ckpt), str(pos), str(neg), str(latent)} <= set(map(str, cached))
    assert editor.state(ckpt).get("cached") is True
    editor.wait_event("execution_success", since, timeout=90)
    save_doc_screenshot(page, "cached-rerun")


def test_interrupt_stops_a_run(editor):
    page = editor.page
    sampler = editor.node_ids_of("KSampler")[0]
    editor.js("id => { nodegraph.editor.nodeById(id).widgets.find(w => w.name === 'steps').value = 10000; }", sampler)
    since = editor.event_count()
    page.click("#btn-queue")
    editor.wait_event("progress", since, timeout=90)
    page.wait_for_function("document.querySelector('#queue-counter').textContent === 'Queue: 1'")
    assert 0 < editor.state(sampler)["progress"] < 1  # the bar on the running node
    assert editor.state(sampler)["running"] is True
    save_doc_screenshot(page, "running-progress")
    page.click("#queue-counter")
    page.wait_for_selector("#queue-panel .ng-queue-item.running")
    save_doc_screenshot(page, "queue-panel")
    page.click("#btn-interrupt")
    interrupted = editor.wait_event("execution_interrupted", since, timeout=30)
    assert str(interrupted["data"]["node_id"]) == str(sampler)
    page.wait_for_selector(".ng-toast >> text=Interrupted")
    page.wait_for_function("document.querySelector('#queue-counter').textContent === 'Queue: 0'")
    assert editor.state(sampler) == {}


def test_search_and_category_menu_add_nodes(editor):
    page = editor.page
    page.click("#btn-new")
    page.click("#btn-search")
    page.keyboard.type("ksampler")  # plain "sampler" now ranks SamplerCustom* (a name prefix) first
    first = page.wait_for_selector(".ng-search li.selected")
    assert "Sampler" in first.get_attribute("data-type")  # KSampler, SamplerCustom, ...
    save_doc_screenshot(page, "node-search")
    page.keyboard.press("Escape")
    assert page.query_selector(".ng-search") is None
    page.click("#btn-add")
    page.hover(".ng-menu .item.submenu >> text=latent")
    page.click(".ng-menu .item[data-type='EmptyLatentImage']")
    assert [n["type"] for n in editor.nodes()] == ["EmptyLatentImage"]
