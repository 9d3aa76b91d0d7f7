"""Measures feature extraction, textbook Keras pipeline against the harness's variants, so that none is flattered.

    python -m benchmark.speed.bench_extract --data ../shared/data/chest_xray_224 \\
        --backbone ResNet50 --images 96 --rounds 3 \\
        [--variants textbook harness-float32 harness-auto harness-bfloat16 openvino-float32 openvino-bfloat16]

A variant is a path and a precision: ``textbook`` (float32), ``harness-P`` and ``openvino-P`` with P one of
``float32``, ``bfloat16``, ``float16`` or ``auto`` (resolved as a run resolves it, and printed with the reason).
Default: every one of them above; the OpenVINO ones where the package is installed.

- textbook: ``keras.utils.image_dataset_from_directory`` -> ``preprocess_input`` (``Dataset.map``) ->
  ``model.predict``, as in the reference studies;
- harness: ``features.extract.extract_features`` (``--runtime keras`` or ``openvino``); with ``--pixel-cache
  warm`` the uint8 pixel cache is filled before any clock starts (the case of every backbone after the first at
  a size), with ``cold`` its filling is timed in every round, with ``off`` images are decoded while the backbone
  runs. OpenVINO's conversion is done in the warm-up, as a run does it once per backbone, size and weights; its
  compile is timed.

Fairness: every model is built before any clock starts, every variant is warmed up (a pass over two batches:
TensorFlow's start-up, tracing, the first allocations), then ``--rounds`` rounds time each variant over all the
images, the order reversed every other round. Printed: per variant the median images/s and its min-max over the
rounds, the ratio to the textbook path (per round, then median and min-max), GFLOP/s (FLOPs counted from the
model's convolution and dense layers) against a measured ceiling for its precision (a 4096 x 4096 matmul in
float32, or in bfloat16), and the feature cosine similarity to Keras float32 on the same pixels (the harness's
float32 variant, computed untimed when not among the variants).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from backbones import (  # noqa: E402
    AUTO,
    PRECISION_CHOICES,
    BackboneSpec,
    WeightsSource,
    build_backbone,
    get_backbone,
    model_flops,
    resolve_weights,
)
from backbones.precision import best_seconds  # noqa: E402
from features.cache import FeatureCache  # noqa: E402
from features.data.dataset import scan_dataset  # noqa: E402
from features.extract import extract_features  # noqa: E402
from features.pixels import PixelCache  # noqa: E402
from features.runtime import OPENVINO_HINTS, resolve_run_precision  # noqa: E402

KERAS_VARIANTS = ("textbook", "harness-float32", "harness-auto", "harness-bfloat16")
OPENVINO_VARIANTS = ("openvino-float32", "openvino-bfloat16")
VARIANTS = ("textbook", *(f"harness-{p}" for p in PRECISION_CHOICES),
            *(f"openvino-{p}" for p in (AUTO, *OPENVINO_HINTS)))  # fmt: skip
REFERENCE = "harness-float32"  # Keras float32 on the harness's pixels: what fidelity is measured against


def sample_images(data: Path, count: int, seed: int) -> list[str]:
    """A seeded sample of ``count`` image paths (relative to ``data``), in a fixed order."""
    records = scan_dataset(data).records
    if count > len(records):
        raise ValueError(f"--images {count} is more than the {len(records)} images under {data}")
    chosen = np.random.default_rng(seed).choice(len(records), size=count, replace=False)
    return sorted(records[i].path for i in chosen)


def textbook_features(model: keras.Model, preprocess, data: Path, paths: list[str], size: int, batch_size: int):
    """``image_dataset_from_directory`` -> ``preprocess_input`` -> ``predict`` over exactly ``paths``."""
    import tensorflow as tf  # the textbook pipeline is tf.data; only this benchmark needs it

    with tempfile.TemporaryDirectory() as temp:
        for index, relative in enumerate(paths):
            # One flat folder of links, numbered so that the directory order is ``paths``' order.
            os.symlink((data / relative).resolve(), Path(temp) / f"{index:06d}{Path(relative).suffix}")
        dataset = keras.utils.image_dataset_from_directory(
            temp, labels=None, image_size=(size, size), batch_size=batch_size, shuffle=False, verbose=False
        )
        if keras.backend.backend() == "tensorflow":
            dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
            return np.asarray(model.predict(dataset, verbose=0), dtype=np.float32)
        # Other backends cannot run Keras ops inside tf.data: preprocess each batch in NumPy.
        return np.concatenate(
            [keras.ops.convert_to_numpy(model.predict_on_batch(preprocess(x))) for x in dataset.as_numpy_iterator()]
        ).astype(np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_ceiling(precision: str, n: int = 4096) -> float:
    """GFLOP/s of an ``n`` x ``n`` matmul in ``precision`` (float32 or bfloat16) on the backend, best of 5."""
    rng = np.random.default_rng(0)
    a, b = (keras.ops.cast(rng.standard_normal((n, n), dtype=np.float32), precision) for _ in range(2))
    # One element back to the host (as float32: NumPy has no bfloat16) makes the call wait for the product.
    seconds = best_seconds(lambda: keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.matmul(a, b)[0, 0], "float32")))
    return 2 * n**3 / seconds / 1e9


@dataclass
class Variant:
    """One measured way of extracting: its path, runtime, resolved precision (and why), model and timings."""

    name: str
    path: str  # textbook | harness
    runtime: str  # keras | openvino
    precision: str
    reason: str
    model: keras.Model | None = None
    gflops: float = 0.0  # per image
    seconds: list[float] = field(default_factory=list)
    features: np.ndarray | None = None


def make_variant(name: str, spec: BackboneSpec, size: int, source: WeightsSource, seed: int) -> Variant:
    """The variant ``name`` with its precision resolved and its model built (float32 for OpenVINO to convert)."""
    path, _, asked = name.partition("-")
    runtime = "openvino" if path == "openvino" else "keras"
    choice = resolve_run_precision(asked or "float32", runtime)
    # OpenVINO converts a float32 model; its compile hint sets the compute type.
    built_in = choice.precision if path != "openvino" else "float32"
    model = build_backbone(spec, size, source, seed=seed, precision=built_in)
    return Variant(name, "textbook" if path == "textbook" else "harness", runtime, choice.precision, choice.reason,
                   model, model_flops(model) / 1e9)  # fmt: skip


@dataclass
class Bench:
    """What every timed call shares: the images, the backbone, and the scratch folders."""

    spec: BackboneSpec
    source: WeightsSource
    size: int
    data: Path
    paths: list[str]
    args: argparse.Namespace
    scratch: Path

    def run(self, variant: Variant, paths: list[str] | None = None) -> tuple[np.ndarray, float]:
        """``variant``'s features of ``paths`` (default: all) and the seconds they took; scratch features cleared."""
        paths = self.paths if paths is None else paths
        started = time.perf_counter()
        if variant.path == "textbook":
            features = textbook_features(variant.model, self.spec.preprocess, self.data, paths, self.size,
                                         self.args.batch_size)  # fmt: skip
            return features, time.perf_counter() - started
        features = self._harness(variant, paths)
        seconds = time.perf_counter() - started
        # The next call must extract again, not read this one's cache entry (its key may be the same).
        shutil.rmtree(self.scratch / "features" / self.spec.name, ignore_errors=True)
        return features, seconds

    def _harness(self, variant: Variant, paths: list[str]) -> np.ndarray:
        pixel_cache = None if self.args.pixel_cache == "off" else PixelCache(self.scratch / "pixels")
        if self.args.pixel_cache == "cold":
            shutil.rmtree(self.scratch / "pixels", ignore_errors=True)
        array, _ = extract_features(
            self.spec, self.source, self.size, self.data, paths, FeatureCache(self.scratch / "features"),
            batch_size=self.args.batch_size, decode_workers=self.args.decode_workers, precision=variant.precision,
            runtime=variant.runtime, pixel_cache=pixel_cache, progress=False, build=lambda: variant.model,
        )  # fmt: skip
        return np.asarray(array)


