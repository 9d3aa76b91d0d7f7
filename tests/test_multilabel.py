"""Multi-label CSVs (NIH's separated findings, CheXpert's 1/0/-1/blank columns): reading, heads, metrics, runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import DRAWN, run_small_benchmark
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmark.evaluation.metrics import binary_tasks, evaluate, macro_auc, multiclass_accuracy, task_decision
from benchmark.evaluation.verify import verify
from benchmark.settings import HeadSettings, probe_settings
from benchmark.training.heads import (
    binary_cross_entropy,
    is_multi_label,
    load_head,
    masked_binary_crossentropy,
    train_heads,
)
from benchmark.training.probe import fit_probes
from features.data.dataset import make_splits
from features.data.external import ExternalError, load_external
from features.data.labels import LabelsError, read_labels
from features.data.records import NO_FINDING
from features.settings import ExternalSettings, LabelSettings

FINDINGS = ("Consolidation", "Interstitial")


def write_findings_image(path: Path, findings: set[str], rng: np.random.Generator, size: int = 40) -> None:
    """A small grey JPEG: a bright blob for Consolidation, a fine wave pattern for Interstitial (both can show)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = 60 + 40 * yy + rng.normal(0, 8, (size, size))
    if "Consolidation" in findings:
        cx, cy = rng.uniform(0.3, 0.7, 2)
        image += 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    if "Interstitial" in findings:
        image += 50 * np.sin(xx * rng.uniform(25, 35)) * np.sin(yy * rng.uniform(25, 35))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(path, quality=95)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# Each image's findings, cycling: none, one, the other, both.
COMBINATIONS = (set(), {"Consolidation"}, {"Interstitial"}, {"Consolidation", "Interstitial"})


def make_nih_set(root: Path, n: int = 48, seed: int = 0) -> Path:
    """NIH's layout: images spread over images_00N/ folders, a CSV naming them by file name only."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        findings = COMBINATIONS[i % 4]
        name = f"{i:08d}_000.png"
        write_findings_image(root / f"images_{i % 3 + 1:03d}" / "images" / name, findings, rng)
        rows.append([name, "|".join(sorted(findings)) or "No Finding", f"{i // 2}"])
    return write_csv(root / "Data_Entry.csv", ["Image Index", "Finding Labels", "Patient ID"], rows)


def nih_settings(path: Path, **extra) -> LabelSettings:
    return LabelSettings(labels=str(path), path_column="Image Index", findings_column="Finding Labels",
                         patient_column="Patient ID", **extra)  # fmt: skip


def make_chexpert_set(root: Path, n: int = 48, seed: int = 1) -> Path:
    """CheXpert's layout: one column per finding, 1 / 0 / -1 (uncertain) / blank; every 5th value uncertain."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        findings = COMBINATIONS[i % 4]
        path = f"train/patient{i // 2:05d}/study{i % 2 + 1}/view1_frontal.jpg"
        write_findings_image(root / path, findings, rng)
        cells = ["1.0" if name in findings else "" if i % 3 == 0 else "0.0" for name in FINDINGS]
        if i % 5 == 0:
            cells[0] = "-1.0"
        rows.append([path, "Frontal", *cells])
    return write_csv(root / "train.csv", ["Path", "Frontal/Lateral", *FINDINGS], rows)


def chexpert_settings(path: Path, **extra) -> LabelSettings:
    return LabelSettings(**{"labels": str(path), "path_column": "Path", "finding_columns": FINDINGS, **extra})


def test_nih_findings_are_read_with_no_finding_as_the_normal_case(tmp_path: Path):
    dataset = read_labels(tmp_path, nih_settings(make_nih_set(tmp_path)))
    assert dataset.multi_label and dataset.classes == FINDINGS and not dataset.skipped
    # Found by file name under images_00N/images/, as NIH ships them.
    assert all(record.path.startswith("images_00") for record in dataset.records)
    assert {record.label.text for record in dataset.records} == {NO_FINDING, "Consolidation", "Interstitial",
                                                            "Consolidation|Interstitial"}  # fmt: skip
    labels = dataset.labels("train")
    assert labels.shape == (48, 2) and labels.dtype == np.float32
    assert labels[0].tolist() == [0.0, 0.0] and labels[3].tolist() == [1.0, 1.0]
    assert dataset.counts()["train"] == {"Consolidation": 24, "Interstitial": 24}


