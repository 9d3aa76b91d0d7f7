"""DICOM files and 16-bit PNGs: windowed onto the 8 bits every image becomes, left out with their reason, their
headers on the records, their settings in the cache keys. Every DICOM file is made here with pydicom."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_kermany, run_small_benchmark
from PIL import Image

from features.data.audit import audit_images
from features.data.dataset import scan_dataset
from features.data.images import UnreadableImageError, load_image
from features.pixels import PixelCache, pixel_key_parts
from features.settings import DicomSettings, LabelSettings

pydicom = pytest.importorskip("pydicom")
from pydicom.pixels import get_decoder  # noqa: E402
from pydicom.uid import JPEG2000Lossless, RLELossless  # noqa: E402

from features.data.dicom import read_dicom, write_dicom  # noqa: E402

# An 8-bit picture with every grey level, 16 x 16.
GREYS = np.arange(256, dtype=np.uint16).reshape(16, 16)


def _twelve_bit_copy(path: Path, original: np.ndarray, **options) -> None:
    """``original`` (8-bit values) stored as a 12-bit MONOCHROME1 file whose rescale and window give it back:
    stored = (255 - v) * 16 + 8, slope 1/16, intercept -0.5, window 128 / 256."""
    stored = ((255 - original.astype(np.uint16)) * 16 + 8).astype(np.uint16)
    write_dicom(path, stored, photometric="MONOCHROME1", bits_stored=12, rescale=(0.0625, -0.5),
                window=(128, 256), **options)  # fmt: skip


def _linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM standard's LINEAR window (PS3.3 C.11.2.1.2.1) onto 0..255, rounded."""
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def test_monochrome1_rescale_and_window_give_back_the_8_bit_original(tmp_path: Path):
    _twelve_bit_copy(tmp_path / "a.dcm", GREYS)
    assert np.array_equal(read_dicom(tmp_path / "a.dcm"), GREYS.astype(np.uint8))
    # Through load_image: the same squash to RGB as every image, here at the file's own size.
    rgb = load_image(tmp_path / "a.dcm", 16)
    assert rgb.shape == (16, 16, 3) and np.array_equal(rgb[..., 0], GREYS) and np.array_equal(rgb[..., 2], GREYS)


def test_a_window_clips_outside_and_stretches_inside(tmp_path: Path):
    stored = np.linspace(0, 4095, 256).round().astype(np.uint16).reshape(16, 16)
    write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, window=(1000, 500))
    decoded = read_dicom(tmp_path / "w.dcm")
    assert np.array_equal(decoded, _linear_window(stored.astype(float), 1000, 500))
    assert decoded[stored < 740].max() == 0 and decoded[stored > 1260].min() == 255


def test_without_a_window_or_with_range_the_full_used_range_is_mapped(tmp_path: Path):
    stored = np.linspace(1000, 60000, 256).round().astype(np.uint16).reshape(16, 16)
    write_dicom(tmp_path / "plain.dcm", stored)
    write_dicom(tmp_path / "windowed.dcm", stored, window=(2000, 100))
    expected = np.round((stored - 1000.0) * 255 / 59000).astype(np.uint8)
    assert np.array_equal(read_dicom(tmp_path / "plain.dcm"), expected)
    assert not np.array_equal(read_dicom(tmp_path / "windowed.dcm"), expected)
    assert np.array_equal(read_dicom(tmp_path / "windowed.dcm", DicomSettings(window="range")), expected)


def test_the_chosen_one_of_several_windows_and_a_voi_lut_sequence(tmp_path: Path):
    stored = np.linspace(0, 4095, 256).round().astype(np.uint16).reshape(16, 16)
    write_dicom(tmp_path / "two.dcm", stored, bits_stored=12, WindowCenter=[1000, 3000], WindowWidth=[500, 2000])
    first, second = (read_dicom(tmp_path / "two.dcm", DicomSettings(voi=n)) for n in (1, 2))
    assert np.array_equal(first, _linear_window(stored.astype(float), 1000, 500))
    assert np.array_equal(second, _linear_window(stored.astype(float), 3000, 2000))
    assert np.array_equal(read_dicom(tmp_path / "two.dcm", DicomSettings(voi=5)), second)  # fewer: its last
    # A VOI LUT: 256 entries from 0, 8 bits each, reversed; values past its end take its last entry.
    item = pydicom.Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 8])
    item.add_new("LUTData", "US", list(range(255, -1, -1)))
    write_dicom(tmp_path / "lut.dcm", (GREYS * 2).astype(np.uint16), bits_stored=12, VOILUTSequence=[item])
    expected = np.where(GREYS * 2 < 256, 255 - GREYS * 2, 0).astype(np.uint8)
    assert np.array_equal(read_dicom(tmp_path / "lut.dcm"), expected)


