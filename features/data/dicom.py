"""Read a DICOM radiograph as the 8-bit image every other file becomes, and what its header says of the patient.

The stored values go through pydicom's own transforms, in the order the standard gives: the modality LUT
(rescale slope and intercept, or a Modality LUT Sequence), then the VOI LUT or window the file states (the
``DicomSettings.voi``-th; or none with ``DicomSettings.window`` ``range``), then onto 8 bits over the VOI's
output range; MONOCHROME1 (white is low) is inverted last. A file stating no window is mapped from its full
used range (min..max), as a 16-bit PNG is (``to_8bit``), unless it stores 8 bits or fewer, which are kept as
stored, as an 8-bit JPEG's. Colour files (RGB, YBR) are read as RGB.

pydicom and its decoder plugins are optional (``pip install 'cxr-bench[dicom]'``): they are imported only when a
DICOM file is met, and without them the file is left out with the reason naming what to install. Multi-frame
files, files without pixel data (structured reports, RT objects) and files pydicom cannot read are left out with
their reason (``DicomError``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from features.data.attributes import STANDARD_ATTRIBUTES, normalise
from features.settings import DicomSettings

# Part of the pixel cache key beside the settings: bump it whenever the pixels read from a DICOM file change.
DICOM_VERSION = "pydicom-modality-voi-mono1-8bit-v1"
DICOM_SUFFIXES = (".dcm", ".dicom")
INSTALL = "pip install 'cxr-bench[dicom]'"
# The DICOM file signature: a 128-byte preamble, then these four bytes.
_MAGIC, _MAGIC_AT = b"DICM", 128
# The plugin of the dicom extra that decodes each family of compressed transfer syntaxes (by UID prefix).
_PLUGINS = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg-libjpeg",  # JPEG baseline, extended
    "1.2.840.10008.1.2.4.7": "pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.8": "pylibjpeg-libjpeg",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg-openjpeg",  # High-Throughput JPEG 2000
}
# Header attribute -> the DICOM keyword it is read from.
_HEADER = {"sex": "PatientSex", "age": "PatientAge", "view": "ViewPosition"}


class DicomError(ValueError):
    """A DICOM file that is not read; ``reason`` says why. ``recheck``: it may read once something is installed."""

    def __init__(self, reason: str, recheck: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.recheck = recheck


def dicom_identity(settings: DicomSettings) -> str:
    """The DICOM reader's version and ``settings``, as the pixel and feature cache keys name them."""
    return f"{DICOM_VERSION}:{settings.identity()}"


def has_dicom_magic(head: bytes) -> bool:
    """Whether ``head`` (a file's first 132 bytes or more) holds the DICOM signature."""
    return head[_MAGIC_AT : _MAGIC_AT + len(_MAGIC)] == _MAGIC


def is_dicom(path: Path) -> bool:
    """Whether the file ``path`` is DICOM: a ``.dcm`` / ``.dicom`` name, or the signature under any other name."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as file:
            return has_dicom_magic(file.read(_MAGIC_AT + len(_MAGIC)))
    except OSError:
        return False  # the image check reports a file it cannot read


def _pydicom():
    """pydicom with its pixel transforms, or ``DicomError`` naming the extra to install."""
    try:
        import pydicom
        import pydicom.errors
        import pydicom.pixels
    except ImportError as error:
        raise DicomError(f"DICOM file; reading it needs pydicom: {INSTALL}", recheck=True) from error
    return pydicom


def _read(source, stop_before_pixels: bool = False):
    """The dataset of ``source`` (a path or a binary file), or ``DicomError``."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError as error:  # its text ends advising force=True, which is not ours to give
        raise DicomError("not a DICOM file: no 'DICM' signature at byte 128 (a .dcm or .dicom name alone does not "
                         "make one; files without the 128-byte preamble are not read)") from error
    except Exception as error:  # a damaged file makes pydicom raise many kinds; each is "cannot be read"
        raise DicomError(f"DICOM file pydicom cannot read: {error or type(error).__name__}") from error


def _check_decodable(ds) -> None:
    """``DicomError`` for a file whose pixels are not read: none, several frames, a syntax no plugin decodes."""
    if "PixelData" not in ds:
        kind = getattr(ds.get("SOPClassUID"), "name", "") or "unknown kind"
        raise DicomError(f"DICOM without an image (no pixel data: {kind}); a report or RT object, not a radiograph")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise DicomError(f"multi-frame DICOM ({frames} frames); one image per file is read")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise DicomError("DICOM file without a transfer syntax in its file meta information; cannot decode it")
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise DicomError(f"DICOM transfer syntax {syntax.name} ({syntax}) is not one pydicom decodes") from error
    if not decoder.is_available:
        plugin = next((name for prefix, name in _PLUGINS.items() if syntax.startswith(prefix)), None)
        advice = f"install {plugin} ({INSTALL})" if plugin else "no plugin of the dicom extra decodes it"
        raise DicomError(f"{syntax.name} compressed ({syntax}); {advice}", recheck=plugin is not None)


