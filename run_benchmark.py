"""cxr-bench: which ImageNet backbone transfers best to chest X-rays?

Extracts pooled features from each backbone (cached), trains a
GlobalAveragePooling -> Dropout -> softmax head per backbone on train,
early-stopped on validation, and reports test metrics per binary task in
results/leaderboard.md, leaderboard.csv and predictions.csv.

With no --data and no data/chest_xray/ folder, it runs on a built-in synthetic
phantom set so the whole pipeline can be seen offline; those numbers are not medical.
"""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter hides our output

from backbones import BACKBONES, PRECISIONS, WeightsUnavailableError, get_backbone  # noqa: E402
from benchmark.config import RunConfig, load_toml  # noqa: E402
from benchmark.evaluation.metrics import METRICS, binary_tasks  # noqa: E402
from benchmark.reporting import provenance  # noqa: E402
from benchmark.reporting.report import write_data_report, write_reports  # noqa: E402
from benchmark.training.finetune import finetune_winners  # noqa: E402
from benchmark.training.heads import LR_SCHEDULES  # noqa: E402
from benchmark.training.sweep import extract_all, run_sweep  # noqa: E402
from features.cache import FeatureCache, FolderInUseError, folder_lock  # noqa: E402
from features.data.audit import LEAKAGE_POLICIES, DatasetError, audit_images, check_classes, flag_leakage  # noqa: E402
from features.data.dataset import Dataset, describe_counts, make_splits, scan_dataset  # noqa: E402
from features.data.images import UnreadableImageError  # noqa: E402
from features.data.phantom import make_phantom_dataset  # noqa: E402
from features.extract import ExtractionStats, resource_problems  # noqa: E402

DEFAULT_DATA = Path("data/chest_xray")


