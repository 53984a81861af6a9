"""Workflow formats: API normalisation, UI -> API conversion, PNG text chunks, load errors."""
import json
import struct
import zlib

import pytest

from nodegraph import Executor, OutputCache, WorkflowError, validate_prompt
from nodegraph.workflow import document_from_bytes, load_document, normalize_api_prompt, ui_to_api
from nodegraph.workflow.png import add_text_chunks, read_text_chunks


def ui_node(id, type, widgets=None, inputs=(), outputs=(), mode=0, title=None):
    node = {"id": id, "type": type, "pos": [0, 0], "size": [100, 50], "flags": {}, "order": id, "mode": mode,
            "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {},
            "widgets_values": widgets if widgets is not None else []}
    if title:
        node["title"] = title
    return node


def ui_workflow(nodes, links):
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [{"title": "g", "bounding": [0, 0, 10, 10]}], "config": {},
            "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4}


@pytest.fixture
def sample_ui():
    """Number -> Seeded (seed with control value) -> Format -> Show, plus a Reroute and a Note."""
    return ui_workflow([
        ui_node(1, "Number", [2.0], outputs=[{"name": "value", "type": "FLOAT", "links": [1]}]),
        ui_node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[{"name": "", "type": "FLOAT", "links": [2]}]),
        ui_node(3, "Seeded", [5, "randomize", 3, "sum"], inputs=[{"name": "a", "type": "FLOAT", "link": 2}],
                outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [3]}], title="My seeded"),
        ui_node(4, "Format", ["v={}"], inputs=[{"name": "value", "type": "FLOAT", "link": 3}],
                outputs=[{"name": "STRING", "type": "STRING", "links": [4]}]),
        ui_node(5, "Show", inputs=[{"name": "value", "type": "FLOAT,STRING", "link": 4}]),
        ui_node(6, "Note", ["just a note"]),
    ], [[1, 1, 0, 2, 0, "FLOAT"], [2, 2, 0, 3, 0, "FLOAT"], [3, 3, 0, 4, 0, "FLOAT"], [4, 4, 0, 5, 0, "STRING"]])


def test_ui_conversion_maps_widgets_and_skips_control_value(sample_ui, registry):
    prompt = ui_to_api(sample_ui, registry)
    assert set(prompt) == {"1", "3", "4", "5"}, "Reroute and Note are virtual"
    assert prompt["3"] == {"class_type": "Seeded", "inputs": {"seed": 5, "steps": 3, "mode": "sum", "a": ["1", 0]},
                           "_meta": {"title": "My seeded"}}
    assert prompt["4"]["inputs"] == {"template": "v={}", "value": ["3", 0]}
    assert prompt["1"]["_meta"]["title"] == "Number"


def test_ui_and_api_conversion_execute_identically(sample_ui, registry, tmp_path):
    api = normalize_api_prompt(json.loads(json.dumps(ui_to_api(sample_ui, registry))))
    (tmp_path / "ui.json").write_text(json.dumps(sample_ui))
    (tmp_path / "api.json").write_text(json.dumps(api))
    results = []
    for name in ("ui.json", "api.json"):
        prompt = load_document(tmp_path / name).to_api(registry)
        results.append(Executor(OutputCache(0)).execute(validate_prompt(prompt, registry)).outputs)
    assert results[0] == results[1] == {"5": {"text": ["v=10.0"]}}


def test_seed_without_control_value_in_old_files(registry):
    wf = ui_workflow([ui_node(1, "Number", [1.0], outputs=[{"name": "v", "type": "FLOAT", "links": [1]}]),
                      ui_node(2, "Seeded", [9, 4, "product"], inputs=[{"name": "a", "type": "FLOAT", "link": 1}])],
                     [[1, 1, 0, 2, 0, "FLOAT"]])
    assert ui_to_api(wf, registry)["2"]["inputs"] == {"seed": 9, "steps": 4, "mode": "product", "a": ["1", 0]}


def test_muted_and_bypassed_nodes(registry):
    # 1 Number -> 2 Multiply (bypassed: passes 'a' through) -> 3 Show ; 4 Show (muted)
    wf = ui_workflow([
        ui_node(1, "Number", [3.0], outputs=[{"name": "v", "type": "FLOAT", "links": [1, 3]}]),
        ui_node(2, "Multiply", [10.0], inputs=[{"name": "a", "type": "FLOAT", "link": 1}],
                outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [2]}], mode=4),
        ui_node(3, "Show", inputs=[{"name": "value", "type": "FLOAT,STRING", "link": 2}]),
        ui_node(4, "Show", inputs=[{"name": "value", "type": "FLOAT,STRING", "link": 3}], mode=2),
    ], [[1, 1, 0, 2, 0, "FLOAT"], [2, 2, 0, 3, 0, "FLOAT"], [3, 1, 0, 4, 0, "FLOAT"]])
    prompt = ui_to_api(wf, registry)
    assert set(prompt) == {"1", "3"}
    assert prompt["3"]["inputs"] == {"value": ["1", 0]}
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry))
    assert result.outputs == {"3": {"text": ["3.0"]}}


