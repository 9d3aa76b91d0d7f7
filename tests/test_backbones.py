"""The backbone registry and where weights come from. Parametrised over the registry."""

import dataclasses
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from conftest import slow_except
from keras.src.legacy.saving import legacy_h5_format

from backbones import (
    BACKBONES,
    DEFAULT_BACKBONES,
    BackboneSpec,
    WeightsUnavailableError,
    build_backbone,
    get_backbone,
    model_flops,
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


# name: (Keras' own ImageNet file without the top, at any input size; multiply-adds at the default size as
# published: torchvision's model table (GFLOPS, which counts multiply-adds) and, for EfficientNetV2 B0 to B3, the
# google/automl efficientnetv2 README).
NEW_FAMILIES = {
    "DenseNet121": ("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", 2.83e9),
    "DenseNet169": ("densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5", 3.36e9),
    "DenseNet201": ("densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5", 4.29e9),
    "EfficientNetV2B0": ("efficientnetv2-b0_notop.h5", 0.72e9),
    "EfficientNetV2B1": ("efficientnetv2-b1_notop.h5", 1.2e9),
    "EfficientNetV2B2": ("efficientnetv2-b2_notop.h5", 1.7e9),
    "EfficientNetV2B3": ("efficientnetv2-b3_notop.h5", 3.0e9),
    "EfficientNetV2S": ("efficientnetv2-s_notop.h5", 8.37e9),
    "EfficientNetV2M": ("efficientnetv2-m_notop.h5", 24.58e9),
    "EfficientNetV2L": ("efficientnetv2-l_notop.h5", 56.08e9),
    "ConvNeXtTiny": ("convnext_tiny_notop.h5", 4.46e9),
}
# What the largest input pixel (255) becomes once scaled, by preprocess_mode; "in-model" modes inside the network.
SCALED_255 = {"tf": 1.0, "caffe": 255.0 - 103.939, "torch": (1.0 - 0.406) / 0.225,
              "in-model-torch": (1.0 - 0.406) / 0.225, "in-model-x/128-1": 255 / 128 - 1}  # fmt: skip


def test_registry_holds_the_six_backbones_and_the_width_variants():
    assert set(DEFAULT_BACKBONES) == EXPECTED
    assert set(NAMES) == EXPECTED | set(WIDTH_VARIANTS) | set(NEW_FAMILIES)
    assert not set(NEW_FAMILIES) & set(DEFAULT_BACKBONES)
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


@pytest.mark.parametrize("name", list(NEW_FAMILIES))
def test_new_families_use_keras_file_names(name: str):
    spec = BACKBONES[name]
    # One file per network: Keras loads it at any input size.
    assert {spec.keras_weights_file(size) for size in (32, 224, spec.default_size, 512)} == {NEW_FAMILIES[name][0]}


# DenseNet121 and EfficientNetV2B0 are built, their feature length checked, by the bfloat16 check
# (tests/test_extraction_levers.py) and DenseNet121 through every stage (tests/test_densenet.py); their families'
# FLOPs and scaling are checked here on their siblings, within the slow suite's time budget.
@pytest.mark.parametrize("name", slow_except([name for name in NEW_FAMILIES
                                              if name not in ("DenseNet121", "EfficientNetV2B0")]))  # fmt: skip
def test_new_family_builds_to_its_feature_size_and_published_flops(name: str):
    """Built once at its default size: the pooled feature length, the multiply-adds as published, and the pixels
    scaled exactly once: by ``preprocess`` or, for the "in-model" modes, by the network's own first layers."""
    spec = BACKBONES[name]
    model = build_backbone(spec, spec.default_size, resolve_weights(spec, "none", spec.default_size))
    assert model.output_shape == (None, spec.feature_size)
    assert model_flops(model) / 2 == pytest.approx(NEW_FAMILIES[name][1], rel=0.02)
    scaling = [layer for layer in model.layers[:4] if isinstance(layer, (keras.layers.Rescaling,
                                                                          keras.layers.Normalization))]  # fmt: skip
    assert bool(scaling) == spec.preprocess_mode.startswith("in-model")
    if scaling:
        scaled = keras.Model(model.inputs[0], scaling[-1].output)
        white = np.full((1, spec.default_size, spec.default_size, 3), 255.0, dtype=np.float32)
        top = keras.ops.convert_to_numpy(scaled(spec.preprocess(white.copy())))
        assert float(top.max()) == pytest.approx(SCALED_255[spec.preprocess_mode], rel=1e-4)


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
    assert spec.default_size in (224, 240, 260, 299, 300, 384, 480) and spec.min_size <= spec.default_size
    assert spec.keras_weights_file(spec.default_size).endswith(".h5")
    with pytest.raises(ValueError, match="minimum"):
        spec.check_size(spec.min_size - 1)
    pixels = np.full((1, 2, 2, 3), 255.0, dtype=np.float32)
    out = spec.preprocess(pixels.copy())
    # A network that scales its pixels itself gets them as they are: scaled once, not twice.
    in_model = spec.preprocess_mode.startswith("in-model")
    expected_max = 255.0 if in_model else SCALED_255[spec.preprocess_mode]
    assert float(out.max()) == pytest.approx(expected_max, rel=1e-4)


@pytest.mark.parametrize("name", slow_except([name for name in NAMES if name not in NEW_FAMILIES], "VGG16"))
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


# Domain-pretrained weights: a whole classifier's Keras 2 file, its top dropped ------------------------------------


def _tiny(channels: int = 4) -> BackboneSpec:
    """A backbone of one convolution and BatchNormalization, in the registry's form: the loader's rules, cheaply."""

    def constructor(weights=None, include_top=False, input_shape=None, pooling="avg", input_tensor=None):
        inputs = input_tensor if input_tensor is not None else keras.Input(input_shape)
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(channels, 3)(inputs))
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))

    return BackboneSpec("Tiny", constructor, lambda x: x / 255, "tf", 8, 8, channels, lambda size: "tiny.h5")


