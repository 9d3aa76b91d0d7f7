"""MobileNetV2 (Sandler et al., 2018), width multiplier 1.0."""

from keras.applications import mobilenet_v2

from backbones.spec import BackboneSpec

# Keras ships one set of ImageNet weights per training resolution and falls back
# to the 224 px set for any other input size.
_TRAINED_SIZES = (96, 128, 160, 192, 224)


def _weights_file(size: int) -> str:
    rows = size if size in _TRAINED_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"


SPEC = BackboneSpec(
    name="MobileNetV2",
    constructor=mobilenet_v2.MobileNetV2,
    preprocess=mobilenet_v2.preprocess_input,
    preprocess_mode="tf",
    default_size=224,
    min_size=32,
    feature_size=1280,
    keras_weights_file=_weights_file,
)
