"""``--precision auto``: bfloat16 where the hardware computes it natively and a quick measurement finds it faster.

Reduced precision pays only where the processor has it: x86 CPUs with AVX512_BF16 or AMX (``avx512_bf16``,
``amx_bf16`` in ``/proc/cpuinfo``), Arm CPUs with the BF16 extension (``bf16``), GPUs of compute capability 8.0
or more. Elsewhere the library converts to and from float32 around every operation, and bfloat16 ran at 0.45x
float32 on a Cascade Lake CPU (docs/performance.md). Having the instructions is not enough either (a library
build may not use them), so ``auto`` also times a small convolution stack in both types and keeps bfloat16 only
when it is clearly faster. The functions are pure where they can be, so tests feed them cpuinfo texts and timings.
"""

from __future__ import annotations

import functools
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from backbones.weights import PRECISIONS, check_precision, dtype_policy

AUTO = "auto"
# int8: OpenVINO's post-training quantization (NNCF, features.quantize), a precision of the features only: Keras
# builds the backbone in float32 and OpenVINO computes the quantized network. Never chosen by auto.
INT8 = "int8"
PRECISION_CHOICES = (AUTO, *PRECISIONS, INT8)


def keras_build_precision(precision: str) -> str:
    """The type Keras builds a backbone in for features computed in ``precision``: int8's network is quantized by
    OpenVINO from a float32 build."""
    return "float32" if precision == INT8 else precision
# CPU flags of native bfloat16 arithmetic: x86 (AVX512_BF16, AMX) and Arm (the BF16 extension's "bf16").
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# bfloat16 must beat float32 by this factor: a smaller gap is within the noise of a shared machine.
MIN_SPEEDUP = 1.1
# The probe: ResNet's second stage in miniature, 4 convolutions 3x3 of 64 channels at 56 px, 8 images.
PROBE_SHAPE = (8, 56, 56, 64)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run computes in: what was asked (``auto`` or a type), what is used, and why."""

    requested: str
    precision: str
    reason: str


def native_bf16(cpuinfo: str) -> tuple[bool, str]:
    """Whether the CPU described by ``cpuinfo`` (the text of ``/proc/cpuinfo``) computes bfloat16 natively, and why."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 names them flags, Arm Features
            flags |= set(value.split())
    found = [flag for flag in BF16_FLAGS if flag in flags]
    if found:
        return True, f"the CPU computes bfloat16 natively ({', '.join(found)} in /proc/cpuinfo)"
    if not flags:
        return False, "the CPU's flags could not be read (no /proc/cpuinfo), so bfloat16 is not assumed"
    return False, "the CPU has no native bfloat16 (no avx512_bf16, amx_bf16 or bf16 flag): it would be emulated"


def read_cpuinfo() -> str:
    """``/proc/cpuinfo``, or an empty text where there is none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def gpu_capability() -> tuple[int, int] | None:
    """The compute capability of the Keras backend's first GPU, or None without one."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") if gpus else None
    if backend == "jax":
        import jax

        gpus = [device for device in jax.devices() if device.platform == "gpu"]
        text = str(getattr(gpus[0], "compute_capability", "0.0")) if gpus else None
        return tuple(int(part) for part in text.split(".")[:2]) if text else None
    if backend == "torch":
        import torch

        return torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None
    return None


def gpu_bf16() -> tuple[bool, str] | None:
    """Whether the backend's GPU computes bfloat16 natively (compute capability 8.0 or more), and why; None: no GPU."""
    capability = gpu_capability()
    if capability is None:
        return None
    text = ".".join(map(str, capability))
    if tuple(capability) >= (8, 0):
        return True, f"the GPU computes bfloat16 natively (compute capability {text})"
    return False, f"the GPU has no native bfloat16 (compute capability {text}, below 8.0)"


def probe_model(precision: str) -> keras.Model:
    """The small convolution stack ``auto`` times, built under ``precision`` with seeded weights."""
    with dtype_policy(precision):
        inputs = keras.Input(PROBE_SHAPE[1:])
        x = inputs
        for layer in range(4):
            # Seeded initialisers draw from their own seed, so the probe leaves the global random state alone.
            init = keras.initializers.RandomNormal(stddev=0.05, seed=layer)
            x = keras.layers.Conv2D(PROBE_SHAPE[-1], 3, padding="same", activation="relu", kernel_initializer=init)(x)
        return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def probe_batch() -> np.ndarray:
    """The probe's input: seeded uniform values of ``PROBE_SHAPE``."""
    return np.random.default_rng(0).uniform(0, 1, PROBE_SHAPE).astype(np.float32)


def best_seconds(run: Callable[[], object], repeats: int = 5) -> float:
    """The shortest of ``repeats`` timed calls of ``run``, after one untimed call (tracing, first allocation).

    The shortest, because a disturbance (another process, a page fault) only ever adds time; Python's garbage
    collector is held off while the clock runs, since a run builds and drops whole Keras models before.
    """
    run()
    times = []
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    finally:
        if collecting:
            gc.enable()
    return min(times)


def keras_call(model: keras.Model, batch: np.ndarray) -> Callable[[], object]:
    """One forward of ``model`` on ``batch``, waited for (back to NumPy): what a probe times."""
    return lambda: keras.ops.convert_to_numpy(model.predict_on_batch(batch))


