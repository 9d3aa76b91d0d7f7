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


SEAL = "sealed_sha256"


class DamagedFileError(ValueError):
    """A sealed record, or a file it names, is not what was written: its one-line message says which and why."""


def _seal_of(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode("utf-8")).hexdigest()


def atomic_write_sealed_json(path: str | Path, payload: dict, files: tuple[str, ...] = (), **dump_options) -> None:
    """``atomic_write_json`` of ``payload`` plus its own SHA-256 and that of each of ``files`` (names beside
    ``path``), so that ``read_sealed_json`` notices any changed byte in the record or in what it describes."""
    folder = Path(path).parent
    values = {**payload, "file_sha256": {name: sha256_file(folder / name) for name in files}}
    values = json.loads(json.dumps(values, **dump_options))  # the values as they will read back (floats, lists)
    atomic_write_json(path, {**values, SEAL: _seal_of(values)})


def read_sealed_json(path: str | Path, allow_unsealed: bool = False) -> dict:
    """The record ``atomic_write_sealed_json`` wrote (without its seals), after checking it and its files.

    Raises ``FileNotFoundError`` when there is none, ``DamagedFileError`` (one line) when it or one of its files
    changed since it was written, or when it has no seal (written by a version before seals) unless
    ``allow_unsealed`` (where what it describes is checked otherwise): such a record is returned as it is.
    """
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise DamagedFileError(f"{path} is damaged ({type(error).__name__}: {error})") from None
    if allow_unsealed and isinstance(values, dict) and SEAL not in values and "file_sha256" not in values:
        return values
    if not isinstance(values, dict) or SEAL not in values:
        raise DamagedFileError(f"{path} has no checksum (damaged, or written by an older version)")
    if values.pop(SEAL) != _seal_of(values):
        raise DamagedFileError(f"{path} is damaged (its contents do not match their checksum)")
    for name, digest in values.pop("file_sha256", {}).items():
        try:
            found = sha256_file(path.parent / name)
        except OSError as error:
            raise DamagedFileError(f"{path.parent / name} is unreadable ({error.strerror or error})") from None
        if found != digest:
            raise DamagedFileError(f"{path.parent / name} is damaged (its SHA-256 differs from the one recorded)")
    return values


CHECKSUMS = "SHA256SUMS"


def _checksummed_files(folder: Path, subfolders: tuple[str, ...]) -> list[Path]:
    files = [path for path in folder.iterdir() if path.is_file()]
    files += [path for name in subfolders for path in (folder / name).rglob("*") if path.is_file()]
    return sorted(path for path in files if path.name != CHECKSUMS
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))  # fmt: skip


def write_checksums(folder: str | Path, subfolders: tuple[str, ...] = ()) -> Path:
    """``folder/SHA256SUMS``: the SHA-256 of every file in ``folder`` and under its ``subfolders`` (hidden ones
    aside), in ``sha256sum``'s format: ``sha256sum -c SHA256SUMS`` checks a copy by hand, ``check_checksums``
    before use. Other subfolders (a ``predict`` output the user put there) are not the writer's, so not listed."""
    folder = Path(folder)
    lines = [f"{sha256_file(path)}  {path.relative_to(folder).as_posix()}"
             for path in _checksummed_files(folder, subfolders)]  # fmt: skip
    atomic_write_text(folder / CHECKSUMS, "".join(line + "\n" for line in lines))
    return folder / CHECKSUMS


def check_checksums(folder: str | Path, names: list[str] | None = None) -> bool:
    """Check ``names`` (relative paths; every listed file when None) against ``folder/SHA256SUMS``.

    Returns False when the folder has no ``SHA256SUMS`` (written by an older version, or a run that has not
    finished). Raises ``DamagedFileError`` naming the first file that is missing or differs.
    """
    folder = Path(folder)
    try:
        text = (folder / CHECKSUMS).read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as error:
        raise DamagedFileError(f"{folder / CHECKSUMS} is unreadable ({error})") from None
    pairs = (line.split("  ", 1) for line in text.splitlines() if "  " in line)
    recorded = {name: digest for digest, name in pairs}
    for name in recorded if names is None else names:
        if name not in recorded:
            raise DamagedFileError(f"{folder / name} is not listed in {folder / CHECKSUMS} (one of them is damaged)")
        try:
            found = sha256_file(folder / name)
        except OSError as error:
            raise DamagedFileError(f"{folder / name} is unreadable ({error.strerror or error})") from None
        if found != recorded[name]:
            raise DamagedFileError(f"{folder / name} does not match its SHA-256 in {folder / CHECKSUMS}: one of "
                                   "the two was changed or damaged since the run wrote them")  # fmt: skip
    return True


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
