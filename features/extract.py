"""Run a backbone over a list of images in batches and cache the pooled features.

Extraction goes shard by shard (``shard_size`` images); each finished shard is
saved atomically, so a run killed half-way resumes from the last whole shard.
When every shard is there they are assembled into one memory-mappable array
and the shards are removed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from backbones import BackboneSpec, WeightsSource, build_backbone
from features.cache import FeatureCache, atomic_save_npy, cache_key, file_list_fingerprint
from features.images import DECODE_VERSION, load_image


@dataclass
class ExtractionStats:
    """What one ``extract_features`` call did."""

    images: int
    from_cache: bool
    forward_batches: int = 0
    seconds: float = 0.0
    build_seconds: float = 0.0
    key: str = ""

    @property
    def images_per_second(self) -> float:
        """Decode + forward throughput of the images pushed through the backbone (model build excluded)."""
        return self.images / self.seconds if self.seconds and not self.from_cache else float("nan")


def feature_key_parts(spec: BackboneSpec, source: WeightsSource, image_size: int, root: Path, paths: list[str]) -> dict:
    """Everything that changes the feature array, as a dict to hash."""
    return {
        "backbone": spec.name,
        "weights": source.identity,
        "image_size": image_size,
        "preprocess": spec.preprocess_mode,
        "decode": DECODE_VERSION,
        "pooling": "avg",
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "files": file_list_fingerprint(root, paths),
        "n_images": len(paths),
    }


def _shard_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"shard-{start:08d}-{stop:08d}.npy"


def _load_shard(path: Path, rows: int, width: int) -> np.ndarray | None:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return array if array.shape == (rows, width) else None


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
    progress: bool = True,
    build: Callable[[], keras.Model] | None = None,
) -> tuple[np.ndarray, ExtractionStats]:
    """Pooled backbone features for ``paths`` (relative to ``root``), from cache when possible.

    Returns the ``(len(paths), spec.feature_size)`` float32 array (memory-mapped
    from the cache) and what was done. ``build`` overrides how the backbone is
    made (tests count forward passes with it); the backbone is built only when
    some shard is missing.
    """
    root = Path(root)
    parts = feature_key_parts(spec, source, image_size, root, paths)
    key = cache_key(parts)
    cached = cache.load(spec.name, key)
    if cached is not None:
        return cached, ExtractionStats(len(paths), from_cache=True, key=key)

    entry = cache.entry(spec.name, key)
    shard_dir = entry / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    bounds = [(start, min(start + shard_size, len(paths))) for start in range(0, len(paths), shard_size)]
    missing = [b for b in bounds if _load_shard(_shard_path(shard_dir, *b), b[1] - b[0], spec.feature_size) is None]
    stats = ExtractionStats(sum(stop - start for start, stop in missing), from_cache=False, key=key)

    if missing:
        built = time.perf_counter()
        model = build() if build else build_backbone(spec, image_size, source, seed=seed)
        stats.build_seconds = time.perf_counter() - built
        done = len(paths) - stats.images
        bar = tqdm(total=len(paths), initial=done, unit="img", desc=f"{spec.name} {image_size}px", disable=not progress)
        with ThreadPoolExecutor(max_workers=decode_workers) as pool:
            for start, stop in missing:
                shard = np.empty((stop - start, spec.feature_size), dtype=np.float32)
                batches = [(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]

                def decode(batch: tuple[int, int]):
                    return [pool.submit(load_image, root / paths[i], image_size) for i in range(*batch)]

                started = time.perf_counter()
                pending = decode(batches[0])
                for number, (lo, hi) in enumerate(batches):
                    pixels = np.zeros((batch_size, image_size, image_size, 3), dtype=np.float32)
                    # A short last batch is zero-padded: one input shape means one compiled graph.
                    pixels[: hi - lo] = np.stack([future.result() for future in pending])
                    # Decode the next batch on the worker threads while the backbone runs.
                    if number + 1 < len(batches):
                        pending = decode(batches[number + 1])
                    output = model.predict_on_batch(spec.preprocess(pixels))
                    shard[lo - start : hi - start] = keras.ops.convert_to_numpy(output)[: hi - lo]
                    stats.forward_batches += 1
                    bar.update(hi - lo)
                stats.seconds += time.perf_counter() - started
                atomic_save_npy(_shard_path(shard_dir, start, stop), shard)
        bar.close()

    features = np.concatenate(
        [np.load(_shard_path(shard_dir, start, stop), allow_pickle=False) for start, stop in bounds]
    )
    result = cache.save(spec.name, key, features, dict(parts, paths=paths))
    shutil.rmtree(shard_dir, ignore_errors=True)
    return result, stats
