"""The files of a results folder as verify reads them: each parsed, and its values checked to be of the kind a run
writes, before any number is recomputed from them.

A missing, cut-short, unparsable or damaged file is one ``VerifyError`` line naming the file (and the line or the
key) rather than a traceback halfway through a check; ``reading`` turns what a damaged value raises deeper in a
check into the same one line. verify.py imports this module; this module imports nothing of verify's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.evaluation.subgroups import SUBGROUP_PREFIX
from benchmark.reporting.document import REPORT_VERSION
from benchmark.run_folder import RunInfo
from features.data.records import Label


class VerifyError(Exception):
    """A results folder verify cannot read: one line for the user instead of a traceback."""


# What a value the run never writes raises inside a check (a missing key or column, text where a number belongs).
DAMAGE = (KeyError, IndexError, TypeError, ValueError, AttributeError)


@contextmanager
def reading(*paths: Path) -> Iterator[None]:
    """Checks on ``paths``: a value in them that a check cannot use becomes one ``VerifyError`` line naming them.

    The line says so when the files may be intact: then it is verify's own bug, and ``--traceback`` shows where.
    """
    try:
        yield
    except DAMAGE as error:
        names = paths[0].name if len(paths) == 1 else "one of " + ", ".join(path.name for path in paths)
        reason = (str(error).strip() or "no detail").splitlines()[0]
        raise VerifyError(f"{paths[0].parent}: {names} holds a value verify cannot use ({type(error).__name__}: "
                          f"{reason}); damaged or edited? (if the files are intact, this is a bug in verify: "
                          "--traceback shows where)") from error  # fmt: skip
    except OSError as error:
        raise VerifyError(f"cannot read {error.filename or paths[0]}: {error.strerror or error}") from error


# ---- tables


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def read_table(path: Path, required: tuple[str, ...], **options) -> pd.DataFrame:
    """``path`` read by pandas; ``VerifyError`` if it is missing, cut short, unreadable or lacks a required column."""
    if not path.is_file():
        raise VerifyError(f"{path.parent} has no {path.name}: not the results folder of a finished run (interrupted? "
                          "run the same command again to finish it)")  # fmt: skip
    # pandas fills a cut-off last line with NaN rather than failing; every file the run writes ends its last line.
    if path.stat().st_size and not _ends_with_newline(path):
        raise VerifyError(f"{path} ends in the middle of a line: truncated (copy it again, or rerun)")
    try:
        frame = pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        reason = (str(error).strip() or "empty").splitlines()[0]
        raise VerifyError(f"{path} cannot be read as a table: {reason}") from None
    missing = [name for name in required if name not in frame]
    if missing:
        raise VerifyError(f"{path} lacks the column(s) {', '.join(missing)}")
    return frame


def _read_text(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Every cell as the text written (an empty cell is ""), so that a class named "1" or "NA" stays a name."""
    return read_table(path, required, dtype=str, keep_default_na=False)


def as_numbers(frame: pd.DataFrame, path: Path, columns, missing_ok: bool) -> pd.DataFrame:
    """``frame`` with ``columns`` (those it has) as floats; ``VerifyError`` naming the first line holding text, or
    an empty cell unless ``missing_ok``."""
    for column in (c for c in columns if c in frame):
        values = pd.to_numeric(frame[column], errors="coerce")
        blank = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        bad = (values.isna() & ~blank) if missing_ok else values.isna()
        if bad.any():
            position = int(np.flatnonzero(bad.to_numpy())[0])
            value = "empty" if blank.iloc[position] else repr(frame[column].iloc[position])
            raise VerifyError(f"{path} line {position + 2}: {column} is {value}, not a number")
        frame[column] = values.astype(np.float64)
    return frame


def _no_blank(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    """``VerifyError`` naming the first line where one of ``columns`` is empty."""
    for column in columns:
        blank = (frame[column].str.strip() == "").to_numpy()
        if blank.any():
            raise VerifyError(f"{path} line {int(np.flatnonzero(blank)[0]) + 2}: {column} is empty")


def _has_rows(frame: pd.DataFrame, path: Path) -> None:
    # A run that writes a table at all writes it with rows; only a header is a file cut short.
    if frame.empty:
        raise VerifyError(f"{path} holds no rows, only its header: cut short (copy it again, or rerun)")


def _first_line(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0]) + 2


# ---- leaderboard.csv

