"""Decode one image file into the uint8 RGB square array a backbone eats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Part of every feature cache key: bump it whenever the pixels this module
# produces change, so old caches stop matching.
DECODE_VERSION = "pil-exif-draft-rgb-bilinear-squash-v1"


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float radiographs: stretch the used range onto 8 bits.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, the colour of "no tissue" on a radiograph.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read ``path`` as a ``(size, size, 3)`` uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, alpha, CMYK and 16-bit
    images become 8-bit RGB; the image is squashed to a square with bilinear
    resampling, like ``keras.utils.load_img``. Large JPEGs are decoded at a
    reduced scale first (draft mode), which is much faster and still larger
    than the target size.
    """
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
