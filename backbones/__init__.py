"""Backbones: what an ImageNet feature extractor is, and how to build one."""

from backbones.registry import BACKBONES, get_backbone
from backbones.spec import BackboneSpec
from backbones.weights import (
    WeightsSource,
    WeightsUnavailableError,
    build_backbone,
    resolve_weights,
    save_weights_file,
)

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "WeightsSource",
    "WeightsUnavailableError",
    "build_backbone",
    "get_backbone",
    "resolve_weights",
    "save_weights_file",
]