def build_parser() -> argparse.ArgumentParser:
    """The command line; defaults are shown from RunConfig but applied after --config."""
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="run_benchmark.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file setting any option below (by its field name, "
        "for example lr = [1e-4, 1e-3]); the command line overrides it",
    )

    def add(group, flag, help, **kwargs):
        field = flag.lstrip("-").replace("-", "_")
        default = getattr(d, kwargs.pop("field", field), None)
        if isinstance(default, tuple):
            default = " ".join(str(v) for v in default) or "each backbone's own"
        group.add_argument(flag, help=f"{help} (default: {default})", **kwargs)

    g = p.add_argument_group("data")
    add(
        g,
        "--data",
        f"dataset folder, Kermany or class-folder layout; else {DEFAULT_DATA}/ if present, else the "
        "synthetic phantom set",
        metavar="DIR",
    )
    add(g, "--limit-per-class", "keep at most N images per class and split, for quick runs", type=int, metavar="N")
    add(g, "--val-fraction", "share of train carved as validation, stratified, whole patients", type=float, metavar="F")
    add(
        g,
        "--val-source",
        "carve validation from train, or use the dataset's own val folder",
        choices=("carve", "official"),
    )
    add(g, "--test-fraction", "share carved as test when the data has no test split", type=float, metavar="F")
    add(
        g,
        "--min-image-side",
        "skip images whose shorter side is below PX; 0 keeps every readable image (default: the largest "
        "minimum input size of the chosen backbones)",
        type=int,
        metavar="PX",
    )
    add(
        g,
        "--leakage",
        "images found in two splits or under two labels (same bytes): warn and keep them, drop the "
        "train/val copies, or fail",
        choices=LEAKAGE_POLICIES,
    )
    g = p.add_argument_group("backbones and features")
    add(g, "--backbones", f"backbones to compare: {', '.join(BACKBONES)}", nargs="+", metavar="NAME")
    add(
        g,
        "--weights",
        "imagenet (Keras download), none (random init) or a folder of weight files; "
        "imagenet on real data, none on the phantom set",
        metavar="imagenet|none|DIR",
    )
    add(g, "--image-size", "input sizes to sweep, for every backbone", nargs="+", type=int, metavar="PX")
    add(g, "--extract-batch-size", "images per backbone forward pass", type=int, metavar="N")
    add(
        g,
        "--extract-shard-size",
        "images per saved extraction shard: a killed extraction resumes from the last whole shard",
        type=int,
        metavar="N",
    )
    add(g, "--cache-dir", "feature (and decoded pixel) cache folder", metavar="DIR")
    add(
        g,
        "--precision",
        "backbone compute type; bfloat16/float16 keep float32 weights (Keras mixed precision)",
        choices=list(PRECISIONS),
    )
    add(g, "--jit-compile", "XLA-compile the backbone forward pass", action="store_true")
    add(
        g,
        "--no-pixel-cache",
        "decode images for every backbone instead of once per size into a uint8 cache",
        dest="pixel_cache",
        action="store_false",
        field="pixel_cache",
    )
    add(g, "--extract-only", "extract (and cache) features, train nothing", action="store_true")
    g = p.add_argument_group("head grid: every combination is a grid point")
    add(g, "--lr", "Adam learning rates", nargs="+", type=float, metavar="LR")
    add(g, "--dropout", "dropout rates before the softmax", nargs="+", type=float, metavar="P")
    add(
        g,
        "--l2",
        "L2 penalties on the softmax kernel: loss + L2 x sum(W^2), as an L2-regularised logistic regression",
        nargs="+",
        type=float,
        metavar="L2",
    )
    add(
        g,
        "--lr-schedule",
        "constant and/or step (decay by --step-decay-factor every --step-decay-epochs)",
        nargs="+",
        choices=LR_SCHEDULES,
    )
    add(g, "--seeds", "train each grid point with N seeds; tables show mean ± std", type=int, metavar="N")
    add(
        g,
        "--select-by",
        "validation score that picks each backbone's grid point: val_loss or TASK.METRIC, e.g. normal_vs_pneumonia.auc",
        metavar="SCORE",
    )
    add(
        g,
        "--probe-l2",
        "penalties of the logistic-regression probe (scikit-learn L-BFGS, C = 1/(2 x L2 x n_train)), "
        "selected on validation and reported as '<backbone>-logreg' beside each head",
        nargs="+",
        type=float,
        metavar="L2",
    )
    add(g, "--no-probe", "no logistic-regression probe", dest="probe", action="store_false", field="probe")
    g = p.add_argument_group("head training")
    add(g, "--epochs", "maximum epochs", type=int, metavar="N")
    add(g, "--batch-size", "head batch size", type=int, metavar="N")
    add(g, "--patience", "early-stopping patience on validation loss", type=int, metavar="N")
    add(g, "--class-weight", "weigh classes equally in the loss", choices=("none", "balanced"))
    add(
        g,
        "--no-standardize",
        "feed raw pooled features to the head instead of z-scoring them with train statistics",
        dest="standardize",
        action="store_false",
        field="standardize",
    )
    add(
        g,
        "--head-workers",
        "processes training head groups in parallel, one thread each; 0: one per CPU core up to 4, 1: in this process",
        type=int,
        metavar="N",
    )
    add(g, "--step-decay-epochs", "epochs between learning-rate drops of the step schedule", type=int, metavar="N")
    add(g, "--step-decay-factor", "factor of each drop of the step schedule", type=float, metavar="F")
    add(g, "--seed", "seeds splits, random init and the first head seed", type=int, metavar="N")
    g = p.add_argument_group("fine-tuning: after the frozen head, train backbone + head end to end on images")
    add(
        g,
        "--finetune",
        "fine-tune each backbone's selected head; rows '<backbone>-ft' join the leaderboard",
        action="store_true",
    )
    add(g, "--finetune-layers", "top layers to unfreeze (BatchNormalization stays frozen), or all", metavar="N|all")
    add(g, "--finetune-lr", "learning rate of the head", type=float, metavar="LR")
    add(
        g,
        "--finetune-lr-factor",
        "backbone learning rate = LR x F at the top, 10x lower at the lowest unfrozen layer",
        type=float,
        metavar="F",
    )
    add(g, "--finetune-epochs", "maximum epochs per size (early stopping on validation loss)", type=int, metavar="N")
    add(g, "--finetune-batch-size", "images per fine-tuning step", type=int, metavar="N")
    add(g, "--finetune-patience", "epochs without a better validation loss before a size stops", type=int, metavar="N")
    add(
        g,
        "--finetune-sizes",
        "progressive resizing: train at each size in turn, small first (default: the head's)",
        nargs="+",
        type=int,
        metavar="PX",
    )
    add(
        g,
        "--augment",
        "light augmentation while fine-tuning: flip, rotation, zoom, brightness, contrast",
        action="store_true",
    )
    g = p.add_argument_group("output")
    add(g, "--results-dir", "where reports go", metavar="DIR")
    add(g, "--sort-metric", "test metric the leaderboard tables are sorted by", choices=METRICS)
    add(
        g,
        "--target-sensitivity",
        "operating point: the threshold is chosen on validation to reach this sensitivity, then reported on test",
        type=float,
        metavar="S",
    )
    add(g, "--bootstrap", "resamples of the test set for 95%% confidence intervals; 0: none", type=int, metavar="N")
    add(g, "--no-progress", "no progress bars", dest="progress", action="store_false", field="progress")
    return p  # fmt: skip