def _syntaxes() -> list:
    """RLE (pydicom's own codec) always; JPEG 2000 where the openjpeg plugin can write it."""
    encodable = pydicom.pixels.get_encoder(JPEG2000Lossless).is_available
    return [RLELossless, pytest.param(JPEG2000Lossless, marks=pytest.mark.skipif(
        not encodable, reason="pylibjpeg-openjpeg not installed: no JPEG 2000 encoder"))]  # fmt: skip


@pytest.mark.parametrize("syntax", _syntaxes())
def test_a_compressed_file_decodes_as_its_uncompressed_twin(tmp_path: Path, syntax):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (32, 32)).astype(np.uint16)
    _twelve_bit_copy(tmp_path / "plain.dcm", picture)
    _twelve_bit_copy(tmp_path / "packed.dcm", picture, syntax=syntax)
    assert pydicom.dcmread(tmp_path / "packed.dcm").file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(read_dicom(tmp_path / "packed.dcm"), read_dicom(tmp_path / "plain.dcm"))
    assert np.array_equal(read_dicom(tmp_path / "packed.dcm"), picture.astype(np.uint8))


def _kermany_like(root: Path) -> Path:
    """One split of class folders holding one good DICOM file per class, named as Kermany names them."""
    _twelve_bit_copy(root / "train/NORMAL/IM-0001-0001.dcm", GREYS, PatientID="IM-0001", PatientSex="F",
                     PatientAge="045Y", ViewPosition="PA")  # fmt: skip
    _twelve_bit_copy(root / "train/PNEUMONIA/person1_virus_1.dcm", GREYS)
    return root


def test_files_left_out_with_their_reasons_and_dicom_under_any_name_read(tmp_path: Path):
    root = _kermany_like(tmp_path / "data")
    folder = root / "train/PNEUMONIA"
    _twelve_bit_copy(folder / "person2_virus_2.jpeg", GREYS)  # DICOM content under a JPEG's name
    _twelve_bit_copy(folder / "person3_virus_3", GREYS)  # and under none
    write_dicom(folder / "person4_virus_4.dcm", np.zeros((3, 16, 16), np.uint8))  # three frames
    report = pydicom.Dataset()
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no pixel data
    report.SOPInstanceUID = pydicom.uid.generate_uid()
    report.file_meta = pydicom.dataset.FileMetaDataset()
    report.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    report.save_as(folder / "person5_virus_5.dcm", enforce_file_format=True)
    _twelve_bit_copy(folder / "person6_virus_6.dcm", GREYS)
    whole = (folder / "person6_virus_6.dcm").read_bytes()
    (folder / "person6_virus_6.dcm").write_bytes(whole[: len(whole) - 200])  # truncated pixel data
    (folder / "person7_virus_7.dcm").write_bytes(b"not a radiograph")  # a .dcm name, no DICOM inside
    dataset = audit_images(scan_dataset(root), min_side=8, progress=False)
    reasons = {skip.path.rsplit("/", 1)[-1]: skip.reason for skip in dataset.skipped}
    assert sorted(r.path.rsplit("/", 1)[-1] for r in dataset.records) == [
        "IM-0001-0001.dcm", "person1_virus_1.dcm", "person2_virus_2.jpeg", "person3_virus_3"]  # fmt: skip
    assert reasons["person4_virus_4.dcm"] == "multi-frame DICOM (3 frames); one image per file is read"
    assert "no pixel data: Basic Text SR Storage" in reasons["person5_virus_5.dcm"]
    assert reasons["person6_virus_6.dcm"].startswith("DICOM pixel data cannot be decoded")
    assert reasons["person7_virus_7.dcm"].startswith("not a DICOM file: no 'DICM' signature at byte 128")
    assert "force=True" not in reasons["person7_virus_7.dcm"]  # pydicom's advice is not the user's to take
    assert all("\n" not in reason for reason in reasons.values())


def test_a_syntax_whose_plugin_is_missing_is_refused_in_one_line_and_checked_again(tmp_path: Path, monkeypatch):
    root = _kermany_like(tmp_path / "data")
    path = root / "train/PNEUMONIA/person1_virus_1.dcm"
    _twelve_bit_copy(path, GREYS, syntax=RLELossless)
    ds = pydicom.dcmread(path)  # relabelled JPEG 2000: the refusal comes before any decoding
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(path, enforce_file_format=True)
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})  # as without pylibjpeg-openjpeg
    with pytest.raises(UnreadableImageError) as raised:
        load_image(path, 16)
    assert raised.value.reason == ("JPEG 2000 Image Compression (Lossless Only) compressed (1.2.840.10008.1.2.4.90); "
                                   "install pylibjpeg-openjpeg (pip install 'cxr-bench[dicom]')")  # fmt: skip
    audited = audit_images(scan_dataset(root), min_side=8, cache_dir=tmp_path / "cache", progress=False)
    assert [skip.reason for skip in audited.skipped] == [raised.value.reason]
    memo = next((tmp_path / "cache/audit").glob("*.json")).read_text()
    assert "person1_virus_1.dcm" not in memo and "IM-0001-0001.dcm" in memo  # checked again once installed


