"""The registry entry for InceptionV3 (Szegedy et al., 2016): constructor, preprocessing, sizes, weights file."""

from keras.applications import inception_v3

from backbones.spec import BackboneSpec

SPEC = BackboneSpec(
    name="InceptionV3",
    constructor=inception_v3.InceptionV3,
    preprocess=inception_v3.preprocess_input,
    preprocess_mode="tf",
    default_size=299,
    min_size=75,
    feature_size=2048,
    keras_weights_file=lambda size: "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
