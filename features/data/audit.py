"""Check every image before any extraction: readable, big enough, and where else it appears.

``audit_images`` decodes each file once (at a small scale, but reading every
byte), records its size and the SHA-256 of its bytes, and moves every file
that cannot be used into ``Dataset.skipped`` with its reason. The results are
remembered per file (size and modification time) under the cache folder, each
sealed with its own SHA-256 (a damaged one is said in one line and the file
checked again), so a rerun audits only new or changed files. ``rehash`` (the
command's ``--rehash``) reads every file again and compares its bytes with what
was remembered: an image replaced under an unchanged size and modification time
is reported, checked again, and the cached features and pixels made from it are
dropped (the feature cache keys hold each image's remembered SHA-256, so its
features are then extracted again, and its heads trained again).

``find_leakage`` then uses the content hashes: the same bytes in two splits
(a test image that is also a training image) or under two labels.
``check_classes`` stops the run, before any extraction, when a class has no
usable image left in some split.

As a command, it checks a dataset folder without extracting anything::

    python -m features.data.audit DIR [--labels FILE.csv [--path-column NAME] [--label-column NAME]
        [--patient-column NAME] [--split-column NAME]] [--min-side PX] [--cache-dir DIR [--rehash]]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from common.files import atomic_write_text, sha256_file
from features.cache import FolderInUseError, cache_key, drop_entries_holding, folder_lock, warn_damaged
from features.data.dataset import SPLITS, Dataset, LeakageRow, describe_counts, make_splits
from features.data.images import UnreadableImageError, inspect_image
from features.data.labels import add_label_options, label_settings, load_dataset
from features.data.records import Skip

# Bump when what the audit records, or how it decides, changes. v3: DICOM files are read (v2 called a DICOM
# named .jpeg unreadable).
AUDIT_VERSION = "audit-v3"
# Memos of these versions are left quietly (their entries carry no seal): everything is checked again.
OLDER_VERSIONS = ("audit-v1", "audit-v2")
LEAKAGE_POLICIES = ("warn", "drop", "fail")


class DatasetError(ValueError):
    """The data cannot give a meaningful run (a class without usable images, leakage with ``fail``)."""


def _check_file(path: Path) -> dict:
    """Size, content hash and decode result of one file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return {"sha256": "", "width": 0, "height": 0, "error": f"cannot be read: {error.strerror or error}"}
    digest = hashlib.sha256(data).hexdigest()
    try:
        width, height = inspect_image(data, path.name)
    except UnreadableImageError as error:
        # A file that may read once something is installed (pydicom, a DICOM plugin) is checked again next time.
        recheck = {"recheck": True} if error.recheck else {}
        return {"sha256": digest, "width": 0, "height": 0, "error": error.reason, **recheck}
    return {"sha256": digest, "width": width, "height": height, "error": ""}


def _why_left_out(checked: dict, min_side: int) -> str | None:
    """Why a checked file is not used (unreadable, or smaller than ``min_side``), or None."""
    if checked["error"]:
        return checked["error"]
    if min(checked["width"], checked["height"]) < min_side:
        return (f"too small: {checked['width']}x{checked['height']} px, below the {min_side} px minimum input "
                "of the chosen backbones (--min-image-side)")  # fmt: skip
    return None


def image_problem(path: Path, min_side: int) -> str | None:
    """The check a run applies to each image, for one file: why it would be left out, or None."""
    return _why_left_out(_check_file(Path(path)), min_side)


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _memo_path(cache_dir: Path, root: Path) -> Path:
    return cache_dir / "audit" / f"{cache_key({'root': str(root.resolve())})}.json"


def _seal(path: str, entry: dict) -> str:
    """The SHA-256 of one remembered check: its file's path and values (``seal`` aside)."""
    values = {name: value for name, value in entry.items() if name != "seal"}
    return hashlib.sha256(json.dumps([path, values], sort_keys=True).encode()).hexdigest()