def test_without_pydicom_a_dicom_file_is_left_out_naming_the_extra(tmp_path: Path, monkeypatch):
    root = _kermany_like(tmp_path / "data")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    dataset = audit_images(scan_dataset(root), min_side=8, progress=False)
    assert not dataset.records
    assert {skip.reason for skip in dataset.skipped} == {
        "DICOM file; reading it needs pydicom: pip install 'cxr-bench[dicom]'"}  # fmt: skip


def test_header_attributes_on_records_from_folders_and_from_a_csv(tmp_path: Path):
    from features.data.labels import read_labels

    root = _kermany_like(tmp_path / "data")
    normal, viral = sorted(scan_dataset(root).records, key=lambda r: r.path)
    assert normal.patient == "IM-0001" and normal.attributes == (("age", "45"), ("sex", "F"), ("view", "PA"))
    assert viral.patient == "" and viral.attributes == ()  # no header values: the file name's patient
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as file:
        csv.writer(file).writerows([["path", "label", "sex"], ["train/NORMAL/IM-0001-0001.dcm", "normal", "M"]])
    (record,) = read_labels(root, LabelSettings(labels=str(labels), sex_column="sex")).records
    assert record.patient == "IM-0001" and record.attributes == (("age", "45"), ("sex", "M"), ("view", "PA"))


def test_the_dicom_settings_are_in_the_pixel_cache_key_and_rebuild_it(tmp_path: Path):
    root = tmp_path / "data"
    stored = np.linspace(1000, 3000, 256).round().astype(np.uint16).reshape(16, 16)
    write_dicom(root / "a" / "one.dcm", stored, window=(2000, 1000))
    paths = ["a/one.dcm"]
    keys = {str(pixel_key_parts(16, root, paths, dicom=DicomSettings(window, voi)))
            for window, voi in (("file", 1), ("file", 2), ("range", 1))}  # fmt: skip
    assert len(keys) == 3
    file_reader, _ = PixelCache(tmp_path / "cache").build(16, root, paths, progress=False)
    range_reader, seconds = PixelCache(tmp_path / "cache", DicomSettings("range")).build(16, root, paths,
                                                                                        progress=False)  # fmt: skip
    with file_reader, range_reader:
        assert seconds > 0  # decoded, not read from the other entry
        assert not np.array_equal(file_reader.read(0, 1), range_reader.read(0, 1))
        ranged = read_dicom(root / "a/one.dcm", DicomSettings("range"))
        assert np.array_equal(range_reader.read(0, 1)[0, ..., 0], ranged)
    assert len(list((tmp_path / "cache").rglob("pixels.npy"))) == 2


@pytest.mark.parametrize("low, high", [(0, 4095), (1000, 60000)])
def test_a_16_bit_png_is_windowed_over_its_used_range_not_clipped(tmp_path: Path, low: int, high: int):
    values = np.linspace(low, high, 256).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")  # a real 16-bit PNG
    expected = np.round((values - float(low)) * 255 / (high - low)).astype(np.uint8)
    decoded = load_image(tmp_path / "deep.png", 16)
    assert np.array_equal(decoded[..., 0], expected)
    assert decoded.min() == 0 and decoded.max() == 255


@pytest.mark.slow
def test_a_dicom_copy_of_the_test_split_gives_the_jpeg_runs_leaderboard(tmp_path: Path):
    """The issue's acceptance check in small: MONOCHROME1, 12 bits, a window and RLE give the same pixels, so the
    same features, heads and test metrics; and --dicom-window range reaches the extraction settings."""
    import pandas as pd

    from benchmark.config import RunConfig

    jpegs = make_kermany(tmp_path / "jpeg", {"train": 10, "test": 5})
    dicoms = tmp_path / "dicom"
    (dicoms / "test").mkdir(parents=True)
    (dicoms / "train").symlink_to(jpegs / "train")
    for path in sorted((jpegs / "test").rglob("*.jpeg")):
        grey = np.asarray(Image.open(path).convert("L"))
        _twelve_bit_copy(dicoms / path.relative_to(jpegs).with_suffix(".dcm"), grey, syntax=RLELossless)
    assert run_small_benchmark(jpegs, tmp_path / "j") == 0
    assert run_small_benchmark(dicoms, tmp_path / "d") == 0
    jpeg, dicom = (pd.read_csv(tmp_path / side / "results/leaderboard.csv") for side in "jd")
    assert "auc" in jpeg and len(jpeg) == 3  # one head, three tasks
    # Every column but those naming the folders (the data, and the head id, which hashes the configuration).
    scored = [name for name in jpeg.columns if not name.startswith("config_") and name != "head_id"]
    pd.testing.assert_frame_equal(jpeg[scored], dicom[scored])
    assert RunConfig(dicom_window="range", dicom_voi=2).stages().extract.dicom == DicomSettings("range", 2)
