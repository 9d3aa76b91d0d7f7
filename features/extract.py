"""Run a backbone over a list of images in batches and cache the pooled features.

Extraction goes shard by shard (``shard_size`` images); each finished shard is
saved atomically, so a run killed half-way resumes from the last whole shard.
When every shard is there they are assembled into one memory-mappable array
and the shards are removed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from backbones import BackboneSpec, WeightsSource, build_backbone
from features.cache import FeatureCache, atomic_save_npy, cache_key, file_list_fingerprint
from features.images import DECODE_VERSION, load_image
from features.pixels import PixelCache, PixelReader


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
) -> dict:
    """Everything that changes the feature array, as a dict to hash."""
    return {
        "backbone": spec.name,
        "weights": source.identity,
        "image_size": image_size,
        "preprocess": spec.preprocess_mode,
        "decode": DECODE_VERSION,
        "pooling": "avg",
        "precision": precision,
        # XLA fuses and reorders float operations, so its features differ in the last bits.
        "compiler": "xla" if jit_compile else "default",
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "files": file_list_fingerprint(root, paths),
        "n_images": len(paths),
    }


def _shard_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"shard-{start:08d}-{stop:08d}.npy"


def _shard_is_whole(path: Path, rows: int, width: int) -> bool:
    # Memory-mapping reads only the header; shards are written atomically, so a whole header means a whole shard.
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).shape == (rows, width)
    except (OSError, ValueError):
        return False


def make_forward(model: keras.Model, jit_compile: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A function from one preprocessed batch to float32 pooled features.

    ``predict_on_batch`` runs one traced graph per input shape (a jitted
    function on JAX); ``jit_compile`` asks for XLA on TensorFlow as well.
    """
    if jit_compile:
        model.compile(jit_compile=True)

    def forward(batch: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.cast(model.predict_on_batch(batch), "float32"))

    return forward


def _pixel_batches(
    batches: list[tuple[int, int]],
    root: Path,
    paths: list[str],
    image_size: int,
    pixels: PixelReader | None,
    pool: ThreadPoolExecutor,
) -> Iterator[np.ndarray]:
    """uint8 pixels of each batch: read from the pixel cache, or decoded one batch ahead on ``pool``."""
    if pixels is not None:
        for lo, hi in batches:
            yield pixels.read(lo, hi)
        return

    def decode(batch: tuple[int, int]):
        return [pool.submit(load_image, root / paths[i], image_size) for i in range(*batch)]

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
    cache: FeatureCache,
    *,
    batch_size: int = 32,
    shard_size: int = 512,
    seed: int = 0,
    decode_workers: int = 2,
    precision: str = "float32",
    jit_compile: bool = False,
    pixel_cache: PixelCache | None = None,
    progress: bool = True,
    build: Callable[[], keras.Model] | None = None,
) -> tuple[np.ndarray, ExtractionStats]:
    """Pooled backbone features for ``paths`` (relative to ``root``), from cache when possible.

    Returns the ``(len(paths), spec.feature_size)`` float32 array (memory-mapped
    from the cache) and what was done. ``build`` overrides how the backbone is
    made (tests count forward passes with it); the backbone is built only when
    some shard is missing. With ``pixel_cache`` the images are decoded once per
    size into it (or read from it when another backbone already did); without,
    they are decoded on ``decode_workers`` threads while the backbone runs.
    Resident memory does not grow with ``len(paths)``: shards are written as
    they finish and assembled into the cache entry one at a time.
    """
    root = Path(root)
    parts = feature_key_parts(spec, source, image_size, root, paths, precision, jit_compile)
    key = cache_key(parts)
    cached = cache.load(spec.name, key)
    if cached is not None:
        return cached, ExtractionStats(len(paths), from_cache=True, key=key)

    entry = cache.entry(spec.name, key)
    shard_dir = entry / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    bounds = [(start, min(start + shard_size, len(paths))) for start in range(0, len(paths), shard_size)]
    missing = [b for b in bounds if not _shard_is_whole(_shard_path(shard_dir, *b), b[1] - b[0], spec.feature_size)]
    stats = ExtractionStats(sum(stop - start for start, stop in missing), from_cache=False, key=key)

    if missing:
        pixels = None
        if pixel_cache is not None:
            pixels, stats.decode_seconds = pixel_cache.build(
                image_size, root, paths, workers=decode_workers, progress=progress, fingerprint=parts["files"]
            )
        built = time.perf_counter()
        model = build() if build else build_backbone(spec, image_size, source, seed=seed, precision=precision)
        forward = make_forward(model, jit_compile)
        stats.build_seconds = time.perf_counter() - built
        done = len(paths) - stats.images
        bar = tqdm(total=len(paths), initial=done, unit="img", desc=f"{spec.name} {image_size}px", disable=not progress)
        with ThreadPoolExecutor(max_workers=decode_workers) as pool:
            for start, stop in missing:
                shard = np.empty((stop - start, spec.feature_size), dtype=np.float32)
                batches = [(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]
                started = time.perf_counter()
                pixel_batches = _pixel_batches(batches, root, paths, image_size, pixels, pool)
                for (lo, hi), uint8 in zip(batches, pixel_batches, strict=True):
                    # A short last batch is zero-padded: one input shape means one compiled graph.
                    batch = np.zeros((batch_size, image_size, image_size, 3), dtype=np.float32)
                    batch[: hi - lo] = uint8
                    shard[lo - start : hi - start] = forward(spec.preprocess(batch))[: hi - lo]
                    stats.forward_batches += 1
                    bar.update(hi - lo)
                stats.seconds += time.perf_counter() - started
                atomic_save_npy(_shard_path(shard_dir, start, stop), shard)
        bar.close()
        if pixels is not None:
            pixels.close()

    shards = (np.load(_shard_path(shard_dir, start, stop), allow_pickle=False) for start, stop in bounds)
    result = cache.save_rows(spec.name, key, (len(paths), spec.feature_size), shards, dict(parts, paths=paths))
    shutil.rmtree(shard_dir, ignore_errors=True)
    return result, stats
