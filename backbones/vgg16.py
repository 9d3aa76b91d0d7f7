"""The registry entry for VGG16 (Simonyan & Zisserman, 2014): constructor, preprocessing, sizes, weights file."""

from keras.applications import vgg16

from backbones.spec import BackboneSpec

SPEC = BackboneSpec(
    name="VGG16",
    constructor=vgg16.VGG16,
    preprocess=vgg16.preprocess_input,
    preprocess_mode="caffe",
    default_size=224,
    min_size=32,
    feature_size=512,
    keras_weights_file=lambda size: "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
)
