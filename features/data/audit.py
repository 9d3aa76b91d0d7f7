"""Check every image before any extraction: readable, big enough, and where else it appears.

``audit_images`` decodes each file once (at a small scale, but reading every
byte), records its size and the SHA-256 of its bytes, and moves every file
that cannot be used into ``Dataset.skipped`` with its reason. The results are
remembered per file (size and modification time) under the cache folder, so a
rerun audits only new or changed files.

``find_leakage`` then uses the content hashes: the same bytes in two splits
(a test image that is also a training image) or under two labels.
``check_classes`` stops the run, before any extraction, when a class has no
usable image left in some split.

As a command, it checks a dataset folder without extracting anything::

    python -m features.data.audit DIR [--labels FILE.csv [--path-column NAME] [--label-column NAME]
        [--patient-column NAME] [--split-column NAME]] [--min-side PX] [--cache-dir DIR]
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

from common.files import atomic_write_text
from features.cache import cache_key
from features.data.dataset import SPLITS, Dataset, describe_counts, make_splits
from features.data.images import UnreadableImageError, inspect_image
from features.data.labels import add_label_options, label_settings, load_dataset

# Bump when what the audit records, or how it decides, changes.
AUDIT_VERSION = "audit-v1"
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
        return {"sha256": digest, "width": 0, "height": 0, "error": error.reason}
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


def _load_memo(path: Path) -> dict:
    # A damaged or foreign memo is ignored (and rewritten): it only saves time.
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
        return memo["files"] if memo.get("version") == AUDIT_VERSION and isinstance(memo["files"], dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def audit_images(
    dataset: Dataset,
    *,
    min_side: int,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
) -> Dataset:
    """Return ``dataset`` with only usable images, their content hashes in ``digests``.

    A file is left out, and listed in ``skipped`` with its reason, when it is
    empty, not an image, truncated or broken, or when its shorter side is below
    ``min_side`` pixels (the smallest input the chosen backbones accept).
    """
    root = Path(dataset.root)
    memo_file = _memo_path(Path(cache_dir), root) if cache_dir is not None else None
    memo = _load_memo(memo_file) if memo_file is not None else {}
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
                results[path] = dict(checked, stamp=todo[path])
                bar.update()
        if memo_file is not None:
            memo.update(results)
            atomic_write_text(memo_file, json.dumps({"version": AUDIT_VERSION, "files": memo}))
    kept, skipped = [], list(dataset.skipped)
    for record in dataset.records:
        result = results[record.path]
        reason = _why_left_out(result, min_side)
        if reason:
            skipped.append((record.path, reason))
        else:
            kept.append(record)
    digests = {record.path: results[record.path]["sha256"] for record in kept}
    return replace(dataset, records=kept, skipped=skipped, digests=digests)


def find_leakage(dataset: Dataset) -> list[dict]:
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
    rows: list[dict] = []
    group = 0
    for digest, members in sorted(by_digest.items(), key=lambda item: min(r.path for r in item[1])):
        splits = sorted({r.split for r in members}, key=SPLITS.index)
        labels = sorted({r.label for r in members})
        problems = []
        if len(splits) > 1:
            problems.append(f"same image in {' and '.join(splits)}")
        if len(labels) > 1:
            problems.append(f"same image labelled {' and '.join(labels)}")
        if problems:
            group += 1
            for record in sorted(members, key=lambda r: (SPLITS.index(r.split), r.path)):
                rows.append(
                    {"group": group, "sha256": digest, "split": record.split, "label": record.label,
                     "path": record.path, "problem": "; ".join(problems)}
                )  # fmt: skip
    return rows


def flag_leakage(dataset: Dataset, policy: str = "warn") -> Dataset:
    """Find leakage (``find_leakage``) and apply ``policy``; the rows land in ``dataset.leakage``.

    ``warn`` keeps every image; ``drop`` removes the train and val copies of
    every image that is also in test, so the test split stays as published;
    ``fail`` raises ``DatasetError``.
    """
    if policy not in LEAKAGE_POLICIES:
        raise ValueError(f"leakage policy must be one of {', '.join(LEAKAGE_POLICIES)}, not {policy!r}")
    rows = find_leakage(dataset)
    if rows and policy == "fail":
        groups = len({row["group"] for row in rows})
        raise DatasetError(
            f"{groups} image(s) appear in more than one split or under more than one label "
            f"(same bytes), for example {rows[0]['path']} and {rows[1]['path']}; see leakage.csv. "
            "Remove the copies, or pass --leakage drop (drops the train/val copies) or --leakage warn."
        )
    if rows and policy == "drop":
        in_test = {row["sha256"] for row in rows if row["split"] == "test"}
        drop = {row["path"] for row in rows if row["split"] != "test" and row["sha256"] in in_test}
        dataset = replace(
            dataset,
            records=[record for record in dataset.records if record.path not in drop],
            skipped=dataset.skipped + [(path, "same image as a test image (--leakage drop)") for path in sorted(drop)],
        )
    return replace(dataset, leakage=rows)


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
        {"sha256": digest, "path": record.path, "internal_split": internal[digest].split,
         "internal_path": internal[digest].path}
        for record in external.records
        if (digest := external.digests.get(record.path)) in internal
    ]  # fmt: skip
    if rows and policy == "fail":
        raise DatasetError(
            f"{len(rows)} external test image(s) are also in the internal data (same bytes), for example "
            f"{rows[0]['path']} = {rows[0]['internal_path']} ({rows[0]['internal_split']}); see external_leakage.csv. "
            "Remove them, or pass --leakage drop (leaves them out of the external test) or --leakage warn."
        )
    if rows and policy == "drop":
        copies = {row["path"]: row for row in rows}
        return replace(
            external, leakage=rows, records=[r for r in external.records if r.path not in copies],
            skipped=external.skipped + [(path, f"same image as {row['internal_path']} of the internal data "
                                         f"({row['internal_split']}; --leakage drop)") for path, row in copies.items()],
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
    skipped_reasons = Counter(reason for _, reason in dataset.skipped)
    lines = [f"class {label!r} has no usable image in {split}" for split, label in empty]
    table = "; ".join(
        f"{label}: " + ", ".join(f"{split} {counts[split][label]}" for split in SPLITS) for label in dataset.classes
    )
    reasons = ", ".join(f"{n}x {reason}" for reason, n in skipped_reasons.most_common(3))
    raise DatasetError(
        "; ".join(lines)
        + f". Usable images per class: {table}. "
        + (f"{len(dataset.skipped)} files were left out (most common: {reasons}). " if dataset.skipped else "")
        + (f"Check the class folders under {dataset.root} (an empty folder, or only unreadable images), "
           if dataset.layout != "csv" else "Check that class's rows in the labels CSV (skipped.csv says why rows "
           "were left out), ")
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
    add_label_options(parser)
    args = parser.parse_args(argv)
    labels = label_settings(args)
    started = time.perf_counter()
    try:
        dataset = audit_images(load_dataset(args.data, labels), min_side=args.min_side, cache_dir=args.cache_dir)
        dataset = make_splits(dataset)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    rows = find_leakage(dataset)
    print(f"{dataset.root} ({dataset.layout}): {len(dataset.records)} usable images, checked in {seconds:.1f} s")
    print(describe_counts(dataset))
    for reason, n in Counter(reason for _, reason in dataset.skipped).most_common():
        print(f"left out: {n} x {reason}")
    print(f"leakage: {len({row['group'] for row in rows})} image(s) in two splits or under two labels")
    for row in rows:
        print(f"  {row['group']}: {row['split']} {row['label']} {row['path']} ({row['problem']})")
    try:
        check_classes(dataset)
    except DatasetError as error:
        print(f"a run would stop: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
