"""Runs a backbone over a list of images in batches and caches the pooled features.

Extraction goes shard by shard (``shard_size`` images); each finished shard is
saved atomically, with its SHA-256 beside it, so a run killed half-way resumes
from the last whole shard (a damaged one is said in one line and extracted
again). When every shard is there they are assembled into one memory-mappable
array and the shards are removed.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from backbones import INT8, BackboneSpec, WeightsSource, build_backbone, check_precision, get_backbone, resolve_weights
from common.executors import Executor, ExecutorError
from common.files import atomic_write_text, sha256_file
from features.cache import (
    FeatureCache,
    atomic_save_npy,
    cache_key,
    content_fingerprint,
    entry_lock,
    file_list_fingerprint,
    warn_damaged,
)
from features.data.dataset import Dataset
from features.data.dicom import dicom_identity
from features.data.images import DECODE_VERSION, load_image
from features.pixels import PixelCache, PixelReader
from features.quantize import int8_ir, int8_key_parts
from features.runtime import Forward, build_forward, openvino_root, runtime_identity
from features.settings import Calibration, DicomSettings, ExtractSettings, compute_key


@dataclass
class ExtractionStats:
    """What one ``extract_features`` call did."""

    images: int
    from_cache: bool
    forward_batches: int = 0
    seconds: float = 0.0
    build_seconds: float = 0.0
    decode_seconds: float = 0.0
    key: str = ""

    @property
    def images_per_second(self) -> float:
        """Decode + forward throughput of the images pushed through the backbone (model build excluded)."""
        return self.images / self.seconds if self.seconds and not self.from_cache else float("nan")


def feature_key_parts(
    spec: BackboneSpec,
    source: WeightsSource,
    image_size: int,
    root: Path,
    paths: list[str],
    precision: str = "float32",
    jit_compile: bool = False,
    runtime: str = "keras",
    digests: dict[str, str] | None = None,
    dicom: DicomSettings | None = None,
    calibration: Calibration | None = None,
) -> dict:
    """Everything that changes the feature array, as a dict to hash; ``dicom``: how DICOM files are windowed;
    ``calibration``: the training images an int8 backbone was calibrated on (int8 only, where it is required).

    ``precision`` is the one computed in, resolved: ``auto`` is refused, since one key would then name features
    of bfloat16 on one machine and float32 on another. Each image is named by its size and modification time
    and, with ``digests`` (the image check's SHA-256 of each file's bytes, by path), by its contents too: an image
    found changed by ``--rehash`` under an unchanged size and time then gets new features, and new heads.
    """
    if precision == INT8:
        if calibration is None:
            raise ValueError("int8 features need the run's calibration images (ExtractSettings.compute.calibration)")
        quantized = int8_key_parts(calibration)
    else:
        check_precision(precision)
        quantized = {}
    contents = {"contents": content_fingerprint(paths, digests)} if digests else {}
    return {
        "backbone": spec.name,
        "weights": source.identity,
        "image_size": image_size,
        "preprocess": spec.preprocess_mode,
        "decode": DECODE_VERSION,
        "dicom": dicom_identity(dicom or DicomSettings()),
        "pooling": "avg",
        "precision": precision,
        # XLA fuses and reorders float operations, so its features differ in the last bits.
        "compiler": "xla" if jit_compile else "default",
        "runtime": runtime_identity(runtime),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "files": file_list_fingerprint(root, paths),
        **contents,
        **quantized,
        "n_images": len(paths),
    }


def _shard_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"shard-{start:08d}-{stop:08d}.npy"


def _shard_seal(path: Path) -> Path:
    return path.with_suffix(".sha256")


def _shard_is_whole(path: Path, rows: int, width: int) -> bool:
    """Whether the shard at ``path`` is finished and matches the SHA-256 written after it; a damaged one is said
    in one line (and extracted again by the caller)."""
    try:
        recorded = _shard_seal(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return False  # not finished: the run was killed before its checksum was written
    try:
        if sha256_file(path) != recorded:
            damage = f"{path} is damaged (its SHA-256 differs from the one written beside it)"
        elif np.load(path, mmap_mode="r", allow_pickle=False).shape != (rows, width):
            damage = f"{path} is damaged (not {rows} rows of {width} features)"
        else:
            return True
    except (OSError, ValueError) as error:
        damage = f"{path} is damaged ({type(error).__name__}: {error})"
    warn_damaged(damage, "its images are extracted again (rebuilt)")
    return False


def _save_shard(path: Path, shard: np.ndarray) -> None:
    """Write a finished shard, then its SHA-256 beside it (last: a shard without one is unfinished)."""
    atomic_save_npy(path, shard)
    atomic_write_text(_shard_seal(path), sha256_file(path) + "\n")


def _pixel_batches(
    batches: list[tuple[int, int]],
    root: Path,
    paths: list[str],
    image_size: int,
    pixels: PixelReader | None,
    pool: ThreadPoolExecutor,
    dicom: DicomSettings,
) -> Iterator[np.ndarray]:
    """uint8 pixels of each batch: read from the pixel cache, or decoded one batch ahead on ``pool`` (DICOM files
    windowed as ``dicom`` says)."""
    if pixels is not None:
        for lo, hi in batches:
            yield pixels.read(lo, hi)
        return

    def decode(batch: tuple[int, int]):
        return [pool.submit(load_image, root / paths[i], image_size, dicom) for i in range(*batch)]

    pending = decode(batches[0])
    for number in range(len(batches)):
        ready = [future.result() for future in pending]
        # Decode the next batch on the worker threads while the backbone runs on this one.
        if number + 1 < len(batches):
            pending = decode(batches[number + 1])
        yield np.stack(ready)


def extract_features(
    spec: BackboneSpec,
    source: WeightsSource,
    image_size: int,
    root: Path,
    paths: list[str],
    settings: ExtractSettings,
    *,
    decode_workers: int = 2,
    build: Callable[[], keras.Model] | None = None,
    digests: dict[str, str] | None = None,
) -> tuple[np.ndarray, ExtractionStats]:
    """Pooled backbone features for ``paths`` (relative to ``root``), from the cache ``settings.cache_dir`` when
    possible; ``source`` is the resolved ``settings.weights``.

    Returns the ``(len(paths), spec.feature_size)`` float32 array (memory-mapped
    from the cache) and what was done. ``build`` overrides how the backbone is
    made (tests count forward passes with it); the backbone is built only when
    some shard is missing. With ``settings.pixel_cache`` the images are decoded once per
    size into the pixel cache beside the features (or read from it when another backbone already did); without,
    they are decoded on ``decode_workers`` threads while the backbone runs.
    Resident memory does not grow with ``len(paths)``: shards are written as
    they finish and assembled into the cache entry one at a time. Runtime "openvino" converts the backbone
    once per backbone, size and weights into the cache's ``openvino`` folder and runs it there. Two callers
    of one key at once (two cluster workers) take turns on the entry's lock: the second reads what the first wrote.
    ``digests`` (the image check's SHA-256 of each file, by path) puts the images' contents in the key.
    """
    root, cache = Path(root), FeatureCache(settings.cache_dir)
    # The backbone's own compute type and runtime, where the run resolved one for it.
    precision, runtime = settings.precision_for(spec.name, image_size), settings.runtime_for(spec.name, image_size)
    parts = feature_key_parts(spec, source, image_size, root, paths, precision, settings.jit_compile, runtime, digests,
                              settings.dicom, settings.calibration)  # fmt: skip
    key = cache_key(parts)
    cached = cache.load(spec.name, key, report=True)
    if cached is None:
        # Another writer of this key (a second worker) may be building it: wait for it, then look again.
        with entry_lock(cache.entry(spec.name, key)):
            cached = cache.load(spec.name, key)
            if cached is None:
                # OpenVINO converts a float32 model; its compile hint, not the Keras policy, sets the compute type.
                built_in = precision if runtime == "keras" else "float32"
                make_model = build or partial(build_backbone, spec, image_size, source, seed=settings.seed,
                                              precision=built_in)  # fmt: skip
                ir_file = openvino_ir_file(cache.root, spec, source, image_size) if runtime == "openvino" else None
                batch_shape = (settings.batch_size, image_size, image_size, 3)
                quantize = partial(int8_ir, spec=spec, image_size=image_size, calibration=settings.calibration,
                                   dicom=settings.dicom)  # fmt: skip
                make_forward = partial(build_forward, runtime, make_model, precision=precision, quantize=quantize,
                                       jit_compile=settings.jit_compile, batch_shape=batch_shape, ir_file=ir_file)
                pixels = PixelCache(cache.root, settings.dicom) if settings.pixel_cache else None
                return _build_entry(spec, image_size, root, paths, cache, key, parts, make_forward,
                                    settings.shard_size, batch_size=settings.batch_size, decode_workers=decode_workers,
                                    pixel_cache=pixels, progress=settings.progress, dicom=settings.dicom)  # fmt: skip
    return cached, ExtractionStats(len(paths), from_cache=True, key=key)


def _build_entry(
    spec: BackboneSpec,
    image_size: int,
    root: Path,
    paths: list[str],
    cache: FeatureCache,
    key: str,
    parts: dict,
    make_forward: Callable[[], Forward],
    shard_size: int,
    **options,
) -> tuple[np.ndarray, ExtractionStats]:
    """Extract the shards not yet on disk, assemble them into the cache entry ``key`` and remove them."""
    shard_dir = cache.entry(spec.name, key) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    bounds = [(start, min(start + shard_size, len(paths))) for start in range(0, len(paths), shard_size)]
    missing = [b for b in bounds if not _shard_is_whole(_shard_path(shard_dir, *b), b[1] - b[0], spec.feature_size)]
    stats = ExtractionStats(sum(stop - start for start, stop in missing), from_cache=False, key=key)
    if missing:
        _extract_missing(spec, image_size, root, paths, missing, shard_dir, make_forward, stats,
                         fingerprint=parts["files"], **options)  # fmt: skip
    shards = (np.load(_shard_path(shard_dir, start, stop), allow_pickle=False) for start, stop in bounds)
    result = cache.save_rows(spec.name, key, (len(paths), spec.feature_size), shards, dict(parts, paths=paths))
    shutil.rmtree(shard_dir, ignore_errors=True)
    return result, stats


def _extract_missing(
    spec: BackboneSpec,
    image_size: int,
    root: Path,
    paths: list[str],
    missing: list[tuple[int, int]],
    shard_dir: Path,
    make_forward: Callable[[], Forward],
    stats: ExtractionStats,
    *,
    pixel_cache: PixelCache | None,
    fingerprint: str,
    batch_size: int,
    decode_workers: int,
    progress: bool,
    dicom: DicomSettings,
) -> None:
    """Extract and save each ``missing`` shard: pixels (from ``pixel_cache`` if given), then the backbone's forward.

    The pixel cache's filling, the backbone's build (with its conversion, for OpenVINO) and the extraction itself
    are timed apart into ``stats``.
    """
    pixels = None
    if pixel_cache is not None:
        pixels, stats.decode_seconds = pixel_cache.build(
            image_size, root, paths, workers=decode_workers, progress=progress, fingerprint=fingerprint
        )
    built = time.perf_counter()
    forward = make_forward()
    stats.build_seconds = time.perf_counter() - built
    done = len(paths) - stats.images
    bar = tqdm(total=len(paths), initial=done, unit="img", desc=f"{spec.name} {image_size}px", disable=not progress)
    with ThreadPoolExecutor(max_workers=decode_workers) as pool:
        for start, stop in missing:
            shard = np.empty((stop - start, spec.feature_size), dtype=np.float32)
            batches = [(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]
            started = time.perf_counter()
            pixel_batches = _pixel_batches(batches, root, paths, image_size, pixels, pool, dicom)
            for (lo, hi), uint8 in zip(batches, pixel_batches, strict=True):
                shard[lo - start : hi - start] = padded_forward(forward, spec.preprocess, uint8, batch_size)
                stats.forward_batches += 1
                bar.update(hi - lo)
            stats.seconds += time.perf_counter() - started
            _save_shard(_shard_path(shard_dir, start, stop), shard)
    bar.close()
    if pixels is not None:
        pixels.close()


def padded_forward(forward: Forward, preprocess, uint8: np.ndarray, batch_size: int) -> np.ndarray:
    """``forward``'s features of ``uint8`` images, in batches of exactly ``batch_size``, a short last one zero-padded.

    One input shape means one compiled graph (OpenVINO's is static), and the features of an image do not depend
    on how many came with it: ``predict`` gets the numbers extraction got.
    """
    out = []
    for start in range(0, len(uint8), batch_size):
        part = uint8[start : start + batch_size]
        batch = np.zeros((batch_size, *uint8.shape[1:]), dtype=np.float32)
        batch[: len(part)] = part
        out.append(forward(preprocess(batch))[: len(part)])
    return np.concatenate(out)


def openvino_ir_file(cache_root: Path, spec: BackboneSpec, source: WeightsSource, image_size: int) -> Path:
    """Where the OpenVINO IR of this backbone, weights and size is kept: machine-wide, or under the feature cache
    ``cache_root`` (``openvino_root``). Its key names the weights by their SHA-256 (a file) or seed (random)."""
    model_parts = {"backbone": spec.name, "weights": source.identity, "image_size": image_size, "pooling": "avg",
                   "keras": keras.__version__, "backend": keras.backend.backend(),
                   "runtime": runtime_identity("openvino")}  # fmt: skip
    return openvino_root(cache_root) / spec.name / cache_key(model_parts) / "model.xml"


def _available_memory() -> int:
    """Bytes of memory the system can still give (MemAvailable), or total memory where that is unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class BackboneFeatures:
    """One backbone's pooled features of every image of a dataset at one image size."""

    backbone: str
    image_size: int
    weights: str  # the identity of the weights (``WeightsSource.identity``)
    features: np.ndarray  # rows aligned with ``Dataset.records``, memory-mapped from the cache
    stats: ExtractionStats

    @property
    def name(self) -> str:
        """``<backbone>-<size>px``, as the logs and ``run.json`` name it."""
        return compute_key(self.backbone, self.image_size)


def extraction_line(one: BackboneFeatures, of: str = "") -> str:
    """What one extraction did, in one line: read from the cache, or how many forward passes it took and how fast.

    ``of`` names the image set where it is not the run's own (``external test``): each set has its own cache entry,
    so a run whose training images come from the cache may still pass the external ones through the backbone.
    """
    stats = one.stats
    name = f"{one.name} ({of})" if of else one.name
    if stats.from_cache:
        return f"{name}: features from cache, 0 forward passes ({stats.images} images)"
    decoding = f" and {stats.decode_seconds:.1f} s decoding into the pixel cache" if stats.decode_seconds else ""
    passes = f"{stats.forward_batches} forward pass{'' if stats.forward_batches == 1 else 'es'}"
    return (f"{name}: features from {passes} ({stats.images} images), {stats.images_per_second:.1f} img/s after a "
            f"{stats.build_seconds:.1f} s model build{decoding}")  # fmt: skip


def extraction_lines(extracted: list[BackboneFeatures], external: list[BackboneFeatures] | None = None) -> list[str]:
    """``extraction_line`` of each (backbone, size) of the run's images, then of the ``external`` test set's."""
    if not external:
        return [extraction_line(one) for one in extracted]
    return [extraction_line(one, "internal") for one in extracted] + [
        extraction_line(one, "external test") for one in external
    ]


def forward_passes(*extracted: list[BackboneFeatures]) -> int:
    """The backbone forward passes the extractions of ``extracted`` (lists, one per image set) took this run."""
    return sum(one.stats.forward_batches for group in extracted for one in group or ())


def extract_dataset(settings: ExtractSettings, dataset: Dataset, spec: BackboneSpec, size: int) -> BackboneFeatures:
    """Features of every image of ``dataset`` through ``spec`` at ``size``, from the cache when possible."""
    source = resolve_weights(spec, settings.weights, size, seed=settings.seed)
    features, stats = extract_features(spec, source, size, dataset.root, [record.path for record in dataset.records],
                                       settings, digests=dataset.digests or None)  # fmt: skip
    return BackboneFeatures(spec.name, size, source.identity, features, stats)


def extract_all(
    settings: ExtractSettings, dataset: Dataset, plan: list[tuple[BackboneSpec, int]], executor: Executor | None = None
) -> list[BackboneFeatures]:
    """Extract (or read from the cache) the features of every (backbone, image size) of ``plan``.

    With a distributed ``executor`` (``common.executors``) each (backbone,
    size) is one task, given a GPU where the cluster has them; the worker
    writes the entry into the shared feature cache and only its statistics
    come back, the features being read here from that cache.
    """
    if executor is None or not executor.distributed:
        return [extract_dataset(settings, dataset, spec, size) for spec, size in plan]
    shared = executor.share(replace(dataset, root=Path(dataset.root).resolve()))
    done = executor.map(extract_elsewhere, [(settings, shared, spec.name, size) for spec, size in plan], gpu=True)
    return [_read_back(settings, one) for one in done]


def extract_elsewhere(settings: ExtractSettings, dataset: Dataset, backbone: str, size: int) -> BackboneFeatures:
    """``extract_dataset`` as a cluster task: the features stay in the shared cache; the rest is returned."""
    return replace(extract_dataset(settings, dataset, get_backbone(backbone), size), features=None)


def _read_back(settings: ExtractSettings, one: BackboneFeatures) -> BackboneFeatures:
    """``one`` with its features, memory-mapped from the cache entry a worker wrote."""
    features = FeatureCache(settings.cache_dir).load(one.backbone, one.stats.key)
    if features is None:
        raise ExecutorError(f"the {one.name} features a worker wrote to {settings.cache_dir} are not there or not "
                            "whole here: --cache-dir must be a folder every worker and this machine see at the same "
                            "path (a shared filesystem)")  # fmt: skip
    return replace(one, features=features)


def byte_size(count: float) -> str:
    """``count`` bytes in the largest unit that keeps it at 1 or more (GiB, MiB, KiB), so a nearly full disk reads
    "needs 3.2 MiB, has 512.0 KiB free", not "needs 0.0 GiB, has 0.0 GiB free"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} bytes"


def resource_problems(
    spec: BackboneSpec, image_size: int, n_images: int, batch_size: int, cache_dir: Path, pixel_cache: bool
) -> list[str]:
    """What would not fit before extraction starts: the pixel cache on disk, the forward pass in memory.

    The forward pass is estimated as ``batch_size`` images x the largest
    activation of the network x 3 (a layer's input and output alive at once,
    plus the framework's working space), counted on a symbolic build only for
    inputs above the backbone's own size, where a mistake (``--image-size
    5000``) would otherwise end in the out-of-memory killer.
    """
    problems = []
    if pixel_cache:
        needed = n_images * image_size * image_size * 3
        cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_dir).free
        if needed > free:
            problems.append(f"the {image_size} px pixel cache needs {byte_size(needed)}, {cache_dir} has "
                            f"{byte_size(free)} free (--no-pixel-cache decodes per backbone instead)")  # fmt: skip
    if image_size > spec.default_size:
        model = spec.constructor(weights=None, include_top=False, input_shape=(image_size, image_size, 3))
        largest = max(math.prod(layer.output.shape[1:]) for layer in model.layers if len(layer.output.shape) == 4)
        needed = batch_size * largest * 4 * 3
        available = _available_memory()
        if needed > 0.8 * available:
            problems.append(f"{spec.name} at {image_size} px needs about {byte_size(needed)} of memory for a "
                            f"batch of {batch_size} (its largest activation is {largest * 4 / 2**20:.0f} MiB per "
                            f"image); {byte_size(available)} are available. Use a smaller --image-size or "
                            "--extract-batch-size")  # fmt: skip
        keras.backend.clear_session()
    return problems
