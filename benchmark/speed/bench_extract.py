"""Measures feature extraction, textbook Keras pipeline against the harness's variants, so that none is flattered.

    python -m benchmark.speed.bench_extract --data ../shared/data/chest_xray_224 \\
        --backbone ResNet50 --images 96 --rounds 3 \\
        [--variants textbook harness-float32 harness-auto harness-bfloat16 openvino-float32 openvino-bfloat16]

A variant is a path and a precision: ``textbook`` (float32), ``default`` (the harness as a run sets it up by
default: ``--runtime auto --precision auto``, checked on the backbone), ``harness-P`` and ``openvino-P`` with P one of
``float32``, ``bfloat16``, ``float16`` or ``auto`` (resolved as a run resolves it, and printed with the reason),
and ``timm-float32`` / ``timm-bfloat16``, the same backbone in timm on PyTorch. Default: the list above; the
OpenVINO ones where the package is installed, the timm ones where ``--timm-python`` can import torch and timm.

- textbook: ``keras.utils.image_dataset_from_directory`` -> ``preprocess_input`` (``Dataset.map``) ->
  ``model.predict``, as in the reference studies;
- harness: ``features.extract.extract_features`` (``--runtime keras`` or ``openvino``); with ``--pixel-cache
  warm`` the uint8 pixel cache is filled before any clock starts (the case of every backbone after the first at
  a size), with ``cold`` its filling is timed in every round, with ``off`` images are decoded while the backbone
  runs. OpenVINO's conversion is done in the warm-up, as a run does it once per backbone, size and weights; its
  compile is timed;
- timm: what a PyTorch user would run instead (``benchmark/speed/timm_worker.py``: channels-last, inference
  mode, bfloat16 autocast), in a process of its own started before any clock, so that neither framework's
  thread pools or allocator run inside the other's; it reads the harness's decoded pixels (the warm pixel
  cache's), and its timed pass is normalisation, forward pass and pooled features back. Random weights, so its
  features are compared with its own float32 variant, not with Keras'.

Fairness: every model is built before any clock starts, every variant is warmed up (a pass over two batches:
TensorFlow's start-up, tracing, the first allocations), then ``--rounds`` rounds time each variant over all the
images, the order reversed every other round. Printed: per variant the median images/s and its min-max over the
rounds, the ratio to the textbook path (per round, then median and min-max), GFLOP/s (FLOPs counted from the
model's convolution and dense layers) against a measured ceiling for its precision (a 4096 x 4096 matmul in
float32, or in bfloat16), and the feature cosine similarity to float32 of the same network on the same pixels
(Keras: the harness's float32 variant, computed untimed when not among the variants; timm: ``timm-float32``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
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
    INT8,
    PRECISION_CHOICES,
    BackboneSpec,
    PrecisionChoice,
    WeightsSource,
    build_backbone,
    get_backbone,
    model_flops,
    resolve_weights,
)
from backbones.precision import best_seconds  # noqa: E402
from features.data.dataset import scan_dataset  # noqa: E402
from features.extract import extract_features  # noqa: E402
from features.pixels import PixelCache  # noqa: E402
from features.runtime import (  # noqa: E402
    OPENVINO_HINTS,
    measured_afresh,
    resolve_backbones,
    resolve_run_precision,
    resolve_runtime,
)
from features.settings import ExtractSettings  # noqa: E402

KERAS_VARIANTS = ("textbook", "harness-float32", "harness-auto", "harness-bfloat16")
DEFAULT = "default"  # the harness as a run configures it by default (--runtime auto --precision auto)
OPENVINO_VARIANTS = ("openvino-float32", "openvino-bfloat16")
TIMM_VARIANTS = ("timm-float32", "timm-bfloat16", "timm-float16")
# int8 needs a calibration set from a run's training split: benchmark.speed.bench_int8 measures it.
VARIANTS = ("textbook", DEFAULT, *(f"harness-{p}" for p in PRECISION_CHOICES if p != INT8),
            *(f"openvino-{p}" for p in (AUTO, *OPENVINO_HINTS)), *TIMM_VARIANTS)  # fmt: skip
DEFAULT_TIMM = TIMM_VARIANTS[:2]  # float16 autocast is what a GPU user adds; on a CPU it only measures emulation
REFERENCE = "harness-float32"  # Keras float32 on the harness's pixels: what fidelity is measured against
# The same network in timm (random weights both sides): the registry's backbones by timm's names.
TIMM_MODELS = {"ResNet50": "resnet50", "VGG16": "vgg16", "Xception": "legacy_xception", "InceptionV3": "inception_v3",
               "InceptionResNetV2": "inception_resnet_v2", "MobileNetV2": "mobilenetv2_100",
               "MobileNetV2-0.35": "mobilenetv2_035", "MobileNetV2-0.5": "mobilenetv2_050"}  # fmt: skip
TIMM_WORKER = Path(__file__).with_name("timm_worker.py")


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


class TimmWorker:
    """A ``timm_worker.py`` process: built and warmed up once, then asked to time passes and hand over features."""

    def __init__(self, python: str, model: str, pixels: Path, precision: str, batch_size: int):
        self.python = python
        command = [python, str(TIMM_WORKER), "--model", model, "--pixels", str(pixels), "--precision", precision,
                   "--batch-size", str(batch_size)]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(
                f"bench_extract: the timm worker ({self.python}) stopped (its error is above); the timm variants "
                "need torch and timm there: pip install torch timm, or --timm-python PYTHON"
            )
        return json.loads(line)

    def _ask(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self._answer()

    def run(self) -> float:
        """Seconds of one pass over every image, timed in the worker."""
        return float(self._ask("run")["seconds"])

    def features(self, path: Path) -> np.ndarray:
        """The last pass's pooled features, through ``path``."""
        self._ask(f"save {path}")
        return np.load(path)

    def close(self) -> None:
        """Ask the worker to exit, and wait for it."""
        if self.process.poll() is None:
            self.process.communicate("quit\n", timeout=60)


