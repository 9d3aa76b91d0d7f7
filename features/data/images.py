"""Decode one image file into the uint8 RGB square array a backbone eats."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from features.data.dicom import (
    DICOM_SUFFIXES,
    DicomError,
    dicom_size,
    has_dicom_magic,
    is_dicom,
    read_dicom,
    to_8bit,
)
from features.settings import DicomSettings

# Part of every feature cache key: bump it whenever the pixels this module
# produces change, so old caches stop matching.
DECODE_VERSION = "pil-exif-draft-rgb-bilinear-squash-v1"

# What Pillow raises on a file it cannot read: unknown format (UnidentifiedImageError
# is an OSError), truncated or broken data (OSError, sometimes SyntaxError or
# ValueError from a plugin), and more pixels than Image.MAX_IMAGE_PIXELS allows.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded; ``reason`` says why, in words. ``recheck``: it may decode once
    something is installed (pydicom, a DICOM decoder plugin), so the image check does not remember it."""

    def __init__(self, path: str | Path, reason: str, recheck: bool = False):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.recheck = recheck


def _reason(error: Exception) -> str:
    if isinstance(error, Image.DecompressionBombError):
        return f"too many pixels to decode safely ({error})"
    text = str(error)
    if text.startswith("cannot identify image file"):
        return "not an image Pillow can read (unknown or broken format)"
    return f"cannot be decoded: {text or type(error).__name__}"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float radiographs (PadChest's PNGs): the full used range onto 8 bits, as a DICOM file
        # without a window; nothing clipped.
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(to_8bit(array, float(array.min()), float(array.max())), mode="L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, the colour of "no tissue" on a radiograph.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


@contextmanager
def _open(source) -> Iterator[Image.Image]:
    with warnings.catch_warnings():
        # A "possible decompression bomb" warning is not news to the user of a 5000 px radiograph;
        # past twice the limit Pillow raises DecompressionBombError, which is reported.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(source) as image:
            yield image


def _square(image: Image.Image, size: int) -> np.ndarray:
    """``image`` as RGB, squashed to ``size`` x ``size`` (bilinear), as uint8."""
    image = _to_rgb(image)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _decode(source, size: int) -> np.ndarray:
    with _open(source) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        return _square(ImageOps.exif_transpose(image), size)


def load_image(path: str | Path, size: int, dicom: DicomSettings | None = None) -> np.ndarray:
    """Read ``path`` as a ``(size, size, 3)`` uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, alpha, CMYK and 16-bit
    images become 8-bit RGB; the image is squashed to a square with bilinear
    resampling, like ``keras.utils.load_img``. Large JPEGs are decoded at a
    reduced scale first (draft mode), which is much faster and still larger
    than the target size. A DICOM file (``features.data.dicom``; by its name or its signature, whatever its
    suffix) is windowed onto 8 bits as ``dicom`` says (default: the file's first window), then squashed alike.

    Raises:
        UnreadableImageError: the file is empty, not an image, truncated or broken; a DICOM file not read.
    """
    try:
        if is_dicom(Path(path)):
            return _square(Image.fromarray(read_dicom(path, dicom or DicomSettings())), size)
        return _decode(path, size)
    except DicomError as error:
        raise UnreadableImageError(path, error.reason, error.recheck) from error
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(path, _reason(error)) from error


def inspect_image(data: bytes, name: str = "image") -> tuple[int, int]:
    """Decode the image in ``data`` completely (at a small scale) and return its ``(width, height)``.

    Every byte of the compressed stream is read, so a truncated or broken file
    fails here rather than half-way through an extraction.

    Raises:
        UnreadableImageError: as ``load_image``.
    """
    if not data:
        raise UnreadableImageError(name, "empty file (0 bytes)")
    if has_dicom_magic(data) or Path(name).suffix.lower() in DICOM_SUFFIXES:
        try:
            return dicom_size(data)
        except DicomError as error:
            raise UnreadableImageError(name, error.reason, error.recheck) from error
    try:
        with _open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.format == "JPEG":
                image.draft(image.mode, (32, 32))  # the DCT still reads every block, at 1/8 the work
            image.load()
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(name, _reason(error)) from error
    return width, height
