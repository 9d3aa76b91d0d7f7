"""The layout of a run's results folder, and its record ``run.json``; imports nothing of ours but leaves.

Every path a run writes or reads is named here and nowhere else: the stages write through ``RunFolder``,
and predict, the web page and verify read through it, so the layout cannot drift between them::

    run.json  report.json  leaderboard.csv  leaderboard.md  predictions.csv  grid.csv  comparisons.csv
    skipped.csv  leakage.csv  external_skipped.csv  external_leakage.csv  cv_folds.csv  cv_summary.csv
    subgroups.csv                     with --subgroups: each selected head's metrics per subgroup
    SHA256SUMS                        written last: the SHA-256 of every file above and below
    heads/<point id>/                 best.keras, history.csv, point.json: one grid point
    finetune/<model id>/              result.json, model.weights.h5: one fine-tuned model
    plots/                            the report's PNGs
    cv/r<repeat>-f<fold>/             one cross-validation fold: a results folder of its own (heads/)
    logs/libraries.log                the libraries' console output (TensorFlow's start-up lines, warnings), kept off
                                      the terminal (``common.console``); not in SHA256SUMS: no number comes from it

``RunInfo`` is ``run.json`` as a type: written by the pipeline, read back (older runs' shapes too) by
``RunInfo.from_json``, the one migration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from common.files import CHECKSUMS
from features.settings import Choice, ComputePlan

RUN_JSON = "run.json"
REPORT_JSON = "report.json"
LEADERBOARD_CSV = "leaderboard.csv"
LEADERBOARD_MD = "leaderboard.md"
PREDICTIONS_CSV = "predictions.csv"
GRID_CSV = "grid.csv"
COMPARISONS_CSV = "comparisons.csv"
SKIPPED_CSV = "skipped.csv"
LEAKAGE_CSV = "leakage.csv"
EXTERNAL_SKIPPED_CSV = "external_skipped.csv"
EXTERNAL_LEAKAGE_CSV = "external_leakage.csv"
CV_FOLDS_CSV = "cv_folds.csv"
CV_SUMMARY_CSV = "cv_summary.csv"
SUBGROUPS_CSV = "subgroups.csv"
# One grid point's files under heads/<point id>/, and one fine-tuned model's under finetune/<model id>/.
CHECKPOINT = "best.keras"
HISTORY = "history.csv"
POINT = "point.json"
RESULT_FILE = "result.json"
WEIGHTS_FILE = "model.weights.h5"

LIBRARIES_LOG = "libraries.log"

HEADS, FINETUNE, PLOTS, CV, LOGS = "heads", "finetune", "plots", "cv", "logs"
# The folders a run writes beside its top-level files: SHA256SUMS covers them, and nothing else may write there.
SUBFOLDERS = (HEADS, FINETUNE, CV, PLOTS)
# A folder holding one of these is a run's results folder.
MARKERS = (RUN_JSON, LEADERBOARD_CSV, REPORT_JSON, GRID_CSV)
# The top-level files predict and the web page read (the page serves them, and nothing else, raw).
READ_FILES = (RUN_JSON, REPORT_JSON, LEADERBOARD_CSV, LEADERBOARD_MD, GRID_CSV, PREDICTIONS_CSV, SKIPPED_CSV,
              LEAKAGE_CSV)  # fmt: skip
# The top-level files verify recomputes or cross-checks.
VERIFIED_FILES = (LEADERBOARD_CSV, PREDICTIONS_CSV, REPORT_JSON, RUN_JSON, GRID_CSV, COMPARISONS_CSV, CV_FOLDS_CSV,
                  CV_SUMMARY_CSV, SUBGROUPS_CSV)  # fmt: skip
# Every results file name, for the architecture test that no other module spells one.
FILE_NAMES = frozenset({*READ_FILES, *VERIFIED_FILES, EXTERNAL_SKIPPED_CSV, EXTERNAL_LEAKAGE_CSV, CHECKSUMS,
                        CHECKPOINT, HISTORY, POINT, RESULT_FILE, WEIGHTS_FILE, LIBRARIES_LOG})  # fmt: skip

# A fine-tuned model's name: its backbone's with this suffix (``MobileNetV2-ft``).
FINETUNED = "-ft"


def is_finetuned(name: str) -> bool:
    """Whether the model ``name`` (a leaderboard's backbone column, or a fine-tuned model's id) is fine-tuned."""
    return name.lower().endswith(FINETUNED)


# Suffixes a leaderboard's backbone column may carry after the registry name.
MODEL_SUFFIXES = (FINETUNED, "-logreg")


def split_model_name(name: str) -> tuple[str, str]:
    """``("MobileNetV2-0.35", "-logreg")`` from ``"MobileNetV2-0.35-logreg"``; the suffix is "" for a plain head."""
    for suffix in MODEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def without_finetuned(name: str) -> str:
    """``name`` without the fine-tuned suffix (unchanged where it has none)."""
    return name[: -len(FINETUNED)] if is_finetuned(name) else name


def finetuned_name(backbone: str) -> str:
    """The model name of ``backbone`` fine-tuned."""
    return backbone + FINETUNED


def plot_file(name: str) -> str:
    """``plots/NAME``: a plot's path relative to the results folder, as the report links it."""
    return f"{PLOTS}/{name}"


