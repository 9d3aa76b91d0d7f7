"""Registry entries for MobileNet v1 (Howard et al., 2017), one per Keras width multiplier."""

from functools import partial

from keras.applications import mobilenet

from backbones.spec import BackboneSpec

_TRAINED_SIZES = (128, 160, 192, 224)
# Keras' file names spell the width as two digits: 0.25 -> "2_5", 1.0 -> "1_0".
_WIDTH_TEXT = {0.25: "2_5", 0.5: "5_0", 0.75: "7_5", 1.0: "1_0"}


def spec(width: float) -> BackboneSpec:
    """MobileNet v1 with width multiplier ``width``, registered as ``MobileNet-<width>``."""

    def weights_file(size: int) -> str:
        rows = size if size in _TRAINED_SIZES else 224
        return f"mobilenet_{_WIDTH_TEXT[width]}_{rows}_tf_no_top.h5"

    return BackboneSpec(
        name=f"MobileNet-{float(width)}",
        constructor=partial(mobilenet.MobileNet, alpha=width),
        preprocess=mobilenet.preprocess_input,
        preprocess_mode="tf",
        default_size=224,
        min_size=32,
        feature_size=int(1024 * width),
        keras_weights_file=weights_file,
    )
