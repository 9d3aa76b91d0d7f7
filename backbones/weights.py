"""Find a backbone's weights (ImageNet download, random init, or a local folder) and build it with them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras

from backbones.domain_weights import classifier_file_name, load_classifier_file
from backbones.spec import BackboneSpec, WeightsUnavailableError
from common.files import sha256_file


@dataclass(frozen=True)
class WeightsSource:
    """Resolved weights for one backbone at one input size.

    Attributes:
        kind: "imagenet", "none" or "file".
        path: the weights file for kind "file", else None.
        identity: a string naming exactly these weights, for cache keys.
    """

    kind: str
    path: Path | None
    identity: str


def folder_candidates(spec: BackboneSpec, image_size: int) -> list[str]:
    """File names looked for, in order, inside a ``--weights DIR`` folder.

    A whole classifier's Keras 2 file (``<BACKBONE>.h5``, domain-pretrained
    weights: backbones/domain_weights.py) comes before Keras' ImageNet files, and
    Keras' file for ``image_size`` before its file for the default size, which
    the fully convolutional backbones load at any input size (as Keras itself
    does for sizes it ships no file for).
    """
    names = [f"{spec.name}.weights.h5", f"{spec.name}_notop.weights.h5", classifier_file_name(spec),
             spec.keras_weights_file(image_size)]  # fmt: skip
    return list(dict.fromkeys([*names, spec.keras_weights_file(spec.default_size)]))


def resolve_weights(spec: BackboneSpec, weights: str, image_size: int, seed: int = 0) -> WeightsSource:
    """Turn the ``--weights`` value into a concrete source for ``spec``.

    ``weights`` is "imagenet", "none" (random init, seeded) or a folder path.
    """
    if weights == "imagenet":
        return WeightsSource("imagenet", None, f"imagenet:{spec.keras_weights_file(image_size)}")
    if weights == "none":
        return WeightsSource("none", None, f"random-init:seed={seed}")
    folder = Path(weights)
    if not folder.is_dir():
        raise WeightsUnavailableError(
            f"--weights must be 'imagenet', 'none' or an existing folder of weight files; {weights!r} is none of these"
        )
    names = folder_candidates(spec, image_size)
    for name in names:
        path = folder / name
        if path.is_file():
            # The file's content, not its name, decides whether cached features still hold.
            return WeightsSource("file", path, f"file:{sha256_file(path)}")
    present = sorted(p.name for p in folder.iterdir())[:20]
    raise WeightsUnavailableError(
        f"no weights for {spec.name} in {folder}: looked for {', '.join(names)}; "
        f"the folder holds {present or 'nothing'}"
    )


# Compute precision of a backbone -> the Keras dtype policy it is built under. The
# mixed policies keep the variables (and so any weights file) in float32.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def check_precision(precision: str) -> None:
    """Raise ``ValueError`` naming the valid precisions if ``precision`` is not one."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")


@contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Build the layers made inside under ``precision``'s Keras dtype policy; the global policy is restored after."""
    check_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_backbone(
    spec: BackboneSpec, image_size: int, source: WeightsSource, seed: int = 0, precision: str = "float32"
) -> keras.Model:
    """Build ``spec`` without its classifier, globally average-pooled, with ``source`` weights.

    The output is the GlobalAveragePooling of the last feature map, shape
    ``(batch, spec.feature_size)``. ``precision`` "bfloat16" or "float16"
    computes in that type with float32 weights (Keras mixed precision).
    """
    spec.check_size(image_size)
    with dtype_policy(precision):
        return _construct(spec, image_size, source, seed)


def _construct(spec: BackboneSpec, image_size: int, source: WeightsSource, seed: int) -> keras.Model:
    # Random init must be the same on every run, or cached features would lie.
    keras.utils.set_random_seed(seed)
    kwargs = dict(include_top=False, input_shape=(image_size, image_size, 3), pooling="avg")
    if source.kind == "none":
        return spec.constructor(weights=None, **kwargs)
    if source.kind == "file":
        model = spec.constructor(weights=None, **kwargs)
        if source.path.name == classifier_file_name(spec):
            loaded = load_classifier_file(model, spec, source.path)
            print(f"{spec.name}: weights {source.identity.replace('file:', 'SHA-256 ')}: {loaded}", flush=True)
        else:
            model.load_weights(str(source.path))
        return model
    try:
        return spec.constructor(weights="imagenet", **kwargs)
    except Exception as error:  # keras raises bare Exception on fetch failures
        file_name = spec.keras_weights_file(image_size)
        raise WeightsUnavailableError(
            f"could not get the ImageNet weights for {spec.name} ({file_name}): {error}\n"
            f"Offline options:\n"
            f"  --weights DIR   a folder holding {file_name} (copy it from "
            f"~/.keras/models on a machine with internet, or from KERAS_HOME/models)\n"
            f"  --weights none  random initialisation: runs the pipeline, but the "
            f"numbers say nothing about ImageNet transfer"
        ) from error


def save_weights_file(model: keras.Model, folder: Path, spec: BackboneSpec) -> Path:
    """Save ``model``'s weights in ``folder`` under the name ``resolve_weights`` looks for first."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.weights.h5"
    model.save_weights(str(path))
    return path
