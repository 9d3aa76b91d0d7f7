"""Find the images of a chest X-ray dataset, label them, and split them.

Two layouts are read:

* Kermany: ``ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``. A PNEUMONIA file
  name containing ``bacteria`` or ``virus`` gives three classes: normal,
  bacterial, viral.
* Class folders: ``ROOT/[split/]CLASS/*`` with any number of classes.

DICOM files (``.dcm``, ``.dicom``, or the DICOM signature under any other name) are images in either layout;
the patient id, sex, age and view their headers state land on their records (``with_header_attributes``).

The test split is read as it is and used for final reporting only. The
validation split is carved, stratified and seeded, from train by default,
because the official Kermany validation split holds only 16 images.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from features.data.dicom import DICOM_SUFFIXES, header_attributes, is_dicom
from features.data.records import NO_FINDING, Label, Skip

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", *DICOM_SUFFIXES)
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
SPLITS = ("train", "val", "test")
KERMANY_CLASSES = ("normal", "bacterial", "viral")


@dataclass(frozen=True)
class ImageRecord:
    """One image: its path relative to the dataset root, its label, its split and, from a labels CSV, its patient.

    An empty ``patient`` means the patient is read from the file name (``patient_of``). ``attributes`` holds what
    the labels CSV or the DICOM header says of the image (``features.data.attributes``: sex, age, view, and any
    column a run keeps for its subgroups), as sorted ``(name, value)`` pairs; a value not recorded is absent.
    """

    path: str
    label: Label
    split: str
    patient: str = ""
    attributes: tuple[tuple[str, str], ...] = ()

    def attribute(self, name: str) -> str:
        """The value of attribute ``name`` (``sex``, ``age``, ``view``, a kept column), ``""`` where not recorded."""
        return dict(self.attributes).get(name, "")


# The columns of leakage.csv (copies inside the dataset) and external_leakage.csv (external test images also in the
# internal data), in the order those files have always had.
LEAKAGE_COLUMNS = ("group", "sha256", "split", "label", "path", "problem", "action")
EXTERNAL_LEAKAGE_COLUMNS = ("sha256", "path", "internal_split", "internal_path")


@dataclass(frozen=True)
class LeakageRow:
    """One copy of an image whose bytes appear elsewhere: a row of ``leakage.csv`` or ``external_leakage.csv``.

    Inside one dataset (``LEAKAGE_COLUMNS``): ``group`` numbers each distinct content, ``split`` and ``label`` are
    this copy's, ``problem`` says which splits or labels the copies span, and ``action`` whether ``--leakage``
    kept or dropped it. An external test image also in the internal data (``EXTERNAL_LEAKAGE_COLUMNS``):
    ``internal_split`` and ``internal_path`` name the internal copy.
    """

    sha256: str
    path: str
    group: int = 0
    split: str = ""
    label: str = ""
    problem: str = ""
    action: str = "kept"
    internal_split: str = ""
    internal_path: str = ""

    def cells(self, columns: tuple[str, ...]) -> dict:
        """This row's values under ``columns`` (``LEAKAGE_COLUMNS`` or ``EXTERNAL_LEAKAGE_COLUMNS``), in order."""
        return {name: getattr(self, name) for name in columns}


