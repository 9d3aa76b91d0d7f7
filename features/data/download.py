"""Download the public chest X-ray datasets into the folder layout the harness reads.

This is the only part of cxr-bench that needs internet access. Run it once on a
connected machine, then point ``run_benchmark.py --data`` at the folder it prints::

    python -m features.data.download kermany --dest ~/data
    python -m features.data.download pneumoniamnist --dest ~/data

Registry (``DATASETS``) and where each URL / checksum comes from:

``kermany``
    ``ChestXRay2017.zip`` from Mendeley Data: Kermany, Zhang, Goldbaum, "Labeled
    Optical Coherence Tomography (OCT) and Chest X-Ray Images for Classification",
    Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0. The URL is Mendeley's
    public-files download link for that file. **No checksum for this zip is
    published** (not on the Mendeley record, not in any public code we could find),
    so this entry uses *trust on first use*: the first complete download has its
    SHA-256 computed, printed and recorded in ``DEST/.checksums.json``; every later
    download or resume of the same file name into the same DEST is verified
    against that record. Pass ``--sha256 HEX`` to pin a value you obtained
    elsewhere. Extracts to ``DEST/chest_xray/{train,test[,val]}/{NORMAL,PNEUMONIA}``;
    ``__MACOSX/`` members in the zip are skipped.

``pneumoniamnist`` and ``pneumoniamnist_224``
    MedMNIST (Yang et al., Scientific Data 2023) files on Zenodo record 10519652.
    URLs and MD5 checksums are the ones MedMNIST itself ships in
    ``medmnist/info.py`` (MedMNIST/MedMNIST, v3.0.2: keys ``url``/``MD5`` and
    ``url_224``/``MD5_224``). The ``.npz`` is converted to
    ``DEST/<name>/{train,val,test}/{NORMAL,PNEUMONIA}/<index>.png`` (8-bit
    grayscale), ``<index>`` being the row in that split's array.

Every step is restartable: downloads go to ``<file>.part`` and resume with an HTTP
Range request; archives are extracted (and npz files converted) into a temporary
sibling folder that is renamed into place only when complete, with a marker file
that makes a rerun a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

__all__ = [
    "DATASETS",
    "ChecksumMismatchError",
    "DatasetSource",
    "DownloadError",
    "UnsafeArchiveError",
    "download_dataset",
    "download_file",
    "get_source",
    "main",
    "safe_extract",
]

MARKER_NAME = ".cxr_bench_complete"
CHECKSUMS_NAME = ".checksums.json"
# Some hosts answer Python's default urllib agent with 403.
USER_AGENT = "cxr-bench-download/1.0 (python urllib)"
_HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
_CLASS_NAMES = {0: "NORMAL", 1: "PNEUMONIA"}
_OFFLINE_HINT = (
    "Offline? Skip this step and point `python run_benchmark.py --data` at an existing dataset folder instead."
)


class DownloadError(RuntimeError):
    """A network transfer failed; any partial ``.part`` file is kept for resuming."""


class ChecksumMismatchError(RuntimeError):
    """Downloaded (or existing) bytes do not match the expected checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder."""


@dataclass(frozen=True)
class DatasetSource:
    """One downloadable dataset.

    ``checksum`` is ``None`` when the provider publishes none; such entries are
    verified by trust on first use (see the module docstring). ``unpack`` turns
    the downloaded file (first argument) into ``DEST/<folder>`` (second argument
    is DEST) and returns that folder.
    """

    name: str
    url: str
    filename: str
    checksum_algo: str
    checksum: str | None
    citation: str
    license: str
    unpack: Callable[[Path, Path], Path]
    folder: str
    description: str = ""
    checksum_source: str = ""
    run_flags: str = ""


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #


def _say(message: str) -> None:
    print(message, flush=True)


def _file_digest(path: Path, algo: str, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _normalize_hex(value: str, algo: str) -> str:
    algo = algo.lower()
    if algo not in _HEX_LENGTHS:
        raise ValueError(f"unsupported checksum algorithm {algo!r}; use one of {sorted(_HEX_LENGTHS)}")
    hexdigest = value.strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LENGTHS[algo]}}}", hexdigest):
        raise ValueError(f"{value!r} is not a {algo} hex digest ({_HEX_LENGTHS[algo]} hex characters expected)")
    return hexdigest


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER_NAME).is_file()


def _write_json_atomically(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; the record is meant to be readable like the data.
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build_dir_atomically(target: Path, build: Callable[[Path], Path], info: dict) -> Path:
    """Run ``build(tmp)`` in a temp sibling of ``target``, then rename its result into place.

    ``build`` returns the folder (``tmp`` or a folder inside it) that becomes ``target``.
    Because the rename is the last step, a half-finished run never looks finished.
    """
    if _is_complete(target):
        return target
    if target.exists():
        raise FileExistsError(
            f"{target} exists but has no completion marker ({MARKER_NAME}), so it was not "
            "produced by a finished run of this tool. Move or delete it, then run again."
        )
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.partial-"
    # Leftovers of interrupted runs; they can be as large as the dataset itself.
    for stale in parent.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        root = build(tmp)
        info = {**info, "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (root / MARKER_NAME).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        os.replace(root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- #
# Downloading
# --------------------------------------------------------------------------- #


def _network_error(url: str, part: Path, reason: object) -> DownloadError:
    size = part.stat().st_size if part.exists() else 0
    if size:
        kept = f"The partial download is kept at {part} ({size:,} bytes); run the same command again to resume it."
    else:
        kept = "Nothing was saved yet; run the same command again to retry."
    return DownloadError(f"Download of {url} failed: {reason}\n  {kept}\n  {_OFFLINE_HINT}")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """Return (first byte, total size) from ``bytes A-B/T`` or ``bytes */T``."""
    if not value:
        return None, None
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _fetch_to_part(url: str, part: Path, chunk_size: int, progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    # Byte offsets must refer to the file itself, not to a compressed transfer.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        with err:
            if err.code == 416 and offset:
                _, total = _parse_content_range(err.headers.get("Content-Range"))
                if total is None or total == offset:
                    _say(f"Server reports {part.name} is already complete ({offset:,} bytes).")
                    return
                # A .part longer than the remote file cannot be a prefix of it.
                _say(f"{part.name} is larger than the remote file; downloading again from zero.")
                part.unlink()
                return _fetch_to_part(url, part, chunk_size, progress, timeout)
            raise _network_error(url, part, f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise _network_error(url, part, reason) from err

    with response:
        length_header = response.headers.get("Content-Length")
        body_length = int(length_header) if length_header and length_header.isdigit() else None
        if offset and response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                _say(f"Server resumed at byte {start}, not {offset}; downloading again from zero.")
                part.unlink()
                response.close()
                return _fetch_to_part(url, part, chunk_size, progress, timeout)
            mode = "ab"
            _say(f"Resuming {part.name} at {offset:,} bytes.")
        elif response.status == 200:
            if offset:
                _say("Server does not support resuming; downloading again from zero.")
            offset, mode = 0, "wb"
            total = body_length
        else:
            raise _network_error(url, part, f"unexpected HTTP status {response.status}")

        received = 0
        with (
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
            open(part, mode) as fh,
        ):
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as err:
                    fh.flush()
                    raise _network_error(url, part, f"connection lost ({err!r})") from err
                if not chunk:
                    break
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
        # http.client reports a connection closed early as a normal end of body,
        # so a short transfer is only visible by counting.
        if body_length is not None and received != body_length:
            raise _network_error(
                url,
                part,
                f"connection closed after {received:,} of {body_length:,} bytes",
            )


def download_file(
    url: str,
    dest_path: str | os.PathLike[str],
    *,
    expected: tuple[str, str] | None = None,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest_path``, resumably, and verify it.

    Bytes are streamed into ``dest_path + ".part"``; if that file already exists the
    transfer resumes with ``Range: bytes=N-`` (a server answering 200 instead of 206
    restarts from zero; 416 means the part is already complete). Only after the
    checksum ``expected = (algo, hexdigest)`` matches is the part renamed to
    ``dest_path`` with :func:`os.replace`, so the final name always holds a verified
    file. If ``dest_path`` already exists and verifies, nothing is downloaded.

    Raises:
        DownloadError: network failure (the ``.part`` file is kept for resuming).
        ChecksumMismatchError: bytes differ from ``expected``; a freshly downloaded
            part is deleted, an already existing final file is left for the user.
    """
    dest_path = Path(dest_path)
    part = dest_path.with_name(dest_path.name + ".part")
    algo = hexdigest = None
    if expected is not None:
        algo = expected[0].lower()
        hexdigest = _normalize_hex(expected[1], algo)

    if dest_path.exists():
        if expected is None:
            _say(f"{dest_path} already exists and there is no checksum to check it against; using it.")
            return dest_path
        actual = _file_digest(dest_path, algo)
        if actual == hexdigest:
            _say(f"{dest_path} already downloaded ({algo} verified).")
            return dest_path
        # Not deleted: it may be the user's own copy, and re-fetching costs a lot.
        raise ChecksumMismatchError(
            f"Existing file {dest_path} does not match the expected checksum.\n"
            f"  expected {algo}: {hexdigest}\n  actual   {algo}: {actual}\n"
            "  Delete it to download it again, or pass the right --sha256."
        )

    dest_path.parent.mkdir(parents=True, exist_ok=True)
    _fetch_to_part(url, part, chunk_size, progress, timeout)

    if expected is not None:
        actual = _file_digest(part, algo)
        if actual != hexdigest:
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"Checksum mismatch for {url} (the download was deleted).\n"
                f"  expected {algo}: {hexdigest}\n  actual   {algo}: {actual}\n"
                "  The server may have sent a different file or an error page, or the "
                "file changed upstream."
            )
    os.replace(part, dest_path)
    return dest_path