@dataclass
class Variant:
    """One measured way of extracting: its path, runtime, resolved precision (and why), model and timings."""

    name: str
    path: str  # textbook | harness | timm
    runtime: str  # keras | openvino | pytorch
    precision: str
    reason: str
    model: keras.Model | None = None
    gflops: float = 0.0  # per image
    seconds: list[float] = field(default_factory=list)
    features: np.ndarray | None = None
    worker: TimmWorker | None = None


def make_variant(name: str, spec: BackboneSpec, size: int, source: WeightsSource, seed: int) -> Variant:
    """The variant ``name`` with its precision resolved and its model built (float32 for OpenVINO to convert).

    A timm variant's model is built by its worker (``Bench.start_timm``), once the pixels are decoded.
    """
    path, _, asked = name.partition("-")
    if path == "timm":
        if spec.name not in TIMM_MODELS:
            raise SystemExit(f"bench_extract: no timm model is named for {spec.name}; known: {', '.join(TIMM_MODELS)}")
        autocast = f", {asked} autocast" if asked != "float32" else ""
        return Variant(name, "timm", "pytorch", asked,
                       f"timm {TIMM_MODELS[spec.name]}: channels-last, inference mode{autocast}")  # fmt: skip
    if path == "default":  # what a run does with every setting left alone: runtime auto, precision auto
        with measured_afresh() as fresh:  # measured now, not read from a remembered choice
            _, chosen = resolve_backbones(resolve_runtime(AUTO), AUTO, [(spec, size)], fresh)
        where, choice = chosen[(spec.name, size)]
        runtime = where.runtime
        choice = PrecisionChoice(choice.requested, choice.precision, f"runtime: {where.reason}; {choice.reason}")
    else:
        runtime = "openvino" if path == "openvino" else "keras"
        choice = resolve_run_precision(asked or "float32", runtime)
    # OpenVINO converts a float32 model; its compile hint sets the compute type.
    built_in = choice.precision if runtime == "keras" else "float32"
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

    def start_timm(self, variant: Variant) -> None:
        """Start ``variant``'s worker on the harness's decoded pixels (its own copy: ``cold`` stays cold)."""
        reader, _ = PixelCache(self.scratch / "timm-pixels").build(
            self.size, self.data, self.paths, workers=self.args.decode_workers, progress=False
        )
        pixels = self.scratch / "timm-pixels.npy"
        if not pixels.is_file():
            np.save(pixels, reader.read(0, len(self.paths)))
        reader.close()
        variant.worker = TimmWorker(self.args.timm_python, TIMM_MODELS[self.spec.name], pixels, variant.precision,
                                    self.args.batch_size)  # fmt: skip
        ready = variant.worker.ready
        variant.runtime = f"pytorch {ready['torch']} ({ready.get('device', 'cpu')}), timm {ready['timm']}"
        variant.gflops = variant.worker.ready["gflops"]

    def run(self, variant: Variant, paths: list[str] | None = None) -> tuple[np.ndarray, float]:
        """``variant``'s features of ``paths`` (default: all) and the seconds they took; scratch features cleared."""
        paths = self.paths if paths is None else paths
        if variant.worker is not None:  # timm: all the images, timed in its own process
            seconds = variant.worker.run()
            return variant.worker.features(self.scratch / f"{variant.name}.npy"), seconds
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
        # The pixel cache lives beside the features, as a run's does; clearing the features (run) spares it.
        if self.args.pixel_cache == "cold":
            shutil.rmtree(self.scratch / "features" / "pixels", ignore_errors=True)
        settings = ExtractSettings(batch_size=self.args.batch_size, precision=variant.precision,
                                   runtime=variant.runtime, pixel_cache=self.args.pixel_cache != "off",
                                   cache_dir=str(self.scratch / "features"), progress=False)  # fmt: skip
        array, _ = extract_features(self.spec, self.source, self.size, self.data, paths, settings,
                                    decode_workers=self.args.decode_workers, build=lambda: variant.model)  # fmt: skip
        return np.asarray(array)


