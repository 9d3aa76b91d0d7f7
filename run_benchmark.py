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
import os
import shlex
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter hides our output

from backbones import BACKBONES, WeightsUnavailableError, get_backbone  # noqa: E402
from benchmark import provenance  # noqa: E402
from benchmark.config import RunConfig  # noqa: E402
from benchmark.report import write_reports  # noqa: E402
from benchmark.run import run_backbone  # noqa: E402
from features.cache import FeatureCache  # noqa: E402
from features.dataset import describe_counts, make_splits, scan_dataset  # noqa: E402
from features.phantom import make_phantom_dataset  # noqa: E402

DEFAULT_DATA = Path("data/chest_xray")


def parse_args(argv: list[str] | None) -> RunConfig:
    """Command line -> RunConfig (defaults come from the dataclass)."""
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="run_benchmark.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        metavar="DIR",
        help=f"dataset folder (Kermany or class-folder layout); default {DEFAULT_DATA}/ if "
        "present, else the synthetic phantom set",
    )
    g.add_argument(
        "--limit-per-class", type=int, metavar="N", help="keep at most N images per class and split (quick runs)"
    )
    g.add_argument(
        "--val-fraction",
        metavar="F",
        type=float,
        default=d.val_fraction,
        help="share of train carved as validation, stratified, whole patients (default %(default)s)",
    )
    g.add_argument(
        "--val-source",
        choices=("carve", "official"),
        default=d.val_source,
        help="carve validation from train (default) or use the dataset's own val folder",
    )
    g.add_argument(
        "--test-fraction",
        metavar="F",
        type=float,
        default=d.test_fraction,
        help="share carved as test when the data has no test split (default %(default)s)",
    )
    g = p.add_argument_group("backbones and features")
    g.add_argument(
        "--backbones",
        nargs="+",
        default=list(d.backbones),
        metavar="NAME",
        help=f"backbones to compare (default: all): {', '.join(BACKBONES)}",
    )
    g.add_argument(
        "--weights",
        metavar="imagenet|none|DIR",
        help="imagenet (Keras download), none (random init) or a folder of weight "
        "files; default imagenet, or none on the phantom set",
    )
    g.add_argument(
        "--image-size", type=int, metavar="PX", help="input size for every backbone (default: each one's own)"
    )
    g.add_argument(
        "--extract-batch-size",
        metavar="N",
        type=int,
        default=d.extract_batch_size,
        help="images per backbone forward pass (default %(default)s)",
    )
    g.add_argument("--cache-dir", metavar="DIR", default=d.cache_dir, help="feature cache folder (default %(default)s)")
    g = p.add_argument_group("head training")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (default %(default)s)")
    g.add_argument("--dropout", type=float, default=d.dropout, help="dropout before the softmax (default %(default)s)")
    g.add_argument("--epochs", metavar="N", type=int, default=d.epochs, help="maximum epochs (default %(default)s)")
    g.add_argument(
        "--batch-size", metavar="N", type=int, default=d.batch_size, help="head batch size (default %(default)s)"
    )
    g.add_argument(
        "--patience",
        metavar="N",
        type=int,
        default=d.patience,
        help="early-stopping patience on validation loss (default %(default)s)",
    )
    g.add_argument(
        "--class-weight",
        choices=("none", "balanced"),
        default=d.class_weight,
        help="weigh classes equally in the loss (default %(default)s)",
    )
    g.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="feed raw pooled features to the head (default: z-score them with train statistics)",
    )
    g.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=d.seed,
        help="seeds splits, random init and training (default %(default)s)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--results-dir", metavar="DIR", default=d.results_dir, help="where reports go (default %(default)s)")
    g.add_argument(
        "--sort-metric",
        default=d.sort_metric,
        choices=("sensitivity", "specificity", "accuracy", "precision", "f1", "auc"),
        help="metric the leaderboard tables are sorted by (default %(default)s)",
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    args = p.parse_args(argv)
    values = vars(args)
    values["backbones"] = tuple(values["backbones"])
    return RunConfig(**{f.name: values[f.name] for f in fields(RunConfig)})


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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, then data -> features -> heads -> reports."""
    config = parse_args(argv)
    try:
        config.validate()
    except ValueError as error:
        print(f"run_benchmark.py: error: {error}", file=sys.stderr)
        return 2
    data_root, phantom = resolve_data(config)
    if config.weights is None:
        config.weights = "none" if phantom else "imagenet"
    dataset = make_splits(
        scan_dataset(data_root),
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        val_source=config.val_source,
        limit_per_class=config.limit_per_class,
        seed=config.seed,
    )
    print(f"data: {data_root} ({dataset.layout}), weights: {config.weights}")
    print(describe_counts(dataset))
    results_dir = Path(config.results_dir)
    cache = FeatureCache(config.cache_dir)
    results = []
    for name in config.backbones:
        spec = get_backbone(name)
        size = config.image_size or spec.default_size
        try:
            result = run_backbone(
                spec,
                size,
                config.weights,
                config.head_settings(),
                dataset,
                cache,
                results_dir / "heads",
                extract_batch_size=config.extract_batch_size,
                progress=config.progress,
            )
        except WeightsUnavailableError as error:
            print(f"run_benchmark.py: error: {error}", file=sys.stderr)
            return 1
        stats = result.extraction
        source = (
            "cache, 0 forward passes"
            if stats.from_cache
            else (
                f"{stats.forward_batches} forward passes, {stats.images_per_second:.1f} img/s "
                f"after a {stats.build_seconds:.1f} s model build"
            )
        )
        print(
            f"{spec.name} {size}px: features from {source}; head: best epoch {result.head.best_epoch} "
            f"of {result.head.epochs_run}, val loss {result.head.best_val_loss:.4f}"
        )
        results.append(result)
    run_info = {
        "config": config.as_dict(),
        "phantom": phantom,
        "git": provenance.git_revision(),
        "versions": provenance.versions(),
        "machine": provenance.machine(),
        "timestamp": provenance.timestamp(),
        "command": shlex.join(["python", "run_benchmark.py", *(sys.argv[1:] if argv is None else argv)]),
        "forward_passes": sum(r.extraction.forward_batches for r in results),
        "extraction": {r.head_id: asdict(r.extraction) for r in results},
    }
    paths = write_reports(results_dir, results, dataset, run_info)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    if phantom:
        print("Reminder: SYNTHETIC PHANTOM data, weights none: the numbers above are not medical.")
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"done in {time.perf_counter() - started:.0f} s")
    sys.exit(code)
