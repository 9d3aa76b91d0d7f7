"""--precision int8: OpenVINO post-training quantization (NNCF), calibrated on the run's training images only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backbones import get_backbone, resolve_weights
from benchmark import predict
from benchmark.config import RunConfig
from features import runtime
from features.cache import FeatureCache, cache_key
from features.data.dataset import make_splits, scan_dataset
from features.extract import feature_key_parts
from features.quantize import calibration_set
from features.settings import Calibration, ComputePlan
from tests.conftest import make_kermany, run_small_benchmark

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'cxr-bench[int8]')")
pytest.importorskip("nncf", reason="nncf is not installed (pip install 'cxr-bench[int8]')")


def _dataset(root: Path):
    return make_splits(scan_dataset(root), val_fraction=0.2, test_fraction=0.2, seed=0)


def test_the_calibration_images_are_a_seeded_sample_of_the_train_split_only(kermany_root: Path):
    dataset = _dataset(kermany_root)
    train = {record.path for record in dataset.records if record.split == "train"}
    chosen = calibration_set(dataset, images=10, seed=0)
    assert len(chosen.paths) == 10 and set(chosen.paths) <= train
    assert calibration_set(dataset, images=10, seed=0) == chosen
    assert calibration_set(dataset, images=10, seed=1).identity != chosen.identity
    assert len(calibration_set(dataset, images=10_000).paths) == len(train)  # all of a small train split
    # A calibration image changed on disk changes the identity (and so the int8 model's and features' keys).
    os.utime(kermany_root / chosen.paths[0], ns=(1, 1))
    assert calibration_set(dataset, images=10, seed=0).identity != chosen.identity


def test_no_train_split_means_no_calibration(kermany_root: Path):
    dataset = _dataset(kermany_root)
    only_test = type(dataset)(dataset.root, dataset.layout, dataset.classes,
                              [r for r in dataset.records if r.split == "test"])  # fmt: skip
    with pytest.raises(ValueError, match="calibrates on the train split, which is empty"):
        calibration_set(only_test)


def test_int8_features_are_keyed_by_their_calibration(kermany_root: Path):
    spec = get_backbone(BACKBONE)
    source, paths = resolve_weights(spec, "none", 32), [r.path for r in scan_dataset(kermany_root).records]
    one, two = Calibration("/a", ("x.png",), "id-one"), Calibration("/a", ("y.png",), "id-two")

    def key(precision: str, calibration: Calibration | None = None) -> str:
        return cache_key(feature_key_parts(spec, source, 32, kermany_root, paths, precision, runtime="openvino",
                                           calibration=calibration))  # fmt: skip

    assert len({key("float32"), key("int8", one), key("int8", two)}) == 3
    with pytest.raises(ValueError, match="calibration"):
        key("int8")


@pytest.mark.parametrize(("options", "message"), [
    ({"runtime": "keras"}, "--precision int8 runs in OpenVINO"),
])  # fmt: skip
def test_int8_is_refused_where_it_cannot_run(options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        runtime.check_runtime(options["runtime"], "int8")


def test_int8_without_nncf_fails_in_one_line_naming_the_install(monkeypatch):
    def missing():
        raise runtime.RuntimeUnavailableError(f"--precision int8 needs NNCF, which is not installed: "
                                              f"{runtime.NNCF_INSTALL_HINT}")  # fmt: skip

    monkeypatch.setattr(runtime, "nncf_version", missing)
    with pytest.raises(ValueError, match=r"cxr-bench\[int8\]"):
        runtime.check_runtime("auto", "int8")


def test_auto_runtime_takes_openvino_for_int8_whatever_the_run_size():
    choice = runtime.resolve_runtime("auto", "int8", work=10, gpu=lambda: None, installed=lambda: True,
                                     backend=lambda: "tensorflow")  # fmt: skip
    assert choice.runtime == "openvino" and "int8" in choice.reason


def test_the_plan_records_its_calibration_and_reads_it_back():
    calibration = Calibration("/data", ("train/a.png", "train/b.png"), "abc", seed=3)
    plan = ComputePlan(calibration=calibration)
    written = json.loads(json.dumps(plan.to_json()))
    assert written["precision"]["calibration"]["images"] == 2
    assert ComputePlan.from_json(written["precision"], written["runtime"]).calibration == calibration


# Random-init MobileNets pool to features of about 1e-11 at 32 px, which int8 rounds to zero; VGG16's are of order 1.
BACKBONE = "VGG16"
INT8 = ("--backbones", BACKBONE, "--runtime", "auto", "--precision", "int8", "--int8-calibration", "20")


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    """A small int8 run (VGG16 at 32 px, random weights) with an external test set; its stdout. The module's tests
    keep their converted and quantized models in a machine-wide folder of their own (``base/home/openvino``)."""
    base = tmp_path_factory.mktemp("int8")
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    other = make_kermany(base / "other", {"test": 3}, seed=5)
    import contextlib
    import io

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("CXR_BENCH_HOME", str(base / "home"))
        with contextlib.redirect_stdout(out):
            code = run_small_benchmark(root, base, *INT8, "--external-test", str(other))
        assert code == 0, out.getvalue()
        yield root, base, out.getvalue()


@pytest.mark.slow  # a small int8 run (VGG16, 32 px) shared by the module
def test_an_int8_run_calibrates_once_on_train_images_and_records_them(int8_run):
    root, base, stdout = int8_run
    run = json.loads((base / "results" / "run.json").read_text())
    plan = ComputePlan.from_json(run["precision"], run["runtime"])
    assert plan.for_backbone(BACKBONE, 32).precision.value == "int8"
    assert plan.for_backbone(BACKBONE, 32).runtime.value == "openvino"
    calibration = plan.calibration
    tested = set(pd.read_csv(base / "results" / "predictions.csv").query("split == 'test'")["path"])
    train = {record.path for record in _dataset(root).records if record.split == "train"}  # the run's own carving
    assert len(calibration.paths) == 20 and set(calibration.paths) <= train and not tested & set(calibration.paths)
    assert f"not for {BACKBONE}: compare with a float32 run" in stdout  # no real-weights fidelity on record
    # Quantized once: the external test set's extraction reuses the model calibrated on the run's train split.
    assert stdout.count("int8 calibration on 20 training images") == 1
    int8_folders = [p for p in (base / "home" / "openvino" / BACKBONE).iterdir() if "-int8-" in p.name]
    assert len(int8_folders) == 1 and (int8_folders[0] / "manifest.json").is_file()


@pytest.mark.slow
def test_int8_features_stay_close_to_float32_and_differ_from_them(int8_run, tmp_path: Path):
    root, base, _ = int8_run
    assert run_small_benchmark(root, tmp_path, "--backbones", BACKBONE, "--runtime", "openvino", "--precision",
                               "float32") == 0  # fmt: skip
    int8 = _features(base / "cache")
    float32 = _features(tmp_path / "cache")
    assert int8.shape == float32.shape and not np.array_equal(int8, float32)
    cosine = (int8 * float32).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(float32, axis=1)
    assert np.linalg.norm(float32, axis=1).min() > 0.1 and cosine.min() > 0.99


def _features(cache: Path) -> np.ndarray:
    """The one entry of the run's images (the larger of the run's and the external set's)."""
    features = FeatureCache(cache)
    entries = sorted((features.load(BACKBONE, entry.name) for entry in (cache / BACKBONE).iterdir()
                      if entry.is_dir()), key=len)  # fmt: skip
    return np.asarray(entries[-1])


