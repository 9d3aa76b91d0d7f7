"""Deterministic synthetic chest-radiograph phantoms for offline demo runs.

The harness falls back to this set when no real dataset is available, so the
whole pipeline (loading, transfer learning, evaluation, reporting) can be shown
end to end on a machine without network access. The images are drawn from a
simple parametric model of a frontal chest radiograph; they are NOT medical data
and any metric computed on them says nothing about clinical performance.

The output mirrors the Kermany et al. (2018) folder layout::

    root/{train,val,test}/NORMAL/phantom-normal-00001.jpeg
    root/{train,val,test}/PNEUMONIA/phantom-00001_bacteria.jpeg
    root/{train,val,test}/PNEUMONIA/phantom-00001_virus.jpeg

so the same loader (which derives bacterial/viral labels from the file names)
handles both the real and the phantom data.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from common.files import atomic_folder

__all__ = [
    "CLASSES",
    "DEFAULT_PER_CLASS",
    "MARKER_NAME",
    "PHANTOM_VERSION",
    "PhantomImage",
    "describe",
    "make_phantom_dataset",
    "phantom_filename",
    "render_phantom",
]

# Bump whenever the rendering changes in a way that alters pixels: the marker
# comparison then forces a regeneration of stale cached sets.
PHANTOM_VERSION = "cxr-phantom-1.0"

#: Phantom classes, in the order used for seeding (never reorder: it would
#: change every image).
CLASSES: tuple[str, ...] = ("normal", "bacteria", "virus")

#: Images per class per split (read-only; pass your own ``per_class`` to
#: change it). The tiny ``val`` split mirrors the real dataset's 16-image
#: official validation folder; the harness carves its own validation split out
#: of ``train``. 3 classes x 84 = 252 images.
DEFAULT_PER_CLASS: Mapping[str, int] = MappingProxyType({"train": 60, "val": 4, "test": 20})

MARKER_NAME = "PHANTOM.json"
README_NAME = "README.txt"
JPEG_QUALITY = 92

_CLASS_FOLDER = {"normal": "NORMAL", "bacteria": "PNEUMONIA", "virus": "PNEUMONIA"}


@dataclass(frozen=True)
class PhantomImage:
    """One rendered phantom: 8-bit grayscale pixels plus its ground-truth lung mask."""

    pixels: np.ndarray  # (H, W) uint8
    lung_mask: np.ndarray  # (H, W) bool, both lung fields minus the heart shadow
    label: str


def describe() -> str:
    """Return a one-paragraph, user-facing description of the phantom set."""
    return (
        "No dataset was found, so this run uses the built-in SYNTHETIC PHANTOM set "
        f"({PHANTOM_VERSION}): procedurally drawn, chest-radiograph-like images "
        "(body outline, lung fields, heart and mediastinum, clavicles, ribs, "
        "diaphragm, vascular markings) in three classes: normal lungs, a focal "
        "lobar-style consolidation labelled 'bacteria', and a bilateral perihilar "
        "interstitial pattern labelled 'virus'. Every image is generated "
        "deterministically from a seed with random patient size, position, "
        "rotation, exposure and noise. These images are NOT medical data: they "
        "exist only to exercise the pipeline end to end, and accuracy, AUC or any "
        "other number measured on them says nothing about performance on real "
        "radiographs."
    )


def phantom_filename(label: str, index: int) -> str:
    """Return the Kermany-style file name for the ``index``-th (1-based) image of ``label``."""
    if label == "normal":
        return f"phantom-normal-{index:05d}.jpeg"
    if label in ("bacteria", "virus"):
        return f"phantom-{index:05d}_{label}.jpeg"
    raise ValueError(f"unknown phantom class {label!r}; expected one of {CLASSES}")


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

# float32 throughout: the images end up 8-bit, and float32 halves the memory
# traffic of every array pass, which is what bounds the generation time.
_F = np.float32


def _image_rng(seed: int, split: str, label: str, index: int) -> np.random.Generator:
    # crc32 rather than hash(): str hashing is salted per process, and the key
    # must be stable across runs and machines. Each image gets its own stream,
    # so growing one split never perturbs the images already there.
    key = [int(seed), zlib.crc32(split.encode()), CLASSES.index(label), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres in [-1, 1] (x to the right, y downwards). Cached and
    # shared by every image of one size, hence read-only.
    c = ((np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0).astype(_F)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return _readonly(xx), _readonly(yy)


@functools.lru_cache(maxsize=32)
def _interp_matrix(n: int, m: int) -> np.ndarray:
    # Gaussian weights from m coarse knots (spacing s, one knot beyond each
    # edge) to n pixels. K @ G @ K.T of coarse white noise G is smooth noise
    # band-limited to about 1/(2s) cycles per image: two small matrix
    # products instead of two full-size FFTs per noise field.
    s = 1.0 / (m - 3)
    x = (np.arange(n) + 0.5) / n
    knots = (np.arange(m) - 1.0) * s
    k = np.exp(-0.5 * ((x[:, None] - knots[None, :]) / (0.7 * s)) ** 2)
    # Tiny weights would become float32 denormals, which make the matrix
    # products tens of times slower; they contribute nothing visible.
    k[k < 1e-6] = 0.0
    return _readonly(k.astype(_F))


@functools.lru_cache(maxsize=32)
def _interp_matrix_t(n: int, m: int) -> np.ndarray:
    return _readonly(np.ascontiguousarray(_interp_matrix(n, m).T))


def _matmul_small(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in row blocks small enough that OpenBLAS stays single-threaded.

    Its worker threads spin against our image threads (and anything else on a
    2-core box) and can make one product a hundred times slower than the
    arithmetic needs; the blocks are each a few microseconds of work.
    """
    rows = max(1, 200_000 // (a.shape[1] * b.shape[1]))
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for r0 in range(0, a.shape[0], rows):
        np.matmul(a[r0 : r0 + rows], b, out=out[r0 : r0 + rows])
    return out


def _smooth_noise(rng: np.random.Generator, n: int, cycles: float) -> np.ndarray:
    """Smooth Gaussian noise field, unit std, with detail up to ``cycles`` per image width.

    Frequencies are in image units, so the texture scales with ``image_size``
    instead of with pixels (capped below the pixel Nyquist limit).
    """
    cycles = min(cycles, n / 4.0)
    m = int(round(2.0 * cycles)) + 3
    k = _interp_matrix(n, m)
    out = _matmul_small(_matmul_small(k, rng.standard_normal((m, m), dtype=_F)), _interp_matrix_t(n, m))
    out *= 1.0 / (float(out.std()) + 1e-6)
    return out


def _soft(sd: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-mask from a signed distance (positive inside): a linear ramp ``width`` wide.

    A ramp rather than a smoothstep: it is three array passes instead of
    seven, and the detector blur hides the difference.
    """
    t = sd * (1.0 / width)
    t += 0.5
    np.clip(t, 0.0, 1.0, out=t)
    return t


def _bump(x: np.ndarray, width: float) -> np.ndarray:
    """Gaussian ridge exp(-(x / width)^2)."""
    t = x * x
    # Capped at exp(-30) (invisible): far tails would otherwise reach float32
    # denormals, alone or once multiplied by other small factors, and
    # arithmetic on denormals is many times slower than on normal numbers.
    np.minimum(t, 30.0 * width * width, out=t)
    t *= -1.0 / (width * width)
    return np.exp(t, out=t)


def _blur3(a: np.ndarray) -> np.ndarray:
    # Separable [1, 2, 1] binomial kernel: a cheap detector blur.
    p = np.pad(a, 1, mode="edge")
    h = p[:, :-2] + p[:, 1:-1] * 2.0 + p[:, 2:]
    return (h[:-2] + h[1:-1] * 2.0 + h[2:]) * (1.0 / 16.0)


def _radial_streaks(
    rng: np.random.Generator,
    phi: np.ndarray,
    r: np.ndarray,
    n_bins: int,
    len_range: tuple[float, float],
    width_range: tuple[float, float],
    group: np.ndarray | None = None,
) -> np.ndarray:
    """Thin lines radiating from a centre: one per angular bin, random strength, length and width.

    Used for vascular markings and air bronchograms; a line per bin is much
    cheaper than drawing branching trees and reads the same at 224 px.
    ``group`` (bool map) gives the two lungs independent sets of lines.
    Widths are physical (image half-widths), measured along the arc.
    """
    bin_pos = phi * (n_bins / (2.0 * np.pi)) + 0.5 * n_bins
    bin_start = np.floor(bin_pos)
    w = bin_pos - bin_start
    # Clip, not modulo: integer % is an order of magnitude slower than a clip,
    # and the only angles past +-pi (from the warp) point medially, where no
    # lung is drawn.
    idx = bin_start.astype(np.intp)
    np.clip(idx, 0, n_bins - 1, out=idx)
    n_tab = n_bins
    if group is not None:
        np.add(idx, n_bins, out=idx, where=group)
        n_tab = 2 * n_bins

    def table(lo: float, hi: float) -> np.ndarray:
        # 1-D takes: a single 2-D fancy index over a stacked table is ~5x slower.
        return np.take(rng.uniform(lo, hi, n_tab).astype(_F), idx)

    strength = table(0.2, 1.0)
    length = table(*len_range)
    w -= table(0.3, 0.7)  # line position inside its bin
    # Arc distance (angle x radius) over width, so lines stay thin all the way
    # out instead of fanning out like wedges.
    w *= (r + 0.02) * (2.0 * np.pi / n_bins)
    w *= table(1.0 / width_range[1], 1.0 / width_range[0])
    prof = _bump(w, 1.0)
    prof *= strength
    prof *= _soft(length - r, 0.1)
    return prof


def _uniform(rng: np.random.Generator) -> Callable[[float, float], float]:
    """``u(lo, hi)``: one uniform draw from ``rng``, as a Python float.

    Python floats keep the arithmetic in float32 (NEP 50); numpy float64
    scalars would silently promote every array to float64.
    """
    return lambda lo, hi: float(rng.uniform(lo, hi))


@dataclass(frozen=True)
class _Frame:
    """Pixel coordinates in the patient's own frame (after pose), shared by every anatomical layer."""

    px: np.ndarray  # lateral, > 0 towards the image right (the patient's left)
    py: np.ndarray  # cranio-caudal, > 0 downwards
    ax: np.ndarray  # |px|: lateral distance from the midline
    left: np.ndarray  # bool, the patient's left hemithorax

    def per_side(self, right_val: float, left_val: float) -> np.ndarray:
        """A map holding ``right_val`` on the patient's right and ``left_val`` on the left."""
        return np.where(self.left, _F(left_val), _F(right_val))


@dataclass(frozen=True)
class _Lungs:
    """Both lung fields, with the geometry the pathology is placed by."""

    mask: np.ndarray  # soft inside-mask, heart and aortic knob removed
    depth: np.ndarray  # air darkness the lungs subtract, per pixel
    y_top: float
    y_bot: float
    medial: float
    geom: list[tuple[float, float, float]]  # per side: (sign of px, diaphragm height, width)


def render_phantom(label: str, rng: np.random.Generator, image_size: int = 224) -> PhantomImage:
    """Render one phantom radiograph of class ``label`` using ``rng``.

    ``label`` is one of :data:`CLASSES`. The result is deterministic given the
    generator state. Intensities follow radiograph convention (bright = more
    attenuation): pathology adds opacity inside the lungs and is the only thing
    that differs systematically between the classes. Two generators in the
    same state give the same patient, pose, exposure and noise whatever the
    label, so ``render_phantom("normal", ...)`` and ``render_phantom("virus",
    ...)`` from equal seeds differ only by the pathology.
    """
    if label not in CLASSES:
        raise ValueError(f"unknown phantom class {label!r}; expected one of {CLASSES}")
    n = int(image_size)
    xx, yy = _grid(n)
    # Separate streams for the patient and the disease: the number of draws a
    # pathology makes must not shift the exposure and noise drawn after it.
    # The layers below draw from ``rng`` in this order, which fixes every image.
    rng, disease_rng = rng.spawn(2)
    frame = _patient_frame(rng, xx, yy)
    img, body, body_w = _soft_tissue(rng, frame)
    lungs = _lung_fields(rng, frame)
    img -= lungs.mask * lungs.depth
    _add_spine_and_trachea(img, frame, body, lungs)
    _add_bones(img, rng, frame, body, body_w, lungs)
    _add_vessels(img, rng, n, frame, lungs)
    _add_pathology(img, label, disease_rng, n, frame, lungs)
    _add_gas_bubble(img, rng, frame, body, lungs.y_bot)
    pixels = _expose(img, rng, xx, yy)
    return PhantomImage(pixels=pixels, lung_mask=lungs.mask > 0.5, label=label)


def _patient_frame(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> _Frame:
    """Rotate, scale and shift the image grid into the patient's frame.

    The classifier should see lungs at slightly different places and sizes, so
    absolute pixel position is not a class cue.
    """
    u = _uniform(rng)
    theta = math.radians(u(-4.0, 4.0))
    scale = u(0.86, 1.0)
    tx, ty = u(-0.06, 0.06), u(-0.05, 0.07)
    ct, st = math.cos(theta) / scale, math.sin(theta) / scale
    dx, dy = xx - tx, yy - ty
    px = dx * ct + dy * st
    py = dy * ct - dx * st
    return _Frame(px=px, py=py, ax=np.abs(px), left=px > 0.0)


def _soft_tissue(rng: np.random.Generator, frame: _Frame) -> tuple[np.ndarray, np.ndarray, float]:
    """The body outline and its soft-tissue brightness: ``(image, body mask, body width)``."""
    u = _uniform(rng)
    px, py = frame.px, frame.py
    # A superellipse gives rounded shoulders rather than an egg outline.
    body_w = u(0.95, 1.08)
    bx, by = px * (1.0 / body_w), (py - 0.18) * (1.0 / 1.2)
    b2, by2 = bx * bx, by * by
    rb = np.sqrt(np.sqrt(b2 * b2 + by2 * by2))
    neck = _soft(0.3 - np.abs(px) - 0.5 * np.maximum(py + 0.8, 0.0), 0.1) * _soft(-0.5 - py, 0.3)
    body = np.maximum(_soft(1.0 - rb, 0.05), neck)
    # Thicker centre attenuates more than the thin lateral chest wall; the
    # mediastinum, heart and abdomen then share the central brightness, as on
    # a real film.
    img = body * (0.4 + 0.26 * np.sqrt(np.maximum(1.0 - np.abs(bx), 0.0))) + 0.04
    return img, body, body_w


def _lung_fields(rng: np.random.Generator, frame: _Frame) -> _Lungs:
    """Both lung fields, minus the heart shadow, with the darkness their air gives."""
    u = _uniform(rng)
    py, ax = frame.py, frame.ax
    # Both hemithoraces are drawn in one pass over |x| with per-side parameter
    # maps, which halves the array work of drawing each side on its own.
    lung_w = u(0.6, 0.7)
    y_top = u(-0.74, -0.64)
    y_bot = u(0.42, 0.54)
    medial = u(0.09, 0.13)
    dome = u(0.10, 0.17)
    lung_depth = u(0.34, 0.42)
    # The patient's right hemidiaphragm (image left) sits a little higher.
    yb_r, yb_l = y_bot - 0.04 + u(-0.02, 0.02), y_bot + u(-0.02, 0.02)
    w_r, w_l = lung_w * u(0.94, 1.04), lung_w * u(0.94, 1.04)
    yb, w_side = frame.per_side(yb_r, yb_l), frame.per_side(w_r, w_l)
    t = np.clip((py - y_top) / (yb - y_top), 0.0, 1.0)
    lateral = np.sqrt(t) * (1.0 - 0.08 * t) * w_side + medial
    uu = np.clip((ax - medial) * 1.1 / w_side, 0.0, 1.0)
    bottom = yb - dome * np.sqrt(np.maximum(np.sin(uu * np.pi), 0.0))
    lung = _soft(np.minimum(np.minimum(lateral - ax, ax - medial), np.minimum(bottom - py, py - y_top)), 0.035)
    lung *= 1.0 - _heart_shadow(rng, frame, y_top, y_bot, medial)
    # Apices are covered by more soft tissue, so they are less dark.
    depth = np.clip((py - y_top) * (1.0 / 0.55), 0.0, 1.0) * (0.28 * lung_depth) + 0.72 * lung_depth
    geom = [(-1.0, yb_r, w_r), (1.0, yb_l, w_l)]
    return _Lungs(mask=lung, depth=depth, y_top=y_top, y_bot=y_bot, medial=medial, geom=geom)


def _heart_shadow(rng: np.random.Generator, frame: _Frame, y_top: float, y_bot: float, medial: float) -> np.ndarray:
    """Soft mask of the heart and the aortic knob, which hide the lung behind them.

    The heart lies mostly on the patient's left (image right), overlapping the
    lung and sitting on the diaphragm; the aortic knob bulges above it.
    """
    u = _uniform(rng)
    px, py = frame.px, frame.py
    hcx, hcy = u(0.1, 0.16), y_bot + u(-0.2, -0.14)
    hrx, hry = u(0.33, 0.4), u(0.22, 0.27)
    hx_, hy_ = px - hcx, py - hcy
    hx_, hy_ = (hx_ * 0.94 + hy_ * 0.34) * (1.0 / hrx), (hy_ * 0.94 - hx_ * 0.34) * (1.0 / hry)
    heart = _soft(1.0 - np.sqrt(hx_ * hx_ + hy_ * hy_), 0.1)
    kx, ky = px - (medial + 0.02), py - (y_top + 0.3)
    knob = _soft(1.0 - np.sqrt(kx * kx + ky * ky) * (1.0 / 0.06), 0.5)
    return np.maximum(heart, knob)


def _add_spine_and_trachea(img: np.ndarray, frame: _Frame, body: np.ndarray, lungs: _Lungs) -> None:
    """Add to ``img`` the vertebrae, faint through the mediastinum, and the dark tracheal air column."""
    px, py = frame.px, frame.py
    spine = _soft(0.07 - frame.ax, 0.04) * (np.cos(py * (2 * np.pi / 0.11)) * 0.25 + 0.75)
    img += spine * body * (1.0 - lungs.mask) * 0.035
    trachea = _soft(0.03 - np.abs(px - 0.02 * (py + 1.0)), 0.03) * _soft(lungs.y_top + 0.25 - py, 0.2)
    img -= trachea * body * 0.08


def _add_bones(
    img: np.ndarray, rng: np.random.Generator, frame: _Frame, body: np.ndarray, body_w: float, lungs: _Lungs
) -> None:
    """Add to ``img`` the posterior and anterior ribs and the clavicles."""
    u = _uniform(rng)
    py, ax, per_side, y_top = frame.py, frame.ax, frame.per_side, lungs.y_top
    rib_sp = u(0.1, 0.12)
    # Posterior ribs arch out from the spine and drop steeply laterally.
    q = (py - (ax * ax * 0.95 - ax * 0.22) - per_side(u(0.0, rib_sp), u(0.0, rib_sp))) * (1.0 / rib_sp)
    bones = _bump(q - np.floor(q) - 0.5, 0.17) * 0.09
    # Anterior ribs run down towards the sternum, fainter.
    q = (py - (ax * ax * 0.3 - ax * 0.6) - per_side(u(0.0, rib_sp), u(0.0, rib_sp))) * (1.0 / (1.2 * rib_sp))
    bones += _bump(q - np.floor(q) - 0.5, 0.13) * 0.04
    bones *= _soft(np.minimum(ax - 0.05, 0.8 * body_w - ax), 0.08)
    # Clavicles: gently S-shaped bands rising towards the shoulders.
    c0 = ax - 0.05
    yc = c0 * c0 * 0.3 - c0 * 0.45 + per_side(u(-0.03, 0.03), u(-0.03, 0.03)) + (y_top + 0.06)
    bones += _bump(py - yc, 0.038) * _soft(np.minimum(c0, 0.6 - c0), 0.08) * (0.1 / 0.3)
    # Bone contrast is far higher against air than against soft tissue.
    thorax_v = _soft(py - y_top + 0.12, 0.1) * _soft(lungs.y_bot - 0.02 - py, 0.2)
    img += bones * thorax_v * (lungs.mask * 0.7 + 0.3) * body * u(0.8, 1.2)


def _add_vessels(img: np.ndarray, rng: np.random.Generator, n: int, frame: _Frame, lungs: _Lungs) -> None:
    """Add to ``img`` the vascular markings fanning out from each hilum (every class has them)."""
    u = _uniform(rng)
    medial = lungs.medial
    hx = frame.per_side(medial + u(0.05, 0.09), medial + u(0.05, 0.09))
    hy = frame.per_side(u(-0.12, -0.02), u(-0.12, -0.02))
    vx, vy = frame.ax - hx, frame.py - hy
    r = np.sqrt(vx * vx + vy * vy)
    phi = np.arctan2(vy, vx) + _smooth_noise(rng, n, 2.0) * 0.12
    vessels = _radial_streaks(rng, phi, r, 64, (0.12, 0.6), (0.009, 0.018), frame.left)
    vessels *= np.exp(r * (-1.0 / 0.3))
    vessels *= _soft(r - 0.07, 0.08)  # no starburst at the hilum itself
    vessels += _bump(r, 0.08)  # hilar shadow
    img += lungs.mask * vessels * 0.15


def _add_pathology(img: np.ndarray, label: str, rng: np.random.Generator, n: int, frame: _Frame, lungs: _Lungs) -> None:
    """Add to ``img`` the opacity of ``label``'s disease (nothing for ``normal``), drawn from its own ``rng``."""
    if label == "bacteria":
        opacity = _consolidation(rng, n, frame.px, frame.py, lungs.geom, lungs.y_top, lungs.medial)
    elif label == "virus":
        opacity = _interstitial(rng, n, frame.px, frame.py)
    else:
        return
    # Opacity fills in the lung's air darkness, so a dense consolidation
    # approaches soft-tissue brightness but never exceeds it.
    img += lungs.mask * lungs.depth * np.clip(opacity, 0.0, 0.95)


def _add_gas_bubble(img: np.ndarray, rng: np.random.Generator, frame: _Frame, body: np.ndarray, y_bot: float) -> None:
    """In some patients of every class, add the gas bubble under the left hemidiaphragm."""
    u = _uniform(rng)
    if rng.random() < 0.6:
        gx, gy = (frame.px - u(0.3, 0.45)) * (1.0 / 0.1), (frame.py - y_bot - u(0.07, 0.14)) * (1.0 / 0.06)
        img -= _soft(1.0 - np.sqrt(gx * gx + gy * gy), 0.4) * body * 0.12


def _expose(img: np.ndarray, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Acquire ``img`` (changed in place): exposure, vignetting, noise, detector blur, gamma; 8-bit pixels."""
    u = _uniform(rng)
    n = img.shape[0]
    lo, hi = u(0.0, 0.05), u(0.84, 0.94)
    img -= lo
    img *= (1.0 - u(0.05, 0.2) * 0.5 * (xx * xx + yy * yy)) * (1.0 / (hi - lo))
    img += rng.standard_normal((n, n), dtype=_F) * u(0.014, 0.026) + u(-0.03, 0.03)
    # Detector blur also softens the quantum noise, as on a real film.
    for _ in range(max(1, round(n / 224))):
        img += (_blur3(img) - img) * u(0.5, 1.0)
    np.clip(img, 0.0, 1.0, out=img)
    # Gamma through a lookup table: a power on every pixel is slow.
    lut = np.rint(255.0 * np.linspace(0.0, 1.0, 1024) ** u(0.8, 1.25)).astype(np.uint8)
    return lut[(img * 1023.0 + 0.5).astype(np.intp)]


def _consolidation(rng, n, px, py, lung_geom, y_top, medial) -> np.ndarray:
    """Lobar-style opacity: one or two dense, fairly well-bounded blobs in one lung."""
    sgn, yb, w_side = lung_geom[int(rng.integers(0, 2))]
    ax = px * sgn
    out = np.zeros_like(px)
    n_blobs = 1 if rng.random() < 0.7 else 2
    severity = float(rng.uniform(0.5, 0.95))
    for _ in range(n_blobs):
        # Lower and middle zones are favoured, as in lobar pneumonia.
        t = float(rng.uniform(0.3, 0.9))
        cy = y_top + t * (yb - 0.12 - y_top)
        lat = medial + w_side * math.sqrt(t)
        cx = medial + float(rng.uniform(0.25, 0.75)) * (lat - medial)
        rx, ry = float(rng.uniform(0.11, 0.24)), float(rng.uniform(0.09, 0.19))
        ang = float(rng.uniform(0, np.pi))
        ca, sa = math.cos(ang), math.sin(ang)
        dx, dy = ax - cx, py - cy
        bu = (dx * ca + dy * sa) * (1.0 / rx)
        bv = (dy * ca - dx * sa) * (1.0 / ry)
        rho = np.sqrt(bu * bu + bv * bv)
        # Lobulated outline rather than a perfect ellipse: radius modulated
        # by a few angular harmonics.
        a = np.arctan2(bv, bu)
        edge = np.ones_like(rho)
        for k in range(2, 6):
            edge += np.cos(a * k + float(rng.uniform(0, 2 * np.pi))) * float(rng.uniform(0, 0.12))
        blob = _soft(edge - rho, float(rng.uniform(0.15, 0.35)))
        if rng.random() < 0.35:
            # A fissure gives one straight, sharp margin.
            fy = cy + float(rng.uniform(-0.4, 0.1)) * ry
            blob *= _soft(py - fy if rng.random() < 0.7 else fy - py, 0.03)
        blob *= _smooth_noise(rng, n, 7.0) * 0.15 + 0.85  # mottled, not uniform
        np.maximum(out, blob * severity, out=out)
    if rng.random() < 0.6:
        # Air bronchograms: dark branching lines radiating from the hilum
        # through the consolidated lobe.
        bx, by = ax - 0.17, py + 0.05
        r = np.sqrt(bx * bx + by * by)
        br = _radial_streaks(rng, np.arctan2(by, bx), r, 60, (0.3, 0.7), (0.008, 0.012))
        out *= 1.0 - br * (out > 0.3 * severity) * 0.45
    return out


def _interstitial(rng, n, px, py) -> np.ndarray:
    """Viral-style pattern: bilateral perihilar haze with a fine reticular net."""
    severity = float(rng.uniform(0.45, 1.0))
    env = np.zeros_like(px)
    for sgn in (-1.0, 1.0):
        hx, hy = sgn * float(rng.uniform(0.2, 0.3)), float(rng.uniform(-0.05, 0.1))
        sx, sy = float(rng.uniform(0.25, 0.38)), float(rng.uniform(0.4, 0.55))
        ex, ey = (px - hx) * (1.0 / sx), (py - hy) * (1.0 / sy)
        env += np.exp(-(ex * ex + ey * ey)) * float(rng.uniform(0.7, 1.0))
    np.minimum(env, 1.0, out=env)
    # Zero crossings of smooth noise form a connected net of thin lines,
    # which reads as a reticular interstitial pattern.
    net = _bump(_smooth_noise(rng, n, float(rng.uniform(28.0, 36.0))), 0.5) * 0.75
    # Fine nodular grain on top of the net (reticulonodular rather than clean lines).
    net += np.maximum(_smooth_noise(rng, n, 60.0), 0.0) * 0.15
    net += np.clip(_smooth_noise(rng, n, 3.0), -1.0, 1.0) * 0.1 + 0.15  # patchy haze
    net *= env
    net *= severity
    return net


# --------------------------------------------------------------------------
# Dataset writer
# --------------------------------------------------------------------------


def _normalise_per_class(per_class: Mapping[str, int] | None) -> dict[str, int]:
    src = DEFAULT_PER_CLASS if per_class is None else per_class
    out: dict[str, int] = {}
    for split, count in src.items():
        if not isinstance(split, str) or not split or split in (".", "..") or "/" in split or "\\" in split:
            raise ValueError(f"invalid split name {split!r}")
        if isinstance(count, bool) or int(count) != count or count < 0:
            raise ValueError(f"per_class[{split!r}] must be a non-negative integer, got {count!r}")
        out[split] = int(count)
    return out


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _count_images(root: Path) -> int:
    return sum(1 for _ in root.glob("*/*/*.jpeg"))


def _readme(params: dict, file_count: int) -> str:
    return (
        "SYNTHETIC PHANTOM IMAGES - NOT MEDICAL DATA\n"
        "===========================================\n\n"
        "Every image in this folder was generated by a computer program\n"
        f"(features/data/phantom.py, generator {PHANTOM_VERSION}). None of them comes from a\n"
        "patient, and none may be used for any clinical, diagnostic or research\n"
        "purpose. Results measured on them say nothing about real radiographs.\n\n"
        "How they were made: each image is a procedural drawing of a frontal chest\n"
        "radiograph (body outline, two lung fields, heart and mediastinum, spine,\n"
        "clavicles, ribs, diaphragm domes, vascular markings) with random patient\n"
        "size, position, rotation, exposure, blur and noise. Images labelled\n"
        "'bacteria' add one or two dense focal opacities in one lung (sometimes with\n"
        "dark air-bronchogram lines); images labelled 'virus' add a bilateral\n"
        "perihilar haze with a fine reticular net. Each image is seeded from\n"
        "(seed, split, class, index) with numpy's SeedSequence, so the set is\n"
        "reproducible.\n\n"
        f"Parameters: {json.dumps(params, sort_keys=True)}\n"
        f"Images: {file_count}\n"
    )


def make_phantom_dataset(
    root: Path,
    *,
    per_class: Mapping[str, int] | None = None,
    image_size: int = 224,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write the phantom dataset under ``root`` in the Kermany folder layout and return ``root``.

    ``per_class`` maps split name to images per class in that split (default
    :data:`DEFAULT_PER_CLASS`). Generation is deterministic in ``(seed, split,
    class, index)``. If ``root`` already holds a complete phantom set made with
    the same version and parameters, nothing is written. Otherwise the set is
    built in a temporary folder beside ``root`` and renamed into place, so an
    interrupted run never leaves a half-written dataset behind. A non-empty
    ``root`` that is not a phantom set is never touched (``FileExistsError``).
    """
    root = Path(root)
    counts = _normalise_per_class(per_class)
    image_size = int(image_size)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    params = {"per_class": counts, "image_size": image_size, "seed": int(seed)}
    expected = sum(counts.values()) * len(CLASSES)
    if _is_complete_set(root, params, expected):
        return root
    with atomic_folder(root) as temp:
        written = _write_images(temp, counts, seed=seed, image_size=image_size, expected=expected, progress=progress)
        (temp / README_NAME).write_text(_readme(params, written), encoding="utf-8")
        marker = {
            "version": PHANTOM_VERSION,
            "params": params,
            "file_count": written,
            "note": "synthetic phantom images made by features/data/phantom.py; NOT medical data",
        }
        # The marker goes in last: its presence means the set is complete.
        (temp / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return root


def _is_complete_set(root: Path, params: dict, expected: int) -> bool:
    """Whether ``root`` already holds this exact phantom set; raise if it holds something else."""
    if not root.exists():
        return False
    marker = _read_marker(root)
    if marker is None:
        if not root.is_dir() or any(root.iterdir()):
            raise FileExistsError(f"{root} exists and is not a phantom dataset; refusing to overwrite it")
        return False
    return (
        marker.get("version") == PHANTOM_VERSION
        and marker.get("params") == params
        and marker.get("file_count") == expected == _count_images(root)
    )


def _write_images(
    folder: Path, counts: dict[str, int], *, seed: int, image_size: int, expected: int, progress: bool
) -> int:
    """Render and save every image of every split under ``folder``; return how many were written."""
    started = time.perf_counter()
    written = 0
    # Threads, not processes: numpy and Pillow release the GIL for the
    # heavy work, and there is no pickling or worker start-up cost. Every
    # image has its own RNG stream, so the pool cannot affect the output.
    with ThreadPoolExecutor(max_workers=_n_workers()) as pool:
        for split, count in counts.items():
            jobs = []
            for label in CLASSES:
                class_folder = folder / split / _CLASS_FOLDER[label]
                class_folder.mkdir(parents=True, exist_ok=True)
                jobs += [(label, index, class_folder) for index in range(1, count + 1)]
            write = functools.partial(_write_one, split=split, seed=seed, image_size=image_size)
            for _ in pool.map(write, jobs):
                written += 1
            if progress:
                print(
                    f"phantom: {split}: {len(jobs)} images ({written}/{expected}, "
                    f"{time.perf_counter() - started:.1f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    return written


def _n_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS / Windows
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def _write_one(job: tuple[str, int, Path], split: str, seed: int, image_size: int) -> None:
    label, index, folder = job
    img = render_phantom(label, _image_rng(seed, split, label, index), image_size)
    Image.fromarray(img.pixels).save(folder / phantom_filename(label, index), "JPEG", quality=JPEG_QUALITY)