@dataclass
class Dataset:
    """The images of a dataset with their labels and splits.

    Attributes:
        root: the folder the record paths are relative to.
        layout: "kermany", "class-folders" or "csv" (labels from a CSV, ``features.data.labels``).
        classes: class names in label-index order.
        records: every usable image.
        skipped: a ``Skip`` (relative path, and why) for every file left out.
        notes: how the splits were made, for the leaderboard.
        digests: SHA-256 of each record's bytes, once ``features.data.audit`` has read them;
            identical images are then kept on one side of a carved split.
        leakage: copies of an image found elsewhere: in two splits or under two labels
            (``features.data.audit.flag_leakage``), or, for an external test set, also in the internal data
            (``features.data.audit.external_overlap``).
        multi_label: ``classes`` are findings, any number per image (``Label.of_findings``); labels are then
            ``(n, findings)`` arrays of 1, 0 and NaN (unknown) instead of class indices.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    records: list[ImageRecord]
    skipped: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    leakage: list[LeakageRow] = field(default_factory=list)
    multi_label: bool = False

    def split(self, name: str) -> list[ImageRecord]:
        """The records of split ``name``, in a stable order."""
        return [record for record in self.records if record.split == name]

    def indices(self, name: str) -> np.ndarray:
        """Positions in ``records`` of split ``name``'s records, in ``split(name)`` order."""
        return np.flatnonzero([record.split == name for record in self.records])

    def labels(self, name: str) -> np.ndarray:
        """Integer class indices of split ``name``, aligned with ``split(name)``; multi-label: finding targets.

        A multi-label dataset gives a float32 ``(n, findings)`` array: 1 present, 0 absent, NaN unknown.
        """
        if self.multi_label:
            rows = [record.label.targets(self.classes) for record in self.split(name)]
            return np.array(rows, dtype=np.float32).reshape(len(rows), len(self.classes))
        index = {Label.of_class(name): i for i, name in enumerate(self.classes)}
        return np.array([index[record.label] for record in self.split(name)], dtype=np.int64)

    def task_labels(self, name: str, positives: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Single-label: which records of split ``name`` a task with these positive classes can score, and their
        class indices. A record labelled with a class group (``bacterial+viral``) is scored only where its whole
        group is on one side of the task, under its first class; every other record always is.
        """
        index = {label: i for i, label in enumerate(self.classes)}
        keep, labels = [], []
        for record in self.split(name):
            group = record.label.classes
            inside = sum(member in positives for member in group)
            keep.append(inside in (0, len(group)))
            labels.append(index[group[0]])
        return np.array(keep, dtype=bool), np.array(labels, dtype=np.int64)

    def has_groups(self) -> bool:
        """Whether some record is labelled with a class group (an external class mapped onto several)."""
        return any(record.label.is_group for record in self.records)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{split: {class: n}}``; multi-label: images showing each finding.

        A class group (``bacterial+viral``, external sets only) is counted under its own name.
        """
        table = {split: dict.fromkeys(self.classes, 0) for split in SPLITS}
        for record in self.records:
            for name in record.label.counted_as:
                table[record.split][name] = table[record.split].get(name, 0) + 1
        return table


# Folders and files that operating systems and archivers leave behind.
_SYSTEM_NAMES = {"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin"}
_WRONG_DEPTH = "image at the wrong depth; expected SPLIT/CLASS/IMAGE or CLASS/IMAGE"


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in _SYSTEM_NAMES


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))


def _hidden_dirs(folder: Path, root: Path) -> list[Skip]:
    """Hidden and system folders (``__MACOSX/``, ``.git/``) in ``folder``, listed as left out, never read."""
    return [
        Skip(p.relative_to(root).as_posix() + "/", "hidden or system folder; not read")
        for p in sorted(folder.iterdir())
        if p.is_dir() and _is_hidden(p)
    ]


def printable(relative: str) -> str:
    """``relative`` as valid UTF-8 text: bytes that are not UTF-8 shown as ``\\xff`` escapes."""
    return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_problem(path: Path) -> str | None:
    """Why a file name cannot go through the reports (not valid UTF-8), or None."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (written on another system?); rename it to read it"
    return None


def _why_not_an_image(path: Path) -> str | None:
    """Why a class-folder entry is not read as an image, or None if it is one."""
    if _is_hidden(path):
        return "hidden or system file"
    if problem := name_problem(path):
        return problem
    if path.is_symlink() and not path.exists():
        return "broken symbolic link"
    if path.is_dir():
        return "folder inside a class folder; its files are not read (expected SPLIT/CLASS/IMAGE)"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in IMAGE_SUFFIXES and not is_dicom(path):
        return f"not an image file (suffix {path.suffix or 'none'}; read are {', '.join(IMAGE_SUFFIXES)})"
    return None


def with_header_attributes(record: ImageRecord, root: Path) -> ImageRecord:
    """``record`` with what its DICOM header states (``features.data.dicom.header_attributes``) where the record
    does not say it already: the patient id, sex, age and view. Any other file's record is returned as it is."""
    if not is_dicom(root / record.path):
        return record
    patient, header = header_attributes(root / record.path)
    attributes = header | dict(record.attributes)
    return replace(record, patient=record.patient or patient, attributes=tuple(sorted(attributes.items())))


