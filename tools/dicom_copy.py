"""Make a DICOM copy of one split of a Kermany-layout dataset, and compare its decoded pixels with the originals'.

    python -m tools.dicom_copy SRC DEST [--split test] [--syntax rle|jpeg2000] [--compare PX]

Every image of ``SRC/SPLIT/CLASS/`` becomes ``DEST/SPLIT/CLASS/<same stem>.dcm`` (the Kermany subtype stays in the
name) in the form a hospital's files take and the harness must undo: MONOCHROME1 (the stored values inverted),
12 bits stored (``(255 - v) * 16 + 8``) with the rescale slope 1/16 and intercept -0.5 that give the 8-bit value
back, a VOI window (center 128, width 256) mapping it onto 8 bits unchanged, and a compressed transfer syntax
(RLE Lossless, pydicom's own; JPEG 2000 Lossless where pylibjpeg-openjpeg can write it); the patient id is the one
the file name gives. The other splits of ``SRC`` are linked into ``DEST``, so a run on ``DEST`` differs from one on
``SRC`` only in that split's files. ``--compare PX`` then decodes every pair at PX pixels as a run does
(``load_image``) and prints the largest and the mean absolute difference and the share of identical pixels and
images. This is the acceptance check of issue 26 (docs/runs.md), not a run option.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from features.data.dataset import IMAGE_SUFFIXES, SPLITS, patient_of
from features.data.dicom import write_dicom
from features.data.images import load_image

SYNTAXES = {"rle": "1.2.840.10008.1.2.5", "jpeg2000": "1.2.840.10008.1.2.4.90"}


def dicom_twin(source: Path, target: Path, syntax: str) -> None:
    """Write the grey image of ``source`` to ``target`` as a MONOCHROME1, 12-bit, windowed, compressed DICOM file."""
    with Image.open(source) as image:
        grey = np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=np.uint16)
    write_dicom(target, (255 - grey) * 16 + 8, photometric="MONOCHROME1", bits_stored=12, rescale=(0.0625, -0.5),
                window=(128, 256), syntax=syntax, PatientID=patient_of(source.name))  # fmt: skip


def copy_split(src: Path, dest: Path, split: str, syntax: str) -> list[tuple[Path, Path]]:
    """Convert ``src/split`` into ``dest/split`` and link the other splits; the (original, copy) pairs."""
    pairs = []
    for source in sorted((src / split).glob("*/*")):
        if source.suffix.lower() in IMAGE_SUFFIXES:
            target = dest / source.relative_to(src).with_suffix(".dcm")
            dicom_twin(source, target, syntax)
            pairs.append((source, target))
    for other in SPLITS:
        if other != split and (src / other).is_dir() and not (dest / other).exists():
            (dest / other).symlink_to((src / other).resolve())
    return pairs


def compare(pairs: list[tuple[Path, Path]], size: int) -> str:
    """The pixel differences between each original and its copy, both decoded at ``size`` as a run decodes them."""
    diffs = [np.abs(load_image(a, size).astype(int) - load_image(b, size).astype(int)) for a, b in pairs]
    stacked = np.stack(diffs)
    return (f"{len(pairs)} images at {size} px: max |difference| {stacked.max()}, mean {stacked.mean():.4f}, "
            f"pixels identical {np.mean(stacked == 0):.2%}, images identical "
            f"{np.mean([not d.any() for d in diffs]):.2%}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, convert, compare; print what was done."""
    parser = argparse.ArgumentParser(prog="python -m tools.dicom_copy", description=__doc__.split("\n")[0])
    parser.add_argument("src", type=Path, help="a Kermany-layout dataset folder")
    parser.add_argument("dest", type=Path, help="the new folder (the converted split; links to the others)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="the split converted (default: test)")
    parser.add_argument("--syntax", default="rle", choices=tuple(SYNTAXES), help="the compression (default: rle)")
    parser.add_argument("--compare", type=int, metavar="PX", help="compare the decoded pixels at PX pixels")
    args = parser.parse_args(argv)
    pairs = copy_split(args.src, args.dest, args.split, SYNTAXES[args.syntax])
    print(f"{len(pairs)} images of {args.src / args.split} as DICOM ({args.syntax}) in {args.dest / args.split}")
    if args.compare:
        print(compare(pairs, args.compare))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
