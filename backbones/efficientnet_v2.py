"""Registry entries for EfficientNetV2 (Tan and Le, 2021): B0 to B3, S, M and L.

Keras builds the pixel scaling into these networks (``include_preprocessing=True``, which its ImageNet weights
are made for): B0 to B3 scale 0..255 to 0..1 and normalise by ImageNet's mean and standard deviation (the
"torch" mode), S, M and L map 0..255 to ``x / 128 - 1``. The family's ``preprocess_input`` is Keras' own, which
passes the pixels through unchanged, so they are scaled exactly once, inside the model; ``preprocess_mode``
says so for the feature cache key.
"""

from keras.applications import efficientnet_v2

from backbones.spec import BackboneSpec

# Size -> (Keras' name suffix, the input size its ImageNet weights were trained at, pooled feature length).
_SIZES = {
    "B0": ("b0", 224, 1280),
    "B1": ("b1", 240, 1280),
    "B2": ("b2", 260, 1408),
    "B3": ("b3", 300, 1536),
    "S": ("s", 384, 1280),
    "M": ("m", 480, 1280),
    "L": ("l", 480, 1280),
}


def spec(size: str) -> BackboneSpec:
    """EfficientNetV2 of size ``size`` ("B0" to "B3", "S", "M", "L"), registered as ``EfficientNetV2<size>``."""
    suffix, default_size, features = _SIZES[size]
    return BackboneSpec(
        name=f"EfficientNetV2{size}",
        constructor=getattr(efficientnet_v2, f"EfficientNetV2{size}"),
        preprocess=efficientnet_v2.preprocess_input,
        preprocess_mode="in-model-torch" if size.startswith("B") else "in-model-x/128-1",
        default_size=default_size,
        min_size=32,  # Keras' own minimum: five stride-2 stages leave a 1x1 map
        feature_size=features,
        # One file per network, at any input size: Keras names it after the model ("efficientnetv2-b0").
        keras_weights_file=lambda image_size: f"efficientnetv2-{suffix}_notop.h5",
    )


SPECS = tuple(spec(size) for size in _SIZES)
