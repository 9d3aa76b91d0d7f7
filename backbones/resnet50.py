"""The registry entry for ResNet50 (He et al., 2016): constructor, preprocessing, sizes, weights file."""

from keras.applications import resnet50

from backbones.spec import BackboneSpec

SPEC = BackboneSpec(
    name="ResNet50",
    constructor=resnet50.ResNet50,
    preprocess=resnet50.preprocess_input,
    preprocess_mode="caffe",
    default_size=224,
    min_size=32,
    feature_size=2048,
    keras_weights_file=lambda size: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
