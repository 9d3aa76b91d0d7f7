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
    download of the same file name into the same DEST is verified against that
    record. Pass ``--sha256 HEX`` to pin a value you obtained elsewhere. Extracts to
    ``DEST/chest_xray/{train,test[,val]}/{NORMAL,PNEUMONIA}``; ``__MACOSX/`` members
    in the zip are skipped.

``pneumoniamnist`` and ``pneumoniamnist_224``
    MedMNIST (Yang et al., Scientific Data 2023) files on Zenodo record 10519652.
    URLs and MD5 checksums are the ones MedMNIST itself ships in
    ``medmnist/info.py`` (MedMNIST/MedMNIST, v3.0.2: keys ``url``/``MD5`` and
    ``url_224``/``MD5_224``). The ``.npz`` is converted to
    ``DEST/<name>/{train,val,test}/{NORMAL,PNEUMONIA}/<index>.png`` (8-bit
    grayscale), ``<index>`` being the row in that split's array.

What pooch does here, and where it falls short (pooch 1.9 source, ``pooch/``):

* Download, checksum, retry: pooch does all three. ``Pooch.fetch`` calls
  ``stream_download`` (``core.py`` 790-838), which downloads into a temporary file
  in the destination folder (``utils.temporary_file``, ``core.py`` 822), checks it
  with ``hash_matches(..., strict=True)`` (824) and only then moves it onto the
  final name (825); the temporary file is deleted whatever happens. A network
  error or a hash mismatch is retried ``retry_if_failed`` times, waiting 1, 2, 3 s
  (816-838). So the final name only ever holds a verified file.
* **Resume: pooch has none.** ``HTTPDownloader`` opens the output with ``"w+b"``
  and sends a plain ``requests.get`` (``downloaders.py`` 227-230): no ``Range``
  header, and a failed attempt's bytes are deleted. An interrupted download
  (all ~1.2 GB of the Kermany zip) starts again from zero. This module keeps
  nothing for it: that guarantee is dropped.
* An existing file that fails its checksum: pooch takes it for an outdated copy
  and downloads over it (``download_action``, ``core.py`` 783-787). Kept here: a
  check that refuses and leaves it alone, since it may be the user's own copy.
* File mode: the temporary file is made by ``NamedTemporaryFile`` (0600), and the
  move keeps that; kept here: a chmod to what the umask gives any new file.
* Trust on first use: with no known hash pooch only logs the SHA-256
  (``core.py`` 244-251, in ``retrieve`` only); recording and checking it is kept here.
* Unpacking: pooch's processors are **not safe enough** and are not used.
  ``Unzip`` calls ``ZipFile.extractall`` (``processors.py`` 192), which does not
  refuse absolute or ``..`` names (zipfile silently rewrites them); ``Untar``
  extracts with no filter at all before Python 3.12 (``processors.py`` 258:
  ``filter_kwarg = {} if sys.version_info < (3, 12) else {"filter": "data"}``),
  and this project runs 3.11. Both write straight into ``<archive>.unzip`` /
  ``.untar`` and count it as extracted when the member names exist (115-122), so
  an interrupted extraction looks finished. Kept here: :func:`safe_extract`,
  which refuses the whole archive, before writing anything, if a member name is
  absolute or contains ``..``, or if a tar holds a link or special file; tar
  members then go through ``tarfile``'s ``filter="data"`` as well. Tar links are
  refused outright, not checked, because Python 3.11's data filter has published
  bypasses through symlinks (CVE-2025-4517 and others, fixed only in 3.11.13) and
  no dataset here has links.
* Folders (extracted archives, converted npz files) are built in
  ``common.files.atomic_folder`` and get a marker file before the rename, so a
  half-finished run never looks finished and a rerun with the marker is a no-op.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pooch
import requests

