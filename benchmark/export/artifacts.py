"""An exported artifact's files, digest and size: a file, or a folder (SavedModel), or OpenVINO's ``.xml`` and
``.bin`` pair."""

from __future__ import annotations

import hashlib
from pathlib import Path

from common.files import sha256_file


def artifact_files(path: Path) -> list[Path]:
    """The files of an exported artifact: ``path`` itself, or a folder's files (recursively, sorted); OpenVINO's
    ``model.xml`` brings its ``model.bin``."""
    path = Path(path)
    if path.is_dir():
        return sorted(one for one in path.rglob("*") if one.is_file())
    if path.suffix == ".xml":
        return [path, path.with_suffix(".bin")]
    return [path]


def artifact_sha256(path: Path) -> str:
    """The SHA-256 of an exported artifact: of the file's bytes; of several files (a folder, or OpenVINO's pair),
    of the lines ``SHA-256  name`` listing each, as ``sha256sum`` writes them, names relative to the first's
    folder."""
    files = artifact_files(path)
    if len(files) == 1 and files[0] == Path(path):
        return sha256_file(files[0])
    base = Path(path) if Path(path).is_dir() else Path(path).parent
    listing = "".join(f"{sha256_file(one)}  {one.relative_to(base).as_posix()}\n" for one in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def artifact_bytes(path: Path) -> int:
    """The size of an exported artifact: its files' sizes added up."""
    return sum(one.stat().st_size for one in artifact_files(path))