def _stray_images(folder: Path, root: Path) -> list[Skip]:
    """Image files lying directly in ``folder``, where only folders belong."""
    return [
        Skip(path.relative_to(root).as_posix(), _WRONG_DEPTH)
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not _is_hidden(path)
    ]


def _kermany_label(folder: str, file_name: str) -> str | None:
    if folder.upper() == "NORMAL":
        return "normal"
    lowered = file_name.lower()
    if "bacteria" in lowered:
        return "bacterial"
    if "virus" in lowered:
        return "viral"
    return None


def _split_folders(root: Path) -> dict[str, Path]:
    return {
        SPLIT_ALIASES[child.name.lower()]: child for child in _visible_dirs(root) if child.name.lower() in SPLIT_ALIASES
    }


def _is_kermany(split_dirs: dict[str, Path]) -> bool:
    """NORMAL/PNEUMONIA folders whose pneumonia file names carry the subtype."""
    class_dirs = [child for folder in split_dirs.values() for child in _visible_dirs(folder)]
    names = {child.name.upper() for child in class_dirs}
    if not names or not names <= {"NORMAL", "PNEUMONIA"}:
        return False
    # PneumoniaMNIST and others use the same folders without subtypes: two classes then.
    return any(
        _kermany_label("PNEUMONIA", path.name) is not None
        for child in class_dirs
        if child.name.upper() == "PNEUMONIA"
        for path in child.iterdir()
    )


