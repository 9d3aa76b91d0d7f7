"""Repeated, patient-grouped cross-validation of the heads: does a ranking of backbones hold across patients?

One validation split and one test split give one number per backbone; whether
backbone A beats B may then be the luck of which patients landed where. Here the
train + validation pool (the official test split never enters) is cut ``folds``
times into class-stratified folds of whole patients (scikit-learn's
``StratifiedGroupKFold``), ``repeats`` times with other seeds. In each fold the
run's whole head grid is trained and selected exactly as the sweep does it
(``run_sweep``: early stopping and ``select_by`` on an inner validation carve of
the fold's training part), and the selected head of each model is scored on the
held-out fold and, untouched by any choice, on the official test split.

A fold is the sweep run on a re-split copy of the dataset, so it costs head
training only (the run's cached features), trains on a cluster as the sweep
does, and resumes: its points live in ``RESULTS/cv/r{repeat}-f{fold}/heads/``.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from benchmark.evaluation.metrics import binary_metrics, binary_tasks, task_decision
from benchmark.records import CrossValResult, HeadResult
from benchmark.run_folder import RunFolder
from benchmark.settings import CrossValSettings, SweepSettings
from benchmark.training.sweep import predict_external, run_sweep
from common.executors import Executor
from features.data.dataset import Dataset, patient_groups
from features.extract import BackboneFeatures

# In a fold's copy of the dataset the official test images keep their rows (features stay aligned with the
# records, as a cluster worker reading the cache needs) but belong to no split a fold trains, selects or scores on.
SET_ASIDE = "set-aside"
# The selected heads' probabilities on the official test split, beside their fold's "val" and "test" (held out).
OFFICIAL_TEST = "official_test"
HELD_OUT_METRICS = ("auc", "sensitivity", "specificity", "accuracy", "f1")


def pool_indices(dataset: Dataset) -> np.ndarray:
    """Positions in ``dataset.records`` of the train + validation pool the folds are cut from."""
    return np.flatnonzero([record.split in ("train", "val") for record in dataset.records])


def check_folds(settings: CrossValSettings, dataset: Dataset) -> None:
    """Raise ``ValueError`` in one line when some class has fewer patients in the pool than ``settings.folds``."""
    pool = [dataset.records[i] for i in pool_indices(dataset)]
    patients: dict[str, set[str]] = defaultdict(set)
    for record, group in zip(pool, patient_groups(pool, dataset.digests), strict=True):
        for name in record.label.counted_as:
            patients[name].add(group)
    fewest, count = min(((name, len(patients[name])) for name in dataset.classes), key=lambda item: item[1])
    if count < settings.folds:
        advice = f"use --cv {count} or fewer" if count >= 2 else "cross-validation needs at least 2"
        raise ValueError(f"--cv {settings.folds} needs at least {settings.folds} patients of every class in train + "
                         f"validation; {fewest} has {count} ({advice})")  # fmt: skip


def _stratified_group_folds(n_splits: int, seed: int, y: np.ndarray, groups: np.ndarray) -> list:
    """``StratifiedGroupKFold`` (shuffled, seeded) folds of positions 0..len(y)-1, as (train, held-out) pairs."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Multi-label strata (label strings) are often rarer than the folds: they are spread as well as they can be.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(np.zeros(len(y)), y, groups))


