"""Measures the harness's feature extraction against the textbook Keras pipeline, in one process.

    python -m benchmark.speed.bench_extract --data ../shared/data/chest_xray_224 \\
        --backbone ResNet50 --size 224 --images 512 [--precision bfloat16] [--jit-compile]

Both paths run the same backbone (built once per path, random init unless
``--weights`` says otherwise; the build is not timed) on the same seeded
sample of images and end with a float32 feature array in memory or on disk:

- textbook: ``keras.utils.image_dataset_from_directory`` -> ``preprocess_input``
  (``Dataset.map``) -> ``model.predict``, as in the reference studies;
- harness: ``features.extract.extract_features`` with the chosen levers; with
  ``--pixel-cache warm`` the uint8 pixel cache is filled before the clock
  starts (the case of every backbone after the first at a size), with
  ``cold`` its filling is timed, with ``off`` images are decoded on threads
  while the backbone runs.

Printed: images/s for each path, their ratio, the achieved GFLOP/s (FLOPs per
image counted from the model's convolution and dense layers), the peak
resident memory of the process, and how closely the two paths' features
agree (cosine similarity per image).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from backbones import (  # noqa: E402
    PRECISIONS,
    BackboneSpec,
    WeightsSource,
    build_backbone,
    get_backbone,
    model_flops,
    resolve_weights,
)
from features.cache import FeatureCache  # noqa: E402
from features.data.dataset import scan_dataset  # noqa: E402
from features.extract import extract_features  # noqa: E402
from features.pixels import PixelCache  # noqa: E402


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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder (Kermany or class-folder layout)")
    parser.add_argument("--backbone", default="ResNet50")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the backbone's)")
    parser.add_argument("--images", type=int, default=512, help="number of images (default 512)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="float32", choices=list(PRECISIONS), help="harness compute type")
    parser.add_argument("--jit-compile", action="store_true", help="harness: XLA-compile the forward pass")
    parser.add_argument("--pixel-cache", default="warm", choices=("off", "cold", "warm"))
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--weights", default="none", help="none (default), imagenet or a folder of weight files")
    parser.add_argument("--paths", nargs="+", default=["textbook", "harness"], choices=("textbook", "harness"))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _time_textbook(
    model: keras.Model, spec: BackboneSpec, data: Path, paths: list[str], size: int, args: argparse.Namespace
) -> tuple[str, np.ndarray, float]:
    """The textbook path's label, features and seconds."""
    label = "textbook (image_dataset_from_directory -> preprocess_input -> predict)"
    started = time.perf_counter()
    features = textbook_features(model, spec.preprocess, data, paths, size, args.batch_size)
    return label, features, time.perf_counter() - started


def _time_harness(
    model: keras.Model,
    spec: BackboneSpec,
    source: WeightsSource,
    data: Path,
    paths: list[str],
    size: int,
    args: argparse.Namespace,
) -> tuple[str, np.ndarray, float]:
    """The harness path's label, features and seconds, in a temporary cache (its clean-up not timed)."""
    label = (
        f"harness (precision {args.precision}, jit_compile {args.jit_compile}, "
        f"pixel cache {args.pixel_cache}, {args.decode_workers} decode threads)"
    )
    with tempfile.TemporaryDirectory() as temp:
        pixel_cache = None if args.pixel_cache == "off" else PixelCache(temp)
        if args.pixel_cache == "warm":
            pixel_cache.build(size, data, paths, workers=args.decode_workers, progress=False)
        started = time.perf_counter()
        array, _ = extract_features(
            spec, source, size, data, paths, FeatureCache(Path(temp) / "features"),
            batch_size=args.batch_size, decode_workers=args.decode_workers, precision=args.precision,
            jit_compile=args.jit_compile, pixel_cache=pixel_cache, progress=False,
            build=lambda built=model: built,
        )  # fmt: skip
        features = np.asarray(array)
        return label, features, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Run both paths and print the comparison."""
    args = _parse_args(argv)
    spec = get_backbone(args.backbone)
    size = args.size or spec.default_size
    data = Path(args.data)
    paths = sample_images(data, args.images, args.seed)
    source = resolve_weights(spec, args.weights, size, seed=args.seed)
    print(
        f"{spec.name} at {size} px, {len(paths)} images from {data}, batch {args.batch_size}, weights {args.weights}, "
        f"Keras {keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} CPUs"
    )
    speeds: dict[str, float] = {}
    features: dict[str, np.ndarray] = {}
    for path in args.paths:
        precision = "float32" if path == "textbook" else args.precision
        model = build_backbone(spec, size, source, seed=args.seed, precision=precision)
        gflops = model_flops(model) / 1e9
        if path == "textbook":
            label, features[path], seconds = _time_textbook(model, spec, data, paths, size, args)
        else:
            label, features[path], seconds = _time_harness(model, spec, source, data, paths, size, args)
        speeds[path] = len(paths) / seconds
        print(
            f"{label}: {seconds:.1f} s, {speeds[path]:.1f} images/s, "
            f"{speeds[path] * gflops:.0f} GFLOP/s at {gflops:.2f} GFLOP per image"
        )
        del model
    if len(speeds) == 2:
        print(f"harness / textbook: {speeds['harness'] / speeds['textbook']:.2f}x")
        similarity = cosine_rows(features["harness"], features["textbook"])
        print(f"feature cosine, harness vs textbook: min {similarity.min():.6f}, mean {similarity.mean():.6f}")
    print(f"peak resident memory: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
