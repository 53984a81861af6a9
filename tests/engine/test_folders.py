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