def measure(bench: Bench, variants: list[Variant], rounds: int) -> None:
    """Warm every variant up, then time each over all the images ``rounds`` times, alternating the order."""
    warm = bench.paths[: 2 * bench.args.batch_size]
    if bench.args.pixel_cache == "warm":
        PixelCache(bench.scratch / "features").build(bench.size, bench.data, bench.paths,
                                                     workers=bench.args.decode_workers, progress=False)  # fmt: skip
    for variant in variants:
        if variant.path == "timm":
            bench.start_timm(variant)  # builds and warms up in its worker
        else:
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


def summary_rows(variants: list[Variant], images: int, ceilings: dict[str, float], reference: np.ndarray) -> list[dict]:
    """The measurement's numbers per variant: speed, ratio to the textbook, GFLOP/s against the ceiling, cosine.

    The cosine is to float32 of the same network: ``reference`` (Keras) for Keras and OpenVINO, ``timm-float32``
    for timm (another network's random weights), None where that was not measured.
    """
    base = next((v for v in variants if v.path == "textbook"), variants[0])
    timm_reference = next((v.features for v in variants if v.name == "timm-float32"), None)
    rows = []
    for variant in variants:
        speeds = [images / s for s in variant.seconds]
        same_network = timm_reference if variant.path == "timm" else reference
        rows.append({
            "variant": variant.name, "precision": variant.precision, "runtime": variant.runtime, "speeds": speeds,
            "ratios": [b / s for b, s in zip(base.seconds, variant.seconds, strict=True)],  # same round, same load
            "base": base.name, "gflops": statistics.median(speeds) * variant.gflops,
            "ceiling": ceilings[variant.precision],
            "cosine": None if same_network is None else float(cosine_rows(variant.features, same_network).min()),
        })  # fmt: skip
    return rows


def summary(rows: list[dict]) -> str:
    """``summary_rows`` as a Markdown table."""
    cells = [[row["variant"], row["precision"], row["runtime"], *_spread(row["speeds"]), *_spread(row["ratios"], 2),
              f"{row['gflops']:.0f}", f"{100 * row['gflops'] / row['ceiling']:.0f}% of {row['ceiling']:.0f}",
              "n/a" if row["cosine"] is None else f"{row['cosine']:.6f}"] for row in rows]  # fmt: skip
    headers = ["variant", "precision", "runtime", "img/s median", "img/s min-max", f"x {rows[0]['base']} median",
               "x min-max", "GFLOP/s", "of the matmul ceiling", "cosine min vs fp32 (same network)"]  # fmt: skip
    return tabulate(cells, headers=headers, tablefmt="pipe", disable_numparse=True)


def default_variants(timm_python: str | None = None) -> list[str]:
    """Every Keras variant, the OpenVINO ones where OpenVINO is installed, the timm ones where timm can run:
    here (torch and timm importable), or in ``timm_python`` when one is named."""
    openvino = importlib.util.find_spec("openvino") is not None
    timm = timm_python is not None or all(importlib.util.find_spec(name) for name in ("torch", "timm"))
    return [DEFAULT, *KERAS_VARIANTS, *(OPENVINO_VARIANTS if openvino else ()), *(DEFAULT_TIMM if timm else ())]


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
    parser.add_argument("--ceiling-size", type=int, default=4096, metavar="N",
                        help="the N x N matmul whose speed is the ceiling (default 4096; 8192 on a GPU, whose "
                        "4096 product is too short to time)")  # fmt: skip
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the summary's numbers to FILE")
    parser.add_argument("--timm-python", default=None, metavar="PYTHON",
                        help="interpreter with torch and timm, for the timm variants (default: this one)")  # fmt: skip
    args = parser.parse_args(argv)
    args.variants = args.variants or default_variants(args.timm_python)
    args.timm_python = args.timm_python or sys.executable
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
    variants = [build(name) for name in args.variants]
    for variant in variants:
        print(f"{variant.name}: {variant.precision} on {variant.runtime} ({variant.reason})")
    ceilings = {p: matmul_ceiling(p, args.ceiling_size) for p in sorted({v.precision for v in variants} | {"float32"})}
    print("matmul ceiling: " + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in ceilings.items()))
    with tempfile.TemporaryDirectory() as scratch:
        bench = Bench(spec, source, size, data, paths, args, Path(scratch))
        try:
            measure(bench, variants, args.rounds)
        finally:
            for variant in variants:
                if variant.worker is not None:
                    variant.worker.close()
        reference = _reference(bench, variants, build)
    rows = summary_rows(variants, len(paths), ceilings, reference)
    print(summary(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"backbone": spec.name, "size": size, "images": len(paths),
                                               "batch_size": args.batch_size, "rows": rows}, indent=1))
    print(f"peak resident memory: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
