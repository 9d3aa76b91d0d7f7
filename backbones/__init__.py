"""Backbones: what an ImageNet feature extractor is, and how to build one."""

from backbones.flops import model_flops
from backbones.precision import (
    AUTO,
    INT8,
    PRECISION_CHOICES,
    PrecisionChoice,
    keras_build_precision,
    resolve_precision,
)
from backbones.registry import BACKBONES, DEFAULT_BACKBONES, get_backbone
from backbones.spec import BackboneSpec
from backbones.weights import (
    PRECISIONS,
    WeightsSource,
    WeightsUnavailableError,
    build_backbone,
    check_precision,
    dtype_policy,
    resolve_weights,
    save_weights_file,
)

__all__ = [
    "AUTO",
    "BACKBONES",
    "DEFAULT_BACKBONES",
    "PRECISIONS",
    "INT8",
    "PRECISION_CHOICES",
    "keras_build_precision",
    "PrecisionChoice",
    "BackboneSpec",
    "WeightsSource",
    "WeightsUnavailableError",
    "build_backbone",
    "check_precision",
    "dtype_policy",
    "get_backbone",
    "model_flops",
    "resolve_precision",
    "resolve_weights",
    "save_weights_file",
]
