"""The model card beside an export (MODEL_CARD.md with YAML front matter, metadata.json): its numbers are the run's,
it says what it is not, and ``cxr-bench verify --model-card`` catches a changed number."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import HEAD_AND_PROBE, run_small_benchmark
from test_multilabel import NIH_FLAGS, make_nih_set

from backbones.licences import imagenet_licence
from benchmark.evaluation import verify
from benchmark.evaluation.verify_card import check_model_card
from benchmark.export.records import METADATA_JSON, MODEL_CARD, ExportRecord, ParityResult
from benchmark.reporting.model_card import card_summary, read_front_matter, weights_identity, write_model_card
from common.files import sha256_file

TEST_COLUMNS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece", "op_threshold",
                "op_test_sensitivity", "op_test_specificity", "val_auc", "val_sensitivity", "tp", "fn",
                "n_test")  # fmt: skip


def _board(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "leaderboard.csv")


def _exports(folder: Path, row: pd.Series, classes: tuple[str, ...]) -> list[ExportRecord]:
    """A hand-made export: a small file beside the card and its record (the export command writes real ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not really onnx")
    parity = ParityResult("onnxruntime 1.20.0", int(row["n_test"]), 2.4e-7, 1.0, 1e-5, True)
    digest = sha256_file(folder / "model.onnx")
    return [ExportRecord("onnx", "model.onnx", digest, 15, row["backbone"], row["head_id"], int(row["image_size"]),
                         classes, False, "float32", parity, ("onnxruntime>=1.17",))]  # fmt: skip


def _card(run, folder: Path, kind: str = "logreg") -> tuple[pd.Series, Path]:
    """The card of the run's first head of ``kind``, with one export, written into ``folder``."""
    row = _board(run.results)[lambda b: b["kind"] == kind].iloc[0]
    classes = tuple(json.loads((run.results / "run.json").read_text())["classes"])
    write_model_card(folder, run.results, row["head_id"], _exports(folder, row, classes))
    return row, folder


def test_the_cards_numbers_are_the_leaderboards_in_front_matter_and_json(probe_run, tmp_path: Path):
    row, folder = _card(probe_run, tmp_path)
    front = read_front_matter((folder / MODEL_CARD).read_text(encoding="utf-8"))
    meta = json.loads((folder / METADATA_JSON).read_text(encoding="utf-8"))
    assert front == card_summary(meta) and front["tasks"] and front["exports"]  # the summary, of metadata.json
    rows = _board(probe_run.results)[lambda b: b["head_id"] == row["head_id"]].set_index("task")
    assert list(meta["tasks"]) == list(front["tasks"]) == list(rows.index)
    for task, numbers in meta["tasks"].items():
        for column in (*TEST_COLUMNS, "auc_ci_low", "auc_ci_high", "sensitivity_ci_low", "specificity_ci_high"):
            assert numbers[column] == pytest.approx(rows.loc[task, column], rel=1e-12, abs=1e-12), (task, column)
        assert front["tasks"][task]["sensitivity"] == numbers["sensitivity"]
    assert front["model"]["head_id"] == row["head_id"] and front["select_by"] == "val_loss"
    assert front["git"] == row["git"] and meta["versions"]["keras"] == row["version_keras"]
    assert meta["data"]["counts"]["test"]["images"] == row["n_test"]


def test_the_card_says_not_a_medical_device_and_names_the_weights_and_their_licence(probe_run, tmp_path: Path):
    row, folder = _card(probe_run, tmp_path)
    text = (folder / MODEL_CARD).read_text(encoding="utf-8")
    assert "**Not a medical device.**" in text and "not_a_medical_device: true" in text
    assert "`random-init:seed=0`" in text and "random initialisation, no pretrained weights" in text
    assert "## How this model was chosen" in text and "**lowest validation loss**" in text
    assert "onnxruntime.InferenceSession('model.onnx')" in text and "(n, 32, 32, 3)" in text
    sick = 1 - _board(probe_run.results).query("head_id == @row.head_id").iloc[0]["sensitivity"]
    assert f"it missed about {round(100 * sick)} " in text


def test_weights_identity_states_source_sha256_and_licence_as_far_as_known():
    resnet = weights_identity("imagenet:resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "ResNet50-ft")
    assert resnet["licence"] == "MIT" and "Kaiming He" in resnet["origin"] and "non-commercial" in resnet["note"]
    assert imagenet_licence("MobileNetV2-0.35").licence == "Apache-2.0"
    assert imagenet_licence("MobileNet-0.25").family == "MobileNet v1"
    assert imagenet_licence("VGG16").licence == "CC-BY-4.0" and imagenet_licence("DenseNet121").licence == "unknown"
    assert imagenet_licence("NotANetwork").licence == "unknown"
    given = weights_identity("file:" + "ab" * 32, "DenseNet121")
    assert given["sha256"] == "ab" * 32 and given["licence"] == "unknown"
    # A folder's file under Keras' own release name is that release (the shared weights folder's files are).
    keras_file = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    release = weights_identity("file:" + "cd" * 32, "MobileNetV2-0.35-ft", keras_file)
    assert release["licence"] == "Apache-2.0" and keras_file in release["origin"] and release["sha256"] == "cd" * 32
    assert weights_identity("file:" + "cd" * 32, "MobileNetV2-0.35", "mine.h5")["licence"] == "unknown"


def test_verify_passes_on_a_fresh_card_and_fails_naming_a_changed_export(probe_run, tmp_path: Path, capsys):
    _, folder = _card(probe_run, tmp_path)
    assert verify.main([str(probe_run.results), "--model-card", str(folder / MODEL_CARD)]) == 0
    assert "every value of the model card matches the run" in capsys.readouterr().out
    (folder / "model.onnx").write_bytes(b"another model")
    problems = check_model_card(probe_run.results, folder)
    assert any("exports.0.sha256" in line and "model.onnx has" in line for line in problems)


def test_verify_names_a_number_changed_in_the_front_matter(probe_run, tmp_path: Path):
    row, folder = _card(probe_run, tmp_path)
    card = folder / MODEL_CARD
    task = _board(probe_run.results).query("head_id == @row.head_id").iloc[0]["task"]
    text = card.read_text(encoding="utf-8")
    value = read_front_matter(text)["tasks"][task]["specificity"]
    start = text.index(f"  {task}:\n")
    changed = text[start:].replace(f"    specificity: {value!r}\n", "    specificity: 0.123\n", 1)
    card.write_text(text[:start] + changed, encoding="utf-8")
    problems = check_model_card(probe_run.results, folder)
    assert problems == [f"{card} front matter tasks.{task}.specificity: 0.123, metadata.json {value!r}"]


def test_verify_names_a_number_changed_in_metadata_json(probe_run, tmp_path: Path, capsys, monkeypatch):
    _, folder = _card(probe_run, tmp_path)
    monkeypatch.setattr(verify, "verify", lambda results_dir: [])  # the run's own recomputation: tested above
    meta = json.loads((folder / METADATA_JSON).read_text(encoding="utf-8"))
    task = next(iter(meta["tasks"]))
    meta["tasks"][task]["op_threshold"] = 0.5
    meta["tasks"][task]["val_auc"] = 0.25  # not in the front matter: checked against the run alone
    (folder / METADATA_JSON).write_text(json.dumps(meta), encoding="utf-8")
    assert verify.main([str(probe_run.results), "--model-card", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"front matter tasks.{task}.op_threshold" in out and "metadata.json 0.5" in out
    assert f"metadata.json tasks.{task}.val_auc: 0.25, leaderboard.csv" in out


def test_an_ensembles_card_lists_each_members_weights_and_verifies(probe_run, tmp_path: Path):
    board = _board(probe_run.results)
    if "ensemble" not in set(board["kind"]):
        pytest.skip("the probe run has no ensemble")
    row, folder = _card(probe_run, tmp_path, kind="ensemble")
    meta = json.loads((folder / METADATA_JSON).read_text(encoding="utf-8"))
    assert set(meta["weights"]) == set(board.loc[board["kind"] != "ensemble", "backbone"])
    assert check_model_card(probe_run.results, folder) == []


@pytest.mark.slow  # a multi-label run of its own (about 5 s)
def test_a_multi_label_run_has_a_card_of_its_findings_that_verifies(tmp_path: Path):
    labels = make_nih_set(tmp_path / "nih", n=64)
    assert run_small_benchmark(tmp_path / "nih", tmp_path, "--labels", str(labels), *NIH_FLAGS, "--epochs", "4",
                               "--target-sensitivity", "0.9", "--bootstrap", "100",
                               grid=HEAD_AND_PROBE) == 0  # fmt: skip
    results = tmp_path / "results"
    row = _board(results).iloc[0]
    write_model_card(tmp_path / "card", results, row["head_id"], [])
    front = read_front_matter((tmp_path / "card" / MODEL_CARD).read_text(encoding="utf-8"))
    assert front["multi_label"] is True and list(front["tasks"]) == ["consolidation", "interstitial"]
    assert front["model"]["macro_auc"] == pytest.approx(row["macro_auc"])
    meta = json.loads((tmp_path / "card" / METADATA_JSON).read_text(encoding="utf-8"))
    assert meta["network_data_format"]["outputs"]["pred"]["activation"] == "sigmoid per finding"
    assert "present or not" in (tmp_path / "card" / MODEL_CARD).read_text(encoding="utf-8")
    assert check_model_card(results, tmp_path / "card") == []
