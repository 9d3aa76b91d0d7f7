"""Runs the sweep: trains every backbone x image size x head grid point and scores it on validation, resumably.

Features are extracted once per (backbone, image size) and shared by every
head of the grid; heads that differ only in learning rate, dropout and
schedule train together in one model (``benchmark.training.heads.train_heads``).

Each grid point is stored in ``RESULTS/heads/<point_id>/point.json``, written
last and atomically, keyed by its full config: a rerun skips finished points,
and a point that failed is recorded with its error while the sweep goes on.

Selection uses the validation split only: each grid point's score is averaged
over its seeds and the best per backbone is then predicted on the test split,
once, for the report.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from benchmark.evaluation.metrics import evaluate, macro_auc, multiclass_accuracy
from benchmark.records import HeadResult, PointRecord, SweepResult
from benchmark.run_folder import CHECKPOINT, HISTORY, POINT, RunFolder, is_finetuned
from benchmark.settings import GridKey, HeadSettings, SweepSettings
from benchmark.training.heads import (
    TrainedHead,
    load_head,
    read_history,
    train_heads,
)
from benchmark.training.probe import fit_probes
from common.environment import environment
from common.executors import Executor, ExecutorError
from common.files import DamagedFileError, atomic_write_sealed_json, read_sealed_json
from common.isolated import SINGLE_THREADED, exit_when_orphaned
from features.cache import FeatureCache, cache_key
from features.data.dataset import Dataset
from features.extract import BackboneFeatures


class HeadGroup(NamedTuple):
    """Heads of one backbone and size that train together (one Keras model, or the probes), and their features.

    ``by_split`` holds the features in memory for a local run; a cluster task
    gets None and reads the cache entry ``feature_key`` from the shared cache.
    """

    backbone: str
    image_size: int
    weights: str
    heads: list[HeadSettings]
    ids: list[str]
    by_split: dict[str, np.ndarray] | None
    feature_key: str = ""


def point_id(backbone: str, image_size: int, settings: HeadSettings, context: dict) -> str:
    """A readable folder name plus a hash of everything that makes the point."""
    if settings.kind == "logreg":
        readable = f"{backbone}-{image_size}px-logreg-l2{settings.l2:g}-seed{settings.seed}"
    else:
        readable = (
            f"{backbone}-{image_size}px-lr{settings.lr:g}-do{settings.dropout:g}-l2{settings.l2:g}-"
            f"{settings.lr_schedule}-seed{settings.seed}"
        )
    return f"{readable}-{cache_key(dict(context, settings=settings.to_json()))[:10]}"


def split_features(features: np.ndarray, dataset: Dataset) -> dict[str, np.ndarray]:
    """Rows of ``features`` (aligned with ``dataset.records``) per split, in memory."""
    return {name: np.asarray(features[dataset.indices(name)]) for name in ("train", "val", "test")}


class _Progress:
    """Prints 'grid point k of n' with the time left, from the pace of the points trained so far."""

    def __init__(self, total: int):
        self.total, self.done, self.trained, self.started = total, 0, 0, time.perf_counter()

    def advance(self, count: int, trained: bool, label: str) -> None:
        self.done += count
        self.trained += count if trained else 0
        elapsed = time.perf_counter() - self.started
        left = "?"
        if self.trained:
            left = f"{elapsed / self.trained * (self.total - self.done):.0f} s"
        verb = "trained" if trained else "already done"
        print(f"grid point {self.done} of {self.total} ({label}, {verb}); {elapsed:.0f} s so far, about {left} left")


def _read_point(path: Path) -> PointRecord | None:
    """A finished grid point's record, or None if absent or damaged (the point is then trained again).

    The record is sealed with its own SHA-256 and its checkpoint's and history's: a changed byte in any of them
    (which could change the selection or the test scores) is reported in one line, and the point retrained.
    """
    try:
        record = read_sealed_json(path)
    except FileNotFoundError:
        return None
    except DamagedFileError as damage:
        print(f"warning: {damage}; training grid point {path.parent.name} again (its numbers can differ from the "
              "damaged copy's at round-off level: it now trains in another group of heads)")  # fmt: skip
        return None
    try:
        return PointRecord.from_json(record)
    except (KeyError, TypeError, ValueError):
        print(f"warning: {path} is not a grid point's record; training grid point {path.parent.name} again")
        return None


def run_sweep(
    settings: SweepSettings, dataset: Dataset, extracted: list[BackboneFeatures], executor: Executor | None = None
) -> SweepResult:
    """Run (or resume) the whole head grid on each backbone's ``extracted`` features; select and test the winners.

    With a distributed ``executor`` the head groups are its tasks; selection and testing stay here.
    """
    heads_dir = RunFolder(settings.results_dir).heads
    grid = settings.grid
    progress = _Progress(len(extracted) * len(grid))
    # The labels too: a labels CSV (or its --uncertain policy) can change them for the same images.
    split_key = cache_key({split: [[r.path, r.label.text] for r in dataset.split(split)] for split in ("train", "val")})
    points: list[PointRecord] = []
    features_of: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    jobs: list[HeadGroup] = []
    for one in extracted:
        by_split = split_features(one.features, dataset)
        features_of[(one.backbone, one.image_size)] = by_split
        context = {"feature_key": one.stats.key, "splits": split_key, "classes": list(dataset.classes)}
        ids = [point_id(one.backbone, one.image_size, head, context) for head in grid]
        pending: dict[tuple, list[int]] = defaultdict(list)
        for index, pid in enumerate(ids):
            stored = _read_point(heads_dir / pid / POINT)
            # A failure is a record of what happened, not a result: a rerun trains the point again.
            if stored is not None and stored.done:
                points.append(stored)
            else:
                pending[grid[index].shared_part()].append(index)
        finished = len(grid) - sum(map(len, pending.values()))
        if finished:
            progress.advance(finished, False, f"{one.backbone} {one.image_size}px")
        for group in pending.values():
            jobs.append(HeadGroup(one.backbone, one.image_size, one.weights, [grid[i] for i in group],
                                  [ids[i] for i in group], by_split, one.stats.key))  # fmt: skip
    # Time left is estimated from head training alone, which starts now that every feature is extracted.
    progress.started = time.perf_counter()
    for job, records in train_groups(jobs, dataset, heads_dir, settings, executor):
        points.extend(records)
        progress.advance(len(records), True, f"{job.backbone} {job.image_size}px")
    winners = _select_and_test(points, settings.select_by, features_of, dataset, heads_dir)
    return SweepResult(points, winners, progress.trained)


def head_workers(requested: int) -> int:
    """Processes that train heads: ``requested``, or with 0 one per CPU core up to 4."""
    return requested or min(os.cpu_count() or 1, 4)


@contextmanager
def _sigint_ignored():
    """SIGINT ignored in this process for the block (a no-op outside the main thread, where it cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def train_groups(
    jobs: list[HeadGroup], dataset: Dataset, heads_dir: Path, settings: SweepSettings, executor: Executor | None = None
) -> Iterator[tuple[HeadGroup, list[PointRecord]]]:
    """Train every job (a group of heads sharing a model), yielding each job with its point records as it ends.

    A head is a few thousand tiny steps: TensorFlow's per-operation overhead,
    not arithmetic, sets its speed, and one thread per step beats two. So with
    several workers, groups train in parallel in single-threaded child
    processes (spawned, so they start clean of this process's TensorFlow).
    A distributed ``executor`` runs each group as a task, trained as this
    machine would train it (single-threaded, or not with one worker), so the
    numbers are the same.
    """
    workers = min(head_workers(settings.head_workers), len(jobs))
    if executor is not None and executor.distributed:
        yield from _train_on_cluster(jobs, dataset, heads_dir, settings, executor, single_threaded=workers > 1)
        return
    if workers <= 1:
        for job in jobs:
            yield job, _train_group(job, dataset, heads_dir, settings.progress)
        return
    # The children inherit the environment when they are spawned, on submit; and an ignored SIGINT, which a
    # new Python keeps ignored: a Ctrl-C while a child still imports TensorFlow would print its traceback.
    # The parent's KeyboardInterrupt stops them instead (below).
    with environment(**SINGLE_THREADED), _sigint_ignored():
        pool = ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=_worker_setup, initargs=(os.getpid(),)
        )
        futures = {pool.submit(_train_group, job, dataset, heads_dir, False): job for job in jobs}
    # Said once the jobs are in and Ctrl-C is heard again (a Ctrl-C before this line is ignored, see above).
    print(f"training {len(jobs)} groups of heads in {workers} single-threaded worker processes")
    try:
        yield from _as_they_end(futures, as_completed, dataset, heads_dir)
    except BaseException:  # Ctrl-C, or an error here: stop the workers now rather than after their current group
        for process in list(pool._processes.values()):  # no public way to end busy workers before Python 3.14
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _train_on_cluster(
    jobs: list[HeadGroup], dataset: Dataset, heads_dir: Path, settings: SweepSettings, executor: Executor,
    single_threaded: bool,
) -> Iterator[tuple[HeadGroup, list[PointRecord]]]:
    """Each job as one task of ``executor``, its features read by the worker from the shared cache."""
    threads = "single-threaded " if single_threaded else ""
    print(f"training {len(jobs)} groups of heads as {executor.kind} tasks, each in a {threads}process of its own")
    shared = executor.share(dataset)
    cache_dir, heads_dir = str(Path(settings.cache_dir).resolve()), heads_dir.resolve()
    futures = {executor.submit(_train_cached_group, job._replace(by_split=None), cache_dir, shared, heads_dir,
                               single_threaded=single_threaded): job for job in jobs}  # fmt: skip
    try:
        yield from _as_they_end(futures, executor.as_completed, dataset, heads_dir)
    except BaseException:
        executor.cancel(futures)
        raise


