"""predict and serve answer from exactly the run's files, or stop in one line (issue 24, round two).

Each test damages a copy of a finished run (or hands predict and serve other weights, another working folder, a
folder of the run as --out, a bad port) and checks for the one-line refusal, and that nothing of the run changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_kermany, run_small_benchmark
from PIL import Image

from backbones import build_backbone, get_backbone, resolve_weights, save_weights_file
from benchmark import predict
from benchmark.serve import create_app, main, state
from benchmark.serve.cli import _parser


def _image(run) -> Path:
    return sorted((run.root / "test" / "PNEUMONIA").iterdir())[0]


def _one_error_line(capsys, prefix: str = "predict: error: ") -> str:
    """The command's whole stderr, checked to be one line starting with ``prefix``; that line."""
    err = capsys.readouterr().err
    assert err.startswith(prefix) and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _random_init_weights(folder: Path, seed: int) -> Path:
    """MobileNetV2 at 32 px, random-init with ``seed``, saved where ``--weights folder`` finds it; the file."""
    spec = get_backbone("MobileNetV2")
    return save_weights_file(build_backbone(spec, 32, resolve_weights(spec, "none", 32, seed=seed), seed=seed),
                             folder, spec)  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _run_json(results: Path, **config) -> None:
    """Change ``results/run.json``'s recorded config values, as a run of an older version had them (which wrote no
    ``SHA256SUMS``: with one, predict would refuse the changed file before reading it)."""
    path = results / "run.json"
    run = json.loads(path.read_text())
    run["config"].update(config)
    path.write_text(json.dumps(run))
    (results / "SHA256SUMS").unlink()


@pytest.fixture(scope="module")
def weights_run(tmp_path_factory):
    """A small run from a weights FILE (``--weights DIR``), with a fine-tuned model: ``(data, results, weights
    folder)``. The file holds MobileNetV2's seed-0 random init, so the network is small_run's."""
    base = tmp_path_factory.mktemp("weights_run")
    root = make_kermany(base / "data", {"train": 12, "val": 2, "test": 6})
    weights = _random_init_weights(base / "weights", seed=0).parent
    assert run_small_benchmark(root, base, "--weights", str(weights), "--finetune", "--finetune-epochs", "1",
                               "--finetune-layers", "3") == 0  # fmt: skip
    return root, base / "results", weights


# 1. Weights that are not the run's -----------------------------------------------------------------------------


@pytest.mark.slow  # the run with a weights file and fine-tuning: about 40 s, once for the module
def test_a_same_named_weights_file_with_other_contents_stops_naming_both_hashes(weights_run, tmp_path, capsys):
    root, results, weights = weights_run
    image = sorted((root / "test" / "PNEUMONIA").iterdir())[0]
    recorded = _sha256(weights / "MobileNetV2.weights.h5")
    assert f"file:{recorded}" in set(pd.read_csv(results / "leaderboard.csv")["weights"])
    # The run's own file: the run's probabilities.
    assert predict.main([str(results), str(image), "--out", str(tmp_path / "good")]) == 0
    mine = pd.read_csv(tmp_path / "good" / "predictions.csv").iloc[0]
    theirs = pd.read_csv(results / "predictions.csv")
    chosen = predict.choose_head(results)["head_id"]
    theirs = theirs[(theirs["head_id"] == chosen) & theirs["path"].str.endswith(image.name)].iloc[0]
    assert mine["p_normal"] == pytest.approx(theirs["p_normal"], abs=1e-5)
    # The same name, other contents: no answer, both hashes named.
    other = _random_init_weights(tmp_path / "other", seed=1)
    capsys.readouterr()
    assert predict.main([str(results), str(image), "--weights", str(other.parent), "--out", str(tmp_path / "o")]) == 2
    err = _one_error_line(capsys)
    assert recorded in err and _sha256(other) in err and "--weights DIR" in err
    assert not (tmp_path / "o").exists()
    # serve refuses at start, in one line, rather than answer with them.
    assert main([str(results), "--weights", str(other.parent)]) == 2
    err = _one_error_line(capsys, "serve: error: ")
    assert recorded in err and _sha256(other) in err


# 4. A relative weights path recorded by an older run ------------------------------------------------------------


