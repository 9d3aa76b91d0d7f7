"""Keeps extracted feature arrays on disk, so a rerun reads them instead of extracting again.

Keys name everything that changes an array, a manifest is checked on every read, and a lock keeps two runs
from writing one folder at once; another, per entry, keeps two writers (worker processes, on one machine or
several sharing the cache folder) from building one entry at once.

An entry is a folder ``CACHE/<backbone>/<key>/`` holding ``features.npy``
(float32, memory-mappable) and ``manifest.json``. The manifest is written last
and carries the array's shape and SHA-256, and is sealed with its own: an entry
without a manifest is unfinished (built again), one whose manifest or array does
not match is damaged (reported in one line, then built again), never trusted.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from common.files import DamagedFileError, atomic_output, atomic_write_sealed_json, read_sealed_json, sha256_file

MANIFEST = "manifest.json"
FEATURES = "features.npy"


def warn_damaged(damage: str, action: str) -> None:
    """Say in one line that a cached file is damaged (``damage`` names it and why) and what is done instead
    (``action``: it is rebuilt, never used)."""
    print(f"warning: {damage}; {action}", flush=True)


def write_manifest(path: Path, manifest: dict) -> None:
    """Write a cache entry's ``manifest`` (last, atomically), sealed with its own SHA-256."""
    atomic_write_sealed_json(path, manifest)


def read_manifest(path: Path) -> dict:
    """A cache entry's manifest, checked against its seal.

    Raises ``FileNotFoundError`` when there is none (the entry is unfinished) and ``DamagedFileError`` (one
    line) when it is not what was written. A manifest from before manifests were sealed (no seal, no file list)
    is returned as it is: the array it describes is still checked against its SHA-256.
    """
    return read_sealed_json(path, allow_unsealed=True)


def entry_damage(folder: Path, array: str, shape: tuple[int, ...] | None = None) -> str | None:
    """What is wrong with the cache entry ``folder`` (its manifest, or its ``array`` against it), in words, or None.

    Raises ``FileNotFoundError`` when the entry is absent or unfinished (its manifest is written last).
    """
    try:
        return array_damage(folder / array, read_manifest(folder / MANIFEST), shape)
    except DamagedFileError as error:
        return str(error)


def array_damage(path: Path, manifest: dict, shape: tuple[int, ...] | None = None) -> str | None:
    """What is wrong with the ``.npy`` at ``path`` against its ``manifest`` (and the ``shape`` its key implies),
    in words, or None when it matches."""
    try:
        named, recorded = list(manifest["shape"]), manifest["sha256"]
    except (KeyError, TypeError) as error:
        return f"{path.parent / MANIFEST} is damaged ({type(error).__name__}: {error})"
    if shape is not None and named != list(shape):
        return f"{path.parent / MANIFEST} is damaged (it names shape {named}, not {list(shape)})"
    try:
        if sha256_file(path) != recorded:
            return f"{path} is damaged (its SHA-256 differs from the one in its manifest)"
        found = list(np.load(path, mmap_mode="r", allow_pickle=False).shape)
    except FileNotFoundError:
        return f"{path} is missing though its manifest is there"
    except (OSError, ValueError) as error:
        return f"{path} is damaged ({type(error).__name__}: {error})"
    return None if found == named else f"{path} is damaged (shape {found}, its manifest says {named})"


def cache_key(parts: dict) -> str:
    """A short stable hash of ``parts`` (a JSON-serialisable dict)."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def file_list_fingerprint(root: Path, relative_paths: Iterable[str]) -> str:
    """Hash of the ordered file list with each file's size and modification time.

    Any added, removed, reordered, resized or touched image changes it.
    """
    digest = hashlib.sha256()
    for relative in relative_paths:
        stat = (root / relative).stat()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def content_fingerprint(relative_paths: Iterable[str], digests: dict[str, str]) -> str:
    """Hash of the ordered file list with the SHA-256 of each file's bytes (``digests``, by path, as the image check
    recorded them): an image whose bytes changed changes it, whatever its size and modification time."""
    digest = hashlib.sha256()
    for relative in relative_paths:
        digest.update(f"{relative}\0{digests.get(relative, '')}\n".encode())
    return digest.hexdigest()


def drop_entries_holding(cache_dir: Path, root: Path, changed: Iterable[str]) -> list[Path]:
    """Remove every feature and pixel cache entry under ``cache_dir`` made from the images ``changed`` (paths under
    ``root``) as they are now stamped (size and modification time); return the entry folders removed.

    For an image whose bytes changed under an unchanged size and modification time: the keys of such entries
    still match, so they would be read again. The manifest goes first, so a removal cut short leaves an unfinished
    entry (built again), never a damaged one.
    """
    changed = set(changed)
    dropped = []
    for manifest_path in sorted(Path(cache_dir).rglob(MANIFEST)):
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            paths = manifest["paths"]
            if changed.isdisjoint(paths) or manifest["files"] != file_list_fingerprint(root, paths):
                continue
        except (OSError, ValueError, KeyError, TypeError):  # not an entry of these images (or damaged: checked on use)
            continue
        manifest_path.unlink()
        shutil.rmtree(manifest_path.parent, ignore_errors=True)
        dropped.append(manifest_path.parent)
    return dropped


def npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"{path}: .npy format version {version} is not supported")
        readers[version](fh)
        return fh.tell()


def _write_at(fd: int, data: np.ndarray, position: int) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    written = 0
    while written < len(view):
        written += os.pwrite(fd, view[written:], position + written)


def atomic_save_rows(path: Path, shape: tuple[int, ...], dtype: str, chunks: Iterable[np.ndarray]) -> None:
    """Write a ``.npy`` of ``shape`` from consecutive chunks of rows, atomically.

    Only one chunk is in memory at a time and nothing is memory-mapped, so
    resident memory does not grow with the array. Readers see the old file or
    the whole new one; fewer or more rows than ``shape[0]`` is an error.
    """
    row_bytes = np.dtype(dtype).itemsize * math.prod(shape[1:])
    with atomic_output(path, "wb") as fh:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(fh, header)
        position = fh.tell()
        # Sized up front (sparse); the rows go in with pwrite.
        fh.truncate(position + row_bytes * shape[0])
        fh.flush()
        rows = 0
        for chunk in chunks:
            chunk = np.asarray(chunk, dtype=dtype)
            if chunk.shape[1:] != tuple(shape[1:]) or rows + len(chunk) > shape[0]:
                raise ValueError(f"chunk of shape {chunk.shape} does not fit rows {rows}... of {shape}")
            _write_at(fh.fileno(), chunk, position + rows * row_bytes)
            rows += len(chunk)
        if rows != shape[0]:
            raise ValueError(f"got {rows} rows for an array of shape {shape}")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temp file beside ``path``, then rename it into place."""
    array = np.asarray(array)
    atomic_save_rows(path, array.shape, array.dtype.str, [array])