def test_primitive_node_and_converted_widget(registry):
    # A PrimitiveNode drives Multiply's 'factor' widget, converted to an input.
    wf = ui_workflow([
        ui_node(1, "Number", [2.0], outputs=[{"name": "v", "type": "FLOAT", "links": [1]}]),
        ui_node(2, "PrimitiveNode", [7.0, "fixed"], outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [2],
                                                              "widget": {"name": "factor"}}]),
        ui_node(3, "Multiply", [1.0], inputs=[{"name": "a", "type": "FLOAT", "link": 1},
                                              {"name": "factor", "type": "FLOAT", "link": 2, "widget": {"name": "factor"}}]),
        ui_node(4, "Show", inputs=[{"name": "value", "type": "FLOAT,STRING", "link": 3}]),
    ], [[1, 1, 0, 3, 0, "FLOAT"], [2, 2, 0, 3, 1, "FLOAT"], [3, 3, 0, 4, 0, "FLOAT"]])
    prompt = ui_to_api(wf, registry)
    assert prompt["3"]["inputs"] == {"a": ["1", 0], "factor": 7.0}
    result = Executor(OutputCache(0)).execute(validate_prompt(prompt, registry))
    assert result.outputs["4"] == {"text": ["14.0"]}


def test_schema_v1_link_objects(registry):
    wf = {"version": 1, "state": {}, "nodes": [
        ui_node(1, "Number", [4.0], outputs=[{"name": "v", "type": "FLOAT", "links": [1]}]),
        ui_node(2, "Show", inputs=[{"name": "value", "type": "FLOAT,STRING", "link": 1}])],
        "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "FLOAT"}]}
    assert ui_to_api(wf, registry)["2"]["inputs"] == {"value": ["1", 0]}


def test_ui_errors_name_the_problem(registry):
    wf = ui_workflow([ui_node(1, "Show", inputs=[{"name": "value", "type": "FLOAT", "link": 99}])], [])
    with pytest.raises(WorkflowError, match="link 99"):
        ui_to_api(wf, registry)


def test_unknown_ui_node_survives_conversion_and_fails_validation(registry):
    wf = ui_workflow([ui_node(1, "FancyCustomNode", [1, 2]),
                      ui_node(2, "Show", inputs=[{"name": "value", "type": "FLOAT", "link": 1}])],
                     [[1, 1, 0, 2, 0, "FLOAT"]])
    prompt = ui_to_api(wf, registry)
    assert prompt["1"]["class_type"] == "FancyCustomNode"
    with pytest.raises(Exception, match="FancyCustomNode"):
        validate_prompt(prompt, registry)


def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "1": {"class_type": "Number",\n  "inputs": {"value": 1,}}\n}')
    with pytest.raises(WorkflowError, match=r"line 3, column 25"):
        load_document(path)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "must be a JSON object"), ('"text"', "must be a JSON object"), ("{}", "neither an API prompt"),
    ('{"a": 1}', "neither an API prompt")])
def test_non_workflow_json(text, message):
    with pytest.raises(WorkflowError, match=message):
        document_from_bytes(text.encode(), "x.json")


def test_structural_errors_name_the_node():
    with pytest.raises(WorkflowError, match="node 7"):
        normalize_api_prompt({"7": {"class_type": "X", "inputs": [1, 2]}})


def test_missing_file_and_binary_garbage(tmp_path):
    with pytest.raises(WorkflowError, match="no such file"):
        load_document(tmp_path / "nope.json")
    (tmp_path / "junk.bin").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(WorkflowError, match="neither JSON"):
        load_document(tmp_path / "junk.bin")


def minimal_png() -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    raw = b"\x00\x00\x00\x00"  # one 1x1 RGB pixel row: filter byte + 3 bytes
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_png_text_chunks_roundtrip_and_workflow_from_png(sample_ui, registry, tmp_path):
    api = ui_to_api(sample_ui, registry)
    png = add_text_chunks(minimal_png(), {"prompt": json.dumps(api), "workflow": json.dumps(sample_ui),
                                          "note": "naïve ünïcode ✓"})
    chunks = read_text_chunks(png)
    assert json.loads(chunks["prompt"]) == api and chunks["note"] == "naïve ünïcode ✓"
    path = tmp_path / "image.png"
    path.write_bytes(png)
    document = load_document(path)
    assert document.kind == "ui" and document.to_api(registry) == normalize_api_prompt(api)
    # API prompt only (as some tools write it)
    path.write_bytes(add_text_chunks(minimal_png(), {"prompt": json.dumps(api)}))
    assert load_document(path).to_api(registry) == normalize_api_prompt(api)


def test_png_with_compressed_itxt_chunk():
    text = json.dumps({"1": {"class_type": "Number", "inputs": {"value": 1}}})
    body = b"prompt\x00\x01\x00\x00\x00" + zlib.compress(text.encode())
    itxt = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body) & 0xFFFFFFFF)
    png = minimal_png()
    png = png[:33] + itxt + png[33:]
    assert read_text_chunks(png)["prompt"] == text


def test_png_without_workflow_and_truncated_png(tmp_path):
    path = tmp_path / "plain.png"
    path.write_bytes(minimal_png())
    with pytest.raises(WorkflowError, match="carries no workflow"):
        load_document(path)
    png = add_text_chunks(minimal_png(), {"prompt": "{}"})
    path.write_bytes(png[:40])
    with pytest.raises(WorkflowError, match="truncated"):
        load_document(path)


def test_prompt_request_body_is_accepted(registry):
    body = {"client_id": "x", "prompt": {"1": {"class_type": "Number", "inputs": {"value": 1}}},
            "extra_data": {"extra_pnginfo": {"workflow": {"nodes": [], "links": []}}}}
    document = document_from_bytes(json.dumps(body).encode(), "body.json")
    assert document.kind == "api" and document.ui == {"nodes": [], "links": []}
