"""Experiment tracking of a finished run: ``--track mlflow`` (a real MLflow server, in the slow test) and
``--tensorboard DIR`` (event files read back with TensorBoard's own reader), both logged from the results folder;
and the checks that refuse, in one line and before any work, what could not be logged."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import DRAWN, HEAD_AND_PROBE, make_kermany, run_small_benchmark

from benchmark.config import RunConfig
from benchmark.run_folder import RunFolder
from benchmark.settings import TrackingSettings
from benchmark.tracking import mlflow_log
from benchmark.tracking.mlflow_log import log_export_artifacts, metric_key, param_value
from benchmark.tracking.tensorboard_log import write_tensorboard


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refused(argv: list[str], capsys) -> str:
    """The one error line with which the run command ends before any work (exit code 2)."""
    import run_benchmark

    assert run_benchmark.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# Refused before any work, in one line.


def test_tracking_uri_without_track_mlflow_is_refused(tmp_path: Path, capsys):
    err = _refused(["--tracking-uri", "http://127.0.0.1:5000", "--results-dir", str(tmp_path / "r")], capsys)
    assert "--tracking-uri does nothing without --track mlflow" in err
    assert not (tmp_path / "r").exists()


def test_an_unknown_tracker_is_refused_naming_the_valid_ones(capsys):
    import run_benchmark

    with pytest.raises(SystemExit) as exit_:
        run_benchmark.main(["--track", "wandb"])
    assert exit_.value.code == 2
    assert "invalid choice: 'wandb' (choose from 'mlflow')" in capsys.readouterr().err


def test_an_unreachable_tracking_server_ends_the_run_before_any_work(tmp_path: Path, capsys):
    data = make_kermany(tmp_path / "data", {"train": 2, "val": 1, "test": 1})
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    err = _refused(["--data", str(data), "--weights", "none", "--backbones", "MobileNetV2", "--track", "mlflow",
                    "--tracking-uri", uri, "--results-dir", str(tmp_path / "results"),
                    "--cache-dir", str(tmp_path / "cache")], capsys)  # fmt: skip
    assert f"the tracking server {uri} does not answer" in err and "Connection refused" in err
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("argv", "package"), [(["--track", "mlflow"], "mlflow"), (["--tensorboard", "tb"],
                                               "tensorboard")])  # fmt: skip
def test_a_missing_tracking_package_ends_the_run_in_one_line(tmp_path: Path, capsys, monkeypatch, argv, package):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else found(name, *a))
    monkeypatch.chdir(tmp_path)
    err = _refused([*argv, "--results-dir", str(tmp_path / "results")], capsys)
    assert f"needs the {package} package: pip install 'cxr-bench[track]'" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("inside", ["", "heads", "plots/curves"])
def test_tensorboard_may_not_write_into_the_run_folder_or_its_own_folders(small_run, capsys, inside):
    target = small_run.results / inside
    err = _refused(["--tensorboard", str(target), "--results-dir", str(small_run.base / "elsewhere")], capsys)
    assert err.startswith(f"run_benchmark.py: error: --tensorboard {target}")
    assert "choose another folder" in err


def test_tensorboard_beside_the_run_files_is_fine():
    config = RunConfig(tensorboard="results/tensorboard", results_dir="results").validate()
    assert config.tracking_settings().tensorboard == str(Path("results/tensorboard").resolve())


# Where the run is logged: derived once, from the config.


def test_the_tracking_uri_is_the_option_else_mlflows_variable_else_sqlite_beside_the_results(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "runs" / "results"
    config = RunConfig(track="mlflow", results_dir=str(results))
    assert config.tracking_settings() == TrackingSettings(mlflow_uri=f"sqlite:///{tmp_path / 'runs' / 'mlruns.db'}",
                                                          results_dir=str(results))  # fmt: skip
    assert config.stages().tracking == config.tracking_settings()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert config.tracking_settings().mlflow_uri == "http://tracker:5000"
    given = RunConfig(track="mlflow", tracking_uri="sqlite:///x.db", results_dir=str(results))
    assert given.tracking_settings().mlflow_uri == "sqlite:///x.db"
    assert not RunConfig().tracking_settings().active
    # run.json records where the run was logged
    assert config.validate().tracking_uri == "http://tracker:5000"


def test_parameters_are_cut_to_mlflows_limit_and_keys_to_its_characters():
    assert param_value("a" * 7000) == "a" * 5997 + "..." and len(param_value(list(range(3000)))) == 6000
    assert (param_value(None), param_value(["MobileNetV2", "ResNet50"]), param_value(True), param_value("x")) == (
        "null", '["MobileNetV2", "ResNet50"]', "true", "x")  # fmt: skip
    assert metric_key("test", "MobileNetV2-0.35", "normal_vs_pneumonia", "auc") == (
        "test.MobileNetV2-0.35.normal_vs_pneumonia.auc")  # fmt: skip
    assert metric_key("test", "a:b(c)", "t", "f1") == "test.a_b_c_.t.f1"


# TensorBoard: event files without TensorFlow, read back with TensorBoard's own reader.


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(one.step, one.value) for one in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_curves_equal_the_heads_and_fine_tuned_histories(small_run, tmp_path: Path):
    results = shutil.copytree(small_run.results, tmp_path / "results")
    tuned = results / "finetune" / "MobileNetV2-ft-0123456789"
    tuned.mkdir(parents=True)
    history = {"loss": [0.9, 0.5, 0.25], "val_loss": [1.0, 0.75, 0.8]}
    (tuned / "result.json").write_text(json.dumps({"backbone": "MobileNetV2-ft", "history": history}))
    written = write_tensorboard(RunFolder(results), tmp_path / "tb")
    heads = sorted(path.name for path in (results / "heads").iterdir())
    assert sorted(path.name for path in written) == sorted([*heads, tuned.name]) and heads
    for point_id in heads:
        rows = _rows(results / "heads" / point_id / "history.csv")
        scalars = _scalars(tmp_path / "tb" / "heads" / point_id)
        assert set(scalars) == set(rows[0]) - {"epoch"}
        for name, points in scalars.items():
            expected = [(int(row["epoch"]), float(row[name])) for row in rows]
            assert [step for step, _ in points] == [step for step, _ in expected]
            assert [value for _, value in points] == pytest.approx([value for _, value in expected], rel=1e-6)
    scalars = _scalars(tmp_path / "tb" / "finetune" / tuned.name)
    assert scalars["val_loss"] == [(1, 1.0), (2, 0.75), (3, pytest.approx(0.8))]


def test_tensorboard_is_written_without_tensorflow(small_run, tmp_path: Path):
    # The GPU machines run JAX without TensorFlow: the writer must not need it.
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "from pathlib import Path\nfrom benchmark.run_folder import RunFolder\n"
            "from benchmark.tracking.tensorboard_log import write_tensorboard\n"
            f"print(len(write_tensorboard(RunFolder(Path({str(small_run.results)!r})), Path({str(tmp_path)!r}))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == len(list((small_run.results / "heads").iterdir())) > 0
    assert list(tmp_path.glob("heads/*/events.out.tfevents.*"))


# MLflow: a real server, a real run, read back with MlflowClient.


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> str:
    """A local ``mlflow server`` (SQLite store, artefacts in a temporary folder) for this module; stopped after it,
    also when a test fails."""
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("mlflow is not installed (pip install 'cxr-bench[track]')")
    base = tmp_path_factory.mktemp("mlflow")
    port = _closed_port()
    log = open(base / "server.log", "w")  # the server writes it until the fixture ends
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{base / 'mlruns.db'}", "--artifacts-destination", str(base / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(base / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.mark.slow  # a run of its own, logged to a real server
def test_a_tracked_run_reads_back_from_mlflow_as_its_results_folder(mlflow_server: str, tmp_path: Path):
    from mlflow import MlflowClient

    data = make_kermany(tmp_path / "data", {"train": 12, "val": 2, "test": 6})
    tracking = ("--track", "mlflow", "--tracking-uri", mlflow_server, "--tensorboard", str(tmp_path / "tb"))
    assert run_small_benchmark(data, tmp_path, *tracking, grid=HEAD_AND_PROBE, preset=DRAWN) == 0
    results = tmp_path / "results"
    client = MlflowClient(mlflow_server)
    run_id = mlflow_log.tracked_run(results, mlflow_server)
    parent = client.get_run(run_id)
    config = json.loads((results / "run.json").read_text())["config"]
    assert parent.data.params == {name: param_value(config[name]) for name in config}
    assert set(parent.data.params) == {one.name for one in fields(RunConfig)}
    assert parent.data.tags[mlflow_log.RESULTS_DIR_TAG] == str(results.resolve())
    assert parent.data.tags[mlflow_log.GIT_TAG] == json.loads((results / "run.json").read_text())["git"]
    assert parent.info.status == "FINISHED"

    board = _rows(results / "leaderboard.csv")
    for row in board:
        for metric in ("sensitivity", "specificity", "auc", "f1"):
            key = f"test.{row['backbone']}.{row['task']}.{metric}"
            assert parent.data.metrics[key] == pytest.approx(float(row[metric]), rel=1e-9), key

    grid = _rows(results / "grid.csv")
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == len(grid) == 3
    keras = next(child for child in children if child.data.params["kind"] == "keras")
    row = next(row for row in grid if row["kind"] == "keras")
    assert keras.data.metrics["val_loss"] == pytest.approx(float(row["val_loss"]))
    point_id = keras.data.tags[mlflow_log.POINTS_TAG]
    history = _rows(results / "heads" / point_id / "history.csv")
    logged = client.get_metric_history(keras.info.run_id, "history/val_loss")
    assert sorted((one.step, one.value) for one in logged) == [
        (int(one["epoch"]), pytest.approx(float(one["val_loss"]))) for one in history]  # fmt: skip
    assert len(history) >= 2

    artefacts = {one.path for one in client.list_artifacts(run_id)}
    assert {"leaderboard.md", "report.json", "leaderboard.csv", "grid.csv", "run.json", "predictions.csv",
            "plots"} <= artefacts  # fmt: skip
    plots = {Path(one.path).name for one in client.list_artifacts(run_id, "plots")}
    assert plots == {path.name for path in (results / "plots").iterdir()} and plots
    assert list((tmp_path / "tb" / "heads").iterdir())  # both trackers at once

    # cxr-bench export --track mlflow: the model's folder (file and card) joins the run's artefacts.
    from benchmark.export import cli

    assert cli.main([str(results), "--out", str(tmp_path / "exported"), "--track", "mlflow",
                     "--tracking-uri", mlflow_server]) == 0  # fmt: skip
    (model,) = [path.name for path in (tmp_path / "exported").iterdir()]
    assert {Path(one.path).name for one in client.list_artifacts(run_id, f"exports/{model}")} == {
        "model.keras", "MODEL_CARD.md", "metadata.json"}  # fmt: skip


@pytest.mark.slow  # reads the module's server; cheap once it runs
def test_export_artifacts_join_the_run_a_results_folder_was_logged_as(mlflow_server: str, small_run, tmp_path: Path):
    from mlflow import MlflowClient

    results = shutil.copytree(small_run.results, tmp_path / "results")
    with pytest.raises(ValueError, match="no MLflow run logged from") as error:
        log_export_artifacts(results, [results / "run.json"], mlflow_server)
    assert "\n" not in str(error.value)
    tuned = results / "finetune" / "MobileNetV2-ft-0123456789"
    tuned.mkdir(parents=True)
    (tuned / "result.json").write_text(json.dumps({"history": {"loss": [0.9, 0.5], "val_loss": [1.0, 0.75]}}))
    settings = TrackingSettings(mlflow_uri=mlflow_server, results_dir=str(results))
    older, newer = (mlflow_log.log_run(settings, RunFolder(results)) for _ in range(2))
    client = MlflowClient(mlflow_server)
    tuned_runs = f"tags.mlflow.parentRunId = '{newer}' and tags.`cxr_bench.kind` = 'fine-tuned'"
    child = client.search_runs([client.get_run(newer).info.experiment_id], tuned_runs)
    assert [(one.step, one.value) for one in client.get_metric_history(child[0].info.run_id, "history/val_loss")] == [
        (1, 1.0), (2, 0.75)]  # fmt: skip

    export = tmp_path / "export"
    (export / "model_openvino").mkdir(parents=True)
    (export / "model.onnx").write_bytes(b"onnx bytes")
    (export / "model_openvino" / "model.xml").write_text("<net/>")
    assert log_export_artifacts(results, [export / "model.onnx", export / "model_openvino"], mlflow_server) == newer
    fetched = Path(client.download_artifacts(newer, "exports", str(tmp_path / "back")))
    assert (fetched / "model.onnx").read_bytes() == b"onnx bytes"
    assert (fetched / "model_openvino" / "model.xml").read_text() == "<net/>"
    assert not client.list_artifacts(older, "exports")
    assert client.get_run(newer).data.tags[mlflow_log.RESULTS_DIR_TAG] == str(results.resolve())
