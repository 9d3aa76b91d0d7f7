"""Messy image files: each one loads correctly, or is skipped and listed with its reason; the run goes on."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_small_benchmark
from PIL import Image

from features.data import audit as audit_module
from features.data.audit import audit_images
from features.data.dataset import scan_dataset
from features.data.images import UnreadableImageError, load_image

GRADIENT = np.tile(np.linspace(10, 240, 64, dtype=np.uint8), (48, 1))  # 48 rows x 64 columns, dark left


def _jpeg_bytes(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


def _save(path: Path, image: Image.Image, fmt: str, **save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **save)


# name -> (writer, expected): expected is a reason fragment for a skipped file, or a
# function checking the 32 x 32 decoded array for a file that must load.
def _truncated(path: Path) -> None:
    path.write_bytes(_jpeg_bytes(GRADIENT)[:-300])


def _corrupt(path: Path) -> None:
    data = bytearray(_jpeg_bytes(GRADIENT))
    data[300:340] = bytes(40)  # zeroed entropy-coded data
    path.write_bytes(bytes(data))


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels must be turned 90 degrees clockwise to display
    path.write_bytes(_jpeg_bytes(GRADIENT, exif=exif.tobytes()))


def _is_left_to_right_gradient(array: np.ndarray) -> bool:
    grey = array.mean(axis=2)
    return grey[:, -1].mean() > grey[:, 0].mean() + 150 and np.ptp(grey.mean(axis=1)) < 10


def _is_top_to_bottom_gradient(array: np.ndarray) -> bool:
    return _is_left_to_right_gradient(np.transpose(array, (1, 0, 2)))


def _greyish_gradient(array: np.ndarray) -> bool:
    return _is_left_to_right_gradient(array) and np.abs(np.diff(array.astype(int), axis=2)).max() <= 3


IMAGES = {
    "truncated.jpeg": (_truncated, "truncated"),
    "corrupt.jpeg": (_corrupt, "cannot be decoded"),
    "empty.jpeg": (lambda p: p.write_bytes(b""), "empty file"),
    "text.jpeg": (lambda p: p.write_text("this is a note, not an X-ray\n"), "not an image"),
    "tiny.png": (lambda p: _save(p, Image.fromarray(GRADIENT[:16, :20]), "PNG"), "too small: 20x16 px"),
    "rgb.png": (lambda p: _save(p, Image.fromarray(GRADIENT).convert("RGB"), "PNG"), _greyish_gradient),
    "bitmap.bmp": (lambda p: _save(p, Image.fromarray(GRADIENT), "BMP"), _greyish_gradient),
    "grey.jpeg": (lambda p: p.write_bytes(_jpeg_bytes(GRADIENT)), _greyish_gradient),
    "rgba.png": (
        lambda p: _save(p, Image.fromarray(np.dstack([GRADIENT] * 3 + [np.full_like(GRADIENT, 255)])), "PNG"),
        _greyish_gradient,
    ),
    "sixteen_bit.png": (
        lambda p: _save(p, Image.fromarray(GRADIENT.astype(np.uint16) * 200), "PNG"),
        lambda a: _greyish_gradient(a) and a.min() <= 5 and a.max() >= 250,  # the 16-bit range is stretched
    ),
    "cmyk.jpeg": (lambda p: _save(p, Image.fromarray(GRADIENT).convert("CMYK"), "JPEG", quality=95), _greyish_gradient),
    "exif_rotated.jpeg": (_exif_rotated, _is_top_to_bottom_gradient),
    "huge.jpeg": (
        lambda p: p.write_bytes(_jpeg_bytes(np.tile(np.linspace(10, 240, 5000, dtype=np.uint8), (5000, 1)))),
        _greyish_gradient,
    ),
}


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory) -> Path:
    """One class folder holding every kind of file in IMAGES."""
    root = tmp_path_factory.mktemp("messy")
    for name, (write, _) in IMAGES.items():
        path = root / "train" / "cases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    return root


@pytest.fixture(scope="module")
def audited(messy_folder: Path):
    return audit_images(scan_dataset(messy_folder), min_side=32, progress=False)


@pytest.mark.parametrize("name", list(IMAGES))
def test_each_file_loads_correctly_or_is_skipped_with_its_reason(name: str, messy_folder: Path, audited):
    path = f"train/cases/{name}"
    expected = IMAGES[name][1]
    reasons = {skip.path: skip.reason for skip in audited.skipped}
    if isinstance(expected, str):
        assert expected in reasons.get(path, ""), reasons
        assert path not in {record.path for record in audited.records}
    else:
        assert path not in reasons, reasons.get(path)
        array = load_image(messy_folder / path, 32)
        assert array.shape == (32, 32, 3) and array.dtype == np.uint8
        assert expected(array), array.mean(axis=2)[::8, ::8]


def test_the_huge_image_is_read_at_its_full_size(audited, messy_folder: Path):
    # The audit reads every byte at a reduced scale, yet reports the true size.
    memo = audit_module._check_file(messy_folder / "train/cases/huge.jpeg")
    assert (memo["width"], memo["height"]) == (5000, 5000) and memo["error"] == ""


def test_transparent_pixels_become_black(tmp_path: Path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, 20:, 3] = 255  # left half transparent white, right half opaque white
    _save(tmp_path / "a.png", Image.fromarray(rgba), "PNG")
    array = load_image(tmp_path / "a.png", 40)
    assert array[:, :18].max() == 0 and array[:, 22:].min() == 255


def test_an_image_with_too_many_pixels_is_refused(tmp_path: Path, monkeypatch):
    _save(tmp_path / "big.png", Image.fromarray(GRADIENT), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow's decompression-bomb limit, made tiny
    with pytest.raises(UnreadableImageError, match="too many pixels"):
        load_image(tmp_path / "big.png", 32)


def test_unreadable_image_error_names_the_file(tmp_path: Path):
    (tmp_path / "x.jpeg").write_text("not an image")
    with pytest.raises(UnreadableImageError, match="x.jpeg: not an image"):
        load_image(tmp_path / "x.jpeg", 32)


def test_audit_is_remembered_and_redone_for_changed_files(messy_folder: Path, tmp_path: Path, monkeypatch):
    dataset = scan_dataset(messy_folder)
    first = audit_images(dataset, min_side=32, cache_dir=tmp_path, progress=False)
    checked: list[str] = []
    real = audit_module._check_file
    monkeypatch.setattr(audit_module, "_check_file", lambda path: checked.append(path.name) or real(path))
    again = audit_images(dataset, min_side=32, cache_dir=tmp_path, progress=False)
    assert checked == [] and again.skipped == first.skipped and again.digests == first.digests
    # The text file is replaced by a real image: only it is checked again, and now it is used.
    (messy_folder / "train/cases/text.jpeg").write_bytes(_jpeg_bytes(GRADIENT))
    fixed = audit_images(dataset, min_side=32, cache_dir=tmp_path, progress=False)
    assert checked == ["text.jpeg"]
    assert "train/cases/text.jpeg" in {record.path for record in fixed.records}
    # A damaged memo is ignored, not trusted: everything is checked again.
    for memo in (tmp_path / "audit").glob("*.json"):
        memo.write_text('{"version": "audit-v1", "files": ')
    checked.clear()
    audit_images(dataset, min_side=32, cache_dir=tmp_path, progress=False)
    assert sorted(checked) == sorted(IMAGES)
    (messy_folder / "train/cases/text.jpeg").write_text("this is a note, not an X-ray\n")


@pytest.mark.slow  # an end-to-end run; its units have quick tests of their own
def test_bad_files_are_listed_in_the_results_and_the_run_goes_on(kermany_root: Path, tmp_path: Path):
    bad = {}
    for name, (write, expected) in IMAGES.items():
        if isinstance(expected, str):
            path = kermany_root / "train" / "NORMAL" / f"IM-bad-{name}"
            write(path)
            bad[path.relative_to(kermany_root).as_posix()] = expected
    assert run_small_benchmark(kermany_root, tmp_path) == 0
    skipped = pd.read_csv(tmp_path / "results" / "skipped.csv")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    for path, fragment in bad.items():
        assert fragment in reasons[path]
    predictions = pd.read_csv(tmp_path / "results" / "predictions.csv")
    assert not set(predictions["path"]) & set(bad)
    assert (tmp_path / "results" / "leaderboard.md").read_text().count(f"Files left out: {len(bad)}") == 1


def test_a_class_without_usable_images_stops_before_extraction(kermany_root: Path, tmp_path: Path, capsys):
    for path in (kermany_root / "train" / "PNEUMONIA").glob("*virus*"):
        path.write_bytes(path.read_bytes()[:100])  # every training viral image truncated
    for path in (kermany_root / "val" / "PNEUMONIA").glob("*virus*"):
        path.unlink()
    assert run_small_benchmark(kermany_root, tmp_path) == 2
    err = capsys.readouterr().err
    assert "class 'viral' has no usable image in train" in err and "in val" in err
    assert "Truncated File Read" in err or "truncated" in err  # the commonest reason is quoted
    assert not (tmp_path / "cache" / "MobileNetV2").exists()  # nothing was extracted
    skipped = pd.read_csv(tmp_path / "results" / "skipped.csv")
    assert len(skipped) == 12 and skipped["path"].str.contains("virus").all()


def test_an_image_that_breaks_after_the_check_fails_with_its_name(
    kermany_root: Path, tmp_path: Path, monkeypatch, capsys
):
    from features import pixels

    broken = "train/NORMAL/IM-tr0000-0001.jpeg"

    def load_or_fail(path, size, dicom=None):
        if Path(path).as_posix().endswith(broken):
            raise UnreadableImageError(path, "cannot be decoded: image file is truncated")
        return load_image(path, size, dicom)

    monkeypatch.setattr(pixels, "load_image", load_or_fail)
    assert run_small_benchmark(kermany_root, tmp_path) == 1
    assert broken in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("manifest.json"))  # no entry was finished