def _as_they_end(futures: dict, completed, dataset: Dataset, heads_dir: Path) -> Iterator[tuple[HeadGroup, list]]:
    """Each job with its records as its future ends (``completed`` orders them); a lost task's points failed."""
    for future in completed(futures):
        job = futures[future]
        try:
            records = future.result()
        except Exception as error:  # a worker that died (out of memory, killed): its points are recorded as failed
            records = [
                _record(job.backbone, job.image_size, job.weights, one, pid, error, None, dataset, heads_dir)
                for one, pid in zip(job.heads, job.ids, strict=True)
            ]
        yield job, records


def _worker_setup(parent: int) -> None:
    """In each head worker: leave Ctrl-C to the main process, and exit as soon as the main process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_when_orphaned(parent)


def _train_cached_group(job: HeadGroup, cache_dir: str, dataset: Dataset, heads_dir: Path) -> list[PointRecord]:
    """``_train_group`` on features read from the shared cache entry ``job.feature_key``: a cluster task."""
    features = FeatureCache(cache_dir).load(job.backbone, job.feature_key)
    if features is None:
        raise ExecutorError(f"the {job.backbone} {job.image_size}px features are not whole in {cache_dir} on this "
                            "worker: --cache-dir must be on a filesystem every worker sees")  # fmt: skip
    return _train_group(job._replace(by_split=split_features(features, dataset)), dataset, heads_dir, False)


def _train_group(job: HeadGroup, dataset: Dataset, heads_dir: Path, progress: bool) -> list[PointRecord]:
    """Train heads that can share a model (or fit the probes); fall back to one at a time if the group fails."""
    backbone, size, settings, ids, by_split = job.backbone, job.image_size, job.heads, job.ids, job.by_split
    train = fit_probes
    if settings[0].kind == "keras":
        train = partial(train_heads, progress=progress, description=f"{backbone} {size}px: {len(settings)} heads")
    arguments = (
        by_split["train"],
        dataset.labels("train"),
        by_split["val"],
        dataset.labels("val"),
        len(dataset.classes),
    )
    try:
        trained = train(*arguments, settings, [heads_dir / i for i in ids])
        outcomes = list(zip(settings, ids, trained, strict=True))
    except Exception:
        outcomes = []
        for one, pid in zip(settings, ids, strict=True):
            try:
                outcomes.append((one, pid, train(*arguments, [one], [heads_dir / pid])[0]))
            except Exception as error:  # recorded, and the sweep goes on
                outcomes.append((one, pid, error))
    return [
        _record(backbone, size, job.weights, one, pid, outcome, by_split["val"], dataset, heads_dir)
        for one, pid, outcome in outcomes
    ]


def _record(
    backbone: str,
    size: int,
    weights: str,
    one: HeadSettings,
    pid: str,
    outcome: TrainedHead | Exception,
    val_features: np.ndarray | None,
    dataset: Dataset,
    heads_dir: Path,
) -> PointRecord:
    """The stored result of one grid point: its settings and validation scores, or its error."""
    made = {"point_id": pid, "key": GridKey.for_head(backbone, size, one), "seed": one.seed, "weights": weights,
            "settings": one}  # fmt: skip
    if isinstance(outcome, Exception):
        record = PointRecord(**made, status="failed", error=f"{type(outcome).__name__}: {outcome}")
    elif not math.isfinite(outcome.best_val_loss):
        record = PointRecord(**made, status="failed", error="validation loss was never finite (training diverged)")
    else:
        probabilities = keras.ops.convert_to_numpy(outcome.model(val_features, training=False))
        labels = dataset.labels("val")
        record = PointRecord(
            **made,
            status="done",
            best_epoch=outcome.best_epoch,
            epochs_run=outcome.epochs_run,
            seconds=outcome.seconds,
            val_loss=outcome.best_val_loss,
            val_multiclass_accuracy=multiclass_accuracy(labels, probabilities),
            val=evaluate(labels, probabilities, dataset.classes),
            val_macro_auc=macro_auc(labels, probabilities) if dataset.multi_label else None,
        )
    files = (CHECKPOINT, HISTORY) if record.done else ()
    atomic_write_sealed_json(heads_dir / pid / POINT, record.to_json(), files, default=float)
    return record


def _select_and_test(
    points: list[PointRecord],
    select_by: str,
    features_of: dict[tuple[str, int], dict[str, np.ndarray]],
    dataset: Dataset,
    heads_dir: Path,
) -> list[HeadResult]:
    """Per backbone and head kind, the grid point with the best mean validation score; its heads predicted on test.

    The Adam-trained heads and the logistic-regression probes are selected
    apart, so each backbone reports both: its head and the baseline beside it.
    """
    scores: dict[tuple, list[float]] = defaultdict(list)
    for point in points:
        if point.done:
            scores[point.key].append(point.selection_score(select_by))
    best: dict[str, tuple] = {}
    for key, values in sorted(scores.items(), key=lambda item: str(item[0])):
        mean = float(np.mean(values))
        name = key.model_name
        if name not in best or mean > best[name][0]:
            best[name] = (mean, key)
    winners = []
    for _, key in best.values():
        for point in sorted(points, key=lambda p: p.seed):
            if not point.done or point.key != key:
                continue
            folder = heads_dir / point.point_id
            model = load_head(folder / CHECKPOINT)
            features = features_of[(key.backbone, key.image_size)]
            winners.append(
                HeadResult(
                    backbone=key.model_name,
                    image_size=key.image_size,
                    settings=point.settings,
                    weights=point.weights,
                    head_id=point.point_id,
                    best_epoch=point.best_epoch,
                    epochs_run=point.epochs_run,
                    best_val_loss=point.val_loss,
                    history=read_history(folder / HISTORY),
                    # Validation probabilities pick the operating threshold; test ones are reported.
                    probabilities={
                        split: model.predict(features[split], batch_size=4096, verbose=0) for split in ("val", "test")
                    },
                )
            )
    return winners


def predict_external(
    winners: list[HeadResult],
    features_of: dict[tuple[str, int], np.ndarray],
    heads_dir: Path,
    split: str = "external",
) -> list[HeadResult]:
    """The selected frozen heads predicted, unchanged, on an external test set's (or another split's) features;
    added to their probabilities as ``split``.

    ``features_of`` maps (backbone, image size) to the external features. A fine-tuned head (``-ft``) changed
    its backbone and is not predicted on frozen features; the heads predicted are returned.
    """
    predicted = []
    for winner in winners:
        if is_finetuned(winner.backbone):
            continue
        backbone = winner.backbone.removesuffix(f"-{winner.settings.kind}")
        model = load_head(heads_dir / winner.head_id / CHECKPOINT)
        features = features_of[(backbone, winner.image_size)]
        winner.probabilities[split] = model.predict(features, batch_size=4096, verbose=0)
        predicted.append(winner)
    return predicted
