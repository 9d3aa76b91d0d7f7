"""Backbones: what an ImageNet feature extractor is, and how to build one."""

from backbones.flops import model_flops
from backbones.registry import BACKBONES, DEFAULT_BACKBONES, get_backbone
from backbones.spec import BackboneSpec
from backbones.weights import (
    PRECISIONS,
    WeightsSource,
    WeightsUnavailableError,
    build_backbone,
    check_precision,
    resolve_weights,
    save_weights_file,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONES",
    "PRECISIONS",
    "BackboneSpec",
    "WeightsSource",
    "WeightsUnavailableError",
    "build_backbone",
    "check_precision",
    "get_backbone",
    "model_flops",
    "resolve_weights",
    "save_weights_file",
]
