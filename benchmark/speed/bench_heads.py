"""Measures how long a 6-backbone x 40-point head grid takes to train from cached features.

    python -m benchmark.speed.bench_heads [--train 4185 --val 1047 --epochs 30 --head-workers 0]

Features are random arrays of each backbone's feature size with the sizes of
the full Kermany train and carved validation splits (no extraction is timed).
Each backbone's 40 points are 2 image sizes x 4 learning rates x 5 dropout
rates; the points of one image size share a model, and the groups are trained
as a sweep trains them (``benchmark.training.sweep.train_groups``, with its worker
processes). Early stopping is switched off (patience = epochs), so every head
runs ``--epochs`` epochs: a fixed amount of work, independent of what the data allow.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from backbones import BACKBONES, DEFAULT_BACKBONES  # noqa: E402
from benchmark.config import RunConfig  # noqa: E402
from benchmark.training.sweep import HeadGroup, head_workers, train_groups  # noqa: E402
from features.data.dataset import Dataset, ImageRecord  # noqa: E402
from features.data.records import Label  # noqa: E402

LRS = (1e-4, 2e-4, 5e-4, 1e-3)
DROPOUTS = (0.1, 0.2, 0.3, 0.4, 0.5)
SIZES = 2
CLASSES = ("bacterial", "normal", "viral")


def main(argv: list[str] | None = None) -> None:
    """Time the grid and print seconds per backbone and in total."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=4185, help="training images (default: full carved train)")
    parser.add_argument("--val", type=int, default=1047, help="validation images (default: full carved val)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs every head runs (default 30)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--head-workers", type=int, default=0, help="as run_benchmark.py --head-workers")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    labels = {split: rng.integers(0, len(CLASSES), n) for split, n in (("train", args.train), ("val", args.val))}
    records = [
        ImageRecord(f"{split}/{i}.jpeg", Label.of_class(CLASSES[label]), split)
        for split, values in labels.items()
        for i, label in enumerate(values)
    ]
    dataset = Dataset(Path("."), "synthetic", CLASSES, records)
    config = RunConfig(
        lr=LRS, dropout=DROPOUTS, epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size,
        head_workers=args.head_workers, progress=False,
    )  # fmt: skip
    settings = config.stages().sweep
    jobs = []
    for name in DEFAULT_BACKBONES:
        spec = BACKBONES[name]
        for size in range(SIZES):
            by_split = {
                split: rng.normal(size=(len(values), spec.feature_size)).astype(np.float32)
                for split, values in labels.items()
            }
            grid = list(settings.heads)
            ids = [f"{name}-{size}-{i}" for i in range(len(grid))]
            jobs.append(HeadGroup(name, size, "random", grid, ids, by_split))
    print(f"{len(jobs)} groups of {len(settings.heads)} heads, {head_workers(settings.head_workers)} worker(s)")
    started = time.perf_counter()
    heads = 0
    with tempfile.TemporaryDirectory() as temp:
        for job, points in train_groups(jobs, dataset, Path(temp), settings):
            heads += sum(point.done for point in points)
            done_at = time.perf_counter() - started
            print(f"{job.backbone} group {job.image_size}: {len(points)} heads done at {done_at:.1f} s")
    total = time.perf_counter() - started
    print(f"total: {heads} heads, {args.epochs} epochs each, {args.train} train / {args.val} val images: "
          f"{total:.1f} s ({total / 60:.1f} min)")  # fmt: skip


if __name__ == "__main__":
    main()
