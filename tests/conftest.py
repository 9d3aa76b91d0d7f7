"""Shared fixtures: small generated datasets, so no test needs the real data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REAL_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "chest_xray_224"


def _pattern(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey image whose look depends on the class, so a head can learn something."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 60 + 40 * yy + rng.normal(0, 8, (size, size))
    if label == "bacterial":
        cx, cy = rng.uniform(0.3, 0.7, 2)
        base += 120 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
    elif label == "viral":
        base += 50 * np.sin(xx * rng.uniform(25, 35)) * np.sin(yy * rng.uniform(25, 35))
    return np.clip(base, 0, 255).astype(np.uint8)


def write_image(path: Path, label: str, rng: np.random.Generator, size: int = 40) -> None:
    """Save a small grayscale JPEG of class ``label``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_pattern(label, rng, size), mode="L").save(path, quality=95)


def make_kermany(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """A Kermany-layout tree: ``{split: images per class}``; two images per pneumonia patient."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for i in range(n):
            write_image(root / split / "NORMAL" / f"IM-{split[:2]}{i:04d}-0001.jpeg", "normal", rng)
            patient = f"person{split[:2]}{i // 2}"
            write_image(root / split / "PNEUMONIA" / f"{patient}_bacteria_{i}.jpeg", "bacterial", rng)
            write_image(root / split / "PNEUMONIA" / f"{patient}_virus_{i}.jpeg", "viral", rng)
    return root


@pytest.fixture
def kermany_root(tmp_path: Path) -> Path:
    """12 train, 2 val and 6 test images per class, Kermany layout."""
    return make_kermany(tmp_path / "chest_xray", {"train": 12, "val": 2, "test": 6})


@pytest.fixture
def real_data() -> Path:
    """The shared real dataset; the test is skipped where it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


# The pre-probe default grid point: one Adam head, no probe, for tests about the pipeline rather than the grid.
ONE_HEAD = ("--lr", "1e-3", "--dropout", "0.2", "--l2", "0", "--no-probe")


def run_small_benchmark(root: Path, tmp_path: Path, *extra: str, grid: tuple[str, ...] = ONE_HEAD) -> int:
    """``run_benchmark.main`` on ``root``: MobileNetV2 at 32 px, random weights, one head (no probe), 3 epochs,
    one process."""
    import run_benchmark

    return run_benchmark.main(
        ["--data", str(root), "--weights", "none", "--epochs", "3", "--patience", "2", "--no-progress",
         "--backbones", "MobileNetV2", "--image-size", "32", "--head-workers", "1", *grid,
         "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), *extra]
    )  # fmt: skip