@pytest.mark.slow
def test_a_rerun_reads_its_int8_features_and_a_damaged_int8_model_is_quantized_again(int8_run, tmp_path, capsys,
                                                                                     monkeypatch):  # fmt: skip
    root, base, _ = int8_run
    import shutil

    shutil.copytree(base / "cache", tmp_path / "cache")
    assert run_small_benchmark(root, tmp_path, *INT8) == 0
    out = capsys.readouterr().out
    assert "int8 calibration" not in out and "from cache" in out
    # Damage the kept int8 model (in a home of this test's own); new external images need it again.
    shutil.copytree(base / "home" / "openvino", tmp_path / "home" / "openvino")
    monkeypatch.setenv("CXR_BENCH_HOME", str(tmp_path / "home"))
    folder = next(p for p in (tmp_path / "home" / "openvino" / BACKBONE).iterdir() if "-int8-" in p.name)
    weights = folder / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    other = make_kermany(tmp_path / "new", {"test": 2}, seed=9)
    assert run_small_benchmark(root, tmp_path, *INT8, "--external-test", str(other), results="again") == 0
    captured = capsys.readouterr()
    assert "is damaged" in captured.out + captured.err and "int8 calibration on 20" in captured.out


@pytest.mark.slow
def test_predict_gives_an_int8_runs_own_probabilities(int8_run, tmp_path: Path, capsys):
    root, base, _ = int8_run
    (tmp_path / "in").mkdir()
    for path in sorted((root / "test" / "PNEUMONIA").iterdir())[:2]:
        (tmp_path / "in" / path.name).write_bytes(path.read_bytes())
    assert predict.main([str(base / "results"), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    assert "int8 model cannot be had" not in capsys.readouterr().out
    mine = pd.read_csv(tmp_path / "out" / "predictions.csv")
    theirs = pd.read_csv(base / "results" / "predictions.csv").query("split == 'test'")
    theirs = theirs.set_index(theirs["path"].str.rsplit("/", n=1).str[-1])
    assert len(mine) == 2
    for row in mine.itertuples():
        for label in ("normal", "bacterial", "viral"):
            assert getattr(row, f"p_{label}") == pytest.approx(theirs.loc[Path(row.path).name, f"p_{label}"], abs=1e-5)


def test_the_int8_option_is_in_the_config():
    config = RunConfig(precision="int8", runtime="keras")
    with pytest.raises(ValueError, match="int8 runs in OpenVINO"):
        config.validate()


@pytest.mark.slow
def test_compare_precision_finds_a_run_identical_to_itself(int8_run, capsys):
    from benchmark.speed import compare_precision

    _, base, _ = int8_run
    features = compare_precision.feature_rows(base / "results", base / "results", base / "cache")
    assert [(row["backbone"], row["images"], row["cosine min"]) for row in features] == [(BACKBONE, 60, "1.0000")]
    heads = compare_precision.head_rows(base / "results", base / "results", resamples=50)
    assert {row["task"] for row in heads} == {"normal_vs_pneumonia", "bacterial_vs_rest", "viral_vs_rest"}
    assert all(row["difference [95% paired]"] == "+0.0000 [+0.0000, +0.0000]" for row in heads)
    assert all(row["inside the reference's interval"] == "yes" and row["same grid point"] == "yes" for row in heads)
    assert compare_precision.outside_rows(base / "results", base / "results")[-1]["backbone"].startswith("0 of ")


@pytest.mark.slow
def test_export_refuses_an_int8_run_in_one_line(int8_run, tmp_path: Path, capsys):
    from benchmark.export import cli

    _, base, _ = int8_run
    assert cli.main([str(base / "results"), "--out", str(tmp_path / "out"), "--format", "keras"]) == 2
    err = capsys.readouterr().err
    assert "computed in int8" in err and "--precision float32" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_int8_names_the_backbones_without_real_weights_fidelity():
    from features.quantize import unmeasured_fidelity

    assert unmeasured_fidelity(["MobileNetV2", "MobileNetV2-0.35"]) is None
    note = unmeasured_fidelity(["MobileNetV2", "ResNet50", "ResNet50"])
    assert note.startswith("note: ") and note.endswith("compare_precision)") and "not for ResNet50:" in note
