"""Experiment tracking of a finished run: MLflow (``--track mlflow``) and TensorBoard (``--tensorboard DIR``).

Both read the run's results folder after the run wrote it (``run_files``), never the training loop, so tracking
works alike for every executor and backend. ``preflight`` checks, before any work, that the packages are there and
the tracking server answers; ``log_finished_run`` logs. ``mlflow`` and ``tensorboard`` are imported only while
logging, so a run without tracking (and ``--help``) never loads them.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.run_folder import RunFolder
from benchmark.settings import TrackingSettings
from benchmark.tracking.mlflow_log import check_mlflow, log_export_artifacts, log_run
from benchmark.tracking.run_files import run_history
from benchmark.tracking.tensorboard_log import check_tensorboard, write_tensorboard

__all__ = ["TrackingError", "log_export_artifacts", "log_finished_run", "preflight"]


class TrackingError(Exception):
    """Logging a finished run failed: one line; the run's results folder is complete."""


def preflight(settings: TrackingSettings) -> None:
    """``ValueError`` (one line) where the run could not be logged as asked: checked before any work."""
    if settings.mlflow_uri is not None:
        check_mlflow(settings.mlflow_uri)
    if settings.tensorboard is not None:
        check_tensorboard()


def log_finished_run(settings: TrackingSettings, folder: RunFolder) -> list[str]:
    """Log the run in ``folder`` as ``settings`` ask; a line per tracker saying where to look.

    Raises ``TrackingError`` (one line) where a tracker fails (a server gone since the preflight, a full disk)."""
    lines = []
    try:
        history = run_history(folder)  # read once for both trackers
        if settings.mlflow_uri is not None:
            run_id = log_run(settings, folder, history)
            server = settings.mlflow_uri.lower().startswith(("http://", "https://"))
            look = f"open {settings.mlflow_uri}" if server else f"mlflow ui --backend-store-uri {settings.mlflow_uri}"
            lines.append(f"MLflow: run {run_id} in experiment {settings.experiment!r} ({look})")
        if settings.tensorboard is not None:
            written = write_tensorboard(folder, Path(settings.tensorboard), history)
            lines.append(f"TensorBoard: {len(written)} training curves in {settings.tensorboard} "
                         f"(tensorboard --logdir {settings.tensorboard})")  # fmt: skip
    except Exception as error:  # noqa: BLE001 - whatever a tracker raises, the finished run is kept: one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TrackingError(f"{type(error).__name__}: {first}") from error
    return lines
