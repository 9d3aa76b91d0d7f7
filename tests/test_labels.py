"""Labels from a CSV beside an image folder: the Dataset it builds, and every kind of bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_small_benchmark, write_image

from features.data.dataset import make_splits, scan_dataset
from features.data.labels import LabelsError, read_labels
from features.data.records import Skip
from features.settings import LabelSettings

CLASSES = ("normal", "bacterial", "viral")


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    """A labels CSV with ``header`` and ``rows``."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_flat_set(root: Path, per_class: int = 10, seed: int = 0) -> list[list[str]]:
    """Images in one flat folder (``images/``) and their rows: path, label, patient, split."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in CLASSES:
        for i in range(per_class):
            name = f"images/{label}_{i:03d}.png"
            write_image(root / name, label, rng)
            rows.append([name, label, f"p{label}{i // 2}", "test" if i >= per_class - 2 else "train"])
    return rows


def settings(path: Path, **extra) -> LabelSettings:
    return LabelSettings(labels=str(path), patient_column="patient", split_column="split", **extra)


HEADER = ["path", "label", "patient", "split"]


def test_a_csv_builds_the_dataset_with_patients_and_official_splits(tmp_path: Path):
    rows = make_flat_set(tmp_path)
    dataset = read_labels(tmp_path, settings(write_csv(tmp_path / "labels.csv", HEADER, rows)))
    assert dataset.layout == "csv" and dataset.classes == CLASSES and not dataset.skipped
    assert dataset.counts()["test"] == {"normal": 2, "bacterial": 2, "viral": 2}
    assert {r.patient for r in dataset.records} >= {"pnormal0", "pviral2"}
    split = make_splits(dataset, val_fraction=0.25, seed=0)
    train_patients = {r.patient for r in split.split("train")}
    assert not train_patients & {r.patient for r in split.split("val")}


def test_bad_rows_are_left_out_with_their_reasons(tmp_path: Path):
    rows = make_flat_set(tmp_path)
    rows += [
        ["images/missing.png", "normal", "q1", "train"],
        ["images/normal_000.png", "normal", "pnormal0", "train"],  # the same row again
        ["images/viral_000.png", "bacterial", "pviral0", "train"],  # the same image, another label
        ["images/bacterial_001.png", "", "pbacterial0", "train"],  # an empty label on a second row
        ["images/normal_001.png", "covid", "pnormal0", "train"],
        ["images/normal_002.png", "normal", "pnormal1", "holdout"],
        ["../outside.png", "normal", "q2", "train"],
        ["images/normal_003.png", "normal"],
    ]
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    rows.append(["images/notes.txt", "normal", "q3", "train"])
    path = write_csv(tmp_path / "labels.csv", HEADER, rows)
    dataset = read_labels(tmp_path, settings(path, classes=CLASSES))
    reasons = pd.DataFrame([(skip.path, skip.reason) for skip in dataset.skipped], columns=["path", "reason"])
    text = " | ".join(reasons["reason"])
    for expected in ("not found under --data", "duplicate row", "different labels", "empty label",
                     "unknown label 'covid'", "unknown split 'holdout'", "leaves the --data folder",
                     "fields, the header 4", "not an image file"):  # fmt: skip
        assert expected in text, expected
    used = {r.path for r in dataset.records}
    assert "images/viral_000.png" not in used and "images/normal_000.png" in used
    assert {"images/normal_001.png", "images/bacterial_001.png"} <= used  # their bad rows alone are left out
    assert all(r.label.text in CLASSES for r in dataset.records)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"path;label\nimages/a.png;normal\n", "separated by semicolons"),
        (b"images/normal_000.png,normal\nimages/viral_000.png,viral\n", "add a header row"),
        ("path,label\nimages/caf\u00e9.png,normal\n".encode("latin-1"), "not UTF-8"),
        (b"", "is empty"),
        (b"file,label\nimages/a.png,normal\n", r"column .path. \(--path-column\) is not .*: file, label"),
    ],
)
def test_a_malformed_csv_is_one_clear_error(tmp_path: Path, content: bytes, message: str):
    (tmp_path / "labels.csv").write_bytes(content)
    with pytest.raises(LabelsError, match=message):
        read_labels(tmp_path, LabelSettings(labels=str(tmp_path / "labels.csv")))


def test_a_patient_in_two_official_splits_stops(tmp_path: Path):
    rows = make_flat_set(tmp_path)
    rows[0][2] = rows[-1][2]  # a normal train image given a viral test patient
    with pytest.raises(LabelsError, match="more than one split"):
        read_labels(tmp_path, settings(write_csv(tmp_path / "labels.csv", HEADER, rows)))


@pytest.mark.slow  # an end-to-end run; its units have quick tests of their own
def test_the_run_stops_before_extraction_on_a_bad_csv_and_lists_skipped_rows(tmp_path: Path, capsys):
    rows = make_flat_set(tmp_path / "data")
    (tmp_path / "bad.csv").write_bytes(b"path\tlabel\nimages/a.png\tnormal\n")
    code = run_small_benchmark(tmp_path / "data", tmp_path, "--labels", str(tmp_path / "bad.csv"))
    err = capsys.readouterr().err
    assert code == 2 and "separated by tabs" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "skipped.csv").exists()
    rows.append(["images/gone.png", "normal", "z", "train"])
    good = write_csv(tmp_path / "labels.csv", HEADER, rows)
    code = run_small_benchmark(tmp_path / "data", tmp_path, "--labels", str(good), "--patient-column", "patient",
                               "--split-column", "split")  # fmt: skip
    assert code == 0
    skipped = pd.read_csv(tmp_path / "results" / "skipped.csv")
    assert skipped["path"].tolist() == ["images/gone.png"] and "not found" in skipped["reason"][0]
    board = (tmp_path / "results" / "leaderboard.md").read_text(encoding="utf-8")
    assert "(csv layout)" in board and "labels: labels.csv" in board


def test_a_left_out_row_keeps_its_kind_apart_from_its_csv_lines(tmp_path: Path):
    # The audit's summary counts each kind once: rows that differ only by their lines share it.
    rows = make_flat_set(tmp_path)  # lines 2-31: normal_000 on line 2, viral_000 on line 22
    rows += [
        ["images/normal_000.png", "normal", "pnormal0", "train"],  # line 32
        ["images/normal_001.png", "covid", "pnormal0", "train"],  # line 33
        ["images/normal_002.png", "covid", "pnormal1", "train"],  # line 34
        ["images/viral_000.png", "bacterial", "pviral0", "train"],  # line 35
    ]
    dataset = read_labels(tmp_path, settings(write_csv(tmp_path / "labels.csv", HEADER, rows), classes=CLASSES))
    by_line = {skip.line: skip for skip in dataset.skipped}
    assert by_line[32] == Skip("images/normal_000.png", "duplicate row of an image",
                               "duplicate row (line 32) of the image on line 2", 32)  # fmt: skip
    assert by_line[33].kind == by_line[34].kind == "unknown label 'covid'; known: normal, bacterial, viral (--classes)"
    assert by_line[33].reason == by_line[33].kind + " (line 33)"
    assert by_line[22].kind == by_line[35].kind != by_line[22].reason
    assert by_line[35].reason == "image listed on lines 22, 35 with different labels, splits or patients; none used"


def kermany_csv(root: Path, path: Path) -> Path:
    """A CSV describing a Kermany folder tree: path, label and split of every image scan_dataset reads."""
    records = scan_dataset(root).records
    return write_csv(path, ["image", "finding", "set"], [[r.path, r.label.text, r.split] for r in records])


def test_a_csv_of_a_folder_tree_gives_the_same_dataset_and_splits(kermany_root: Path, tmp_path: Path):
    folders = scan_dataset(kermany_root)
    labels = LabelSettings(labels=str(kermany_csv(kermany_root, tmp_path / "k.csv")), path_column="image",
                           label_column="finding", split_column="set")  # fmt: skip
    table = read_labels(kermany_root, labels)
    assert table.classes == folders.classes
    assert sorted(table.records, key=lambda r: r.path) == sorted(folders.records, key=lambda r: r.path)
    for seed in (0, 3):
        a = make_splits(folders, limit_per_class=5, seed=seed)
        b = make_splits(table, limit_per_class=5, seed=seed)
        assert a.records == b.records


def _numbers(results: Path) -> pd.DataFrame:
    board = pd.read_csv(results / "leaderboard.csv")
    keep = [c for c in board.columns if not c.startswith(("config_", "version_")) and c not in ("git", "head_id")]
    return board[keep]


@pytest.mark.slow  # two runs on the real data: about 12 s
def test_real_data_described_by_a_csv_gives_the_same_splits_and_numbers(real_data: Path, tmp_path: Path):
    labels = kermany_csv(real_data, tmp_path / "kermany.csv")
    settings = LabelSettings(labels=str(labels), path_column="image", label_column="finding", split_column="set")
    assert make_splits(scan_dataset(real_data), seed=0).records == make_splits(read_labels(real_data, settings),
                                                                               seed=0).records
    options = ("--limit-per-class", "20", "--cache-dir", str(tmp_path / "cache"))
    assert run_small_benchmark(real_data, tmp_path / "folders", *options) == 0
    assert run_small_benchmark(real_data, tmp_path / "csv", *options, "--labels", str(labels), "--path-column",
                               "image", "--label-column", "finding", "--split-column", "set") == 0  # fmt: skip
    folders, table = tmp_path / "folders" / "results", tmp_path / "csv" / "results"
    split_columns = ["split", "path", "label"]
    assert pd.read_csv(folders / "predictions.csv")[split_columns].equals(
        pd.read_csv(table / "predictions.csv")[split_columns]
    )
    pd.testing.assert_frame_equal(_numbers(folders), _numbers(table))


def test_official_split_lists_name_images_by_path_or_file_name(tmp_path: Path):
    rows = make_flat_set(tmp_path)
    test_names = [Path(row[0]).name for row in rows if row[3] == "test"]  # bare file names, as NIH's lists
    (tmp_path / "test_list.txt").write_text("\n".join(test_names[1:]) + "\n\n", encoding="utf-8")
    train = [row[0] for row in rows if row[3] == "train"]
    (tmp_path / "train_val_list.txt").write_text("\n".join(train + [rows[-1][0]]), encoding="utf-8")
    path = write_csv(tmp_path / "labels.csv", HEADER, rows)
    lists = (("train", str(tmp_path / "train_val_list.txt")), ("test", str(tmp_path / "test_list.txt")))
    dataset = read_labels(tmp_path, LabelSettings(labels=str(path), split_lists=lists))
    reasons = {skip.path: skip.reason for skip in dataset.skipped}
    first_test = next(row[0] for row in rows if row[3] == "test")
    assert reasons[first_test].startswith("in no split list")
    assert reasons[rows[-1][0]].startswith("named in split lists of two different splits")
    assert len(dataset.split("test")) == len(test_names) - 2
    assert len(dataset.split("train")) == len(train)


def test_split_lists_are_checked_before_any_work(tmp_path: Path, capsys):
    rows = make_flat_set(tmp_path / "data")
    path = write_csv(tmp_path / "labels.csv", HEADER, rows)
    for lists, message in ((["holdout=x.txt"], "SPLIT=FILE pairs"), (["test=missing.txt"], "is not a file")):
        assert run_small_benchmark(tmp_path / "data", tmp_path, "--labels", str(path), "--split-lists", *lists) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "t.txt").write_text("images/normal_000.png\n", encoding="utf-8")
    assert run_small_benchmark(tmp_path / "data", tmp_path, "--labels", str(path), "--split-column", "split",
                               "--split-lists", f"test={tmp_path / 't.txt'}") == 2  # fmt: skip
    assert "replaces --split-column" in capsys.readouterr().err


def test_the_audit_command_reads_a_labels_csv(tmp_path: Path, capsys):
    from features.data.audit import main

    rows = make_flat_set(tmp_path)
    rows.append(["images/gone.png", "normal", "z", "train"])
    path = write_csv(tmp_path / "labels.csv", HEADER, rows)
    assert main([str(tmp_path), "--labels", str(path), "--patient-column", "patient", "--split-column", "split",
                 "--min-side", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(csv): 30 usable images" in out and "image named in the labels file not found" in out
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfepath")
    assert main([str(tmp_path), "--labels", str(tmp_path / "bad.csv")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_a_class_without_test_rows_stops_the_run_naming_the_csv(tmp_path: Path, capsys):
    rows = [row for row in make_flat_set(tmp_path / "data") if not (row[1] == "viral" and row[3] == "test")]
    path = write_csv(tmp_path / "labels.csv", HEADER, rows)
    assert run_small_benchmark(tmp_path / "data", tmp_path, "--labels", str(path), "--split-column", "split") == 2
    err = capsys.readouterr().err
    assert "class 'viral' has no usable image in test" in err and "rows in the labels CSV" in err


def test_the_label_options_come_from_a_toml_config_too(tmp_path: Path):
    from benchmark.config import RunConfig, load_toml

    labels = write_csv(tmp_path / "labels.csv", HEADER, [])
    (tmp_path / "run.toml").write_text(
        f'data = "{tmp_path}"\nlabels = "{labels}"\nsplit_column = "split"\nclasses = ["normal", "viral"]\n'
        f'external_test = "{tmp_path}"\nexternal_map = ["NORMAL=normal"]\n',
        encoding="utf-8",
    )
    stages = RunConfig(**load_toml(tmp_path / "run.toml")).validate().stages()
    assert stages.labels.classes == ("normal", "viral") and stages.labels.split_column == "split"
    assert stages.external.mapping == (("NORMAL", "normal"),) and stages.external.labels.labels is None
    (tmp_path / "bad.toml").write_text('external_map = "NORMAL"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="OLD=NEW"):
        RunConfig(**load_toml(tmp_path / "bad.toml")).validate()