def parse_args(argv: list[str] | None) -> RunConfig:
    """Command line (over ``--config`` TOML, over the dataclass defaults) -> RunConfig."""
    given = vars(build_parser().parse_args(argv))
    values = load_toml(given.pop("config")) if "config" in given else {}
    values.update(given)
    return RunConfig(**values)


def resolve_data(config: RunConfig) -> tuple[Path, bool]:
    """The dataset folder to read and whether it is the synthetic phantom set."""
    if config.data is not None:
        return Path(config.data), False
    if DEFAULT_DATA.is_dir():
        return DEFAULT_DATA, False
    print("=" * 78)
    print("No --data given and no data/chest_xray/ folder: running on the SYNTHETIC PHANTOM set.")
    print("These numbers are NOT MEDICAL. Pass --data DIR to benchmark real radiographs.")
    print("=" * 78)
    root = Path(config.cache_dir).parent / "phantom"
    return make_phantom_dataset(root, seed=config.seed), True


def prepare_data(config: RunConfig, dataset: Dataset) -> Dataset:
    """Check every image of the scanned ``dataset``, split, and look for leakage; write what was left out."""
    dataset = audit_images(dataset, min_side=config.min_side(), cache_dir=config.cache_dir, progress=config.progress)
    dataset = make_splits(
        dataset,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        val_source=config.val_source,
        limit_per_class=config.limit_per_class,
        seed=config.seed,
    )
    dataset = flag_leakage(dataset, config.leakage)
    written = write_data_report(Path(config.results_dir), dataset)
    if dataset.skipped:
        print(f"{len(dataset.skipped)} files left out, each with its reason, in {written['skipped.csv']}")
    if dataset.leakage:
        groups = len({row["group"] for row in dataset.leakage})
        print(f"WARNING: {groups} image(s) found in two splits or under two labels (same bytes), "
              f"listed in {written['leakage.csv']} (--leakage {config.leakage})")  # fmt: skip
    check_classes(dataset)
    return dataset


def report_extraction(extraction: dict[str, ExtractionStats]) -> None:
    """One line per backbone and size: from cache, or how fast it went."""
    for name, stats in extraction.items():
        decoding = f" and {stats.decode_seconds:.1f} s decoding into the pixel cache" if stats.decode_seconds else ""
        done = "cache, 0 forward passes" if stats.from_cache else (
            f"{stats.forward_batches} forward passes, {stats.images_per_second:.1f} img/s "
            f"after a {stats.build_seconds:.1f} s model build{decoding}")  # fmt: skip
        print(f"{name}: features from {done}")


