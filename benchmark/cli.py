"""The run's command line: the options of ``run_benchmark.py`` and ``cxr-bench run``, parsed into a RunConfig.

``cxr-bench run ...`` and ``python run_benchmark.py ...`` are the same
command: both parse the options below into one ``RunConfig`` (over a
``--config`` TOML file, over the dataclass defaults) and hand it to
``benchmark.pipeline``. The ``cxr-bench`` dispatcher is ``benchmark.__main__``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter hides our output

from backbones import BACKBONES, PRECISION_CHOICES  # noqa: E402
from benchmark.config import RunConfig, load_toml  # noqa: E402
from benchmark.evaluation.metrics import METRICS  # noqa: E402
from benchmark.settings import LR_SCHEDULES  # noqa: E402
from common.executors import EXECUTORS  # noqa: E402
from features.data.audit import LEAKAGE_POLICIES  # noqa: E402
from features.runtime import RUNTIME_CHOICES  # noqa: E402
from features.settings import UNKNOWN_POLICIES  # noqa: E402

DESCRIPTION = """cxr-bench: which ImageNet backbone transfers best to chest X-rays?

Extracts pooled features from each backbone (cached), trains a
GlobalAveragePooling -> Dropout -> softmax head per backbone on train,
early-stopped on validation, and reports test metrics per binary task in
results/leaderboard.md, leaderboard.csv and predictions.csv.

With no --data and no data/chest_xray/ folder, it runs on a built-in synthetic
phantom set so the whole pipeline can be seen offline; those numbers are not medical.
"""


class _Options:
    """Adds options to a group with the help text ending in RunConfig's default, in words."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser, self.defaults = parser, RunConfig()

    def group(self, title: str) -> Callable[..., None]:
        group = self.parser.add_argument_group(title)

        def add(flag: str, help: str, **kwargs) -> None:
            if "(default:" not in help:
                default = getattr(self.defaults, flag.lstrip("-").replace("-", "_"), None)
                help = f"{help} (default: {_default_words(default, kwargs.get('action'))})"
            group.add_argument(flag, help=help, **kwargs)

        return add


def _default_words(default: object, action: str | None) -> str:
    """A default as the help shows it: a switch is off (or on, for a ``--no-...`` one), nothing set is "none"."""
    if action in ("store_true", "store_false"):
        return "off" if action == "store_true" else "on"
    if isinstance(default, tuple):
        return " ".join(str(v) for v in default) or "none"
    return "none" if default is None else str(default)


