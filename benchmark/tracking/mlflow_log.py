"""A finished run logged to MLflow, read from its results folder (``benchmark.tracking.run_files``).

One parent run per benchmark run, tagged with its results folder (``cxr_bench.results_dir``), git revision and
version: the run's config as parameters, each model's test metrics per task (``test.<model>.<task>.<metric>``,
from ``leaderboard.csv``), the report and the plots as artefacts. Under it, one nested run per grid point (a row
of ``grid.csv``: its settings as parameters, its validation numbers as metrics, its training history as metrics
stepped by epoch) and per fine-tuned model (its history). ``log_export_artifacts`` adds an export's files to the
run a results folder was logged as. ``mlflow`` is imported only here, inside the functions that use it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.run_folder import (
    COMPARISONS_CSV,
    CV_FOLDS_CSV,
    CV_SUMMARY_CSV,
    GRID_CSV,
    LEADERBOARD_CSV,
    LEADERBOARD_MD,
    PLOTS,
    PREDICTIONS_CSV,
    REPORT_JSON,
    RUN_JSON,
    SUBGROUPS_CSV,
    RunFolder,
)
from benchmark.settings import TrackingSettings
from benchmark.settings import tracking_uri as resolve_tracking_uri
from benchmark.tracking.run_files import (
    Curves,
    GridPoint,
    RunHistory,
    leaderboard_metrics,
    run_history,
)
from common.environment import environment

if TYPE_CHECKING:
    from mlflow import MlflowClient

HEALTH_TIMEOUT_S = 5.0
MAX_PARAM_LENGTH = 6000  # MLflow refuses a longer parameter value
# MLflow's limits on one log_batch call.
MAX_BATCH_PARAMS, MAX_BATCH_METRICS = 100, 1000
RESULTS_DIR_TAG = "cxr_bench.results_dir"  # the parent run's results folder, absolute: how a later command finds it
GIT_TAG, VERSION_TAG, KIND_TAG, POINTS_TAG = "cxr_bench.git", "cxr_bench.version", "cxr_bench.kind", "cxr_bench.points"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under its parent
# MLflow's own switch: without it, each run ended on a server prints two lines ("View run ... at ...").
QUIET = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
HISTORY_PREFIX = "history"  # a head's curves: history/loss, history/val_loss, ... (its validation numbers: val_loss)
EXPORTS = "exports"
# The report's files logged as the parent run's artefacts, where the run wrote them.
REPORT_FILES = (LEADERBOARD_MD, REPORT_JSON, LEADERBOARD_CSV, GRID_CSV, RUN_JSON, PREDICTIONS_CSV, COMPARISONS_CSV,
                CV_FOLDS_CSV, CV_SUMMARY_CSV, SUBGROUPS_CSV)  # fmt: skip


def check_mlflow(uri: str) -> None:
    """``ValueError`` (one line) where ``--track mlflow`` cannot log: no ``mlflow`` package, or a tracking server
    (http, https) whose ``/health`` does not answer within 5 s. Checked before any work."""
    if importlib.util.find_spec("mlflow") is None:
        raise ValueError("--track mlflow needs the mlflow package: pip install 'cxr-bench[track]' (or pip install "
                         "mlflow)")  # fmt: skip
    if not uri.lower().startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S) as answer:
            answer.read()
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise ValueError(f"--track mlflow: the tracking server {uri} does not answer ({reason}); start it (mlflow "
                         "server --host 127.0.0.1 --port PORT) or give another --tracking-uri") from None


def metric_key(*parts: str) -> str:
    """A metric or parameter key MLflow accepts (letters, digits, ``_ - . / space``) made of ``parts``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", ".".join(parts)).replace("..", "._").lstrip("/")


def param_value(value: object) -> str:
    """A parameter's value as MLflow stores it: text as it is, anything else as JSON, cut to MLflow's 6000
    characters (ending in ``...``)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def _chunks(items: list, size: int) -> Iterable[list]:
    return (items[start : start + size] for start in range(0, len(items), size))


def _log(client: MlflowClient, run_id: str, params: dict[str, object] | None = None,
         metrics: dict[str, float] | None = None, curves: tuple[list[int], Curves] | None = None) -> None:  # fmt: skip
    """Parameters, metrics (step 0) and curves (a metric per column, stepped by epoch) in batches MLflow takes."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    for chunk in _chunks([Param(metric_key(k), param_value(v)) for k, v in (params or {}).items()], MAX_BATCH_PARAMS):
        client.log_batch(run_id, params=chunk)
    logged = [Metric(metric_key(k), float(v), now, 0) for k, v in (metrics or {}).items()]
    epochs, columns = curves or ([], {})
    logged += [Metric(metric_key(name), float(value), now, epoch) for name, values in columns.items()
               for epoch, value in zip(epochs, values, strict=False)]  # fmt: skip
    for chunk in _chunks(logged, MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=chunk)


