"""Labels from a CSV beside an image folder, as NIH ChestX-ray14, CheXpert, RSNA and PadChest publish them.

``read_labels`` builds the same ``Dataset`` that ``scan_dataset`` builds from
class folders: one record per usable CSV row, its path relative to the image
folder, its class, its split (from an optional split column, else train, and
test and validation are carved as for folders) and its patient (from an
optional patient column, else read from the file name as for folders).

Rows that cannot be used are left out and listed in ``Dataset.skipped`` with
their reason (a missing image, an empty or unknown label, an unknown split, a
duplicated image, a row with the wrong number of fields). A file that cannot
be read as a labels table (not UTF-8, no header, another delimiter, a named
column missing) and a patient listed in two official splits raise
``LabelsError``, one line, before any image is read.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
from collections import defaultdict
from pathlib import Path, PurePosixPath

from features.data.attributes import STANDARD_ATTRIBUTES, normalise
from features.data.dataset import (
    KERMANY_CLASSES,
    SPLIT_ALIASES,
    Dataset,
    ImageRecord,
    _why_not_an_image,
    scan_dataset,
    with_header_attributes,
)
from features.data.formats import FormatError, Table, prepare, read_bytes
from features.data.records import FINDING_SEPARATOR, NO_FINDING, UNKNOWN_MARK, Label, Skip, unwritable_finding
from features.options import add_options, given_values
from features.settings import LabelSettings

_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}
# Why every row of an image listed on several lines that disagree is left out.
_DISAGREEING_ROWS = "with different labels, splits or patients; none used"


class LabelsError(ValueError):
    """A labels CSV that cannot be read, or whose official splits contradict themselves."""


def load_dataset(root: str | Path, settings: LabelSettings) -> Dataset:
    """The dataset at ``root``: from class folders, or from ``settings.labels`` when a CSV is given."""
    if settings.labels is None:
        return scan_dataset(root)
    return read_labels(root, settings)


def read_table(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows of a CSV file (``.csv.gz`` too); ``LabelsError`` if it is not UTF-8 or has no
    rows.

    Raises:
        LabelsError: not readable, not UTF-8 text, empty, or not parseable as CSV.
    """
    path = Path(path)
    try:
        text = read_bytes(path).decode("utf-8-sig")
    except OSError as error:
        raise LabelsError(f"cannot read the labels file {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise LabelsError(
            f"labels file {path} is not UTF-8 text (byte {error.start}: {error.object[error.start:error.start + 1]!r})"
            "; save it as UTF-8 (for example: iconv -f latin1 -t utf-8)"
        ) from error
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as error:
        raise LabelsError(f"labels file {path} is not a valid CSV: {error}") from error
    if not rows:
        raise LabelsError(f"labels file {path} is empty; expected a header row, then one row per image")
    return [name.strip() for name in rows[0]], rows[1:]


def check_columns(header: list[str], wanted: dict[str, str | None], path: str | Path) -> dict[str, int]:
    """Position of each wanted column (option -> column name) in ``header``; ``LabelsError`` naming the ones found."""
    missing = [(option, name) for option, name in wanted.items() if name is not None and name not in header]
    if not missing:
        return {option: header.index(name) for option, name in wanted.items() if name is not None}
    if len(header) == 1:
        for delimiter, words in _DELIMITERS.items():
            if delimiter in header[0]:
                raise LabelsError(f"labels file {path} looks separated by {words}, not commas (header {header[0]!r}); "
                                  "save it as comma-separated values")  # fmt: skip
    option, name = missing[0]
    raise LabelsError(
        f"column {name!r} ({option}) is not in the header of {path}; its columns are: {', '.join(header)}. "
        "Name the right column with " + option + ", or add a header row if the file starts with data"
    )