def test_nih_rows_that_cannot_be_used_are_left_out_with_their_reason(tmp_path: Path):
    path = make_nih_set(tmp_path)
    rows = pd.read_csv(path, dtype=str).values.tolist()
    rows += [["00000001_000.png", "No Finding|Consolidation", "0"], ["00000002_000.png", " ", "1"],
             ["00000003_000.png", "Consolidation|Effusion", "1"], ["missing.png", "Consolidation", "9"]]  # fmt: skip
    # The same file name in two folders cannot be told apart by name: left out, never guessed.
    write_findings_image(tmp_path / "images_009" / "twice.png", set(), np.random.default_rng(0))
    write_findings_image(tmp_path / "images_010" / "twice.png", set(), np.random.default_rng(0))
    rows += [["twice.png", "No Finding", "2"], ["00000005_000.png", "Interstitial", "2"]]
    path = write_csv(tmp_path / "bad.csv", ["Image Index", "Finding Labels", "Patient ID"], rows)
    dataset = read_labels(tmp_path, nih_settings(path, classes=FINDINGS))
    text = " | ".join(skip.reason for skip in dataset.skipped)
    for expected in ("'No Finding' beside findings ['Consolidation']", "empty label", "unknown finding 'Effusion'",
                     "not found under --data", "different labels"):  # fmt: skip  (00000005 is Consolidation)
        assert expected in text, expected
    assert sum("by a unique file name" in skip.reason for skip in dataset.skipped) == 2  # missing + ambiguous


@pytest.mark.parametrize(
    ("uncertain", "blank", "first_row"),
    [("ignore", "zeros", [math.nan, 0.0]), ("zeros", "zeros", [0.0, 0.0]), ("ones", "ignore", [1.0, math.nan])],
)
def test_chexpert_uncertain_and_blank_values_follow_the_stated_policy(tmp_path: Path, uncertain, blank, first_row):
    path = make_chexpert_set(tmp_path)
    dataset = read_labels(tmp_path, chexpert_settings(path, uncertain=uncertain, blank=blank))
    assert dataset.multi_label and dataset.classes == FINDINGS
    # Row 0: Consolidation -1 (uncertain), Interstitial blank.
    np.testing.assert_array_equal(dataset.labels("train")[0], np.array(first_row, dtype=np.float32))
    assert f"uncertain -1 → {uncertain}, blank → {blank}" in dataset.notes[0]


def test_chexpert_bad_values_and_all_unknown_rows_are_left_out(tmp_path: Path):
    path = make_chexpert_set(tmp_path)
    rows = pd.read_csv(path, dtype=str, keep_default_na=False).values.tolist()
    rows[1][2] = "2"
    rows[2][2:] = ["-1", "-1"]
    path = write_csv(tmp_path / "bad.csv", ["Path", "Frontal/Lateral", *FINDINGS], rows)
    dataset = read_labels(tmp_path, chexpert_settings(path))
    reasons = {skip.path: skip.reason for skip in dataset.skipped}
    assert "value '2' in column 'Consolidation' is not 1, 0, -1 or blank" in reasons[rows[1][0]]
    assert "every finding uncertain or blank" in reasons[rows[2][0]]


def test_no_finding_is_not_a_finding_column(tmp_path: Path):
    path = make_chexpert_set(tmp_path)
    with pytest.raises(LabelsError, match="the normal case, not a finding"):
        read_labels(tmp_path, chexpert_settings(path, finding_columns=(*FINDINGS, "No Finding")))
    with pytest.raises(LabelsError, match="'Effusion' \\(--finding-columns Effusion\\) is not in the header"):
        read_labels(tmp_path, chexpert_settings(path, finding_columns=("Effusion",)))


def test_splits_keep_patients_together_and_stratify_by_finding_combination(tmp_path: Path):
    dataset = make_splits(read_labels(tmp_path, nih_settings(make_nih_set(tmp_path, n=80))), seed=3)
    patients = {split: {r.patient for r in dataset.split(split)} for split in ("train", "val", "test")}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    for split in ("val", "test"):
        assert {r.label for r in dataset.split(split)} == {r.label for r in dataset.records}


