"""The synthetic chest-radiograph phantom set: layout, determinism, idempotence, and that it is learnable."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from features.data import phantom
from features.data.phantom import (
    CLASSES,
    DEFAULT_PER_CLASS,
    MARKER_NAME,
    PHANTOM_VERSION,
    describe,
    make_phantom_dataset,
    render_phantom,
)

SMALL = {"train": 3, "val": 1, "test": 2}
NAME_RE = {
    "normal": re.compile(r"^phantom-normal-\d{5}\.jpeg$"),
    "bacteria": re.compile(r"^phantom-\d{5}_bacteria\.jpeg$"),
    "virus": re.compile(r"^phantom-\d{5}_virus\.jpeg$"),
}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpeg"))}


def _siblings(root: Path) -> list[str]:
    """Everything next to ``root`` except ``root``: leftover temp folders would show up here."""
    return sorted(p.name for p in root.parent.iterdir() if p != root)


def _eroded(mask: np.ndarray) -> np.ndarray:
    # Keep away from the lung border, where blur mixes in the bright chest wall.
    size = max(3, round(mask.shape[0] / 20)) | 1
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(size))) > 0


def _lung_stats(img: phantom.PhantomImage) -> tuple[float, float]:
    """Mean intensity and high-pass (pixel minus 2-px Gaussian blur) energy inside the lungs."""
    mask = _eroded(img.lung_mask)
    assert mask.sum() > 0.04 * mask.size, "lung fields should cover a good part of the image"
    pixels = img.pixels.astype(np.float64)
    high_pass = pixels - np.asarray(Image.fromarray(img.pixels).filter(ImageFilter.GaussianBlur(2)), np.float64)
    return float(pixels[mask].mean()), float((high_pass[mask] ** 2).mean())


# --------------------------------------------------------------------------
# layout, names, metadata
# --------------------------------------------------------------------------


def test_layout_names_and_decoding(tmp_path: Path) -> None:
    root = make_phantom_dataset(tmp_path / "phantom", per_class=SMALL, image_size=64)
    assert root == tmp_path / "phantom"
    assert sorted(p.name for p in root.iterdir()) == sorted([*SMALL, MARKER_NAME, "README.txt"])
    for split, n in SMALL.items():
        assert sorted(p.name for p in (root / split).iterdir()) == ["NORMAL", "PNEUMONIA"]
        normal = sorted(p.name for p in (root / split / "NORMAL").iterdir())
        pneumonia = sorted(p.name for p in (root / split / "PNEUMONIA").iterdir())
        assert normal == [f"phantom-normal-{i:05d}.jpeg" for i in range(1, n + 1)]
        assert all(NAME_RE["normal"].match(name) for name in normal)
        bacteria = [name for name in pneumonia if "bacteria" in name]
        virus = [name for name in pneumonia if "virus" in name]
        assert len(bacteria) == len(virus) == n and len(pneumonia) == 2 * n
        assert all(NAME_RE["bacteria"].match(name) for name in bacteria)
        assert all(NAME_RE["virus"].match(name) for name in virus)
    for path in root.rglob("*.jpeg"):
        with Image.open(path) as im:
            assert im.format == "JPEG"
            assert im.size == (64, 64)
            assert im.mode in ("L", "RGB")
            im.load()  # decodes the whole file, not just the header

    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["version"] == PHANTOM_VERSION
    assert marker["params"] == {"per_class": SMALL, "image_size": 64, "seed": 0}
    assert marker["file_count"] == 3 * sum(SMALL.values()) == len(list(root.rglob("*.jpeg")))
    readme = (root / "README.txt").read_text()
    assert "NOT MEDICAL DATA" in readme.upper() and "synthetic" in readme.lower()
    assert _siblings(root) == [], "no temporary folder may be left beside the dataset"


def test_the_harness_loader_reads_three_classes(tmp_path: Path) -> None:
    from features.data.dataset import scan_dataset

    root = make_phantom_dataset(tmp_path / "phantom", per_class=SMALL, image_size=64)
    dataset = scan_dataset(root)
    assert dataset.layout == "kermany"
    assert len(dataset.records) == 3 * sum(SMALL.values())
    assert not dataset.skipped
    by_class = {label: sum(r.label.text == label for r in dataset.records) for label in dataset.classes}
    assert sorted(by_class.values()) == [sum(SMALL.values())] * 3


def test_defaults_and_description() -> None:
    assert dict(DEFAULT_PER_CLASS) == {"train": 60, "val": 4, "test": 20}
    with pytest.raises(TypeError):
        DEFAULT_PER_CLASS["train"] = 1  # type: ignore[index]
    assert isinstance(PHANTOM_VERSION, str) and PHANTOM_VERSION
    text = describe()
    assert "\n" not in text.strip()
    assert "NOT medical data" in text and "synthetic" in text.lower()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"per_class": {"train": -1}},
        {"per_class": {"../x": 1}},
        {"per_class": {"train": 1.5}},
        {"image_size": 8},
        {"seed": -1},
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_phantom_dataset(tmp_path / "phantom", **kwargs)
    assert not (tmp_path / "phantom").exists()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    a = _files(make_phantom_dataset(tmp_path / "a", per_class=SMALL, image_size=64, seed=7))
    b = _files(make_phantom_dataset(tmp_path / "b", per_class=SMALL, image_size=64, seed=7))
    assert a == b
    assert len(set(a.values())) == len(a), "every image should be different"
    c = _files(make_phantom_dataset(tmp_path / "c", per_class=SMALL, image_size=64, seed=8))
    assert c.keys() == a.keys()
    assert all(c[k] != a[k] for k in a), "another seed must give other images"


def test_growing_a_split_keeps_existing_images(tmp_path: Path) -> None:
    small = _files(make_phantom_dataset(tmp_path / "small", per_class={"train": 2, "test": 1}, image_size=64))
    big = _files(make_phantom_dataset(tmp_path / "big", per_class={"train": 4, "test": 1, "val": 2}, image_size=64))
    assert len(big) == 3 * 7
    assert small.keys() < big.keys()
    assert all(big[name] == data for name, data in small.items())


def test_render_is_deterministic_and_pathology_is_the_only_difference() -> None:
    a = render_phantom("virus", np.random.default_rng(5), 96)
    b = render_phantom("virus", np.random.default_rng(5), 96)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.lung_mask, b.lung_mask)
    assert a.pixels.dtype == np.uint8 and a.pixels.shape == (96, 96)
    # Same generator state, different label: same patient, exposure and noise;
    # the images may differ only in and right around the lungs, so there is no
    # class-specific brightness cue elsewhere in the image.
    normal = render_phantom("normal", np.random.default_rng(5), 96)
    assert np.array_equal(normal.lung_mask, a.lung_mask)
    outside = ~np.asarray(Image.fromarray(a.lung_mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))) > 0
    assert outside.mean() > 0.5
    assert np.array_equal(normal.pixels[outside], a.pixels[outside])
    assert not np.array_equal(normal.pixels, a.pixels)


# --------------------------------------------------------------------------
# idempotence and safety
# --------------------------------------------------------------------------


def _mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_second_call_with_same_params_does_not_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_phantom_dataset(tmp_path / "phantom", per_class=SMALL, image_size=64)
    before = _mtimes(root)

    def fail(*args, **kwargs):
        raise AssertionError("an up-to-date set must not be rendered again")

    monkeypatch.setattr(phantom, "render_phantom", fail)
    assert make_phantom_dataset(tmp_path / "phantom", per_class=dict(SMALL), image_size=64) == root
    assert _mtimes(root) == before
    assert _siblings(root) == []


def test_different_params_regenerate(tmp_path: Path) -> None:
    root = make_phantom_dataset(tmp_path / "phantom", per_class=SMALL, image_size=64)
    old = _files(root)
    make_phantom_dataset(root, per_class={"train": 2, "test": 1}, image_size=72)
    marker = json.loads((root / MARKER_NAME).read_text())
    assert marker["params"] == {"per_class": {"train": 2, "test": 1}, "image_size": 72, "seed": 0}
    new = _files(root)
    assert len(new) == marker["file_count"] == 9
    assert not (root / "val").exists(), "the old set must be replaced, not merged"
    with Image.open(root / "train" / "NORMAL" / "phantom-normal-00001.jpeg") as im:
        assert im.size == (72, 72)
    assert new["train/NORMAL/phantom-normal-00001.jpeg"] != old["train/NORMAL/phantom-normal-00001.jpeg"]
    assert _siblings(root) == []


def test_an_incomplete_set_is_rebuilt(tmp_path: Path) -> None:
    root = make_phantom_dataset(tmp_path / "phantom", per_class=SMALL, image_size=64)
    complete = _files(root)
    (root / "test" / "PNEUMONIA" / "phantom-00001_virus.jpeg").unlink()
    make_phantom_dataset(root, per_class=SMALL, image_size=64)
    assert _files(root) == complete


def test_a_foreign_folder_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "my_data"
    (root / "train").mkdir(parents=True)
    (root / "train" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        make_phantom_dataset(root, per_class=SMALL, image_size=64)
    assert (root / "train" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_data"]


def test_an_empty_folder_is_filled(tmp_path: Path) -> None:
    root = tmp_path / "phantom"
    root.mkdir()
    make_phantom_dataset(root, per_class=SMALL, image_size=64)
    assert len(list(root.rglob("*.jpeg"))) == 3 * sum(SMALL.values())


def test_a_failed_generation_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def boom(label, rng, image_size=224):
        calls.append(label)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return phantom.PhantomImage(np.zeros((image_size, image_size), np.uint8), np.zeros((1, 1), bool), label)

    monkeypatch.setattr(phantom, "render_phantom", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        make_phantom_dataset(tmp_path / "phantom", per_class=SMALL, image_size=64)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# the pathology is there, and the set is learnable
# --------------------------------------------------------------------------

PAIRS = range(12)


def test_pathology_adds_opacity_inside_the_lungs() -> None:
    # Paired: the same patient with and without disease.
    gains = {"bacteria": [], "virus": []}
    for i in PAIRS:
        normal_mean, _ = _lung_stats(render_phantom("normal", np.random.default_rng(i), 96))
        for label in gains:
            mean, _ = _lung_stats(render_phantom(label, np.random.default_rng(i), 96))
            gains[label].append(mean - normal_mean)
    for label, gain in gains.items():
        assert min(gain) >= 0.0, f"{label} must never make the lungs darker"
        assert np.mean(gain) > 3.0, f"{label}: mean lung opacity gain {np.mean(gain):.1f} grey levels is too small"
    # Unpaired, as a classifier sees them: the class averages over different patients.
    means = {label: [] for label in CLASSES}
    for label in CLASSES:
        for i in range(30):
            mean, _ = _lung_stats(render_phantom(label, np.random.default_rng([101, i, CLASSES.index(label)]), 64))
            means[label].append(mean)
    assert np.mean(means["bacteria"]) > np.mean(means["normal"])
    assert np.mean(means["virus"]) > np.mean(means["normal"])


def test_interstitial_pattern_adds_fine_texture_inside_the_lungs() -> None:
    normal = [_lung_stats(render_phantom("normal", np.random.default_rng(i), 96))[1] for i in PAIRS]
    virus = [_lung_stats(render_phantom("virus", np.random.default_rng(i), 96))[1] for i in PAIRS]
    assert all(v > n for v, n in zip(virus, normal, strict=True))
    assert np.mean(virus) > 1.1 * np.mean(normal)
    # Unpaired class averages too.
    normal = [_lung_stats(render_phantom("normal", np.random.default_rng([202, i, 0]), 96))[1] for i in range(30)]
    virus = [_lung_stats(render_phantom("virus", np.random.default_rng([202, i, 2]), 96))[1] for i in range(30)]
    assert np.mean(virus) > np.mean(normal)


def test_a_simple_classifier_learns_the_phantoms(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = make_phantom_dataset(tmp_path / "phantom", per_class={"train": 50, "test": 25}, image_size=64)

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for path in sorted((root / split).rglob("*.jpeg")):
            label = "bacteria" if "bacteria" in path.name else "virus" if "virus" in path.name else "normal"
            with Image.open(path) as im:
                xs.append(np.asarray(im.convert("L").resize((16, 16), Image.Resampling.BILINEAR), np.float32).ravel())
            ys.append(CLASSES.index(label))
        return np.array(xs) / 255.0, np.array(ys)

    x_train, y_train = load("train")
    x_test, y_test = load("test")
    assert np.bincount(y_test).tolist() == [25, 25, 25]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)).fit(x_train, y_train)
    accuracy = clf.score(x_test, y_test)
    assert accuracy > 0.5, f"held-out accuracy {accuracy:.2f} is not clearly above chance (0.33)"
