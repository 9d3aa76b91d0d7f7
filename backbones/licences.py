"""Where each backbone family's ImageNet weights (``--weights imagenet``: Keras' download) come from, and under which
licence, as far as it can honestly be stated. A leaf: imports nothing of ours.

The ``keras.applications`` code is Apache 2.0. The weights are another matter: each family's were trained or
ported by someone, released under their terms, and all were trained on ImageNet, whose terms of access allow
non-commercial research and educational use only. Where the origin's licence is not stated by Keras or the
original release as far as we know, the table says ``unknown`` rather than guess.
"""

from __future__ import annotations

from dataclasses import dataclass

KERAS_CODE_LICENCE = "Apache-2.0"
IMAGENET_TERMS = ("trained on ImageNet, whose terms of access restrict its use to non-commercial research and "
                  "education; whether that binds weights trained on it is unsettled")  # fmt: skip
UNKNOWN = "unknown"
RANDOM_INIT = "random initialisation, no pretrained weights: numbers measure the pipeline only"


@dataclass(frozen=True)
class WeightsLicence:
    """One family's ImageNet weights as Keras ships them: who made them, and the licence of that release."""

    family: str
    origin: str
    licence: str  # an SPDX identifier where known, else UNKNOWN


# Keyed by the registry name's prefix; the longest matching prefix wins (MobileNetV2 before MobileNet).
LICENCES: dict[str, WeightsLicence] = {
    "VGG16": WeightsLicence("VGG", "ported by Keras from the Oxford Visual Geometry Group's release", "CC-BY-4.0"),
    "ResNet50": WeightsLicence("ResNet", "ported by Keras from Kaiming He's original Caffe release", "MIT"),
    "InceptionV3": WeightsLicence("Inception", "trained by the Keras team (keras deep-learning-models)", "MIT"),
    "Xception": WeightsLicence("Xception", "trained by the Keras team (keras deep-learning-models)", "MIT"),
    "InceptionResNetV2": WeightsLicence("Inception-ResNet", "ported by Keras from TensorFlow's models (TF-slim)",
                                        "Apache-2.0"),  # fmt: skip
    "MobileNetV2": WeightsLicence("MobileNetV2", "ported by Keras from TensorFlow's models (TF-slim)", "Apache-2.0"),
    "MobileNet": WeightsLicence("MobileNet v1", "ported by Keras from TensorFlow's models (TF-slim)", "Apache-2.0"),
    "DenseNet": WeightsLicence("DenseNet", "converted by Keras; the original release's terms are not stated there",
                               UNKNOWN),  # fmt: skip
    "EfficientNetV2": WeightsLicence("EfficientNetV2", "converted by Keras from Google's official TensorFlow "
                                     "checkpoints (google/automl)", "Apache-2.0"),  # fmt: skip
    "ConvNeXt": WeightsLicence("ConvNeXt", "converted by Keras from Meta AI's release (facebookresearch/ConvNeXt)",
                               "MIT"),  # fmt: skip
}


def imagenet_licence(backbone: str) -> WeightsLicence:
    """The ImageNet weights' origin and licence of the registry backbone ``backbone`` (``MobileNetV2-0.35``);
    ``unknown`` for a name no family matches."""
    matches = [prefix for prefix in LICENCES if backbone.lower().startswith(prefix.lower())]
    if not matches:
        return WeightsLicence(UNKNOWN, UNKNOWN, UNKNOWN)
    return LICENCES[max(matches, key=len)]