def random_multi_label(n: int, seed: int, unknown: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < 0.4).astype(np.float32)
    probabilities = np.clip(labels * 0.5 + rng.random((n, 3)) * 0.6, 0, 1).astype(np.float32)
    labels[rng.random((n, 3)) < unknown] = np.nan
    return labels, probabilities


def test_each_finding_is_a_task_scored_on_its_known_images_as_scikit_learn_does():
    labels, probabilities = random_multi_label(200, seed=0)
    classes = ("Atelectasis", "Pleural Effusion", "Edema")
    assert list(binary_tasks(classes, multi_label=True)) == ["atelectasis", "pleural_effusion", "edema"]
    scores = evaluate(labels, probabilities, classes)
    aucs = []
    for j, (task, name) in enumerate(zip(scores, classes, strict=True)):
        known = ~np.isnan(labels[:, j])
        truth, decision, score = task_decision(labels, probabilities, classes, (name,))
        assert len(truth) == known.sum() < 200
        np.testing.assert_array_equal(decision, probabilities[known, j] >= 0.5)
        aucs.append(roc_auc_score(labels[known, j], probabilities[known, j]))
        assert scores[task]["auc"] == pytest.approx(aucs[-1], abs=1e-12)
        assert scores[task]["tp"] == int(np.sum((labels[known, j] == 1) & (probabilities[known, j] >= 0.5)))
    assert macro_auc(labels, probabilities) == pytest.approx(np.mean(aucs), abs=1e-12)
    known = ~np.isnan(labels)
    assert multiclass_accuracy(labels, probabilities) == pytest.approx(
        np.mean((probabilities[known] >= 0.5) == (labels[known] == 1))
    )


def test_the_masked_loss_is_keras_binary_crossentropy_on_the_known_values():
    labels, probabilities = random_multi_label(64, seed=1, unknown=0.0)
    expected = float(np.mean(keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(labels, probabilities))))
    assert binary_cross_entropy(probabilities, labels) == pytest.approx(expected, rel=1e-5)
    ones = np.ones(3, np.float32)
    keras_loss = masked_binary_crossentropy(ones, ones)
    assert float(np.mean(keras.ops.convert_to_numpy(keras_loss(labels, probabilities)))) == pytest.approx(
        expected, rel=1e-5
    )
    # An unknown value adds nothing: the same as a known value whose probability already matches it.
    masked = labels.copy()
    masked[0, 0] = np.nan
    matched = probabilities.copy()
    matched[0, 0] = 1e-7 if labels[0, 0] == 0 else 1 - 1e-7
    got = float(keras.ops.convert_to_numpy(keras_loss(masked[:1], probabilities[:1]))[0])
    assert got == pytest.approx(float(keras.ops.convert_to_numpy(keras_loss(labels[:1], matched[:1]))[0]), abs=1e-5)
    assert binary_cross_entropy(probabilities[:1], masked[:1]) == pytest.approx(got, abs=1e-5)


def separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of which the first two carry one finding each; a tenth of the values unknown."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < 0.5).astype(np.float32)
    features = rng.normal(0, 1, (n, 8)).astype(np.float32)
    features[:, :2] += 3 * labels
    labels[rng.random((n, 2)) < 0.1] = np.nan
    return features, labels


def test_multi_label_heads_learn_each_finding_with_one_sigmoid_each(tmp_path: Path):
    (x_train, y_train), (x_val, y_val) = separable(300, 0), separable(100, 1)
    grid = [HeadSettings(lr=1e-2, dropout=d, epochs=40, patience=5, class_weight="balanced") for d in (0.0, 0.3)]
    heads = train_heads(x_train, y_train, x_val, y_val, 2, grid, [tmp_path / "a", tmp_path / "b"], progress=False)
    for head in heads:
        model = load_head(head.checkpoint)
        assert is_multi_label(model)
        probabilities = keras.ops.convert_to_numpy(model(x_val))
        assert not np.allclose(probabilities.sum(axis=1), 1.0)  # independent sigmoids, not a softmax
        scores = evaluate(y_val, probabilities, FINDINGS)
        assert min(task["auc"] for task in scores.values()) > 0.95
        assert head.best_val_loss == pytest.approx(binary_cross_entropy(probabilities, y_val), rel=1e-4)


