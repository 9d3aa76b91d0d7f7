"""Single-image prediction with heatmaps: the run's own probabilities, Grad-CAM as defined, occlusion."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import run_small_benchmark
from PIL import Image

from benchmark import predict
from benchmark.training.heads import build_head


def test_predict_gives_the_runs_probabilities_and_a_heatmap_per_image(small_run, tmp_path: Path, capsys):
    root, results = small_run.root, small_run.results
    (tmp_path / "in").mkdir()
    for path in sorted((root / "test" / "PNEUMONIA").iterdir())[:3]:
        (tmp_path / "in" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "in" / "broken.jpeg").write_text("not an image")
    Image.new("L", (1, 1), 128).save(tmp_path / "in" / "dot.png")  # the run itself would have left it out
    assert predict.main([str(results), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "broken.jpeg: skipped, not an image" in out and "random-init weights" in out
    assert "dot.png: skipped, too small: 1x1 px, below the 32 px minimum" in out
    assert "heatmap: occlusion (last feature map 1x1)" in out  # 32 px: too coarse for Grad-CAM
    assert "normal_vs_pneumonia: P(bacterial+viral)" in out
    mine = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(mine) == 3
    theirs = pd.read_csv(results / "predictions.csv")
    theirs = theirs.set_index(theirs["path"].str.rsplit("/", n=1).str[-1])
    for row in mine.itertuples():
        name = Path(row.path).name
        for label in ("normal", "bacterial", "viral"):
            assert getattr(row, f"p_{label}") == pytest.approx(theirs.loc[name, f"p_{label}"], abs=1e-5)
        heatmap = Image.open(row.heatmap)
        assert heatmap.size[0] > 400 and np.asarray(heatmap).std() > 1
    assert (mine["flagged"] == (mine["score"] >= mine["threshold"])).all()


def test_predict_gives_an_openvino_runs_own_probabilities(kermany_root: Path, tmp_path: Path, capsys):
    """A run whose features OpenVINO computed (in bfloat16, where Keras would differ): predict computes them there."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'cxr-bench[openvino]')")
    assert run_small_benchmark(kermany_root, tmp_path, "--runtime", "openvino", "--precision", "bfloat16") == 0
    results = tmp_path / "results"
    (tmp_path / "in").mkdir()
    for path in sorted((kermany_root / "test" / "PNEUMONIA").iterdir())[:2]:
        (tmp_path / "in" / path.name).write_bytes(path.read_bytes())
    assert predict.main([str(results), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    mine = pd.read_csv(tmp_path / "out" / "predictions.csv")
    theirs = pd.read_csv(results / "predictions.csv")
    theirs = theirs.set_index(theirs["path"].str.rsplit("/", n=1).str[-1])
    assert len(mine) == 2
    for row in mine.itertuples():
        for label in ("normal", "bacterial", "viral"):
            assert getattr(row, f"p_{label}") == pytest.approx(theirs.loc[Path(row.path).name, f"p_{label}"], abs=1e-5)


def test_predict_serves_the_logistic_regression_probe(probe_run, tmp_path: Path, capsys):
    root, results = probe_run.root, probe_run.results
    image = sorted((root / "test" / "NORMAL").iterdir())[0]
    capsys.readouterr()
    out = str(tmp_path / "o")
    assert predict.main([str(results), str(image), "--backbone", "mobilenetv2-logreg", "--out", out]) == 0
    assert "logistic-regression probe, l2" in capsys.readouterr().out
    mine = pd.read_csv(tmp_path / "o" / "predictions.csv").iloc[0]
    theirs = pd.read_csv(results / "predictions.csv")
    theirs = theirs[(theirs["backbone"] == "MobileNetV2-logreg") & theirs["path"].str.endswith(image.name)].iloc[0]
    for label in ("normal", "bacterial", "viral"):
        assert mine[f"p_{label}"] == pytest.approx(theirs[f"p_{label}"], abs=1e-5)


def test_the_head_is_chosen_by_validation_never_by_test(small_run, tmp_path: Path):
    results = small_run.results
    chosen = predict.choose_head(results)["head_id"]
    board = pd.read_csv(results / "leaderboard.csv")
    board["auc"] = 1 - board["auc"]  # what test says cannot change the choice
    (tmp_path / "r").mkdir()
    board.to_csv(tmp_path / "r" / "leaderboard.csv", index=False)
    (tmp_path / "r" / "grid.csv").write_bytes((results / "grid.csv").read_bytes())
    assert predict.choose_head(tmp_path / "r")["head_id"] == chosen
    with pytest.raises(ValueError, match="no selected head for ResNet50") as error:
        predict.choose_head(results, "ResNet50")
    assert str(error.value).endswith("it has MobileNetV2")  # each backbone once, not once per task
    with pytest.raises(ValueError, match="MobileNetV2"):
        predict.choose_head(results, "ResNet51")


def test_gradcam_from_the_head_weights_equals_gradcam_by_automatic_differentiation():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference gradient uses tf.GradientTape")
    import tensorflow as tf

    rng = np.random.default_rng(0)
    feature_map = rng.random((5, 5, 8)).astype(np.float32) * 3
    statistics = (rng.random(8), rng.random(8) + 0.5)
    head = build_head(8, 3, 0.3, statistics)
    head.get_layer("softmax").set_weights([rng.normal(size=(8, 3)).astype(np.float32), np.zeros(3, np.float32)])
    dense = head.get_layer("softmax")
    for class_index in range(3):
        tensor = tf.constant(feature_map[None])
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            pooled = tf.reduce_mean(tensor, axis=(1, 2))
            logits = tf.matmul(head.get_layer("standardize")(pooled), dense.kernel) + dense.bias
            target = logits[0, class_index]
        gradient = tape.gradient(target, tensor)[0].numpy()
        alpha = gradient.mean(axis=(0, 1))  # Grad-CAM's channel weights
        reference = np.maximum((feature_map * alpha).sum(axis=2), 0)
        reference = reference / reference.max()
        np.testing.assert_allclose(predict.gradcam_from_head(feature_map, head, class_index), reference, atol=1e-5)


class _BrightCornerModel(predict.Predictor):
    """P(class 1) is the brightness of the top-left quarter: occlusion must light up that quarter."""

    def __init__(self):
        pass

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        corner = images[:, :16, :16].mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1 - corner, corner], axis=1)


def test_occlusion_finds_the_region_the_model_looks_at():
    image = np.full((64, 64, 3), 250, np.uint8)
    heat = _BrightCornerModel().occlusion(image, 1, patch=8)
    assert heat.shape == (64, 64) and heat.max() == 1.0
    assert heat[:16, :16].mean() > 0.3 and heat[32:, 32:].max() == 0.0


def test_occlusion_method_from_the_command_line(small_run, tmp_path: Path):
    root, results = small_run.root, small_run.results
    image = sorted((root / "test" / "NORMAL").iterdir())[0]
    out = tmp_path / "out"
    assert predict.main([str(results), str(image), "--out", str(out), "--method", "occlusion"]) == 0
    assert (out / f"{image.stem}_occlusion.png").stat().st_size > 1000


def test_a_missing_target_fails_clearly(small_run, tmp_path: Path, capsys):
    results = small_run.results
    assert predict.main([str(results), str(tmp_path / "nothing.jpeg")]) == 2
    assert "neither an image file nor a folder" in capsys.readouterr().err