@pytest.mark.slow  # the module's weights_run
def test_a_relative_weights_path_is_used_only_where_it_holds_the_runs_file(weights_run, tmp_path, capsys,
                                                                          monkeypatch):  # fmt: skip
    root, results, weights = weights_run
    image = sorted((root / "test" / "NORMAL").iterdir())[0]
    copy = shutil.copytree(results, tmp_path / "results")
    _run_json(copy, weights="weights")  # as a run made before absolute paths records it
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # where "weights" is nothing
    assert predict.main([str(copy), str(image), "--out", str(tmp_path / "o1")]) == 2
    err = _one_error_line(capsys)
    assert "the run's weights folder weights (run.json, a path relative to" in err and "--weights DIR" in err
    _random_init_weights(tmp_path / "elsewhere" / "weights", seed=1)  # a "weights" here, holding other weights
    assert predict.main([str(copy), str(image), "--out", str(tmp_path / "o2")]) == 2
    assert _sha256(weights / "MobileNetV2.weights.h5") in _one_error_line(capsys)
    monkeypatch.chdir(weights.parent)  # where the run was started: the right file
    assert predict.main([str(copy), str(image), "--out", str(tmp_path / "o3")]) == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert predict.main([str(copy), str(image), "--weights", str(weights), "--out", str(tmp_path / "o4")]) == 0
    first, second = (pd.read_csv(tmp_path / name / "predictions.csv") for name in ("o3", "o4"))
    assert first["p_normal"].iloc[0] == pytest.approx(second["p_normal"].iloc[0], abs=1e-6)


def test_a_missing_relative_weights_folder_is_one_line_not_a_traceback(small_run, tmp_path, capsys, monkeypatch):
    copy = small_run.copy_to(tmp_path) / "results"
    _run_json(copy, weights="my_weights")
    monkeypatch.chdir(tmp_path)
    assert predict.main([str(copy), str(_image(small_run)), "--out", str(tmp_path / "o")]) == 2
    err = _one_error_line(capsys)
    assert "my_weights (run.json, a path relative to the folder the run was started in)" in err
    assert "pass --weights DIR" in err


# 2. --out on a run's folder -------------------------------------------------------------------------------------


def test_predict_never_writes_into_a_runs_folder(small_run, tmp_path, capsys):
    results = small_run.copy_to(tmp_path) / "results"
    before = {path: path.read_bytes() for path in results.rglob("*") if path.is_file()}
    head = next((results / "heads").iterdir())
    for out in (results, head, results / "plots"):
        assert predict.main([str(results), str(_image(small_run)), "--out", str(out)]) == 2
        err = _one_error_line(capsys)
        assert str(results.resolve()) in err and "choose another --out" in err
    assert {path: path.read_bytes() for path in results.rglob("*") if path.is_file()} == before
    # A heatmap mirrored into a run folder below --out is refused too; a folder of its own in a run's is fine.
    with pytest.raises(predict.RunFilesError, match="is a run's results folder"):
        predict.check_outputs(tmp_path, [Path("results/x_gradcam.png")])
    predict.check_outputs(results / "predict", [Path("x_gradcam.png")])


# 3. One heatmap per image ---------------------------------------------------------------------------------------


@pytest.mark.slow  # builds the backbone and draws 4 occlusion maps: about 8 s
def test_images_with_the_same_stem_get_one_heatmap_each(small_run, tmp_path):
    folder = tmp_path / "in"
    sources = sorted((small_run.root / "test" / "PNEUMONIA").iterdir())
    for (relative, suffix), source in zip([("a", ".jpeg"), ("s1/a", ".jpeg"), ("s2/a", ".jpeg"), ("a", ".png")],
                                          sources, strict=False):  # fmt: skip
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).save(folder / f"{relative}{suffix}")
    assert predict.main([str(small_run.results), str(folder), "--out", str(tmp_path / "out")]) == 0
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert len(rows) == 4 and rows["heatmap"].nunique() == 4
    maps = {Path(row.path).relative_to(folder).as_posix(): Path(row.heatmap) for row in rows.itertuples()}
    assert {name: path.relative_to(tmp_path / "out").as_posix() for name, path in maps.items()} == {
        "a.jpeg": "a_jpeg_occlusion.png", "a.png": "a_png_occlusion.png",
        "s1/a.jpeg": "s1/a_occlusion.png", "s2/a.jpeg": "s2/a_occlusion.png"}  # fmt: skip
    # Each file holds its own image's map: the four differ.
    assert len({path.read_bytes() for path in maps.values()}) == 4


