"""What a backbone is: a small frozen dataclass the registry is made of."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class WeightsUnavailableError(RuntimeError):
    """The requested weights cannot be had (no network, missing file, a file that is not what it should be)."""


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the harness needs to know about one ImageNet backbone.

    Attributes:
        name: registry name, as typed on the command line (``ResNet50``).
        constructor: the ``keras.applications`` constructor.
        preprocess: the family's own ``preprocess_input`` (float32 RGB 0..255 in).
        preprocess_mode: short name of how the pixels are scaled ("caffe", "tf",
            "torch"; "in-model-..." where the network scales them itself and
            ``preprocess`` passes them through); part of the feature cache key.
        default_size: the input size the ImageNet weights were trained at.
        min_size: the smallest input the architecture accepts.
        feature_size: channels of the last feature map (the pooled feature length).
        keras_weights_file: Keras' own file name for the ImageNet weights without
            the top, given the input size. Users copy these into a weights folder.
    """

    name: str
    constructor: Callable
    preprocess: Callable[[np.ndarray], np.ndarray]
    preprocess_mode: str
    default_size: int
    min_size: int
    feature_size: int
    keras_weights_file: Callable[[int], str]

    def check_size(self, image_size: int) -> None:
        """Raise ``ValueError`` if ``image_size`` is below what the backbone accepts."""
        if image_size < self.min_size:
            raise ValueError(
                f"image size {image_size} is below {self.name}'s minimum of "
                f"{self.min_size} px (default {self.default_size})"
            )