# --------------------------------------------------------------------------- #
# Safe extraction
# --------------------------------------------------------------------------- #


def _member_relpath(name: str) -> PurePosixPath:
    """Normalise an archive member name, refusing anything that leaves the root."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"archive member name contains a NUL byte: {name!r}")
    # Windows tools sometimes write backslashes; treat them as separators so a
    # "..\\x" member cannot slip past the check below.
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise UnsafeArchiveError(f"refusing archive member with an absolute path: {name!r}")
    parts: list[str] = []
    for piece in posix.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not parts:
                raise UnsafeArchiveError(f"refusing archive member that escapes the target: {name!r}")
            parts.pop()
        else:
            parts.append(piece)
    return PurePosixPath(*parts)


def _link_target(member_rel: PurePosixPath, linkname: str, *, relative_to_member: bool) -> PurePosixPath:
    if linkname.startswith("/") or re.match(r"^[A-Za-z]:", linkname):
        raise UnsafeArchiveError(f"refusing link {str(member_rel)!r} -> absolute {linkname!r}")
    base = member_rel.parent if relative_to_member else PurePosixPath()
    try:
        return _member_relpath(str(base / linkname))
    except UnsafeArchiveError:
        raise UnsafeArchiveError(
            f"refusing link {str(member_rel)!r} -> {linkname!r}: it points outside the target"
        ) from None


def _wanted(rel: PurePosixPath, subdir: str | None) -> bool:
    if not rel.parts or rel.parts[0] == "__MACOSX":
        return False
    if subdir is not None:
        return rel.parts[0] == subdir
    return True


def safe_extract(
    archive_path: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    subdir: str | None = None,
    validate: Callable[[Path], None] | None = None,
) -> Path:
    """Extract a zip or tar archive into ``target_dir`` without trusting member names.

    Every member is checked before anything is written: absolute paths, ``..``
    escapes and tar symlinks / hard links pointing outside the target make the
    whole archive refused (:class:`UnsafeArchiveError`); tar device files and
    FIFOs are refused too. Members under ``__MACOSX/`` are skipped. With
    ``subdir`` only that top-level folder is kept and becomes ``target_dir``
    itself (``subdir="chest_xray"`` turns ``chest_xray/train/...`` into
    ``target_dir/train/...``).

    Extraction happens in a temporary folder next to ``target_dir`` that is
    renamed into place when done (after the optional ``validate(root)`` hook
    passes), and a marker file is written; a rerun with the marker present
    returns immediately, even if the archive was deleted since.
    """
    archive_path = Path(archive_path)
    target_dir = Path(target_dir)
    if _is_complete(target_dir):
        return target_dir

    info = {"archive": archive_path.name}
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            plan = []
            for member in zf.infolist():
                rel = _member_relpath(member.filename)
                if _wanted(rel, subdir):
                    plan.append((rel, member))

            def build_zip(tmp: Path) -> Path:
                for rel, member in plan:
                    out = tmp.joinpath(*rel.parts)
                    if member.is_dir():
                        out.mkdir(parents=True, exist_ok=True)
                        continue
                    out.parent.mkdir(parents=True, exist_ok=True)
                    # zip "symlinks" are written as plain files holding the link text.
                    with zf.open(member) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                return _extraction_root(tmp, subdir, validate)

            return _build_dir_atomically(target_dir, build_zip, info)

    if tarfile.is_tarfile(archive_path):
        with tarfile.open(archive_path) as tf:
            plan = []
            for member in tf.getmembers():
                rel = _member_relpath(member.name)
                link = None
                if member.issym():
                    link = _link_target(rel, member.linkname, relative_to_member=True)
                elif member.islnk():
                    link = _link_target(rel, member.linkname, relative_to_member=False)
                elif not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(f"refusing special file in archive: {member.name!r}")
                if _wanted(rel, subdir):
                    # With subdir, only that folder survives, so a link must stay inside it.
                    if link is not None and subdir is not None and link.parts[:1] != (subdir,):
                        raise UnsafeArchiveError(
                            f"refusing link {member.name!r} -> {member.linkname!r}: it points outside {subdir}/"
                        )
                    plan.append((rel, member))

            def build_tar(tmp: Path) -> Path:
                symlinks = []
                for rel, member in plan:
                    out = tmp.joinpath(*rel.parts)
                    if member.isdir():
                        out.mkdir(parents=True, exist_ok=True)
                    elif member.issym():
                        symlinks.append((out, member.linkname))
                    else:
                        out.parent.mkdir(parents=True, exist_ok=True)
                        src = tf.extractfile(member)
                        if src is None:
                            raise UnsafeArchiveError(f"cannot read archive member {member.name!r}")
                        with src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                # Created last so that no file above is ever written through a link.
                for out, linkname in symlinks:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(linkname, out)
                # Chains of links can escape even when each one looks fine on its own
                # (a -> "b/..", b -> "."); nothing was written through them, and the
                # temporary tree is discarded if this fails.
                root = (tmp / subdir if subdir else tmp).resolve()
                for out, linkname in symlinks:
                    if not out.resolve().is_relative_to(root):
                        raise UnsafeArchiveError(
                            f"refusing link {out.relative_to(tmp)} -> {linkname!r}: it resolves outside the target"
                        )
                return _extraction_root(tmp, subdir, validate)

            return _build_dir_atomically(target_dir, build_tar, info)

    raise ValueError(f"{archive_path} is neither a zip nor a tar archive")


def _extraction_root(tmp: Path, subdir: str | None, validate: Callable[[Path], None] | None) -> Path:
    root = tmp / subdir if subdir else tmp
    if not root.is_dir():
        raise ValueError(f"the archive has no top-level folder {subdir!r}")
    if validate is not None:
        validate(root)
    return root


# --------------------------------------------------------------------------- #
# Per-dataset unpacking
# --------------------------------------------------------------------------- #


def _count_images(root: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in sorted(p for p in root.iterdir() if p.is_dir()):
        counts[split.name] = {
            cls.name: sum(1 for f in cls.iterdir() if f.is_file() and not f.name.startswith("."))
            for cls in sorted(split.iterdir())
            if cls.is_dir()
        }
    return counts


def _check_kermany_layout(root: Path) -> None:
    missing = [
        f"{split}/{cls}"
        for split in ("train", "test")
        for cls in ("NORMAL", "PNEUMONIA")
        if not (root / split / cls).is_dir()
    ]
    if missing:
        raise ValueError(
            "the archive does not have the expected chest_xray/{train,test}/{NORMAL,PNEUMONIA} "
            f"layout; missing: {', '.join(missing)}"
        )


def _unpack_kermany(archive: Path, dest: Path) -> Path:
    target = safe_extract(
        archive,
        dest / "chest_xray",
        subdir="chest_xray",
        validate=_check_kermany_layout,
    )
    counts = _count_images(target)
    for split, per_class in counts.items():
        _say(f"  {split:5s}: " + ", ".join(f"{cls} {n}" for cls, n in per_class.items()))
    if "val" not in counts:
        # The Mendeley zip is reported to hold train/ and test/ only (the small val/
        # folder comes from re-uploads such as Kaggle's), so inform rather than fail.
        _say(
            "NOTE: this archive has no val/ split (the Mendeley ChestXRay2017.zip holds "
            "train/ and test/ only). run_benchmark.py carves validation out of train/ by "
            "default (--val-source carve); --val-source official needs a val/ folder."
        )
    return target


def _unpack_medmnist(folder: str) -> Callable[[Path, Path], Path]:
    def unpack(archive: Path, dest: Path) -> Path:
        # Only this dataset needs them; keeps `--help` and kermany fast to start.
        import numpy as np
        from PIL import Image

        counts: dict[str, dict[str, int]] = {}

        def build(tmp: Path) -> Path:
            with np.load(archive, allow_pickle=False) as data:
                for split in ("train", "val", "test"):
                    images = data[f"{split}_images"]
                    labels = np.asarray(data[f"{split}_labels"]).reshape(-1)
                    if images.ndim == 4 and images.shape[-1] == 1:
                        images = images[..., 0]
                    if images.ndim != 3 or len(images) != len(labels):
                        raise ValueError(
                            f"{archive.name}: {split} images {images.shape} / labels "
                            f"{labels.shape} are not N grayscale images with N labels"
                        )
                    unknown = set(np.unique(labels).tolist()) - set(_CLASS_NAMES)
                    if unknown:
                        raise ValueError(f"{archive.name}: unexpected {split} labels {sorted(unknown)}")
                    for cls in _CLASS_NAMES.values():
                        (tmp / split / cls).mkdir(parents=True)
                    counts[split] = {cls: 0 for cls in _CLASS_NAMES.values()}
                    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                        cls = _CLASS_NAMES[int(label)]
                        pixels = np.ascontiguousarray(image, dtype=np.uint8)
                        Image.fromarray(pixels).convert("L").save(tmp / split / cls / f"{index}.png")
                        counts[split][cls] += 1
            return tmp

        target = dest / folder
        if _is_complete(target):
            return target
        _say(f"Converting {archive.name} to PNG folders ...")
        _build_dir_atomically(target, build, {"archive": archive.name})
        for split, per_class in counts.items():
            _say(f"  {split:5s}: " + ", ".join(f"{cls} {n}" for cls, n in per_class.items()))
        return target

    return unpack


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

_KERMANY_CITATION = (
    "Kermany D, Zhang K, Goldbaum M (2018). Labeled Optical Coherence Tomography (OCT) "
    "and Chest X-Ray Images for Classification. Mendeley Data, V2. "
    "doi:10.17632/rscbjbr9sj.2. Related article: Kermany DS et al., Identifying Medical "
    "Diagnoses and Treatable Diseases by Image-Based Deep Learning, Cell 172(5):1122-1131, "
    "2018, doi:10.1016/j.cell.2018.02.010."
)
_MEDMNIST_CITATION = (
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B (2023). MedMNIST v2 - A "
    "large-scale lightweight benchmark for 2D and 3D biomedical image classification. "
    "Scientific Data 10:41, doi:10.1038/s41597-022-01721-8. Source images: " + _KERMANY_CITATION
)
_CC_BY_4 = "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"
_MEDMNIST_INFO = "MedMNIST/MedMNIST medmnist/info.py (v3.0.2)"


def _medmnist_source(name: str, md5: str, info_key: str, resolution: str) -> DatasetSource:
    """A PneumoniaMNIST file on Zenodo, with the MD5 that MedMNIST's ``info.py`` publishes for it."""
    return DatasetSource(
        name=name,
        url=f"https://zenodo.org/records/10519652/files/{name}.npz?download=1",
        filename=f"{name}.npz",
        checksum_algo="md5",
        checksum=md5,
        citation=_MEDMNIST_CITATION,
        license=_CC_BY_4,
        unpack=_unpack_medmnist(name),
        folder=name,
        description=f"PneumoniaMNIST {resolution}, converted to PNG folders",
        checksum_source=_MEDMNIST_INFO + f' INFO["pneumoniamnist"]["{info_key}"]',
        # The 28 px images are below every backbone's minimum input; upscaling them is MedMNIST's usual practice.
        run_flags=" --min-image-side 0" if resolution.startswith("28x28") else "",
    )


