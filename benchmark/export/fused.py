"""One Keras model from a run's parts: uint8 image in, resized and preprocessed in the graph, the backbone and the
head fused, class probabilities out. Every export format is written from it."""

from __future__ import annotations

import re

import keras
import numpy as np

from backbones import BackboneSpec

INPUT_NAME = "image"


def affine_preprocess(spec: BackboneSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel (3, 3), bias (3,))`` with ``spec.preprocess(x) == x @ kernel + bias`` on RGB pixels.

    Every family's ``preprocess_input`` is per-pixel affine (scaling, mean subtraction, the channel swap of the
    Caffe mode), so one 1x1 linear map holds it in the graph with layers of Keras' own: the exported file loads
    without our code. ``ValueError`` where a family's preprocessing is not affine."""
    # Probed in float64 at full scale (255): at 1.0 the difference from the bias cancels most digits.
    eye = 255.0 * np.eye(3).reshape(3, 1, 1, 3)
    bias = np.asarray(spec.preprocess(np.zeros((1, 1, 1, 3))), np.float64).reshape(3)
    kernel = (np.asarray(spec.preprocess(eye.copy()), np.float64).reshape(3, 3) - bias) / 255.0
    probe = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
    expected = np.asarray(spec.preprocess(probe.copy()), np.float64)
    if not np.allclose(probe.astype(np.float64) @ kernel + bias, expected, rtol=1e-5, atol=1e-4):
        raise ValueError(f"{spec.name}: its preprocessing ({spec.preprocess_mode}) is not a per-pixel affine map; "
                         "it cannot be put in the exported graph")  # fmt: skip
    return kernel.astype(np.float32), bias.astype(np.float32)


def fused_model(spec: BackboneSpec, image_size: int, backbone: keras.Model, head: keras.Model) -> keras.Model:
    """``backbone`` (its second output the pooled features) and ``head`` behind resizing and ``spec``'s
    preprocessing: a uint8 RGB batch of any height and width in, probabilities out, in inference mode.

    The images are resized bilinearly to ``image_size`` (a no-op for images the run's loader already decoded at
    that size, which is how the run read them)."""
    kernel, bias = affine_preprocess(spec)
    image = keras.Input((None, None, 3), dtype="uint8", name=INPUT_NAME)
    resized = keras.layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(image)
    preprocess = keras.layers.Dense(3, trainable=False, name=_layer_name(f"preprocess_{spec.preprocess_mode}"))
    pixels = preprocess(resized)
    preprocess.set_weights([kernel, bias])
    # training=False is recorded in the graph: no dropout or batch statistics in any exported file.
    pooled = backbone(pixels, training=False)[1]
    probabilities = head(pooled, training=False)
    model = keras.Model(image, probabilities, name=_layer_name(f"{spec.name}_{image_size}px"))
    model(np.zeros((1, image_size, image_size, 3), np.uint8))  # Keras exports only a model that has been called
    return model


def _layer_name(text: str) -> str:
    """``text`` with every character a graph name may not hold (``-``, ``.``, ``/``) as ``_``."""
    return re.sub(r"\W", "_", text)