def _relative(value: str) -> str | None:
    """A CSV path as a clean path relative to the image folder, or None if it would leave the folder."""
    parts = PurePosixPath(value.strip().replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or not parts.parts:
        return None
    return parts.as_posix()


def read_split_lists(pairs: tuple[tuple[str, str], ...]) -> dict[str, str | None]:
    """Image name -> split from the official split list files; None for a name in two lists of different splits.

    Raises:
        LabelsError: a list file that cannot be read or is not UTF-8 text.
    """
    splits: dict[str, str | None] = {}
    for split, path in pairs:
        try:
            names = Path(path).read_bytes().decode("utf-8-sig").splitlines()
        except OSError as error:
            raise LabelsError(f"cannot read the split list {path}: {error.strerror or error}") from error
        except UnicodeDecodeError as error:
            raise LabelsError(f"split list {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from error
        for name in filter(None, (line.strip() for line in names)):
            known = splits.setdefault(name, SPLIT_ALIASES[split.lower()])
            splits[name] = known if known == SPLIT_ALIASES[split.lower()] else None
    return splits


def _row_split(row: list[str], at: dict[str, int], relative: str, lists: dict[str, str | None] | None) -> str:
    """The split of one row (train without a split column or lists), or why the row is left out."""
    if lists is not None:
        found = {lists[name] for name in (relative, PurePosixPath(relative).name) if name in lists}
        if not found:
            return "in no split list (--split-lists)"
        return found.pop() if len(found) == 1 and None not in found else "named in split lists of two different splits"
    if "--split-column" not in at:
        return "train"
    value = row[at["--split-column"]].strip()
    return SPLIT_ALIASES.get(value.lower()) or f"unknown split {value!r}; valid: {', '.join(SPLIT_ALIASES)}"


def _separated_label(value: str, settings: LabelSettings) -> tuple[Label | None, str]:
    """NIH's form: the label of ``Effusion|Pneumonia`` or ``No Finding``, or why the row is left out."""
    tokens = sorted({token.strip() for token in value.split(settings.finding_separator)} - {""})
    if not tokens:
        return None, "empty label"
    if settings.no_finding in tokens:
        others = [token for token in tokens if token != settings.no_finding]
        return (Label.of_findings(), "") if not others else (None, f"{settings.no_finding!r} beside findings {others}")
    unknown = [token for token in tokens if settings.classes and token not in settings.classes]
    if unknown:
        return None, f"unknown finding {unknown[0]!r}; known: {', '.join(settings.classes)} (--classes)"
    if reserved := [token for token in tokens if unwritable_finding(token)]:
        return None, f"finding {reserved[0]!r} ends in {UNKNOWN_MARK!r} or holds {FINDING_SEPARATOR!r}"
    return Label.of_findings(tokens), ""


def _finding_value(raw: str, settings: LabelSettings) -> str | None:
    """CheXpert's form: one finding's cell as "1", "0" or "?" (unknown) under the stated policies; None if invalid."""
    policy = {"ignore": "?", "zeros": "0", "ones": "1"}
    if not raw:
        return policy[settings.blank]
    try:
        number = float(raw)
    except ValueError:
        return None
    return {1.0: "1", 0.0: "0", -1.0: policy[settings.uncertain]}.get(number) if math.isfinite(number) else None


def _columns_label(row: list[str], at: dict[str, int], settings: LabelSettings) -> tuple[Label | None, str]:
    """CheXpert's form: the label of one 1/0/-1/blank column per finding, or why the row is left out."""
    present, unknown = [], []
    for name in settings.finding_columns:
        raw = row[at[f"--finding-columns {name}"]].strip()
        value = _finding_value(raw, settings)
        if value is None:
            return None, f"value {raw!r} in column {name!r} is not 1, 0, -1 or blank"
        (present if value == "1" else unknown if value == "?" else []).append(name)
    if len(unknown) == len(settings.finding_columns):
        return None, "every finding uncertain or blank, and ignored (--uncertain, --blank)"
    return Label.of_findings(present, unknown), ""


def _row_label(row: list[str], at: dict[str, int], settings: LabelSettings) -> tuple[Label | None, str]:
    """The label of one row (a class, or a multi-label findings label), or why the row is left out."""
    if settings.finding_columns:
        return _columns_label(row, at, settings)
    if settings.findings_column is not None:
        return _separated_label(row[at["--findings-column"]], settings)
    label = row[at["--label-column"]].strip()
    if not label:
        return None, "empty label"
    if settings.classes and label not in settings.classes:
        return None, f"unknown label {label!r}; known: {', '.join(settings.classes)} (--classes)"
    return Label.of_class(label), ""


class _ImageFinder:
    """Finds a CSV's image under the folder: at its path, else by file name anywhere below (NIH's images_001/...)."""

    def __init__(self, root: Path):
        self.root, self._by_name = root, None

    def __call__(self, relative: str) -> str | None:
        """The image's path relative to the folder, or None when it is not there or its name is not unique.

        A path that starts with the folder's own name (CheXpert's ``CheXpert-v1.0-small/train/...`` with --data
        the CheXpert-v1.0-small folder) is read below the folder too."""
        if (self.root / relative).exists() or (self.root / relative).is_symlink():
            return relative
        first, _, rest = relative.partition("/")
        if rest and first == self.root.name and ((self.root / rest).exists() or (self.root / rest).is_symlink()):
            return rest
        if self._by_name is None:
            self._by_name = {}
            for folder, _, names in os.walk(self.root):
                for name in names:
                    found = Path(folder, name).relative_to(self.root).as_posix()
                    self._by_name[name] = None if name in self._by_name else found
        return self._by_name.get(PurePosixPath(relative).name)


def _row_record(
    row: list[str], at: dict[str, int], find: _ImageFinder, settings: LabelSettings, lists: dict[str, str | None] | None
) -> ImageRecord | str:
    """The record of one CSV row, or why the row is left out."""
    relative = _relative(row[at["--path-column"]])
    if relative is None:
        return "path is empty, absolute or leaves the --data folder"
    label, reason = _row_label(row, at, settings)
    if label is None:
        return reason
    split = _row_split(row, at, relative, lists)
    if split not in SPLIT_ALIASES.values():
        return split
    found = find(relative)
    if found is None:
        return "image named in the labels file not found under --data (at its path, or by a unique file name)"
    if reason := _why_not_an_image(find.root / found):
        return reason
    patient = row[at["--patient-column"]].strip() if "--patient-column" in at else ""
    if settings.patient_pattern is not None and not patient:
        match = re.search(settings.patient_pattern, relative)
        if match is None:
            return f"no patient id in the path (--patient-pattern {settings.patient_pattern!r})"
        patient = match.group(1) if match.groups() else match.group(0)
    attributes = {name: normalise(name, row[at[_attribute_option(name)]]) for name in settings.attribute_sources()}
    record = ImageRecord(found, label, split, patient, tuple(sorted((k, v) for k, v in attributes.items() if v)))
    return with_header_attributes(record, find.root)  # a DICOM header's, where the CSV does not give them


def _drop_duplicates(
    found: list[tuple[int, str, ImageRecord]],
) -> tuple[list[ImageRecord], list[Skip]]:
    """One record per image: repeats that agree are left out after the first; images whose rows disagree, wholly."""
    by_path: dict[str, list[tuple[int, ImageRecord]]] = defaultdict(list)
    for line, _, record in found:
        by_path[record.path].append((line, record))
    records, skipped = [], []
    for path, rows in by_path.items():
        first_line, first = rows[0]
        if all(record == first for _, record in rows):
            records.append(first)
            repeats = [line for line, _ in rows[1:]]
            skipped += [Skip(path, "duplicate row of an image",
                             f"duplicate row (line {line}) of the image on line {first_line}", line)
                        for line in repeats]  # fmt: skip
        else:
            lines = ", ".join(str(line) for line, _ in rows)
            kind, detail = (f"image listed on several lines {_DISAGREEING_ROWS}",
                            f"image listed on lines {lines} {_DISAGREEING_ROWS}")  # fmt: skip
            skipped += [Skip(path, kind, detail, line) for line, _ in rows]
    return records, skipped


def _check_patients(records: list[ImageRecord], path: str | Path) -> None:
    """``LabelsError`` if a patient's images lie in two official splits (the test would see training patients)."""
    splits: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.patient:
            splits[record.patient].add(record.split)
    mixed = sorted(patient for patient, names in splits.items() if len(names) > 1)
    if mixed:
        raise LabelsError(
            f"{len(mixed)} patient(s) in {path} have images in more than one split, for example {mixed[0]!r} in "
            f"{' and '.join(sorted(splits[mixed[0]]))}; a patient must be in one split. Fix the split column, "
            "or leave out --split-column to carve the splits by patient"
        )


def _class_order(labels: set[Label], settings: LabelSettings) -> tuple[str, ...]:
    """The label-index order: as ``--classes`` (or ``--finding-columns``) gives it, Kermany's, else sorted."""
    if settings.finding_columns:
        return tuple(settings.finding_columns)
    if settings.classes:
        return tuple(settings.classes)
    if settings.multi_label:
        return tuple(sorted({finding for label in labels for finding in label.findings}))
    names = {label.text for label in labels}
    return KERMANY_CLASSES if names == set(KERMANY_CLASSES) else tuple(sorted(names))


def _attribute_option(name: str) -> str:
    """The option that names attribute ``name``'s column: ``--sex-column``, or ``--subgroups COLUMN`` for a kept one."""
    return f"--{name}-column" if name in STANDARD_ATTRIBUTES else f"--subgroups {name}"


def _wanted_columns(settings: LabelSettings) -> dict[str, str | None]:
    """Option -> column name of every column the labels CSV must have."""
    label = {"--label-column": settings.label_column} if not settings.multi_label else {}
    findings = {f"--finding-columns {name}": name for name in settings.finding_columns}
    for name in settings.finding_columns:
        if name == NO_FINDING or name == settings.no_finding:
            raise LabelsError(f"--finding-columns names {name!r}, the normal case, not a finding: leave it out "
                              "(an image whose findings are all 0 is the normal case)")  # fmt: skip
        if unwritable_finding(name):
            raise LabelsError(f"finding column {name!r} may not end in {UNKNOWN_MARK!r} or hold {FINDING_SEPARATOR!r}")
    attributes = {_attribute_option(name): column for name, column in settings.attribute_sources().items()}
    return {
        "--path-column": settings.path_column, **label, "--findings-column": settings.findings_column,
        "--patient-column": settings.patient_column, "--split-column": settings.split_column, **findings,
        **attributes,
    }  # fmt: skip


def _describe_labels(settings: LabelSettings, records: int, classes: tuple[str, ...]) -> str:
    """The leaderboard's note on where the labels came from and in which form."""
    name = Path(settings.labels).name
    if settings.finding_columns:
        return (f"labels: {name} ({records} images, multi-label: one 1/0/-1/blank column per finding, "
                f"{len(classes)} findings; uncertain -1 → {settings.uncertain}, blank → {settings.blank})")  # fmt: skip
    if settings.findings_column is not None:
        return (f"labels: {name} ({records} images, multi-label: {len(classes)} findings in column "
                f"{settings.findings_column!r} separated by {settings.finding_separator!r}, "
                f"{settings.no_finding!r} for none)")  # fmt: skip
    return f"labels: {name} ({records} images, one class per image)"


def _check_pattern(settings: LabelSettings) -> None:
    """``LabelsError`` for a ``--patient-pattern`` that is not a regular expression."""
    if settings.patient_pattern is None:
        return
    try:
        re.compile(settings.patient_pattern)
    except re.error as error:
        raise LabelsError(f"--patient-pattern {settings.patient_pattern!r} is not a regular expression: {error}; "
                          r"for CheXpert: 'patient(\d+)'") from error  # fmt: skip


def read_labels(root: str | Path, settings: LabelSettings) -> Dataset:
    """The dataset of the image folder ``root`` labelled by the CSV ``settings.labels``: a class or findings per image.

    Raises:
        FileNotFoundError: if ``root`` does not exist.
        LabelsError: an unreadable labels file, a missing column, a patient in two official splits.
        ValueError: if no row names a usable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    try:
        prepared = prepare(settings, Table(*read_table(settings.labels)))
    except FormatError as error:
        raise LabelsError(str(error)) from error
    settings, header = prepared.settings, prepared.table.header
    if prepared.format is not None:
        print(prepared.notes[0])
    _check_pattern(settings)
    at = check_columns(header, _wanted_columns(settings), settings.labels)
    lists = read_split_lists(settings.split_lists) if settings.split_lists else None
    find = _ImageFinder(root)
    found, skipped = [], list(prepared.skipped)
    for line, row in prepared.table.numbered():
        name = row[at["--path-column"]].strip() if len(row) > at["--path-column"] else ""
        where = name or f"{Path(settings.labels).name} line {line}"
        if len(row) != len(header):
            detail = f"line {line} has {len(row)} fields, the header {len(header)}; a stray delimiter or quote?"
            skipped.append(Skip(where, "a row with more or fewer fields than the header", detail, line))
            continue
        outcome = _row_record(row, at, find, settings, lists)
        if isinstance(outcome, str):
            skipped.append(Skip.of_row(where, outcome, line))
        else:
            found.append((line, name, outcome))
    records, repeats = _drop_duplicates(found)
    skipped += repeats
    if not records:
        raise ValueError(f"no row of {settings.labels} names a usable image under {root}; "
                         f"{len(skipped)} rows left out, for example: {skipped[0].reason if skipped else 'no rows'}")
    _check_patients(records, settings.labels)
    classes = _class_order({record.label for record in records}, settings)
    notes = [*prepared.notes, _describe_labels(settings, len(records), classes)]
    return Dataset(root, "csv", classes, records, skipped, notes=notes, multi_label=settings.multi_label)


def add_label_options(parser: argparse.ArgumentParser) -> None:
    """The labels-CSV options of ``LabelSettings`` on a command line of the features stage (``audit``), declared
    once, on ``LabelSettings``'s fields, for ``run`` too."""
    add_options(parser, LabelSettings)


def label_settings(args: argparse.Namespace) -> LabelSettings:
    """The ``LabelSettings`` of what ``add_label_options`` parsed (the defaults where an option was not given)."""
    return LabelSettings(**given_values(LabelSettings, args))