from common.files import atomic_folder, atomic_write_json, current_umask, file_digest, remove_stale_temps, sha256_file

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
# Some hosts answer a library's default agent with 403.
USER_AGENT = f"cxr-bench-download/2.0 (pooch {pooch.__version__})"
RETRIES = 3
_HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}
_CLASS_NAMES = {0: "NORMAL", 1: "PNEUMONIA"}
_OFFLINE_HINT = (
    "Offline? Skip this step and point `python run_benchmark.py --data` at an existing dataset folder instead."
)


class DownloadError(RuntimeError):
    """A network transfer failed after pooch's retries; nothing partial is kept."""


class ChecksumMismatchError(RuntimeError):
    """Downloaded (or existing) bytes do not match the expected checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder, or is a link or special file."""


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


def _say(message: str) -> None:
    print(message, flush=True)


def _normalize_hex(value: str, algo: str) -> str:
    algo = algo.lower()
    if algo not in _HEX_LENGTHS:
        raise ValueError(f"unsupported checksum algorithm {algo!r}; use one of {sorted(_HEX_LENGTHS)}")
    hexdigest = value.strip().lower()
    if not re.fullmatch(rf"[0-9a-f]{{{_HEX_LENGTHS[algo]}}}", hexdigest):
        raise ValueError(f"{value!r} is not a {algo} hex digest ({_HEX_LENGTHS[algo]} hex characters expected)")
    return hexdigest


# --------------------------------------------------------------------------- #
# Downloading (pooch)
# --------------------------------------------------------------------------- #


def _use_existing(path: Path, expected: tuple[str, str] | None) -> Path:
    """Return ``path`` if it verifies; refuse, without deleting it, if it does not (pooch would overwrite it)."""
    if expected is None:
        _say(f"{path} already exists and there is no checksum to check it against; using it.")
        return path
    algo, hexdigest = expected
    actual = file_digest(path, algo)
    if actual != hexdigest:
        raise ChecksumMismatchError(
            f"Existing file {path} does not match the expected checksum.\n"
            f"  expected {algo}: {hexdigest}\n  actual   {algo}: {actual}\n"
            "  Delete it to download it again, or pass the right --sha256."
        )
    _say(f"{path} already downloaded ({algo} verified).")
    return path


def _fetch(url: str, path: Path, known_hash: str | None, downloader: pooch.HTTPDownloader, retries: int) -> None:
    """Have pooch download, verify and retry; turn its errors into this module's."""
    store = pooch.create(
        path=path.parent, base_url="", registry={path.name: known_hash}, urls={path.name: url}, retry_if_failed=retries
    )
    try:
        store.fetch(path.name, downloader=downloader)
    except requests.RequestException as error:
        raise DownloadError(
            f"Download of {url} failed ({1 + retries} attempts): {error}\n"
            "  Nothing partial is kept (downloads do not resume); run the same command again to retry.\n"
            f"  {_OFFLINE_HINT}"
        ) from error
    except ValueError as error:
        # The algorithm was checked before, so pooch's only ValueError left is its hash mismatch.
        raise ChecksumMismatchError(
            f"Checksum mismatch for {url} (the download was deleted).\n  {error}\n"
            "  The server may have sent a different file or an error page, or the file changed upstream."
        ) from error


def download_file(
    url: str,
    dest_path: str | os.PathLike[str],
    *,
    expected: tuple[str, str] | None = None,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    timeout: float = 60,
    retries: int = RETRIES,
) -> Path:
    """Download ``url`` to ``dest_path`` with pooch and verify it against ``expected = (algo, hexdigest)``.

    Pooch downloads into a temporary file beside ``dest_path``, moves it onto
    ``dest_path`` only once the checksum matches, and retries a failed attempt
    ``retries`` times; there is no resume. An existing ``dest_path`` is checked
    and used, never downloaded over.

    Raises:
        DownloadError: the network failed on every attempt (nothing is kept).
        ChecksumMismatchError: the bytes differ from ``expected`` (the download is
            deleted; an already existing file is left for the user).
    """
    dest_path = Path(dest_path)
    if expected is not None:
        expected = (expected[0].lower(), _normalize_hex(expected[1], expected[0]))
    if dest_path.exists():
        return _use_existing(dest_path, expected)
    known_hash = f"{expected[0]}:{expected[1]}" if expected else None
    downloader = pooch.HTTPDownloader(
        progressbar=progress, chunk_size=chunk_size, timeout=timeout, headers={"User-Agent": USER_AGENT}
    )
    _fetch(url, dest_path, known_hash, downloader, retries)
    os.chmod(dest_path, 0o666 & ~current_umask())  # pooch's temporary file is 0600
    return dest_path