def precision_seconds(build: Callable[[str], keras.Model], batch: np.ndarray) -> dict[str, float]:
    """Seconds of one forward of ``build(precision)`` on ``batch`` in float32 and in bfloat16: both models built
    first, then ``alternating_best``."""
    models = {precision: build(precision) for precision in ("float32", "bfloat16")}
    return alternating_best({precision: keras_call(model, batch) for precision, model in models.items()})


@functools.cache
def keras_probe_pair() -> dict[str, float]:
    """``precision_seconds`` of the probe stack, measured once per process: the hardware stays put."""
    return precision_seconds(probe_model, probe_batch())


def keras_probe_seconds(precision: str) -> float:
    """One forward of the probe stack in Keras at ``precision``, timed against the other type."""
    return keras_probe_pair()[precision]


def alternating_best(runs: dict[str, Callable[[], object]], rounds: int = 3, repeats: int = 2) -> dict[str, float]:
    """Each run's shortest time over ``rounds`` rounds in alternating order (``best_seconds`` of ``repeats``).

    For a choice between two ways: a disturbance of a second or two (seen in a run's driver, where it doubled
    one side's time) then hits one round of one side, not the whole of it.
    """
    best = dict.fromkeys(runs, float("inf"))
    for number in range(rounds):
        for name in list(runs)[:: 1 if number % 2 == 0 else -1]:
            best[name] = min(best[name], best_seconds(runs[name], repeats=repeats))
    return best


def probe_shape(spec, size: int, batch: int = 8) -> tuple[dict, np.ndarray]:
    """The constructor arguments of ``spec``'s random-weight network for a probe, and its seeded input pixels.

    At most the backbone's default size: the probe runs before the run's memory check, and a ratio of two
    ways, which is all it is for, hardly moves with the size. Speed does not depend on the weights.
    """
    size = min(size, spec.default_size)
    arguments = {"weights": None, "include_top": False, "pooling": "avg", "input_shape": (size, size, 3)}
    return arguments, np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)


@functools.lru_cache(maxsize=2)
def probe_backbone(spec, size: int, precision: str) -> keras.Model:
    """``spec``'s random-weight network at the probe's size (``probe_shape``), in ``precision``.

    Kept for the next check of the same backbone: the precision check builds both types, and the runtime check
    times one of them in Keras and converts the float32 one for OpenVINO, so each network is built (about 1 to 2 s
    for ResNet50 on 2 cores, and its first trace as much again) once. ``cache_clear()`` when the choices are made.
    """
    arguments, _ = probe_shape(spec, size)
    with dtype_policy(precision):
        return spec.constructor(**arguments)


def backbone_probe_seconds(spec, size: int) -> dict[str, float]:
    """``precision_seconds`` of ``spec``'s own network (batch 8): what ``auto`` decides by, per backbone."""
    _, pixels = probe_shape(spec, size)
    return precision_seconds(functools.partial(probe_backbone, spec, size), pixels)


def hardware_bf16(cpuinfo: str | None = None, gpu: Callable[[], tuple[bool, str] | None] = gpu_bf16):
    """``(native, reason)`` for the device the backbone runs on: the GPU if there is one, else the CPU."""
    on_gpu = gpu()
    if on_gpu is not None:
        return on_gpu
    return native_bf16(read_cpuinfo() if cpuinfo is None else cpuinfo)


def resolve_precision(
    requested: str,
    *,
    cpuinfo: str | None = None,
    gpu: Callable[[], tuple[bool, str] | None] = gpu_bf16,
    seconds: Callable[[str], float] = keras_probe_seconds,
) -> PrecisionChoice:
    """The precision to compute in for ``requested`` (``auto`` or a precision), and the reason.

    ``auto`` gives bfloat16 only where the hardware has it natively (``cpuinfo``, default ``/proc/cpuinfo``;
    ``gpu``) and ``seconds(precision)``, one probe forward, is at least ``MIN_SPEEDUP`` times shorter in
    bfloat16 than in float32; float32 everywhere else. Tests inject ``cpuinfo``, ``gpu`` and ``seconds``.
    """
    if requested == INT8:
        return PrecisionChoice(INT8, INT8, "--precision int8 was asked for: OpenVINO post-training quantization "
                               "(NNCF), calibrated on training images")  # fmt: skip
    if requested != AUTO:
        check_precision(requested)
        return PrecisionChoice(requested, requested, f"--precision {requested} was asked for")
    native, why = hardware_bf16(cpuinfo, gpu)
    if not native:
        return PrecisionChoice(AUTO, "float32", why)
    full, half = seconds("float32"), seconds("bfloat16")
    measured = (f"a probe convolution stack took {half * 1e3:.1f} ms in bfloat16 against {full * 1e3:.1f} ms in "
                f"float32 ({full / half:.2f}x)")  # fmt: skip
    if full >= MIN_SPEEDUP * half:
        return PrecisionChoice(AUTO, "bfloat16", f"{why}, and {measured}")
    return PrecisionChoice(AUTO, "float32", f"{why}, but {measured}: not at least {MIN_SPEEDUP}x faster")
