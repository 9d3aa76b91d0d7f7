"""Registry entries for MobileNetV2 (Sandler et al., 2018), one per Keras width multiplier."""

from functools import partial

from keras.applications import mobilenet_v2

from backbones.spec import BackboneSpec

# Keras ships one set of ImageNet weights per width and training resolution, and falls
# back to the 224 px set for any other input size.
_TRAINED_SIZES = (96, 128, 160, 192, 224)


def spec(width: float = 1.0) -> BackboneSpec:
    """MobileNetV2 with width multiplier ``width`` (``MobileNetV2`` at 1.0, else ``MobileNetV2-<width>``)."""

    def weights_file(size: int) -> str:
        rows = size if size in _TRAINED_SIZES else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{rows}_no_top.h5"

    return BackboneSpec(
        name="MobileNetV2" if width == 1.0 else f"MobileNetV2-{float(width)}",
        constructor=partial(mobilenet_v2.MobileNetV2, alpha=width),
        preprocess=mobilenet_v2.preprocess_input,
        preprocess_mode="tf",
        default_size=224,
        min_size=32,
        # Keras widens the last 1x1 convolution above width 1 only, rounded to a multiple of 8.
        feature_size=1280 if width <= 1.0 else int(1280 * width + 4) // 8 * 8,
        keras_weights_file=weights_file,
    )
