"""The demo models are offered from the package, never copied; a models folder the user names (an
existing ComfyUI tree) is only read: a run against it succeeds and leaves every file as it was."""
import os
import shutil
from pathlib import Path

import pytest

from nodegraph import cli, folders
from nodes.default_model import (DEFAULT_CHECKPOINT, DEMO_CONTROLNET, DEMO_DEPTH_CONTROLNET, DEMO_DEPTH_MODEL, DEMO_DIR,
                                 DEMO_LORA, ensure_default_checkpoint, offer_demo_models)

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def snapshot(root: Path) -> dict:
    """Every path under root with its kind, size, mtime and mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (path.is_dir(), st.st_size, st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture
def comfy_tree(tmp_path):
    """A ComfyUI-style tree with a user's own LoRA and an old stand-in left by earlier versions, read-only."""
    root = tmp_path / "ComfyUI" / "models"
    for sub in ("checkpoints", "loras", "controlnet", "vae"):
        (root / sub).mkdir(parents=True)
    shutil.copyfile(DEMO_DIR / DEMO_LORA, root / "loras" / "my_style.safetensors")
    (root / "checkpoints" / "nodegraph-tiny-random.safetensors").write_bytes(b"an old stand-in: left alone")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o444)
        os.chmod(dirpath, 0o555)
    yield root
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o755)


def test_demo_models_are_listed_from_the_package_and_nothing_is_written(tmp_path):
    layout = folders.Folders(tmp_path)
    offer_demo_models(layout)
    assert DEFAULT_CHECKPOINT in layout.list_models("checkpoints")
    assert DEMO_LORA in layout.list_models("loras") and DEMO_CONTROLNET in layout.list_models("controlnet")
    assert DEFAULT_CHECKPOINT not in layout.list_models("loras")
    assert layout.model_path("checkpoints", DEFAULT_CHECKPOINT) == DEMO_DIR / DEFAULT_CHECKPOINT
    assert not (tmp_path / "models").exists()


@pytest.mark.skipif(not (DEMO_DIR / DEMO_DEPTH_MODEL).is_dir(), reason="no demo depth pair ships")
def test_the_depth_pair_is_offered_too(tmp_path):
    from nodes.preprocess.depth import find_depth_model

    layout = folders.Folders(tmp_path)
    offer_demo_models(layout)
    assert layout.list_model_dirs("depth") == [DEMO_DEPTH_MODEL]
    assert find_depth_model(DEMO_DEPTH_MODEL, layout) == DEMO_DIR / DEMO_DEPTH_MODEL
    assert DEMO_DEPTH_CONTROLNET in layout.list_models("controlnet")
    assert not (tmp_path / "models").exists()


def test_a_users_file_of_the_same_name_wins(tmp_path):
    layout = folders.Folders(tmp_path)
    own = tmp_path / "models" / "checkpoints" / DEFAULT_CHECKPOINT
    own.parent.mkdir(parents=True)
    own.write_bytes(b"mine")
    assert ensure_default_checkpoint(layout) == own
    assert layout.list_models("checkpoints").count(DEFAULT_CHECKPOINT) == 1


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(KeyError, match="unknown model folder"):
        folders.Folders(tmp_path).offer_embedded("nonsense", "x.safetensors", DEMO_DIR / DEMO_LORA)


def test_a_run_against_a_read_only_comfyui_tree_changes_nothing_in_it(tmp_path, comfy_tree, capsys):
    before = snapshot(comfy_tree.parent)
    previous = folders._current
    try:
        code = cli.main(["-q", "--base-dir", str(tmp_path / "home"), "--models-dir", str(comfy_tree),
                         "run", str(WORKFLOWS / "lora.json"), "--set", "KSampler.steps=2",
                         "--set", "LoraLoader.lora_name=my_style.safetensors"])
        layout = folders.current()
    finally:
        folders._current = previous
    assert code == 0, capsys.readouterr().err
    pngs = [Path(line) for line in capsys.readouterr().out.split() if line.endswith(".png")]
    assert pngs and all(p.exists() for p in pngs)
    assert snapshot(comfy_tree.parent) == before
    # the old stand-in stays listed as the user's file; the demo files are offered beside it
    listed = layout.list_models("checkpoints")
    assert {"nodegraph-tiny-random.safetensors", DEFAULT_CHECKPOINT} <= set(listed)
    assert not (tmp_path / "home" / "models").exists()


def test_ensure_does_not_create_a_named_models_folder(tmp_path):
    missing = tmp_path / "not-there"
    folders.Folders(tmp_path / "home", models=[missing]).ensure()
    assert not missing.exists()
    folders.Folders(tmp_path / "home").ensure()
    assert (tmp_path / "home" / "models").is_dir()
