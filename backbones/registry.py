"""The one registry of backbones: name -> BackboneSpec."""

from __future__ import annotations

from backbones import inception_resnet_v2, inception_v3, mobilenet_v2, resnet50, vgg16, xception
from backbones.spec import BackboneSpec

BACKBONES: dict[str, BackboneSpec] = {
    module.SPEC.name: module.SPEC
    for module in (vgg16, xception, inception_v3, inception_resnet_v2, resnet50, mobilenet_v2)
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
