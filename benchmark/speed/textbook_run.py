"""The textbook extraction as a whole process, the other side of ``bench_first_run.sh``: what a user without the
harness writes (``image_dataset_from_directory`` -> ``preprocess_input`` -> ``predict``, float32 Keras, random-init
weights as the harness side uses), over ``--images`` seeded images of a dataset folder.

    python -m benchmark.speed.textbook_run DATA [--backbone ResNet50] [--images 900] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from backbones import get_backbone  # noqa: E402
from benchmark.speed.bench_extract import sample_images, textbook_features  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Extract the pooled features of ``--images`` images the textbook way; print how many and how long."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.speed.textbook_run", description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("--backbone", default="ResNet50")
    parser.add_argument("--images", type=int, default=900)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = get_backbone(args.backbone)
    started = time.perf_counter()
    paths = sample_images(args.data, args.images, args.seed)
    model = spec.constructor(weights=None, include_top=False, pooling="avg",
                             input_shape=(spec.default_size, spec.default_size, 3))  # fmt: skip
    features = textbook_features(model, spec.preprocess, args.data, paths, spec.default_size, 32)
    print(f"textbook: {features.shape[0]} images, {features.shape[1]} features each, "
          f"{time.perf_counter() - started:.1f} s after imports")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
