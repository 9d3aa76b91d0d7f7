"""Caches decoded images once per image size, so every backbone of that size reads them instead of decoding.

Six backbones at two sizes would otherwise decode and resize every image
twelve times. A pixel cache entry is ``CACHE/pixels/<size>px/<key>/pixels.npy``,
a ``(n, size, size, 3)`` uint8 array, with a manifest written last holding its
shape and SHA-256, sealed with its own (as in the feature cache): a damaged
entry is reported in one line and rebuilt, never read. It is read and written
with positioned file I/O, batch by batch, never memory-mapped as a whole, so
resident memory stays one batch whatever the size of the data set.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from common.files import remove_stale_temps, sha256_file
from features.cache import (
    MANIFEST,
    atomic_save_rows,
    cache_key,
    entry_damage,
    entry_lock,
    file_list_fingerprint,
    npy_data_offset,
    warn_damaged,
    write_manifest,
)
from features.data.dicom import dicom_identity
from features.data.images import DECODE_VERSION, load_image
from features.settings import DicomSettings

PIXELS = "pixels.npy"


def pixel_key_parts(
    image_size: int, root: Path, paths: list[str], fingerprint: str | None = None, dicom: DicomSettings | None = None
) -> dict:
    """Everything that changes the decoded pixels; ``fingerprint`` is ``file_list_fingerprint(root, paths)``
    when the caller already has it (it stats every file); ``dicom`` how DICOM files are windowed (default:
    ``DicomSettings()``)."""
    return {
        "image_size": image_size,
        "decode": DECODE_VERSION,
        "dicom": dicom_identity(dicom or DicomSettings()),
        "files": fingerprint or file_list_fingerprint(root, paths),
        "n_images": len(paths),
    }


@dataclass
class PixelReader:
    """Batches of rows from a pixel cache entry, read into one reusable buffer."""

    path: Path
    shape: tuple[int, ...]

    def __post_init__(self):
        self._offset = npy_data_offset(self.path)
        self._row_bytes = int(np.prod(self.shape[1:]))
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as uint8."""
        out = np.empty((stop - start, *self.shape[1:]), np.uint8)
        view = memoryview(out).cast("B")
        position, done = self._offset + start * self._row_bytes, 0
        while done < len(view):
            count = os.preadv(self._fd, [view[done:]], position + done)
            if count == 0:
                raise OSError(f"{self.path} is shorter than its manifest says")
            done += count
        return out

    def close(self) -> None:
        """Release the file descriptor."""
        os.close(self._fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PixelCache:
    """Decoded uint8 images on disk under ``root``, one entry per (size, file list, DICOM settings); DICOM files
    are windowed as ``dicom`` says (default: ``DicomSettings()``)."""

    def __init__(self, root: str | Path, dicom: DicomSettings | None = None):
        self.root = Path(root)
        self.dicom = dicom or DicomSettings()

    def entry(self, image_size: int, key: str) -> Path:
        """The folder of one entry."""
        return self.root / "pixels" / f"{image_size}px" / key

    def open(self, image_size: int, root: Path, paths: list[str]) -> PixelReader | None:
        """A reader over the finished entry for these images, or None."""
        return self._open(image_size, pixel_key_parts(image_size, root, paths, dicom=self.dicom))

    def _open(self, image_size: int, parts: dict, report: bool = False) -> PixelReader | None:
        """A reader over the entry of ``parts``, or None where it is absent, unfinished or damaged (said in one
        line with ``report``: the caller decodes it again)."""
        folder = self.entry(image_size, cache_key(parts))
        shape = (parts["n_images"], image_size, image_size, 3)
        try:
            # A bit flip keeps the size: only the checksum tells, and wrong pixels would make wrong features.
            damage = entry_damage(folder, PIXELS, shape)
        except FileNotFoundError:
            return None  # not there, or a build not finished
        if damage is not None:
            if report:
                warn_damaged(damage, "its images are decoded into it again (rebuilt)")
            return None
        return PixelReader(folder / PIXELS, shape)

    def build(
        self,
        image_size: int,
        root: Path,
        paths: list[str],
        *,
        workers: int = 2,
        chunk: int = 256,
        progress: bool = True,
        fingerprint: str | None = None,
    ) -> tuple[PixelReader, float]:
        """Decode every image once into the cache (unless there already) and return a reader and the seconds spent."""
        started = time.perf_counter()
        parts = pixel_key_parts(image_size, root, paths, fingerprint, self.dicom)
        reader = self._open(image_size, parts, report=True)
        if reader is not None:
            return reader, 0.0
        folder = self.entry(image_size, cache_key(parts))
        # Two backbones of one size on two workers fill the same entry: the second waits, then reads it.
        with entry_lock(folder) as locked:
            reader = self._open(image_size, parts)
            if reader is not None:
                return reader, 0.0
            if locked:  # a build killed mid-write leaves a temp file as large as the entry; none is live now
                remove_stale_temps(folder / PIXELS)
            self._write(folder, image_size, root, paths, parts, workers=workers, chunk=chunk, progress=progress)
        return PixelReader(folder / PIXELS, (len(paths), image_size, image_size, 3)), time.perf_counter() - started

    def _write(
        self,
        folder: Path,
        image_size: int,
        root: Path,
        paths: list[str],
        parts: dict,
        *,
        workers: int,
        chunk: int,
        progress: bool,
    ) -> None:
        """Decode every image into ``folder``'s array, then write its manifest (last)."""
        shape = (len(paths), image_size, image_size, 3)
        bar = tqdm(total=len(paths), unit="img", desc=f"decode {image_size}px", disable=not progress)

        def decoded_chunks():
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for start in range(0, len(paths), chunk):
                    names = paths[start : start + chunk]
                    yield np.stack(list(pool.map(lambda name: load_image(root / name, image_size, self.dicom), names)))
                    bar.update(len(names))

        try:
            atomic_save_rows(folder / PIXELS, shape, "uint8", decoded_chunks())
        finally:
            bar.close()
        manifest = dict(parts, shape=list(shape), sha256=sha256_file(folder / PIXELS), paths=paths)
        write_manifest(folder / MANIFEST, manifest)
