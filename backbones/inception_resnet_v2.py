"""The registry entry for InceptionResNetV2 (Szegedy et al., 2017): constructor, preprocessing, sizes, weights file."""

from keras.applications import inception_resnet_v2

from backbones.spec import BackboneSpec

SPEC = BackboneSpec(
    name="InceptionResNetV2",
    constructor=inception_resnet_v2.InceptionResNetV2,
    preprocess=inception_resnet_v2.preprocess_input,
    preprocess_mode="tf",
    default_size=299,
    min_size=75,
    feature_size=1536,
    keras_weights_file=lambda size: "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
