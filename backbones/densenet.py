"""Registry entries for DenseNet (Huang et al., 2017), 121, 169 and 201 layers: the chest X-ray field's standard
backbone (CheXNet, TorchXRayVision)."""

from keras.applications import densenet

from backbones.spec import BackboneSpec

# Channels of the last dense block after its final BatchNormalization: what the global pooling averages.
_FEATURES = {121: 1024, 169: 1664, 201: 1920}


def spec(depth: int) -> BackboneSpec:
    """DenseNet with ``depth`` layers (121, 169 or 201), registered as ``DenseNet<depth>``."""
    return BackboneSpec(
        name=f"DenseNet{depth}",
        constructor=getattr(densenet, f"DenseNet{depth}"),
        preprocess=densenet.preprocess_input,
        preprocess_mode="torch",
        default_size=224,
        # Five halvings (stride-2 convolution, max pooling, three transition poolings): 32 px leaves a 1x1 map.
        min_size=32,
        feature_size=_FEATURES[depth],
        keras_weights_file=lambda size: f"densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5",
    )


SPECS = tuple(spec(depth) for depth in _FEATURES)
