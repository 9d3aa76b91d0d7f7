"""Take a run's model out: one self-contained file per format, each checked against the run's own predictions.

    cxr-bench export RESULTS_DIR --out DIR [--model NAME ...] [--format keras onnx openvino litert saved_model]

Each exported model takes a uint8 RGB image batch ``(n, height, width, 3)``; it resizes the images to the run's
size (bilinear) and applies the backbone's own preprocessing in its graph, runs the backbone and the head fused,
and returns the class probabilities (one sigmoid per finding for a multi-label run). The images the run's
numbers hold for are decoded and squashed to the run's size as the run read them (``features.data.images``);
fed at that size, the in-graph resize changes nothing.

Every file is loaded by its own runtime (Keras, ONNX Runtime, OpenVINO, LiteRT, TensorFlow), predicts the run's
test images, and is compared with the probabilities the run wrote (``predictions.csv``): the largest absolute
difference and the agreement of the decisions are printed and stored in the model card. A file outside the
tolerance of the run's precision (``--tolerance`` sets another) is refused, not written.

``DIR/MODEL/`` gets the files, ``MODEL_CARD.md`` and ``metadata.json``. The model is the run's winner by
validation (never the ensemble: export its members), or each ``--model`` (``all``: every model of the
leaderboard). ``cxr-bench export RESULTS_DIR --check DIR/MODEL`` runs the parity check again on an export.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pandas as pd  # noqa: E402

from backbones import INT8, get_backbone  # noqa: E402
from benchmark.config import RunConfig  # noqa: E402
from benchmark.evaluation.verdict import ENSEMBLE  # noqa: E402
from benchmark.export.artifacts import artifact_bytes, artifact_sha256  # noqa: E402
from benchmark.export.formats import FORMATS, ExportFormat, check_installed, get_format  # noqa: E402
from benchmark.export.fused import fused_model  # noqa: E402
from benchmark.export.parity import TOLERANCES, ParitySet, check_parity, error_line, failed_parity, parity_set  # noqa: E402
from benchmark.export.records import METADATA_JSON, ExportRecord  # noqa: E402
from benchmark.predict import (  # noqa: E402
    Predictor,
    choose_head,
    load_head_predictor,
    read_run,
    run_dicom,
    run_folder_problem,
)
from benchmark.reporting.model_card import write_model_card  # noqa: E402
from benchmark.run_folder import (  # noqa: E402
    LEADERBOARD_CSV,
    RUN_JSON,
    RunFolder,
    RunInfo,
    is_finetuned,
    split_model_name,
    without_finetuned,
)
from benchmark.settings import tracking_uri  # noqa: E402
from common.files import atomic_folder  # noqa: E402

PRECISION = "float32"  # what every exported graph computes in


class ExportError(ValueError):
    """A user mistake or a file that stops the export, in one line."""


def export_names(results_dir: Path, models: list[str] | None) -> list[pd.Series]:
    """The leaderboard rows to export: the validation winner (no ensemble), each named model, or ``all``."""
    board = pd.read_csv(RunFolder(results_dir).file(LEADERBOARD_CSV)).drop_duplicates("head_id")
    names = list(models or [None])
    if names == ["all"]:
        names = [name for name in dict.fromkeys(board["backbone"]) if name != ENSEMBLE]
    if any(name is not None and name.lower() == ENSEMBLE for name in names):
        raise ExportError("the ensemble is not exported as one file (its members read the image at their own "
                          "sizes); export its members (--model NAME ...) and average their probabilities")
    if names == [None]:
        return [choose_head(results_dir, ensemble_allowed=False)]
    return [choose_head(results_dir, name) for name in names]


def refuse_int8(run: RunInfo, rows: list[pd.Series]) -> None:
    """``ExportError`` for a model whose features the run computed in int8: its head learnt the quantized network's
    features, which the exported float32 graph does not reproduce (probabilities up to 0.5 apart on the real weights,
    docs/performance.md), so no file could pass its parity check."""
    for row in rows:
        name = str(row["backbone"])
        if _precision(run, name, int(row["image_size"])) == INT8:
            raise ExportError(f"{name}'s features were computed in int8 (--precision int8): its head learnt the "
                              "quantized network's features, which an exported float32 graph does not reproduce; "
                              "export a run in float32 or bfloat16 (the same command with --precision float32)")


def _precision(run: RunInfo, model: str, size: int) -> str:
    """The precision the run's probabilities of ``model`` at ``size`` were computed in (fine-tuning: float32, in
    Keras; a probe: its backbone's)."""
    if is_finetuned(model):
        return "float32"
    return run.compute_plan().for_backbone(split_model_name(model)[0], size).precision.value


