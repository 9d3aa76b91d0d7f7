"""Messy folder layouts: every file is read or listed with its reason; leakage is found by content."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_kermany, run_small_benchmark, write_image

from features.data.audit import DatasetError, audit_images, check_classes, find_leakage, flag_leakage
from features.data.dataset import make_splits, scan_dataset


def _prepared(root: Path, leakage: str = "warn", **splits):
    dataset = audit_images(scan_dataset(root), min_side=32, progress=False)
    return flag_leakage(make_splits(dataset, **splits), leakage)


def test_missing_val_split_is_carved_and_missing_train_stops(tmp_path: Path):
    root = make_kermany(tmp_path / "no_val", {"train": 8, "test": 4})
    dataset = _prepared(root)
    check_classes(dataset)  # carved validation: every class in every split
    assert all(n > 0 for per_class in dataset.counts().values() for n in per_class.values())
    only_test = make_kermany(tmp_path / "only_test", {"test": 4})
    with pytest.raises(DatasetError, match="class 'normal' has no usable image in train"):
        check_classes(_prepared(only_test))


def test_empty_class_folder_names_a_class_and_stops_the_run(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    for label in ("covid", "normal"):
        for i in range(8):
            write_image(tmp_path / "data" / label / f"{label}{i}.png", "normal", rng)
    (tmp_path / "data" / "viral").mkdir()
    dataset = _prepared(tmp_path / "data")
    assert dataset.classes == ("covid", "normal", "viral")
    with pytest.raises(DatasetError, match="class 'viral' has no usable image in train"):
        check_classes(dataset)
    assert run_small_benchmark(tmp_path / "data", tmp_path) == 2
    assert "'viral' has no usable image" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "MobileNetV2").exists()


def test_unexpected_folders_and_files_at_the_wrong_depth_are_listed(kermany_root: Path):
    rng = np.random.default_rng(1)
    write_image(kermany_root / "extras" / "NORMAL" / "IM-9999-0001.jpeg", "normal", rng)
    write_image(kermany_root / "__MACOSX" / "train" / "NORMAL" / "IM-9998-0001.jpeg", "normal", rng)
    write_image(kermany_root / "stray_in_root.jpeg", "normal", rng)
    write_image(kermany_root / "train" / "stray_in_split.jpeg", "normal", rng)
    write_image(kermany_root / "train" / "NORMAL" / "nested" / "IM-9997-0001.jpeg", "normal", rng)
    (kermany_root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\1")
    (kermany_root / "train" / "NORMAL" / "notes.txt").write_text("scanner log")
    (kermany_root / "README.md").write_text("a dataset")
    dataset = scan_dataset(kermany_root)
    reasons = {skip.path: skip.reason for skip in dataset.skipped}
    assert dataset.layout == "kermany"
    assert "not a split" in reasons["extras/"]
    assert "wrong depth" in reasons["stray_in_root.jpeg"] and "wrong depth" in reasons["train/stray_in_split.jpeg"]
    assert "folder inside a class folder" in reasons["train/NORMAL/nested"]
    assert reasons["train/NORMAL/.DS_Store"] == "hidden or system file"
    assert "not an image file (suffix .txt" in reasons["train/NORMAL/notes.txt"]
    assert not any("MACOSX" in r.path or "9999" in r.path or "9997" in r.path for r in dataset.records)
    assert reasons["__MACOSX/"] == "hidden or system folder; not read"  # listed, as the README says
    assert "README.md" not in reasons  # a top-level document is not a misplaced image


def test_symbolic_links_are_followed_and_broken_or_looping_ones_listed(kermany_root: Path):
    normal = kermany_root / "train" / "NORMAL"
    target = sorted(normal.iterdir())[0]
    os.symlink(target, normal / "IM-7777-0001.jpeg")
    os.symlink(normal / "IM-gone-0001.jpeg", normal / "IM-8888-0001.jpeg")
    os.symlink(normal, normal / "loop")  # a folder linking to itself
    shutil.move(kermany_root / "test" / "NORMAL", tmp := kermany_root.parent / "elsewhere")
    os.symlink(tmp, kermany_root / "test" / "NORMAL")  # a whole class folder linked in
    dataset = audit_images(scan_dataset(kermany_root), min_side=32, progress=False)
    paths = {r.path for r in dataset.records}
    reasons = {skip.path: skip.reason for skip in dataset.skipped}
    assert "train/NORMAL/IM-7777-0001.jpeg" in paths
    assert reasons["train/NORMAL/IM-8888-0001.jpeg"] == "broken symbolic link"
    assert "folder inside a class folder" in reasons["train/NORMAL/loop"]
    assert sum(p.startswith("test/NORMAL/") for p in paths) == 6
    # A link and its target are the same bytes: found as a copy, kept on one side of the carve.
    assert (
        dataset.digests["train/NORMAL/IM-7777-0001.jpeg"]
        == dataset.digests[target.relative_to(kermany_root).as_posix()]
    )


@pytest.mark.slow
def test_non_ascii_names_run_end_to_end(kermany_root: Path, tmp_path: Path):
    rng = np.random.default_rng(2)
    name = "test/NORMAL/IM-ñandú-Ωμέγα-患者-0001.jpeg"
    write_image(kermany_root / name, "normal", rng)
    assert run_small_benchmark(kermany_root, tmp_path) == 0
    predictions = pd.read_csv(tmp_path / "results" / "predictions.csv", encoding="utf-8")
    assert name in set(predictions["path"])


def _copy_train_image_to_test(root: Path) -> tuple[str, str]:
    source = sorted((root / "train" / "NORMAL").iterdir())[0]
    copy = root / "test" / "NORMAL" / "IM-copy-0001.jpeg"
    shutil.copyfile(source, copy)
    return source.relative_to(root).as_posix(), copy.relative_to(root).as_posix()


@pytest.mark.slow  # an end-to-end run; its units have quick tests of their own
def test_the_same_image_in_train_and_test_is_reported_as_leakage(kermany_root: Path, tmp_path: Path, capsys):
    original, copy = _copy_train_image_to_test(kermany_root)
    rows = find_leakage(_prepared(kermany_root))
    leaked = {row.path for row in rows}
    assert {copy} <= leaked and len({row.sha256 for row in rows}) == 1
    assert "same image in" in rows[0].problem and "test" in rows[0].problem
    assert run_small_benchmark(kermany_root, tmp_path) == 0
    assert "WARNING: 1 image(s) found in two splits" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "results" / "leakage.csv")
    assert set(table["path"]) == leaked and copy in set(table["path"])
    assert (
        "Leakage: 1 test image(s) also appear in train or validation"
        in (tmp_path / "results" / "leaderboard.md").read_text()
    )


def test_leakage_drop_removes_the_train_copy_and_fail_stops(kermany_root: Path, tmp_path: Path, capsys):
    original, copy = _copy_train_image_to_test(kermany_root)
    dropped = _prepared(kermany_root, "drop")
    paths = {r.path for r in dropped.records}
    assert copy in paths and original not in paths
    reasons = {skip.path: skip.reason for skip in dropped.skipped}
    assert reasons[original] == "same image as a test image (--leakage drop)"
    with pytest.raises(DatasetError, match="--leakage drop"):
        _prepared(kermany_root, "fail")
    assert run_small_benchmark(kermany_root, tmp_path, "--leakage", "fail") == 2
    assert "leakage.csv" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "MobileNetV2").exists()


def test_the_same_image_under_two_labels_is_reported(kermany_root: Path):
    source = sorted((kermany_root / "train" / "NORMAL").iterdir())[0]
    shutil.copyfile(source, kermany_root / "train" / "PNEUMONIA" / "person99_virus_99.jpeg")
    rows = find_leakage(_prepared(kermany_root))
    assert {row.label for row in rows} == {"normal", "viral"}
    assert "labelled normal and viral" in rows[0].problem


@pytest.mark.parametrize("seed", range(4))
def test_copies_inside_train_never_straddle_the_carved_validation(kermany_root: Path, seed: int):
    normal = kermany_root / "train" / "NORMAL"
    for i, source in enumerate(sorted(normal.iterdir())[:4]):
        shutil.copyfile(source, normal / f"IM-dup{i}-0001.jpeg")  # another "patient", the same bytes
    dataset = _prepared(kermany_root, seed=seed)
    assert find_leakage(dataset) == []


def test_the_audit_command_reports_a_folder_without_running_anything(kermany_root: Path, capsys):
    from features.data import audit

    _copy_train_image_to_test(kermany_root)
    (kermany_root / "train" / "NORMAL" / "IM-0000-9999.jpeg").write_text("not an image")
    assert audit.main([str(kermany_root), "--min-side", "32"]) == 0
    out = capsys.readouterr().out
    assert "left out: 1 x not an image" in out and "leakage: 1 image(s)" in out and "IM-copy-0001" in out
    for path in (kermany_root / "train" / "PNEUMONIA").glob("*virus*"):
        path.unlink()
    for path in (kermany_root / "val" / "PNEUMONIA").glob("*virus*"):
        path.unlink()
    assert audit.main([str(kermany_root), "--min-side", "32"]) == 1
    assert "class 'viral' has no usable image in train" in capsys.readouterr().err
