"""The backbone registry and where weights come from. Parametrised over the registry."""

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import slow_except

from backbones import (
    BACKBONES,
    DEFAULT_BACKBONES,
    WeightsUnavailableError,
    build_backbone,
    get_backbone,
    resolve_weights,
    save_weights_file,
)

NAMES = list(BACKBONES)
EXPECTED = {"VGG16", "Xception", "InceptionV3", "InceptionResNetV2", "ResNet50", "MobileNetV2"}


WIDTH_VARIANTS = {
    # name: Keras' own ImageNet file (no top) at 224 px, as keras.applications downloads it
    "MobileNetV2-0.35": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    "MobileNetV2-0.5": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5",
    "MobileNetV2-0.75": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.75_224_no_top.h5",
    "MobileNetV2-1.3": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.3_224_no_top.h5",
    "MobileNetV2-1.4": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224_no_top.h5",
    "MobileNet-0.25": "mobilenet_2_5_224_tf_no_top.h5",
    "MobileNet-0.5": "mobilenet_5_0_224_tf_no_top.h5",
    "MobileNet-0.75": "mobilenet_7_5_224_tf_no_top.h5",
    "MobileNet-1.0": "mobilenet_1_0_224_tf_no_top.h5",
}


def test_registry_holds_the_six_backbones_and_the_width_variants():
    assert set(DEFAULT_BACKBONES) == EXPECTED
    assert set(NAMES) == EXPECTED | set(WIDTH_VARIANTS)
    assert BACKBONES["MobileNetV2"].keras_weights_file(224) == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    )


@pytest.mark.parametrize("name", list(WIDTH_VARIANTS))
def test_width_variants_use_keras_file_names(name: str):
    spec = BACKBONES[name]
    assert spec.keras_weights_file(224) == WIDTH_VARIANTS[name]
    # Keras keeps one file per trained resolution and uses the 224 px one for any other size.
    assert spec.keras_weights_file(300) == WIDTH_VARIANTS[name]
    assert spec.keras_weights_file(160) == WIDTH_VARIANTS[name].replace("224", "160")


def test_width_changes_the_network():
    """Each width builds a different network: its own parameter count, feature length as Keras gives it."""
    counts = {}
    for name in ("MobileNetV2-0.35", "MobileNetV2", "MobileNetV2-1.4", "MobileNet-0.25", "MobileNet-1.0"):
        spec = BACKBONES[name]
        model = build_backbone(spec, 32, resolve_weights(spec, "none", 32))
        assert model.output_shape == (None, spec.feature_size)
        counts[name] = model.count_params()
    assert len(set(counts.values())) == len(counts)
    assert counts["MobileNetV2-0.35"] < counts["MobileNetV2"] < counts["MobileNetV2-1.4"]
    assert counts["MobileNet-0.25"] < counts["MobileNet-1.0"]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        get_backbone("ResNet51")
    for name in EXPECTED:
        assert name in str(error.value)
    assert get_backbone("resnet50") is BACKBONES["ResNet50"]


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_consistent(name):
    spec = BACKBONES[name]
    assert spec.default_size in (224, 299) and spec.min_size <= spec.default_size
    assert spec.keras_weights_file(spec.default_size).endswith(".h5")
    with pytest.raises(ValueError, match="minimum"):
        spec.check_size(spec.min_size - 1)
    pixels = np.full((1, 2, 2, 3), 255.0, dtype=np.float32)
    out = spec.preprocess(pixels.copy())
    expected_max = {"tf": 1.0, "caffe": 255.0 - 103.939, "torch": (1.0 - 0.406) / 0.225}[spec.preprocess_mode]
    assert float(out.max()) == pytest.approx(expected_max, rel=1e-4)


@pytest.mark.parametrize("name", slow_except(NAMES, "VGG16"))
def test_weights_folder_round_trip(name: str, tmp_path: Path):
    """Weights saved from a random-init model load back through --weights DIR, giving the same features."""
    spec = BACKBONES[name]
    size = spec.min_size
    original = build_backbone(spec, size, resolve_weights(spec, "none", size, seed=3), seed=3)
    assert original.output_shape == (None, spec.feature_size)
    save_weights_file(original, tmp_path, spec)
    source = resolve_weights(spec, str(tmp_path), size)
    assert source.kind == "file" and source.identity.startswith("file:")
    # Build with another seed: only the loaded file can make the features agree.
    loaded = build_backbone(spec, size, source, seed=99)
    images = spec.preprocess(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32))
    # A plain call, not predict_on_batch: one forward pass is not worth tracing a graph for (seconds on the
    # largest backbones), and the layers compute the same either way.
    loaded_features, original_features = (keras.ops.convert_to_numpy(model(images, training=False))
                                          for model in (loaded, original))  # fmt: skip
    np.testing.assert_allclose(loaded_features, original_features, rtol=1e-5, atol=1e-6)


def test_keras_file_name_is_found_and_content_names_the_weights(tmp_path: Path):
    spec = BACKBONES["MobileNetV2"]
    model = build_backbone(spec, 32, resolve_weights(spec, "none", 32))
    saved = save_weights_file(model, tmp_path, spec)
    keras_named = tmp_path / "keras" / spec.keras_weights_file(224)
    keras_named.parent.mkdir()
    saved.rename(keras_named)
    assert resolve_weights(spec, str(keras_named.parent), 224).path == keras_named
    other = build_backbone(spec, 32, resolve_weights(spec, "none", 32, seed=5), seed=5)
    save_weights_file(other, tmp_path / "other", spec)
    assert (
        resolve_weights(spec, str(tmp_path / "other"), 32).identity
        != resolve_weights(spec, str(keras_named.parent), 224).identity
    )


def test_a_folder_with_only_the_default_size_file_serves_every_size(tmp_path: Path):
    """Keras ships MobileNetV2 files per training size; a folder holding only the 224 px one serves 160 px too."""
    spec = BACKBONES["MobileNetV2-0.35"]
    model = build_backbone(spec, 32, resolve_weights(spec, "none", 32))
    save_weights_file(model, tmp_path, spec).rename(tmp_path / spec.keras_weights_file(224))
    assert resolve_weights(spec, str(tmp_path), 160).path == tmp_path / spec.keras_weights_file(224)
    (tmp_path / spec.keras_weights_file(160)).write_bytes(b"")
    assert resolve_weights(spec, str(tmp_path), 160).path == tmp_path / spec.keras_weights_file(160)


def test_missing_weights_file_names_what_was_looked_for(tmp_path: Path):
    spec = BACKBONES["ResNet50"]
    (tmp_path / "unrelated.h5").write_bytes(b"x")
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_weights(spec, str(tmp_path), 224)
    assert spec.keras_weights_file(224) in str(error.value) and "unrelated.h5" in str(error.value)
    with pytest.raises(WeightsUnavailableError, match="imagenet"):
        resolve_weights(spec, str(tmp_path / "nope"), 224)


def test_failed_imagenet_download_names_the_offline_options():
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    spec = dataclasses.replace(BACKBONES["ResNet50"], constructor=offline)
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone(spec, 224, resolve_weights(spec, "imagenet", 224))
    message = str(error.value)
    assert "--weights none" in message and "--weights DIR" in message
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message and "URL fetch failure" in message
