"""An external test set: the selected heads scored unchanged on a second dataset, beside the internal test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_kermany, run_small_benchmark, write_image
from sklearn.metrics import roc_auc_score
from test_labels import write_csv

from benchmark.evaluation.verify import verify
from benchmark.serve.results import load_run
from features.data.external import ExternalError, load_external
from features.settings import ExternalSettings, LabelSettings

CLASSES = ("normal", "bacterial", "viral")


def make_other_hospital(root: Path, per_class: int = 4, seed: int = 7) -> Path:
    """Class folders named otherwise than the training classes, plus one class that maps onto none."""
    rng = np.random.default_rng(seed)
    for folder, look in (("NORMAL", "normal"), ("BACTERIA", "bacterial"), ("VIRUS", "viral"), ("COVID", "viral")):
        for i in range(per_class):
            write_image(root / folder / f"{folder.lower()}{i}.png", look, rng)
    return root


def test_external_classes_map_by_name_ignoring_case_or_by_the_mapping(tmp_path: Path):
    root = make_other_hospital(tmp_path / "other")
    settings = ExternalSettings(str(root), mapping=(("BACTERIA", "bacterial"), ("VIRUS", "viral")))
    external = load_external(settings, CLASSES)
    assert external.classes == CLASSES and {r.split for r in external.records} == {"test"}
    assert external.counts()["test"] == {"normal": 4, "bacterial": 4, "viral": 4}
    reasons = {skip.path: skip.reason for skip in external.skipped}
    assert "maps onto no training class" in reasons["COVID/covid0.png"]
    assert "NORMAL → normal" in external.notes[0]


def test_nothing_that_maps_or_a_mapping_onto_an_unknown_class_is_one_clear_error(tmp_path: Path):
    root = make_other_hospital(tmp_path / "other")
    with pytest.raises(ExternalError, match="not a training class; the training classes are: normal, bacterial"):
        load_external(ExternalSettings(str(root), mapping=(("VIRUS", "covid"),)), CLASSES)
    with pytest.raises(ExternalError, match="no class of the external test set .* maps onto the training classes"):
        load_external(ExternalSettings(str(root)), ("cat", "dog"))


@pytest.mark.slow  # a run with an external set: about 15 s
def test_the_run_reports_the_external_test_beside_the_internal_one(kermany_root: Path, tmp_path: Path):
    rng = np.random.default_rng(3)
    other = tmp_path / "other"
    rows = []
    for label in CLASSES:
        for i in range(5):
            write_image(other / "png" / f"{label}{i}.png", label, rng)
            rows.append([f"png/{label}{i}.png", label.upper()])
    rows.append(["png/missing.png", "NORMAL"])
    # A training image among the external ones: found, listed and warned of (the default --leakage warn).
    copied = next((kermany_root / "train" / "NORMAL").iterdir())
    (other / "png" / "copy.jpeg").write_bytes(copied.read_bytes())
    rows.append(["png/copy.jpeg", "NORMAL"])
    labels = write_csv(tmp_path / "other.csv", ["path", "label"], rows)
    assert run_small_benchmark(kermany_root, tmp_path / "plain") == 0
    assert run_small_benchmark(kermany_root, tmp_path, "--external-test", str(other), "--external-labels",
                               str(labels)) == 0  # fmt: skip
    results = tmp_path / "results"
    board = pd.read_csv(results / "leaderboard.csv")
    internal, external = board[board["eval_set"] == "internal"], board[board["eval_set"] == "external"]
    assert len(external) == len(internal) and set(external["n_test"]) == {16}
    plain = pd.read_csv(tmp_path / "plain" / "results" / "leaderboard.csv")
    numbers = ["task", "auc", "sensitivity", "specificity", "op_threshold"]
    assert internal[numbers].reset_index(drop=True).equals(plain[numbers])  # the internal test is untouched
    predictions = pd.read_csv(results / "predictions.csv")
    outside = predictions[predictions["split"] == "external"]
    assert len(outside) == 16
    row = external[external["task"] == "normal_vs_pneumonia"].iloc[0]
    truth = outside["label"].isin(["bacterial", "viral"])
    assert row["auc"] == pytest.approx(roc_auc_score(truth, outside["p_bacterial"] + outside["p_viral"]))
    assert verify(results) == []
    assert set(load_run(results).board["eval_set"]) == {"internal"}  # the web page shows the internal test
    markdown = (results / "leaderboard.md").read_text(encoding="utf-8")
    assert "## External test beside the internal test" in markdown and "### normal_vs_pneumonia (external)" in markdown
    skipped = pd.read_csv(results / "external_skipped.csv")
    assert skipped["path"].tolist() == ["png/missing.png"]
    leaked = pd.read_csv(results / "external_leakage.csv")
    assert leaked["path"].tolist() == ["png/copy.jpeg"] and leaked["internal_path"].iloc[0].endswith(copied.name)
    assert "1 external image(s) are also in the internal data" in markdown


def test_an_external_set_that_maps_onto_nothing_stops_before_extraction(kermany_root: Path, tmp_path: Path, capsys):
    other = make_kermany(tmp_path / "other", {"test": 2})
    code = run_small_benchmark(kermany_root, tmp_path, "--external-test", str(other), "--external-map",
                               "NORMAL=covid")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "not a training class" in err and "Traceback" not in err
    assert not (tmp_path / "results" / "skipped.csv").exists()
    assert run_small_benchmark(kermany_root, tmp_path, "--external-map", "NORMAL") == 2
    assert "OLD=NEW" in capsys.readouterr().err


def test_an_external_labels_file_needs_its_folder(kermany_root: Path, tmp_path: Path, capsys):
    labels = write_csv(tmp_path / "x.csv", ["path", "label"], [["a.png", "normal"]])
    assert run_small_benchmark(kermany_root, tmp_path, "--external-labels", str(labels)) == 2
    assert "--external-labels needs --external-test" in capsys.readouterr().err
    assert LabelSettings().labels is None


def test_external_images_that_are_training_images_are_found_and_follow_the_leakage_policy(
    kermany_root: Path, tmp_path: Path
):
    import shutil

    from features.data.audit import DatasetError, audit_images, external_overlap
    from features.data.dataset import make_splits, scan_dataset

    dataset = make_splits(audit_images(scan_dataset(kermany_root), min_side=8), seed=0)
    other = make_other_hospital(tmp_path / "other")
    copied = next(r for r in dataset.records if r.split == "train" and r.label.text == "normal")
    shutil.copy(kermany_root / copied.path, other / "NORMAL" / "copy.jpeg")
    settings = ExternalSettings(str(other), mapping=(("BACTERIA", "bacterial"), ("VIRUS", "viral")))
    external = audit_images(load_external(settings, CLASSES), min_side=8)
    kept = external_overlap(dataset, external, "warn")
    assert [(row.path, row.internal_path, row.internal_split) for row in kept.leakage] == [
        ("NORMAL/copy.jpeg", copied.path, "train")
    ]
    assert len(kept.records) == len(external.records)
    dropped = external_overlap(dataset, external, "drop")
    assert "NORMAL/copy.jpeg" not in {r.path for r in dropped.records}
    assert "same image as" in {skip.path: skip.reason for skip in dropped.skipped}["NORMAL/copy.jpeg"]
    with pytest.raises(DatasetError, match="also in the internal data"):
        external_overlap(dataset, external, "fail")


def make_two_class_hospital(root: Path, per_class: int = 5, seed: int = 11) -> Path:
    """A NORMAL / PNEUMONIA set (as RSNA's and most others): pneumonia without its bacterial or viral kind."""
    rng = np.random.default_rng(seed)
    for i in range(per_class):
        write_image(root / "NORMAL" / f"n{i}.png", "normal", rng)
        write_image(root / "PNEUMONIA" / f"p{i}.png", "bacterial" if i % 2 else "viral", rng)
    return root


def test_an_external_class_may_map_onto_a_group_of_training_classes(tmp_path: Path):
    root = make_two_class_hospital(tmp_path / "other")
    external = load_external(ExternalSettings(str(root), mapping=(("PNEUMONIA", "viral+bacterial"),)), CLASSES)
    assert {r.label.text for r in external.records} == {"normal", "bacterial+viral"} and external.has_groups()
    assert "scored only on the tasks where its whole group is on one side" in external.notes[0]
    keep, labels = external.task_labels("test", ("bacterial", "viral"))  # normal_vs_pneumonia: every image
    assert keep.all() and set(labels.tolist()) == {0, 1}
    keep, labels = external.task_labels("test", ("bacterial",))  # bacterial_vs_rest: the normals only
    assert keep.sum() == 5 and set(labels[keep].tolist()) == {0}
    with pytest.raises(ExternalError, match="'covid', not a training class"):
        load_external(ExternalSettings(str(root), mapping=(("PNEUMONIA", "bacterial+covid"),)), CLASSES)


@pytest.mark.slow  # a run with an external set: about 15 s
def test_a_two_class_external_set_is_scored_on_the_tasks_it_can_answer(kermany_root: Path, tmp_path: Path):
    other = make_two_class_hospital(tmp_path / "other")
    assert run_small_benchmark(kermany_root, tmp_path, "--external-test", str(other), "--external-map",
                               "PNEUMONIA=bacterial+viral") == 0  # fmt: skip
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    external = board[board["eval_set"] == "external"].set_index("task")
    assert external.loc["normal_vs_pneumonia", "n_test"] == 10
    # Whether a pneumonia is bacterial is not known here: those tasks are scored on the normals alone.
    assert external.loc["bacterial_vs_rest", "n_test"] == 5 and math.isnan(external.loc["bacterial_vs_rest", "auc"])
    assert external["multiclass_accuracy"].isna().all()
    predictions = pd.read_csv(tmp_path / "results" / "predictions.csv")
    assert "bacterial+viral" in set(predictions[predictions["split"] == "external"]["label"])
    markdown = (tmp_path / "results" / "leaderboard.md").read_text(encoding="utf-8")
    assert "bacterial+viral 5" in markdown
