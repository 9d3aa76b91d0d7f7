"""The whole command: data -> features -> heads -> the three report files, checked against scikit-learn."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import LONGER, LONGER_DRAWN, ONE_HEAD, run_small_benchmark

import run_benchmark
from benchmark.evaluation.verify import verify

REQUIRED_LEADERBOARD = {
    "backbone",
    "image_size",
    "lr",
    "dropout",
    "task",
    "accuracy",
    "sensitivity",
    "specificity",
    "f1",
    "auc",
}
REQUIRED_PREDICTIONS = {
    "backbone",
    "image_size",
    "lr",
    "dropout",
    "split",
    "path",
    "label",
    "p_normal",
    "p_bacterial",
    "p_viral",
}


@pytest.mark.slow
def test_run_writes_reports_that_scikit_learn_agrees_with(kermany_root: Path, tmp_path: Path):
    args = ("--backbones", "MobileNetV2", "ResNet50", "--image-size", "32")
    assert run_small_benchmark(kermany_root, tmp_path, *args, **LONGER) == 0
    results = tmp_path / "results"
    board = pd.read_csv(results / "leaderboard.csv")
    predictions = pd.read_csv(results / "predictions.csv")
    assert REQUIRED_LEADERBOARD <= set(board.columns) and REQUIRED_PREDICTIONS <= set(predictions.columns)
    # The ensemble row is there when validation cannot tell the heads apart (it decides, not this test).
    ensemble = int((board["backbone"] == "ensemble").any())
    assert len(board) == (2 * 2 + ensemble) * 3  # (backbones x (head, probe) + ensemble) x tasks
    assert set(board["backbone"]) - {"ensemble"} == {"MobileNetV2", "ResNet50", "MobileNetV2-logreg",
                                                     "ResNet50-logreg"}  # fmt: skip
    assert set(predictions["split"]) == {"test"} and len(predictions) == (2 * 2 + ensemble) * 18
    assert set(predictions["label"]) == {"normal", "bacterial", "viral"}
    assert verify(results) == []
    markdown = (results / "leaderboard.md").read_text()
    for text in (
        "normal_vs_pneumonia",
        "bacterial_vs_rest",
        "viral_vs_rest",
        "random initialisation",
        "carved",
        "keras",
        "## Validation beside test",
        "## The head against the logistic-regression probe",
    ):
        assert text in markdown
    for head in board.loc[board["backbone"] != "ensemble", "head_id"].unique():
        assert (results / "heads" / head / "best.keras").is_file()
        assert (results / "heads" / head / "history.csv").is_file()


def test_second_run_reuses_every_feature(small_run, tmp_path: Path, capsys):
    small_run.copy_to(tmp_path)  # the first run
    first = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    capsys.readouterr()
    assert small_run.rerun(tmp_path) == 0
    assert "features from cache, 0 forward passes" in capsys.readouterr().out
    run_info = pd.read_json(tmp_path / "results" / "run.json", typ="series")
    assert run_info["forward_passes"] == 0
    second = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    pd.testing.assert_frame_equal(first[["task", "sensitivity", "auc"]], second[["task", "sensitivity", "auc"]])


def test_bad_arguments_fail_before_any_work(kermany_root: Path, tmp_path: Path, capsys):
    assert run_small_benchmark(kermany_root, tmp_path, "--backbones", "ResNet51", **LONGER) == 2
    assert "ResNet50" in capsys.readouterr().err
    assert run_small_benchmark(kermany_root, tmp_path, "--backbones", "Xception", "--image-size", "64", **LONGER) == 2
    assert "minimum" in capsys.readouterr().err
    assert run_small_benchmark(kermany_root, tmp_path, "--dropout", "1.0", **LONGER) == 2
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_no_data_runs_on_the_labelled_phantom_set(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/chest_xray here
    code = run_benchmark.main(
        ["--backbones", "MobileNetV2", "--image-size", "32", "--epochs", "3", "--limit-per-class", "6", "--no-progress",
         *ONE_HEAD]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC PHANTOM" in out and "NOT MEDICAL" in out
    markdown = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "THESE NUMBERS ARE NOT MEDICAL" in markdown
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    heads = board["backbone"] != "ensemble"  # the ensemble's weights column names its members
    assert board.loc[heads, "weights"].str.startswith("random-init").all()


@pytest.mark.slow
@pytest.mark.real_data
def test_real_data_subset_end_to_end(real_data: Path, tmp_path: Path):
    args = ("--backbones", "MobileNetV2", "--image-size", "64", "--limit-per-class", "8")
    assert run_small_benchmark(real_data, tmp_path, *args, **LONGER) == 0
    assert verify(tmp_path / "results") == []
    predictions = pd.read_csv(tmp_path / "results" / "predictions.csv")
    models = 2 + int((predictions["backbone"] == "ensemble").any())  # head, probe, and the ensemble if validation ties
    assert len(predictions) == models * 3 * 8 and predictions["path"].str.startswith("test/").all()


def test_operating_points_intervals_and_calibration_are_reported(probe_run, tmp_path: Path):
    # A run with --target-sensitivity 0.9 --bootstrap 200, copied: its leaderboard is changed below.
    probe_run.copy_to(tmp_path)
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    for metric in ("sensitivity", "specificity", "accuracy", "f1", "auc"):
        defined = board[board[metric].notna()]
        assert (defined[f"{metric}_ci_low"] <= defined[metric] + 1e-12).all()
        assert (defined[metric] <= defined[f"{metric}_ci_high"] + 1e-12).all()
    assert (board["op_target_sensitivity"] == 0.9).all() and (board["op_val_sensitivity"] >= 0.9).all()
    assert board["ece"].between(0, 1).all()
    markdown = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "## Operating points: sensitivity 0.9 chosen on validation" in markdown
    assert "## Calibration (test)" in markdown and "200 resamples" in markdown
    assert (tmp_path / "results" / "plots" / "reliability_normal_vs_pneumonia.png").stat().st_size > 1000
    assert verify(tmp_path / "results") == []
    board.loc[0, "op_test_tp"] += 1  # a wrong count must be caught
    board.loc[1, "ece"] += 0.01
    board.loc[2, "n_test"] -= 1
    board.loc[3, "auc_ci_high"] = board.loc[3, "auc"] - 0.01
    board.to_csv(tmp_path / "results" / "leaderboard.csv", index=False)
    problems = verify(tmp_path / "results")
    for column in ("op_test_tp", "ece", "n_test", "outside its interval"):
        assert any(column in problem for problem in problems), column


@pytest.mark.slow
def test_a_four_class_folder_dataset_gets_one_vs_rest_tasks(tmp_path: Path):
    from conftest import write_image

    from benchmark.evaluation.metrics import binary_tasks

    rng = np.random.default_rng(0)
    looks = {"COVID19": "viral", "NORMAL": "normal", "PNEUMONIA": "bacterial", "TUBERCULOSIS": "bacterial"}
    for name, look in looks.items():
        for i in range(15):
            write_image(tmp_path / "data" / name / f"{name.lower()}-{i:03d}.png", look, rng)
    args = ("--backbones", "MobileNetV2", "--image-size", "32")
    assert run_small_benchmark(tmp_path / "data", tmp_path, *args, **LONGER_DRAWN) == 0
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    tasks = binary_tasks(tuple(looks))
    assert list(dict.fromkeys(board["task"])) == list(tasks)
    assert tasks["normal_vs_disease"] == ("COVID19", "PNEUMONIA", "TUBERCULOSIS")
    assert {"COVID19_vs_rest", "PNEUMONIA_vs_rest", "TUBERCULOSIS_vs_rest"} <= set(tasks)
    predictions = pd.read_csv(tmp_path / "results" / "predictions.csv")
    assert {f"p_{name}" for name in looks} <= set(predictions.columns)
    assert verify(tmp_path / "results") == []
    markdown = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "### normal_vs_disease (positive: COVID19 + PNEUMONIA + TUBERCULOSIS)" in markdown
    assert (tmp_path / "results" / "plots" / "confusion_MobileNetV2.png").is_file()


@pytest.mark.slow  # a run of its own beside the shared one
def test_no_plots_leaves_out_the_figures_and_nothing_else(small_run, tmp_path: Path):
    assert small_run.rerun(tmp_path, "--no-plots") == 0
    drawn, bare = small_run.results, tmp_path / "results"
    assert (drawn / "plots").is_dir() and not (bare / "plots").exists()
    config = [c for c in pd.read_csv(drawn / "leaderboard.csv").columns
              if c in ("config_plots", "config_results_dir", "config_cache_dir")]  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_csv(drawn / "leaderboard.csv").drop(columns=config),
                                  pd.read_csv(bare / "leaderboard.csv").drop(columns=config))  # fmt: skip
    for name in ("predictions.csv", "grid.csv", "comparisons.csv"):
        assert (drawn / name).read_bytes() == (bare / name).read_bytes(), name
    text = (bare / "leaderboard.md").read_text(encoding="utf-8")
    assert "None drawn: the run was given `--no-plots`." in text and "](plots/" not in text
    assert "](plots/" in (drawn / "leaderboard.md").read_text(encoding="utf-8")
    assert verify(bare) == []

    from benchmark.serve.app import create_app

    page = create_app(bare).test_client().get("/").get_data(as_text=True)
    assert "None drawn: the run was given <code>--no-plots</code>." in page and "is missing" not in page