def _load_memo(path: Path) -> tuple[dict, bool]:
    """The remembered checks of ``path`` that match their seals, and whether anything in it was damaged.

    A damaged memo, or entry, is said in one line and not trusted: those files are checked again and the memo
    rewritten. A memo of an older version is left quietly (everything is checked again).
    """
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, False
    except (OSError, ValueError) as error:
        return _damaged_memo(f"{path} is damaged ({type(error).__name__}: {error})"), True
    if isinstance(memo, dict) and memo.get("version") in OLDER_VERSIONS:
        return {}, False
    if not isinstance(memo, dict) or memo.get("version") != AUDIT_VERSION or not isinstance(memo.get("files"), dict):
        return _damaged_memo(f"{path} is damaged (not an image check memo of {AUDIT_VERSION})"), True
    files = memo["files"]
    good = {
        name: entry
        for name, entry in files.items()
        if isinstance(entry, dict) and entry.get("seal") == _seal(name, entry)
    }
    if len(good) < len(files):
        _damaged_memo(f"{path} is damaged ({len(files) - len(good)} remembered image check(s) do not match their "
                      "checksum)")  # fmt: skip
    return good, len(good) < len(files)


def _damaged_memo(damage: str) -> dict:
    warn_damaged(damage, "those images are checked again and the memo rebuilt")
    return {}


def _write_memo(path: Path, files: dict) -> None:
    atomic_write_text(path, json.dumps({"version": AUDIT_VERSION, "files": files}))


def rehash_images(
    dataset: Dataset, cache_dir: str | Path, *, workers: int = 2, progress: bool = True
) -> tuple[list[str], list[Path]]:
    """The images of ``dataset`` whose bytes differ from the SHA-256 the image check remembered for them though
    their size and modification time did not change, and the cache entries dropped for them.

    Every remembered file is read again. Each changed image's remembered check is dropped (the next check reads it
    anew) and so is every feature and pixel cache entry made from it (``drop_entries_holding``): their keys trust
    size and modification time, and would match.
    """
    root = Path(dataset.root)
    memo_file = _memo_path(Path(cache_dir), root)
    memo, damaged = _load_memo(memo_file)
    known = [
        r.path for r in dataset.records if r.path in memo and _stamp_or_none(root / r.path) == memo[r.path]["stamp"]
    ]
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(known), unit="img", desc="rehash images", disable=not progress) as bar,
    ):
        changed = []
        for path, digest in zip(known, pool.map(lambda p: _digest_or_none(root / p), known), strict=True):
            if digest is not None and digest != memo[path]["sha256"]:  # an unreadable file is the check's to report
                changed.append(path)
            bar.update()
    if changed or damaged:
        _write_memo(memo_file, {name: entry for name, entry in memo.items() if name not in changed})
    return changed, drop_entries_holding(Path(cache_dir), root, changed) if changed else []


def _rehash_and_say(dataset: Dataset, cache_dir: Path, workers: int, progress: bool) -> None:
    """``rehash_images`` for a run: one line where an image changed under an unchanged size and time."""
    changed, dropped = rehash_images(dataset, cache_dir, workers=workers, progress=progress)
    if changed:
        print(f"warning: {len(changed)} image(s) under {dataset.root} changed though their size and modification "
              f"time did not (--rehash), e.g. {changed[0]}; checked again, and the {len(dropped)} cached feature and "
              "pixel entries made from them dropped: their features are extracted again (rebuilt)")  # fmt: skip


def _stamp_or_none(path: Path) -> list[int] | None:
    try:
        return _stamp(path)
    except OSError:
        return None


