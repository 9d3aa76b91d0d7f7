"""One backbone, start to finish: features -> head -> test probabilities."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from backbones import BackboneSpec, resolve_weights
from benchmark.heads import HeadSettings, TrainedHead, train_head
from features.cache import FeatureCache
from features.dataset import Dataset
from features.extract import ExtractionStats, extract_features


@dataclass
class HeadResult:
    """A trained head and its probabilities on the validation and test splits."""

    backbone: str
    image_size: int
    settings: HeadSettings
    weights: str
    head_id: str
    head: TrainedHead
    extraction: ExtractionStats
    probabilities: dict[str, np.ndarray]


def head_id(backbone: str, image_size: int, settings: HeadSettings) -> str:
    """A folder name that tells which head this is."""
    return f"{backbone}-{image_size}px-lr{settings.lr:g}-do{settings.dropout:g}-seed{settings.seed}"


def split_features(features: np.ndarray, dataset: Dataset) -> dict[str, np.ndarray]:
    """Rows of ``features`` (aligned with ``dataset.records``) per split, in memory."""
    splits = np.array([record.split for record in dataset.records])
    return {name: np.asarray(features[np.flatnonzero(splits == name)]) for name in ("train", "val", "test")}


def run_backbone(
    spec: BackboneSpec,
    image_size: int,
    weights: str,
    settings: HeadSettings,
    dataset: Dataset,
    cache: FeatureCache,
    heads_dir: Path,
    *,
    extract_batch_size: int = 32,
    progress: bool = True,
) -> HeadResult:
    """Extract (or reuse) ``spec``'s features for every image, train a head, predict val and test.

    Only the train and validation splits shape the head; the test split is
    predicted once at the end, for the report.
    """
    source = resolve_weights(spec, weights, image_size, seed=settings.seed)
    features, stats = extract_features(
        spec,
        source,
        image_size,
        dataset.root,
        [record.path for record in dataset.records],
        cache,
        batch_size=extract_batch_size,
        seed=settings.seed,
        progress=progress,
    )
    by_split = split_features(features, dataset)
    name = head_id(spec.name, image_size, settings)
    out_dir = heads_dir / name
    trained = train_head(
        by_split["train"],
        dataset.labels("train"),
        by_split["val"],
        dataset.labels("val"),
        len(dataset.classes),
        settings,
        out_dir,
        progress=progress,
        description=f"{spec.name} head",
    )
    probabilities = {
        split: trained.model.predict(by_split[split], batch_size=1024, verbose=0) for split in ("val", "test")
    }
    (out_dir / "head.json").write_text(
        json.dumps(
            {
                "backbone": spec.name,
                "image_size": image_size,
                "weights": source.identity,
                "settings": asdict(settings),
                "feature_cache_key": stats.key,
                "best_epoch": trained.best_epoch,
                "epochs_run": trained.epochs_run,
                "classes": list(dataset.classes),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return HeadResult(spec.name, image_size, settings, source.identity, name, trained, stats, probabilities)
