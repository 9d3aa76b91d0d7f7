"""The one registry of backbones: name -> BackboneSpec.

| name                 | family            | width | input px | features |
|----------------------|-------------------|-------|----------|----------|
| VGG16                | VGG               |       | 224      | 512      |
| Xception             | Xception          |       | 299      | 2048     |
| InceptionV3          | Inception         |       | 299      | 2048     |
| InceptionResNetV2    | Inception-ResNet  |       | 299      | 1536     |
| ResNet50             | ResNet            |       | 224      | 2048     |
| MobileNetV2          | MobileNetV2       | 1.0   | 224      | 1280     |
| MobileNetV2-<w>      | MobileNetV2       | 0.35, 0.5, 0.75, 1.3, 1.4 | 224 | 1280 (1664, 1792 above 1) |
| MobileNet-<w>        | MobileNet v1      | 0.25, 0.5, 0.75, 1.0 | 224 | 1024 x w |
| DenseNet121          | DenseNet          |       | 224      | 1024     |
| DenseNet169          | DenseNet          |       | 224      | 1664     |
| DenseNet201          | DenseNet          |       | 224      | 1920     |
| EfficientNetV2B0     | EfficientNetV2    |       | 224      | 1280     |
| EfficientNetV2B1     | EfficientNetV2    |       | 240      | 1280     |
| EfficientNetV2B2     | EfficientNetV2    |       | 260      | 1408     |
| EfficientNetV2B3     | EfficientNetV2    |       | 300      | 1536     |
| EfficientNetV2S      | EfficientNetV2    |       | 384      | 1280     |
| EfficientNetV2M      | EfficientNetV2    |       | 480      | 1280     |
| EfficientNetV2L      | EfficientNetV2    |       | 480      | 1280     |
| ConvNeXtTiny         | ConvNeXt          |       | 224      | 768      |

The first six are the benchmark's default comparison; the width variants are
there for small, fast runs and for users whose weights folder holds them.
DenseNet121 is the chest X-ray field's standard backbone (CheXNet,
TorchXRayVision) and the one domain-pretrained weights are published for;
EfficientNetV2 and ConvNeXt are the newer ImageNet networks. None of these is in
the default comparison: ask for them with ``--backbones``. Every input size is
the one Keras' ImageNet weights were trained at; all accept 32 px and up.
"""

from __future__ import annotations

from backbones import (
    convnext,
    densenet,
    efficientnet_v2,
    inception_resnet_v2,
    inception_v3,
    mobilenet,
    mobilenet_v2,
    resnet50,
    vgg16,
    xception,
)
from backbones.spec import BackboneSpec

DEFAULT_BACKBONES = ("VGG16", "Xception", "InceptionV3", "InceptionResNetV2", "ResNet50", "MobileNetV2")

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        vgg16.SPEC,
        xception.SPEC,
        inception_v3.SPEC,
        inception_resnet_v2.SPEC,
        resnet50.SPEC,
        mobilenet_v2.spec(1.0),
        *(mobilenet_v2.spec(width) for width in (0.35, 0.5, 0.75, 1.3, 1.4)),
        *(mobilenet.spec(width) for width in (0.25, 0.5, 0.75, 1.0)),
        *densenet.SPECS,
        *efficientnet_v2.SPECS,
        convnext.SPEC,
    )
}


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec registered as ``name`` (case-insensitive).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    by_lower = {key.lower(): spec for key, spec in BACKBONES.items()}
    spec = by_lower.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return spec
