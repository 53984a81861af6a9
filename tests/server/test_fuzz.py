"""Hypothesis throws malformed prompts, bodies, query strings and uploads at a running server:
every answer is a 2xx or a 4xx with a JSON error (never a 500), the server stays up, and every
prompt it accepted ends in the history exactly once."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph import NodeRegistry
from tests.engine import toy_nodes

from .live import LiveServer
from .server_nodes import SavePNG

FAST = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# Nodes that finish fast whatever their inputs (no Slow, no file reading, no str.format).
CLASSES = ["Number", "Add", "Multiply", "Show", "Fail", "SavePNG"]
INPUT_NAMES = ["value", "a", "b", "factor", "message", "size", "filename_prefix"]

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
node_ids = st.sampled_from(["1", "2", "3", "4"]) | st.text(max_size=4)
links = st.tuples(node_ids | st.integers(-2, 5), st.integers(-2, 3) | st.floats(allow_nan=False, allow_infinity=False)).map(list)
nodes = st.fixed_dictionaries(
    {"class_type": st.sampled_from(CLASSES + ["Nope", ""]) | json_values},
    optional={"inputs": st.dictionaries(st.sampled_from(INPUT_NAMES) | st.text(max_size=6), links | json_values, max_size=4)
              | json_values,
              "_meta": json_values})
prompts = st.dictionaries(node_ids, nodes | json_values, max_size=5) | json_values
bodies = st.fixed_dictionaries({"prompt": prompts}, optional={
    "client_id": json_values, "extra_data": json_values, "prompt_id": json_values, "number": json_values,
    "front": json_values, "partial_execution_targets": json_values}) | json_values


def _registry() -> NodeRegistry:
    registry = NodeRegistry()
    registry.register_all([toy_nodes.Number, toy_nodes.Add, toy_nodes.Multiply, toy_nodes.Show, toy_nodes.Fail, SavePNG])
    return registry


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("fuzz") / "home", _registry())
    live.accepted = []
    yield live
    # the server is up and the queue is consistent: everything accepted finished exactly once
    live.wait_idle(60)
    assert live.get("/queue").json() == {"queue_running": [], "queue_pending": []}
    history = live.get("/history").json()
    assert sorted(history) == sorted(set(live.accepted))
    jobs = live.get("/jobs", params={"limit": 10000}).json()
    assert jobs["pagination"]["total"] == len(history)
    live.stop()


def _check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and "error" in body, body


@FAST
@given(body=bodies)
def test_post_prompt_with_malformed_json(fuzz_server, body):
    response = fuzz_server.post("/prompt", data=json.dumps(body))
    _check(response)
    if response.status_code == 200:
        fuzz_server.accepted.append(response.json()["prompt_id"])


@FAST
@given(raw=st.binary(max_size=200) | st.sampled_from([b'{"prompt": NaN}', b'{"prompt": {"1": Infinity}}', b"[" * 5000,
                                                      b'{"prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}", b"\xff\xfe{}"]),
       path=st.sampled_from(["/prompt", "/api/prompt", "/queue", "/history", "/interrupt", "/free", "/settings",
                             "/settings/x", "/users", "/upload/image", "/upload/mask", "/userdata/workflows%2Fz.json"]),
       content_type=st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=xyz",
                                     "application/x-www-form-urlencoded", ""]))
def test_raw_bodies_on_every_post_route(fuzz_server, raw, path, content_type):
    response = fuzz_server.post(path, data=raw, headers={"Content-Type": content_type} if content_type else {})
    _check(response)
    if response.status_code == 200 and path.endswith("/prompt"):
        fuzz_server.accepted.append(response.json()["prompt_id"])


@FAST
@given(body=json_values, path=st.sampled_from(["/queue", "/history", "/interrupt", "/free", "/settings", "/users",
                                               "/settings/Comfy.X"]))
def test_json_bodies_of_the_wrong_shape(fuzz_server, body, path):
    _check(fuzz_server.post(path, data=json.dumps(body)))


query_text = st.text(max_size=30) | st.sampled_from(["..", "../x", "/etc/passwd", "%2e%2e%2f", "a\x00b", "-1",
                                                     "99999999999999999999", "webp;abc", "jpeg;-5", " [input]"])


@FAST
@given(path=st.sampled_from(["/view", "/history", "/jobs", "/userdata", "/v2/userdata", "/models/x", "/object_info/x",
                             "/view_metadata/loras", "/internal/files/x", "/history/x", "/jobs/x", "/embeddings"]),
       params=st.dictionaries(st.sampled_from(["filename", "subfolder", "type", "preview", "channel", "max_items",
                                               "offset", "status", "limit", "dir", "path", "recurse", "full_info",
                                               "split", "sort_order"]) | st.text(max_size=5), query_text, max_size=4))
def test_query_strings(fuzz_server, path, params):
    _check(fuzz_server.get(path, params=params))


@FAST
@given(data=st.binary(max_size=300) | st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 40),
       filename=st.text(max_size=20) | st.sampled_from(["../a.png", "a/b.png", "..", ".", "a\\b.png", "x.png"]),
       fields=st.dictionaries(st.sampled_from(["type", "subfolder", "overwrite", "original_ref"]), query_text, max_size=3),
       route=st.sampled_from(["/upload/image", "/upload/mask"]))
def test_uploads(fuzz_server, data, filename, fields, route):
    response = fuzz_server.post(route, files={"image": (filename or "x", data)}, data=fields)
    _check(response)
    assert response.status_code != 200  # none of these is an image
