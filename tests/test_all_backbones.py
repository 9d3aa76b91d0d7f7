"""Every default backbone through the whole command: the longest end-to-end run. The parallel suite queues slow tests
before quick ones (tests/conftest.py), so it starts early and the quick tests even out the workers after it."""

from pathlib import Path

import pandas as pd
import pytest
from conftest import LONGER, run_small_benchmark

from backbones import DEFAULT_BACKBONES
from benchmark.evaluation.verify import verify
from features.runtime import openvino_installed


@pytest.mark.slow
def test_all_six_backbones_extract_and_train(kermany_root: Path, tmp_path: Path):
    # --min-image-side 0: the 40 px fixtures are below Inception's 75 px minimum
    args = ("--backbones", *DEFAULT_BACKBONES, "--image-size", "75", "--limit-per-class", "3", "--min-image-side", "0")
    # The runtime where --runtime auto would land, named: every backbone is converted and run there, without the
    # timing of both runtimes per backbone that auto adds (tests/test_precision_runtime.py tests that choice).
    runtime = "openvino" if openvino_installed() else "keras"
    args += ("--runtime", runtime, "--precision", "float32")
    assert run_small_benchmark(kermany_root, tmp_path, *args, **LONGER) == 0
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    # An ensemble row joins them when validation cannot tell the heads apart.
    assert set(board["backbone"]) - {"ensemble"} == set(DEFAULT_BACKBONES) | {f"{n}-logreg" for n in DEFAULT_BACKBONES}
    assert verify(tmp_path / "results") == []