def _digest_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def audit_images(
    dataset: Dataset,
    *,
    min_side: int,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
    rehash: bool = False,
) -> Dataset:
    """Return ``dataset`` with only usable images, their content hashes in ``digests``.

    A file is left out, and listed in ``skipped`` with its reason, when it is
    empty, not an image, truncated or broken, or when its shorter side is below
    ``min_side`` pixels (the smallest input the chosen backbones accept).
    With ``rehash`` every file is read again first (``rehash_images``): one
    changed under an unchanged size and modification time is said in one line
    and checked again, and the cache entries made from it dropped.
    """
    root = Path(dataset.root)
    memo_file = _memo_path(Path(cache_dir), root) if cache_dir is not None else None
    if rehash and memo_file is not None:
        _rehash_and_say(dataset, Path(cache_dir), workers, progress)
    memo, damaged = _load_memo(memo_file) if memo_file is not None else ({}, False)
    results: dict[str, dict] = {}
    todo: dict[str, list[int]] = {}  # path -> its stamp, taken once
    for record in dataset.records:
        stamp = _stamp(root / record.path)
        known = memo.get(record.path)
        if isinstance(known, dict) and known.get("stamp") == stamp:
            results[record.path] = known
        else:
            todo[record.path] = stamp
    if todo:
        with (
            ThreadPoolExecutor(max_workers=workers) as pool,
            tqdm(total=len(todo), unit="img", desc="check images", disable=not progress) as bar,
        ):
            for path, checked in zip(todo, pool.map(lambda p: _check_file(root / p), todo), strict=True):
                entry = dict(checked, stamp=todo[path])
                results[path] = dict(entry, seal=_seal(path, entry))
                bar.update()
    if memo_file is not None and (todo or damaged):
        _write_memo(memo_file, {name: entry for name, entry in {**memo, **results}.items() if not entry.get("recheck")})
    kept, skipped = [], list(dataset.skipped)
    for record in dataset.records:
        result = results[record.path]
        reason = _why_left_out(result, min_side)
        if reason:
            skipped.append(Skip(record.path, reason))
        else:
            kept.append(record)
    digests = {record.path: results[record.path]["sha256"] for record in kept}
    return replace(dataset, records=kept, skipped=skipped, digests=digests)


def find_leakage(dataset: Dataset) -> list[LeakageRow]:
    """Rows for every image whose bytes appear more than once across splits or labels.

    Each row: ``group`` (one per distinct content), ``sha256``, ``split``,
    ``label``, ``path`` and ``problem`` (which splits or labels the copies span).
    Copies inside one split with one label are harmless and not listed.
    """
    by_digest: dict[str, list] = defaultdict(list)
    for record in dataset.records:
        digest = dataset.digests.get(record.path)
        if digest:
            by_digest[digest].append(record)
    rows: list[LeakageRow] = []
    group = 0
    for digest, members in sorted(by_digest.items(), key=lambda item: min(r.path for r in item[1])):
        splits = sorted({r.split for r in members}, key=SPLITS.index)
        labels = sorted({r.label.text for r in members})
        problems = []
        if len(splits) > 1:
            problems.append(f"same image in {' and '.join(splits)}")
        if len(labels) > 1:
            problems.append(f"same image labelled {' and '.join(labels)}")
        if problems:
            group += 1
            for record in sorted(members, key=lambda r: (SPLITS.index(r.split), r.path)):
                rows.append(LeakageRow(digest, record.path, group, record.split, record.label.text,
                                       "; ".join(problems)))  # fmt: skip
    return rows


class LeakageError(DatasetError):
    """``--leakage fail`` found copies; ``rows`` are ``find_leakage``'s, for the caller to write down."""

    def __init__(self, message: str, rows: list[LeakageRow]):
        super().__init__(message)
        self.rows = rows


