"""One run, stage by stage: data -> features -> heads -> selection -> fine-tuning -> reports.

Each stage takes its own settings object, derived from the run's
``RunConfig`` in one place (``RunConfig.stages``). Errors a user can fix end
the run with one line naming what to do; finished work is always kept.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter hides our output

from backbones import INT8, WeightsUnavailableError  # noqa: E402
from benchmark.config import RunConfig, StageSettings  # noqa: E402
from benchmark.evaluation.metrics import binary_tasks  # noqa: E402
from benchmark.evaluation.subgroups import parse_subgroups, subgroups_problem  # noqa: E402
from benchmark.records import SweepResult  # noqa: E402
from benchmark.reporting import provenance  # noqa: E402
from benchmark.reporting.crossval_report import write_crossval  # noqa: E402
from benchmark.reporting.report import write_data_report, write_external_skipped, write_reports  # noqa: E402
from benchmark.run_folder import EXTERNAL_LEAKAGE_CSV, LEAKAGE_CSV, SKIPPED_CSV, RunFolder, RunInfo  # noqa: E402
from benchmark.tracking import TrackingError, log_finished_run, preflight  # noqa: E402
from benchmark.training.crossval import check_folds, run_crossval  # noqa: E402
from benchmark.training.finetune import finetune_winners  # noqa: E402
from benchmark.training.sweep import predict_external, run_sweep  # noqa: E402
from common.console import copy_library_log  # noqa: E402
from common.executors import Executor, ExecutorError, open_executor  # noqa: E402
from features.cache import FolderInUseError, folder_lock  # noqa: E402
from features.data.audit import (  # noqa: E402
    DatasetError,
    LeakageError,
    audit_images,
    check_classes,
    external_overlap,
    flag_leakage,
)
from features.data.dataset import Dataset, describe_counts, make_splits  # noqa: E402
from features.data.external import load_external  # noqa: E402
from features.data.images import UnreadableImageError  # noqa: E402
from features.data.labels import load_dataset  # noqa: E402
from features.data.phantom import make_phantom_dataset  # noqa: E402
from features.data.views import keep_views, views_problem  # noqa: E402
from features.extract import (  # noqa: E402
    BackboneFeatures,
    extract_all,
    extraction_lines,
    forward_passes,
    resource_problems,
)
from features.quantize import calibration_set, unmeasured_fidelity  # noqa: E402
from features.runtime import resolve_backbones, resolve_runtime, run_work  # noqa: E402
from features.settings import BackboneCompute, Choice, ComputePlan, DataSettings  # noqa: E402


def error_line(prog: str, message: object, code: int = 2) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr; return ``code``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def resolve_data(config: RunConfig) -> tuple[Path, bool]:
    """The dataset folder to read and whether it is the synthetic phantom set (a ``resolved`` config has no data)."""
    if config.data is not None:
        return Path(config.data), False
    print("=" * 78)
    print("No --data given and no data/chest_xray/ folder: running on the SYNTHETIC PHANTOM set.")
    print("These numbers are NOT MEDICAL. Pass --data DIR to benchmark real radiographs.")
    print("=" * 78)
    root = Path(config.cache_dir).parent / "phantom"
    return make_phantom_dataset(root, seed=config.seed), True


def prepare_data(settings: DataSettings, dataset: Dataset, folder: RunFolder) -> Dataset:
    """Keep the ``--views`` asked for, check every image of the scanned ``dataset``, split, and look for leakage;
    write what was left out."""
    dataset = keep_views(dataset, settings.views)
    dataset = audit_images(dataset, min_side=settings.min_side, cache_dir=settings.cache_dir,
                           progress=settings.progress, rehash=settings.rehash)  # fmt: skip
    dataset = make_splits(dataset, val_fraction=settings.val_fraction, test_fraction=settings.test_fraction,
                          val_source=settings.val_source, limit_per_class=settings.limit_per_class,
                          seed=settings.seed)  # fmt: skip
    try:
        dataset = flag_leakage(dataset, settings.leakage)
    except LeakageError as error:  # written down before the run stops, so the message's file is there to read
        written = write_data_report(folder, replace(dataset, leakage=error.rows))
        raise DatasetError(f"{error} The copies are listed in {written[LEAKAGE_CSV]}.") from None
    written = write_data_report(folder, dataset)
    if dataset.skipped:
        print(f"{len(dataset.skipped)} files left out, each with its reason, in {written[SKIPPED_CSV]}")
    if dataset.leakage:
        groups = len({row.group for row in dataset.leakage})
        print(f"WARNING: {groups} image(s) found in two splits or under two labels (same bytes), "
              f"listed in {written[LEAKAGE_CSV]} (--leakage {settings.leakage})")  # fmt: skip
    check_classes(dataset)
    return dataset


def prepare_external(settings: DataSettings, external: Dataset, folder: RunFolder, dataset: Dataset) -> Dataset:
    """Check every image of the external test set as the training images are, and against the training images
    (``--leakage``); write ``external_skipped.csv`` and ``external_leakage.csv``."""
    external = audit_images(external, min_side=settings.min_side, cache_dir=settings.cache_dir,
                            progress=settings.progress, rehash=settings.rehash)  # fmt: skip
    external = external_overlap(dataset, external, settings.leakage)
    written = write_external_skipped(folder, external)
    if external.leakage:
        print(f"external test: {len(external.leakage)} image(s) also in the internal data (same bytes), "
              f"--leakage {settings.leakage}; listed in {folder.file(EXTERNAL_LEAKAGE_CSV)}")  # fmt: skip
    if external.skipped:
        print(f"external test: {len(external.skipped)} files left out, each with its reason, in {written}")
    if not external.records:
        raise DatasetError(f"the external test set {external.root} has no usable image; see {written}")
    return external


def report_extraction(extracted: list[BackboneFeatures], external: list[BackboneFeatures] | None = None) -> None:
    """One line per backbone and size, for the run's images and the external test set's: from cache, or how fast."""
    for line in extraction_lines(extracted, external):
        print(line)


def run(config: RunConfig, argv: list[str] | None = None, prog: str = "run_benchmark.py") -> int:
    """Run every stage of a parsed ``config``: data -> features -> heads -> selection -> reports; the exit code.

    ``argv`` is recorded in ``run.json`` as the command. A file that cannot be
    written (full disk, a folder that cannot be made) ends the run with one
    line, wherever it happens; finished work is kept.
    """
    try:
        return _run(config, argv, prog)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error_line(prog, f"the disk is full ({error}). Free some space, or point --cache-dir and "
                              "--results-dir at a larger disk, then run the same command again: finished features "
                              "and grid points are kept, and the file being written was removed, never trusted.",
                              1)  # fmt: skip
        return error_line(prog, f"cannot write {error.filename or 'a file'}: {error.strerror or error}. Check that "
                          "--results-dir and --cache-dir are folders you can write to; finished work is kept.",
                          1)  # fmt: skip


@dataclass
class RunContext:
    """What every step of one run reads, built once before any work: the resolved config and the stage settings
    derived from it, the data, the results folder, how the run was started, and (once resolved) where it computes.
    The steps take this one object instead of a handful of loose values."""

    config: RunConfig
    stages: StageSettings
    dataset: Dataset
    external: Dataset | None
    data_root: Path
    phantom: bool
    command: str
    prog: str
    executor: Executor | None = None
    compute: ComputePlan | None = None

    @property
    def folder(self) -> RunFolder:
        """The run's results folder."""
        return RunFolder(self.config.results_dir)


