"""The registry entry for Xception (Chollet, 2017): constructor, preprocessing, sizes, weights file."""

from keras.applications import xception

from backbones.spec import BackboneSpec

SPEC = BackboneSpec(
    name="Xception",
    constructor=xception.Xception,
    preprocess=xception.preprocess_input,
    preprocess_mode="tf",
    default_size=299,
    min_size=71,
    feature_size=2048,
    keras_weights_file=lambda size: "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
