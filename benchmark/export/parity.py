"""The parity check: an exported file, run by its own runtime on the run's test images, against the probabilities
the run wrote for them (``predictions.csv``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from benchmark.export.formats import Runner
from benchmark.export.records import ParityResult
from benchmark.run_folder import PREDICTIONS_CSV, RunFolder
from features.data.images import UnreadableImageError, load_image
from features.settings import DicomSettings

# The largest absolute difference of a probability accepted, by the precision the run computed the model's
# features in: the export computes in float32, so a bfloat16 run's own numbers are further from it.
TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
BATCH = 32


class ParityDataError(ValueError):
    """The run's test images or its predictions for the model cannot be had (one line: which, and what to do)."""


@dataclass(frozen=True)
class ParitySet:
    """The run's test images of one model, decoded as the run read them, and the probabilities it wrote."""

    images: np.ndarray  # (n, size, size, 3) uint8
    expected: np.ndarray  # (n, n_classes), in ``classes`` order
    classes: tuple[str, ...]
    multi_label: bool


def parity_set(results_dir: Path, head_id: str, classes: tuple[str, ...], image_size: int, data_root: Path,
               dicom: DicomSettings, multi_label: bool, limit: int | None = None) -> ParitySet:  # fmt: skip
    """The test images ``head_id`` predicted in ``predictions.csv`` (the first ``limit``), read from
    ``data_root`` at ``image_size``, and its probabilities for them."""
    frame = pd.read_csv(RunFolder(results_dir).file(PREDICTIONS_CSV))
    rows = frame[(frame["head_id"] == head_id) & (frame["split"] == "test")]
    if rows.empty:
        raise ParityDataError(f"{PREDICTIONS_CSV} of {results_dir} has no test predictions of {head_id}")
    rows = rows.iloc[:limit] if limit else rows
    missing = next((path for path in rows["path"] if not (data_root / path).is_file()), None)
    if missing is not None:
        raise ParityDataError(f"the run's test image {data_root / missing} is not here; pass --data DIR, the "
                              "dataset folder the run read (the parity check predicts its test images)")
    images = np.stack([_image(data_root / path, image_size, dicom) for path in tqdm(
        rows["path"], desc="test images", unit="img", leave=False, disable=None)])  # fmt: skip
    expected = rows[[f"p_{name}" for name in classes]].to_numpy(np.float64)
    return ParitySet(images, expected, classes, multi_label)


def _image(path: Path, size: int, dicom: DicomSettings) -> np.ndarray:
    try:
        return load_image(path, size, dicom)
    except UnreadableImageError as error:
        raise ParityDataError(f"the run's test image {path} cannot be read now ({error.reason}); it is not the "
                              "file the run read") from None  # fmt: skip


def decisions(probabilities: np.ndarray, multi_label: bool) -> np.ndarray:
    """Each image's decision: the likeliest class, or for a multi-label model each finding's p >= 0.5."""
    return probabilities >= 0.5 if multi_label else np.argmax(probabilities, axis=1)


def check_parity(load: Callable[[], Runner], data: ParitySet, tolerance: float, runtime: str) -> ParityResult:
    """The exported file ``load`` opens in its own runtime, on ``data``'s images, against the run's probabilities.

    A file its runtime cannot load or run (damaged, of another model) fails the check, saying why."""
    try:
        got = _predicted(load(), data.images)
    except Exception as error:  # each runtime raises its own types for a file it cannot read
        return failed_parity(runtime, data, tolerance, error_line(error))
    if got.shape != data.expected.shape:
        return failed_parity(runtime, data, tolerance, f"output of shape {got.shape}, the run's {data.expected.shape}")
    diff = float(np.max(np.abs(got - data.expected)))
    same = decisions(got, data.multi_label) == decisions(data.expected, data.multi_label)
    agreement = float(np.mean(same.all(axis=1) if data.multi_label else same))
    return ParityResult(runtime, len(data.images), diff, agreement, tolerance, bool(diff <= tolerance))


def _predicted(run: Runner, images: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(run(images[start:start + BATCH]), np.float64)
                           for start in range(0, len(images), BATCH)])  # fmt: skip


def failed_parity(runtime: str, data: ParitySet, tolerance: float, why: str) -> ParityResult:
    """A check that could not compare a single number, and why."""
    return ParityResult(runtime, len(data.images), float("inf"), 0.0, tolerance, False, why)


def error_line(error: Exception) -> str:
    """``error`` in one short line: its type and its message's first line."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:300]