def _run(config: RunConfig, argv: list[str] | None, prog: str) -> int:
    # Before anything reads it (absolute paths, data/chest_xray/ found, the default weights): run.json records it.
    config = config.resolved()
    try:  # a missing package or a server that does not answer costs nothing yet
        preflight(config.tracking_settings())
    except ValueError as error:
        return error_line(prog, error)
    data_root, phantom = resolve_data(config)
    try:
        stages = config.stages()
        dataset = load_dataset(data_root, stages.labels)
        external = None
        if stages.external is not None:
            external = load_external(stages.external, dataset.classes, dataset.multi_label)
    except (ValueError, OSError) as error:
        return error_line(prog, error)
    problem = selection_problem(config.select_by, dataset) or attribute_problem(config, dataset)
    if problem:
        return error_line(prog, problem)
    command = shlex.join([*_invocation(prog), *(sys.argv[1:] if argv is None else argv)])
    context = RunContext(config, stages, dataset, external, data_root, phantom, command, prog)
    try:
        with ExitStack() as locks:
            # Two runs writing the same folders would overwrite each other's files: one run per folder.
            for folder, flag in {Path(config.cache_dir).resolve(): "--cache-dir",
                                 Path(config.results_dir).resolve(): "--results-dir"}.items():  # fmt: skip
                locks.enter_context(folder_lock(folder, flag))
            # Connected before any work, so a wrong address or a missing engine costs nothing.
            context.executor = locks.enter_context(open_executor(stages.executor))
            if context.executor.distributed:
                print(f"executor: {context.executor.describe()}")
            code = _run_locked(context)
            copy_library_log(context.folder.library_log)  # the libraries' own lines, kept off the terminal
            return code
    except (FolderInUseError, ExecutorError) as error:
        return error_line(prog, error, 1)


