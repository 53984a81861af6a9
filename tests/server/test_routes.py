"""Every HTTP route, under `/` and under `/api/`, with ComfyUI's request and response shapes."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image, PngImagePlugin

from .live import wait_until
from .server_nodes import number_prompt, png_prompt, slow_prompt

PREFIXES = ["", "/api"]


def _png(size=(8, 8), color=(10, 200, 30, 255), text: dict | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    buffer = io.BytesIO()
    Image.new("RGBA", size, color).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_prompt_queue_and_history(server, prefix):
    assert server.get(prefix + "/prompt").json() == {"exec_info": {"queue_remaining": 0}}
    # the body is JSON whatever the content type says
    response = server.post(prefix + "/prompt", {"prompt": number_prompt(2.0), "client_id": "x", "unknown": 1},
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
    entry = server.wait_history(body["prompt_id"])
    assert entry["prompt"][:2] == [body["number"], body["prompt_id"]]
    assert entry["prompt"][3] == {"client_id": "x"} and entry["prompt"][4] == ["3"]
    assert entry["outputs"] == {"3": {"text": ["4.0"]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["meta"]["3"]["node_id"] == "3"
    assert server.get(prefix + "/history/unknown-id").json() == {}
    history = server.get(prefix + "/history").json()
    assert list(history) == [body["prompt_id"]]


def test_prompt_is_counted_before_the_answer(server):
    slow = server.queue(slow_prompt(steps=200, delay=0.02))
    second = server.queue(number_prompt(1.0))
    assert server.get("/prompt").json()["exec_info"]["queue_remaining"] == 2
    queue = server.get("/queue").json()
    assert [i[1] for i in queue["queue_running"]] == [slow["prompt_id"]]
    assert [i[1] for i in queue["queue_pending"]] == [second["prompt_id"]]
    item = queue["queue_pending"][0]
    assert len(item) == 5 and item[0] == second["number"] and item[2]["1"]["class_type"] == "Number" and item[4] == ["3"]
    server.post("/interrupt")
    server.wait_idle()


def test_priority_number_and_front(server):
    blocker = server.queue(slow_prompt(steps=200, delay=0.02))["prompt_id"]
    a = server.queue(number_prompt(1.0))
    b = server.queue(number_prompt(2.0), front=True)
    c = server.queue(number_prompt(3.0), number=-1000)
    pending = [i[1] for i in server.get("/queue").json()["queue_pending"]]
    assert pending == [c["prompt_id"], b["prompt_id"], a["prompt_id"]]
    assert b["number"] < 0 and c["number"] == -1000
    server.post("/interrupt", {"prompt_id": blocker})
    server.wait_idle()
    assert list(server.get("/history").json())[1:] == [c["prompt_id"], b["prompt_id"], a["prompt_id"]]


def test_client_chosen_prompt_id_and_duplicates(server):
    assert server.queue(number_prompt(1.5), prompt_id="mine")["prompt_id"] == "mine"
    server.wait_history("mine")
    blocker = server.queue(slow_prompt(steps=200, delay=0.02), prompt_id="busy")
    again = server.post("/prompt", {"prompt": number_prompt(1.0), "prompt_id": "busy"})
    assert again.status_code == 400 and again.json()["error"]["type"] == "duplicate_prompt_id"
    server.post("/interrupt", {"prompt_id": blocker["prompt_id"]})
    server.wait_idle()


def test_validation_errors_have_comfyui_shape(server):
    no_prompt = server.post("/prompt", {"client_id": "x"})
    assert no_prompt.status_code == 400
    assert no_prompt.json() == {"error": {"type": "no_prompt", "message": "No prompt provided",
                                          "details": "No prompt provided", "extra_info": {}}, "node_errors": {}}
    unknown = server.post("/prompt", {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}).json()
    assert unknown["error"]["type"] == "invalid_prompt" and "Nope" in unknown["error"]["message"]
    no_outputs = server.post("/prompt", {"prompt": {"1": {"class_type": "Number", "inputs": {"value": 1}}}}).json()
    assert no_outputs["error"]["type"] == "prompt_no_outputs"
    bad = number_prompt()
    bad["2"]["inputs"]["factor"] = 1000
    failed = server.post("/prompt", {"prompt": bad})
    assert failed.status_code == 400
    body = failed.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["2"]["errors"][0]["type"] == "value_bigger_than_max"
    assert body["node_errors"]["2"]["dependent_outputs"] == ["3"] and body["node_errors"]["2"]["class_type"] == "Multiply"
    assert server.get("/prompt").json()["exec_info"]["queue_remaining"] == 0


def test_partial_execution_targets(server):
    prompt = {**number_prompt(1.0), "4": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    body = server.queue(prompt, partial_execution_targets=["4"])
    entry = server.wait_history(body["prompt_id"])
    assert entry["prompt"][4] == ["4"] and list(entry["outputs"]) == ["4"]


def test_ui_workflow_is_accepted_as_prompt(server):
    workflow = {"last_node_id": 2, "last_link_id": 1, "version": 0.4, "links": [[1, 1, 0, 2, 0, "FLOAT"]],
                "nodes": [{"id": 1, "type": "Number", "mode": 0, "inputs": [],
                           "outputs": [{"name": "value", "type": "FLOAT", "links": [1]}], "widgets_values": [4.0]},
                          {"id": 2, "type": "Show", "mode": 0, "inputs": [{"name": "value", "type": "FLOAT", "link": 1}],
                           "outputs": [], "widgets_values": []}]}
    entry = server.wait_history(server.queue(workflow)["prompt_id"])
    assert entry["outputs"] == {"2": {"text": ["4.0"]}}


def test_subgraph_workflow_is_accepted_as_prompt(server):
    from tests.engine import subgraph_fixtures
    entry = server.wait_history(server.queue(subgraph_fixtures.workflow())["prompt_id"])
    assert entry["outputs"] == {"2": {"text": ["14.0"]}}
    answer = server.post("/prompt", {"prompt": subgraph_fixtures.workflow(definitions=[])})
    assert answer.status_code == 400 and subgraph_fixtures.SCALE in answer.text


@pytest.mark.parametrize("prefix", PREFIXES)
def test_queue_delete_and_clear(server, prefix):
    blocker = server.queue(slow_prompt(steps=300, delay=0.02))["prompt_id"]
    ids = [server.queue(number_prompt(float(i)))["prompt_id"] for i in range(4)]
    assert server.post(prefix + "/queue", {"delete": [ids[0], "not-there"]}).status_code == 200
    assert [i[1] for i in server.get("/queue").json()["queue_pending"]] == ids[1:]
    assert server.post(prefix + "/queue", {"clear": True}).status_code == 200
    assert server.get("/queue").json()["queue_pending"] == []
    server.post("/interrupt")
    server.wait_idle()
    assert list(server.get("/history").json()) == [blocker]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_history_paging_delete_and_clear(server, prefix):
    ids = [server.queue(number_prompt(float(i)))["prompt_id"] for i in range(5)]
    server.wait_history(ids[-1])
    assert list(server.get(prefix + "/history", params={"max_items": 2}).json()) == ids[-2:]
    assert list(server.get(prefix + "/history", params={"max_items": 2, "offset": 1}).json()) == ids[1:3]
    assert server.get(prefix + "/history", params={"max_items": "x"}).status_code == 400
    server.post(prefix + "/history", {"delete": [ids[0]]})
    assert list(server.get("/history").json()) == ids[1:]
    server.post(prefix + "/history", {"clear": True})
    assert server.get("/history").json() == {}


def test_history_is_bounded(tmp_path):
    from .live import LiveServer
    from .server_nodes import make_registry
    live = LiveServer(tmp_path / "home", make_registry(), history_size=3)
    try:
        ids = [live.queue(number_prompt(float(i)))["prompt_id"] for i in range(6)]
        live.wait_history(ids[-1])
        assert list(live.get("/history").json()) == ids[-3:]
    finally:
        live.stop()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_free_clears_the_cache(server, prefix, calls):
    server.wait_history(server.queue(number_prompt(9.0))["prompt_id"])
    assert server.get("/system_stats").json()["cache"]["entries"] == 3
    assert server.post(prefix + "/free", {"unload_models": True, "free_memory": True}).status_code == 200
    assert server.get("/system_stats").json()["cache"]["entries"] == 0
    calls.clear()
    server.wait_history(server.queue(number_prompt(9.0))["prompt_id"])
    assert calls["Number"] == 1


@pytest.mark.parametrize("prefix", PREFIXES)
def test_jobs(server, prefix):
    done = server.queue(png_prompt(1.0))["prompt_id"]
    server.wait_history(done)
    running = server.queue(slow_prompt(steps=300, delay=0.02))["prompt_id"]
    wait_until(lambda: server.get(prefix + f"/jobs/{running}").json()["status"] == "in_progress")  # dispatched
    pending = server.queue(number_prompt(3.0))["prompt_id"]
    body = server.get(prefix + "/jobs").json()
    assert body["pagination"] == {"offset": 0, "limit": 100, "total": 3, "has_more": False}
    assert [(j["id"], j["status"]) for j in body["jobs"]] == [(running, "in_progress"), (pending, "pending"),
                                                              (done, "completed")]
    finished = body["jobs"][2]
    assert finished["outputs_count"] == 1 and finished["preview_output"]["nodeId"] == "2"
    assert finished["preview_output"]["mediaType"] == "images" and finished["execution_end_time"] >= finished["create_time"]
    only = server.get(prefix + "/jobs", params={"status": "pending,in_progress", "limit": 1}).json()
    assert [j["id"] for j in only["jobs"]] == [running] and only["pagination"]["has_more"] is True
    detail = server.get(prefix + f"/jobs/{done}").json()
    assert detail["outputs"]["2"]["images"][0]["type"] == "output" and detail["execution_status"]["completed"]
    assert server.get(prefix + "/jobs/nope").status_code == 404
    assert server.get(prefix + "/jobs", params={"status": "weird"}).status_code == 400
    server.post("/interrupt")
    server.wait_idle()
    assert server.get("/jobs", params={"status": "cancelled"}).json()["jobs"][0]["id"] == running


@pytest.mark.parametrize("prefix", PREFIXES)
def test_object_info(server, prefix):
    info = server.get(prefix + "/object_info").json()
    assert {"Number", "Multiply", "Show", "SavePNG", "V1Scale"} <= set(info)
    show = info["Show"]
    assert show["output_node"] is True and show["input"]["required"]["value"][0] == "FLOAT,STRING"
    assert {"input", "input_order", "output", "output_is_list", "output_name", "name", "display_name",
            "description", "python_module", "category", "output_node"} <= set(show)
    assert server.get(prefix + "/object_info/Multiply").json() == {"Multiply": info["Multiply"]}
    assert server.get(prefix + "/object_info/Unknown").json() == {}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_models_embeddings_extensions(server, prefix):
    checkpoints = server.layout.models[0] / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "a.safetensors").write_bytes(b"x")
    (server.layout.models[0] / "embeddings").mkdir()
    (server.layout.models[0] / "embeddings" / "nice.pt").write_bytes(b"x")
    folders = server.get(prefix + "/models").json()
    assert "checkpoints" in folders and "loras" in folders
    assert server.get(prefix + "/models/checkpoints").json() == ["a.safetensors"]
    assert server.get(prefix + "/models/nope").status_code == 404
    assert server.get(prefix + "/embeddings").json() == ["nice"]
    assert isinstance(server.get(prefix + "/extensions").json(), list)


def test_model_files_with_sizes(server):
    loras = server.layout.models[0] / "loras"
    (loras / "sub").mkdir(parents=True)
    (loras / "a.safetensors").write_bytes(b"x" * 10)
    (loras / "sub" / "b.pt").write_bytes(b"y" * 3)
    files = {f["name"]: f for f in server.get("/api/experiment/models/loras").json()}
    assert {n: f["size"] for n, f in files.items()} == {"a.safetensors": 10, "sub/b.pt": 3}
    assert files["a.safetensors"]["pathIndex"] == 0 and files["a.safetensors"]["modified"] > 0
    assert server.get("/experiment/models/nope").status_code == 404


def test_example_workflows_are_templates(server):
    from nodegraph import resources
    listed = server.get("/api/workflow_templates").json()
    assert listed == {"nodegraph": resources.example_names()} and "txt2img" in listed["nodegraph"]
    workflow = server.get("/api/workflow_templates/nodegraph/txt2img.json").json()
    assert workflow == json.loads(resources.example_path("txt2img").read_text())
    for bad in ("nope.json", "..%2Fpyproject.toml", "txt2img"):
        assert server.get(f"/api/workflow_templates/nodegraph/{bad}").status_code == 404
    assert server.get("/api/workflow_templates/other/txt2img.json").status_code == 404


def test_view_metadata(server):
    import struct
    folder = server.layout.models[0] / "loras"
    folder.mkdir(parents=True)
    header = json.dumps({"__metadata__": {"ss_network_dim": "4"}}).encode()
    (folder / "l.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    assert server.get("/view_metadata/loras", params={"filename": "l.safetensors"}).json() == {"ss_network_dim": "4"}
    assert server.get("/api/view_metadata/loras", params={"filename": "../x.safetensors"}).status_code in (400, 403)
    assert server.get("/view_metadata/loras", params={"filename": "missing.safetensors"}).status_code == 404


@pytest.mark.parametrize("prefix", PREFIXES)
def test_system_stats_and_features(server, prefix):
    stats = server.get(prefix + "/system_stats").json()
    assert {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "pytorch_version",
            "embedded_python", "argv"} <= set(stats["system"])
    assert stats["devices"][0]["type"] in ("cpu", "cuda")
    assert stats["cache"]["policy"] == "lru-bytes" and "budget_bytes" in stats["cache"] and "used_bytes" in stats["cache"]
    assert server.get(prefix + "/features").json() == {"supports_preview_metadata": True,
                                                       "max_upload_size": 100 * 1024 * 1024}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_upload_then_view(server, prefix):
    data = _png(text={"workflow": "{}"})
    up = server.post(prefix + "/upload/image", files={"image": ("pic.png", data, "image/png")})
    assert up.status_code == 200 and up.json() == {"name": "pic.png", "subfolder": "", "type": "input"}
    assert (server.layout.input / "pic.png").read_bytes() == data
    # the same bytes again: the name is reused; other bytes: de-duplicated name
    assert server.post(prefix + "/upload/image", files={"image": ("pic.png", data)}).json()["name"] == "pic.png"
    other = _png(color=(1, 2, 3, 255))
    assert server.post(prefix + "/upload/image", files={"image": ("pic.png", other)}).json()["name"] == "pic (1).png"
    assert server.post(prefix + "/upload/image", files={"image": ("pic.png", other)},
                       data={"overwrite": "true"}).json()["name"] == "pic.png"
    sub = server.post(prefix + "/upload/image", files={"image": ("s.png", data)},
                      data={"subfolder": "clips/a", "type": "temp"}).json()
    assert sub == {"name": "s.png", "subfolder": "clips/a", "type": "temp"}

    view = server.get(prefix + "/view", params={"filename": "pic.png", "type": "input"})
    assert view.status_code == 200 and view.content == other and view.headers["Content-Type"] == "image/png"
    assert server.get(prefix + "/view", params={"filename": "pic.png [input]"}).content == other
    assert server.get(prefix + "/view", params={"filename": "s.png", "subfolder": "clips/a", "type": "temp"}).content == data
    webp = server.get(prefix + "/view", params={"filename": "pic.png", "type": "input", "preview": "webp;50"})
    assert webp.headers["Content-Type"] == "image/webp" and Image.open(io.BytesIO(webp.content)).format == "WEBP"
    jpeg = server.get(prefix + "/view", params={"filename": "pic.png", "type": "input", "preview": "jpeg;80"})
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    rgb = Image.open(io.BytesIO(server.get(prefix + "/view", params={"filename": "pic.png", "type": "input",
                                                                       "channel": "rgb"}).content))
    assert rgb.mode == "RGB"
    alpha = Image.open(io.BytesIO(server.get(prefix + "/view", params={"filename": "pic.png", "type": "input",
                                                                         "channel": "a"}).content))
    assert alpha.mode == "RGBA" and alpha.getchannel("A").getextrema() == (255, 255)
    assert server.get(prefix + "/view", params={"filename": "missing.png"}).status_code == 404
    assert server.get(prefix + "/view").status_code == 400
    assert server.get(prefix + "/view", params={"filename": "pic.png", "type": "models"}).status_code == 400


def test_view_of_an_output_image(server):
    entry = server.wait_history(server.queue(png_prompt(1.0, size=24))["prompt_id"])
    image = entry["outputs"]["2"]["images"][0]
    response = server.get("/view", params=image)
    assert Image.open(io.BytesIO(response.content)).size == (24, 24)


def test_upload_mask_merges_alpha_and_keeps_text(server):
    server.post("/upload/image", files={"image": ("orig.png", _png(text={"prompt": "{\"a\": 1}"}))})
    mask = _png(color=(0, 0, 0, 0))
    response = server.post("/upload/mask", files={"image": ("orig-mask.png", mask)},
                           data={"original_ref": json.dumps({"filename": "orig.png", "subfolder": "", "type": "input"})})
    assert response.status_code == 200 and response.json()["name"] == "orig-mask.png"
    merged = Image.open(server.layout.input / "orig-mask.png")
    assert merged.getchannel("A").getextrema() == (0, 0) and merged.info.get("prompt") == "{\"a\": 1}"
    missing = server.post("/upload/mask", files={"image": ("m.png", mask)},
                          data={"original_ref": json.dumps({"filename": "nope.png"})})
    assert missing.status_code == 404
    bad_ref = server.post("/upload/mask", files={"image": ("m.png", mask)}, data={"original_ref": "{"})
    assert bad_ref.status_code == 400


def test_internal_files(server):
    server.post("/upload/image", files={"image": ("a.png", _png())})
    assert server.get("/internal/files/input").json() == ["a.png"]
    assert server.get("/api/internal/files/models").status_code == 400


@pytest.mark.parametrize("prefix", PREFIXES)
def test_users_settings_i18n(server, prefix):
    assert server.get(prefix + "/users").json() == {"storage": "server", "migrated": True}
    assert server.get(prefix + "/settings").json() == {}
    assert server.post(prefix + "/settings", {"Comfy.A": 1, "Comfy.B": "x"}).status_code == 200
    assert server.post(prefix + "/settings/Comfy.C", [1, 2]).status_code == 200
    assert server.get(prefix + "/settings").json() == {"Comfy.A": 1, "Comfy.B": "x", "Comfy.C": [1, 2]}
    assert server.get(prefix + "/settings/Comfy.B").json() == "x"
    assert server.get(prefix + "/settings/Missing").json() is None
    assert server.post(prefix + "/settings", [1]).status_code == 400
    user = server.post(prefix + "/users", {"username": "ann"})
    assert user.status_code == 200 and user.json().startswith("ann_")
    assert server.post(prefix + "/users", {"username": "ann"}).status_code == 400
    assert server.get(prefix + "/i18n").json() == {}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_userdata_workflows(server, prefix):
    workflow = json.dumps({"nodes": [], "links": []}).encode()
    listing = server.get(prefix + "/userdata", params={"dir": "workflows", "recurse": "true", "split": "false",
                                                        "full_info": "true"})
    assert listing.status_code == 200 and listing.json() == []
    saved = server.post(prefix + "/userdata/workflows%2Fmy%20flow.json", data=workflow)
    assert saved.status_code == 200 and saved.json() == "workflows/my flow.json"
    assert server.post(prefix + "/userdata/workflows%2Fmy%20flow.json?overwrite=false", data=b"{}").status_code == 409
    assert server.get(prefix + "/userdata/workflows%2Fmy%20flow.json").content == workflow
    info = server.get(prefix + "/userdata", params={"dir": "workflows", "full_info": "true"}).json()
    assert [i["path"] for i in info] == ["my flow.json"] and info[0]["size"] == len(workflow)
    assert server.get(prefix + "/userdata", params={"dir": "workflows", "split": "true"}).json() == [["my flow.json", "my flow.json"]]
    moved = server.post(prefix + "/userdata/workflows%2Fmy%20flow.json/move/workflows%2Fsub%2Fb.json",
                        params={"full_info": "true"})
    assert moved.status_code == 200 and moved.json()["path"] == "workflows/sub/b.json"
    assert server.get(prefix + "/userdata", params={"dir": "workflows", "recurse": "true"}).json() == ["sub/b.json"]
    v2 = server.get(prefix + "/v2/userdata", params={"path": "workflows"}).json()
    assert v2 == [{"name": "sub", "path": "workflows/sub", "type": "directory"}]
    assert server.http.delete(server.url + prefix + "/userdata/workflows%2Fsub%2Fb.json").status_code == 204
    assert server.get(prefix + "/userdata", params={}).status_code == 400
    assert server.get(prefix + "/userdata", params={"dir": "nothing-here"}).status_code == 404


def test_userdata_delete(server):
    server.post("/userdata/workflows%2Fx.json", data=b"{}")
    assert server.http.delete(server.url + "/api/userdata/workflows%2Fx.json").status_code == 204
    assert server.get("/userdata/workflows%2Fx.json").status_code == 404
    assert server.http.delete(server.url + "/userdata/workflows%2Fx.json").status_code == 404


def test_index_and_internal_logs(server):
    assert server.get("/").status_code == 200
    assert server.get("/internal/logs").json() == ""
    assert server.get("/api/internal/logs/raw").json()["entries"] == []
    assert server.http.patch(server.url + "/internal/logs/subscribe", data="{}").status_code == 200
    missing = server.get("/no/such/page")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
