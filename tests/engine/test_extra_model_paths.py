"""--extra-model-paths: ComfyUI's extra_model_paths.yaml, its keys and meaning (base_path, is_default,
folder kinds with one or several paths), and clear errors naming the key for bad files."""
import textwrap
from pathlib import Path

import pytest

from nodegraph import cli, folders
from nodegraph.model_paths import ModelPathsError, extra_folders_by_kind, read_extra_model_paths


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "extra_model_paths.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def comfy(tmp_path):
    root = tmp_path / "ComfyUI"
    for sub in ("models/checkpoints", "models/loras", "models/vae", "more/loras", "models/controlnet"):
        (root / sub).mkdir(parents=True)
    (root / "models/checkpoints/sd15.safetensors").write_bytes(b"x")
    (root / "more/loras/extra_style.safetensors").write_bytes(b"x")
    (root / "models/loras/style.safetensors").write_bytes(b"x")
    return root


def test_comfyui_layout_with_base_path_and_multi_line_values(tmp_path, comfy):
    path = write(tmp_path, f"""
        comfyui:
            base_path: {comfy}
            checkpoints: models/checkpoints/
            loras: |
                models/loras
                more/loras
        empty_section:
        """)
    found = read_extra_model_paths(path)
    assert [(f.kind, f.path) for f in found] == [("checkpoints", comfy / "models/checkpoints"),
                                                 ("loras", comfy / "models/loras"), ("loras", comfy / "more/loras")]
    first, last = extra_folders_by_kind(found)
    layout = folders.Folders(tmp_path / "home", extra=last, extra_first=first)
    assert layout.list_models("checkpoints") == ["sd15.safetensors"]
    assert layout.list_models("loras") == ["extra_style.safetensors", "style.safetensors"]
    assert layout.model_path("loras", "extra_style.safetensors") == comfy / "more/loras/extra_style.safetensors"
    # searched after nodegraph's own models folder
    assert layout.model_dirs("loras")[0] == tmp_path / "home" / "models" / "loras"


def test_relative_paths_without_base_path_are_relative_to_the_yaml_file(tmp_path, comfy):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "paths.yaml"
    path.write_text("mine:\n    vae: ../ComfyUI/models/vae\n    controlnet: " + str(comfy / "models/controlnet") + "\n")
    found = read_extra_model_paths(path)
    assert [f.path for f in found] == [comfy / "models/vae", comfy / "models/controlnet"]


def test_is_default_sections_are_searched_first(tmp_path, comfy):
    path = write(tmp_path, f"""
        a:
            base_path: {comfy}
            loras: models/loras
        b:
            base_path: {comfy}
            is_default: true
            loras: more/loras
        """)
    first, last = extra_folders_by_kind(read_extra_model_paths(path))
    layout = folders.Folders(tmp_path / "home", extra=last, extra_first=first)
    dirs = layout.model_dirs("loras")
    assert dirs[0] == comfy / "more/loras" and dirs[-1] == comfy / "models/loras"


def test_base_path_expands_home_and_variables(tmp_path, comfy, monkeypatch):
    monkeypatch.setenv("COMFY_ROOT", str(comfy))
    path = write(tmp_path, "x:\n    base_path: $COMFY_ROOT\n    checkpoints: models/checkpoints\n")
    assert read_extra_model_paths(path)[0].path == comfy / "models/checkpoints"


@pytest.mark.parametrize("text, fragments", [
    ("comfyui:\n  base_path: /x\n   checkpoints: [unclosed\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["expected sections"]),
    ("comfyui: models/\n", ["section 'comfyui'"]),
    ("comfyui:\n    checkpoints: does/not/exist\n", ["comfyui.checkpoints", "does not exist"]),
    ("comfyui:\n    base_path: /no/such/root\n    checkpoints: models\n", ["comfyui.base_path", "does not exist"]),
    ("comfyui:\n    base_path: {comfy}\n    loras: ../../elsewhere\n", ["comfyui.loras", "leaves", "base_path"]),
    ("comfyui:\n    base_path: {comfy}\n    loras: /etc\n", ["comfyui.loras", "leaves"]),
    ("comfyui:\n    loras: 42\n", ["comfyui.loras", "expected a path"]),
    ("comfyui:\n    is_default: maybe\n", ["comfyui.is_default"]),
])
def test_bad_files_name_the_key(tmp_path, comfy, text, fragments):
    path = write(tmp_path, text.replace("{comfy}", str(comfy)))
    with pytest.raises(ModelPathsError) as info:
        read_extra_model_paths(path)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_cli_reports_a_bad_file_as_a_usage_error(tmp_path, capsys):
    path = write(tmp_path, "comfyui:\n    checkpoints: nowhere\n")
    code = cli.main(["--base-dir", str(tmp_path), "--extra-model-paths", str(path), "nodes"])
    err = capsys.readouterr().err
    assert code == 2 and "comfyui.checkpoints" in err and "does not exist" in err
    assert cli.main(["--extra-model-paths", str(tmp_path / "missing.yaml"), "nodes"]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_cli_lists_models_from_the_yaml(tmp_path, comfy, capsys):
    path = write(tmp_path, f"comfyui:\n    base_path: {comfy}\n    checkpoints: models/checkpoints\n")
    previous = folders._current
    try:
        assert cli.main(["--base-dir", str(tmp_path / "home"), "--extra-model-paths", str(path), "nodes"]) == 0
        layout = folders.current()
    finally:
        folders._current = previous
    assert "sd15.safetensors" in layout.list_models("checkpoints")