def write_format(model: keras.Model, form: ExportFormat, folder: Path) -> Path:
    """``model`` written as ``form`` under ``folder``; the artifact's path."""
    path = folder / form.artifact
    path.parent.mkdir(parents=True, exist_ok=True)
    if form.keras_format is None:
        model.save(path)
        return path
    with warnings.catch_warnings():
        # Keras' tf2onnx shim asks NumPy for np.object: a FutureWarning on every ONNX export, not the user's news.
        warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
        model.export(str(path), format=form.keras_format, verbose=False)
    return path


def export_one(model: keras.Model, form: ExportFormat, folder: Path, data: ParitySet, tolerance: float,
               predictor: Predictor, name: str) -> ExportRecord:  # fmt: skip
    """``form`` written into ``folder`` and checked; a failed check removes what it wrote."""
    runtime, digest, size = form.runtime_version(), "", 0
    try:
        path = write_format(model, form, folder)
    except Exception as error:  # each converter raises its own types
        parity = failed_parity(runtime, data, tolerance, f"not written: {error_line(error)}")
    else:
        parity = check_parity(lambda: form.load(path), data, tolerance, runtime)
        digest, size = artifact_sha256(path), artifact_bytes(path)
    if not parity.passed:
        top = folder / Path(form.artifact).parts[0]
        shutil.rmtree(top) if top.is_dir() else top.unlink(missing_ok=True)
    return ExportRecord(form.name, form.artifact, digest, size, name, predictor.head_id, predictor.image_size,
                        predictor.classes, data.multi_label, PRECISION, parity, form.runtime_packages())


def _print_check(record: ExportRecord) -> None:
    parity = record.parity
    verdict = "ok" if parity.passed else f"FAILED (tolerance {parity.tolerance:g})"
    if parity.error:
        verdict += f": {parity.error}"
    print(f"  {record.format:<11} {record.path:<20} {parity.runtime:<22} {parity.n_images} images, largest "
          f"|difference| {parity.max_abs_diff:.2e}, decisions agree {parity.decision_agreement:.1%}: {verdict}")


def export_model(results_dir: Path, run: RunInfo, row: pd.Series, formats: list[ExportFormat], out: Path,
                 args: argparse.Namespace) -> list[ExportRecord]:  # fmt: skip
    """One leaderboard model exported into ``out/MODEL`` in every format; the records, failed checks included."""
    name = str(row["backbone"])
    target = out / name
    if target.exists() and any(target.iterdir()):
        raise ExportError(f"{target} already holds an export; choose another --out or remove it")
    predictor = load_head_predictor(results_dir, run, row, args.weights, as_run=False)
    spec = get_backbone(without_finetuned(predictor.spec.name))
    model = fused_model(spec, predictor.image_size, predictor.backbone, predictor.head)
    config = RunConfig.from_json(run.config)
    data = parity_set(results_dir, predictor.head_id, predictor.classes, predictor.image_size,
                      Path(args.data or config.data), run_dicom(run), predictor.multi_label,
                      args.parity_images)  # fmt: skip
    tolerance = args.tolerance or TOLERANCES[_precision(run, name, predictor.image_size)]
    print(f"{name}: {predictor.description}; checking on {len(data.images)} test images (tolerance {tolerance:g})")
    records = []
    try:
        with atomic_folder(target) as folder:
            for form in formats:
                records.append(export_one(model, form, folder, data, tolerance, predictor, name))
                _print_check(records[-1])
            passed = [record for record in records if record.parity.passed]
            if not passed:
                raise _NothingPassed
            write_model_card(folder, results_dir, predictor.head_id, passed)
    except _NothingPassed:
        print(f"{name}: no format passed its parity check; nothing written")
    return records


