"""What the trackers log, read from a finished run's results folder through ``benchmark.run_folder``.

The trackers never see the training loop or the executors: they read the files the run wrote
(``grid.csv``, ``heads/<point id>/history.csv`` and ``point.json``, ``finetune/<model id>/result.json``,
``leaderboard.csv``, ``run.json``), so a run logs the same wherever and however it computed.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.evaluation.metrics import METRICS
from benchmark.records import PointRecord
from benchmark.run_folder import GRID_CSV, HISTORY, LEADERBOARD_CSV, POINT, RESULT_FILE, RunFolder
from benchmark.settings import GRID_COLUMNS, GridKey

# grid.csv's columns that say what a grid point is; its other columns are what it scored on validation.
POINT_COLUMNS = (*GRID_COLUMNS, "seeds")
# leaderboard.csv's test numbers per model and task that a tracker logs: the argmax metrics, the calibration error
# and the operating point's (chosen on validation, reported on test).
TEST_COLUMNS = (*METRICS, "ece", "op_test_sensitivity", "op_test_specificity", "op_test_precision")
# A training curve: each column of history.csv (loss, val_loss, accuracy, ...), its values by epoch, epoch 1 first.
Curves = dict[str, list[float]]


@dataclass(frozen=True)
class GridPoint:
    """One row of ``grid.csv``: what the point is, what it scored on validation, and its heads (one per seed)."""

    settings: dict[str, str]  # the grid's columns and the number of seeds
    metrics: dict[str, float]  # its numeric validation columns (val_loss, val_<task>_auc, ..., selection_score)
    notes: dict[str, str] = field(default_factory=dict)  # its non-empty text columns (errors)
    point_ids: tuple[str, ...] = ()  # heads/<point id>/ of each seed, lowest seed first
    seeds: tuple[int, ...] = ()  # the seed of each of point_ids

    @property
    def name(self) -> str:
        """A short name for the point: its first seed's id without the hash (``MobileNetV2-32px-lr0.001-...``)."""
        return self.point_ids[0].rsplit("-", 1)[0] if self.point_ids else "-".join(self.settings.values())


def _number(text: str) -> float | None:
    """``text`` as a number, or None where it is empty or not one."""
    try:
        return float(text)
    except ValueError:
        return None


def _value(text: str) -> float:
    """A curve's cell as a number; NaN where it is empty (an epoch that did not log the column)."""
    number = _number(text)
    return math.nan if number is None else number


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _key(values: dict) -> GridKey:
    """A grid key with its values typed alike, whether read from a CSV row (text) or a point record (JSON)."""
    key = GridKey.of(values)
    return key._replace(image_size=int(key.image_size), lr=float(key.lr), dropout=float(key.dropout),
                        l2=float(key.l2))  # fmt: skip


def _point_ids(folder: RunFolder) -> dict[GridKey, list[tuple[int, str]]]:
    """Every finished head's (seed, id) by its grid key, lowest seed first."""
    found: dict[GridKey, list[tuple[int, str]]] = {}
    for record_file in sorted(folder.heads.glob(f"*/{POINT}")):
        record = PointRecord.from_json(json.loads(record_file.read_text(encoding="utf-8")))
        if record.done:
            found.setdefault(_key(record.key._asdict()), []).append((record.seed, record.point_id))
    return {key: sorted(ids) for key, ids in found.items()}


def grid_points(folder: RunFolder) -> list[GridPoint]:
    """Every row of the run's ``grid.csv``, in its order, with the ids of its heads."""
    ids = _point_ids(folder)
    points = []
    for row in _rows(folder.file(GRID_CSV)):
        rest = {name: value for name, value in row.items() if name not in POINT_COLUMNS}
        metrics = {name: number for name, value in rest.items() if (number := _number(value)) is not None}
        notes = {name: value for name, value in rest.items() if name not in metrics and value}
        heads = ids.get(_key(row), [])
        points.append(GridPoint({name: row[name] for name in POINT_COLUMNS}, metrics, notes,
                                tuple(pid for _, pid in heads), tuple(seed for seed, _ in heads)))  # fmt: skip
    return points


def head_curves(folder: RunFolder, point_id: str) -> tuple[list[int], Curves]:
    """A head's ``history.csv``: its epochs (from 1) and each column's values; empty cells left out as NaN."""
    path = folder.head(point_id) / HISTORY
    if not path.is_file():
        return [], {}
    rows = _rows(path)
    epochs = [int(row["epoch"]) for row in rows]
    columns = [name for name in (rows[0] if rows else {}) if name != "epoch"]
    return epochs, {name: [_value(row[name]) for row in rows] for name in columns}


def finetune_curves(folder: RunFolder) -> dict[str, Curves]:
    """Each fine-tuned model's history (``finetune/<model id>/result.json``; epochs count on across the sizes of
    progressive resizing) by its model id."""
    curves = {}
    for result_file in sorted(folder.finetune.glob(f"*/{RESULT_FILE}")):
        history = json.loads(result_file.read_text(encoding="utf-8")).get("history") or {}
        curves[result_file.parent.name] = {name: [float(v) for v in values] for name, values in history.items()}
    return curves


@dataclass(frozen=True)
class RunHistory:
    """What both trackers log of a run's training, read once: the grid's points, each head's ``(epochs, curves)`` by
    its id, and each fine-tuned model's by its model id (epochs from 1, counting on across progressive resizing)."""

    points: list[GridPoint]
    heads: dict[str, tuple[list[int], Curves]]
    finetuned: dict[str, tuple[list[int], Curves]]


def run_history(folder: RunFolder) -> RunHistory:
    """The run's ``RunHistory``: ``grid.csv``, the point records, every ``history.csv`` and fine-tuning result."""
    points = grid_points(folder)
    heads = {point_id: head_curves(folder, point_id) for point in points for point_id in point.point_ids}
    finetuned = {model_id: (list(range(1, max(map(len, curves.values()), default=0) + 1)), curves)
                 for model_id, curves in finetune_curves(folder).items()}  # fmt: skip
    return RunHistory(points, heads, finetuned)


def leaderboard_metrics(folder: RunFolder) -> dict[tuple[str, str, str], float]:
    """``leaderboard.csv``'s test numbers by (model, task, metric); a model trained with several seeds has a row per
    seed, and its number is their mean."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for row in _rows(folder.file(LEADERBOARD_CSV)):
        for metric in TEST_COLUMNS:
            number = _number(row.get(metric) or "")
            if number is not None:
                values.setdefault((row["backbone"], row["task"], metric), []).append(number)
    return {key: sum(numbers) / len(numbers) for key, numbers in values.items()}