def to_8bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``values`` from ``low``..``high`` onto 0..255 (outside: clipped), rounded; all 0 where ``high <= low``."""
    if not high > low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.asarray(values, np.float64) - low) * (255.0 / (high - low))
    return np.clip(scaled.round(), 0, 255).astype(np.uint8)


def _voi_count(ds) -> int:
    """How many VOI LUTs or windows the file states (a VOI LUT Sequence first, as pydicom prefers it)."""
    if ds.get("VOILUTSequence"):
        return len(ds.VOILUTSequence)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        return ds["WindowCenter"].VM
    return 0


def _windowed(values: np.ndarray, ds, settings: DicomSettings, stored_bits: int) -> np.ndarray:
    """Modality-LUT output ``values`` through the VOI the settings choose, onto 8 bits."""
    from pydicom.pixels import apply_voi, apply_windowing

    count = _voi_count(ds) if settings.window == "file" else 0
    if count == 0:
        if stored_bits <= 8 and values.min() >= 0 and values.max() <= 255:
            return values.astype(np.uint8)  # 8-bit data as stored, like an 8-bit JPEG's
        return to_8bit(values, float(values.min()), float(values.max()))
    index = min(settings.voi, count) - 1
    if ds.get("VOILUTSequence"):
        entries, first, bits = (int(n) for n in ds.VOILUTSequence[index].LUTDescriptor)
        # Clipped to the LUT's inputs first, as the standard maps those outside: pydicom 3.0 indexes an 8-bit LUT
        # with 8-bit numbers, so an input past 255 would wrap round instead of taking the last entry.
        inputs = np.clip(values, first, first + (entries or 2**16) - 1)
        # The LUT's output range is what its descriptor's bits per entry allow (PS3.3 C.11.2.1.1).
        return to_8bit(apply_voi(inputs, ds, index), 0.0, float(2**bits - 1))
    # A window's output range is the one pydicom maps it onto; it maps the extremes to its ends.
    low, high = apply_windowing(np.array([-np.inf, np.inf]), ds, index)
    return to_8bit(apply_windowing(values, ds, index), float(low), float(high))


def read_dicom(source, settings: DicomSettings | None = None) -> np.ndarray:
    """The image of the DICOM file ``source`` (a path or a binary file) as uint8: ``(rows, columns)`` grey, or
    ``(rows, columns, 3)`` RGB; ``settings`` (default ``DicomSettings()``) choose the window.

    Raises:
        DicomError: no pydicom, no pixel data, several frames, a compressed syntax no installed plugin decodes,
            an unsupported photometric interpretation, or a file that cannot be read or decoded.
    """
    ds = _read(source)
    _check_decodable(ds)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB") and not photometric.startswith("YBR"):
        raise DicomError(f"DICOM photometric interpretation {photometric or 'missing'} is not read "
                         "(MONOCHROME1, MONOCHROME2, RGB and YBR are)")  # fmt: skip
    from pydicom.pixels import apply_modality_lut

    try:
        stored = ds.pixel_array  # YBR is converted to RGB here
        if stored.ndim == 3:
            return stored if stored.dtype == np.uint8 else to_8bit(stored, 0.0, float(2 ** int(ds.BitsStored) - 1))
        bits = int(ds.get("BitsStored") or stored.dtype.itemsize * 8)
        image = _windowed(apply_modality_lut(stored, ds), ds, settings or DicomSettings(), bits)
    except DicomError:
        raise
    except Exception as error:  # truncated or corrupt pixel data: the decoders raise many kinds
        raise DicomError(f"DICOM pixel data cannot be decoded: {error or type(error).__name__}") from error
    return 255 - image if photometric == "MONOCHROME1" else image


def dicom_size(data: bytes) -> tuple[int, int]:
    """Decode the DICOM file held in ``data`` completely and return its ``(width, height)``; ``DicomError`` as
    ``read_dicom``."""
    image = read_dicom(io.BytesIO(data))
    return image.shape[1], image.shape[0]


def header_attributes(path: Path) -> tuple[str, dict[str, str]]:
    """The patient id and the sex, age and view (``features.data.attributes`` forms) a DICOM header states, read
    without the pixel data; ``("", {})`` where pydicom is missing or the header cannot be read (the image check
    reports the file)."""
    try:
        ds = _read(path, stop_before_pixels=True)
    except DicomError:
        return "", {}
    values = {name: normalise(name, str(ds.get(keyword) or "")) for name, keyword in _HEADER.items()}
    patient = str(ds.get("PatientID") or "").strip()
    return patient, {name: values[name] for name in STANDARD_ATTRIBUTES if values[name]}


def write_dicom(
    path: str | Path,
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    syntax: str = "1.2.840.10008.1.2.1",
    **header,
) -> None:
    """Save ``stored`` (uint8 or uint16 grey, ``(rows, columns)`` or ``(frames, rows, columns)``) as a DICOM
    radiograph (Digital X-Ray, for presentation), for tools and tests that make DICOM copies of images.

    ``rescale`` is (slope, intercept), ``window`` (center, width); ``syntax`` the transfer syntax UID (default
    Explicit VR Little Endian; a compressed one is encoded by pydicom, RLE Lossless without any plugin);
    ``header`` sets any other element by keyword (``PatientID``, ``ViewPosition``, ``VOILUTSequence``).
    """
    pydicom = _pydicom()
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape[-2:]
    if stored.ndim == 3:
        ds.NumberOfFrames = stored.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, photometric, 0
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