class _NothingPassed(Exception):
    """Every file of a model failed its check: its export folder is not put in place."""


def check_export(results_dir: Path, folder: Path, args: argparse.Namespace) -> list[ExportRecord]:
    """The parity check again on every file an export's ``metadata.json`` lists (a copy, a tampered file)."""
    path = folder / METADATA_JSON
    try:
        exports = json.loads(path.read_text(encoding="utf-8"))["exports"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path} is missing or not an export's metadata ({type(error).__name__}: {error})") from None
    run = finished_run(results_dir)
    data_root, dicom = Path(args.data or RunConfig.from_json(run.config).data), run_dicom(run)
    heads: dict[str, str] = {}
    sets: dict[tuple[str, int], ParitySet] = {}  # the test images decoded once per model and size, not per format
    records = []
    for listed in exports:
        form = get_format(listed["format"])
        check_installed([form], keras.backend.backend())
        predictor_classes, size = tuple(listed["classes"]), int(listed["image_size"])
        if listed["model"] not in heads:
            heads[listed["model"]] = choose_head(results_dir, listed["model"])["head_id"]
        if heads[listed["model"]] != listed["head_id"]:
            raise ExportError(f"{path}: its model {listed['model']} is {listed['head_id']}, the run's is "
                              f"{heads[listed['model']]}: an export of another run")  # fmt: skip
        key = (listed["head_id"], size)
        if key not in sets:
            sets[key] = parity_set(results_dir, listed["head_id"], predictor_classes, size, data_root, dicom,
                                   bool(listed["multi_label"]), args.parity_images)  # fmt: skip
        data = sets[key]
        tolerance = args.tolerance or float(listed["parity"]["tolerance"])
        artifact = folder / listed["path"]
        parity = check_parity(lambda form=form, artifact=artifact: form.load(artifact), data, tolerance,
                              form.runtime_version())  # fmt: skip
        if parity.passed and artifact_sha256(artifact) != listed["sha256"]:
            parity = replace(parity, passed=False, error=f"its SHA-256 is not the one {METADATA_JSON} lists")
        record = ExportRecord(**{**listed, "classes": predictor_classes, "requires": tuple(listed["requires"]),
                                 "parity": parity})  # fmt: skip
        records.append(record)
        _print_check(record)
    return records


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr-bench export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="a finished run's --results-dir")
    parser.add_argument("--out", type=Path, help="the export folder: OUT/MODEL/ gets each model's files and card "
                        "(never inside a run's results folder)")  # fmt: skip
    parser.add_argument("--model", nargs="+", metavar="NAME",
                        help="the leaderboard's models to export (MobileNetV2, MobileNetV2-ft, MobileNetV2-logreg), "
                        "or 'all'; default: the run's best single model by validation")  # fmt: skip
    parser.add_argument("--format", nargs="+", default=["keras"], metavar="FORMAT",
                        help=f"one or more of {', '.join(FORMATS)} (default: keras). " + "; ".join(
                            f"{one.name}: {one.described}" for one in FORMATS.values()))  # fmt: skip
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="the dataset folder the run read, where run.json's has moved (the parity check "
                        "predicts the run's test images)")  # fmt: skip
    parser.add_argument("--weights", metavar="DIR", help="the folder holding the run's backbone weights, where the "
                        "one run.json records has moved; it must have the SHA-256 the run recorded")  # fmt: skip
    parser.add_argument("--tolerance", type=_positive_float, help="the largest absolute difference of a "
                        "probability accepted; default by the run's precision: " + ", ".join(
                            f"{name} {value:g}" for name, value in TOLERANCES.items()))  # fmt: skip
    parser.add_argument("--parity-images", type=_positive_int, metavar="N",
                        help="check on the run's first N test images (default: all of them)")  # fmt: skip
    parser.add_argument("--track", choices=["mlflow"], help="log each export folder (files and card) as artefacts "
                        "of the MLflow run the run logged (cxr-bench run --track mlflow); pip install "
                        "'cxr-bench[track]'")  # fmt: skip
    parser.add_argument("--tracking-uri", metavar="URI", help="the MLflow store, with --track mlflow (default: the "
                        "one run.json records, else MLFLOW_TRACKING_URI, else the run's default beside its folder)")
    parser.add_argument("--check", type=Path, metavar="EXPORT_DIR",
                        help="run the parity check again on an export folder (OUT/MODEL) instead of exporting")
    return parser


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def _prepare(args: argparse.Namespace) -> tuple[RunInfo, list[ExportFormat]]:
    """The run and the formats, with every one-line refusal made before any model is built."""
    formats = [get_format(name) for name in dict.fromkeys(args.format)]
    check_installed(formats, keras.backend.backend())
    if args.out is None:
        raise ExportError("--out DIR is required (the folder the exports go to)")
    if problem := run_folder_problem(args.out / "MODEL" / "file"):
        raise ExportError(f"--out {args.out}: {problem}; choose a folder of its own")
    run = finished_run(args.results_dir)
    if args.tracking_uri is not None and args.track is None:
        raise ExportError("--tracking-uri is for --track mlflow; add --track mlflow or leave it out")
    if args.track == "mlflow":
        args.tracking_uri = _tracked_uri(args.results_dir, run, args.tracking_uri)
    return run, formats


