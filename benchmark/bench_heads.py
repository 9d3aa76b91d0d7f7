"""Benchmark: how long a 6-backbone x 40-point head grid takes to train from cached features.

    python -m benchmark.bench_heads [--train 4185 --val 1047 --epochs 30]

Features are random arrays of each backbone's feature size with the sizes of
the full Kermany train and carved validation splits (no extraction is timed).
Each backbone's 40 points are 2 image sizes x 4 learning rates x 5 dropout
rates; the points of one image size share a model (``train_heads``). Early
stopping is switched off (patience = epochs), so every head runs ``--epochs``
epochs: a fixed amount of work, independent of what the data allow.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from backbones import BACKBONES  # noqa: E402
from benchmark.heads import HeadSettings, train_heads  # noqa: E402

LRS = (1e-4, 2e-4, 5e-4, 1e-3)
DROPOUTS = (0.1, 0.2, 0.3, 0.4, 0.5)
SIZES = 2


def main(argv: list[str] | None = None) -> None:
    """Time the grid and print seconds per model, per backbone and in total."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=4185, help="training images (default: full carved train)")
    parser.add_argument("--val", type=int, default=1047, help="validation images (default: full carved val)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs every head runs (default 30)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    y_train, y_val = rng.integers(0, 3, args.train), rng.integers(0, 3, args.val)
    total_started = time.perf_counter()
    heads = 0
    with tempfile.TemporaryDirectory() as scratch:
        for name, spec in BACKBONES.items():
            started = time.perf_counter()
            for size in range(SIZES):
                x_train = rng.normal(size=(args.train, spec.feature_size)).astype(np.float32)
                x_val = rng.normal(size=(args.val, spec.feature_size)).astype(np.float32)
                grid = [
                    HeadSettings(lr=lr, dropout=d, epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size)
                    for lr in LRS
                    for d in DROPOUTS
                ]
                dirs = [Path(scratch) / f"{name}-{size}-{i}" for i in range(len(grid))]
                train_heads(x_train, y_train, x_val, y_val, 3, grid, dirs, progress=False)
                heads += len(grid)
            print(f"{name}: {SIZES * len(LRS) * len(DROPOUTS)} heads in {time.perf_counter() - started:.1f} s")
    total = time.perf_counter() - total_started
    print(f"total: {heads} heads, {args.epochs} epochs each, {args.train} train / {args.val} val images: "
          f"{total:.1f} s ({total / 60:.1f} min)")  # fmt: skip


if __name__ == "__main__":
    main()
