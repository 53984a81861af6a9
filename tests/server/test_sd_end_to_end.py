"""End to end with the real SD1.x nodes on the tiny generated checkpoint (64x64, few steps):
the PyPI client gets the PNG, upload then img2img, previews, interrupt within one sampler step,
and an unchanged re-queue served from the cache. Slow (torch and the node library load)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper  # noqa: E402
from PIL import Image  # noqa: E402

from nodegraph.workflow import load_document  # noqa: E402

from .live import LiveServer  # noqa: E402
from .wsclient import WS, done, of_type  # noqa: E402

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture(scope="module")
def sd_server(tmp_path_factory, sd_library):
    from nodes.default_model import ensure_default_checkpoint
    live = LiveServer(tmp_path_factory.mktemp("sd") / "home", sd_library)
    ensure_default_checkpoint(live.layout)
    yield live
    live.stop()


def workflow(name: str, sd_library, steps: int = 3, **inputs) -> dict:
    prompt = load_document(WORKFLOWS / name).to_api(sd_library)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"].update(steps=steps, **inputs)
    return prompt


def test_pypi_client_queues_txt2img_and_gets_the_png(sd_server, sd_library):
    api = ComfyApiWrapper(sd_server.url)
    images = api.queue_and_wait_images(ComfyWorkflowWrapper(workflow("txt2img.json", sd_library)), "Save Image")
    (name, data), = images.items()
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (64, 64)
    assert "prompt" in image.info  # the workflow is embedded, as ComfyUI's Save Image does


def test_upload_then_img2img(sd_server, sd_library):
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 60, 200)).save(source, format="PNG")
    up = sd_server.post("/upload/image", files={"image": ("mine.png", source.getvalue())}).json()
    prompt = workflow("img2img.json", sd_library)
    loader = next(n for n in prompt.values() if n["class_type"] == "LoadImage")
    loader["inputs"]["image"] = up["name"]
    entry = sd_server.wait_history(sd_server.queue(prompt)["prompt_id"], timeout=120)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (files,) = [ui["images"] for ui in entry["outputs"].values()]
    png = sd_server.get("/view", params=files[0]).content
    assert Image.open(io.BytesIO(png)).size == (64, 64)


def test_requeue_is_served_from_the_cache_and_previews_reach_the_ui(sd_server, sd_library):
    prompt = workflow("txt2img.json", sd_library, seed=1234)
    with WS(sd_server.ws_url + "?clientId=ui") as ws:
        ws.recv()
        ws.send({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        ws.recv()
        first = ws.until(done(sd_server.queue(prompt, client_id="ui")["prompt_id"]), timeout=120)
        second = ws.until(done(sd_server.queue(prompt, client_id="ui")["prompt_id"]), timeout=120)
    assert len(of_type(first, "progress")) == 3
    assert len([m for m in first if isinstance(m, bytes)]) == 3  # one latent2rgb preview per step
    assert sorted(of_type(second, "execution_cached")[0]["data"]["nodes"]) == sorted(prompt)
    assert [m["data"]["node"] for m in of_type(second, "executing")] == [None]
    assert of_type(second, "executed")[0]["data"]["output"] == of_type(first, "executed")[0]["data"]["output"]


def test_interrupt_lands_within_one_sampler_step(sd_server, sd_library):
    prompt = workflow("txt2img.json", sd_library, steps=400, seed=99)
    with WS(sd_server.ws_url + "?clientId=stop") as ws:
        ws.recv()
        prompt_id = sd_server.queue(prompt, client_id="stop")["prompt_id"]
        progress = ws.until(lambda m: isinstance(m, dict) and m["type"] == "progress" and m["data"]["value"] >= 3,
                            timeout=120)
        steps = [m["data"]["value"] for m in of_type(progress, "progress")]
        sd_server.post("/interrupt", {"prompt_id": prompt_id})
        after = ws.until(lambda m: isinstance(m, dict) and m["type"] == "execution_interrupted", timeout=60)
        ws.until(done(prompt_id))
    assert len(of_type(after, "progress")) <= 1, "more than one sampler step after the interrupt"
    assert of_type(after, "execution_interrupted")[0]["data"]["node_type"] == "KSampler"
    assert steps[-1] < 400
