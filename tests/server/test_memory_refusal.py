"""A request too big for memory, sent to a running server with a budget far below the machine's: the
prompt fails before anything large is allocated, with an error naming the node, the input, the estimate
and the limit; the server keeps serving and the next prompt runs."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from nodegraph.workflow import load_document  # noqa: E402

from .live import LiveServer  # noqa: E402

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def sd_server(tmp_path, sd_library, monkeypatch):
    from nodes.default_model import ensure_default_checkpoint
    monkeypatch.setenv("NODEGRAPH_RAM_BUDGET", "256MB")
    live = LiveServer(tmp_path / "home", sd_library)
    ensure_default_checkpoint(live.layout)
    yield live
    live.stop()


def txt2img(sd_library, **latent) -> dict:
    prompt = load_document(WORKFLOWS / "txt2img.json").to_api(sd_library)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(latent)
    return prompt


def error_of(entry: dict) -> dict:
    status = entry["status"]
    assert status["status_str"] == "error", status
    (kind, data), = [m for m in status["messages"] if m[0] == "execution_error"]
    return data


@pytest.mark.parametrize("latent, node_type, input_name", [
    ({"width": 8192, "height": 8192, "batch_size": 64}, "EmptyLatentImage", "batch_size"),  # 1 GB of latent
    ({"width": 2048, "height": 2048, "batch_size": 8}, "KSampler", "latent_image"),  # a small latent, huge UNet calls
])
def test_too_big_is_refused_naming_node_and_input_and_the_server_carries_on(sd_server, sd_library, latent,
                                                                             node_type, input_name):
    bad = sd_server.queue(txt2img(sd_library, **latent))["prompt_id"]
    error = error_of(sd_server.wait_history(bad, timeout=60))
    assert error["node_type"] == node_type
    message = error["exception_message"]
    assert input_name in message and "256.0 MB" in message and "NODEGRAPH_RAM_BUDGET" in message, message
    good = sd_server.queue(txt2img(sd_library))["prompt_id"]
    assert sd_server.wait_history(good, timeout=60)["status"]["status_str"] == "success"
    assert sd_server.get("/system_stats").status_code == 200