class FeatureCache:
    """Feature arrays on disk under ``root``, one folder per key."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, backbone: str, key: str) -> Path:
        """The folder of one cache entry."""
        return self.root / backbone / key

    def load(self, backbone: str, key: str, report: bool = False) -> np.ndarray | None:
        """The cached array, memory-mapped, or None if absent, unfinished or not to be trusted.

        With ``report``, a damaged entry (its manifest, or an array that does not match it) is said in one line:
        the caller builds it again.
        """
        folder = self.entry(backbone, key)
        try:
            damage = entry_damage(folder, FEATURES)
        except FileNotFoundError:
            return None  # not there, or a build not finished
        if damage is not None:
            if report:
                warn_damaged(damage, "its features are extracted again (rebuilt)")
            return None
        return np.load(folder / FEATURES, mmap_mode="r", allow_pickle=False)

    def save(self, backbone: str, key: str, array: np.ndarray, info: dict) -> np.ndarray:
        """Store ``array`` with ``info`` in its manifest; return it memory-mapped."""
        return self.save_rows(backbone, key, np.shape(array), [array], info)

    def save_rows(
        self, backbone: str, key: str, shape: tuple[int, ...], chunks: Iterable[np.ndarray], info: dict
    ) -> np.ndarray:
        """Store the float32 array of ``shape`` given as consecutive row chunks; return it memory-mapped."""
        folder = self.entry(backbone, key)
        features_path = folder / FEATURES
        atomic_save_rows(features_path, tuple(shape), "float32", chunks)
        manifest = dict(info, key=key, shape=list(shape), dtype="float32", sha256=sha256_file(features_path))
        write_manifest(folder / MANIFEST, manifest)
        return np.load(features_path, mmap_mode="r", allow_pickle=False)


class FolderInUseError(RuntimeError):
    """Another live run holds the lock on a folder this run would write."""


@contextmanager
def folder_lock(folder: Path, purpose: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for this process, or fail at once naming the process that holds it.

    The lock is an ``flock`` on ``folder/.cxr-bench.lock``: the kernel releases
    it when the holder exits, even by ``kill -9``, so a stale lock never
    blocks a rerun. The file records the holder's process id for the message.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".cxr-bench.lock"
    fh = open(path, "a+", encoding="utf-8")  # held open for as long as the lock
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise FolderInUseError(
                f"{folder} ({purpose}) is in use by another cxr-bench run ({holder}); wait for it to finish, "
                "or give this run its own --results-dir and --cache-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"process {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


# What flock raises where a filesystem keeps no locks (Lustre mounted without -o flock, some NFS set-ups).
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@contextmanager
def entry_lock(folder: Path) -> Iterator[bool]:
    """Wait for, then hold, an exclusive lock on the cache entry ``folder``; yield whether it is held.

    For writers of one entry who may run at once: two extraction tasks of the
    same key on two workers, or two backbones of one image size filling the
    same pixel cache entry. The second waits, then finds the entry whole. The
    lock is an ``flock`` on ``folder/.cxr-bench.lock``, which NFS (v4, or v3
    with lockd) and GPFS carry across machines and the kernel (or the NFS
    server's lease) releases when its holder dies. Where the filesystem keeps
    no locks this yields False: every file is still written whole and renamed
    into place, so two writers cost twice the work, never a damaged entry.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".cxr-bench.lock", "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in _NO_LOCKS:
                raise
            yield False
            return
        yield True  # closing the file releases the lock