def scan_dataset(root: str | Path) -> Dataset:
    """Read ``root`` in the Kermany or the class-folder layout.

    Every file that is not read is listed in ``skipped`` with its reason:
    hidden and system files, other suffixes, broken symbolic links, images at
    the wrong depth, folders where images belong, folders that are not splits.
    Symbolic links to images are followed. A DICOM file is an image whatever
    its name; its header's patient, sex, age and view are on its record. An empty class folder still names a
    class (``features.data.audit.check_classes`` then stops the run).

    Raises:
        FileNotFoundError: if ``root`` does not exist.
        ValueError: if no class folder with images is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    split_dirs = _split_folders(root)
    records: list[ImageRecord] = []
    skipped: list[Skip] = []
    kermany = bool(split_dirs) and _is_kermany(split_dirs)
    if split_dirs:
        skipped += [Skip(p.relative_to(root).as_posix() + "/", "folder is not a split (train, val, test); not read")
                    for p in _visible_dirs(root) if p.name.lower() not in SPLIT_ALIASES]  # fmt: skip
        skipped += _stray_images(root, root)
    skipped += _hidden_dirs(root, root)
    class_names: set[str] = set()
    for split, folder in (split_dirs or {"train": root}).items():
        if split_dirs:
            skipped += _stray_images(folder, root) + _hidden_dirs(folder, root)
        for class_dir in _visible_dirs(folder):
            class_names.add(class_dir.name)
            for path in sorted(class_dir.iterdir()):
                relative = printable(path.relative_to(root).as_posix())
                reason = _why_not_an_image(path)
                label = class_dir.name if not kermany else _kermany_label(class_dir.name, path.name)
                if reason is None and label is None:
                    reason = "PNEUMONIA file name names neither bacteria nor virus"
                if reason is None:
                    records.append(with_header_attributes(ImageRecord(relative, Label.of_class(label), split), root))
                else:
                    skipped.append(Skip(relative, reason))
    if not records:
        raise ValueError(
            f"no images found in {root}: expected ROOT/{{train,val,test}}/{{NORMAL,PNEUMONIA}}/*.jpeg "
            f"or ROOT/[split/]CLASS/* with files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    layout, classes = ("kermany", KERMANY_CLASSES) if kermany else ("class-folders", tuple(sorted(class_names)))
    return Dataset(root, layout, classes, records, skipped)


_KERMANY_PATIENT = re.compile(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)", re.IGNORECASE)


def patient_of(path: str) -> str:
    """The patient a Kermany file belongs to (``person23``, ``IM-0115``), else the path itself.

    Several images of one patient must land on the same side of a split, or the
    validation score is inflated by near-duplicates.
    """
    match = _KERMANY_PATIENT.match(Path(path).name)
    return match.group(1).lower() if match else path


def _patient_key(record: ImageRecord) -> str:
    return "patient:" + (record.patient or patient_of(record.path))


def _groups(records: list[ImageRecord], digests: dict[str, str]) -> dict[str, list[ImageRecord]]:
    """Records that must land on one side of a split: a patient's images, and copies of one image."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for record in sorted(records, key=lambda r: r.path):
        patient = find(_patient_key(record))
        if record.path in digests:
            copy = find("sha256:" + digests[record.path])
            if copy != patient:
                parent[copy] = patient
    groups: dict[str, list[ImageRecord]] = {}
    for record in sorted(records, key=lambda r: r.path):
        groups.setdefault(find(_patient_key(record)), []).append(record)
    return groups


def patient_groups(records: list[ImageRecord], digests: dict[str, str]) -> list[str]:
    """Each record's group, aligned with ``records``: what a carved split keeps on one side (``_groups``).

    A patient's images share a group, and so do copies of one image; an image with no patient is its own.
    """
    group_of = {record.path: key for key, members in _groups(records, digests).items() for record in members}
    return [group_of[record.path] for record in records]


def _stratified_pick(
    records: list[ImageRecord], fraction: float, rng: np.random.Generator, digests: dict[str, str]
) -> set[str]:
    """Paths of a seeded, per-class ``fraction`` of ``records``, whole patients (and image copies) at a time."""
    by_patient = _groups(records, digests)
    class_sizes = Counter(record.label for record in records)
    targets = {}
    for label, n in class_sizes.items():
        n_pick = int(round(n * fraction))
        targets[label] = min(max(n_pick, 1), n - 1) if n >= 2 else n_pick
    taken: Counter[str] = Counter()
    picked: set[str] = set()
    patients = sorted(by_patient)
    for i in rng.permutation(len(patients)):
        members = by_patient[patients[i]]
        need = Counter(record.label for record in members)
        # A patient joins only if every class it brings still has room.
        if all(taken[label] + n <= targets[label] for label, n in need.items()):
            taken.update(need)
            picked.update(record.path for record in members)
    return picked


