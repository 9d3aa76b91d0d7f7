"""verify's check of a model card (``cxr-bench verify RESULTS_DIR --model-card PATH``): every value of the card's
metadata against the run's files it was copied from.

The front matter of ``MODEL_CARD.md`` (a summary) must hold ``metadata.json``'s values. Then, for the head the card
names (``model.head_id``): each task's numbers against its leaderboard.csv row, column for column (the card keeps
the run's column names), the external rows likewise; the head's settings; subgroups.csv's rows; the images per
split and class against report.json's data table, and the test ones against predictions.csv; leakage.csv's counts;
report.json's verdict; the weights' source and SHA-256, the versions and the git revision against leaderboard.csv;
the command, the classes and ``select_by`` against run.json. Each exported file the card lists is checked against
the file beside the card, where it is there: its SHA-256 and size. Not checked: the card's prose (a rendering of
these values), and the SHA-256 of Keras' ImageNet download (the run records the file's name only).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from benchmark.evaluation.verify_files import VerifyError, load_leaderboard_text, load_report, load_run, number
from benchmark.export.artifacts import artifact_bytes, artifact_files, artifact_sha256
from benchmark.export.records import METADATA_JSON, MODEL_CARD
from benchmark.reporting.model_card import data_table, leakage_counts, read_front_matter, verdict_status
from benchmark.run_folder import (
    LEADERBOARD_CSV,
    LEAKAGE_CSV,
    PREDICTIONS_CSV,
    REPORT_JSON,
    RUN_JSON,
    SUBGROUPS_CSV,
    RunFolder,
)

TOLERANCE = 1e-12


def card_files(path: Path) -> tuple[Path, Path]:
    """MODEL_CARD.md and metadata.json: ``path`` is the card or the folder holding it."""
    path = Path(path)
    card = path / MODEL_CARD if path.is_dir() else path
    return card, card.parent / METADATA_JSON


def load_card(path: Path) -> tuple[dict, dict]:
    """(front matter, metadata.json) of the card at ``path``; ``VerifyError`` naming the file that cannot be read."""
    card, meta = card_files(path)
    try:
        front = read_front_matter(card.read_text(encoding="utf-8"))
        values = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # json's and the front matter's errors are ValueErrors
        raise VerifyError(f"cannot read the model card {card} or its {METADATA_JSON}: {error}") from None
    if not isinstance(values, dict) or not isinstance(front.get("model"), dict) or "head_id" not in front["model"]:
        raise VerifyError(f"{card} names no model.head_id: not a cxr-bench model card")
    return front, values


def _leaves(value, prefix: str = "") -> dict[str, object]:
    """A nested mapping or list as ``{dotted.key: leaf}``."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{prefix}{key}.").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def same(got, want) -> bool:
    """Whether a card's value equals the run's: numbers within ``TOLERANCE`` (a missing one is NaN), else as text."""
    if isinstance(got, bool) or isinstance(want, bool):
        return str(got).lower() == str(want).lower()
    try:
        a, b = number(got), number(want)
    except (TypeError, ValueError):
        return str(got) == str(want)
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOLERANCE * max(1.0, abs(b))


def compare(where: str, card: dict, source: str, run: dict) -> list[str]:
    """One line per leaf of ``card`` that differs from ``run`` (or that ``run`` lacks), in verify's style."""
    wanted = _leaves(run)
    out = []
    for key, got in _leaves(card).items():
        if key not in wanted:
            out.append(f"{where} {key}: {got!r}, which {source} lacks")
        elif not same(got, wanted[key]):
            out.append(f"{where} {key}: {got!r}, {source} {wanted[key]!r}")
    return out


def _rows(text: pd.DataFrame, head_id: str, external: bool) -> dict[str, dict]:
    rows = text[text["head_id"] == head_id]
    if "eval_set" in rows:
        rows = rows[(rows["eval_set"] == "external") == external]
    elif external:
        rows = rows.iloc[0:0]
    return {row["task"]: row.to_dict() for _, row in rows.iterrows()}


