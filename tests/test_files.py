"""common.files: the one copy of atomic writes, folder builds and file hashes that every package uses."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from common.files import (
    atomic_folder,
    atomic_output,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    file_digest,
    remove_stale_temps,
    sha256_file,
)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "leaderboard.md"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_output(target, "w", encoding="utf-8") as fh:
            fh.write("half of the new")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.md"]
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'


def test_outputs_get_the_mode_the_umask_gives(tmp_path: Path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_folder(tmp_path / "folder") as temp:
            (temp / "inside").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o750


def test_atomic_path_keeps_every_suffix_for_writers_that_choose_the_format_by_name(tmp_path: Path):
    with atomic_path(tmp_path / "model.weights.h5") as temp:
        assert temp.name.endswith(".weights.h5") and temp.parent == tmp_path
        temp.write_bytes(b"weights")
    assert (tmp_path / "model.weights.h5").read_bytes() == b"weights"
    assert [p.name for p in tmp_path.iterdir()] == ["model.weights.h5"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path):
    target = tmp_path / "set"
    with atomic_folder(target) as temp:
        (temp / "one").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as temp:
            (temp / "two").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["one"]  # the previous folder, untouched
    with atomic_folder(target) as temp:
        (temp / "three").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["three"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_stale_temps_of_a_killed_writer_are_removed_and_nothing_else(tmp_path: Path):
    (tmp_path / ".pixels.npy.abc123.tmp.npy").write_bytes(b"half")
    (tmp_path / ".data.x1.tmp").mkdir()
    (tmp_path / "pixels.npy").write_bytes(b"whole")
    (tmp_path / ".other.npy.abc.tmp.npy").write_bytes(b"someone else's")
    assert remove_stale_temps(tmp_path / "pixels.npy") == 1
    assert remove_stale_temps(tmp_path / "data") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npy.abc.tmp.npy", "pixels.npy"]


def test_file_hashes_equal_hashlib(tmp_path: Path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(path.read_bytes()).hexdigest()
