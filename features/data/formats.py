"""The public chest X-ray datasets' own label files, recognised by their header: one small spec per format.

A format is a preset. Its ``defaults`` are ``LabelSettings`` values (the path, label, patient, split, sex, age
and view columns, the label form) that apply only to the options still at their default, so an option the user
gives wins (``with_defaults``). Files that are not one row per image with plain columns (MIMIC-CXR's three joined
files, RSNA's box rows, VinDr-CXR's readers, PadChest's Python-list labels, CheXpert's two view columns) are
first turned by the format's ``prepare`` into the plain table ``features.data.labels.read_labels`` reads: the
dataset's own columns kept, a few derived ones added (``path``, ``findings``, ``split``, ``view``, ``age``), one
row per image. The labels reader's row pipeline stays one path for every format.

``recognise`` picks the format: the one named by ``--labels-format``, or under ``auto`` the one whose signature
columns are all in the header; a header of no format is read with the column options alone (``none``).
"""

from __future__ import annotations

import ast
import csv
import gzip
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from features.data.records import Skip
from features.settings import LABELS_FORMATS, LabelSettings


class FormatError(ValueError):
    """A labels file recognised (or named) as a public dataset's that cannot be read as one."""


@dataclass
class Table:
    """A labels table: its header, its rows, and each row's line in the labels file (None: 2, 3, ... in order)."""

    header: list[str]
    rows: list[list[str]]
    lines: list[int] | None = None

    def numbered(self) -> list[tuple[int, list[str]]]:
        """(line in the labels file, row) for every row."""
        return list(zip(self.lines or range(2, len(self.rows) + 2), self.rows, strict=True))

    def dicts(self) -> list[tuple[int, dict[str, str] | None]]:
        """(line, row as column -> stripped value) for every row; None for a row of the wrong length."""
        width = len(self.header)
        return [(line, dict(zip(self.header, (v.strip() for v in row), strict=True)) if len(row) == width else None)
                for line, row in self.numbered()]  # fmt: skip

    def well_formed(self, path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[Skip]]:
        """The rows of the header's length as ``dicts`` gives them, and a skip (``_malformed``) for each other row
        of the file ``path``."""
        rows = self.dicts()
        return ([(line, row) for line, row in rows if row is not None],
                [_malformed(path, line, self.header) for line, row in rows if row is None])  # fmt: skip


@dataclass
class Prepared:
    """A labels table as the row pipeline reads it, the settings it is read with, and what the format adds:
    images left out while preparing it (``skipped``) and the leaderboard's notes on the format (``notes``)."""

    settings: LabelSettings
    table: Table
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    format: LabelsFormat | None = None


# What a format's preparation returns: the table, the images it left out and notes on what it did.
Preparation = Callable[[Table, Path, LabelSettings], tuple[Table, list[Skip], list[str]]]


def _as_is(table: Table, path: Path, settings: LabelSettings) -> tuple[Table, list[Skip], list[str]]:
    """A table already one row per image with plain columns."""
    return table, [], []


@dataclass(frozen=True)
class LabelsFormat:
    """One public dataset's label file: its name, title, the header columns that recognise it, the settings
    it implies (from its header and where it lies) and how it becomes one plain row per image."""

    name: str
    title: str
    signatures: tuple[tuple[str, ...], ...]
    defaults: Callable[[list[str], Path], dict[str, Any]]
    prepare: Preparation = _as_is

    def matches(self, header: list[str]) -> bool:
        """Whether every column of one of its signatures is in ``header``."""
        return any(all(name in header for name in signature) for signature in self.signatures)


# Options that say one thing in several ways (the label form, the split source, the patient source): a user who
# gave one of a group gets none of the group from a preset, which would otherwise contradict it.
EXCLUSIVE = (("label_column", "findings_column", "finding_columns"), ("split_column", "split_lists"),
             ("patient_column", "patient_pattern"))  # fmt: skip


