"""DenseNet121, the chest X-ray field's backbone, through every stage from a CheXNet-shaped weights file: features,
heads, fine-tuning, and predict's Grad-CAM.

In Keras: OpenVINO's conversion of DenseNet121 costs more seconds than this test's budget holds; the runtime is the
same code for every backbone (tests/test_precision_runtime.py checks it on MobileNetV2), and OpenVINO's DenseNet121,
EfficientNetV2B0 and ConvNeXtTiny features were checked equal to Keras' once, by hand (docs/runs.md, issue 26)."""

from pathlib import Path

import pandas as pd
import pytest
from conftest import run_small_benchmark
from test_backbones import write_classifier_file

from backbones import get_backbone, resolve_weights
from benchmark import predict
from common.files import sha256_file

SIZE = 64  # a 2x2 last feature map, the smallest Grad-CAM draws more than one value on (32 px leaves 1x1)


@pytest.mark.slow
def test_densenet121_from_a_chexnet_shaped_file_through_every_stage(kermany_root: Path, tmp_path: Path, capsys):
    spec = get_backbone("DenseNet121")
    # CheXNet-Keras' structure: DenseNet121(include_top=False, pooling="avg") + Dense(14, sigmoid, "predictions").
    backbone = spec.constructor(weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3))
    weights = write_classifier_file(tmp_path / "weights" / "DenseNet121.h5", backbone)
    source = resolve_weights(spec, str(weights.parent), SIZE)
    assert source.identity == f"file:{sha256_file(weights)}"
    assert run_small_benchmark(kermany_root, tmp_path, "--backbones", "DenseNet121", "--image-size", str(SIZE),
                               "--min-image-side", "0", "--weights", str(weights.parent), "--epochs", "1",
                               "--limit-per-class", "3", "--finetune", "--finetune-epochs", "1",
                               "--finetune-layers", "3", "--runtime", "keras") == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "241 layers with weights loaded" in said and "its top dropped: predictions (Dense 1024 -> 14)" in said
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    assert {"DenseNet121", "DenseNet121-ft"} <= set(board["backbone"])
    frozen = board[board["backbone"] == "DenseNet121"].iloc[0]
    assert frozen["weights"].startswith(source.identity) and frozen["image_size"] == SIZE

    image = sorted((kermany_root / "test" / "PNEUMONIA").iterdir())[0]
    out = tmp_path / "predicted"
    assert predict.main([str(tmp_path / "results"), str(image), "--backbone", "DenseNet121", "--method", "gradcam",
                         "--out", str(out)]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "heatmap: gradcam (last feature map 2x2)" in said
    row = pd.read_csv(out / "predictions.csv").iloc[0]
    assert Path(row["heatmap"]).is_file() and 0 <= row["score"] <= 1
