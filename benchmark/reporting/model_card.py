"""The model card written beside an exported model: ``MODEL_CARD.md`` (YAML front matter, then the card) and
``metadata.json`` (every value), readable without the run's folder.

The front matter follows Hugging Face's model cards (``library_name``, ``tags``, ``pipeline_tag`` beside our
own keys) and ``metadata.json`` MONAI bundles' (``network_data_format``: the input and output). ``metadata.json``
holds the whole mapping, ``card_metadata``, and the front matter its summary (``card_summary``: the model, the
headline numbers per task, the files), each value the same. Every number is copied from the run's files under the
name the run gave it, so ``cxr-bench verify --model-card`` can compare each with its source
(``benchmark.evaluation.verify_card``):

- ``tasks.<task>``: the head's leaderboard.csv row of that task, columns as named there (``auc``,
  ``auc_ci_low``, ``val_auc``, ``op_threshold``, ``ece``, ``tp``...);
- ``model``: the row's columns shared by every task (the head's settings, ``best_val_loss``, ``macro_auc``...);
- ``external.<task>``, ``subgroups``: leaderboard.csv's external rows and subgroups.csv's rows of the head;
- ``data``: report.json's table of images per split and class, and leakage.csv's counts;
- ``verdict.<task>``: report.json's verdict, as it concerns this head;
- ``weights``, ``versions``, ``git``, ``command``: leaderboard.csv's and run.json's provenance.

The prose is the report's own model (``benchmark.reporting.document``) rendered to Markdown, never parsed back.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path

import pandas as pd
import yaml

from backbones import get_backbone
from backbones.licences import IMAGENET_TERMS, KERAS_CODE_LICENCE, RANDOM_INIT, UNKNOWN, imagenet_licence
from backbones.weights import folder_candidates
from benchmark.export.records import METADATA_JSON, MODEL_CARD, ExportRecord
from benchmark.reporting.document import Report, render_markdown
from benchmark.reporting.model_card_text import NOT_A_MEDICAL_DEVICE, card_sections
from benchmark.run_folder import (
    LEADERBOARD_CSV,
    LEAKAGE_CSV,
    REPORT_JSON,
    SUBGROUPS_CSV,
    RunFolder,
    RunInfo,
    split_model_name,
)
from common.files import atomic_write_json, atomic_write_text, sha256_file

CARD_FORMAT = "cxr-bench-model-card/1"
TEST_METRICS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")
# A task's leaderboard columns that the card copies (those the run has): test metrics with their intervals, the
# counts, calibration, the validation twins and the validation-chosen operating point.
TASK_COLUMNS = ("positive", *TEST_METRICS, *(f"{m}_ci_{end}" for m in TEST_METRICS for end in ("low", "high")),
                "tp", "fn", "fp", "tn", "n_test", "ece", *(f"val_{m}" for m in TEST_METRICS),
                "op_target_sensitivity", "op_threshold", "op_val_sensitivity", "op_val_specificity",
                "op_test_sensitivity", "op_test_specificity", "op_test_precision", "op_test_tp", "op_test_fn",
                "op_test_fp", "op_test_tn")  # fmt: skip
# The head's columns shared by its every task.
MODEL_COLUMNS = ("backbone", "kind", "image_size", "lr", "dropout", "l2", "lr_schedule", "seed", "best_epoch",
                 "epochs_run", "best_val_loss", "multiclass_accuracy", "macro_auc", "weights", "head_id",
                 "git")  # fmt: skip
SUBGROUP_COLUMNS = ("task", "attribute", "subgroup", "n", "positives", "negatives", "threshold", "auc", "auc_ci_low",
                    "auc_ci_high", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high", "specificity",
                    "specificity_ci_low", "specificity_ci_high")  # fmt: skip


def plain(value):
    """A cell as a JSON and YAML value: an int, float, bool or str; None for a missing one (NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return None if math.isnan(value) else float(value)
    return str(value)


def head_rows(board: pd.DataFrame, head_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The head's internal and external leaderboard rows (one per task each); ``ValueError`` when it has none."""
    rows = board[board["head_id"] == head_id]
    if rows.empty:
        raise ValueError(f"{LEADERBOARD_CSV} has no row of the head {head_id!r}")
    external = rows["eval_set"] == "external" if "eval_set" in rows else pd.Series(False, index=rows.index)
    return rows[~external], rows[external]


def task_numbers(row: pd.Series) -> dict:
    """One task's columns of ``TASK_COLUMNS`` that the row has, under their leaderboard names."""
    return {name: plain(row[name]) for name in TASK_COLUMNS if name in row.index}


def data_table(report: dict) -> tuple[list[str], dict[str, dict[str, int]]]:
    """report.json's data section: its notes (where the images came from, how the splits were made) and the images
    per split and class (and in all)."""
    section = Report.from_json(report).section("data")[0]
    notes = [block for block in section.blocks if block.kind == "bullets"][0].items
    counts = [block for block in section.blocks if block.kind == "table"][0]
    return notes, {row[0]: {name: int(cell) for name, cell in zip(counts.headers[1:], row[1:], strict=True)}
                   for row in counts.rows}  # fmt: skip


def _data(results: RunFolder, report: dict) -> dict:
    """The data's notes and images per split and class (report.json), and leakage.csv's counts."""
    notes, counts = data_table(report)
    return {"notes": notes, "counts": counts, "leakage": leakage_counts(results.file(LEAKAGE_CSV))}


def leakage_counts(path: Path) -> dict:
    """leakage.csv in numbers: images found twice (groups), copies listed, copies dropped, and the problems."""
    leaks = pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
    if leaks.empty:
        return {"images": 0, "copies": 0, "dropped": 0, "problems": {}}
    return {"images": int(leaks["group"].nunique()), "copies": len(leaks),
            "dropped": int((leaks["action"] == "dropped").sum()),
            "problems": {str(k): int(v) for k, v in leaks["problem"].value_counts().sort_index().items()}}  # fmt: skip


def _subgroups(results: RunFolder, head_id: str) -> list[dict]:
    """subgroups.csv's rows of the head (none without ``--subgroups``)."""
    path = results.file(SUBGROUPS_CSV)
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    rows = frame[frame["head_id"] == head_id]
    return [{name: plain(row[name]) for name in SUBGROUP_COLUMNS if name in row.index} for _, row in rows.iterrows()]


def verdict_status(verdict: dict, model: str) -> dict:
    """One task's verdict (report.json's) as it concerns ``model``: the best head by test AUC, whether ``model`` is
    it, tied with it (not told apart) or told apart from it, and the verdict's sentence."""
    status = ("best" if verdict["best"] == model else "tied with the best" if model in verdict["tied"]
              else "told apart from the best" if model in verdict["heads"] else "not compared")  # fmt: skip
    return {"best": verdict["best"], "status": status, "sentence": verdict["sentence"]}


def weights_identity(source: str, backbone: str, file_name: str | None = None) -> dict:
    """The backbone's weights: the leaderboard's ``weights`` cell, its SHA-256 and its licence as far as known.

    ``file_name``: the name of the weights file the run read (``file:`` sources), where it can still be found; a
    file under Keras' own ImageNet file name is Keras' release, with its family's origin and licence."""
    kind, _, detail = source.partition(":")
    if kind == "file" and file_name is not None and _keras_file_name(backbone, file_name) is not None:
        known = imagenet_licence(split_model_name(backbone)[0])
        return {"source": source, "sha256": detail, "origin": f"Keras' own ImageNet file {file_name}, from a "
                f"weights folder; {known.origin}", "licence": known.licence,
                "note": f"Keras code {KERAS_CODE_LICENCE}; {IMAGENET_TERMS}"}  # fmt: skip
    if kind == "file":
        return {"source": source, "sha256": detail, "origin": "a weights file given with --weights DIR",
                "licence": UNKNOWN, "note": "the file's own terms apply"}  # fmt: skip
    if kind == "random-init":
        return {"source": source, "sha256": None, "origin": "none", "licence": "not applicable", "note": RANDOM_INIT}
    if kind == "imagenet":
        known = imagenet_licence(split_model_name(backbone)[0])
        return {"source": source, "sha256": _keras_cache_sha256(detail), "origin": known.origin,
                "licence": known.licence, "note": f"Keras code {KERAS_CODE_LICENCE}; {IMAGENET_TERMS}"}  # fmt: skip
    return {"source": source, "sha256": None, "origin": UNKNOWN, "licence": UNKNOWN, "note": ""}


def _keras_file_name(backbone: str, file_name: str) -> str | None:
    """Keras' own ImageNet file name for ``backbone`` at any of its sizes that ``file_name`` could be, or None."""
    try:
        spec = get_backbone(split_model_name(backbone)[0])
    except ValueError:
        return None
    names = {spec.keras_weights_file(size) for size in (spec.default_size, 96, 128, 160, 192, 224, 299, 331)}
    return file_name if file_name in names else None


def weights_file_name(run: RunInfo, backbone: str, size: int) -> str | None:
    """The name of the weights file the run's ``--weights`` folder holds for ``backbone`` at ``size``, where that
    folder is still here (``file:`` sources record only the SHA-256)."""
    folder = run.config.get("weights")
    if not folder or not Path(folder).is_dir():
        return None
    try:
        spec = get_backbone(split_model_name(backbone)[0])
    except ValueError:
        return None
    # resolve_weights' own search order, without hashing the file (the card has its SHA-256 from the run).
    return next((name for name in folder_candidates(spec, size) if (Path(folder) / name).is_file()), None)


def _keras_cache_sha256(name: str) -> str | None:
    """The SHA-256 of Keras' downloaded ImageNet file ``name`` where this machine's Keras cache holds it (the run
    records its name only; Keras checked the download against its own hash)."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = home / "models" / name
    return sha256_file(path) if path.is_file() else None


def _backbone_weights(run: RunInfo, board: pd.DataFrame, rows: pd.DataFrame) -> dict[str, dict]:
    """Each backbone's weights, by model: the head's own, or each member's for an ensemble."""
    first = rows.iloc[0]
    if first["kind"] != "ensemble":
        member_rows = rows.iloc[:1]
    else:
        members = first["head_id"].split(":", 1)[1].split("+")
        member_rows = board[board["head_id"].isin(members)].drop_duplicates("head_id")
    return {row["backbone"]: weights_identity(str(row["weights"]), row["backbone"],
                                              weights_file_name(run, row["backbone"], int(row["image_size"])))
            for _, row in member_rows.iterrows()}  # fmt: skip


def _network_format(first: pd.Series, classes: list[str], multi_label: bool) -> dict:
    """MONAI's ``network_data_format``: the input batch and the output columns."""
    size = int(first["image_size"])
    return {"inputs": {"image": {"type": "image", "modality": "XR", "format": "RGB", "dtype": "uint8",
                                 "shape": ["n", size, size, 3], "value_range": [0, 255]}},
            "outputs": {"pred": {"type": "probabilities", "dtype": "float32", "shape": ["n", len(classes)],
                                 "activation": "sigmoid per finding" if multi_label else "softmax",
                                 "value_range": [0, 1],
                                 "channel_def": {str(i): name for i, name in enumerate(classes)}}}}  # fmt: skip


def card_metadata(results_dir: Path, head_id: str, exports: list[ExportRecord]) -> dict:
    """The card's machine-readable values (the front matter and ``metadata.json``): see the module docstring."""
    results = RunFolder(results_dir)
    run = results.info()
    report = json.loads(results.file(REPORT_JSON).read_text(encoding="utf-8"))
    board = pd.read_csv(results.file(LEADERBOARD_CSV))
    rows, external = head_rows(board, head_id)
    first, multi_label = rows.iloc[0], "macro_auc" in board
    classes = list(run.classes or [])
    return {"format": CARD_FORMAT, "library_name": "keras", "pipeline_tag": "image-classification",
            "tags": ["chest-x-ray", "medical-imaging", "research-only", "not-a-medical-device"],
            "license": "other", "not_a_medical_device": True,
            "intended_use": "research and education only; not for diagnosis or any clinical decision",
            "model": {name: plain(first[name]) for name in MODEL_COLUMNS if name in first.index},
            "classes": classes, "multi_label": multi_label, "select_by": run.config.get("select_by", "val_loss"),
            "data": _data(results, report),
            "tasks": {row["task"]: task_numbers(row) for _, row in rows.iterrows()},
            "external": {row["task"]: task_numbers(row) for _, row in external.iterrows()},
            "subgroups": _subgroups(results, head_id), "verdict": {task: verdict_status(verdict, first["backbone"])
                                                       for task, verdict in report["data"]["verdict"].items()},
            "weights": _backbone_weights(run, board, rows), "not_medical_run": run.not_medical,
            "versions": {name.removeprefix("version_"): plain(first[name]) for name in first.index
                         if name.startswith("version_")},
            "git": plain(first.get("git", run.git)), "command": run.command, "timestamp": run.timestamp,
            "network_data_format": _network_format(first, classes, multi_label),
            "exports": [record.to_json() for record in exports]}  # fmt: skip


# What the front matter of MODEL_CARD.md holds: the summary a reader (and a model hub) sees first; metadata.json holds
# every value, the front matter's among them.
SUMMARY_KEYS = ("format", "library_name", "pipeline_tag", "tags", "license", "not_a_medical_device", "intended_use",
                "classes", "multi_label", "select_by", "not_medical_run", "git")  # fmt: skip
SUMMARY_MODEL = ("backbone", "kind", "image_size", "head_id", "weights", "macro_auc")
SUMMARY_TASK = ("positive", "n_test", "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high", "specificity",
                "specificity_ci_low", "specificity_ci_high", "auc", "auc_ci_low", "auc_ci_high", "f1", "ece",
                "op_threshold", "op_test_sensitivity", "op_test_specificity")  # fmt: skip
SUMMARY_EXPORT = ("format", "path", "sha256")


def card_summary(metadata: dict) -> dict:
    """The front matter's values: ``SUMMARY_*``'s keys of ``metadata``, in its order."""
    summary = {key: metadata[key] for key in SUMMARY_KEYS if key in metadata}
    summary["model"] = {key: value for key, value in metadata["model"].items() if key in SUMMARY_MODEL}
    summary["tasks"] = {task: {key: value for key, value in numbers.items() if key in SUMMARY_TASK}
                        for task, numbers in metadata["tasks"].items()}  # fmt: skip
    summary["exports"] = [{key: one[key] for key in SUMMARY_EXPORT} for one in metadata["exports"]]
    return summary


def front_matter(metadata: dict) -> str:
    """The YAML block that opens MODEL_CARD.md: the summary (``card_summary``); every value is in metadata.json."""
    summary = yaml.safe_dump(card_summary(metadata), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n# A summary; every value, these among them: {METADATA_JSON}\n{summary}---\n"


def read_front_matter(text: str) -> dict:
    """The mapping of a MODEL_CARD.md's front matter; ``ValueError`` where it has none or it is not YAML."""
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        raise ValueError("no YAML front matter (a block between two --- lines at the top)")
    block = text[4:text.index("\n---\n", 3) + 1]
    try:
        values = yaml.safe_load(block)
    except yaml.YAMLError as error:
        raise ValueError(f"the front matter is not YAML: {error}") from None
    if not isinstance(values, dict):
        raise ValueError("the front matter is not a mapping")
    return values


def model_card(results_dir: Path, head_id: str, exports: list[ExportRecord]) -> tuple[str, dict]:
    """(MODEL_CARD.md text, metadata dict) of the leaderboard model ``head_id`` of the run in ``results_dir``,
    exported as ``exports`` (one record per format, each with its parity check)."""
    metadata = card_metadata(Path(results_dir), head_id, exports)
    model = metadata["model"]["backbone"]
    body = Report(f"Model card: {model}, {', '.join(metadata['tasks'])}", [NOT_A_MEDICAL_DEVICE], [],
                  card_sections(metadata))  # fmt: skip
    return front_matter(metadata) + "\n" + render_markdown(body), metadata


def write_model_card(out_dir: Path, results_dir: Path, head_id: str, exports: list[ExportRecord]) -> list[Path]:
    """Writes MODEL_CARD.md and metadata.json into out_dir (atomically, through the project's one helper in
    common/files.py), returns their paths."""
    text, metadata = model_card(results_dir, head_id, exports)
    card, meta = Path(out_dir) / MODEL_CARD, Path(out_dir) / METADATA_JSON
    atomic_write_text(card, text)
    atomic_write_json(meta, metadata, ensure_ascii=False)
    return [card, meta]

