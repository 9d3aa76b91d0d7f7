"""The sweep on a real Dask cluster: two worker processes on this machine, started and stopped here.

The same seeded run through ``--executor dask`` and ``--executor local`` gives
the same leaderboard, number for number; a worker killed while it trains a
group of heads is survived with the same leaderboard and nothing half-written;
two workers extracting one cache entry at once leave it whole. Without Dask
(``pip install "cxr-bench[dask]"``) the cluster tests skip.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_kermany, run_small_benchmark

from benchmark.config import RunConfig
from common import executors
from common.executors import ExecutorError, ExecutorSettings, open_executor
from features.cache import FeatureCache
from features.data.dataset import scan_dataset
from features.extract import extract_elsewhere
from features.settings import ExtractSettings

# An Adam head and two probes: 2 groups of heads (the Keras heads, the probes), so both workers train at once.
GRID = ("--lr", "1e-3", "--dropout", "0.2", "--l2", "0", "--probe-l2", "0.1", "1")
# Fine-tuning too (one task per selected head); --head-workers 2: the local run trains heads in its
# single-threaded worker pool, the cluster run in single-threaded task processes.
PRESET = ("--backbones", "MobileNetV2", "--image-size", "32", "--epochs", "3", "--patience", "2",
          "--head-workers", "2", "--finetune", "--finetune-epochs", "1", "--finetune-layers", "5")  # fmt: skip
# What may differ between the two runs: where they ran and where they wrote.
WHERE = ["config_executor", "config_cluster", "config_results_dir", "config_cache_dir"]


@pytest.fixture(scope="module")
def cluster():
    """A local Dask cluster of 2 single-threaded worker processes, closed at the end of the module."""
    distributed = pytest.importorskip("distributed", reason='the dask extra: pip install "cxr-bench[dask]"')
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        with distributed.Client(c) as client:
            yield c, client


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, Path]:
    """The data, and the run with the local executor (its results in ``base/results``)."""
    base = tmp_path_factory.mktemp("local_executor")
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    assert run_small_benchmark(root, base, grid=GRID, preset=PRESET) == 0
    return root, base


def _cluster_run(root: Path, out: Path, address: str) -> int:
    return run_small_benchmark(root, out, "--executor", "dask", "--cluster", address, grid=GRID, preset=PRESET)


def _assert_same_results(local: Path, cluster: Path) -> None:
    """The leaderboard, predictions and grid of two runs are equal, exactly, but for where they ran."""
    boards = [pd.read_csv(folder / "leaderboard.csv") for folder in (local, cluster)]
    assert set(boards[0]["backbone"]) - {"ensemble"} == {"MobileNetV2", "MobileNetV2-logreg", "MobileNetV2-ft"}
    assert boards[1]["config_executor"].eq("dask").all() and boards[0]["config_executor"].eq("local").all()
    pd.testing.assert_frame_equal(*(board.drop(columns=WHERE) for board in boards), check_exact=True)
    for name in ("predictions.csv", "grid.csv"):
        tables = [pd.read_csv(folder / name) for folder in (local, cluster)]
        # Grid points are listed as they finish, which on a cluster is any order.
        keys = [c for c in ("head_id", "backbone", "image_size", "kind", "lr", "dropout", "l2") if c in tables[0]]
        tables = [t.sort_values(keys, kind="stable").reset_index(drop=True) for t in tables]
        pd.testing.assert_frame_equal(*tables, check_exact=True)


def _nothing_half_written(*folders: Path) -> None:
    """No temp file of an atomic write is left, and every grid point's record reads as finished."""
    for folder in folders:
        assert not [p for p in folder.rglob("*") if ".tmp" in p.name], folder
    points = list((folders[0] / "heads").glob("*/point.json"))
    assert len(points) == 3
    assert all(json.loads(p.read_text())["status"] == "done" for p in points)


@pytest.mark.slow
def test_a_sweep_on_the_cluster_equals_the_local_run(cluster, local_run, tmp_path: Path, capsys):
    local_cluster, client = cluster
    client.wait_for_workers(2, timeout=60)
    root, local = local_run
    assert _cluster_run(root, tmp_path, local_cluster.scheduler_address) == 0
    out = capsys.readouterr().out
    assert "executor: dask at tcp://" in out and "2 workers" in out
    assert "training 2 groups of heads as dask tasks, each in a single-threaded process of its own" in out
    _assert_same_results(local / "results", tmp_path / "results")
    run_info = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run_info["config"]["executor"] == "dask" and run_info["forward_passes"] > 0


