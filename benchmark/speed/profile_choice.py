"""What ``--runtime auto --precision auto``'s measurement of one backbone costs, step by step, freshly measured (no
memo): the run-wide probe stack in Keras and in OpenVINO, the backbone in Keras in both types, the backbone in
OpenVINO against Keras, and the conversions to OpenVINO among them.

    python -m benchmark.speed.profile_choice [BACKBONE] [--size PX]
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from backbones import get_backbone  # noqa: E402
from features import runtime  # noqa: E402

STEPS = {"keras_probe_pair": "the probe stack in Keras, float32 against bfloat16",
         "openvino_probe_pair": "the probe stack in OpenVINO, float32 against bfloat16",
         "_precision_seconds": "the backbone in Keras, float32 against bfloat16",
         "_runtime_seconds": "the backbone in OpenVINO against Keras",
         "export_openvino": "  of which conversions to OpenVINO (all steps)"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Time each step of one backbone's choice (enough images that it is measured); print seconds per step."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.speed.profile_choice", description=__doc__)
    parser.add_argument("backbone", nargs="?", default="ResNet50")
    parser.add_argument("--size", type=int, default=None, help="default: the backbone's own")
    args = parser.parse_args(argv)
    spec = get_backbone(args.backbone)
    size = args.size or spec.default_size
    seconds = dict.fromkeys(STEPS, 0.0)
    for name in STEPS:
        setattr(runtime, name, _timed(getattr(runtime, name), name, seconds))
    started = time.perf_counter()
    with runtime.measured_afresh() as scratch:
        chosen = runtime.resolve_runtime("auto", "auto")
        images = int(runtime.MEASURE_FROM * (224 / size) ** 2) + 1  # enough to be measured
        _, choices = runtime.resolve_backbones(chosen, "auto", [(spec, size)], scratch, images=images)
    print(f"{spec.name} at {size} px: the choice took {time.perf_counter() - started:.1f} s")
    for name, words in STEPS.items():
        print(f"  {words}: {seconds[name]:.1f} s")
    where, precision = choices[(spec.name, size)]
    print(f"chose {where.runtime}, {precision.precision}: {where.reason}")
    return 0


def _timed(function, name: str, seconds: dict[str, float]):
    """``function``, adding its wall time to ``seconds[name]``."""

    @functools.wraps(function)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started

    return timed


if __name__ == "__main__":
    raise SystemExit(main())
