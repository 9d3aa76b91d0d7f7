"""File helpers that every package may import: atomic writes, folders built then renamed, file hashes.

Written once here so that every output of a run is made the same way: a
reader sees the old file or the whole new one, never half of it, and every
file and folder gets the mode any program's new files get (0666 or 0777 less
the umask), so a colleague on a shared machine can read a run's results.
This module imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _temp_file_beside(path: Path) -> Path:
    """An empty new file in ``path``'s folder with the usual permissions (``mkstemp`` makes it 0600).

    Named ``.NAME.XXXX.tmpSUFFIX``: hidden, recognisable as ``path``'s
    (``remove_stale_temps``), and with ``path``'s suffixes for libraries that
    choose a format by the name (Keras' ``.keras``, ``.weights.h5``).
    """
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{_suffixes(path)}", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~current_umask())
    return Path(name)


def _suffixes(path: Path) -> str:
    return "".join(path.suffixes)  # all of them: Keras wants ".weights.h5", not only ".h5"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` to write by name; on success it is renamed onto ``path``.

    For writers that take a file name rather than a file object (``model.save``).
    On any error the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_file_beside(path)
    try:
        yield temp
        os.chmod(temp, 0o666 & ~current_umask())  # the writer may have made a new file
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


@contextmanager
def atomic_output(
    path: str | Path, mode: str = "wb", encoding: str | None = None, newline: str | None = None
) -> Iterator[IO]:
    """Open a temp file beside ``path`` for writing; on success it is synced and renamed onto ``path``.

    On any error (a full disk included) the temp file is removed and ``path``
    is left as it was.
    """
    with atomic_path(path) as temp, open(temp, mode, encoding=encoding, newline=newline) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | Path, payload: object, **dump_options) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (``dump_options`` go to ``json.dumps``)."""
    atomic_write_text(path, json.dumps(payload, indent=2, **dump_options) + "\n")


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``target``; on success it replaces ``target`` in one rename.

    A half-built folder never stands at ``target``: an interrupted build leaves
    the previous ``target`` (or nothing) and no temp folder. An existing
    ``target`` is moved aside first and restored if the rename fails.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield temp
        os.chmod(temp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        _swap_into_place(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _swap_into_place(temp: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(temp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(temp, target)
    except BaseException:
        os.replace(old, target)  # keep the previous folder rather than nothing
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temps(path: str | Path) -> int:
    """Delete what ``atomic_output`` or ``atomic_folder`` left for ``path`` in a process that was killed.

    Such leftovers can be as large as the file or folder itself; no live
    writer is disturbed as long as the caller holds the folder's lock. Returns
    how many were removed.
    """
    path = Path(path)
    stale = list(path.parent.glob(f".{path.name}.*.tmp{_suffixes(path)}"))
    for leftover in stale:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return len(stale)


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex."""
    return file_digest(path, "sha256")


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes with any ``hashlib`` algorithm, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()