def _kill_a_worker_training_heads(client, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first worker seen running a group of heads; its pid goes into ``killed``."""
    while not stop.is_set():
        for address, keys in client.processing().items():
            if any(str(key).startswith("_train_cached_group") for key in keys):
                pid = client.run(os.getpid, workers=[address])[address]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


def _orphans_of(pid: int) -> list[str]:
    """Task processes (``python -m common.isolated PID``) still alive that ``pid`` started."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"common.isolated" in words and str(pid).encode() in words:
            found.append(cmdline.parent.name)
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_task_is_survived(cluster, local_run, tmp_path: Path):
    local_cluster, client = cluster
    client.wait_for_workers(2, timeout=60)
    root, local = local_run
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_a_worker_training_heads, args=(client, killed, stop), daemon=True)
    killer.start()
    try:
        code = _cluster_run(root, tmp_path, local_cluster.scheduler_address)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen training heads"
    assert code == 0
    # Dask ran the lost task again on a live worker: the same numbers, every file whole.
    _assert_same_results(local / "results", tmp_path / "results")
    _nothing_half_written(tmp_path / "results", tmp_path / "cache")
    # The killed worker's task process saw its parent go and ended too.
    deadline = time.monotonic() + 10
    while _orphans_of(killed[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _orphans_of(killed[0]) == []
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it


def _extract_when_both_are_in(settings: ExtractSettings, dataset, arrived: str, total: int):
    """A task that waits until ``total`` tasks have reached it (a file each in ``arrived``), then extracts."""
    folder = Path(arrived)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(folder.iterdir())) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.time()
    one = extract_elsewhere(settings, dataset, "MobileNetV2", 32)
    return one.stats, started, time.time()


@pytest.mark.slow
def test_two_workers_writing_one_cache_entry_at_once_leave_it_whole(cluster, tmp_path: Path):
    _, client = cluster
    root = make_kermany(tmp_path / "data", {"train": 12, "val": 2, "test": 6})
    dataset = scan_dataset(root)
    settings = ExtractSettings(cache_dir=str(tmp_path / "cache"), batch_size=4, shard_size=8, progress=False)
    (tmp_path / "arrived").mkdir()
    client.wait_for_workers(2, timeout=60)
    executor = executors.DaskExecutor(client)
    workers = list(client.scheduler_info()["workers"])
    assert len(workers) == 2
    # One task per worker, the same cache key, both released at the same moment.
    futures = [client.submit(executors.call_in_fresh_process, _extract_when_both_are_in, settings, dataset,
                             str(tmp_path / "arrived"), 2, workers=[address], pure=False)
               for address in workers]  # fmt: skip
    (first, start_a, end_a), (second, start_b, end_b) = (future.result() for future in futures)
    assert start_a < end_b and start_b < end_a, "the two extractions did not overlap"
    # The lock on the entry: one extracted, the other waited and read the whole entry it wrote.
    assert sorted([first.from_cache, second.from_cache]) == [False, True]
    assert first.key == second.key
    features = FeatureCache(settings.cache_dir).load("MobileNetV2", first.key)
    assert features is not None and features.shape == (len(dataset.records), 1280)
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name or p.name == "shards"]
    assert executor.gpu_workers == 0  # no worker was started with --resources GPU=1: plain tasks


def test_an_unreachable_scheduler_fails_in_one_line(kermany_root: Path, tmp_path: Path, monkeypatch, capsys):
    pytest.importorskip("distributed", reason='the dask extra: pip install "cxr-bench[dask]"')
    monkeypatch.setattr(executors, "CONNECT_SECONDS", 2)
    code = run_small_benchmark(kermany_root, tmp_path, "--executor", "dask", "--cluster", "tcp://127.0.0.1:9")
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("run_benchmark.py: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "cache" / "MobileNetV2").exists()  # it failed before any work


def test_without_cluster_dask_scheduler_address_is_used(monkeypatch):
    dask = pytest.importorskip("dask", reason='the dask extra: pip install "cxr-bench[dask]"')
    monkeypatch.setattr(executors, "CONNECT_SECONDS", 2)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    dask.config.refresh()  # Dask reads its environment variables when imported
    try:
        with pytest.raises(ExecutorError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
            with open_executor(ExecutorSettings(kind="dask")):
                pass
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


def test_without_dask_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)  # import dask now raises ImportError
    with pytest.raises(ExecutorError, match=r'pip install "cxr-bench\[dask\]"'):
        with open_executor(ExecutorSettings(kind="dask")):
            pass


def test_the_local_executor_needs_no_engine(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    with open_executor(ExecutorSettings()) as executor:
        assert not executor.distributed
        assert executor.map(pow, [(2, 3), (3, 2)]) == [8, 9]


def test_executor_settings_and_their_checks(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = RunConfig().stages()
    assert local.executor == ExecutorSettings() and local.extract.cache_dir == ".cache/features"
    # On a cluster every folder a worker opens is absolute: its working folder is not the driver's.
    stages = RunConfig(executor="dask", cluster="tcp://h:8786", head_workers=3).stages()
    assert stages.executor == ExecutorSettings(kind="dask", cluster="tcp://h:8786", local_workers=3)
    assert stages.extract.cache_dir == str(tmp_path / ".cache" / "features")
    assert stages.sweep.results_dir == str(tmp_path / "results")
    assert stages.sweep.cache_dir == stages.extract.cache_dir
    for config, message in ((RunConfig(executor="ray"), "--executor must be one of local, dask"),
                            (RunConfig(cluster="tcp://h:8786"), "needs --executor dask")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            config.validate()