def test_heatmap_names_are_one_per_image_even_where_suffixes_meet():
    target = Path("/in")
    paths = [target / name for name in ("a.png", "a.jpeg", "A.JPG", "a_png.jpeg", "s/a.png")]
    names = predict.heatmap_names(paths, target, "gradcam")
    assert len({str(name).lower() for name in names.values()}) == len(paths)
    assert names[target / "s/a.png"] == Path("s/a_gradcam.png")
    assert predict.heatmap_names([target / "x.png"], target / "x.png", "occlusion") == {
        target / "x.png": Path("x_occlusion.png")}  # fmt: skip


# 5. A damaged checkpoint ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_head_checkpoint_is_named_with_what_to_do(small_run, tmp_path, capsys, damage):
    results = small_run.copy_to(tmp_path) / "results"
    (checkpoint,) = (results / "heads").glob("*/best.keras")
    app = create_app(results)  # started while the checkpoint was whole
    try:
        if damage == "flip":
            _flip_a_byte(checkpoint)
        else:
            checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
        assert predict.main([str(results), str(_image(small_run)), "--out", str(tmp_path / "o")]) == 2
        err = _one_error_line(capsys)
        assert str(checkpoint) in err and "is damaged" in err and "run the same run command again" in err
        # The page answers with the same message, not HTTP 500.
        reply = app.test_client().post("/api/predict", data={"images": [(io.BytesIO(_image(small_run).read_bytes()),
                                       "x.jpeg")]}, content_type="multipart/form-data")  # fmt: skip
        assert (
            reply.status_code == 409 and "is damaged" in reply.json["error"] and checkpoint.name in reply.json["error"]
        )
    finally:
        state(app).close()
    assert main([str(results)]) == 2  # and a server does not start on it
    assert "is damaged" in _one_error_line(capsys, "serve: error: ")


@pytest.mark.slow  # the module's weights_run
def test_a_damaged_fine_tuned_model_is_named_with_what_to_do(weights_run, tmp_path, capsys):
    root, results, _ = weights_run
    copy = shutil.copytree(results, tmp_path / "results")
    (weights,) = (copy / "finetune").glob("*/model.weights.h5")
    _flip_a_byte(weights)
    image = sorted((root / "test" / "NORMAL").iterdir())[0]
    assert predict.main([str(copy), str(image), "--backbone", "MobileNetV2-ft", "--out", str(tmp_path / "o")]) == 2
    err = _one_error_line(capsys)
    assert str(weights) in err and "is damaged" in err and "run the same run command again" in err
    assert main([str(copy)]) == 2
    assert str(weights) in _one_error_line(capsys, "serve: error: ")


# 6. serve --port ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["-1", "99999", "65536"])
def test_a_port_outside_0_to_65535_is_refused(port, capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["results", "--port", port])
    assert exit_.value.code == 2
    assert "argument --port:" in capsys.readouterr().err
    assert _parser().parse_args(["results", "--port", "65535"]).port == 65535


# 7. No image --------------------------------------------------------------------------------------------------


def test_a_folder_with_no_image_says_so(small_run, tmp_path, capsys):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "notes.txt").write_text("no image here")
    assert predict.main([str(small_run.results), str(tmp_path / "in"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no image file" in _one_error_line(capsys)


# run.json ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ['{"config": {"weights": "no', "[]", ""])
def test_a_damaged_run_json_is_named_in_one_line(small_run, tmp_path, capsys, content):
    results = small_run.copy_to(tmp_path) / "results"
    (results / "run.json").write_text(content)
    assert predict.main([str(results), str(_image(small_run)), "--out", str(tmp_path / "o")]) == 2
    assert f"{results / 'run.json'} is damaged" in _one_error_line(capsys)
    assert main([str(results)]) == 2
    assert f"{results / 'run.json'} is damaged" in _one_error_line(capsys, "serve: error: ")
