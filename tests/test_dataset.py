"""Scanning layouts and making splits."""

from pathlib import Path

import numpy as np
import pytest
from conftest import make_kermany, write_image

from features.data.dataset import make_splits, patient_of, scan_dataset


def test_kermany_layout_labels_from_folder_and_file_name(kermany_root: Path):
    (kermany_root / "train" / "PNEUMONIA" / "notes.txt").write_text("not an image")
    write_image(kermany_root / "train" / "PNEUMONIA" / "person99_unknown_1.jpeg", "viral", np.random.default_rng(0))
    dataset = scan_dataset(kermany_root)
    assert dataset.layout == "kermany"
    assert dataset.classes == ("normal", "bacterial", "viral")
    assert dataset.counts()["train"] == {"normal": 12, "bacterial": 12, "viral": 12}
    assert dataset.counts()["test"] == {"normal": 6, "bacterial": 6, "viral": 6}
    labels = {Path(r.path).name: r.label.text for r in dataset.records}
    assert labels["persontr0_bacteria_0.jpeg"] == "bacterial"
    assert labels["persontr0_virus_0.jpeg"] == "viral"
    assert labels["IM-tr0000-0001.jpeg"] == "normal"
    reasons = {skip.path: skip.reason for skip in dataset.skipped}
    assert "not an image" in reasons["train/PNEUMONIA/notes.txt"]
    assert "neither bacteria nor virus" in reasons["train/PNEUMONIA/person99_unknown_1.jpeg"]


def test_normal_pneumonia_folders_without_subtypes_give_two_classes(tmp_path: Path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i in range(3):
            write_image(tmp_path / split / "NORMAL" / f"{i}.png", "normal", rng)
            write_image(tmp_path / split / "PNEUMONIA" / f"{i}.png", "bacterial", rng)
    dataset = scan_dataset(tmp_path)
    assert dataset.layout == "class-folders"
    assert dataset.classes == ("NORMAL", "PNEUMONIA")
    assert len(dataset.records) == 12 and not dataset.skipped


def test_class_folder_layout_without_splits_carves_test_and_val(tmp_path: Path):
    rng = np.random.default_rng(0)
    for label in ("covid", "normal", "pneumonia"):
        for i in range(10):
            write_image(tmp_path / label / f"{label}{i}.jpg", "normal", rng)
    dataset = scan_dataset(tmp_path)
    assert dataset.layout == "class-folders" and dataset.classes == ("covid", "normal", "pneumonia")
    split = make_splits(dataset, val_fraction=0.2, test_fraction=0.3, seed=1)
    counts = split.counts()
    assert counts["test"] == {"covid": 3, "normal": 3, "pneumonia": 3}
    assert counts["val"] == {"covid": 1, "normal": 1, "pneumonia": 1}
    assert counts["train"] == {"covid": 6, "normal": 6, "pneumonia": 6}
    assert any("no test split" in note for note in split.notes)


def test_carved_validation_is_stratified_seeded_and_keeps_test(kermany_root: Path):
    dataset = scan_dataset(kermany_root)
    split = make_splits(dataset, val_fraction=0.25, seed=0)
    counts = split.counts()
    # The 2 official val images per class join the 12 train ones; 25% of 14 rounds to 4 (3.5 -> 4).
    assert {label: counts["val"][label] + counts["train"][label] for label in dataset.classes} == dict.fromkeys(
        dataset.classes, 14
    )
    assert counts["val"]["normal"] == 4
    assert split.split("test") == dataset.split("test")
    assert make_splits(dataset, val_fraction=0.25, seed=0).records == split.records
    assert make_splits(dataset, val_fraction=0.25, seed=5).split("val") != split.split("val")
    assert not {r.path for r in split.split("train")} & {r.path for r in split.split("val")}


def test_no_patient_on_both_sides_of_the_validation_split(kermany_root: Path):
    split = make_splits(scan_dataset(kermany_root), val_fraction=0.3, seed=3)
    train_patients = {patient_of(r.path) for r in split.split("train")}
    val_patients = {patient_of(r.path) for r in split.split("val")}
    assert val_patients and not train_patients & val_patients
    assert patient_of("train/PNEUMONIA/person23_bacteria_4.jpeg") == "person23"
    assert patient_of("train/NORMAL/NORMAL2-IM-1427-0001.jpeg") == "normal2-im-1427"


def test_official_validation_and_limit_per_class(kermany_root: Path):
    dataset = scan_dataset(kermany_root)
    official = make_splits(dataset, val_source="official")
    assert official.counts()["val"] == dict.fromkeys(dataset.classes, 2)
    limited = make_splits(dataset, limit_per_class=3, seed=0)
    assert all(n == 3 for per_class in limited.counts().values() for n in per_class.values())
    assert make_splits(dataset, limit_per_class=3, seed=0).records == limited.records


def test_bad_folders_fail_clearly(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_dataset(tmp_path / "missing")
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        scan_dataset(tmp_path)
    with pytest.raises(ValueError, match="no val split"):
        make_splits(scan_dataset(make_kermany(tmp_path / "k", {"train": 3, "test": 2})), val_source="official")


def test_real_data_matches_its_readme(real_data: Path):
    dataset = scan_dataset(real_data)
    assert dataset.layout == "kermany" and len(dataset.records) == 5856 and not dataset.skipped
    counts = dataset.counts()
    assert counts["train"] == {"normal": 1341, "bacterial": 2530, "viral": 1345}
    assert counts["test"] == {"normal": 234, "bacterial": 242, "viral": 148}
    assert counts["val"] == {"normal": 8, "bacterial": 8, "viral": 0}
    split = make_splits(dataset)
    assert not {patient_of(r.path) for r in split.split("train")} & {patient_of(r.path) for r in split.split("val")}