def _experiment(client: MlflowClient, settings: TrackingSettings) -> str:
    """The experiment's id, made where it is new; a local SQLite store keeps its artefacts beside its file
    (``mlartifacts/``), not in the working folder."""
    found = client.get_experiment_by_name(settings.experiment)
    if found is not None:
        return found.experiment_id
    location = None
    if settings.mlflow_uri and settings.mlflow_uri.startswith("sqlite:///"):
        location = (Path(settings.mlflow_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return client.create_experiment(settings.experiment, artifact_location=location)


def _version() -> str:
    try:
        return importlib.metadata.version("cxr-bench")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _client(uri: str) -> MlflowClient:
    """A client of the store at ``uri``; a new local SQLite store's folder is made first."""
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _quiet():
    """MLflow's links to each run left unprinted: the run prints one line saying where to look."""
    return environment(**{QUIET: "true"})


def log_run(settings: TrackingSettings, folder: RunFolder, history: RunHistory | None = None) -> str:
    """Log the finished run in ``folder`` to MLflow (``settings.mlflow_uri``); the parent run's id. ``history``: the
    run's training as already read (``run_history``), else read here.

    The parent run ends FINISHED, or FAILED where logging stopped part-way (the error is raised)."""
    with _quiet():
        return _log_run(settings, folder, history or run_history(folder))


def _log_run(settings: TrackingSettings, folder: RunFolder, history: RunHistory) -> str:
    client = _client(settings.mlflow_uri)
    info = folder.info()
    root = folder.root.resolve()
    tags = {RESULTS_DIR_TAG: str(root), GIT_TAG: info.git, VERSION_TAG: _version(), KIND_TAG: "run"}
    experiment = _experiment(client, settings)
    parent = client.create_run(experiment, tags=tags,
                               run_name=f"{root.name} {info.timestamp}".strip()).info.run_id  # fmt: skip
    try:
        tests = {metric_key("test", *key): value for key, value in leaderboard_metrics(folder).items()}
        _log(client, parent, params=info.config, metrics=tests)
        for point in history.points:
            _log_point(client, experiment, parent, history, point)
        for model_id, (epochs, curves) in history.finetuned.items():
            child = _child(client, experiment, parent, model_id, "fine-tuned")
            _log(client, child, curves=(epochs, {f"{HISTORY_PREFIX}/{name}": v for name, v in curves.items()}))
            client.set_terminated(child)
        _log_artifacts(client, parent, folder)
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent)
    return parent


def _child(client: MlflowClient, experiment: str, parent: str, name: str, kind: str, points: str = "") -> str:
    """A new run nested under ``parent`` in its ``experiment``; its id."""
    tags = {PARENT_TAG: parent, KIND_TAG: kind, **({POINTS_TAG: points} if points else {})}
    return client.create_run(experiment, tags=tags, run_name=name).info.run_id


def _log_point(client: MlflowClient, experiment: str, parent: str, history: RunHistory, point: GridPoint) -> None:
    """One grid point as a nested run: its settings, its validation numbers (``grid.csv``'s: ``val_loss``, ...) and
    its history stepped by epoch (its first seed's as ``history/loss``, ``history/val_loss``, ...; with several seeds
    also each seed's as ``history/seed<N>/loss``, ...)."""
    child = _child(client, experiment, parent, point.name, "grid point", " ".join(point.point_ids))
    _log(client, child, params={**point.settings, **point.notes}, metrics=point.metrics)
    for index, (seed, point_id) in enumerate(zip(point.seeds, point.point_ids, strict=True)):
        epochs, curves = history.heads[point_id]
        if index == 0:
            _log(client, child, curves=(epochs, {f"{HISTORY_PREFIX}/{name}": v for name, v in curves.items()}))
        if len(point.point_ids) > 1:
            _log(client, child, curves=(epochs, {f"{HISTORY_PREFIX}/seed{seed}/{name}": v
                                                 for name, v in curves.items()}))  # fmt: skip
    client.set_terminated(child)


def _log_artifacts(client: MlflowClient, run_id: str, folder: RunFolder) -> None:
    """The report's files and the ``plots/`` folder, where the run wrote them."""
    for name in REPORT_FILES:
        if folder.file(name).is_file():
            client.log_artifact(run_id, str(folder.file(name)))
    if folder.plots.is_dir():
        client.log_artifacts(run_id, str(folder.plots), PLOTS)


def tracked_run(results_dir: Path, uri: str) -> str:
    """The id of the newest MLflow run logged from ``results_dir`` in the store at ``uri``; ``ValueError`` (one
    line) where there is none."""
    client = _client(uri)
    where = str(Path(results_dir).resolve())
    quote = "'" if "'" not in where else '"'
    experiments = [one.experiment_id for one in client.search_experiments()]
    runs = []
    if experiments:
        runs = client.search_runs(experiments, f"tags.`{RESULTS_DIR_TAG}` = {quote}{where}{quote}",
                                  order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    if not runs:
        raise ValueError(f"no MLflow run logged from {where} in {uri}: run it with --track mlflow first")
    return runs[0].info.run_id


def log_export_artifacts(results_dir: Path, paths: list[Path], tracking_uri: str | None) -> str:
    """Log ``paths`` (files or folders) as artefacts under ``exports/`` of the newest MLflow run logged from
    ``results_dir``; its id. ``tracking_uri`` as ``--tracking-uri``: None reads MLFLOW_TRACKING_URI, else the
    default beside the results folder. ``ValueError`` (one line) where no run was logged from it, or a path is
    missing."""
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise ValueError(f"nothing to log at {', '.join(missing)}")
    uri = resolve_tracking_uri(tracking_uri, str(results_dir))
    check_mlflow(uri)
    run_id = tracked_run(results_dir, uri)
    client = _client(uri)
    with _quiet():
        for path in map(Path, paths):
            if path.is_dir():
                client.log_artifacts(run_id, str(path), f"{EXPORTS}/{path.name}")
            else:
                client.log_artifact(run_id, str(path), EXPORTS)
    return run_id