def make_splits(
    dataset: Dataset,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    val_source: str = "carve",
    limit_per_class: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Return a copy of ``dataset`` with train / val / test assigned for a run.

    Args:
        val_fraction: share of the train pool carved out, per class, as validation.
        test_fraction: share carved as test when the dataset has no test split.
        val_source: "carve" (the official val images join the train pool, then a
            stratified ``val_fraction`` is carved) or "official" (use the val folder).
        limit_per_class: keep at most this many images per class and split,
            chosen with the seed; for quick runs.
        seed: seeds every random choice here.
    """
    if val_source not in ("carve", "official"):
        raise ValueError(f"val_source must be 'carve' or 'official', not {val_source!r}")
    # One generator, drawn from in this order (test, validation, subset), so a seed fixes every split.
    rng = np.random.default_rng(seed)
    records, notes = _assign_test(list(dataset.records), test_fraction, rng, dataset.digests, seed)
    if val_source == "official":
        official_val = sum(r.split == "val" for r in records)
        if official_val == 0:
            raise ValueError("val_source='official' but the dataset has no val split; use 'carve'")
        notes.append(f"validation: the dataset's own val split ({official_val} images)")
    else:
        records, note = _carve_validation(records, val_fraction, rng, dataset.digests, seed)
        notes.append(note)
    if limit_per_class is not None:
        # Multi-label: per label combination (``Effusion|Pneumonia``), the unit the splits are stratified by.
        groups = sorted({r.label for r in records}) if dataset.multi_label else map(Label.of_class, dataset.classes)
        records = _subset_per_class(records, tuple(groups), limit_per_class, rng)
        notes.append(f"subset: at most {limit_per_class} images per class and split (--limit-per-class), seed {seed}")
    records.sort(key=lambda r: (SPLITS.index(r.split), r.path))
    return replace(dataset, records=records, notes=dataset.notes + notes)


def _assign_test(
    records: list[ImageRecord], fraction: float, rng: np.random.Generator, digests: dict[str, str], seed: int
) -> tuple[list[ImageRecord], list[str]]:
    """Keep the dataset's own test split, or carve one from train when it has none; also the note saying which."""
    if any(r.split == "test" for r in records):
        return records, ["test: the dataset's own test split, used only for this final report"]
    test_paths = _stratified_pick([r for r in records if r.split == "train"], fraction, rng, digests)
    records = [replace(r, split="test") if r.path in test_paths else r for r in records]
    note = f"test: no test split in the data; {fraction:.0%} of train carved, stratified, whole patients, seed {seed}"
    return records, [note]


def _carve_validation(
    records: list[ImageRecord], fraction: float, rng: np.random.Generator, digests: dict[str, str], seed: int
) -> tuple[list[ImageRecord], str]:
    """Fold the official val images into train, then carve a stratified ``fraction`` as validation."""
    official_val = sum(r.split == "val" for r in records)
    records = [replace(r, split="train") if r.split == "val" else r for r in records]
    val_paths = _stratified_pick([r for r in records if r.split == "train"], fraction, rng, digests)
    records = [replace(r, split="val") if r.path in val_paths else r for r in records]
    folded = f"; the official val images ({official_val}) joined the pool first" if official_val else ""
    note = f"validation: {fraction:.0%} of train carved, stratified per class, whole patients, seed {seed}{folded}"
    return records, note


def _subset_per_class(
    records: list[ImageRecord], labels: tuple[Label, ...], limit: int, rng: np.random.Generator
) -> list[ImageRecord]:
    """At most ``limit`` seeded-random records per split and class, in path order within each."""
    kept: list[ImageRecord] = []
    for split in SPLITS:
        for label in labels:
            members = sorted((r for r in records if r.split == split and r.label == label), key=lambda r: r.path)
            order = sorted(rng.permutation(len(members))[:limit])
            kept.extend(members[i] for i in order)
    return kept


def describe_counts(dataset: Dataset) -> str:
    """One line per split: ``train: 1072 (normal 268, bacterial 506, viral 298)``; multi-label: images per finding."""
    lines = []
    for split, per_class in dataset.counts().items():
        detail = ", ".join(f"{label} {n}" for label, n in per_class.items())
        if dataset.multi_label:
            detail += f", {NO_FINDING} {sum(r.label.is_no_finding for r in dataset.split(split))}"
        lines.append(f"{split}: {len(dataset.split(split))} ({detail})")
    return "\n".join(lines)


def class_balance(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Keras ``class_weight`` that makes every class weigh the same in the loss."""
    counts = Counter(labels.tolist())
    total = len(labels)
    return {c: total / (n_classes * counts[c]) for c in range(n_classes) if counts[c]}
