"""The CLI, run in-process through main(): exit codes, messages, overrides, outputs.

The toy nodes are loaded as a custom node pack, the way a user adds nodes."""
import json
from pathlib import Path

import pytest

from nodegraph.cli import main

TOY = Path(__file__).with_name("toy_nodes.py")


@pytest.fixture
def home(tmp_path, monkeypatch):
    pack = tmp_path / "custom_nodes"
    pack.mkdir()
    source = TOY.read_text().replace("CALLS: collections.Counter", "CALLS: collections.Counter")
    (pack / "toy.py").write_text(source + "\nNODE_CLASS_MAPPINGS = {c.__name__: c for c in ALL}\n"
                                          "NODE_CLASS_MAPPINGS['V1Scale'] = V1Scale\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(home, name, data):
    path = home / name
    path.write_text(json.dumps(data))
    return path


CHAIN = {"1": {"class_type": "Number", "inputs": {"value": 2}, "_meta": {"title": "Start"}},
         "2": {"class_type": "Seeded", "inputs": {"a": ["1", 0], "seed": 1, "steps": 1, "mode": "sum"}},
         "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}


def test_run_success(home, capsys):
    path = write(home, "wf.json", CHAIN)
    assert main(["run", str(path), "--set", "2.seed=10", "--set", "Start.value=5"]) == 0


def test_validate_invalid_workflow_exit_2(home, capsys):
    bad = json.loads(json.dumps(CHAIN))
    bad["2"]["inputs"]["mode"] = "sume"
    bad["2"]["inputs"]["seed"] = -5
    path = write(home, "bad.json", bad)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "node 2 (Seeded), input 'mode'" in err and "closest: 'sum'" in err and "smaller than min" in err
    assert "Traceback" not in err
    assert main(["validate", "--json", str(path)]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"


def test_run_runtime_error_exit_1(home, capsys):
    wf = {"1": {"class_type": "Number", "inputs": {"value": 2}},
          "2": {"class_type": "Fail", "inputs": {"a": ["1", 0], "message": "disk on fire"}},
          "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert main(["run", str(write(home, "f.json", wf))]) == 1
    err = capsys.readouterr().err
    assert "node 2 (Fail) failed" in err and "RuntimeError: disk on fire" in err and "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    ("{nope", "malformed JSON"), ("[]", "must be a JSON object"),
    ('{"1": {"class_type": "Nope", "inputs": {}}}', "node Nope does not exist")])
def test_bad_files_exit_2(home, capsys, content, message):
    path = home / "x.json"
    path.write_text(content)
    assert main(["run", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_bad_override_and_missing_file(home, capsys):
    path = write(home, "wf.json", CHAIN)
    assert main(["run", str(path), "--set", "nonsense"]) == 2
    assert "expected NODE.INPUT=VALUE" in capsys.readouterr().err
    assert main(["run", str(path), "--set", "99.seed=1"]) == 2
    assert "no node with id or title '99'" in capsys.readouterr().err
    assert main(["run", str(home / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_convert_and_nodes(home, capsys):
    ui = {"nodes": [{"id": 1, "type": "Number", "mode": 0, "inputs": [], "widgets_values": [3],
                     "outputs": [{"name": "v", "type": "FLOAT", "links": [1]}]},
                    {"id": 2, "type": "Show", "mode": 0, "inputs": [{"name": "value", "type": "FLOAT", "link": 1}],
                     "widgets_values": []}],
          "links": [[1, 1, 0, 2, 0, "FLOAT"]]}
    path = write(home, "ui.json", ui)
    out = home / "api.json"
    assert main(["convert", str(path), "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == {
        "1": {"class_type": "Number", "inputs": {"value": 3}, "_meta": {"title": "Number"}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}, "_meta": {"title": "Show"}}}
    capsys.readouterr()
    assert main(["nodes", "--json", "Number"]) == 0
    assert json.loads(capsys.readouterr().out)["Number"]["python_module"] == "custom_nodes.toy"
    assert main(["nodes", "NoSuchNode"]) == 2


def test_common_options_work_before_and_after_the_command(home, tmp_path, capsys):
    path = write(home, "wf.json", CHAIN)
    for argv in (["--output-dir", str(tmp_path / "a"), "run", str(path)],
                 ["run", "--output-dir", str(tmp_path / "b"), str(path)]):
        assert main(argv) == 0
    from nodegraph import folders
    assert folders.current().output == (tmp_path / "b").resolve()
    assert main(["--output-dir", str(tmp_path / "c"), "validate", str(path)]) == 0
    assert folders.current().output == (tmp_path / "c").resolve(), "the option before the command was kept"


def test_output_files_lists_every_reported_file_not_only_images(tmp_path):
    from nodegraph.cli import output_files
    from nodegraph.executor import RunResult
    from nodegraph.folders import Folders

    layout = Folders(tmp_path)
    result = RunResult("p", "success", outputs={
        "1": {"images": [{"filename": "a_00001_.png", "subfolder": "", "type": "output"}]},
        "2": {"models": [{"filename": "m_00001_.safetensors", "subfolder": "checkpoints", "type": "output"}]},
        "3": {"latents": [{"filename": "l_00001_.latent", "subfolder": "", "type": "temp"}], "text": ["not a file"]},
    })
    assert output_files(result, layout) == [layout.output / "a_00001_.png",
                                            layout.output / "checkpoints" / "m_00001_.safetensors",
                                            layout.temp / "l_00001_.latent"]