def selection_problem(select_by: str, dataset: Dataset) -> str | None:
    """Why ``--select-by`` cannot select on this dataset's tasks, or None."""
    task = select_by.partition(".")[0]
    tasks = binary_tasks(dataset.classes, dataset.multi_label)
    if select_by == "macro_auc" and not dataset.multi_label:
        return "--select-by macro_auc is for multi-label runs; here use val_loss or TASK.METRIC"
    if select_by not in ("val_loss", "macro_auc") and task not in tasks:
        return f"--select-by task {task!r} is not one of {', '.join(tasks)}"
    return None


def attribute_problem(config: RunConfig, dataset: Dataset) -> str | None:
    """Why ``--views`` or ``--subgroups`` cannot act on this dataset (no image records the attribute), or None:
    found from the scanned records, before any image is read."""
    recorded = [record.attributes for record in dataset.records]
    return views_problem(config.views, dataset) or subgroups_problem(parse_subgroups(config.subgroups), recorded)


def _run_locked(context: RunContext) -> int:
    config, prog, stages = context.config, context.prog, context.stages
    try:
        context.dataset = dataset = prepare_data(stages.data, context.dataset, context.folder)
        if stages.crossval is not None:  # before extraction: too many folds for the patients costs nothing
            check_folds(stages.crossval, dataset)
        if context.external is not None:
            context.external = prepare_external(stages.data, context.external, context.folder, dataset)
            print(f"external test: {context.external.root} ({context.external.layout}), "
                  f"{len(context.external.records)} images")  # fmt: skip
    except (DatasetError, ValueError, OSError) as error:
        return error_line(prog, error)
    print(f"data: {context.data_root} ({dataset.layout}), weights: {config.weights}")
    print(describe_counts(dataset))
    # Resolved here, once: every stage, the cache keys and run.json see the same runtimes and precisions.
    images = len(dataset.records) + (len(context.external.records) if context.external is not None else 0)
    try:
        context.compute = resolve_compute(config, images, dataset)
    except ValueError as error:  # int8 with an empty train split
        return error_line(prog, error)
    context.stages = stages = stages.computed(context.compute)
    extract = stages.extract
    problems = [problem for spec, size in config.extraction_plan()
                for problem in resource_problems(spec, size, len(dataset.records), extract.batch_size,
                                                 Path(extract.cache_dir), extract.pixel_cache)]  # fmt: skip
    if problems:
        return error_line(prog, "; ".join(dict.fromkeys(problems)), 2)
    try:
        return _compute(context)
    except WeightsUnavailableError as error:
        return error_line(prog, error, 1)
    except UnreadableImageError as error:
        return error_line(prog, f"{error}. The file changed after the image check; run the same command again "
                          "and it will be checked (and skipped) anew.", 1)  # fmt: skip