def test_multi_label_probes_are_one_logistic_regression_per_finding(tmp_path: Path):
    (x_train, y_train), (x_val, y_val) = separable(200, 2), separable(80, 3)
    base = HeadSettings(epochs=1)
    probe = fit_probes(x_train, y_train, x_val, y_val, 2, probe_settings((0.01,), base), [tmp_path / "p"])[0]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    got = keras.ops.convert_to_numpy(probe.model((x_val - mean) / std * std + mean))
    for j in range(2):
        known = ~np.isnan(y_train[:, j])
        reference = LogisticRegression(C=1.0 / (2 * 0.01 * known.sum()), max_iter=2000, tol=1e-6)
        reference.fit(((x_train - mean) / std)[known], y_train[known, j])
        np.testing.assert_allclose(got[:, j], reference.predict_proba((x_val - mean) / std)[:, 1], atol=2e-3)


def test_an_external_set_maps_its_classes_or_findings_onto_the_training_findings(tmp_path: Path):
    rng = np.random.default_rng(5)
    for folder, findings in (("NORMAL", set()), ("PNEUMONIA", {"Consolidation"}), ("OTHER", set())):
        for i in range(3):
            write_findings_image(tmp_path / "other" / folder / f"{folder}_{i}.png", findings, rng)
    settings = ExternalSettings(root=str(tmp_path / "other"), mapping=(("PNEUMONIA", "Consolidation"),))
    external = load_external(settings, FINDINGS, multi_label=True)
    assert external.multi_label and external.classes == FINDINGS
    labels = {record.path.split("/")[0]: external.labels("test")[i] for i, record in enumerate(external.records)}
    np.testing.assert_array_equal(labels["NORMAL"], [0.0, 0.0])  # a normal image shows no finding
    assert labels["PNEUMONIA"][0] == 1.0 and math.isnan(labels["PNEUMONIA"][1])  # the other finding: not recorded
    assert sum("maps onto no training finding" in skip.reason for skip in external.skipped) == 3
    with pytest.raises(ExternalError, match="maps onto the training findings"):
        load_external(ExternalSettings(root=str(tmp_path / "other")), FINDINGS, multi_label=True)
    with pytest.raises(ExternalError, match="not a training finding"):
        load_external(ExternalSettings(root=str(tmp_path / "other"), mapping=(("OTHER", "Effusion"),)), FINDINGS,
                      multi_label=True)  # fmt: skip


NIH_FLAGS = ("--path-column", "Image Index", "--findings-column", "Finding Labels", "--patient-column", "Patient ID")


@pytest.mark.slow  # an end-to-end run; its units have quick tests of their own
def test_an_nih_style_csv_runs_end_to_end_with_a_task_per_finding(tmp_path: Path):
    from benchmark import predict
    from benchmark.serve.results import load_run

    labels = make_nih_set(tmp_path / "nih", n=64)
    assert run_small_benchmark(tmp_path / "nih", tmp_path, "--labels", str(labels), *NIH_FLAGS, "--epochs", "4",
                               "--select-by", "macro_auc", preset=DRAWN) == 0  # fmt: skip
    results = tmp_path / "results"
    board = pd.read_csv(results / "leaderboard.csv")
    assert list(board["task"]) == ["consolidation", "interstitial"]
    assert board["macro_auc"].iloc[0] == pytest.approx(board["auc"].mean(), abs=1e-12)
    markdown = (results / "leaderboard.md").read_text()
    assert "## Macro-averaged AUC per backbone" in markdown and "Confusion matrices" not in markdown
    assert "probability ≥ 0.5" in markdown
    predictions = pd.read_csv(results / "predictions.csv")
    assert {"p_Consolidation", "p_Interstitial"} <= set(predictions.columns)
    assert set(predictions["predicted"]) <= {NO_FINDING, "Consolidation", "Interstitial", "Consolidation|Interstitial"}
    assert not (results / "plots" / "confusion_MobileNetV2.png").exists()
    assert (results / "plots" / "roc_consolidation.png").is_file()
    assert verify(results) == []
    grid = pd.read_csv(results / "grid.csv")
    assert grid["selection_score"].iloc[0] == pytest.approx(grid["val_macro_auc"].iloc[0])
    assert "highest validation macro_auc" in markdown
    # One image's answer: the findings at 0.5, the heatmap of the likeliest.
    image = next((tmp_path / "nih").rglob("00000003_000.png"))
    assert predict.main([str(results), str(image), "--out", str(tmp_path / "out")]) == 0
    answer = pd.read_csv(tmp_path / "out" / "predictions.csv").iloc[0]
    shown = [name for name in FINDINGS if answer[f"p_{name}"] >= 0.5]
    assert answer["predicted"] == ("|".join(shown) or NO_FINDING)
    assert set(load_run(results).board["task"]) == {"consolidation", "interstitial"}  # the web page reads it