def with_defaults(settings: LabelSettings, values: dict[str, Any]) -> tuple[LabelSettings, list[str]]:
    """``settings`` with a preset's ``values`` where the option is still at its ``LabelSettings`` default (an
    option given with its default value counts as not given) and no option of its ``EXCLUSIVE`` group is given;
    and the preset's fields the given options kept."""
    default = LabelSettings()
    group = {name: members for members in EXCLUSIVE for name in members}

    def untouched(name: str) -> bool:
        return all(getattr(settings, one) == getattr(default, one) for one in group.get(name, (name,)))

    kept = sorted({one for name in values for one in group.get(name, (name,))
                   if getattr(settings, one) != getattr(default, one)})  # fmt: skip
    return replace(settings, **{name: value for name, value in values.items() if untouched(name)}), kept


def read_bytes(path: str | Path) -> bytes:
    """A labels file's bytes, unpacked when it ends in ``.gz`` (MIMIC-CXR ships ``.csv.gz``).

    Raises:
        OSError: unreadable; ``gzip.BadGzipFile`` (an OSError) for a ``.gz`` that is not gzip.
    """
    data = Path(path).read_bytes()
    return gzip.decompress(data) if str(path).endswith(".gz") else data


def read_header(path: str | Path) -> list[str]:
    """The first row of a CSV (gzip too), names stripped; [] when it cannot be read as text."""
    try:
        with gzip.open(path, "rt", encoding="utf-8-sig") if str(path).endswith(".gz") else \
                open(path, encoding="utf-8-sig", newline="") as fh:  # fmt: skip
            return [name.strip() for name in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _companion(path: Path) -> Table:
    """A file beside the labels file (MIMIC's metadata and split, RSNA's class info) read as text columns.

    Raises:
        FormatError: one line naming the file, when it cannot be read as a CSV.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise FormatError(f"cannot read {path} as a CSV: {error}") from error
    return Table([str(name).strip() for name in frame.columns], frame.to_numpy().tolist())


def _beside(path: Path, *names: str) -> Path | None:
    """The first of ``names`` (``.gz`` forms too) in the labels file's folder, or None."""
    for name in names:
        for candidate in (path.with_name(name), path.with_name(name + ".gz")):
            if candidate.is_file():
                return candidate
    return None


def _malformed(path: Path, line: int, header: list[str], where: str = "") -> Skip:
    """The skip of a row whose number of fields is not the header's (as the row pipeline words it)."""
    return Skip(where or f"{path.name} line {line}", "a row with more or fewer fields than the header",
                f"line {line} of {path.name} has another number of fields than its header ({len(header)}); "
                "a stray delimiter or quote?", line)  # fmt: skip


def _present(header: list[str], **columns: str) -> dict[str, str]:
    """The attribute columns (option -> column) that ``header`` has: a copy without one still reads."""
    return {name: column for name, column in columns.items() if column in header}


def _with_columns(table: Table, names: list[str], derive: Callable[[dict[str, str]], list[str]]) -> Table:
    """``table`` with the columns ``names`` added, their values derived from each row (a row of the wrong
    length is kept as it is: the row pipeline leaves it out with its reason)."""
    rows = [row + derive(values) if values is not None else row
            for (_, values), row in zip(table.dicts(), table.rows, strict=True)]  # fmt: skip
    return Table(table.header + names, rows, table.lines)


# --- NIH ChestX-ray14 -------------------------------------------------------------------------------------------


def _nih_defaults(header: list[str], path: Path) -> dict[str, Any]:
    """Data_Entry_2017.csv: findings separated by |, its patient, sex (Gender, or Sex in some copies), age and
    view columns, and the official split lists where both lie beside it."""
    sex = "Patient Sex" if "Patient Sex" in header else "Patient Gender"
    values = {"path_column": "Image Index", "findings_column": "Finding Labels", "patient_column": "Patient ID",
              **_present(header, sex_column=sex, age_column="Patient Age", view_column="View Position")}  # fmt: skip
    lists = (path.with_name("train_val_list.txt"), path.with_name("test_list.txt"))
    if all(one.is_file() for one in lists):
        values["split_lists"] = (("train", str(lists[0])), ("test", str(lists[1])))
    return values


def _nih_prepare(table: Table, path: Path, settings: LabelSettings) -> tuple[Table, list[Skip], list[str]]:
    """The table as it is; a note on the splits (the official lists, or carved)."""
    if settings.split_lists:
        note = "splits: " + ", ".join(f"{split} from {Path(file).name}" for split, file in settings.split_lists)
    elif settings.split_column:
        note = f"splits from column {settings.split_column!r}"
    else:
        note = "no train_val_list.txt and test_list.txt beside it: test and validation carved by patient"
    return table, [], [note]


# --- CheXpert ---------------------------------------------------------------------------------------------------

_CHEXPERT_FIRST = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


def _is_valid_file(path: Path) -> bool:
    """Whether a CheXpert file is its validation file (valid.csv) rather than train.csv."""
    return path.name.lower().startswith("valid")


def _chexpert_defaults(header: list[str], path: Path) -> dict[str, Any]:
    """train.csv / valid.csv: one 1/0/-1/blank column per finding (No Finding is the normal case, not one), the
    patient in the path, sex, age, and the view derived from its two view columns; train.csv's split column."""
    findings = tuple(name for name in header if name not in _CHEXPERT_FIRST and name and name != "No Finding")
    values = {"path_column": "Path", "finding_columns": findings, "patient_pattern": r"patient(\d+)",
              "sex_column": "Sex", "age_column": "Age", "view_column": "view"}  # fmt: skip
    return values if _is_valid_file(path) else {**values, "split_column": "split"}


def _chexpert_view(row: dict[str, str]) -> str:
    """CheXpert's view: the AP/PA column of a frontal film, LATERAL for a lateral one."""
    return "LATERAL" if row["Frontal/Lateral"].lower() == "lateral" else row["AP/PA"]


def _chexpert_prepare(table: Table, path: Path, settings: LabelSettings) -> tuple[Table, list[Skip], list[str]]:
    """A ``view`` column; train.csv's rows in train and, where valid.csv lies beside it, valid.csv's in val."""
    if _is_valid_file(path):
        table = _with_columns(table, ["view"], lambda row: [_chexpert_view(row)])
        return table, [], ["valid.csv alone: its images are carved into train, validation and test (give "
                           "train.csv to use valid.csv as the official validation split)"]  # fmt: skip
    valid = _beside(path, "valid.csv")
    table = _with_columns(table, ["view", "split"], lambda row: [_chexpert_view(row), "train"])
    if valid is None:
        return table, [], ["no valid.csv beside train.csv: train.csv's images only"]
    extra = _companion(valid)
    missing = [name for name in table.header[:-2] if name not in extra.header]
    if missing:
        raise FormatError(f"{valid} lacks train.csv's column(s) {', '.join(missing)}; is it CheXpert's valid.csv?")
    added = [[row[extra.header.index(name)] for name in table.header[:-2]] for row in extra.rows]
    rows = table.rows + _with_columns(Table(table.header[:-2], added), ["view", "split"],
                                      lambda row: [_chexpert_view(row), "val"]).rows  # fmt: skip
    lines = [*(table.lines or range(2, len(table.rows) + 2)), *range(2, len(added) + 2)]
    return Table(table.header, rows, lines), [], [
        f"valid.csv beside it: its {len(added)} images are the official val split (--val-source official uses it)"]


# --- MIMIC-CXR-JPG ----------------------------------------------------------------------------------------------

_MIMIC_SPLITS = {"train": "train", "validate": "val", "test": "test"}


def _mimic_prefix(path: Path) -> str:
    """``mimic-cxr-2.0.0-`` of ``mimic-cxr-2.0.0-chexpert.csv`` (or ``-negbio``), the companion files' prefix."""
    name = path.name
    for word in ("chexpert", "negbio"):
        if word in name:
            return name[: name.index(word)]
    return "mimic-cxr-2.0.0-"


def _mimic_defaults(header: list[str], path: Path) -> dict[str, Any]:
    """The CheXpert-labeller file: its finding columns, the subject as patient, the metadata's view position,
    and the official split where the split file lies beside it."""
    findings = tuple(name for name in header if name not in ("subject_id", "study_id", "No Finding") and name)
    values = {"path_column": "path", "finding_columns": findings, "patient_column": "subject_id",
              "view_column": "ViewPosition"}  # fmt: skip
    return values if _beside(path, _mimic_prefix(path) + "split.csv") is None else {**values, "split_column": "split"}


def _mimic_prepare(table: Table, path: Path, settings: LabelSettings) -> tuple[Table, list[Skip], list[str]]:
    """One row per image (DICOM id) of the metadata file, joined with its study's labels by subject and study
    and with its split by DICOM id; the JPEG's path ``files/p10/p10000032/s50414267/{dicom_id}.jpg``.

    Raises:
        FormatError: no metadata file beside the labels (it alone names each study's images).
    """
    prefix = _mimic_prefix(path)
    found = _beside(path, prefix + "metadata.csv")
    if found is None:
        raise FormatError(f"MIMIC-CXR-JPG: {prefix}metadata.csv(.gz) is not beside {path}; it names each study's "
                          "images (dicom_id), without which no image can be found")  # fmt: skip
    metadata = _companion(found)
    _require(metadata, ("dicom_id", "subject_id", "study_id"), found)
    given, skipped = table.well_formed(path)
    studies = {(row["subject_id"], row["study_id"]): (line, row) for line, row in given}
    splits, notes = _mimic_splits(path, prefix)
    labels = [name for name in table.header if name not in ("subject_id", "study_id")]
    header = ["path", *metadata.header, *labels, "split"]
    rows, lines = [], []
    for _, image in metadata.dicts():
        if image is None:
            continue
        subject, study, dicom = image["subject_id"], image["study_id"], image["dicom_id"]
        where = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
        if (subject, study) not in studies:
            skipped.append(Skip(where, f"study without labels in {path.name}",
                                f"study s{study} of subject p{subject} has no row in {path.name}"))  # fmt: skip
            continue
        line, row = studies[subject, study]
        split = "train" if splits is None else _MIMIC_SPLITS.get(splits.get(dicom, ""), "")
        if not split:
            skipped.append(Skip(where, f"image in no split of {prefix}split.csv", line=line))
            continue
        rows.append([where, *(image[name] for name in metadata.header), *(row[name] for name in labels), split])
        lines.append(line)
    notes.insert(0, f"{len(rows)} images: {found.name}'s DICOM ids joined with the study labels by subject and study")
    return Table(header, rows, lines), skipped, notes


def _mimic_splits(path: Path, prefix: str) -> tuple[dict[str, str] | None, list[str]]:
    """DICOM id -> the official split (train, validate, test), or None and a note when the file is not there."""
    found = _beside(path, prefix + "split.csv")
    if found is None:
        return None, [f"no {prefix}split.csv beside it: test and validation carved by patient (subject_id)"]
    table = _companion(found)
    _require(table, ("dicom_id", "split"), found)
    return {row["dicom_id"]: row["split"] for _, row in table.dicts() if row}, [f"splits from {found.name}"]


def _require(table: Table, names: tuple[str, ...], path: Path) -> None:
    """``FormatError`` naming the columns of ``names`` that ``table``'s header lacks."""
    missing = [name for name in names if name not in table.header]
    if missing:
        raise FormatError(f"{path} lacks the column(s) {', '.join(missing)}; its columns are: "
                          f"{', '.join(table.header)}")  # fmt: skip


# --- PadChest ---------------------------------------------------------------------------------------------------

# PadChest's projections as the attributes name views: L is lateral, AP_horizontal an AP film of a lying patient;
# UNK and EXCLUDE say no view.
_PADCHEST_VIEWS = {"L": "LATERAL", "AP_horizontal": "AP", "UNK": "", "EXCLUDE": ""}


def _padchest_defaults(header: list[str], path: Path) -> dict[str, Any]:
    """PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv: the labels list as findings (normal: none), the
    patient, sex, age (from the study and birth years) and the view (Projection)."""
    return {"path_column": "path", "findings_column": "findings", "no_finding": "normal", "patient_column": "PatientID",
            "age_column": "age", "view_column": "view", **_present(header, sex_column="PatientSex_DICOM")}  # fmt: skip


def padchest_labels(value: str) -> list[str] | str:
    """The findings of a PadChest ``Labels`` cell, a Python list (``['pneumonia', ' infiltrates']``), items
    stripped and empty ones dropped (``['']`` and ``nan`` give none); or why it is not a list of strings.

    Read with ``ast.literal_eval``: a literal, never code.
    """
    text = value.strip()
    if text.lower() in ("", "nan", "none"):
        return []
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return f"Labels {text[:60]!r} is not a Python list of strings"
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        return f"Labels {text[:60]!r} is not a Python list of strings"
    return [item.strip() for item in items if item.strip()]


def _padchest_age(row: dict[str, str]) -> str:
    """Age in years at the study: StudyDate_DICOM's year (20140915) less PatientBirth (1946.0); "" if unknown."""
    try:
        return str(int(row["StudyDate_DICOM"][:4]) - int(float(row["PatientBirth"])))
    except (KeyError, ValueError, OverflowError):
        return ""


def _padchest_prepare(table: Table, path: Path, settings: LabelSettings) -> tuple[Table, list[Skip], list[str]]:
    """Columns ``path`` (ImageDir/ImageID), ``findings`` (the Labels list joined by --finding-separator),
    ``age`` and ``view``; a row whose Labels is not a list is left out with its reason."""
    header = [*table.header, "path", "findings", "age", "view"]
    rows, lines, skipped = [], [], []
    for (line, row), raw in zip(table.dicts(), table.rows, strict=True):
        if row is None:
            rows.append(raw)  # the row pipeline leaves it out with its reason
            lines.append(line)
            continue
        where = "/".join(part for part in (row["ImageDir"], row["ImageID"]) if part)
        findings = padchest_labels(row["Labels"])
        if isinstance(findings, str):
            skipped.append(Skip.of_row(where, findings, line))
            continue
        view = _PADCHEST_VIEWS.get(row.get("Projection", ""), row.get("Projection", ""))
        rows.append([*raw, where, settings.finding_separator.join(findings), _padchest_age(row), view])
        lines.append(line)
    return Table(header, rows, lines), skipped, [
        "labels: the Labels lists (read as Python literals); 'normal' is no finding; age = study year - birth year"]


# --- RSNA Pneumonia Detection Challenge -------------------------------------------------------------------------

RSNA_FINDING = "Lung Opacity"


def _rsna_defaults(header: list[str], path: Path) -> dict[str, Any]:
    """stage_2_train_labels.csv: one finding, Lung Opacity, per patientId (one image each), the patient."""
    return {"path_column": "path", "findings_column": "findings", "patient_column": "patientId"}


def _rsna_prepare(table: Table, path: Path, settings: LabelSettings) -> tuple[Table, list[Skip], list[str]]:
    """One row per patientId, positive (Lung Opacity) where any of its rows has Target 1; the image
    ``stage_2_train_images/{patientId}.dcm``; with stage_2_detailed_class_info.csv beside it, its ``class``
    column too (for ``--subgroups class``), an image whose class contradicts its Target left out."""
    folder = path.name.split("_labels")[0] + "_images" if "_labels" in path.name else "stage_2_train_images"
    targets: dict[str, list[str]] = defaultdict(list)
    first: dict[str, int] = {}
    given, skipped = table.well_formed(path)
    for line, row in given:
        targets[row["patientId"]].append(row["Target"])
        first.setdefault(row["patientId"], line)
    classes, notes = _rsna_classes(path)
    header = ["path", "patientId", "findings", "boxes", *(["class"] if classes is not None else [])]
    rows, lines = [], []
    for patient, values in targets.items():
        where = f"{folder}/{patient}.dcm"
        if any(value not in ("0", "1") for value in values):
            skipped.append(Skip.of_row(where, f"Target {values[0]!r} is not 0 or 1", first[patient]))
            continue
        positive = "1" in values
        row = [where, patient, RSNA_FINDING if positive else settings.no_finding, str(values.count("1"))]
        if classes is not None:
            kind = classes.get(patient, "")
            if (kind == RSNA_FINDING) != positive:
                skipped.append(Skip(where, "class in the class info contradicts its Target",
                                    f"class {kind!r} contradicts Target {int(positive)} (line {first[patient]})",
                                    first[patient]))  # fmt: skip
                continue
            row.append(kind)
        rows.append(row)
        lines.append(first[patient])
    notes.insert(0, f"one image per patientId ({len(rows)}), Lung Opacity where any of its rows has Target 1 "
                    "(its boxes counted in column 'boxes')")  # fmt: skip
    return Table(header, rows, lines), skipped, notes


def _rsna_classes(path: Path) -> tuple[dict[str, str] | None, list[str]]:
    """patientId -> its class from stage_2_detailed_class_info.csv where it lies beside the labels, else None."""
    name = path.name.split("_train_labels")[0] + "_detailed_class_info.csv"
    found = _beside(path, name)
    if found is None:
        return None, []
    table = _companion(found)
    _require(table, ("patientId", "class"), found)
    return {row["patientId"]: row["class"] for _, row in table.dicts() if row}, [
        f"{found.name} beside it: each image's class (Lung Opacity, No Lung Opacity / Not Normal, Normal) in "
        "column 'class', for --subgroups class"]  # fmt: skip


# --- VinDr-CXR --------------------------------------------------------------------------------------------------

VINDR_NO_FINDING = "No finding"
_VOTES: dict[str, Callable[[int, int], bool]] = {
    "any": lambda marked, readers: marked >= 1,
    "majority": lambda marked, readers: 2 * marked > readers,
    "all": lambda marked, readers: marked == readers,
}


def _vindr_defaults(header: list[str], path: Path) -> dict[str, Any]:
    """image_labels_train.csv or annotations_train.csv: the readers' findings combined per image (--reader-vote),
    No finding for none, each image its own patient (the set names no patients)."""
    return {"path_column": "path", "findings_column": "findings", "no_finding": VINDR_NO_FINDING,
            "patient_column": "image_id"}  # fmt: skip


def _reader_column(header: list[str]) -> str | None:
    """The reader column (``rad_ID``, or ``rad_id`` in the boxes file); None in the test set's consensus file."""
    return next((name for name in header if name.lower() == "rad_id"), None)


def _vindr_votes(table: Table, path: Path) -> tuple[dict[str, dict[str, set[str]]], dict[str, set[str]],
                                                    dict[str, int], list[Skip]]:  # fmt: skip
    """Per image: finding -> the readers who marked it, the image's readers, its first line, rows left out."""
    reader = _reader_column(table.header)
    boxes = "class_name" in table.header
    findings = [name for name in table.header if name not in ("image_id", reader, VINDR_NO_FINDING) and name]
    marked: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    readers: dict[str, set[str]] = defaultdict(set)
    first: dict[str, int] = {}
    given, skipped = table.well_formed(path)
    for line, row in given:
        image, who = row["image_id"], row[reader] if reader else f"line {line}"
        readers[image].add(who)
        first.setdefault(image, line)
        if boxes:
            if row["class_name"] != VINDR_NO_FINDING:
                marked[image][row["class_name"]].add(who)
            continue
        for name in findings:
            if row[name] not in ("", "0", "0.0", "1", "1.0"):
                skipped.append(Skip.of_row(image, f"value {row[name]!r} in column {name!r} is not 0 or 1", line))
            elif row[name].startswith("1"):
                marked[image][name].add(who)
    return marked, readers, first, skipped


def _vindr_prepare(table: Table, path: Path, settings: LabelSettings) -> tuple[Table, list[Skip], list[str]]:
    """One row per image, its findings those --reader-vote keeps of its readers' marks; the image
    ``train/{image_id}.dicom`` (``test/`` for the test set's files)."""
    folder = "test" if "test" in path.name.lower() else "train"
    marked, readers, first, skipped = _vindr_votes(table, path)
    bad = {skip.path for skip in skipped}
    keep = _VOTES[settings.reader_vote]
    rows, lines = [], []
    for image, who in readers.items():
        if image in bad:
            continue
        found = sorted(name for name, by in marked[image].items() if keep(len(by), len(who)))
        rows.append([f"{folder}/{image}.dicom", image, settings.finding_separator.join(found) or settings.no_finding,
                     str(len(who))])  # fmt: skip
        lines.append(first[image])
    counts = sorted({len(who) for who in readers.values()})
    rule = {"any": "any reader", "majority": "a majority (more than half) of its readers", "all": "all its readers"}
    return Table(["path", "image_id", "findings", "readers"], rows, lines), skipped, [
        f"{'/'.join(map(str, counts))} reader(s) per image; a finding is kept where {rule[settings.reader_vote]} "
        f"marked it (--reader-vote {settings.reader_vote})"]  # fmt: skip


FORMATS: dict[str, LabelsFormat] = {
    one.name: one
    for one in (
        LabelsFormat("nih", "NIH ChestX-ray14", (("Image Index", "Finding Labels", "Patient ID"),), _nih_defaults,
                     _nih_prepare),
        LabelsFormat("chexpert", "CheXpert", (_CHEXPERT_FIRST,), _chexpert_defaults, _chexpert_prepare),
        LabelsFormat("mimic", "MIMIC-CXR-JPG", (("subject_id", "study_id", "No Finding"),), _mimic_defaults,
                     _mimic_prepare),
        LabelsFormat("padchest", "PadChest", (("ImageID", "ImageDir", "PatientID", "Labels"),), _padchest_defaults,
                     _padchest_prepare),
        LabelsFormat("rsna", "RSNA Pneumonia", (("patientId", "Target"),), _rsna_defaults, _rsna_prepare),
        # The per-image 0/1 file (image_labels_train.csv) and the boxes file (annotations_train.csv).
        LabelsFormat("vindr", "VinDr-CXR", (("image_id", VINDR_NO_FINDING), ("image_id", "class_name")),
                     _vindr_defaults, _vindr_prepare),
    )
}  # fmt: skip
# Files that come with a dataset's labels but are not them: given as --labels, they are named.
_COMPANIONS = {
    ("dicom_id", "ViewPosition", "study_id"): "MIMIC-CXR-JPG's metadata file; give mimic-cxr-2.0.0-chexpert.csv",
    ("dicom_id", "split", "study_id"): "MIMIC-CXR-JPG's split file; give mimic-cxr-2.0.0-chexpert.csv",
    ("patientId", "class"): "RSNA's class info; give stage_2_train_labels.csv (the class is joined from beside it)",
}


def recognise(header: list[str], requested: str, path: str | Path) -> LabelsFormat | None:
    """The format of a labels file with ``header``: the one ``requested`` names, or under ``auto`` the one whose
    signature the header holds (None: no format, the column options alone).

    Raises:
        FormatError: an unknown name (listing the valid ones), a header of two formats, a companion file, or a
            named format whose columns the header lacks.
    """
    if requested not in LABELS_FORMATS:
        raise FormatError(f"--labels-format must be one of {', '.join(LABELS_FORMATS)}, not {requested!r}")
    if requested == "none":
        return None
    if requested != "auto":
        chosen = FORMATS[requested]
        if not chosen.matches(header):
            raise FormatError(f"--labels-format {requested}: the header of {path} lacks {chosen.title}'s columns "
                              f"{' or '.join(', '.join(one) for one in chosen.signatures)}; its columns are: "
                              f"{', '.join(header)}")  # fmt: skip
        return chosen
    for signature, what in _COMPANIONS.items():
        if all(name in header for name in signature):
            raise FormatError(f"{path} is {what} (or --labels-format none to read it with the column options)")
    matches = [one for one in FORMATS.values() if one.matches(header)]
    if len(matches) > 1:
        names = ", ".join(one.name for one in matches)
        raise FormatError(f"the header of {path} fits several formats ({names}); name one with --labels-format "
                          "NAME, or none to read it with the column options alone")  # fmt: skip
    return matches[0] if matches else None


def preset_of(path: str | Path, requested: str) -> dict[str, Any]:
    """The settings the format of the file at ``path`` would supply ({} for none, or a file not read); what a
    run's option checks ask before any image is read."""
    header = read_header(path)
    try:
        found = recognise(header, requested, path) if header else None
    except FormatError:
        return {}
    return {} if found is None else {"labels_format": found.name, **found.defaults(header, Path(path))}


def prepare(settings: LabelSettings, table: Table) -> Prepared:
    """The labels table ``table`` of ``settings.labels`` as the row pipeline reads it: recognised, its preset's
    defaults applied under the given options, and prepared (joined, one row per image).

    Raises:
        FormatError: see ``recognise``; a companion file that is needed and missing or unreadable.
    """
    path = Path(settings.labels)
    found = recognise(table.header, settings.labels_format, path)
    if found is None:
        return Prepared(settings, table)
    settings, kept = with_defaults(settings, found.defaults(table.header, path))
    table, skipped, notes = found.prepare(table, path, settings)
    how = "recognised from its header" if settings.labels_format == "auto" else "--labels-format " + found.name
    line = f"labels format: {found.title} ({path.name}, {how})"
    if kept:
        line += "; the given " + ", ".join("--" + name.replace("_", "-") for name in kept) + " kept over its preset"
    return Prepared(settings, table, skipped, [line, *(f"{found.title}: {note}" for note in notes)], found)