def flag_leakage(dataset: Dataset, policy: str = "warn") -> Dataset:
    """Find leakage (``find_leakage``) and apply ``policy``; the rows land in ``dataset.leakage``, each with its
    ``action`` (``kept`` or ``dropped``).

    ``warn`` keeps every image. ``drop`` removes the train and val copies of every image that is also in test, so
    the test split stays as published, and the train and val copies of every image found under two labels (which
    label is right cannot be told; keeping both teaches the head a contradiction). ``fail`` raises
    ``LeakageError``, which carries the rows.
    """
    if policy not in LEAKAGE_POLICIES:
        raise ValueError(f"leakage policy must be one of {', '.join(LEAKAGE_POLICIES)}, not {policy!r}")
    rows = find_leakage(dataset)
    if rows and policy == "fail":
        groups = len({row.group for row in rows})
        raise LeakageError(
            f"{groups} image(s) appear in more than one split or under more than one label "
            f"(same bytes), for example {rows[0].path} and {rows[1].path}. "
            "Remove the copies, or pass --leakage drop (drops the train/val copies) or --leakage warn.",
            rows,
        )
    drop: dict[str, str] = {}
    if policy == "drop":
        in_test = {row.sha256 for row in rows if row.split == "test"}
        labels: dict[str, set] = defaultdict(set)
        for row in rows:
            labels[row.sha256].add(row.label)
        for row in rows:
            if row.split == "test":
                continue
            if row.sha256 in in_test:
                drop[row.path] = "same image as a test image (--leakage drop)"
            elif len(labels[row.sha256]) > 1:
                drop[row.path] = (f"same image under two labels ({' and '.join(sorted(labels[row.sha256]))}; "
                                  "--leakage drop)")  # fmt: skip
    rows = [replace(row, action="dropped" if row.path in drop else "kept") for row in rows]
    return replace(dataset, records=[record for record in dataset.records if record.path not in drop],
                   skipped=dataset.skipped + [Skip(path, why) for path, why in sorted(drop.items())],
                   leakage=rows)  # fmt: skip


def external_overlap(dataset: Dataset, external: Dataset, policy: str = "warn") -> Dataset:
    """Images of the ``external`` test set that are also in the internal dataset (same bytes), under ``policy``.

    An external test is only external if its images are new: a copy of a training image there inflates it.
    The rows (``sha256``, ``path``, ``internal_split``, ``internal_path``) land in ``external.leakage``;
    ``warn`` keeps the copies, ``drop`` leaves them out (listed in ``skipped``), ``fail`` raises ``DatasetError``.
    """
    internal = {}
    for record in dataset.records:
        if record.path in dataset.digests:
            internal.setdefault(dataset.digests[record.path], record)
    rows = [
        LeakageRow(digest, record.path, internal_split=internal[digest].split, internal_path=internal[digest].path)
        for record in external.records
        if (digest := external.digests.get(record.path)) in internal
    ]
    if rows and policy == "fail":
        raise DatasetError(
            f"{len(rows)} external test image(s) are also in the internal data (same bytes), for example "
            f"{rows[0].path} = {rows[0].internal_path} ({rows[0].internal_split}); see external_leakage.csv. "
            "Remove them, or pass --leakage drop (leaves them out of the external test) or --leakage warn."
        )
    if rows and policy == "drop":
        copies = {row.path: row for row in rows}
        return replace(
            external, leakage=rows, records=[r for r in external.records if r.path not in copies],
            skipped=external.skipped + [Skip(path, f"same image as {row.internal_path} of the internal data "
                                             f"({row.internal_split}; --leakage drop)")
                                        for path, row in copies.items()],
        )  # fmt: skip
    return replace(external, leakage=rows)