DATASETS: dict[str, DatasetSource] = {
    source.name: source
    for source in (
        DatasetSource(
            name="kermany",
            # Mendeley's current download link for ChestXRay2017.zip in record
            # rscbjbr9sj v2 (it redirects to the storage host). Older code uses
            # https://data.mendeley.com/datasets/rscbjbr9sj/2/files/41d542e7-7f91-47f6-9ff2-dd8e5a5a7861/ChestXRay2017.zip?dl=1
            # which can be passed with --url if this one stops working.
            url=(
                "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
                "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
            ),
            filename="ChestXRay2017.zip",
            checksum_algo="sha256",
            checksum=None,
            citation=_KERMANY_CITATION,
            license=_CC_BY_4,
            unpack=_unpack_kermany,
            folder="chest_xray",
            description="Kermany/Guangzhou pediatric chest X-rays, ChestXRay2017.zip (~1.2 GB), JPEG",
            checksum_source="none published; trust on first use",
        ),
        _medmnist_source("pneumoniamnist", "28209eda62fecd6e6a2d98b1501bb15f", "MD5", "28x28 (MedMNIST)"),
        _medmnist_source("pneumoniamnist_224", "d6a3c71de1b945ea11211b03746c1fe1", "MD5_224", "224x224 (MedMNIST+)"),
    )
}