LEADERBOARD_COLUMNS = ("backbone", "seed", "head_id", "task", "positive", "n_test")
# The columns verify recomputes, which every run writes; the op_test_ ones with the operating threshold.
RECOMPUTED = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "tp", "fn", "fp", "tn", "ece",
              "multiclass_accuracy")  # fmt: skip
OPERATING = tuple(f"op_test_{name}" for name in ("sensitivity", "specificity", "precision", "tp", "fn", "fp", "tn"))
# The grid point a head was trained at, as the leaderboard, predictions.csv and grid.csv spell it.
GRID_KEY = ("backbone", "image_size", "kind", "lr", "dropout", "l2", "lr_schedule")
# The leaderboard's numbers (besides those named by the prefixes and suffixes below): any may be NaN (an undefined
# ratio), none may be text.
LEADERBOARD_NUMBERS = ("seed", "n_test", "accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "tp",
                       "fn", "fp", "tn", "ece", "multiclass_accuracy", "macro_auc", "image_size", "lr", "dropout",
                       "l2", "best_epoch", "epochs_run", "best_val_loss", "config_cv")  # fmt: skip
NUMBER_PREFIXES, NUMBER_SUFFIXES = ("op_", "val_"), ("_ci_low", "_ci_high")
EVAL_SETS = ("internal", "external")


def load_leaderboard_text(path: Path) -> pd.DataFrame:
    """leaderboard.csv as written (every cell text), with a row at least and its names filled in."""
    frame = _read_text(path, (*LEADERBOARD_COLUMNS, *RECOMPUTED))
    missing = [name for name in OPERATING if "op_threshold" in frame and name not in frame]
    if missing:
        raise VerifyError(f"{path} lacks the column(s) {', '.join(missing)}")
    _has_rows(frame, path)
    _no_blank(frame, path, ("head_id", "task", "positive", "backbone"))
    if "eval_set" in frame and not frame["eval_set"].isin(EVAL_SETS).all():
        line = _first_line(~frame["eval_set"].isin(EVAL_SETS).to_numpy())
        raise VerifyError(f"{path} line {line}: eval_set is {frame['eval_set'].iloc[line - 2]!r}, not internal or "
                          "external")  # fmt: skip
    return frame


