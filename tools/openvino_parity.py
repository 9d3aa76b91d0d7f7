"""OpenVINO's features against Keras' for some backbones, on generated images: the check recorded for issue 26's
new families (docs/runs.md), too slow for the test suite (each conversion takes seconds).

    python -m tools.openvino_parity [--backbones DenseNet121 EfficientNetV2B0 ConvNeXtTiny] [--size 32]

For each backbone: random weights, ``features.extract.extract_features`` with ``--runtime keras`` and then
``--runtime openvino`` (float32) on the same small generated Kermany set (tests/conftest.py's ``make_kermany``,
4/1/2 images per class and split), and the smallest cosine between an image's two feature vectors.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backbones import get_backbone, resolve_weights
from benchmark.speed.bench_extract import cosine_rows
from features.data.dataset import scan_dataset
from features.extract import extract_features
from features.settings import ExtractSettings


def main(argv: list[str] | None = None) -> None:
    """Print one line per backbone: images, the smallest cosine, the seconds both runtimes took."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["DenseNet121", "EfficientNetV2B0", "ConvNeXtTiny"])
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import make_kermany  # the suite's generated images, not a copy of them

    with tempfile.TemporaryDirectory() as scratch:
        root = make_kermany(Path(scratch) / "data", {"train": 4, "val": 1, "test": 2})
        paths = [record.path for record in scan_dataset(root).records]
        for name in args.backbones:
            spec = get_backbone(name)
            source = resolve_weights(spec, "none", args.size)
            on_keras = ExtractSettings(batch_size=16, pixel_cache=False, cache_dir=f"{scratch}/{name}", progress=False)
            started = time.perf_counter()
            keras_features, _ = extract_features(spec, source, args.size, root, paths, on_keras)
            vino, _ = extract_features(spec, source, args.size, root, paths,
                                       dataclasses.replace(on_keras, runtime="openvino"))  # fmt: skip
            cosine = cosine_rows(np.asarray(keras_features), np.asarray(vino)).min()
            print(f"{name}: {len(paths)} images at {args.size} px, cosine min {cosine:.8f}, "
                  f"{time.perf_counter() - started:.1f} s for both runtimes")  # fmt: skip


if __name__ == "__main__":
    main()
