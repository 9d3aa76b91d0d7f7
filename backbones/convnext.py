"""The registry entry for ConvNeXt-Tiny (Liu et al., 2022).

Keras builds the pixel scaling into ConvNeXt (``include_preprocessing=True``, which its ImageNet weights are
made for): ImageNet's mean and standard deviation on 0..255 pixels, the "torch" mode. The family's
``preprocess_input`` is Keras' own, which passes the pixels through unchanged, so they are scaled exactly once,
inside the model; ``preprocess_mode`` says so for the feature cache key. Without its top, Keras' ConvNeXt ends in
a LayerNormalization of the pooled features (the ImageNet head's own): the features are those, normalised.
"""

from keras.applications import convnext

from backbones.spec import BackboneSpec

SPEC = BackboneSpec(
    name="ConvNeXtTiny",
    constructor=convnext.ConvNeXtTiny,
    preprocess=convnext.preprocess_input,
    preprocess_mode="in-model-torch",
    default_size=224,
    min_size=32,  # a stride-4 stem and three stride-2 downsamplings leave a 1x1 map
    feature_size=768,
    keras_weights_file=lambda size: "convnext_tiny_notop.h5",
)