def check_classes(dataset: Dataset) -> None:
    """Raise ``DatasetError`` for fewer than two classes, or a class with no usable image in train, val or test.

    The message gives the per-split counts and how many of that class's files
    were skipped, so the user sees whether the folder is empty or its images unreadable.
    """
    if len(dataset.classes) < 2:
        found = f"one class, {dataset.classes[0]!r}" if dataset.classes else "no class folder"
        raise DatasetError(
            f"{dataset.root} has {found}: a classifier needs at least two classes (for example NORMAL and "
            "PNEUMONIA folders in each split)"
        )
    counts = dataset.counts()
    empty = [(split, label) for split in SPLITS for label in dataset.classes if counts[split][label] == 0]
    if not empty:
        return
    skipped_reasons = Counter(skip.kind for skip in dataset.skipped)
    lines = [f"class {label!r} has no usable image in {split}" for split, label in empty]
    table = "; ".join(
        f"{label}: " + ", ".join(f"{split} {counts[split][label]}" for split in SPLITS) for label in dataset.classes
    )
    reasons = ", ".join(f"{n}x {reason}" for reason, n in skipped_reasons.most_common(3))
    raise DatasetError(
        "; ".join(lines)
        + f". Usable images per class: {table}. "
        + (f"{len(dataset.skipped)} files were left out (most common: {reasons}). " if dataset.skipped else "")
        + (
            f"Check the class folders under {dataset.root} (an empty folder, or only unreadable images), "
            if dataset.layout != "csv"
            else "Check that class's rows in the labels CSV (skipped.csv says why rows were left out), "
        )
        + "or remove the class."
    )


def main(argv: list[str] | None = None) -> int:
    """Check a dataset folder: counts, files left out and why, leakage; exit 1 if a run would stop."""
    parser = argparse.ArgumentParser(prog="python -m features.data.audit", description=main.__doc__)
    parser.add_argument("data", metavar="DIR", help="dataset folder, Kermany or class-folder layout")
    parser.add_argument(
        "--min-side",
        type=int,
        default=75,
        metavar="PX",
        help="shorter side below which an image is left out (default: 75, InceptionV3's minimum)",
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="remember results here, as run_benchmark.py does")
    parser.add_argument(
        "--rehash",
        action="store_true",
        help="read every image again and compare its bytes with what --cache-dir remembered: list the images "
        "changed under an unchanged size and modification time, and drop their cached checks, features and pixels",
    )
    add_label_options(parser)
    args = parser.parse_args(argv)
    if args.rehash and args.cache_dir is None:
        parser.error("--rehash compares with what a run remembered: give its --cache-dir (a run's default is "
                     ".cache/features)")  # fmt: skip
    labels = label_settings(args)
    started = time.perf_counter()
    try:
        dataset = load_dataset(args.data, labels)
        if args.rehash:
            _report_rehash(dataset, Path(args.cache_dir))
        dataset = audit_images(dataset, min_side=args.min_side, cache_dir=args.cache_dir)
        dataset = make_splits(dataset)
    except (ValueError, OSError, FolderInUseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    rows = find_leakage(dataset)
    print(f"{dataset.root} ({dataset.layout}): {len(dataset.records)} usable images, checked in {seconds:.1f} s")
    print(describe_counts(dataset))
    for reason, n in Counter(skip.kind for skip in dataset.skipped).most_common():
        print(f"left out: {n} x {reason}")
    print(f"leakage: {len({row.group for row in rows})} image(s) in two splits or under two labels")
    for row in rows:
        print(f"  {row.group}: {row.split} {row.label} {row.path} ({row.problem})")
    try:
        check_classes(dataset)
    except DatasetError as error:
        print(f"a run would stop: {error}", file=sys.stderr)
        return 1
    return 0


def _report_rehash(dataset: Dataset, cache_dir: Path) -> None:
    """``rehash_images`` under the cache folder's lock (no run may read an entry while it goes), said in lines."""
    with folder_lock(cache_dir, "--cache-dir"):
        changed, dropped = rehash_images(dataset, cache_dir)
    if not changed:
        print(f"--rehash: every image's bytes match what {cache_dir} remembered for its size and modification time")
        return
    print(f"--rehash: {len(changed)} image(s) changed though their size and modification time did not:")
    for path in changed:
        print(f"  {path}")
    print(f"--rehash: dropped their remembered checks and the {len(dropped)} cached feature and pixel entries made "
          "from them; the next run checks them again and extracts their features again")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
