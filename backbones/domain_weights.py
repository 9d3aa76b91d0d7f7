"""Domain-pretrained weights: a whole classifier's Keras 2 HDF5 weights file, loaded into the backbone alone.

The chest X-ray weights people publish for Keras are whole classifiers saved with Keras 2's ``save_weights``:
CheXNet-Keras (brucechou1983/CheXNet-Keras) saves ``DenseNet121(include_top=False, pooling="avg")`` followed by
``Dense(14, activation="sigmoid", name="predictions")``. Placed in a ``--weights`` folder as ``<BACKBONE>.h5``
(``DenseNet121.h5``), such a file gives the backbone its layers and drops the top, which the harness's own heads
replace. The layers are matched in order and by shape, as Keras loads its own legacy files: Keras 2 and Keras 3
name DenseNet's layers differently (``conv1/conv`` against ``conv1_conv``), so names cannot be matched.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np

from backbones.spec import BackboneSpec, WeightsUnavailableError


class WeightsFileError(WeightsUnavailableError):
    """A weights file that is not what its name in the weights folder says it is."""


def classifier_file_name(spec: BackboneSpec) -> str:
    """The name a whole classifier's Keras 2 weights file of ``spec`` has in a ``--weights`` folder."""
    return f"{spec.name}.h5"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def file_layers(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """``(layer name, arrays)`` of each layer with weights in the Keras 2 HDF5 weights file ``path``, in order.

    Reads both forms Keras 2 wrote: ``save_weights`` (the layers at the root) and ``save`` (under
    ``model_weights``). ``WeightsFileError`` where the file is neither.
    """
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise WeightsFileError(f"{path} is not an HDF5 file ({error})") from None
    with handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in group.attrs:
            raise WeightsFileError(
                f"{path} is not a Keras 2 HDF5 weights file (it has no layer_names); a Keras 3 weights file is "
                f"named <BACKBONE>.weights.h5 in the folder"
            )
        layers = []
        for name in map(_text, group.attrs["layer_names"]):
            weight_names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
            if weight_names:
                layers.append((name, [np.asarray(group[name][w]) for w in weight_names]))
        return layers


def _shapes(arrays) -> str:
    return ", ".join("x".join(map(str, np.shape(a))) or "scalar" for a in arrays)


def _described(layer: tuple[str, list[np.ndarray]]) -> str:
    """``predictions (Dense 1024 -> 14)``: a top layer of the file, in words."""
    name, arrays = layer
    kernel = np.shape(arrays[0])
    return f"{name} (Dense {kernel[0]} -> {kernel[1]})" if len(kernel) == 2 else f"{name} ({_shapes(arrays)})"


def _mismatch(spec: BackboneSpec, path: Path, model_layers, found, top) -> str | None:
    """Why the file's layers ``found`` do not fit ``model_layers`` followed by a Dense ``top``, or None."""
    expected = (f"{path.name}: expected {spec.name}(include_top=False)'s {len(model_layers)} layers with weights, "
                f"then optionally a Dense top reading its {spec.feature_size} features")  # fmt: skip
    for index, (layer, (name, arrays)) in enumerate(zip(model_layers, found, strict=False)):
        wanted = [tuple(w.shape) for w in layer.weights]
        if [np.shape(a) for a in arrays] != wanted:
            return (f"{expected}; found {len(found)} layers with weights, the first that differs (number "
                    f"{index + 1}, {name!r}) has shapes [{_shapes(arrays)}] where {spec.name}'s {layer.name!r} "
                    f"has [{_shapes(layer.weights)}]")  # fmt: skip
    if len(found) < len(model_layers):
        return f"{expected}; found only {len(found)} layers with weights"
    if top and (np.ndim(top[0][1][0]) != 2 or np.shape(top[0][1][0])[0] != spec.feature_size):
        name, arrays = top[0]
        return f"{expected}; found after them {name!r} with shapes [{_shapes(arrays)}], not a Dense layer on them"
    return None


def load_classifier_file(model: keras.Model, spec: BackboneSpec, path: Path) -> str:
    """Load the Keras 2 weights file ``path`` of a whole ``spec`` classifier into the backbone ``model``; what was
    loaded and what was dropped, in words.

    The file's first layers with weights must match ``model``'s in number and shapes, in order; what follows
    them must be a Dense top reading the pooled features (several Dense layers are dropped too).
    ``WeightsFileError`` in one line, naming what was expected and what was found, where they do not.
    """
    found = file_layers(path)
    model_layers = [layer for layer in model.layers if layer.weights]
    top = found[len(model_layers) :]
    problem = _mismatch(spec, path, model_layers, found, top)
    if problem:
        raise WeightsFileError(problem)
    for layer, (_, arrays) in zip(model_layers, found, strict=False):
        layer.set_weights(arrays)
    dropped = "its top dropped: " + ", ".join(map(_described, top)) if top else "it has no top to drop"
    return f"{len(model_layers)} layers with weights loaded from the Keras 2 file {path}; {dropped}"