def run_files_problem(folder: Path, results_dir: str | Path) -> str | None:
    """Why a command writing files and subfolders of its own into ``folder`` could write over a run's files, or None.

    It could where ``folder`` is a run's results folder (``results_dir``, or any folder holding ``run.json``,
    ``leaderboard.csv``, ...) or lies in a folder a run writes (``heads/``, ``plots/``, ...); symbolic links are
    followed. A folder of its own inside a run's (``results/tensorboard``) is fine: no run writes there."""
    folder = Path(folder).resolve()
    runs = [Path(results_dir).resolve(),
            *(one for one in (folder, *folder.parents) if any((one / name).is_file() for name in MARKERS))]  # fmt: skip
    for run in runs:
        if folder == run:
            return f"{folder} is a run's results folder; files written there could replace its own"
        if folder.is_relative_to(run) and folder.relative_to(run).parts[0] in SUBFOLDERS:
            return f"{folder} lies in {folder.relative_to(run).parts[0]}/ of the run folder {run}, which the run writes"
    return None


@dataclass(frozen=True)
class RunFolder:
    """A run's results folder: every path in it, by what it holds."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def file(self, name: str) -> Path:
        """A top-level file (``name``, one of this module's names) or a path relative to the folder."""
        return self.root / name

    @property
    def run_json(self) -> Path:
        """The run's record (``RunInfo``)."""
        return self.root / RUN_JSON

    def info(self) -> RunInfo:
        """The run's record, read (``json`` and ``RunInfo`` errors propagate: each caller says them its way)."""
        return RunInfo.from_json(json.loads(self.run_json.read_text(encoding="utf-8")))

    @property
    def checksums(self) -> Path:
        """``SHA256SUMS``, written last."""
        return self.root / CHECKSUMS

    @property
    def heads(self) -> Path:
        """The grid points' folder."""
        return self.root / HEADS

    def head(self, point_id: str) -> Path:
        """One grid point's folder."""
        return self.heads / point_id

    @property
    def library_log(self) -> Path:
        """The run's copy of its libraries' console output (``common.console``)."""
        return self.root / LOGS / LIBRARIES_LOG

    def checkpoint(self, point_id: str) -> Path:
        """One grid point's head checkpoint."""
        return self.head(point_id) / CHECKPOINT

    def point_record(self, point_id: str) -> Path:
        """One grid point's record."""
        return self.head(point_id) / POINT

    @property
    def finetune(self) -> Path:
        """The fine-tuned models' folder."""
        return self.root / FINETUNE

    def finetuned(self, model_id: str) -> Path:
        """One fine-tuned model's folder."""
        return self.finetune / model_id

    @property
    def plots(self) -> Path:
        """The report's PNGs."""
        return self.root / PLOTS

    def cv_fold(self, repeat: int, fold: int) -> RunFolder:
        """One cross-validation fold's folder: a results folder of its own."""
        return RunFolder(self.root / CV / f"r{repeat}-f{fold}")

    @staticmethod
    def model_files(backbone: str, head_id: str) -> list[str]:
        """The files one selected model is loaded from, relative to the folder: a head's checkpoint, or a fine-tuned
        model's record and weights (``backbone``: the leaderboard's model name)."""
        if is_finetuned(backbone):
            return [f"{FINETUNE}/{head_id}/{RESULT_FILE}", f"{FINETUNE}/{head_id}/{WEIGHTS_FILE}"]
        return [f"{HEADS}/{head_id}/{CHECKPOINT}"]


RUN_INFO_VERSION = 1


@dataclass
class RunInfo:
    """``run.json``: the config that made the run (``RunConfig.from_json`` reads it back) and its provenance.

    ``classes``, ``compute`` (the runtime and precision used, recorded since issue 16) and the counts are None in
    older runs that did not record them; ``version`` is 0 in runs before the field.
    """

    config: dict
    phantom: bool = False
    classes: list[str] | None = None
    git: str = ""
    versions: dict = field(default_factory=dict)
    machine: str = ""
    timestamp: str = ""
    command: str = ""
    forward_passes: int | None = None
    heads_trained_this_run: int | None = None
    grid_points_failed: int | None = None
    extraction: dict = field(default_factory=dict)
    external_extraction: dict = field(default_factory=dict)
    compute: ComputePlan | None = None
    version: int = RUN_INFO_VERSION

    def compute_plan(self) -> ComputePlan:
        """The recorded compute plan, or for a run before one: its configured precision, in Keras, everywhere."""
        if self.compute is not None:
            return self.compute
        precision = self.config.get("precision", "float32")
        return ComputePlan(precision=Choice(precision, precision))

    @property
    def not_medical(self) -> bool:
        """Whether the run used random-init weights or the phantom set: its answers are not medical."""
        return self.config.get("weights") == "none" or self.phantom

    def to_json(self) -> dict:
        """The mapping ``run.json`` holds, key for key as runs before the version field wrote it, then the version."""
        data = {"config": self.config, "phantom": self.phantom, "classes": self.classes, "git": self.git,
                "versions": self.versions, "machine": self.machine, "timestamp": self.timestamp,
                "command": self.command, "forward_passes": self.forward_passes,
                "heads_trained_this_run": self.heads_trained_this_run, "grid_points_failed": self.grid_points_failed,
                "extraction": self.extraction, "external_extraction": self.external_extraction}  # fmt: skip
        return data | (self.compute.to_json() if self.compute else {}) | {"version": self.version}

    @classmethod
    def from_json(cls, data: dict) -> RunInfo:
        """The record ``to_json`` wrote, or an older run's: without ``version``, ``classes``, the counts or the
        compute plan, or with ``runtime`` a plain name (runs before ``--runtime auto``).

        Raises ``KeyError``, ``TypeError`` or ``ValueError`` for a mapping no run wrote (no ``config`` mapping)."""
        if not isinstance(data, dict) or not isinstance(data["config"], dict):
            raise TypeError("run.json holds no config mapping")
        compute = ComputePlan.from_json(data["precision"], data.get("runtime")) if data.get("precision") else None
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data and name != "compute"}
        return cls(**known | {"version": data.get("version", 0), "compute": compute})