def _tracked_uri(results_dir: Path, run: RunInfo, given: str | None) -> str:
    """The MLflow store the run was logged to, checked to answer and to hold the run, before any work."""
    from benchmark.tracking.mlflow_log import check_mlflow, tracked_run

    uri = tracking_uri(given or run.config.get("tracking_uri"), str(results_dir))
    check_mlflow(uri)
    tracked_run(results_dir, uri)
    return uri


def finished_run(results_dir: Path) -> RunInfo:
    """The run in ``results_dir`` (``read_run``: its files checked); ``ExportError`` where it is not a run's."""
    if not RunFolder(results_dir).run_json.is_file():
        raise ExportError(f"{results_dir} is not a finished run's results folder (it has no {RUN_JSON})")
    return read_run(results_dir)


def main(argv: list[str] | None = None) -> int:
    """CLI: export (or ``--check`` an export). Exit 2 for a user mistake or a damaged run file, 1 where a file
    failed its parity check."""
    args = _parser().parse_args(argv)
    try:
        if args.check is not None:
            records = check_export(args.results_dir, args.check, args)
        else:
            run, formats = _prepare(args)
            rows = export_names(args.results_dir, args.model)
            refuse_int8(run, rows)
            records = [record for row in rows for record in export_model(args.results_dir, run, row, formats,
                                                                          args.out, args)]  # fmt: skip
    except (ValueError, OSError, KeyError, RuntimeError) as error:
        print(f"export: error: {error}", file=sys.stderr)
        return 2
    failed = [f"{record.model} {record.format}" for record in records if not record.parity.passed]
    if failed:
        print(f"export: {len(failed)} file(s) failed the parity check: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.check is None:
        print(f"wrote {len(records)} file(s) under {args.out}, each with its model card")
    if args.track == "mlflow" and args.check is None:
        from benchmark.tracking import log_export_artifacts

        folders = [args.out / name for name in dict.fromkeys(record.model for record in records)]
        try:
            run_id = log_export_artifacts(args.results_dir, folders, args.tracking_uri)
        except Exception as error:  # noqa: BLE001 - the exports are written; the tracker's failure in one line
            print(f"export: error: the exports are written, but logging them to MLflow failed: {error_line(error)}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"MLflow: logged under exports/ of run {run_id} ({args.tracking_uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
