"""Paths inside the folders, and atomic writes."""
import os
import stat

import pytest

from nodegraph.folders import UnsafePathError, safe_join, write_atomic


def test_write_atomic_writes_an_ordinary_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "file.json"
    write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask, "not left private like a mkstemp file"
    write_atomic(target, b"[1]")
    assert target.read_bytes() == b"[1]"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "c:/x", "a\0b"])
def test_safe_join_refuses_escapes(tmp_path, name):
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, name)


def test_safe_join_refuses_symlinks_that_leave(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "out").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path / "base", "out/secret")
    assert safe_join(tmp_path / "base", "ok.png") == (tmp_path / "base" / "ok.png").resolve()


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_model_kinds_search_comfyui_aliases_in_comfyui_order(tmp_path):
    from nodegraph.folders import Folders

    layout = Folders(tmp_path)
    _touch(tmp_path / "models" / "unet" / "a.safetensors")
    _touch(tmp_path / "models" / "diffusion_models" / "sub" / "b.sft")
    _touch(tmp_path / "models" / "clip" / "te.safetensors")
    _touch(tmp_path / "models" / "text_encoders" / "t5.bin")
    assert layout.list_models("diffusion_models") == ["a.safetensors", "sub/b.sft"]
    assert layout.list_models("unet") == layout.list_models("diffusion_models")
    assert layout.list_models("text_encoders") == ["t5.bin", "te.safetensors"]
    assert layout.model_path("diffusion_models", "sub/b.sft") == tmp_path / "models" / "diffusion_models" / "sub" / "b.sft"
    for kind in ("upscale_models", "hypernetworks", "gligen", "clip_vision", "style_models", "configs"):
        assert layout.list_models(kind) == []  # known kinds, empty until files arrive


def test_configs_lists_only_yaml_and_weights_folders_no_yaml(tmp_path):
    from nodegraph.folders import Folders

    layout = Folders(tmp_path)
    _touch(tmp_path / "models" / "configs" / "v1-inference.yaml")
    _touch(tmp_path / "models" / "configs" / "notes.txt")
    _touch(tmp_path / "models" / "configs" / "weights.safetensors")
    _touch(tmp_path / "models" / "upscale_models" / "x.yaml")
    _touch(tmp_path / "models" / "upscale_models" / "RealESRGAN_x4plus.pth")
    assert layout.list_models("configs") == ["v1-inference.yaml"]
    assert layout.list_models("upscale_models") == ["RealESRGAN_x4plus.pth"]


def test_models_dir_may_name_a_comfyui_tree_or_its_models_folder(tmp_path):
    from nodegraph.folders import Folders

    comfy = tmp_path / "ComfyUI"
    _touch(comfy / "models" / "upscale_models" / "4x.pth")
    _touch(comfy / "models" / "checkpoints" / "sd15.safetensors")
    (comfy / "custom_nodes").mkdir()
    ours = tmp_path / "ours"
    for models_dir in (comfy, comfy / "models"):
        layout = Folders(ours, models=[models_dir])
        assert layout.models == [(comfy / "models").resolve()]
        assert layout.list_models("upscale_models") == ["4x.pth"]
        assert layout.list_models("checkpoints") == ["sd15.safetensors"]
    # A models folder that merely contains a sub-folder called "models" stays itself.
    _touch(tmp_path / "plain" / "loras" / "l.safetensors")
    _touch(tmp_path / "plain" / "models" / "checkpoints" / "c.safetensors")
    assert Folders(ours, models=[tmp_path / "plain"]).models == [(tmp_path / "plain").resolve()]
