"""The export formats: name -> how Keras writes it, what must be installed, and how its own runtime runs it.

Every format's file takes a uint8 RGB batch ``(n, height, width, 3)`` and returns the class probabilities
(one sigmoid per finding for a multi-label run); its runtime is the one a user of that format would load it
with, never Keras (but for the ``.keras`` file itself), so the parity check is the user's own experience.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A module's pip package, where the names differ.
PIP_NAMES = {"ai_edge_litert": "ai-edge-litert"}
INSTALL_HINT = "pip install 'cxr-bench[export]'"

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: as typed after ``--format``.
        artifact: the file (or folder) written, relative to the model's export folder.
        keras_format: ``model.export``'s format name; None writes ``model.save`` (a ``.keras`` file).
        converters: per Keras backend that can write the format, the modules that write it.
        runtime: the modules that load and run it.
        load: the artifact's path -> a function of a uint8 batch returning probabilities.
        described: what a reader of the model card needs to know to load it, in a few words.
    """

    name: str
    artifact: str
    keras_format: str | None
    converters: dict[str, tuple[str, ...]]
    runtime: tuple[str, ...]
    load: Callable[[Path], Runner]
    described: str

    def writable(self, backend: str) -> bool:
        """Whether Keras can write this format under ``backend``."""
        return backend in self.converters

    def missing(self, backend: str) -> list[str]:
        """The pip packages this format needs here (to write it under ``backend``, and to check it) that are not
        installed."""
        modules = dict.fromkeys((*self.converters.get(backend, ()), *self.runtime))
        return [PIP_NAMES.get(name, name) for name in modules if importlib.util.find_spec(name) is None]

    def runtime_packages(self) -> tuple[str, ...]:
        """The pip packages that load and run this format."""
        return tuple(PIP_NAMES.get(name, name) for name in self.runtime)

    def runtime_version(self) -> str:
        """The runtime that checks this format, with its version (``onnxruntime 1.32.0``)."""
        package = self.runtime_packages()[0]
        return f"{package} {importlib.metadata.version(package)}"


def _load_keras(path: Path) -> Runner:
    import keras

    model = keras.saving.load_model(path, compile=False)
    return lambda images: keras.ops.convert_to_numpy(model.predict_on_batch(images))


def _load_onnx(path: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def _load_openvino(path: Path) -> Runner:
    import openvino

    # f32: a CPU with bfloat16 units would otherwise compute in bfloat16, and the check would measure that.
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda images: np.asarray(compiled(images)[0])


def _load_litert(path: Path) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    source, result = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(images: np.ndarray) -> np.ndarray:
        interpreter.resize_tensor_input(source["index"], images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], images)
        interpreter.invoke()
        return interpreter.get_tensor(result["index"]).copy()

    return run


def _load_saved_model(path: Path) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda images: loaded.serve(images).numpy()


# Per Keras backend, the modules that write each format; a backend not listed cannot write it (Keras' LiteRT export
# needs TensorFlow or PyTorch; OpenVINO's converter fails on JAX's traced graph).
FORMATS: dict[str, ExportFormat] = {
    one.name: one
    for one in (
        ExportFormat("keras", "model.keras", None, {"tensorflow": (), "jax": (), "torch": ()}, ("keras",),
                     _load_keras, "Keras 3: keras.saving.load_model(path); any backend"),
        ExportFormat("onnx", "model.onnx", "onnx", {"tensorflow": ("tf2onnx", "onnx"), "jax": ("jax2onnx", "onnx"),
                                                    "torch": ("onnx",)},
                     ("onnxruntime",), _load_onnx, "ONNX: onnxruntime.InferenceSession(path)"),
        ExportFormat("openvino", "openvino/model.xml", "openvino", {"tensorflow": ("openvino",),
                                                                  "torch": ("openvino",)},
                     ("openvino",), _load_openvino,
                     "OpenVINO IR (model.xml + model.bin): openvino.Core().compile_model(path)"),
        ExportFormat("litert", "model.tflite", "litert", {"tensorflow": (), "torch": ("litert_torch",)},
                     ("ai_edge_litert",), _load_litert,
                     "LiteRT (TensorFlow Lite) flatbuffer: ai_edge_litert.interpreter.Interpreter"),
        ExportFormat("saved_model", "saved_model", "tf_saved_model", {"tensorflow": (), "jax": ("tensorflow",)},
                     ("tensorflow",), _load_saved_model,
                     "TensorFlow SavedModel: tf.saved_model.load(path).serve(images)"),
    )
}  # fmt: skip


def get_format(name: str) -> ExportFormat:
    """The format ``name``; ``ValueError`` naming the valid ones otherwise."""
    if name not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; valid formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def check_installed(formats: list[ExportFormat], backend: str) -> None:
    """``RuntimeError`` in one line naming every format that cannot be written and checked here, and what to
    install or which backend writes it."""
    if unwritable := [one for one in formats if not one.writable(backend)]:
        raise RuntimeError("; ".join(f"--format {one.name} cannot be written under Keras backend {backend} (it can "
                                     f"under {', '.join(one.converters)}: KERAS_BACKEND=...)" for one in unwritable))
    lacking = {one.name: missing for one in formats if (missing := one.missing(backend))}
    if lacking:
        listed = "; ".join(f"--format {name} needs {', '.join(missing)}" for name, missing in lacking.items())
        raise RuntimeError(f"{listed} (Keras backend {backend}), not installed here: {INSTALL_HINT}")