def leaderboard_numbers(text: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The leaderboard with its numbers as floats; ``VerifyError`` naming a line where one is text."""
    numbers = [c for c in text if c in LEADERBOARD_NUMBERS or c.startswith(NUMBER_PREFIXES)
               or c.endswith(NUMBER_SUFFIXES)]  # fmt: skip
    frame = as_numbers(text.copy(), path, numbers, missing_ok=True)
    return as_numbers(frame, path, ("seed", "n_test"), missing_ok=False)


# ---- predictions.csv

PREDICTION_COLUMNS = ("backbone", "seed", "head_id", "split", "path", "label")
# Every column a run's predictions.csv has ever held, beside the p_<class> and subgroup_<attribute> ones: another is
# a damaged header.
PREDICTION_KNOWN = (*PREDICTION_COLUMNS, *GRID_KEY, "predicted")
SPLITS = ("train", "val", "test", "external")
# A single-label row's probabilities are a float32 softmax: they sum to 1 within a few float32 steps.
SUM_TOLERANCE = 1e-5


def _not_a_run_file(frame: pd.DataFrame, path: Path) -> None:
    """``VerifyError`` for the predictions.csv that ``cxr-bench predict`` writes (one row per image, a heatmap)."""
    if "heatmap" in frame or ("predicted" in frame and "head_id" not in frame):
        raise VerifyError(f"{path} is the output of `cxr-bench predict` (one row per image, with its heatmap), not "
                          "a run's predictions.csv: verify reads the run's --results-dir")  # fmt: skip
    unknown = [c for c in frame if c not in PREDICTION_KNOWN and not c.startswith(("p_", SUBGROUP_PREFIX))]
    if unknown:
        raise VerifyError(f"{path} has a column {unknown[0]!r} no run writes: a damaged header?")


def _check_probabilities(frame: pd.DataFrame, path: Path, probabilities: list[str], multi_label: bool) -> None:
    """Each probability in [0, 1]; a single-label row's summing to 1 (a damaged digit shows here first)."""
    values = frame[probabilities].to_numpy()
    outside = ((values < -1e-6) | (values > 1 + 1e-6)).any(axis=1)
    if outside.any():
        raise VerifyError(f"{path} line {_first_line(outside)}: a probability outside [0, 1]")
    if not multi_label:
        sums = values.sum(axis=1)
        off = np.abs(sums - 1) > SUM_TOLERANCE
        if off.any():
            raise VerifyError(f"{path} line {_first_line(off)}: the probabilities sum to {sums[off][0]:.6g}, not 1 "
                              "(a damaged digit?)")  # fmt: skip


def _decisions(frame: pd.DataFrame, classes: list[str], multi_label: bool) -> np.ndarray:
    """Each row's decision as ``predicted`` spells it: the likeliest class, or the findings at 0.5 and above."""
    values = frame[[f"p_{name}" for name in classes]].to_numpy()
    if not multi_label:
        return np.array(classes)[values.argmax(axis=1)]
    shown = [[name for name, p in zip(classes, row, strict=True) if p >= 0.5] for row in values]
    return np.array([Label.of_findings(names).text for names in shown])


def _check_labels(frame: pd.DataFrame, path: Path, classes: list[str], multi_label: bool) -> None:
    """Single-label: every test image's label is a class. ``predicted`` (where written): the rows' decision."""
    if not multi_label:  # a findings label may name findings the run does not score; its tasks check what it holds
        strange = (frame["split"] == "test").to_numpy() & ~frame["label"].isin(classes).to_numpy()
        if strange.any():
            line = _first_line(strange)
            raise VerifyError(f"{path} line {line}: label {frame['label'].iloc[line - 2]!r} is not one of the "
                              f"classes {', '.join(classes)}")  # fmt: skip
    if "predicted" in frame:
        expected = _decisions(frame, classes, multi_label)
        wrong = frame["predicted"].to_numpy() != expected
        if wrong.any():
            line = _first_line(wrong)
            raise VerifyError(f"{path} line {line}: predicted is {frame['predicted'].iloc[line - 2]!r}, but its "
                              f"probabilities say {str(expected[line - 2])!r}")  # fmt: skip


def load_predictions(path: Path, multi_label: bool = False) -> pd.DataFrame:
    """predictions.csv with every probability a number, in [0, 1] (single-label: summing to 1), every split known and
    every test label a class; ``VerifyError`` otherwise."""
    frame = _read_text(path, ())
    _not_a_run_file(frame, path)
    missing = [name for name in PREDICTION_COLUMNS if name not in frame]
    if missing:
        raise VerifyError(f"{path} lacks the column(s) {', '.join(missing)}")
    probabilities = [column for column in frame if column.startswith("p_")]
    if not probabilities:
        raise VerifyError(f"{path} has no probability column (p_<class>)")
    _has_rows(frame, path)
    _no_blank(frame, path, ("head_id", "split", "path", "backbone"))
    unknown = ~frame["split"].isin(SPLITS).to_numpy()
    if unknown.any():
        line = _first_line(unknown)
        raise VerifyError(f"{path} line {line}: split is {frame['split'].iloc[line - 2]!r}, not one of "
                          f"{', '.join(SPLITS)}")  # fmt: skip
    frame = as_numbers(frame, path, [*probabilities, "seed"], missing_ok=False)
    frame = as_numbers(frame, path, ("image_size", "lr", "dropout", "l2"), missing_ok=True)
    _check_probabilities(frame, path, probabilities, multi_label)
    _check_labels(frame, path, [c[2:] for c in probabilities], multi_label)
    return frame


# ---- grid.csv and run.json


def load_grid(path: Path) -> pd.DataFrame | None:
    """grid.csv (every grid point's validation scores and selection score); None where the run wrote none."""
    if not path.is_file():
        return None
    frame = _read_text(path, (*GRID_KEY, "seeds"))
    _has_rows(frame, path)
    _no_blank(frame, path, ("backbone", "kind", "lr_schedule"))
    numbers = [c for c in frame if c in ("image_size", "lr", "dropout", "l2", "failed", "selection_score")
               or c.startswith("val_")]  # fmt: skip
    frame = as_numbers(as_numbers(frame, path, numbers, missing_ok=True), path, ("seeds",), missing_ok=False)
    if "selection_score" in frame:
        # A point with a trained seed has a score; a point whose every seed failed has none.
        unscored = (frame["seeds"] > 0).to_numpy() & frame["selection_score"].isna().to_numpy()
        if unscored.any():
            raise VerifyError(f"{path} line {_first_line(unscored)}: selection_score is empty for a point with "
                              "trained seeds")  # fmt: skip
    return frame


def read_json(path: Path):
    """``path``'s JSON value; ``VerifyError`` naming the file if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise VerifyError(f"{path} is not readable JSON (truncated or damaged?): {error}") from None
    except OSError as error:
        raise VerifyError(f"cannot read {path}: {error.strerror or error}") from None


def load_run(path: Path) -> RunInfo | None:
    """run.json (any version; ``RunInfo.from_json``), its ``classes`` and ``config`` checked to be a list of names and
    a mapping; None where there is none."""
    if not path.is_file():
        return None
    values = read_json(path)
    if not isinstance(values, dict):
        raise VerifyError(f"{path} is not a run record (a JSON object): damaged?")
    classes, config = values.get("classes", []), values.get("config", {})
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise VerifyError(f"{path}: classes is {classes!r}, not a list of names")
    if not isinstance(config, dict) or not isinstance(config.get("select_by", ""), str):
        raise VerifyError(f"{path}: config (or its select_by) is not what a run writes: damaged?")
    try:
        return RunInfo.from_json({"config": config} | values)  # verify checks a record without config too
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise VerifyError(f"{path} is not a run record ({type(error).__name__}: {error}): damaged?") from None


# ---- report.json

REPORT_KEYS = ("leaderboard", "verdict", "ensemble", "comparisons")
COMPARISON_NAMES = ("eval_set", "task", "a", "b")


def _is_number(value) -> bool:
    """A JSON number (NaN and infinities included) or null: what a number cell may hold."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _names(value) -> bool:
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def _rows_shape(data: dict) -> str | None:
    """Where report.json's leaderboard and comparison rows depart from what a run writes; None when they do not."""
    for key in ("leaderboard", "external_leaderboard", "comparisons"):
        rows = data.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            return f"data.{key} is not a list of rows"
    for key in ("leaderboard", "external_leaderboard"):
        for i, row in enumerate(data.get(key, [])):
            if not isinstance(row.get("head_id"), str) or not isinstance(row.get("task"), str):
                return f"data.{key}[{i}] has no head_id or task"
    for i, row in enumerate(data["comparisons"]):
        bad = [k for k in COMPARISON_NAMES if not isinstance(row.get(k), str)]
        bad += [k for k, v in row.items() if k not in COMPARISON_NAMES and not _is_number(v)]
        if bad:
            return f"data.comparisons[{i}].{bad[0]} is {row.get(bad[0])!r}"
    return None


def _verdict_shape(data: dict) -> str | None:
    """Where report.json's verdicts and ensemble depart from what a run writes; None when they do not."""
    for key in ("verdict", "external_verdict"):
        verdicts = data.get(key) or {}
        if not isinstance(verdicts, dict) or not all(isinstance(v, dict) for v in verdicts.values()):
            return f"data.{key} is not a mapping of tasks to verdicts"
        for task, verdict in verdicts.items():
            for field in ("heads", "tied", "tied_single"):
                if field in verdict and not _names(verdict[field]):
                    return f"data.{key}.{task}.{field} is {verdict[field]!r}, not a list of names"
            for field in ("best", "best_single"):
                if field in verdict and not isinstance(verdict[field], str):
                    return f"data.{key}.{task}.{field} is {verdict[field]!r}, not a name"
            if not isinstance(verdict.get("alpha"), int | float) or isinstance(verdict.get("alpha"), bool):
                return f"data.{key}.{task}.alpha is {verdict.get('alpha')!r}, not a number"
    ensemble = data["ensemble"]
    if not isinstance(ensemble, dict) or not all(_names(ensemble.get(k, [])) for k in ("members", "head_ids")):
        return "data.ensemble is not a mapping with lists of members and head_ids"
    if not isinstance(ensemble.get("validation_best", ""), str):
        return f"data.ensemble.validation_best is {ensemble['validation_best']!r}, not a name"
    return None


def load_report(path: Path) -> dict | None:
    """report.json's ``data``; None when the run wrote none (older than the verdict); ``VerifyError`` if unreadable
    or not of the shape a run writes."""
    if not path.is_file():
        return None
    values = read_json(path)
    if not isinstance(values, dict) or values.get("version") != REPORT_VERSION:
        raise VerifyError(f"{path} is not a report of format {REPORT_VERSION}: written by another cxr-bench version?")
    data = values.get("data")
    missing = [key for key in REPORT_KEYS if not isinstance(data, dict) or key not in data]
    if missing:
        raise VerifyError(f"{path} lacks data.{missing[0]}: written by another cxr-bench version?")
    where = _rows_shape(data) or _verdict_shape(data)
    if where:
        raise VerifyError(f"{path}: {where}, not what a run writes (damaged?)")
    return data


def number(value) -> float:
    """A cell or JSON value as a float: NaN for an empty one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    return float(value)