def check_tasks(where: str, card: dict, rows: dict[str, dict], what: str) -> list[str]:
    """The card's ``what`` (tasks or external): the same tasks as the head's rows, each number equal to its cell."""
    problems = [f"{where} {what}: lacks {task}, which {LEADERBOARD_CSV} has" for task in rows if task not in card]
    for task, numbers in card.items():
        if task not in rows:
            problems.append(f"{where} {what}.{task}: {LEADERBOARD_CSV} has no such row of the head")
        else:
            problems += compare(where, {what: {task: numbers}}, LEADERBOARD_CSV, {what: {task: rows[task]}})
    return problems


def _provenance(first: dict) -> dict:
    return {"git": first.get("git"),
            "versions": {k.removeprefix("version_"): v for k, v in first.items() if k.startswith("version_")}}


def check_leaderboard_values(where: str, meta: dict, text: pd.DataFrame) -> list[str]:
    """The head's settings, tasks, external rows, weights and provenance against leaderboard.csv."""
    head_id = meta["model"]["head_id"]
    internal = _rows(text, head_id, external=False)
    if not internal:
        return [f"{where} model.head_id: {head_id!r}, which {LEADERBOARD_CSV} lacks"]
    first = next(iter(internal.values()))
    problems = compare(where, {"model": meta["model"]}, LEADERBOARD_CSV, {"model": first})
    problems += check_tasks(where, meta.get("tasks", {}), internal, "tasks")
    problems += check_tasks(where, meta.get("external", {}), _rows(text, head_id, external=True), "external")
    problems += compare(where, {k: meta.get(k) for k in ("git", "versions")}, LEADERBOARD_CSV,
                        _provenance(first))  # fmt: skip
    return problems + check_weights(where, meta.get("weights", {}), text, first)


def check_weights(where: str, weights: dict, text: pd.DataFrame, first: dict) -> list[str]:
    """Each backbone's weights source as its leaderboard row says, and a weights file's SHA-256 as its source."""
    heads = text.drop_duplicates("head_id")
    sources = dict(zip(heads["backbone"], heads["weights"], strict=True))
    members = first["head_id"].split(":", 1)[1].split("+") if first["kind"] == "ensemble" else [first["head_id"]]
    models = list(heads.loc[heads["head_id"].isin(members), "backbone"])
    problems = [f"{where} weights: lacks {model}" for model in models if model not in weights]
    for model, values in weights.items():
        source = sources.get(model)
        if source is None or model not in models:
            problems.append(f"{where} weights.{model}: not a model of this head in {LEADERBOARD_CSV}")
            continue
        kind, _, detail = source.partition(":")
        want = {"source": source} | ({"sha256": detail} if kind == "file" else {})
        problems += compare(where, {"weights": {model: {k: values.get(k) for k in want}}}, LEADERBOARD_CSV,
                            {"weights": {model: want}})  # fmt: skip
    return problems


def check_run_record(where: str, meta: dict, results: RunFolder) -> list[str]:
    """The command, the classes and the selection rule as run.json records them."""
    run = load_run(results.run_json)
    if run is None:
        return []
    want = {"command": run.command, "classes": list(run.classes or []),
            "select_by": run.config.get("select_by", "val_loss")}  # fmt: skip
    return compare(where, {k: meta.get(k) for k in want}, RUN_JSON, want)


def check_data(where: str, meta: dict, results: RunFolder) -> list[str]:
    """Images per split and class against report.json, the test ones against predictions.csv; leakage.csv's counts."""
    data = meta.get("data", {})
    problems = compare(where, {"data": {"leakage": data.get("leakage")}}, LEAKAGE_CSV,
                       {"data": {"leakage": leakage_counts(results.file(LEAKAGE_CSV))}})  # fmt: skip
    path = results.file(REPORT_JSON)
    if path.is_file() and load_report(path) is not None:
        report = json.loads(path.read_text(encoding="utf-8"))
        problems += compare(where, {"data": {"counts": data.get("counts")}}, REPORT_JSON,
                            {"data": {"counts": data_table(report)[1]}})  # fmt: skip
    return problems + _check_test_counts(where, meta, results)


