"""Count the floating-point operations of one forward pass of a built Keras model (for the speed benchmark).

Counts 2 FLOPs per multiply-add in the convolution and dense layers, which
carry more than 98% of the work of the six backbones; a Dense layer counts at every position of
the map it is applied to (ConvNeXt's 1x1 convolutions are Dense layers). Batch normalisation,
activations, pooling and additions are left out, as in the FLOP figures
usually quoted for these networks (ResNet50 about 4 G multiply-adds at 224 px).
"""

from __future__ import annotations

import math

import keras


def _spatial(shape) -> int:
    return math.prod(int(d) for d in shape[1:-1])


def layer_flops(layer: keras.layers.Layer) -> int:
    """FLOPs of one image through ``layer`` (0 for layer types that are not counted)."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        c_in = int(layer.input.shape[-1])
        depthwise = kh * kw * c_in * layer.depth_multiplier
        pointwise = c_in * layer.depth_multiplier * layer.filters
        return 2 * _spatial(layer.output.shape) * (depthwise + pointwise)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2 * _spatial(layer.output.shape) * kh * kw * int(layer.input.shape[-1]) * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        c_in = int(layer.input.shape[-1]) // layer.groups
        return 2 * _spatial(layer.output.shape) * kh * kw * c_in * layer.filters
    if isinstance(layer, keras.layers.Dense):
        # Applied at every position of a feature map (ConvNeXt's 1x1 convolutions are Dense layers).
        return 2 * _spatial(layer.input.shape) * int(layer.input.shape[-1]) * layer.units
    return 0


def model_flops(model: keras.Model) -> int:
    """FLOPs of one image through every counted layer of ``model``, nested models included."""
    return sum(layer_flops(layer) for layer in model._flatten_layers(include_self=False, recursive=True))
