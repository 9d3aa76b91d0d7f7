"""Failures that must not stick or lie: failed points are retried, an all-failed sweep ends clearly,
one class is refused, outputs are readable by others."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_kermany, run_small_benchmark


@pytest.mark.slow
def test_failed_points_are_retried_and_an_all_failed_sweep_ends_clearly(
    kermany_root: Path, tmp_path: Path, monkeypatch, capsys
):
    from benchmark.training import sweep

    def broken(*args, **kwargs):
        raise MemoryError("simulated out-of-memory in a head worker")

    monkeypatch.setattr(sweep, "train_heads", broken)
    assert run_small_benchmark(kermany_root, tmp_path) == 1
    err = capsys.readouterr().err
    assert "every grid point failed (1)" in err and "simulated out-of-memory" in err
    assert "Traceback" not in err
    (record,) = (tmp_path / "results" / "heads").glob("*/point.json")
    assert json.loads(record.read_text())["status"] == "failed"
    assert list((tmp_path / "cache").glob("MobileNetV2/*/features.npy"))  # finished work is kept
    monkeypatch.undo()
    assert run_small_benchmark(kermany_root, tmp_path) == 0  # the failure was not cached as a result
    run_info = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run_info["heads_trained_this_run"] == 1 and run_info["forward_passes"] == 0
    assert json.loads(record.read_text())["status"] == "done"


def test_a_dataset_with_one_class_stops_before_extraction(tmp_path: Path, capsys):
    root = make_kermany(tmp_path / "data", {"train": 6, "val": 2, "test": 3})
    for split in ("train", "val", "test"):
        for path in (root / split / "PNEUMONIA").iterdir():
            path.unlink()
        (root / split / "PNEUMONIA").rmdir()
    assert run_small_benchmark(root, tmp_path) == 2
    assert "one class, 'normal'" in capsys.readouterr().err.lower()
    assert not (tmp_path / "cache" / "MobileNetV2").exists()


def test_outputs_respect_the_umask(small_run):
    results = small_run.results  # written under umask 022
    written = [results / name for name in ("leaderboard.csv", "leaderboard.md", "grid.csv", "predictions.csv",
                                           "run.json", "skipped.csv")]  # fmt: skip
    written += list(results.glob("heads/*/point.json")) + list(small_run.cache.glob("MobileNetV2/*/*.json"))
    assert len(written) >= 8
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_strict_umask_is_kept(tmp_path: Path):
    from common.files import atomic_write_text

    previous = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


@pytest.mark.slow  # retrains the damaged point
def test_a_truncated_checkpoint_is_detected_and_the_point_retrained(small_run, tmp_path: Path):
    import pandas as pd

    small_run.copy_to(tmp_path)
    first = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    (checkpoint,) = (tmp_path / "results" / "heads").glob("*/best.keras")
    checkpoint.write_bytes(checkpoint.read_bytes()[:-200])  # point.json stays intact
    assert small_run.rerun(tmp_path) == 0
    assert json.loads((tmp_path / "results" / "run.json").read_text())["heads_trained_this_run"] == 1
    second = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    pd.testing.assert_frame_equal(first[["task", "auc", "sensitivity"]], second[["task", "auc", "sensitivity"]])
    assert [p.name for p in checkpoint.parent.iterdir() if p.suffix == ".keras"] == ["best.keras"]


REPO = Path(__file__).resolve().parent.parent


def _session_processes(session: int) -> list[int]:
    """Process ids still alive in ``session`` (the run and any worker it started), zombies excluded."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def _start_busy_sweep(root: Path, out: Path) -> subprocess.Popen:
    """A sweep whose head groups keep 2 worker processes busy for a while, in a session of its own."""
    command = [
        sys.executable, str(REPO / "run_benchmark.py"), "--data", str(root), "--weights", "none",
        "--backbones", "MobileNetV2", "--image-size", "32", "--seeds", "6", "--epochs", "400", "--patience", "400",
        "--head-workers", "2", "--no-progress", "--no-probe", "--results-dir", str(out / "results"),
        "--cache-dir", str(out / "cache"), "--runtime", "keras",  # as the other pipeline tests (conftest's SMALL)
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    for line in process.stdout:
        if "worker processes" in line:
            break
    deadline = time.monotonic() + 120
    while len(_session_processes(process.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # the main process and its two workers (plus the spawn helper)
    time.sleep(3)  # workers are training
    assert process.poll() is None, "the sweep ended before it could be interrupted"
    return process


def _wait_until_gone(session: int, seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + seconds
    while _session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _session_processes(session)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_prints_one_line_exits_130_and_stops_the_workers(kermany_root: Path, tmp_path: Path):
    process = _start_busy_sweep(kermany_root, tmp_path)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err, err[-2000:]
    # Only our line: TensorFlow's start-up lines and the workers' output went to the library log (common.console).
    assert err.splitlines() == [
        "run_benchmark.py: error: interrupted. Finished features, extraction shards and grid points are kept: "
        "run the same command again to resume."
    ]
    assert _wait_until_gone(process.pid) == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_exit_when_the_main_process_is_killed(kermany_root: Path, tmp_path: Path):
    process = _start_busy_sweep(kermany_root, tmp_path)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _wait_until_gone(process.pid) == []


def test_an_unwritable_results_folder_ends_with_one_line(kermany_root: Path, tmp_path: Path, capsys):
    (tmp_path / "results").write_text("a file where the results folder should be")
    assert run_small_benchmark(kermany_root, tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("run_benchmark.py: error: cannot write") and "--results-dir" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow  # a run of its own
def test_a_full_disk_while_writing_the_reports_ends_with_one_line(small_run, tmp_path: Path, monkeypatch, capsys):
    import errno

    from benchmark.reporting import report

    write = report.atomic_write_text

    def full_at_the_leaderboard(path, text):
        if path.name == "leaderboard.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, text)

    monkeypatch.setattr(report, "atomic_write_text", full_at_the_leaderboard)
    shutil.copytree(small_run.cache, tmp_path / "cache")  # the features are ready: the head trains, the reports fail
    assert small_run.rerun(tmp_path) == 1
    assert "error: the disk is full" in capsys.readouterr().err
    assert list((tmp_path / "results" / "heads").glob("*/point.json"))  # finished grid points are kept


@pytest.mark.slow
@pytest.mark.parametrize(
    ("looks", "tasks"),
    [
        ({"COVID-19": "viral", "NORMAL": "normal"}, {"normal_vs_covid-19"}),
        ({"COVID-19": "viral", "NORMAL": "normal", "normal lung": "normal", "Pneumonia (bacterial)": "bacterial"},
         {"normal_vs_disease", "COVID-19_vs_rest", "normal lung_vs_rest"}),
    ],
)  # fmt: skip
def test_class_names_that_are_not_identifiers_work_through_every_output(tmp_path: Path, looks: dict, tasks: set):
    import pandas as pd
    from conftest import write_image

    from benchmark.evaluation.verify import verify

    rng = np.random.default_rng(0)
    for name, look in looks.items():
        for i in range(12):
            write_image(tmp_path / "data" / name / f"img-{i:03d}.png", look, rng)
    assert run_small_benchmark(tmp_path / "data", tmp_path) == 0
    results = tmp_path / "results"
    board = pd.read_csv(results / "leaderboard.csv")
    assert tasks <= set(board["task"])
    assert verify(results) == []
    markdown = (results / "leaderboard.md").read_text()
    assert all(task in markdown for task in tasks) and "val loss" in markdown
    grid = pd.read_csv(results / "grid.csv")
    assert all(grid[f"val_{task}_auc"].notna().all() for task in tasks)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_second_run_on_the_same_folders_is_refused_naming_the_first(kermany_root: Path, tmp_path: Path,
                                                                       capsys):  # fmt: skip
    import run_benchmark

    first = _start_busy_sweep(kermany_root, tmp_path)
    try:
        # The second run in this process: another process than the first's, which is all the lock knows of.
        second = run_benchmark.main(
            ["--data", str(kermany_root), "--weights", "none", "--backbones", "MobileNetV2", "--image-size", "32",
             "--no-progress", "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "other-cache")]
        )  # fmt: skip
        assert second == 1
        assert f"in use by another cxr-bench run (process {first.pid} on" in capsys.readouterr().err
        assert first.poll() is None  # the first run goes on untouched
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert _wait_until_gone(first.pid) == []
    # The kernel released the dead run's lock: the same command now runs.
    assert run_small_benchmark(kermany_root, tmp_path) == 0


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_left_out_by_audit_run_and_predict(kermany_root: Path, tmp_path: Path,
                                                                          capsys):  # fmt: skip
    import pandas as pd

    from benchmark import predict
    from features.data import audit

    source = sorted((kermany_root / "train" / "NORMAL").iterdir())[0]
    odd = os.path.join(os.fsencode(kermany_root / "train" / "NORMAL"), b"\xff\xfe.jpeg")
    with open(odd, "wb") as handle:
        handle.write(source.read_bytes())
    assert audit.main([str(kermany_root), "--min-side", "32", "--cache-dir", str(tmp_path / "audit")]) == 0
    assert "not valid UTF-8" in capsys.readouterr().out
    assert run_small_benchmark(kermany_root, tmp_path) == 0
    skipped = pd.read_csv(tmp_path / "results" / "skipped.csv")
    row = skipped[skipped["reason"].str.contains("not valid UTF-8")]
    assert row["path"].tolist() == ["train/NORMAL/\\xff\\xfe.jpeg"]
    capsys.readouterr()
    folder = os.fsdecode(os.path.dirname(odd))
    assert predict.main([str(tmp_path / "results"), folder, "--out", str(tmp_path / "predicted")]) == 0
    out = capsys.readouterr().out
    assert "\\xff\\xfe.jpeg: skipped, file name is not valid UTF-8" in out
    assert len(pd.read_csv(tmp_path / "predicted" / "predictions.csv")) == len(list(Path(folder).iterdir())) - 1


def test_a_bit_flip_in_the_pixel_cache_is_detected_and_rebuilt(kermany_root: Path, tmp_path: Path):
    from features.data.dataset import scan_dataset
    from features.pixels import PIXELS, PixelCache

    paths = [record.path for record in scan_dataset(kermany_root).records][:10]
    cache = PixelCache(tmp_path / "cache")
    reader, _ = cache.build(32, kermany_root, paths, progress=False)
    with reader:
        clean = reader.read(0, 10)
    (pixels,) = (tmp_path / "cache").glob(f"pixels/32px/*/{PIXELS}")
    data = bytearray(pixels.read_bytes())
    data[-100] ^= 0x10  # one bit, same size
    pixels.write_bytes(bytes(data))
    assert cache.open(32, kermany_root, paths) is None  # never read as if whole
    reader, seconds = cache.build(32, kermany_root, paths, progress=False)
    with reader:
        np.testing.assert_array_equal(reader.read(0, 10), clean)
    assert seconds > 0  # decoded again


def test_an_image_size_that_cannot_fit_in_memory_is_refused_with_the_number(kermany_root: Path, tmp_path: Path,
                                                                           capsys):  # fmt: skip
    assert run_small_benchmark(kermany_root, tmp_path, "--image-size", "5000") == 2
    err = capsys.readouterr().err
    assert "MobileNetV2 at 5000 px needs about" in err and "GiB of memory" in err and "--extract-batch-size" in err
    assert not (tmp_path / "cache" / "MobileNetV2").exists()  # refused before any extraction