@pytest.mark.slow
def test_a_chexpert_style_csv_with_an_external_set_runs_end_to_end(tmp_path: Path):
    labels = make_chexpert_set(tmp_path / "chexpert", n=64)
    # Another hospital's CSV, in NIH's form, that records one finding (under another name) and normals.
    rng, rows = np.random.default_rng(9), []
    for i in range(12):
        write_findings_image(tmp_path / "other" / f"{i}.png", {"Consolidation"} if i % 2 else set(), rng)
        rows.append([f"{i}.png", "Pneumonia" if i % 2 else "No Finding"])
    other = write_csv(tmp_path / "other.csv", ["file", "findings"], rows)
    code = run_small_benchmark(
        tmp_path / "chexpert", tmp_path, "--labels", str(labels), "--path-column", "Path",
        "--finding-columns", *FINDINGS, "--uncertain", "ignore", "--external-test", str(tmp_path / "other"),
        "--external-labels", str(other), "--external-path-column", "file", "--external-findings-column", "findings",
        "--external-map", "Pneumonia=Consolidation", "--epochs", "4",
    )  # fmt: skip
    assert code == 0
    results = tmp_path / "results"
    board = pd.read_csv(results / "leaderboard.csv")
    internal, external = board[board["eval_set"] == "internal"], board[board["eval_set"] == "external"]
    assert list(internal["task"]) == ["consolidation", "interstitial"]
    # The external set records Consolidation only (and normals): Interstitial is not scored on it.
    assert list(external["task"]) == ["consolidation"] and external["n_test"].iloc[0] == 12
    markdown = (results / "leaderboard.md").read_text()
    assert "### consolidation (external)" in markdown and "### interstitial (external)" not in markdown
    assert "external macro AUC" in markdown
    assert "training findings it does not record (unknown, not scored): Interstitial" in markdown
    assert verify(results) == []


def test_the_audit_command_reads_both_multi_label_forms(tmp_path: Path, capsys):
    from features.data.audit import main

    nih = make_nih_set(tmp_path / "nih")
    assert main([str(tmp_path / "nih"), "--labels", str(nih), "--path-column", "Image Index", "--findings-column",
                 "Finding Labels", "--patient-column", "Patient ID", "--min-side", "0"]) == 0  # fmt: skip
    assert "(csv): 48 usable images" in capsys.readouterr().out
    chexpert = make_chexpert_set(tmp_path / "chexpert")
    assert main([str(tmp_path / "chexpert"), "--labels", str(chexpert), "--path-column", "Path", "--finding-columns",
                 *FINDINGS, "--uncertain", "zeros", "--min-side", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(csv): 48 usable images" in out and "Consolidation" in out


def test_a_patient_pattern_reads_chexperts_patient_from_the_path(tmp_path: Path):
    path = make_chexpert_set(tmp_path)
    rows = pd.read_csv(path, dtype=str, keep_default_na=False).values.tolist()
    write_findings_image(tmp_path / "elsewhere" / "x.jpg", set(), np.random.default_rng(0))
    rows.append(["elsewhere/x.jpg", "Frontal", "1.0", "0.0"])
    path = write_csv(tmp_path / "with_stray.csv", ["Path", "Frontal/Lateral", *FINDINGS], rows)
    dataset = read_labels(tmp_path, chexpert_settings(path, patient_pattern=r"patient(\d+)"))
    assert {r.patient for r in dataset.records if "patient00003/" in r.path} == {"00003"}
    assert "no patient id in the path" in {skip.path: skip.reason for skip in dataset.skipped}["elsewhere/x.jpg"]
    split = make_splits(dataset, seed=1)
    sides = {}
    for record in split.records:
        sides.setdefault(record.patient, set()).add(record.split)
    assert all(len(found) == 1 for found in sides.values())  # both studies of a patient on one side
    with pytest.raises(LabelsError, match="not a regular expression"):
        read_labels(tmp_path, chexpert_settings(path, patient_pattern="patient(("))