def resolve_compute(config: RunConfig, images: int | None = None, dataset: Dataset | None = None) -> ComputePlan:
    """``--runtime auto`` and ``--precision auto`` resolved for the run and checked on each backbone; printed.

    The plan holds the run's choice and each backbone's, with its reason: what every stage and ``run.json`` see;
    with ``--precision int8``, the training images of ``dataset`` its backbones are calibrated on.
    Timed here, in the driver: on a cluster whose workers have other processors, pass the runtime and precision
    (``--runtime``, ``--precision``).
    """
    extraction = config.extraction_plan()
    work = run_work(images, [size for _, size in extraction])
    runtime = resolve_runtime(config.runtime, config.precision, config.jit_compile, work=work)
    choice, chosen = resolve_backbones(runtime, config.precision, extraction, config.cache_dir, images)
    print(f"runtime: {runtime.runtime} ({runtime.reason})")
    print(f"precision: {choice.precision} ({choice.reason})")
    backbones = tuple(BackboneCompute(name, size, Choice(mine.requested, mine.runtime, mine.reason),
                                      Choice(precision.requested, precision.precision, precision.reason))
                      for (name, size), (mine, precision) in chosen.items())  # fmt: skip
    plan = ComputePlan(Choice(runtime.requested, runtime.runtime, runtime.reason),
                       Choice(choice.requested, choice.precision, choice.reason), backbones)  # fmt: skip
    for one in plan.own():
        print(f"{one.backbone} at {one.size} px: {one.runtime.value} ({one.runtime.reason}), {one.precision.value} "
              f"({one.precision.reason})")  # fmt: skip
    return _with_calibration(plan, config, dataset)


def _with_calibration(plan: ComputePlan, config: RunConfig, dataset: Dataset | None) -> ComputePlan:
    """``plan`` with the train-split sample its int8 backbones are calibrated on (said), where it has any."""
    quantized = [one.backbone for one in plan.backbones if one.precision.value == INT8]
    if not quantized and plan.precision.value != INT8:
        return plan
    calibration = calibration_set(dataset, config.int8_calibration, config.seed)
    print(f"int8: calibrated on {len(calibration.paths)} images of the train split (seed {config.seed}), the same "
          "for every backbone and the external test set")  # fmt: skip
    if note := unmeasured_fidelity(quantized):
        print(note)
    return replace(plan, calibration=calibration)


def _compute(context: RunContext) -> int:
    """Extraction, the sweep and fine-tuning through the run's executor; then the reports, here."""
    stages, executor, plan = context.stages, context.executor, context.config.extraction_plan()
    extracted = extract_all(stages.extract, context.dataset, plan, executor)
    if context.config.extract_only:
        report_extraction(extracted)
        return 0
    sweep = run_sweep(stages.sweep, context.dataset, extracted, executor)
    if stages.crossval is not None:
        sweep.crossval = run_crossval(stages.crossval, stages.sweep, context.dataset, extracted, executor)
        written = write_crossval(context.folder, sweep.crossval, stages.report.plots)
        print(f"cross-validation: {sweep.crossval.trained} heads trained; wrote "
              f"{', '.join(map(str, written.values()))}")  # fmt: skip
    external_features = []
    if context.external is not None:
        external_features = extract_all(stages.extract, context.external, plan, executor)
        features_of = {(one.backbone, one.image_size): one.features for one in external_features}
        predict_external(sweep.winners, features_of, context.folder.heads)
    return _finish(context, extracted, sweep, external_features)