def build_parser(prog: str = "run_benchmark.py") -> argparse.ArgumentParser:
    """The run's command line; defaults are shown from RunConfig but applied after --config."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file setting any option below (by its field "
                        "name, for example lr = [1e-4, 1e-3]); the command line overrides it")  # fmt: skip
    options = _Options(parser)
    for add_group in (_data_options, _labels_options, _external_options, _feature_options, _grid_options,
                      _training_options, _crossval_options, _finetune_options, _executor_options,
                      _output_options):  # fmt: skip
        add_group(options)
    return parser


def _data_options(options: _Options) -> None:
    add = options.group("data")
    add("--data", "dataset folder, Kermany or class-folder layout (default: data/chest_xray/ if present, else the "
        "synthetic phantom set)", metavar="DIR")  # fmt: skip
    add("--limit-per-class", "keep at most N images per class and split, for quick runs (default: every image)",
        type=int, metavar="N")  # fmt: skip
    add("--val-fraction", "share of train carved as validation, stratified, whole patients", type=float, metavar="F")
    add("--val-source", "carve validation from train, or use the dataset's own val folder",
        choices=("carve", "official"))  # fmt: skip
    add("--test-fraction", "share carved as test when the data has no test split", type=float, metavar="F")
    add("--min-image-side", "skip images whose shorter side is below PX; 0 keeps every readable image (default: "
        "the largest minimum input size of the chosen backbones)", type=int, metavar="PX")  # fmt: skip
    add("--leakage", "images found in two splits or under two labels (same bytes): warn and keep them, drop the "
        "train/val copies, or fail", choices=LEAKAGE_POLICIES)  # fmt: skip
    add("--rehash", "read every image's bytes again on each run instead of trusting the image check remembered for "
        "its size and modification time: an image replaced under an unchanged size and time is checked again and "
        "its cached features and pixels dropped (reads every byte on every run; default: off)",
        action="store_true")  # fmt: skip


def _labels_options(options: _Options) -> None:
    add = options.group("labels from a CSV (NIH, CheXpert, RSNA, PadChest) instead of class folders")
    add("--labels", "the labels CSV, one row per image; its image paths are relative to --data (an image not at "
        "its path is found by its unique file name below --data, as NIH's images_001/ folders need) (default: none; "
        "the class folders are the labels)", metavar="FILE.csv")  # fmt: skip
    add("--path-column", "the labels CSV's column of image paths", metavar="NAME")
    add("--label-column", "one class per image: the labels CSV's column of class names", metavar="NAME")
    add("--findings-column", "multi-label, NIH's form: the column of findings separated by --finding-separator, "
        "--no-finding for an image with none (NIH: 'Finding Labels')", metavar="NAME")  # fmt: skip
    add("--finding-separator", "the character between findings in --findings-column", metavar="C")
    add("--no-finding", "the --findings-column value of an image with no finding", metavar="TEXT")
    add("--finding-columns", "multi-label, CheXpert's form: one column per finding holding 1, 0, -1 (uncertain) "
        "or blank", nargs="+", metavar="NAME")  # fmt: skip
    add("--uncertain", "what a -1 (uncertain) in --finding-columns stands for: ignore (left out of that "
        "finding's loss and metrics), zeros or ones (CheXpert's U-Ignore, U-Zeros, U-Ones)",
        choices=UNKNOWN_POLICIES)  # fmt: skip
    add("--blank", "what a blank cell in --finding-columns stands for (CheXpert: not mentioned)",
        choices=UNKNOWN_POLICIES)  # fmt: skip
    add("--patient-column", "the labels CSV's column of patient ids: splits are carved by patient (default: the "
        "patient read from the file name, as for folders)", metavar="NAME")  # fmt: skip
    add("--patient-pattern", "a regular expression finding the patient id in each image path, where the CSV has "
        r"no patient column (CheXpert: 'patient(\d+)'; its first group, else the whole match)",
        metavar="REGEX")  # fmt: skip
    add("--split-column", "the labels CSV's column of official splits (train, val, test); without it test and "
        "validation are carved", metavar="NAME")  # fmt: skip
    add("--split-lists", "official split lists instead of a split column: SPLIT=FILE pairs, each file naming its "
        "images one a line, by CSV path or file name (NIH: train=train_val_list.txt test=test_list.txt)",
        nargs="+", metavar="SPLIT=FILE")  # fmt: skip
    add("--classes", "the labels CSV's classes (or --findings-column findings), in this order; rows with another "
        "label are left out as unknown (default: every label found, sorted; Kermany's normal bacterial viral in "
        "that order)", nargs="+", metavar="NAME")  # fmt: skip


def _external_options(options: _Options) -> None:
    add = options.group("external test: another hospital's images, scored by the selected heads unchanged")
    add("--external-test", "a second dataset (class folders, or a CSV with --external-labels) the selected heads "
        "are tested on unchanged, reported beside the internal test", metavar="DIR")  # fmt: skip
    add("--external-labels", "the external test set's labels CSV (read in the training CSV's form and columns "
        "unless the options below name its own) (default: none; its class folders are the labels)",
        metavar="FILE.csv")  # fmt: skip
    add("--external-path-column", "the external CSV's column of image paths (default: --path-column)",
        metavar="NAME")  # fmt: skip
    add("--external-label-column", "the external CSV's column of class names (default: --label-column)",
        metavar="NAME")  # fmt: skip
    add("--external-findings-column", "the external CSV's column of separated findings (NIH's form) (default: "
        "the training CSV's form)", metavar="NAME")  # fmt: skip
    add("--external-finding-columns", "the external CSV's 1/0/-1/blank finding columns (CheXpert's form) "
        "(default: the training CSV's form)", nargs="+", metavar="NAME")  # fmt: skip
    add("--external-map", "external class or finding names that differ from the training ones, as OLD=NEW pairs; "
        "for multi-label training NEW may be 'No Finding' (an external NORMAL class) (default: the same names, "
        "ignoring case)", nargs="+", metavar="OLD=NEW")  # fmt: skip


def _feature_options(options: _Options) -> None:
    add = options.group("backbones and features")
    add("--backbones", f"backbones to compare: {', '.join(BACKBONES)}", nargs="+", metavar="NAME")
    add("--weights", "imagenet (Keras download), none (random init) or a folder of weight files (default: imagenet "
        "on real data, none on the phantom set)", metavar="imagenet|none|DIR")  # fmt: skip
    add("--image-size", "input sizes to sweep, for every backbone (default: each backbone's own input size)",
        nargs="+", type=int, metavar="PX")  # fmt: skip
    add("--extract-batch-size", "images per backbone forward pass", type=int, metavar="N")
    add("--extract-shard-size", "images per saved extraction shard: a killed extraction resumes from the last "
        "whole shard", type=int, metavar="N")  # fmt: skip
    add("--cache-dir", "feature (and decoded pixel) cache folder", metavar="DIR")
    add("--precision", "backbone compute type. auto: bfloat16 where the CPU (avx512_bf16, amx_bf16) or GPU computes "
        "it natively and a start-up probe finds it faster, else float32; run.json says which and why. "
        "bfloat16/float16 keep float32 weights (Keras mixed precision)", choices=list(PRECISION_CHOICES))  # fmt: skip
    add("--runtime", "where the backbone runs. auto: openvino, an inference runtime for CPUs, where it is installed "
        "(pip install 'cxr-bench[openvino]') and no GPU is in use, else keras; run.json says which and why",
        choices=list(RUNTIME_CHOICES))  # fmt: skip
    add("--jit-compile", "XLA-compile the backbone forward pass", action="store_true")
    add("--no-pixel-cache", "decode images for every backbone instead of once per size into a uint8 cache "
        "(default: off: images are decoded once per size)", dest="pixel_cache", action="store_false")  # fmt: skip
    add("--extract-only", "extract (and cache) features, train nothing", action="store_true")  # fmt: skip


def _grid_options(options: _Options) -> None:
    add = options.group("head grid: every combination is a grid point")
    add("--lr", "Adam learning rates", nargs="+", type=float, metavar="LR")
    add("--dropout", "dropout rates before the softmax", nargs="+", type=float, metavar="P")
    add("--l2", "L2 penalties on the softmax kernel: loss + L2 x sum(W^2), as an L2-regularised logistic "
        "regression", nargs="+", type=float, metavar="L2")  # fmt: skip
    add("--lr-schedule", "constant and/or step (decay by --step-decay-factor every --step-decay-epochs)",
        nargs="+", choices=LR_SCHEDULES)  # fmt: skip
    add("--seeds", "train each grid point with N seeds; tables show mean ± std", type=int, metavar="N")
    add("--select-by", "validation score that picks each backbone's grid point: val_loss, TASK.METRIC (e.g. "
        "normal_vs_pneumonia.auc) or, multi-label, macro_auc", metavar="SCORE")  # fmt: skip
    add("--probe-l2", "penalties of the logistic-regression probe (scikit-learn L-BFGS, C = 1/(2 x L2 x n_train)), "
        "selected on validation and reported as '<backbone>-logreg' beside each head", nargs="+", type=float,
        metavar="L2")  # fmt: skip
    add("--no-probe", "no logistic-regression probe (default: off: the probe is fitted beside each head)",
        dest="probe", action="store_false")  # fmt: skip


def _training_options(options: _Options) -> None:
    add = options.group("head training")
    add("--epochs", "maximum epochs", type=int, metavar="N")
    add("--batch-size", "head batch size", type=int, metavar="N")
    add("--patience", "early-stopping patience on validation loss", type=int, metavar="N")
    add("--class-weight", "weigh classes equally in the loss", choices=("none", "balanced"))
    add("--no-standardize", "feed raw pooled features to the head instead of z-scoring them with train statistics "
        "(default: off: features are z-scored)", dest="standardize", action="store_false")  # fmt: skip
    add("--head-workers", "processes training head groups in parallel, one thread each; 0: one per CPU core up "
        "to 4, 1: in this process", type=int, metavar="N")  # fmt: skip
    add("--step-decay-epochs", "epochs between learning-rate drops of the step schedule", type=int, metavar="N")
    add("--step-decay-factor", "factor of each drop of the step schedule", type=float, metavar="F")
    add("--seed", "seeds splits, random init and the first head seed", type=int, metavar="N")  # fmt: skip


def _crossval_options(options: _Options) -> None:
    add = options.group("cross-validation of the heads: how much a ranking of backbones holds across patients")
    add("--cv", "K: after the sweep, K patient-grouped, class-stratified folds of train + validation; in each the "
        "whole head grid is trained, selected on an inner validation carve and scored on the held-out fold "
        "(cv_folds.csv, cv_summary.csv); 0: none", type=int, metavar="K")  # fmt: skip
    add("--cv-repeats", "draw the K folds R times, each with another seed (needs --cv)", type=int, metavar="R")


def _finetune_options(options: _Options) -> None:
    add = options.group("fine-tuning: after the frozen head, train backbone + head end to end on images")
    add("--finetune", "fine-tune each backbone's selected head; rows '<backbone>-ft' join the leaderboard",
        action="store_true")  # fmt: skip
    add("--finetune-layers", "top layers to unfreeze (BatchNormalization stays frozen), or all", metavar="N|all")
    add("--finetune-lr", "learning rate of the head", type=float, metavar="LR")
    add("--finetune-lr-factor", "backbone learning rate = LR x F at the top, 10x lower at the lowest unfrozen "
        "layer", type=float, metavar="F")  # fmt: skip
    add("--finetune-epochs", "maximum epochs per size (early stopping on validation loss)", type=int, metavar="N")
    add("--finetune-batch-size", "images per fine-tuning step", type=int, metavar="N")
    add("--finetune-patience", "epochs without a better validation loss before a size stops", type=int,
        metavar="N")  # fmt: skip
    add("--finetune-sizes", "progressive resizing: train at each size in turn, small first (default: the head's)",
        nargs="+", type=int, metavar="PX")  # fmt: skip
    add("--augment", "light augmentation while fine-tuning: flip, rotation, zoom, brightness, contrast",
        action="store_true")  # fmt: skip


def _executor_options(options: _Options) -> None:
    add = options.group("where it runs: this machine, or a cluster (see the README's 'On a cluster')")
    add("--executor", "local: here, as always; dask: feature extraction, head groups and fine-tuning as tasks of a "
        'Dask cluster (pip install "cxr-bench[dask]"); selection and reports stay here', choices=EXECUTORS)  # fmt: skip
    add("--cluster", "the Dask scheduler's address (tcp://host:8786) or scheduler file (default: "
        "DASK_SCHEDULER_ADDRESS if set, else a local cluster of --head-workers single-threaded processes); "
        "--cache-dir and --results-dir must be on a filesystem every worker sees", metavar="ADDRESS|FILE")  # fmt: skip


def _output_options(options: _Options) -> None:
    add = options.group("output")
    add("--results-dir", "where reports go", metavar="DIR")
    add("--sort-metric", "test metric the leaderboard tables are sorted by", choices=METRICS)
    add("--target-sensitivity", "operating point: the threshold is chosen on validation to reach this "
        "sensitivity, then reported on test", type=float, metavar="S")  # fmt: skip
    add("--bootstrap", "resamples of the test set for 95%% confidence intervals; 0: none", type=int, metavar="N")
    add("--no-progress", "no progress bars (default: off: progress bars are shown)", dest="progress",
        action="store_false")  # fmt: skip


def parse_command(argv: list[str] | None, prog: str = "run_benchmark.py") -> tuple[RunConfig, frozenset[str]]:
    """Command line (over ``--config`` TOML, over the dataclass defaults) -> the RunConfig, and the fields the
    command line or the TOML file set (``RunConfig.validate`` refuses those that would do nothing)."""
    given = vars(build_parser(prog).parse_args(argv))
    values = load_toml(given.pop("config")) if "config" in given else {}
    values.update(given)
    return RunConfig(**values), frozenset(values)


def parse_args(argv: list[str] | None, prog: str = "run_benchmark.py") -> RunConfig:
    """Command line (over ``--config`` TOML, over the dataclass defaults) -> RunConfig."""
    return parse_command(argv, prog)[0]


def main(argv: list[str] | None = None, prog: str = "run_benchmark.py") -> int:
    """The run: parse ``argv`` into a RunConfig and run every stage (``benchmark.pipeline``); the exit code."""
    from benchmark import pipeline  # TensorFlow loads here, not for --help of the other subcommands

    try:
        config, given = parse_command(argv, prog)
        config.validate(given)
    except (ValueError, TypeError, OSError) as error:
        return pipeline.error_line(prog, error)
    return pipeline.run(config, argv, prog)


def run_command(argv: list[str] | None = None, prog: str = "run_benchmark.py") -> int:
    """``main`` as a terminal runs it: Ctrl-C ends with one line and exit 130; the total time is printed."""
    from benchmark import pipeline

    started = time.perf_counter()
    try:
        code = main(argv, prog)
    except KeyboardInterrupt:
        code = pipeline.error_line(prog, "interrupted. Finished features, extraction shards and grid points are "
                                   "kept: run the same command again to resume.", 130)  # fmt: skip
    print(f"done in {time.perf_counter() - started:.0f} s")
    return code
