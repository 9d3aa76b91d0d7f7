"""Measures OpenVINO post-training int8 (NNCF), calibrated on training images only, against OpenVINO float32 and
bfloat16, with the features' cosine similarity to Keras float32.

    python -m benchmark.speed.bench_int8 --data ../shared/data/chest_xray_224 --backbone ResNet50 \\
        --calibration 300 --images 96 --rounds 3

Needs ``openvino`` and ``nncf`` (not dependencies of cxr-bench). The calibration images are a seeded sample of
the dataset's ``train`` split, the timed images a seeded sample of its ``test`` split: test images never
calibrate. Timed is the forward pass over preprocessed batches (pixels decoded before any clock starts, as with
a warm pixel cache): every variant warmed up, then ``--rounds`` rounds, the order reversed every other round;
printed are the median images/s and the min-max, and the minimum and mean cosine per image to Keras float32.
This is a measurement, not a run option (docs/performance.md says why).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from backbones import build_backbone, get_backbone, resolve_weights  # noqa: E402
from benchmark.speed.bench_extract import cosine_rows  # noqa: E402
from features.data.dataset import scan_dataset  # noqa: E402
from features.data.images import load_image  # noqa: E402
from features.runtime import Forward, export_openvino, keras_forward, openvino_forward  # noqa: E402


def split_sample(data: Path, split: str, count: int, seed: int) -> list[str]:
    """A seeded sample of ``count`` image paths of ``split``, in a fixed order."""
    paths = [record.path for record in scan_dataset(data).records if record.split == split]
    if count > len(paths):
        raise ValueError(f"{count} images asked of the {split} split, which has {len(paths)}")
    return sorted(paths[i] for i in np.random.default_rng(seed).choice(len(paths), size=count, replace=False))


def quantize(ir_file: Path, batches: list[np.ndarray], out: Path) -> Path:
    """``ir_file`` quantized to int8 by NNCF, its activation ranges calibrated on ``batches``; saved at ``out``."""
    import nncf
    import openvino as ov

    network = ov.Core().read_model(str(ir_file))
    network.reshape(list(batches[0].shape))
    quantized = nncf.quantize(network, nncf.Dataset(batches), subset_size=len(batches))
    ov.save_model(quantized, str(out))
    return out


def time_rounds(forwards: dict[str, Forward], batches: list[np.ndarray], rounds: int) -> dict[str, list[float]]:
    """Seconds of each forward over every batch, per round, after one warm-up batch; the order alternates."""
    for forward in forwards.values():
        forward(batches[0])
    seconds: dict[str, list[float]] = {name: [] for name in forwards}
    names = list(forwards)
    for number in range(rounds):
        for name in names if number % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            for batch in batches:
                forwards[name](batch)
            seconds[name].append(time.perf_counter() - started)
    return seconds


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder with train and test splits")
    parser.add_argument("--backbone", default="ResNet50")
    parser.add_argument("--calibration", type=int, default=300, help="training images to calibrate on")
    parser.add_argument("--images", type=int, default=96, help="test images timed (a multiple of --batch-size)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Convert, calibrate, time and compare; print one line per variant."""
    args = _parse_args(argv)
    spec, data = get_backbone(args.backbone), Path(args.data)
    size, source = spec.default_size, resolve_weights(spec, "none", spec.default_size, seed=args.seed)

    def pixels(paths: list[str]) -> np.ndarray:
        return spec.preprocess(np.stack([load_image(data / p, size) for p in paths]).astype(np.float32))

    calibration = [pixels([p]) for p in split_sample(data, "train", args.calibration, args.seed)]
    timed = pixels(split_sample(data, "test", args.images, args.seed))
    batches = [timed[i : i + args.batch_size] for i in range(0, len(timed), args.batch_size)]
    model = build_backbone(spec, size, source, seed=args.seed)
    with tempfile.TemporaryDirectory() as temp:
        ir_file = export_openvino(model, Path(temp) / "ir" / "model.xml")
        started = time.perf_counter()
        int8_file = quantize(ir_file, calibration, Path(temp) / "int8.xml")
        print(f"{spec.name} {size} px: int8 calibration on {len(calibration)} train images took "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        shape = batches[0].shape
        forwards = {"openvino-float32": openvino_forward(ir_file, shape, "float32"),
                    "openvino-bfloat16": openvino_forward(ir_file, shape, "bfloat16"),
                    "openvino-int8": openvino_forward(int8_file, shape, "float32")}  # fmt: skip
        seconds = time_rounds(forwards, batches, args.rounds)
    reference = np.concatenate([keras_forward(model)(batch) for batch in batches])
    for name, forward in forwards.items():
        speeds = [len(timed) / s for s in seconds[name]]
        cosine = cosine_rows(np.concatenate([forward(batch) for batch in batches]), reference)
        print(f"{name}: {statistics.median(speeds):.1f} img/s (min-max {min(speeds):.1f}-{max(speeds):.1f}), cosine "
              f"to Keras float32 min {cosine.min():.6f} mean {cosine.mean():.6f}")  # fmt: skip
    print(f"Keras {keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