def _check_test_counts(where: str, meta: dict, results: RunFolder) -> list[str]:
    """The test images the head predicted, per class for a single-label run, in predictions.csv."""
    test = meta.get("data", {}).get("counts", {}).get("test")
    if not isinstance(test, dict):
        return []
    predictions = pd.read_csv(results.file(PREDICTIONS_CSV), dtype=str, keep_default_na=False)
    head = predictions[(predictions["head_id"] == meta["model"]["head_id"]) & (predictions["split"] == "test")]
    want = {"images": len(head)}
    if not meta.get("multi_label"):
        want |= {name: int((head["label"] == name).sum()) for name in meta.get("classes", [])}
    return compare(where, {"data": {"counts": {"test": {k: test.get(k) for k in want}}}}, PREDICTIONS_CSV,
                   {"data": {"counts": {"test": want}}})  # fmt: skip


def check_report_values(where: str, meta: dict, results: RunFolder) -> list[str]:
    """The verdict per task as report.json has it, for this head's model."""
    path = results.file(REPORT_JSON)
    data = load_report(path) if path.is_file() else None
    if data is None:
        return []
    model = meta["model"].get("backbone")
    want = {task: verdict_status(verdict, model) for task, verdict in data.get("verdict", {}).items()}
    return compare(where, {"verdict": meta.get("verdict", {})}, REPORT_JSON, {"verdict": want})


def check_subgroups(where: str, meta: dict, results: RunFolder) -> list[str]:
    """The head's subgroup rows as subgroups.csv has them, matched by task, attribute and subgroup."""
    card = meta.get("subgroups") or []
    path = results.file(SUBGROUPS_CSV)
    if not path.is_file():
        return [f"{where} subgroups: {len(card)} row(s), and the run has no {SUBGROUPS_CSV}"] if card else []
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = frame[frame["head_id"] == meta["model"]["head_id"]]
    rows = {(r["task"], r["attribute"], r["subgroup"]): r.to_dict() for _, r in frame.iterrows()}
    problems = [] if len(card) == len(rows) else [f"{where} subgroups: {len(card)} row(s), {SUBGROUPS_CSV} "
                                                  f"{len(rows)} of the head"]  # fmt: skip
    for i, row in enumerate(card):
        key = (str(row.get("task")), str(row.get("attribute")), str(row.get("subgroup")))
        if key not in rows:
            problems.append(f"{where} subgroups.{i}: {' '.join(key)}, which {SUBGROUPS_CSV} lacks")
        else:
            problems += compare(where, {"subgroups": {i: row}}, SUBGROUPS_CSV, {"subgroups": {i: rows[key]}})
    return problems


def check_exports(where: str, meta: dict, folder: Path) -> list[str]:
    """Each listed export beside the card (a file, a folder, OpenVINO's .xml and .bin): its SHA-256 and size."""
    problems = []
    for i, record in enumerate(meta.get("exports") or []):
        path = folder / str(record.get("path", ""))
        if not all(one.is_file() for one in artifact_files(path)):
            continue  # the card travels without its files too
        digest, size = artifact_sha256(path), artifact_bytes(path)
        if digest != record.get("sha256"):
            problems.append(f"{where} exports.{i}.sha256: {record.get('sha256')!r}, {path} has {digest!r}")
        if size != record.get("bytes"):
            problems.append(f"{where} exports.{i}.bytes: {record.get('bytes')!r}, {path} has {size}")
    return problems


def check_model_card(results_dir: Path, path: Path) -> list[str]:
    """Differences between the model card at ``path`` (the file or its folder) and the run in ``results_dir``, one
    line each (empty if none); ``VerifyError`` when the card or a run file cannot be read."""
    card, _ = card_files(path)
    front, values = load_card(path)
    where = str(card)
    # The front matter is the summary a reader sees first: each of its values must be metadata.json's, and
    # metadata.json's (every value) the run's.
    problems = compare(f"{where} front matter", front, METADATA_JSON, values)
    where = str(card.parent / METADATA_JSON)
    results = RunFolder(results_dir)
    text = load_leaderboard_text(results.file(LEADERBOARD_CSV))
    for check in (check_run_record, check_data, check_report_values, check_subgroups):
        problems += check(where, values, results)
    problems += check_leaderboard_values(where, values, text) + check_exports(where, values, card.parent)
    return list(dict.fromkeys(problems))
