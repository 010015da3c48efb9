"""Atomic writes: flushed to the disk before they are renamed into place, with the
permissions of any new file, and without touching the process umask (which
TensorFlow's threads share)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from keras_prune.errors import WriteError
from keras_prune.storage import atomic_folder, atomic_path, atomic_write_text


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture
def synced(monkeypatch):
    """Records what is fsync'd (as paths), and fails any umask change."""
    paths: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd):
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def umask(_):
        raise AssertionError("os.umask was called")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "umask", umask)
    return paths


def test_a_file_is_synced_before_the_rename_and_its_folder_after(tmp_path, synced):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "hello")
    assert path.read_text() == "hello"
    assert len(synced) == 2
    assert synced[0].parent == tmp_path and synced[0].name.startswith(".notes.txt.")  # the temporary
    assert synced[1] == tmp_path
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_new_files_and_folders_get_the_umask_permissions(tmp_path):
    mask = _current_umask()
    atomic_write_text(tmp_path / "a.txt", "x")
    with atomic_folder(tmp_path / "f") as tmp:
        (tmp / "inside").write_text("y")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o777 & ~mask


def test_a_folder_is_synced_whole_then_replaces_the_old_one(tmp_path, synced):
    target = tmp_path / "1"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_folder(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "data").write_text("new")
        (tmp / "saved_model.pb").write_text("pb")
    assert sorted(p.name for p in target.iterdir()) == ["saved_model.pb", "sub"]
    assert (target / "sub" / "data").read_text() == "new"
    names = [p.name for p in synced]
    assert {"data", "saved_model.pb", "sub"} <= set(names)
    assert synced[-1] == tmp_path  # the parent, after the rename
    assert [p.name for p in tmp_path.iterdir()] == ["1"]  # nothing temporary left


def test_a_failed_folder_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "1"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(WriteError, match="cannot write .*1: disk full"):
        with atomic_folder(target) as tmp:
            (tmp / "half").write_text("partial")
            raise OSError("disk full")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["1"]


def test_a_failed_file_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "m.bin"
    path.write_bytes(b"before")
    with pytest.raises(WriteError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise OSError("disk full")
    assert path.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["m.bin"]
