"""cxr-bench export: every format round-trips through its own runtime and passes its parity check against the run's
predictions.csv; a tampered file fails it; a refused file is not written; bad requests fail in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_kermany, run_small_benchmark

from backbones import BACKBONES
from benchmark.__main__ import cxr_bench
from benchmark.export import cli, formats
from benchmark.export.artifacts import artifact_sha256
from benchmark.export.fused import affine_preprocess
from benchmark.export.records import METADATA_JSON

ALL_FORMATS = tuple(formats.FORMATS)


def _installed(name: str) -> bool:
    return not formats.FORMATS[name].missing("tensorflow")


@pytest.mark.parametrize("name", list(BACKBONES))
def test_each_backbones_preprocessing_is_the_affine_map_put_in_the_graph(name: str):
    spec = BACKBONES[name]
    kernel, bias = affine_preprocess(spec)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 5, 5, 3)).astype(np.float32)
    expected = np.asarray(spec.preprocess(pixels.copy()), np.float64)
    assert np.allclose(pixels @ kernel + bias, expected, atol=1e-5)


def test_a_preprocessing_that_is_not_affine_is_refused():
    spec = BACKBONES["MobileNetV2"]
    squared = type(spec)(**{**spec.__dict__, "preprocess": lambda x: x**2, "preprocess_mode": "squared"})
    with pytest.raises(ValueError, match="not a per-pixel affine map"):
        affine_preprocess(squared)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "pdf"], "unknown export format 'pdf'; valid formats: keras, onnx, openvino, litert, saved_model"),
        (["--model", "ensemble"], "the ensemble is not exported as one file"),
        ([], "--out DIR is required"),
    ],
)
def test_bad_requests_fail_in_one_line_before_any_model_is_built(small_run, tmp_path: Path, capsys, argv, message):
    out = [] if argv == [] else ["--out", str(tmp_path / "out")]
    assert cxr_bench(["export", str(small_run.results), *out, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_export_into_a_runs_folder_is_refused(small_run, capsys):
    assert cxr_bench(["export", str(small_run.results), "--out", str(small_run.results / "heads")]) == 2
    assert "which the run writes" in capsys.readouterr().err


def test_a_missing_converter_is_named_with_what_to_install(small_run, tmp_path: Path, capsys, monkeypatch):
    if not _installed("onnx"):
        pytest.skip(f"onnx: {', '.join(formats.FORMATS['onnx'].missing('tensorflow'))} not installed here")
    real = formats.importlib.util.find_spec
    monkeypatch.setattr(formats.importlib.util, "find_spec", lambda name: None if name == "tf2onnx" else real(name))
    assert cxr_bench(["export", str(small_run.results), "--out", str(tmp_path), "--format", "keras", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("export: error: --format onnx needs tf2onnx (Keras backend tensorflow), not installed here: "
                   "pip install 'cxr-bench[export]'")  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A small run of MobileNet v1 at width 0.25 (about 30 layers, against MobileNetV2's 150: each format's
    tracing and conversion takes a third of the time); its results folder."""
    base = tmp_path_factory.mktemp("tiny_run")
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    assert run_small_benchmark(root, base, "--backbones", "MobileNet-0.25") == 0
    return base / "results"


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory) -> Path:
    """The tiny run's winner exported in every format installed here (``cxr-bench export``)."""
    out = tmp_path_factory.mktemp("exported")
    names = [name for name in ALL_FORMATS if _installed(name)]
    assert cxr_bench(["export", str(tiny_run), "--out", str(out), "--format", *names]) == 0
    (folder,) = [path for path in out.iterdir() if path.is_dir()]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_FORMATS)
def test_each_format_round_trips_and_passes_its_parity_check(exported: Path, name: str):
    if not _installed(name):
        pytest.skip(f"{name}: {', '.join(formats.FORMATS[name].missing('tensorflow'))} not installed here")
    listed = {one["format"]: one for one in json.loads((exported / METADATA_JSON).read_text())["exports"]}
    record = listed[name]
    assert (exported / record["path"]).exists() and artifact_sha256(exported / record["path"]) == record["sha256"]
    parity = record["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= parity["tolerance"] == 1e-4
    assert parity["decision_agreement"] == 1.0 and parity["n_images"] == 18  # the small run's 6 test images x 3
    # The file itself, by its runtime: probabilities summing to one per image, for an image of any size (resized
    # in the graph).
    run = formats.FORMATS[name].load(exported / record["path"])
    out = np.asarray(run(np.full((2, 45, 37, 3), 128, np.uint8)))
    assert out.shape == (2, 3) and np.allclose(out.sum(axis=1), 1, atol=1e-5)


@pytest.mark.slow
def test_a_tampered_export_fails_the_check_and_a_copy_passes(tiny_run: Path, exported: Path, tmp_path: Path, capsys):
    onnx = pytest.importorskip("onnx", reason="the export extra is not installed (pip install 'cxr-bench[export]')")
    if not _installed("onnx"):
        pytest.skip(f"onnx: {', '.join(formats.FORMATS['onnx'].missing('tensorflow'))} not installed here")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.keras", "model.onnx", METADATA_JSON):
        (copy / name).write_bytes((exported / name).read_bytes())
    listed = json.loads((copy / METADATA_JSON).read_text())
    listed["exports"] = [one for one in listed["exports"] if one["format"] in ("keras", "onnx")]
    (copy / METADATA_JSON).write_text(json.dumps(listed))
    assert cli.main([str(tiny_run), "--check", str(copy)]) == 0
    model = onnx.load(copy / "model.onnx")
    weights = max(model.graph.initializer, key=lambda one: len(one.raw_data))
    values = onnx.numpy_helper.to_array(weights) * 1.5
    weights.CopyFrom(onnx.numpy_helper.from_array(values, weights.name))
    onnx.save(model, copy / "model.onnx")
    capsys.readouterr()
    assert cli.main([str(tiny_run), "--check", str(copy)]) == 1
    out, err = capsys.readouterr()
    assert "onnx" in err and "failed the parity check" in err
    assert any(line.strip().startswith("onnx") and "FAILED" in line for line in out.splitlines())


@pytest.mark.slow
def test_an_export_outside_the_tolerance_is_refused_not_written(tiny_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert cli.main([str(tiny_run), "--out", str(out), "--tolerance", "1e-12"]) == 1
    printed = capsys.readouterr()
    assert "no format passed its parity check; nothing written" in printed.out
    assert "1 file(s) failed the parity check" in printed.err
    assert not out.exists() or not any(out.rglob("*.keras"))