# --------------------------------------------------------------------------- #
# Folders built then renamed, and safe extraction
# --------------------------------------------------------------------------- #


def _is_complete(folder: Path) -> bool:
    return (folder / MARKER_NAME).is_file()


def _build_folder(target: Path, info: dict, build: Callable[[Path], None]) -> Path:
    """Run ``build(temp)`` in ``atomic_folder(target)`` and mark the result complete; a no-op once marked."""
    if _is_complete(target):
        return target
    if target.exists():
        raise FileExistsError(
            f"{target} exists but has no completion marker ({MARKER_NAME}), so it was not "
            "produced by a finished run of this tool. Move or delete it, then run again."
        )
    remove_stale_temps(target)  # left by a killed run; they can be as large as the dataset
    with atomic_folder(target) as temp:
        build(temp)
        atomic_write_json(temp / MARKER_NAME, {**info, "completed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return target


def _kept_name(name: str, subdir: str | None) -> str | None:
    """A member's path inside the target, or None to skip it; refuses absolute names and ``..``."""
    rel = PurePosixPath(name.replace("\\", "/"))
    if rel.is_absolute() or re.match(r"[A-Za-z]:", rel.as_posix()) or ".." in rel.parts:
        raise UnsafeArchiveError(f"refusing archive member that could land outside the target: {name!r}")
    if not rel.parts or rel.parts[0] == "__MACOSX":
        return None
    if subdir is None:
        return rel.as_posix()
    if rel.parts[0] != subdir or len(rel.parts) == 1:
        return None
    return PurePosixPath(*rel.parts[1:]).as_posix()


def _zip_plan(zf: zipfile.ZipFile, subdir: str | None) -> list[zipfile.ZipInfo]:
    plan = []
    for member in zf.infolist():
        kept = _kept_name(member.filename, subdir)
        if kept:
            # zipfile reads the data by orig_filename, so renaming only moves where it is written.
            member.filename = kept + "/" if member.is_dir() else kept
            plan.append(member)
    return plan


def _tar_plan(tf: tarfile.TarFile, subdir: str | None) -> list[tarfile.TarInfo]:
    plan = []
    for member in tf.getmembers():
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(
                f"refusing tar member {member.name!r}: links and special files are not extracted (see the module doc)"
            )
        kept = _kept_name(member.name, subdir)
        if kept:
            member.name = kept
            plan.append(member)
    return plan


@contextmanager
def _open_archive(path: Path, subdir: str | None) -> Iterator[tuple[list, Callable[[Path], None]]]:
    """Yield the checked members to extract and a function extracting them into a folder."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            plan = _zip_plan(zf, subdir)
            yield plan, lambda temp: zf.extractall(temp, members=plan)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            plan = _tar_plan(tf, subdir)
            yield plan, lambda temp: tf.extractall(temp, members=plan, filter="data")
    else:
        raise ValueError(f"{path} is neither a zip nor a tar archive")


def safe_extract(
    archive_path: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    subdir: str | None = None,
    validate: Callable[[Path], None] | None = None,
) -> Path:
    """Extract a zip or tar archive into ``target_dir`` without trusting member names.

    Every member is checked before anything is written (:class:`UnsafeArchiveError`
    refuses the whole archive, see the module docstring); ``__MACOSX/`` is skipped.
    With ``subdir`` only that top-level folder is kept and becomes ``target_dir``
    itself. The folder is built by :func:`_build_folder` (after ``validate(root)``
    passes), so a rerun with the marker returns at once, even without the archive.
    """
    archive_path, target_dir = Path(archive_path), Path(target_dir)
    if _is_complete(target_dir):
        return target_dir
    with _open_archive(archive_path, subdir) as (plan, extract_all):
        if subdir is not None and not plan:
            raise ValueError(f"the archive has no top-level folder {subdir!r}")

        def build(temp: Path) -> None:
            extract_all(temp)
            if validate is not None:
                validate(temp)

        return _build_folder(target_dir, {"archive": archive_path.name}, build)


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


def _say_counts(counts: dict[str, dict[str, int]]) -> None:
    for split, per_class in counts.items():
        _say(f"  {split:5s}: " + ", ".join(f"{cls} {n}" for cls, n in per_class.items()))


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
    target = safe_extract(archive, dest / "chest_xray", subdir="chest_xray", validate=_check_kermany_layout)
    counts = _count_images(target)
    _say_counts(counts)
    if "val" not in counts:
        # The Mendeley zip is reported to hold train/ and test/ only (the small val/
        # folder comes from re-uploads such as Kaggle's), so inform rather than fail.
        _say(
            "NOTE: this archive has no val/ split (the Mendeley ChestXRay2017.zip holds "
            "train/ and test/ only). run_benchmark.py carves validation out of train/ by "
            "default (--val-source carve); --val-source official needs a val/ folder."
        )
    return target


def _write_split(source: str, images, labels, folder: Path) -> None:
    """Save one MedMNIST split as ``folder/<class>/<row>.png`` (8-bit grayscale)."""
    import numpy as np
    from PIL import Image

    labels = np.asarray(labels).reshape(-1)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            f"{source}: {folder.name} images {images.shape} / labels {labels.shape} "
            "are not N grayscale images with N labels"
        )
    unknown = set(np.unique(labels).tolist()) - set(_CLASS_NAMES)
    if unknown:
        raise ValueError(f"{source}: unexpected {folder.name} labels {sorted(unknown)}")
    for cls in _CLASS_NAMES.values():
        (folder / cls).mkdir(parents=True)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        pixels = np.ascontiguousarray(image, dtype=np.uint8)
        Image.fromarray(pixels).convert("L").save(folder / _CLASS_NAMES[int(label)] / f"{index}.png")


def _npz_to_pngs(archive: Path, root: Path) -> None:
    # Only this dataset needs numpy; keeps `--help` and kermany fast to start.
    import numpy as np

    with np.load(archive, allow_pickle=False) as data:
        for split in ("train", "val", "test"):
            _write_split(archive.name, data[f"{split}_images"], data[f"{split}_labels"], root / split)


def _unpack_medmnist(folder: str) -> Callable[[Path, Path], Path]:
    def unpack(archive: Path, dest: Path) -> Path:
        target = dest / folder
        _say(f"Converting {archive.name} to PNG folders ...")
        _build_folder(target, {"archive": archive.name}, lambda temp: _npz_to_pngs(archive, temp))
        _say_counts(_count_images(target))
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
    except json.JSONDecodeError as error:
        # Silently starting over would defeat the point of the record.
        raise ValueError(f"{path} is not valid JSON ({error}); fix or delete it") from error


def _record_checksum(dest: Path, filename: str, entry: dict) -> None:
    records = _load_checksums(dest)
    records[filename] = entry
    atomic_write_json(dest / CHECKSUMS_NAME, records, sort_keys=True)


def _expected_checksum(source: DatasetSource, dest: Path, sha256: str | None) -> tuple[str, str] | None:
    """The checksum to verify against (``--sha256``, published, recorded), or None on first use."""
    record = _load_checksums(dest).get(source.filename)
    if sha256:
        _say(f"Verifying {source.filename} against the SHA-256 given with --sha256.")
        return "sha256", _normalize_hex(sha256, "sha256")
    if source.checksum:
        _say(f"Verifying {source.filename} against the published {source.checksum_algo} ({source.checksum_source}).")
        return source.checksum_algo, source.checksum
    if record:
        _say(
            f"Verifying {source.filename} against the SHA-256 recorded on first download "
            f"({dest / CHECKSUMS_NAME}); this checksum was NOT published by the data provider."
        )
        return "sha256", record["sha256"]
    _say(
        f"No checksum is published for {source.filename}: using trust on first use "
        f"(the SHA-256 of this download will be recorded in {dest / CHECKSUMS_NAME})."
    )
    return None


def _announce_first_use(filename: str, digest: str, dest: Path) -> None:
    bar = "!" * 78
    _say(
        f"{bar}\n"
        f"  CHECKSUM NOT PUBLISHED for {filename}: trusted on first use.\n"
        f"  sha256 = {digest}\n"
        f"  Recorded in {dest / CHECKSUMS_NAME}; later downloads of this file into\n"
        "  this folder are verified against it. Compare it with another copy if you\n"
        "  can; pin it on other machines with --sha256.\n"
        f"{bar}"
    )


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #


def _unpack(source: DatasetSource, archive: Path, dest: Path, first_use: bool) -> Path:
    _say(f"Unpacking {archive.name} ...")
    try:
        return source.unpack(archive, dest)
    except Exception:
        if first_use:
            # An error page saved under the archive's name must not become the trusted reference.
            _say(f"{archive} could not be unpacked, so its checksum was NOT recorded. Delete it and run again.")
        raise


def download_dataset(
    name: str,
    dest: str | os.PathLike[str],
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    retries: int = RETRIES,
) -> Path:
    """Download and unpack dataset ``name`` under ``dest``; return the ``--data`` folder.

    ``url`` replaces the registry URL (a mirror, or a local server in tests); the
    published checksum still applies, since a mirror must serve identical bytes.
    ``sha256`` pins the expected SHA-256 and takes precedence over the registry.
    Entries without a published checksum use trust on first use, recorded in
    ``dest/.checksums.json`` (see the module docstring). A dataset whose folder
    already carries the completion marker is returned without any network access.
    A failed download is retried ``retries`` times (see :func:`download_file`).
    """
    source = get_source(name)
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    out_dir = dest / source.folder
    if _is_complete(out_dir):
        _say(f"{source.name}: already prepared at {out_dir}; nothing to download.")
        return out_dir
    archive = dest / source.filename
    expected = _expected_checksum(source, dest, sha256)
    first_use = expected is None
    download_file(url or source.url, archive, expected=expected, progress=progress, retries=retries)
    out_dir = _unpack(source, archive, dest, first_use)
    if first_use or sha256:
        entry = {
            "sha256": sha256_file(archive) if first_use else expected[1],
            "size": archive.stat().st_size,
            "url": url or source.url,
            "origin": "pinned with --sha256" if sha256 else "trust on first use (not published)",
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _record_checksum(dest, source.filename, entry)
        if first_use:
            _announce_first_use(source.filename, entry["sha256"], dest)
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
        f"A failed download is retried {RETRIES} times; downloads do not resume, so an interrupted one "
        "starts again from zero when the same command is run again.",
        epilog=f"datasets:\n{listing}\n\nOffline? No download is needed if you already have the "
        "data: pass its folder to `python run_benchmark.py --data`.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME", help=f"dataset: {', '.join(DATASETS)}")
    parser.add_argument("--dest", required=True, type=Path, help="folder to download and unpack into")
    parser.add_argument("--url", help="download from this URL instead (mirror); checksums still apply")
    parser.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the downloaded file (pins it)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    args = _build_parser().parse_args(argv)
    try:
        source = get_source(args.name)
        data_dir = download_dataset(
            source.name, args.dest, url=args.url, sha256=args.sha256, progress=not args.no_progress
        )
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to start the download again.", file=sys.stderr)
        return 130
    except (DownloadError, ChecksumMismatchError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
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
