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
from features.data.images import load_image
from features.settings import DicomSettings


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


def test_a_skipped_image_comes_back_with_its_reason_as_data(tmp_path: Path):
    class Unused:  # the image is refused before the model is asked anything
        image_size, dicom = 32, DicomSettings()

        def heatmap_method(self, method: str) -> str:
            return "occlusion"

    Image.new("L", (1, 1), 128).save(tmp_path / "dot.png")
    (tmp_path / "broken.jpeg").write_text("not an image")
    lines: list[str] = []
    dot, broken = (predict.predict_image(Unused(), tmp_path / name, 32, None, "auto", tmp_path, log=lines.append)
                   for name in ("dot.png", "broken.jpeg"))  # fmt: skip
    assert dot.path == tmp_path / "dot.png" and dot.reason.startswith("too small: 1x1 px, below the 32 px minimum")
    assert broken.path == tmp_path / "broken.jpeg" and broken.reason.startswith("not an image")
    assert lines == [f"{tmp_path / 'dot.png'}: skipped, {dot.reason}", f"{tmp_path / 'broken.jpeg'}: skipped, "
                     f"{broken.reason}"]  # fmt: skip


@pytest.mark.slow  # an end-to-end run; its units have quick tests of their own
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


@pytest.mark.parametrize("normalised", [False, True])
def test_gradcam_from_the_head_weights_equals_gradcam_by_automatic_differentiation(normalised: bool):
    """Also through a LayerNormalization of the pooled features (``normalised``), where ConvNeXt ends."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the reference gradient uses tf.GradientTape")
    import tensorflow as tf

    rng = np.random.default_rng(0)
    feature_map = rng.random((5, 5, 8)).astype(np.float32) * 3
    statistics = (rng.random(8), rng.random(8) + 0.5)
    head = build_head(8, 3, 0.3, statistics)
    head.get_layer("softmax").set_weights([rng.normal(size=(8, 3)).astype(np.float32), np.zeros(3, np.float32)])
    dense = head.get_layer("softmax")
    norm = keras.layers.LayerNormalization(epsilon=1e-6) if normalised else None
    if norm is not None:
        norm.build((None, 8))
        norm.set_weights([rng.normal(1, 0.5, 8).astype(np.float32), rng.normal(0, 0.5, 8).astype(np.float32)])
    for class_index in range(3):
        tensor = tf.constant(feature_map[None])
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            pooled = tf.reduce_mean(tensor, axis=(1, 2))
            pooled = norm(pooled) if norm is not None else pooled
            logits = tf.matmul(head.get_layer("standardize")(pooled), dense.kernel) + dense.bias
            target = logits[0, class_index]
        gradient = tape.gradient(target, tensor)[0].numpy()
        alpha = gradient.mean(axis=(0, 1))  # Grad-CAM's channel weights
        reference = np.maximum((feature_map * alpha).sum(axis=2), 0)
        reference = reference / reference.max()
        np.testing.assert_allclose(predict.gradcam_from_head(feature_map, head, class_index, norm), reference,
                                   atol=1e-5)  # fmt: skip


def test_the_feature_map_is_found_before_a_pooled_layer_normalisation_and_nothing_else():
    spec = predict.get_backbone("ConvNeXtTiny")
    inputs = keras.Input((4, 4, 2))
    pooling, norm = keras.layers.GlobalAveragePooling2D(), keras.layers.LayerNormalization()
    pooled = pooling(inputs)
    assert predict.pooled_layers(spec, keras.Model(inputs, norm(pooled))) == (pooling, norm)  # ConvNeXt's ending
    assert predict.pooled_layers(spec, keras.Model(inputs, pooled)) == (pooling, None)  # every other backbone's
    with pytest.raises(ValueError, match="ends in GlobalAveragePooling2D -> Dense, not GlobalAveragePooling2D"):
        predict.pooled_layers(spec, keras.Model(inputs, keras.layers.Dense(3)(pooled)))


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


# The ensemble ---------------------------------------------------------------------------------------------------


def _ensemble_row(results: Path) -> pd.Series:
    board = pd.read_csv(results / "leaderboard.csv")
    rows = board[board["backbone"] == "ensemble"]
    # probe_run's validation split (2 images per class) cannot tell its head from its probe: they are averaged.
    assert not rows.empty, f"{results} has no ensemble row: the ensemble tests need one"
    return rows.iloc[0]


@pytest.mark.slow  # builds the two members' backbones: about 15 s
def test_the_ensemble_answers_with_the_runs_ensemble_probabilities(probe_run, tmp_path: Path, capsys):
    root, results = probe_run.root, probe_run.results
    ensemble = _ensemble_row(results)
    (tmp_path / "in").mkdir()
    for path in [sorted((root / "test" / folder).iterdir())[0] for folder in ("NORMAL", "PNEUMONIA")]:
        (tmp_path / "in" / path.name).write_bytes(path.read_bytes())
    capsys.readouterr()
    # Grad-CAM: on the 1x1 maps of a 32 px run a flat map, but the same probabilities from fewer forward passes.
    assert predict.main([str(results), str(tmp_path / "in"), "--backbone", "Ensemble", "--method", "gradcam",
                         "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "model: ensemble, the mean of 2 models' probabilities" in out and f"(head {ensemble['head_id']})" in out
    assert "heatmap: gradcam, the mean of the members' (last feature maps 1x1, 1x1)" in out
    mine = pd.read_csv(tmp_path / "out" / "predictions.csv")
    theirs = pd.read_csv(results / "predictions.csv")
    theirs = theirs[(theirs["head_id"] == ensemble["head_id"]) & (theirs["split"] == "test")]
    theirs = theirs.set_index(theirs["path"].str.rsplit("/", n=1).str[-1])
    assert len(mine) == 2
    for row in mine.itertuples():
        for label in ("normal", "bacterial", "viral"):
            assert getattr(row, f"p_{label}") == pytest.approx(theirs.loc[Path(row.path).name, f"p_{label}"], abs=1e-5)
    assert (mine["threshold"] == ensemble["op_threshold"]).all()  # the ensemble row's own operating point


def test_the_default_model_is_the_ensemble_unless_a_member_is_fine_tuned(probe_run, tmp_path: Path):
    results = probe_run.results
    ensemble = _ensemble_row(results)
    assert predict.choose_head(results)["head_id"] == ensemble["head_id"]
    assert predict.operating_threshold(results, ensemble["head_id"]) == (
        ensemble["task"], ensemble["positive"], pytest.approx(ensemble["op_threshold"]))  # fmt: skip
    # A fine-tuned member: fine-tuned models only when asked for, so the best single frozen head.
    board = pd.read_csv(results / "leaderboard.csv")
    board.loc[board["backbone"] == "MobileNetV2", "backbone"] = "MobileNetV2-ft"
    (tmp_path / "r").mkdir()
    board.to_csv(tmp_path / "r" / "leaderboard.csv", index=False)
    (tmp_path / "r" / "grid.csv").write_bytes((results / "grid.csv").read_bytes())
    assert predict.choose_head(tmp_path / "r")["backbone"] == "MobileNetV2-logreg"
    assert predict.choose_head(tmp_path / "r", "ensemble")["head_id"] == ensemble["head_id"]


def test_no_ensemble_is_one_line_saying_why(small_run, tmp_path: Path, capsys):
    results = small_run.results
    image = sorted((small_run.root / "test" / "NORMAL").iterdir())[0]
    assert predict.main([str(results), str(image), "--backbone", "ensemble", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"predict: error: {results} has no ensemble: on validation, no other head is tied with the best "
                   "one (MobileNetV2), so there is nothing to average\n")  # fmt: skip
    older = tmp_path / "older"  # a run from before report.json: its single head by default, no ensemble
    older.mkdir()
    for name in ("run.json", "leaderboard.csv", "grid.csv"):
        (older / name).write_bytes((results / name).read_bytes())
    assert predict.choose_head(older)["backbone"] == "MobileNetV2"
    assert predict.main([str(older), str(image), "--backbone", "ensemble", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"predict: error: {older} has no ensemble: it has no report.json (a run made "
                                       "before ensembles)\n")  # fmt: skip


class _SizeModel(predict.Predictor):
    """A member at ``image_size`` whose probabilities record the size it was given, and a flat heatmap."""

    def __init__(self, image_size: int, weight: float):
        self.image_size, self.weight = image_size, weight

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        p = self.weight * images.shape[1] / 100
        return np.array([[p, 1 - p]])

    def heatmap(self, image: np.ndarray, class_index: int, method: str) -> np.ndarray:
        assert image.shape == (self.image_size, self.image_size, 3)
        heat = np.zeros((4, 4))
        heat[:2, :2] = self.weight
        return heat


def test_each_ensemble_member_reads_the_image_at_its_own_size(tmp_path: Path):
    path = tmp_path / "x.png"
    Image.new("L", (80, 60), 100).save(path)
    members = [_SizeModel(48, 1.0), _SizeModel(32, 0.5)]
    ensemble = predict.EnsemblePredictor(members, ["A", "B-logreg"], "ensemble:a+b", {})
    assert ensemble.image_size == 48
    probabilities, heat = ensemble.answer(path, load_image(path, 48), "gradcam")
    np.testing.assert_allclose(probabilities, np.mean([[0.48, 0.52], [0.16, 0.84]], axis=0))
    assert heat.shape == (48, 48) and heat.max() == pytest.approx(1.0)  # each member upsampled, then their mean
    assert heat[:12, :12].min() > 0.9 and heat[36:, 36:].max() == 0
