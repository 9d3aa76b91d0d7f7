"""Every setting of a run or sweep, in one dataclass.

Grid settings (``image_size``, ``lr``, ``dropout``, ``l2``, ``lr_schedule``)
take several values; every combination is a grid point, trained ``seeds``
times per backbone. Beside them, each backbone and size gets one
logistic-regression probe per ``probe_l2`` value (``probe``), selected apart.

The default grid (2 learning rates x 2 dropout rates x 4 L2 penalties, 16
heads trained together in one model, and 7 probe penalties) was chosen on the
validation split of the real Kermany set with ImageNet MobileNetV2 features,
width 1.0 and 0.35, where it matched a tuned logistic-regression probe
(docs/results.md). A TOML file (``--config``) may set any field; the command
line overrides it.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from backbones import AUTO, BACKBONES, DEFAULT_BACKBONES, PRECISION_CHOICES, BackboneSpec, get_backbone
from benchmark.evaluation.metrics import METRICS
from benchmark.settings import (
    HEAD_GRID_FIELDS,
    LR_SCHEDULES,
    CrossValSettings,
    FinetuneRun,
    FinetuneSettings,
    HeadSettings,
    ReportSettings,
    SweepSettings,
    probe_settings,
)
from common.executors import EXECUTORS, ExecutorSettings, check_cluster, is_address
from features.data.audit import LEAKAGE_POLICIES
from features.data.dataset import SPLIT_ALIASES
from features.runtime import check_runtime
from features.settings import UNKNOWN_POLICIES, DataSettings, ExternalSettings, ExtractSettings, LabelSettings

_HEAD = HeadSettings()
# HeadSettings fields a run sets once for every head: all but the grid's and the seed.
_SHARED_HEAD_FIELDS = tuple(f.name for f in fields(HeadSettings) if f.name not in (*HEAD_GRID_FIELDS, "seed"))
_FINETUNE = FinetuneSettings()
# Each default is written once, in the stage settings that use it.
_DATA, _EXTRACT, _SWEEP, _REPORT = DataSettings(), ExtractSettings(), SweepSettings(), ReportSettings()
_LABELS = LabelSettings()
_EXECUTOR = ExecutorSettings()
WEIGHTS_CHOICES = ("imagenet", "none")
CLASS_WEIGHTS = ("none", "balanced")
VAL_SOURCES = ("carve", "official")
GRID_FIELDS = ("image_size", "lr", "dropout", "l2", "lr_schedule")
TUPLE_FIELDS = ("backbones", *GRID_FIELDS, "probe_l2", "finetune_sizes", "classes", "split_lists", "external_map",
                "finding_columns", "external_finding_columns")  # fmt: skip


# The options that act only when fine-tuning, and the external CSV's columns.
FINETUNE_FIELDS = ("finetune_layers", "finetune_lr", "finetune_lr_factor", "finetune_epochs", "finetune_batch_size",
                   "finetune_patience", "finetune_sizes", "augment")  # fmt: skip
EXTERNAL_COLUMNS = ("external_path_column", "external_label_column", "external_findings_column",
                    "external_finding_columns")  # fmt: skip
_POSITIVE = (lambda v: v > 0, "positive (a finite number above 0)")
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_NOT_NEGATIVE = (lambda v: v >= 0, "0 or more")
# Every number option but the sizes (checked per backbone), the seed and the fine-tuning's
# (FinetuneSettings.validate): (is the value in range, the range in words). inf and nan never are.
NUMBER_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": _POSITIVE,
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "l2": (lambda v: v >= 0, "0 or more (a finite number)"),
    "probe_l2": _POSITIVE,
    "seeds": _AT_LEAST_1,
    "cv": (lambda v: v == 0 or v >= 2, "0 (off) or at least 2 folds"),
    "cv_repeats": _AT_LEAST_1,
    "epochs": _AT_LEAST_1,
    "batch_size": _AT_LEAST_1,
    "patience": _NOT_NEGATIVE,
    "step_decay_epochs": _AT_LEAST_1,
    "step_decay_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "test_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "limit_per_class": _AT_LEAST_1,
    "min_image_side": _NOT_NEGATIVE,
    "target_sensitivity": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "bootstrap": (lambda v: v == 0 or v >= 100, "0 (off) or at least 100 resamples"),
    "extract_batch_size": _AT_LEAST_1,
    "extract_shard_size": _AT_LEAST_1,
    "head_workers": (lambda v: v >= 0, "0 (auto) or more"),
}


def _flag(name: str) -> str:
    """The command-line spelling of the RunConfig field ``name``, without its dashes."""
    return name.replace("_", "-")


def _absolute(path: str) -> str:
    """``path`` absolute and resolved (symbolic links followed) from the working folder."""
    return str(Path(path).resolve())


@dataclass
class RunConfig:
    """One benchmark run. The CLI (and ``--config`` TOML) fill it; every result row carries it."""

    data: str | None = None
    labels: str | None = _LABELS.labels
    path_column: str = _LABELS.path_column
    label_column: str = _LABELS.label_column
    patient_column: str | None = _LABELS.patient_column
    patient_pattern: str | None = _LABELS.patient_pattern
    split_column: str | None = _LABELS.split_column
    classes: tuple[str, ...] = _LABELS.classes
    split_lists: tuple[str, ...] = ()
    findings_column: str | None = _LABELS.findings_column
    finding_separator: str = _LABELS.finding_separator
    no_finding: str = _LABELS.no_finding
    finding_columns: tuple[str, ...] = _LABELS.finding_columns
    uncertain: str = _LABELS.uncertain
    blank: str = _LABELS.blank
    external_test: str | None = None
    external_labels: str | None = None
    external_map: tuple[str, ...] = ()
    # The external labels CSV's own columns; None: the training CSV's.
    external_path_column: str | None = None
    external_label_column: str | None = None
    external_findings_column: str | None = None
    external_finding_columns: tuple[str, ...] = ()
    backbones: tuple[str, ...] = DEFAULT_BACKBONES
    weights: str | None = None
    image_size: tuple[int, ...] = ()
    lr: tuple[float, ...] = (3e-4, 1e-3)
    dropout: tuple[float, ...] = (0.5, 0.7)
    l2: tuple[float, ...] = (0.0, 1e-2, 1e-1, 1.0)
    lr_schedule: tuple[str, ...] = (_HEAD.lr_schedule,)
    seeds: int = 1
    probe: bool = True
    probe_l2: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    select_by: str = _SWEEP.select_by
    cv: int = 0  # folds of the cross-validation of the heads; 0: none
    cv_repeats: int = 1
    epochs: int = _HEAD.epochs
    batch_size: int = _HEAD.batch_size
    patience: int = _HEAD.patience
    class_weight: str = _HEAD.class_weight
    standardize: bool = _HEAD.standardize
    step_decay_epochs: int = _HEAD.step_decay_epochs
    step_decay_factor: float = _HEAD.step_decay_factor
    seed: int = _HEAD.seed
    val_fraction: float = _DATA.val_fraction
    val_source: str = _DATA.val_source
    test_fraction: float = _DATA.test_fraction
    limit_per_class: int | None = _DATA.limit_per_class
    min_image_side: int | None = None
    leakage: str = _DATA.leakage
    rehash: bool = _DATA.rehash
    sort_metric: str = _REPORT.sort_metric
    target_sensitivity: float = _REPORT.target_sensitivity
    bootstrap: int = _REPORT.bootstrap
    results_dir: str = _SWEEP.results_dir
    cache_dir: str = _EXTRACT.cache_dir
    extract_batch_size: int = _EXTRACT.batch_size
    extract_shard_size: int = _EXTRACT.shard_size
    precision: str = AUTO  # resolved once per run (benchmark.pipeline); ExtractSettings gets the resolved type
    jit_compile: bool = _EXTRACT.jit_compile
    runtime: str = AUTO  # resolved once per run (benchmark.pipeline); ExtractSettings gets the resolved runtime
    pixel_cache: bool = _EXTRACT.pixel_cache
    extract_only: bool = False
    head_workers: int = _SWEEP.head_workers
    executor: str = _EXECUTOR.kind
    cluster: str | None = _EXECUTOR.cluster
    finetune: bool = False
    finetune_layers: str = _FINETUNE.layers
    finetune_lr: float = _FINETUNE.lr
    finetune_lr_factor: float = _FINETUNE.lr_factor
    finetune_epochs: int = _FINETUNE.epochs
    finetune_batch_size: int = _FINETUNE.batch_size
    finetune_patience: int = _FINETUNE.patience
    finetune_sizes: tuple[int, ...] = _FINETUNE.sizes
    augment: bool = _FINETUNE.augment
    progress: bool = True

    def __post_init__(self):
        for name in TUPLE_FIELDS:
            value = getattr(self, name)
            setattr(self, name, tuple(value) if isinstance(value, list | tuple) else (value,))

    def validate(self, given: Collection[str] | None = None) -> None:
        """Fail before any work on a bad value, naming the valid ones; then make every path absolute.

        ``given`` names the fields the user set (command line or ``--config``); an option given where it does
        nothing is refused. Without ``given``, the fields that differ from their defaults count as given.
        """
        self.backbones = tuple(get_backbone(name).name for name in self.backbones)
        if not self.backbones:
            raise ValueError(f"no backbone chosen; valid backbones: {', '.join(BACKBONES)}")
        if self.weights is not None and self.weights not in WEIGHTS_CHOICES and not Path(self.weights).is_dir():
            raise ValueError(
                f"--weights must be one of {', '.join(WEIGHTS_CHOICES)} or an existing folder, not {self.weights!r}"
            )
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"--data {self.data} is not a folder")
        if self.labels is not None and (self.data is None or not Path(self.labels).is_file()):
            raise ValueError(f"--labels {self.labels} is not a file" if self.data is not None else
                             "--labels needs --data DIR, the folder its image paths are relative to")  # fmt: skip
        self._validate_split_lists()
        self._validate_findings()
        self._validate_external()
        check_runtime(self.runtime, self.precision)
        self._validate_numbers()
        for flag, sizes in (("--image-size", self.image_size), ("--finetune-sizes", self.finetune_sizes)):
            self._check_sizes(flag, sizes)
        for ok, message in self._value_checks():
            if not ok:
                raise ValueError(message)
        self.finetune_settings().validate()
        if self.executor == "dask" and self.cluster is not None:
            check_cluster(self.cluster)
        task, _, metric = self.select_by.partition(".")
        if self.select_by not in ("val_loss", "macro_auc") and (not task or metric not in METRICS):
            raise ValueError(
                f"--select-by must be val_loss, macro_auc (multi-label) or TASK.METRIC with METRIC one of "
                f"{', '.join(METRICS)} (for example normal_vs_pneumonia.auc), not {self.select_by!r}"
            )
        self._refuse_idle_options(self._changed() if given is None else given)
        self.resolve_paths()

    def _check_sizes(self, flag: str, sizes: tuple[int, ...]) -> None:
        """Every size at or above every chosen backbone's minimum; the message names ``flag``."""
        for size in sizes:
            for name in self.backbones:
                try:
                    get_backbone(name).check_size(size)
                except ValueError as error:
                    raise ValueError(f"{flag}: {error}") from None

    def _validate_numbers(self) -> None:
        """Every number option finite and in its range (``NUMBER_RANGES``); the message names the option."""
        for name, (in_range, words) in NUMBER_RANGES.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if name in TUPLE_FIELDS and not values:
                raise ValueError(f"--{_flag(name)} needs at least one value ({words})")
            for one in values:
                finite = not isinstance(one, float) or math.isfinite(one)  # an int is finite, however large
                if one is not None and not (finite and in_range(one)):
                    raise ValueError(f"--{_flag(name)} must be {words}, not {one}")
        highest = 2**32 - self.seeds - self.cv_repeats + 1  # seeds count up from --seed; NumPy takes < 2**32
        if not 0 <= self.seed <= highest:
            raise ValueError(f"--seed must be from 0 to {highest} (the seeds of --seeds and --cv-repeats count up "
                             f"from it), not {self.seed}")  # fmt: skip

    def _changed(self) -> set[str]:
        """The fields whose value differs from the default: what a config built in code sets."""
        default = RunConfig()
        return {f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    def _refuse_idle_options(self, given: Collection[str]) -> None:
        """Fail on an option the user gave that does nothing beside the others (``--probe-l2`` with
        ``--no-probe``): it was meant to change the run, and silently would not."""
        for names, idle, why in self._idle_options():
            for name in names:
                if idle and name in given:
                    raise ValueError(f"--{_flag(name)} does nothing {why}")

    def _idle_options(self) -> list[tuple[tuple[str, ...], bool, str]]:
        """(options, whether they do nothing in this run, why) for the options that act only beside another."""
        external_csv = self.external_test is not None and self.external_labels is not None
        return [
            (("probe_l2",), not self.probe, "without the probe (--no-probe given)"),
            (FINETUNE_FIELDS, not self.finetune, "without --finetune"),
            (("external_map", *EXTERNAL_COLUMNS), self.external_test is None, "without --external-test"),
            (EXTERNAL_COLUMNS, self.external_labels is None,
             "without --external-labels (an external set of class folders has no CSV columns)"),
            (("uncertain", "blank"), not (self.finding_columns or (external_csv and self.external_finding_columns)),
             "without --finding-columns (it applies to CheXpert's 1/0/-1/blank finding columns only)"),
            (("finding_separator", "no_finding"),
             self.findings_column is None and not (external_csv and self.external_findings_column),
             "without --findings-column (it applies to NIH's column of separated findings only)"),
            (("step_decay_epochs", "step_decay_factor"), "step" not in self.lr_schedule,
             "without --lr-schedule step"),
            (("patient_column", "split_column", "classes"), self.labels is None,
             "without --labels (class folders name the classes; patients come from the file names)"),
            (("path_column", "label_column"), self.labels is None and not external_csv,
             "without --labels or --external-labels (class folders have no CSV columns)"),
        ]  # fmt: skip

    def resolve_paths(self) -> None:
        """Every path option made absolute and resolved, so ``run.json`` names the same files from any working
        folder (``predict``, ``serve``), and two spellings of one folder are one setting."""
        for name in ("data", "labels", "external_test", "external_labels", "results_dir", "cache_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, _absolute(getattr(self, name)))
        if self.weights is not None and self.weights not in WEIGHTS_CHOICES:
            self.weights = _absolute(self.weights)
        if self.cluster is not None and not is_address(self.cluster):
            self.cluster = _absolute(self.cluster)
        pairs = (pair.partition("=") for pair in self.split_lists)
        self.split_lists = tuple(f"{split}={_absolute(path.strip())}" if sign else split for split, sign, path in pairs)

    def _value_checks(self) -> list[tuple[bool, str]]:
        """(is the value valid, the message naming the valid ones) for every plain setting but the numbers."""
        return [
            (self.lr_schedule and set(self.lr_schedule) <= set(LR_SCHEDULES),
             f"--lr-schedule must be among {', '.join(LR_SCHEDULES)}, not {self.lr_schedule}"),
            (self.cv_repeats == 1 or self.cv,
             f"--cv-repeats {self.cv_repeats} needs --cv K (the folds it repeats; without --cv none are drawn)"),
            (self.leakage in LEAKAGE_POLICIES, f"--leakage must be one of {', '.join(LEAKAGE_POLICIES)}"),
            (self.precision in PRECISION_CHOICES, f"--precision must be one of {', '.join(PRECISION_CHOICES)}"),
            (not (self.jit_compile and self.runtime == "openvino"),
             "--jit-compile asks Keras for XLA; it does not go with --runtime openvino, which compiles its own graph"),
            (self.executor in EXECUTORS, f"--executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}"),
            (self.cluster is None or self.executor != "local",
             f"--cluster {self.cluster} needs --executor dask (the local executor runs everything here)"),
            (self.class_weight in CLASS_WEIGHTS, f"--class-weight must be one of {', '.join(CLASS_WEIGHTS)}"),
            (self.val_source in VAL_SOURCES, f"--val-source must be one of {', '.join(VAL_SOURCES)}"),
            (self.sort_metric in METRICS, f"--sort-metric must be one of {', '.join(METRICS)}"),
        ]  # fmt: skip

    def _validate_split_lists(self) -> None:
        """Fail on a split list not written SPLIT=FILE, an unknown split, a missing file, or lists beside a column."""
        for pair in self.split_lists:
            split, sign, path = pair.partition("=")
            if not sign or split.strip().lower() not in SPLIT_ALIASES:
                raise ValueError(f"--split-lists takes SPLIT=FILE pairs with SPLIT one of {', '.join(SPLIT_ALIASES)} "
                                 f"(for example test=test_list.txt), not {pair!r}")  # fmt: skip
            if not Path(path.strip()).is_file():
                raise ValueError(f"--split-lists {pair}: {path.strip()} is not a file")
        if self.split_lists and (self.labels is None or self.split_column is not None):
            raise ValueError("--split-lists needs --labels FILE.csv, and replaces --split-column (give one of them)")

    def _validate_findings(self) -> None:
        """Fail on multi-label options without a labels CSV, both forms at once, or an unknown -1/blank policy."""
        if (self.findings_column is not None or self.finding_columns) and self.labels is None:
            raise ValueError("--findings-column and --finding-columns need --labels FILE.csv")
        if self.patient_pattern is not None and self.labels is None:
            raise ValueError("--patient-pattern needs --labels FILE.csv (folders read the patient from Kermany's "
                             "file names)")  # fmt: skip
        if self.findings_column is not None and self.finding_columns:
            raise ValueError("give --findings-column (findings in one column, NIH) or --finding-columns (one column "
                             "per finding, CheXpert), not both")  # fmt: skip
        if not self.finding_separator:
            raise ValueError("--finding-separator must be a character, for example '|'")
        for flag, value in (("--uncertain", self.uncertain), ("--blank", self.blank)):
            if value not in UNKNOWN_POLICIES:
                raise ValueError(f"{flag} must be one of {', '.join(UNKNOWN_POLICIES)}, not {value!r}")

    def _validate_external(self) -> None:
        """Fail on an external test folder or labels file that is not there, or a mapping not written OLD=NEW."""
        if self.external_test is not None and not Path(self.external_test).is_dir():
            raise ValueError(f"--external-test {self.external_test} is not a folder")
        if self.external_labels is not None and self.external_test is None:
            raise ValueError("--external-labels needs --external-test DIR, the folder its image paths are relative to")
        if self.external_labels is not None and not Path(self.external_labels).is_file():
            raise ValueError(f"--external-labels {self.external_labels} is not a file")
        for pair in self.external_map:
            old, sign, new = pair.partition("=")
            if not (sign and old.strip() and new.strip()):
                raise ValueError(f"--external-map takes OLD=NEW pairs (for example PNEUMONIA=bacterial), not {pair!r}")

    def label_settings(self) -> LabelSettings:
        """How the training labels are read (class folders, or the labels CSV in one of its forms)."""
        return LabelSettings(
            labels=self.labels, path_column=self.path_column, label_column=self.label_column,
            patient_column=self.patient_column, patient_pattern=self.patient_pattern,
            split_column=self.split_column, classes=self.classes,
            split_lists=tuple((split.strip(), path.strip()) for split, _, path in
                              (pair.partition("=") for pair in self.split_lists)),
            findings_column=self.findings_column, finding_separator=self.finding_separator,
            no_finding=self.no_finding, finding_columns=self.finding_columns, uncertain=self.uncertain,
            blank=self.blank,
        )  # fmt: skip

    def external_settings(self) -> ExternalSettings | None:
        """The external test set's settings, or None: its CSV read with its own columns where given, else the
        training CSV's, and in the training CSV's label form unless its own findings column(s) are named."""
        if self.external_test is None:
            return None
        own_form = self.external_findings_column is not None or bool(self.external_finding_columns)
        labels = replace(
            self.label_settings(), labels=self.external_labels, patient_column=None, patient_pattern=None,
            split_column=None,
            classes=(), split_lists=(),
            path_column=self.external_path_column or self.path_column,
            label_column=self.external_label_column or self.label_column,
            findings_column=self.external_findings_column if own_form else self.findings_column,
            finding_columns=self.external_finding_columns if own_form else self.finding_columns,
        )  # fmt: skip
        pairs = tuple(tuple(part.strip() for part in pair.split("=", 1)) for pair in self.external_map)
        return ExternalSettings(root=self.external_test, labels=labels, mapping=pairs)

    def min_side(self) -> int:
        """Images whose shorter side is below this are skipped: the given value, else the
        largest minimum input size among the chosen backbones."""
        if self.min_image_side is not None:
            return self.min_image_side
        return max(get_backbone(name).min_size for name in self.backbones)

    def sizes_for(self, spec: BackboneSpec) -> tuple[int, ...]:
        """The image sizes of the grid for ``spec``: the given ones, else its default."""
        return self.image_size or (spec.default_size,)

    def head_grid(self) -> list[HeadSettings]:
        """Every Adam-trained head per backbone and size: lr x dropout x l2 x schedule x seed."""
        shared = {f.name: getattr(self, f.name) for f in fields(HeadSettings) if f.name in _SHARED_HEAD_FIELDS}
        return [
            HeadSettings(**shared, lr=lr, dropout=dropout, l2=l2, lr_schedule=schedule, seed=self.seed + offset)
            for lr, dropout, l2, schedule, offset in itertools.product(
                self.lr, self.dropout, self.l2, self.lr_schedule, range(self.seeds)
            )
        ]

    def probe_grid(self) -> list[HeadSettings]:
        """The logistic-regression probes per backbone and size (none without ``probe``): deterministic, one seed."""
        return probe_settings(self.probe_l2, self.head_grid()[0]) if self.probe else []

    def extraction_plan(self) -> list[tuple[BackboneSpec, int]]:
        """Every (backbone, image size) whose features the run needs, in order."""
        return [(spec, size) for spec in map(get_backbone, self.backbones) for size in self.sizes_for(spec)]

    # Each stage's settings, derived here and nowhere else: a stage reads only its own object.

    def executor_settings(self) -> ExecutorSettings:
        """Where the tasks run; a local Dask cluster gets as many workers as ``--head-workers`` asks for."""
        return ExecutorSettings(kind=self.executor, cluster=self.cluster, local_workers=self.head_workers)

    def stages(
        self, precision: str | None = None, backbone_precisions: tuple[tuple[str, int, str], ...] = (),
        runtime: str | None = None, backbone_runtimes: tuple[tuple[str, int, str], ...] = (),
    ) -> StageSettings:  # fmt: skip
        """The settings object of every stage of the run; ``precision`` and ``runtime`` are the resolved ``auto``s,
        ``backbone_precisions`` and ``backbone_runtimes`` the backbones whose own check chose another
        (``benchmark.pipeline``).

        Without ``precision`` the extraction gets the configured one, which extraction refuses while it is ``auto``.
        """
        executor = self.executor_settings()
        cache_dir, results_dir = self._path_for_workers(self.cache_dir), self._path_for_workers(self.results_dir)
        weights = self.weights or "none"
        if weights not in WEIGHTS_CHOICES:
            weights = self._path_for_workers(weights)
        return StageSettings(
            executor=executor,
            labels=self.label_settings(),
            external=self.external_settings(),
            data=DataSettings(
                min_side=self.min_side(), val_fraction=self.val_fraction, test_fraction=self.test_fraction,
                val_source=self.val_source, limit_per_class=self.limit_per_class, leakage=self.leakage,
                seed=self.seed, cache_dir=cache_dir, progress=self.progress, rehash=self.rehash,
            ),
            extract=ExtractSettings(
                weights=weights, batch_size=self.extract_batch_size,
                shard_size=self.extract_shard_size, seed=self.seed, precision=precision or self.precision,
                jit_compile=self.jit_compile, runtime=runtime or self.runtime, pixel_cache=self.pixel_cache,
                cache_dir=cache_dir, progress=self.progress, backbone_precisions=backbone_precisions,
                backbone_runtimes=backbone_runtimes,
            ),
            sweep=SweepSettings(
                heads=tuple(self.head_grid()), probes=tuple(self.probe_grid()), select_by=self.select_by,
                head_workers=self.head_workers, results_dir=results_dir, cache_dir=cache_dir,
                progress=self.progress,
            ),
            finetune=FinetuneRun(
                model=self.finetune_settings(), weights=weights, results_dir=results_dir,
                cache_dir=cache_dir, progress=self.progress,
            ) if self.finetune else None,
            crossval=CrossValSettings(
                folds=self.cv, repeats=self.cv_repeats, seed=self.seed, val_fraction=self.val_fraction,
            ) if self.cv else None,
            report=ReportSettings(
                sort_metric=self.sort_metric, select_by=self.select_by, target_sensitivity=self.target_sensitivity,
                bootstrap=self.bootstrap, seed=self.seed, random_init=self.weights == "none",
                limit_per_class=self.limit_per_class,
            ),
        )  # fmt: skip

    def _path_for_workers(self, path: str) -> str:
        """``path`` as the stages use it: absolute on a cluster, where a worker's working folder is not ours."""
        return str(Path(path).resolve()) if self.executor_settings().distributed else path

    def finetune_settings(self) -> FinetuneSettings:
        """The fine-tuning model's settings, every value as given (nothing capped)."""
        return FinetuneSettings(
            layers=str(self.finetune_layers), lr=self.finetune_lr, lr_factor=self.finetune_lr_factor,
            epochs=self.finetune_epochs, sizes=self.finetune_sizes, augment=self.augment,
            batch_size=self.finetune_batch_size, patience=self.finetune_patience, class_weight=self.class_weight,
            seed=self.seed,
        )  # fmt: skip

    def to_json(self) -> dict:
        """Every field as a JSON value (tuples become lists), for ``run.json``; ``from_json`` reads it back."""
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> RunConfig:
        """The config a run wrote into its ``run.json``; keys of other versions are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in known})

    @staticmethod
    def display(values: dict) -> dict:
        """``to_json`` values for display: a list becomes its values joined by spaces ("default" when empty)."""
        return {name: " ".join(map(str, v)) or "default" if isinstance(v, list | tuple) else v
                for name, v in values.items()}  # fmt: skip


@dataclass(frozen=True)
class StageSettings:
    """One settings object per stage of a run, all derived from one ``RunConfig`` by ``RunConfig.stages``."""

    executor: ExecutorSettings  # where extraction, head groups and fine-tuning run
    labels: LabelSettings
    external: ExternalSettings | None  # None: no external test
    data: DataSettings
    extract: ExtractSettings
    sweep: SweepSettings
    finetune: FinetuneRun | None  # None: no fine-tuning stage
    report: ReportSettings
    crossval: CrossValSettings | None = None  # None: no cross-validation of the heads


_TYPE_CHECKS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}


def _check_type(name: str, annotation: str, value) -> str | None:
    """Why ``value`` does not fit the RunConfig field ``name`` of type ``annotation``, or None."""
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if base.startswith("tuple["):
        item = base[len("tuple[") :].split(",")[0]
        check, words = _TYPE_CHECKS[item]
        items = value if isinstance(value, list) else [value]
        return None if all(check(v) for v in items) else f"{name} must be {words} or a list of them, not {value!r}"
    check, words = _TYPE_CHECKS[base]
    if check(value):
        return None
    return f"{name} must be {words}{' (or left out)' if optional else ''}, not {value!r}"


def load_toml(path: str | Path) -> dict:
    """Settings from a TOML file; an unknown key or a value of the wrong type fails, naming what is valid.

    ``tomllib`` only ever builds strings, numbers, booleans, dates, lists and
    tables, so a config file cannot run code.
    """
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from error
    annotations = {f.name: f.type for f in fields(RunConfig)}
    unknown = sorted(set(values) - set(annotations))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in {path}; valid keys: {', '.join(sorted(annotations))}")
    for name, value in values.items():
        problem = _check_type(name, annotations[name], value)
        if problem:
            raise ValueError(f"{path}: {problem}")
    return values
