"""A real third-party ComfyUI client from PyPI, `comfy-api-simplified`, unmodified, against our
running server: it queues a workflow, waits on the websocket and downloads the PNG."""
from __future__ import annotations

import io

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from PIL import Image

from .server_nodes import png_prompt


def test_comfy_api_simplified_gets_the_png(server):
    api = ComfyApiWrapper(server.url)
    workflow = ComfyWorkflowWrapper(png_prompt(3.0, size=20))
    workflow.set_node_param("Number", "value", 4.0)
    images = api.queue_and_wait_images(workflow, "Save")
    assert len(images) == 1
    name, data = next(iter(images.items()))
    assert name.endswith(".png")
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (20, 20)
    assert (server.layout.output / name).read_bytes() == data


def test_comfy_api_simplified_other_calls(server):
    api = ComfyApiWrapper(server.url)
    assert "SavePNG" in api.get_object_info()
    assert "Number" in api.get_object_info("Number")
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}
    assert "system" in api.get_system_stats()
    assert api.get_embeddings() == []
    api.interrupt()
    prompt_id = api.queue_prompt(png_prompt(1.0))["prompt_id"]
    server.wait_history(prompt_id)
    assert prompt_id in api.get_history(prompt_id)