def _inner_validation(settings: CrossValSettings, seed: int, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Positions (within ``y``) of a stratified, patient-grouped carve of about ``settings.val_fraction``."""
    n_splits = min(max(2, round(1 / settings.val_fraction)), len(set(groups)))
    return _stratified_group_folds(n_splits, seed, y, groups)[0][1]


def fold_datasets(settings: CrossValSettings, dataset: Dataset) -> Iterator[tuple[int, int, Dataset]]:
    """Every ``(repeat, fold, copy of dataset)``, counted from 1: the copy's train and val splits are the fold's
    training part and its inner validation carve, its test split the held-out fold; the official test set aside.

    Repeat ``r`` draws its folds with seed ``settings.seed + r - 1``.
    """
    pool = pool_indices(dataset)
    records = [dataset.records[i] for i in pool]
    y = np.array([record.label.text for record in records])  # multi-label: the label's text, findings and all
    groups = np.array(patient_groups(records, dataset.digests))
    for repeat in range(1, settings.repeats + 1):
        seed = settings.seed + repeat - 1
        for fold, (train, held_out) in enumerate(_stratified_group_folds(settings.folds, seed, y, groups), 1):
            val = train[_inner_validation(settings, seed, y[train], groups[train])]
            splits = np.full(len(dataset.records), SET_ASIDE, dtype=object)
            for positions, name in ((train, "train"), (val, "val"), (held_out, "test")):
                splits[pool[positions]] = name
            copy = [replace(record, split=str(split)) for record, split in zip(dataset.records, splits, strict=True)]
            yield repeat, fold, replace(dataset, records=copy)


def run_crossval(
    settings: CrossValSettings,
    sweep_settings: SweepSettings,
    dataset: Dataset,
    extracted: list[BackboneFeatures],
    executor: Executor | None = None,
) -> CrossValResult:
    """Run (or resume) every repeat and fold: the sweep's grid trained and selected per fold, its winners scored.

    ``extracted`` are the run's features (rows aligned with ``dataset.records``); fold heads go to
    ``sweep_settings.results_dir/cv/r{repeat}-f{fold}/heads/``. Prints one line per fold.
    """
    started = time.perf_counter()
    test = dataset.indices("test")
    test_features = {(one.backbone, one.image_size): np.asarray(one.features[test]) for one in extracted}
    rows, trained = [], 0
    for repeat, fold, fold_data in fold_datasets(settings, dataset):
        fold_started = time.perf_counter()
        folder = RunFolder(sweep_settings.results_dir).cv_fold(repeat, fold)
        sweep = run_sweep(replace(sweep_settings, results_dir=str(folder.root)), fold_data, extracted, executor)
        predict_external(sweep.winners, test_features, folder.heads, split=OFFICIAL_TEST)
        seconds = time.perf_counter() - fold_started
        rows += fold_rows(repeat, fold, sweep.winners, fold_data, dataset.labels("test"), seconds)
        trained += sweep.trained
        failed = f" ({len(sweep.failed)} grid points failed, trained again by a rerun)" if sweep.failed else ""
        print(f"cv repeat {repeat}/{settings.repeats} fold {fold}/{settings.folds}: {sweep.trained} heads trained"
              f"{failed}, {time.perf_counter() - started:.0f} s so far")  # fmt: skip
    return CrossValResult(settings.folds, settings.repeats, rows, time.perf_counter() - started, trained)


def fold_rows(
    repeat: int, fold: int, winners: list[HeadResult], fold_data: Dataset, test_labels: np.ndarray, seconds: float
) -> list[dict]:
    """One row per model and task: its selected grid point, held-out metrics and official test AUC.

    A grid point trained with several seeds selects one head per seed: their metrics are averaged.
    """
    by_model: dict[str, list[HeadResult]] = defaultdict(list)
    for winner in winners:
        by_model[winner.backbone].append(winner)
    labels = {"test": fold_data.labels("test"), OFFICIAL_TEST: test_labels}
    rows = []
    for name, heads in by_model.items():
        point = heads[0].settings
        for task, positives in binary_tasks(fold_data.classes, fold_data.multi_label).items():
            scores = [_task_scores(head, labels, fold_data.classes, positives) for head in heads]
            mean = {key: float(np.mean([one[key] for one in scores])) for key in scores[0]}
            rows.append({"repeat": repeat, "fold": fold, "backbone": name, "image_size": heads[0].image_size,
                         "task": task, "kind": point.kind, "lr": point.lr, "dropout": point.dropout, "l2": point.l2,
                         "lr_schedule": point.lr_schedule, "seeds": len(heads), **mean,
                         "n_heldout": scores[0]["n_heldout"], "seconds": seconds})  # fmt: skip
    return rows


def _task_scores(
    head: HeadResult, labels: dict[str, np.ndarray], classes: tuple[str, ...], positives: tuple[str, ...]
) -> dict[str, float]:
    """One head's held-out metrics of one task (argmax decision, or 0.5 per finding) and its official test AUC.

    ``labels`` holds the held-out fold's (``test``) and the official test split's (``OFFICIAL_TEST``).
    """
    held_out, test = (
        binary_metrics(*task_decision(labels[split], head.probabilities[split], classes, positives))
        for split in ("test", OFFICIAL_TEST)
    )
    scored = held_out["tp"] + held_out["fn"] + held_out["fp"] + held_out["tn"]
    return {**{name: held_out[name] for name in HELD_OUT_METRICS}, "test_auc": test["auc"], "n_heldout": scored}