def write_classifier_file(path: Path, backbone: keras.Model, top: keras.layers.Layer | None = None) -> Path:
    """``backbone`` with ``top`` (default: CheXNet-Keras' ``Dense(14, sigmoid, name="predictions")``) on its pooled
    features, saved as Keras 2's ``save_weights`` did: a legacy HDF5 file of the whole classifier."""
    top = top or keras.layers.Dense(14, activation="sigmoid", name="predictions")
    classifier = keras.Model(backbone.inputs, top(backbone.outputs[0]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, classifier)
    return path


def test_a_classifier_file_loads_without_its_top_and_says_so(tmp_path: Path, capsys):
    spec = _tiny()
    original = build_backbone(spec, 8, resolve_weights(spec, "none", 8, seed=1), seed=1)
    path = write_classifier_file(tmp_path / "Tiny.h5", original)
    source = resolve_weights(spec, str(tmp_path), 8)
    assert source.path == path and source.identity.startswith("file:")
    loaded = build_backbone(spec, 8, source, seed=2)
    pixels = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(pixels), original(pixels), rtol=1e-6)
    said = capsys.readouterr().out
    assert source.identity.removeprefix("file:") in said and "2 layers with weights loaded" in said
    assert "its top dropped: predictions (Dense 4 -> 14)" in said


@pytest.mark.parametrize(("channels", "top", "found"), [
    (6, None, "the first that differs (number 1, 'conv2d"),  # another network: a layer's shapes differ
    (4, keras.layers.BatchNormalization, "not a Dense layer on them"),  # a top that is no classifier
])  # fmt: skip
def test_a_classifier_file_of_another_structure_fails_in_one_line(channels, top, found, tmp_path: Path):
    write_classifier_file(tmp_path / "Tiny.h5", _tiny(channels).constructor(input_shape=(8, 8, 3)),
                          top() if top else None)  # fmt: skip
    spec = _tiny(4)
    with pytest.raises(WeightsUnavailableError) as error:
        build_backbone(spec, 8, resolve_weights(spec, str(tmp_path), 8))
    message = str(error.value)
    assert "\n" not in message and "expected Tiny(include_top=False)'s 2 layers with weights" in message
    assert found in message


def test_a_keras3_file_under_the_classifier_name_is_refused_naming_its_own(tmp_path: Path):
    spec = _tiny()
    model = build_backbone(spec, 8, resolve_weights(spec, "none", 8))
    save_weights_file(model, tmp_path, spec).rename(tmp_path / "Tiny.h5")
    with pytest.raises(WeightsUnavailableError, match="not a Keras 2 HDF5 weights file.*<BACKBONE>.weights.h5"):
        build_backbone(spec, 8, resolve_weights(spec, str(tmp_path), 8))