def _finish(
    context: RunContext, extracted: list[BackboneFeatures], sweep: SweepResult,
    external_features: list[BackboneFeatures],
) -> int:  # fmt: skip
    """Fine-tune the winners if asked, then write the reports (or say why there is nothing to report).

    A run in which every head of a kind failed, or nothing was fine-tuned though it was asked for, writes the
    reports of what worked and ends with one line saying what failed (exit code 1).
    """
    stages, prog = context.stages, context.prog
    tuned = [] if stages.finetune is None else finetune_winners(sweep.winners, context.dataset, stages.finetune,
                                                                 context.executor)  # fmt: skip
    sweep.winners += tuned
    report_extraction(extracted, external_features)
    for point in sweep.failed:
        print(f"grid point {point.point_id} FAILED: {point.error}")
    if not sweep.winners:
        errors = sorted({point.error for point in sweep.failed})
        return error_line(prog, f"every grid point failed ({len(sweep.failed)}), so there is nothing to report: "
                          f"{'; '.join(errors[:3])}. Features and each point's record are kept under "
                          f"{context.config.cache_dir} and {context.folder.heads}; a rerun trains the failed "
                          "points again.", 1)  # fmt: skip
    run_info = _run_info(context, extracted, sweep, external_features)
    paths = write_reports(context.folder, sweep, context.dataset, run_info, stages.report, context.external)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if context.phantom:
        print("Reminder: SYNTHETIC PHANTOM data, weights none: the numbers above are not medical.")
    failed = wholesale_failures(sweep, stages.finetune is not None and not tuned)
    problems = [f"{failed}; the reports hold what worked" if failed else None, track_finished_run(context)]
    return error_line(prog, "; ".join(filter(None, problems)), 1) if any(problems) else 0


def track_finished_run(context: RunContext) -> str | None:
    """Log the finished run where ``--track`` or ``--tensorboard`` ask, from its results folder; why it failed, or
    None."""
    if not context.stages.tracking.active:
        return None
    try:
        for line in log_finished_run(context.stages.tracking, context.folder):
            print(line)
    except TrackingError as error:
        return f"the run finished and its results are in {context.folder.root}, but logging it failed: {error}"
    return None


KIND_NAMES = {"keras": "Keras head", "logreg": "logistic-regression probe"}


def wholesale_failures(sweep: SweepResult, nothing_tuned: bool) -> str | None:
    """What failed as a whole, in one line: every grid point of a kind of head, or all fine-tuning (``nothing_tuned``:
    asked for, none came back); None where every kind has a working point."""
    problems = []
    for kind in dict.fromkeys(point.key.kind for point in sweep.points):
        points = [point for point in sweep.points if point.key.kind == kind]
        if not any(point.done for point in points):
            errors = sorted({(point.error or "?").splitlines()[0] for point in points})  # one line
            count = f"{len(points)} grid point{'s' if len(points) > 1 else ''}"
            problems.append(f"every {KIND_NAMES.get(kind, kind)} failed ({count}: {'; '.join(errors[:2])})")
    if nothing_tuned:
        problems.append("--finetune fine-tuned nothing: no backbone has a Keras head to start from")
    return "; ".join(problems) or None


def _invocation(prog: str) -> list[str]:
    """How the run was started, as a user would type it again."""
    return prog.split() if prog.startswith("cxr-bench") else ["python", prog]


def _run_info(
    context: RunContext, extracted: list[BackboneFeatures], sweep: SweepResult,
    external_features: list[BackboneFeatures],
) -> RunInfo:  # fmt: skip
    """``run.json``: the config that made the run (readable back with ``RunConfig.from_json``) and its provenance."""
    return RunInfo(
        config=context.config.to_json(),
        phantom=context.phantom,
        classes=list(context.dataset.classes),
        git=provenance.git_revision(),
        versions=provenance.versions(),
        machine=provenance.machine(),
        timestamp=provenance.timestamp(),
        command=context.command,
        forward_passes=forward_passes(extracted, external_features),
        heads_trained_this_run=sweep.trained,
        grid_points_failed=len(sweep.failed),
        extraction={one.name: asdict(one.stats) for one in extracted},
        external_extraction={one.name: asdict(one.stats) for one in external_features},
        # The config says what was asked (auto); the plan says what the backbones computed in, where, and why.
        compute=context.compute,
    )