def get_source(name: str) -> DatasetSource:
    """Return the registry entry for ``name``; ``ValueError`` lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}") from None


# --------------------------------------------------------------------------- #
# Trust-on-first-use record
# --------------------------------------------------------------------------- #


def _load_checksums(dest: Path) -> dict:
    path = dest / CHECKSUMS_NAME
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        # Silently starting over would defeat the point of the record.
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it") from err


def _record_checksum(dest: Path, filename: str, entry: dict) -> None:
    records = _load_checksums(dest)
    records[filename] = entry
    _write_json_atomically(dest / CHECKSUMS_NAME, records)


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #


def download_dataset(
    name: str,
    dest: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download and unpack dataset ``name`` under ``dest``; return the ``--data`` folder.

    ``url`` replaces the registry URL (a mirror, or a local server in tests); the
    published checksum still applies, since a mirror must serve identical bytes.
    ``sha256`` pins the expected SHA-256 and takes precedence over the registry.
    Entries without a published checksum use trust on first use, recorded in
    ``dest/.checksums.json`` (see the module docstring). A dataset whose folder
    already carries the completion marker is returned without any network access.
    """
    source = get_source(name)
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    out_dir = dest / source.folder
    if _is_complete(out_dir):
        _say(f"{source.name}: already prepared at {out_dir}; nothing to download.")
        return out_dir

    archive = dest / source.filename
    record = _load_checksums(dest).get(source.filename)
    first_use = False
    if sha256:
        expected = ("sha256", _normalize_hex(sha256, "sha256"))
        _say(f"Verifying {source.filename} against the SHA-256 given with --sha256.")
    elif source.checksum:
        expected = (source.checksum_algo, source.checksum)
        _say(f"Verifying {source.filename} against the published {source.checksum_algo} ({source.checksum_source}).")
    elif record:
        expected = ("sha256", record["sha256"])
        _say(
            f"Verifying {source.filename} against the SHA-256 recorded on first download "
            f"({dest / CHECKSUMS_NAME}); this checksum was NOT published by the data provider."
        )
    else:
        expected = None
        first_use = True
        _say(
            f"No checksum is published for {source.filename}: using trust on first use "
            f"(the SHA-256 of this download will be recorded in {dest / CHECKSUMS_NAME})."
        )

    download_file(url or source.url, archive, expected=expected, progress=progress)
    if first_use:
        digest = _file_digest(archive, "sha256")
    else:
        digest = expected[1] if sha256 else None

    _say(f"Unpacking {archive.name} ...")
    try:
        out_dir = source.unpack(archive, dest)
    except Exception:
        if first_use:
            # An error page saved under the archive's name must not become the
            # trusted reference for every later download.
            _say(
                f"{archive} could not be unpacked, so its checksum was NOT recorded. "
                "Delete it and run the same command again."
            )
        raise

    if first_use or sha256:
        _record_checksum(
            dest,
            source.filename,
            {
                "sha256": digest,
                "size": archive.stat().st_size,
                "url": url or source.url,
                "origin": "pinned with --sha256" if sha256 else "trust on first use (not published)",
                "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
    if first_use:
        bar = "!" * 78
        _say(
            f"{bar}\n"
            f"  CHECKSUM NOT PUBLISHED for {source.filename}: trusted on first use.\n"
            f"  sha256 = {digest}\n"
            f"  Recorded in {dest / CHECKSUMS_NAME}; later downloads of this file into\n"
            "  this folder are verified against it. Compare it with another copy if you\n"
            "  can; pin it on other machines with --sha256.\n"
            f"{bar}"
        )
    return out_dir


def _build_parser() -> argparse.ArgumentParser:
    listing = "\n".join(
        f"  {s.name:20s} {s.description}\n  {'':20s} checksum: "
        + (f"{s.checksum_algo} published" if s.checksum else "NOT published (trust on first use)")
        for s in DATASETS.values()
    )
    parser = argparse.ArgumentParser(
        prog="python -m features.data.download",
        description="Download a public chest X-ray dataset and lay it out for run_benchmark.py. "
        "Interrupted downloads resume when the same command is run again.",
        epilog=f"datasets:\n{listing}\n\nOffline? No download is needed if you already have the "
        "data: pass its folder to `python run_benchmark.py --data`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help=f"dataset: {', '.join(DATASETS)}")
    parser.add_argument("--dest", required=True, type=Path, help="folder to download and unpack into")
    parser.add_argument("--url", help="download from this URL instead (mirror); checksums still apply")
    parser.add_argument(
        "--sha256",
        metavar="HEX",
        help="expected SHA-256 of the downloaded file (pins it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    try:
        source = get_source(args.name)
        data_dir = download_dataset(
            source.name,
            args.dest,
            url=args.url,
            sha256=args.sha256,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            "\nInterrupted. Run the same command again to resume the download.",
            file=sys.stderr,
        )
        return 130
    except (DownloadError, ChecksumMismatchError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _say(
        f"\nDataset ready: {data_dir}\n"
        "Run the benchmark with:\n"
        f"  python run_benchmark.py --data {shlex.quote(str(data_dir))}{source.run_flags}\n\n"
        f"Please cite: {source.citation}\n"
        f"Licence: {source.license}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