def measure(bench: Bench, variants: list[Variant], rounds: int) -> None:
    """Warm every variant up, then time each over all the images ``rounds`` times, alternating the order."""
    warm = bench.paths[: 2 * bench.args.batch_size]
    if bench.args.pixel_cache == "warm":
        PixelCache(bench.scratch / "pixels").build(bench.size, bench.data, bench.paths,
                                                   workers=bench.args.decode_workers, progress=False)  # fmt: skip
    for variant in variants:
        bench.run(variant, warm)
    for number in range(rounds):
        order = variants if number % 2 == 0 else variants[::-1]
        for variant in order:
            variant.features, seconds = bench.run(variant)
            variant.seconds.append(seconds)
            print(f"round {number + 1}/{rounds}: {variant.name} {len(bench.paths) / seconds:.1f} img/s")


def _spread(values: list[float], digits: int = 1) -> tuple[str, str]:
    """The median of ``values`` and their min-max, as table cells."""
    return f"{statistics.median(values):.{digits}f}", f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def summary(variants: list[Variant], images: int, ceilings: dict[str, float], reference: np.ndarray) -> str:
    """The Markdown table of the measurement: speed, ratio to the textbook, GFLOP/s against the ceiling, cosine."""
    base = next((v for v in variants if v.path == "textbook"), variants[0])
    rows = []
    for variant in variants:
        speeds = [images / s for s in variant.seconds]
        ratios = [b / s for b, s in zip(base.seconds, variant.seconds, strict=True)]  # same round, same load
        gflops = statistics.median(speeds) * variant.gflops
        ceiling = ceilings[variant.precision]
        cosine = cosine_rows(variant.features, reference)
        rows.append([variant.name, variant.precision, variant.runtime, *_spread(speeds), *_spread(ratios, 2),
                     f"{gflops:.0f}", f"{100 * gflops / ceiling:.0f}% of {ceiling:.0f}",
                     f"{cosine.min():.6f}"])  # fmt: skip
    headers = ["variant", "precision", "runtime", "img/s median", "img/s min-max", f"x {base.name} median",
               "x min-max", "GFLOP/s", "of the matmul ceiling", "cosine min vs Keras fp32"]  # fmt: skip
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def default_variants() -> list[str]:
    """Every Keras variant, and the OpenVINO ones where OpenVINO is installed."""
    present = importlib.util.find_spec("openvino") is not None
    return [*KERAS_VARIANTS, *(OPENVINO_VARIANTS if present else ())]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (Kermany or class-folder layout)")
    parser.add_argument("--backbone", default="ResNet50")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the backbone's)")
    parser.add_argument("--images", type=int, default=96, help="number of images (default 96)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (default 3, at least 1)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                        help=f"what to compare (default: {' '.join(default_variants())})")  # fmt: skip
    parser.add_argument("--pixel-cache", default="warm", choices=("off", "cold", "warm"))
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--weights", default="none", help="none (default), imagenet or a folder of weight files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    return args


def _reference(bench: Bench, variants: list[Variant], build: Callable[[str], Variant]) -> np.ndarray:
    """Keras float32 features on the harness's pixels: the measured variant's, else computed untimed."""
    measured = next((v for v in variants if v.name == REFERENCE), None)
    return measured.features if measured is not None else bench.run(build(REFERENCE))[0]


def main(argv: list[str] | None = None) -> None:
    """Build, warm up and time every variant; print the rounds, the resolved precisions and the summary table."""
    args = _parse_args(argv)
    spec = get_backbone(args.backbone)
    size, data = args.size or spec.default_size, Path(args.data)
    paths = sample_images(data, args.images, args.seed)
    source = resolve_weights(spec, args.weights, size, seed=args.seed)
    print(f"{spec.name} at {size} px, {len(paths)} images from {data}, batch {args.batch_size}, "
          f"weights {args.weights}, pixel cache {args.pixel_cache}, {args.rounds} rounds, Keras {keras.__version__} "
          f"({keras.backend.backend()}), {os.cpu_count()} CPUs")  # fmt: skip
    build = partial(make_variant, spec=spec, size=size, source=source, seed=args.seed)
    variants = [build(name) for name in args.variants or default_variants()]
    for variant in variants:
        print(f"{variant.name}: {variant.precision} on {variant.runtime} ({variant.reason})")
    ceilings = {p: matmul_ceiling(p) for p in sorted({v.precision for v in variants} | {"float32"})}
    print("matmul ceiling: " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in ceilings.items()))
    with tempfile.TemporaryDirectory() as scratch:
        bench = Bench(spec, source, size, data, paths, args, Path(scratch))
        measure(bench, variants, args.rounds)
        reference = _reference(bench, variants, build)
    print(summary(variants, len(paths), ceilings, reference))
    print(f"peak resident memory: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