def _error(message: object, code: int = 2) -> int:
    print(f"run_benchmark.py: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, then data -> features -> heads -> selection -> reports.

    A file that cannot be written (full disk, a folder that cannot be made)
    ends the run with one line, wherever it happens; finished work is kept.
    """
    try:
        return _run(argv)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return _error(f"the disk is full ({error}). Free some space, or point --cache-dir and --results-dir "
                          "at a larger disk, then run the same command again: finished features and grid points "
                          "are kept, and the file being written was removed, never trusted.", 1)  # fmt: skip
        return _error(f"cannot write {error.filename or 'a file'}: {error.strerror or error}. Check that "
                      "--results-dir and --cache-dir are folders you can write to; finished work is kept.",
                      1)  # fmt: skip


def _run(argv: list[str] | None) -> int:
    try:
        config = parse_args(argv)
        config.validate()
    except (ValueError, TypeError, OSError) as error:
        return _error(error)
    data_root, phantom = resolve_data(config)
    if config.weights is None:
        config.weights = "none" if phantom else "imagenet"
    try:
        dataset = scan_dataset(data_root)
    except (ValueError, OSError) as error:
        return _error(error)
    task = config.select_by.partition(".")[0]
    if config.select_by != "val_loss" and task not in binary_tasks(dataset.classes):
        return _error(f"--select-by task {task!r} is not one of {', '.join(binary_tasks(dataset.classes))}")
    try:
        with ExitStack() as locks:
            # Two runs writing the same folders would overwrite each other's files: one run per folder.
            for folder, flag in {Path(config.cache_dir).resolve(): "--cache-dir",
                                 Path(config.results_dir).resolve(): "--results-dir"}.items():  # fmt: skip
                locks.enter_context(folder_lock(folder, flag))
            return _run_locked(config, dataset, data_root, phantom, argv)
    except FolderInUseError as error:
        return _error(error, 1)


def _run_locked(config: RunConfig, dataset: Dataset, data_root: Path, phantom: bool, argv: list[str] | None) -> int:
    try:
        dataset = prepare_data(config, dataset)
    except (DatasetError, ValueError, OSError) as error:
        return _error(error)
    print(f"data: {data_root} ({dataset.layout}), weights: {config.weights}")
    print(describe_counts(dataset))
    problems = [problem for name in config.backbones for size in config.sizes_for(get_backbone(name))
                for problem in resource_problems(get_backbone(name), size, len(dataset.records),
                                                 config.extract_batch_size, Path(config.cache_dir),
                                                 config.pixel_cache)]  # fmt: skip
    if problems:
        return _error("; ".join(dict.fromkeys(problems)), 2)
    try:
        if config.extract_only:
            report_extraction(extract_all(config, dataset, FeatureCache(config.cache_dir)))
            return 0
        sweep = run_sweep(config, dataset, FeatureCache(config.cache_dir))
    except WeightsUnavailableError as error:
        return _error(error, 1)
    except UnreadableImageError as error:
        return _error(f"{error}. The file changed after the image check; run the same command again "
                      "and it will be checked (and skipped) anew.", 1)  # fmt: skip
    if config.finetune:
        sweep.winners += finetune_winners(
            sweep.winners, dataset, config.finetune_settings(), weights=config.weights, seed=config.seed,
            results_dir=Path(config.results_dir), cache_dir=Path(config.cache_dir), progress=config.progress,
        )  # fmt: skip
    report_extraction(sweep.extraction)
    failed = [p for p in sweep.points if p["status"] != "done"]
    for point in failed:
        print(f"grid point {point['point_id']} FAILED: {point['error']}")
    if not sweep.winners:
        errors = sorted({point["error"] for point in failed})
        return _error(f"every grid point failed ({len(failed)}), so there is nothing to report: "
                      f"{'; '.join(errors[:3])}. Features and each point's record are kept under "
                      f"{config.cache_dir} and {Path(config.results_dir) / 'heads'}; a rerun trains the failed "
                      "points again.", 1)  # fmt: skip
    run_info = {
        "config": config.as_dict(),
        "phantom": phantom,
        "classes": list(dataset.classes),
        "git": provenance.git_revision(),
        "versions": provenance.versions(),
        "machine": provenance.machine(),
        "timestamp": provenance.timestamp(),
        "command": shlex.join(["python", "run_benchmark.py", *(sys.argv[1:] if argv is None else argv)]),
        "forward_passes": sum(stats.forward_batches for stats in sweep.extraction.values()),
        "heads_trained_this_run": sweep.trained,
        "grid_points_failed": len(failed),
        "extraction": {name: asdict(stats) for name, stats in sweep.extraction.items()},
    }
    paths = write_reports(Path(config.results_dir), sweep, dataset, run_info)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if phantom:
        print("Reminder: SYNTHETIC PHANTOM data, weights none: the numbers above are not medical.")
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    try:
        code = main()
    except KeyboardInterrupt:
        code = _error("interrupted. Finished features, extraction shards and grid points are kept: run the same "
                      "command again to resume.", 130)  # fmt: skip
    print(f"done in {time.perf_counter() - started:.0f} s")
    sys.exit(code)
