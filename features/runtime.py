"""Where a backbone's forward pass runs: Keras itself (the default), or OpenVINO, a CPU inference runtime (optional).

OpenVINO gets the Keras backbone through Keras' own exporter (``model.export(path, format="openvino")``), once
per backbone, size and weights: the IR is kept beside the feature cache. It is compiled for the CPU with
``INFERENCE_PRECISION_HINT`` f32 or bf16; its graph compiler fuses batch normalisation and activations into the
convolutions, which TensorFlow's graph of the Keras model does not. Only this module imports ``openvino``, and
only when it is asked for, so the package stays an optional extra (``pip install 'cxr-bench[openvino]'``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from backbones import AUTO, BackboneSpec, PrecisionChoice, get_backbone, resolve_precision
from backbones.precision import (
    MIN_SPEEDUP,
    backbone_probe_seconds,
    best_seconds,
    keras_probe_seconds,
    probe_batch,
    probe_model,
    read_cpuinfo,
)
from common.files import atomic_write_json
from features.cache import cache_key

RUNTIMES = ("keras", "openvino")
# OpenVINO's CPU plugin computes float32 and bfloat16; float16 only on CPUs with AVX512_FP16, which are rare.
OPENVINO_HINTS = {"float32": "f32", "bfloat16": "bf16"}
INSTALL_HINT = "pip install 'cxr-bench[openvino]' (or pip install openvino)"

Forward = Callable[[np.ndarray], np.ndarray]


class RuntimeUnavailableError(ValueError):
    """The asked-for runtime's package is not installed."""


def _openvino():
    """The ``openvino`` module, or one clear error naming the install command."""
    try:
        import openvino
    except ImportError as error:
        raise RuntimeUnavailableError(
            f"--runtime openvino needs the openvino package, which is not installed: {INSTALL_HINT}"
        ) from error
    return openvino


def check_runtime(runtime: str, precision: str) -> None:
    """Raise ``ValueError`` (one line) for an unknown runtime, a missing package, or a precision it cannot run."""
    if runtime not in RUNTIMES:
        raise ValueError(f"--runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "openvino":
        _openvino()
        if precision not in (AUTO, *OPENVINO_HINTS):
            raise ValueError(f"--runtime openvino computes {' or '.join(OPENVINO_HINTS)} on the CPU, not {precision}")


def runtime_identity(runtime: str) -> str:
    """The runtime as the feature cache key names it: its version too, since another version computes otherwise."""
    return "keras" if runtime == "keras" else f"openvino-{_openvino().__version__}"


def keras_forward(model: keras.Model, jit_compile: bool = False) -> Forward:
    """A function from one preprocessed batch to float32 pooled features.

    ``predict_on_batch`` runs one traced graph per input shape (a jitted
    function on JAX); ``jit_compile`` asks for XLA on TensorFlow as well.
    """
    if jit_compile:
        model.compile(jit_compile=True)

    def forward(batch: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.cast(model.predict_on_batch(batch), "float32"))

    return forward


def export_openvino(model: keras.Model, ir_file: Path) -> Path:
    """Write ``model`` as OpenVINO IR at ``ir_file`` (``.xml`` + ``.bin``), atomically: a whole folder or none."""
    folder = ir_file.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.export(str(temp / ir_file.name), format="openvino", verbose=False)
        os.replace(temp, folder)
    except OSError:
        if not ir_file.is_file():  # another run renamed its copy into place first: use that one
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return ir_file


def openvino_forward(model_file: Path, batch_shape: tuple[int, ...], precision: str) -> Forward:
    """A forward function over the OpenVINO IR ``model_file`` compiled for the CPU at ``batch_shape``, ``precision``."""
    ov = _openvino()
    core = ov.Core()
    network = core.read_model(str(model_file))
    network.reshape(list(batch_shape))  # one static shape, as on the Keras path: the compiler plans for it
    compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[precision]})
    request = compiled.create_infer_request()

    def forward(batch: np.ndarray) -> np.ndarray:
        # A copy: the request reuses its output buffer on the next call.
        return np.array(request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[0], dtype=np.float32)

    return forward


def build_forward(
    runtime: str,
    make_model: Callable[[], keras.Model],
    *,
    precision: str,
    batch_shape: tuple[int, ...],
    ir_file: Path,
    jit_compile: bool = False,
) -> Forward:
    """The forward function of ``runtime``; OpenVINO converts ``make_model()`` only when ``ir_file`` is not there yet.

    ``make_model`` builds the Keras backbone: in ``precision`` for Keras, in float32 for OpenVINO (whose compile
    hint sets the compute type). ``ir_file`` (OpenVINO only) is where the converted model is kept.
    """
    if runtime == "keras":
        return keras_forward(make_model(), jit_compile)
    if not ir_file.is_file():
        export_openvino(make_model(), ir_file)
    return openvino_forward(ir_file, batch_shape, precision)


def openvino_probe_seconds(precision: str) -> float:
    """Seconds of one forward of the probe stack through OpenVINO at ``precision`` (best of 5)."""
    with tempfile.TemporaryDirectory() as temp:
        ir_file = export_openvino(probe_model("float32"), Path(temp) / "probe" / "model.xml")
        forward = openvino_forward(ir_file, probe_batch().shape, precision)
    batch = probe_batch()
    return best_seconds(lambda: forward(batch))


@functools.cache
def probe_seconds(runtime: str, precision: str) -> float:
    """The probe's forward time in ``runtime`` and ``precision``, measured once per process: the hardware stays put."""
    return (keras_probe_seconds if runtime == "keras" else openvino_probe_seconds)(precision)


def resolve_run_precision(requested: str, runtime: str, cache_dir: str | Path | None = None) -> PrecisionChoice:
    """``resolve_precision`` with the probe timed in the runtime the backbone will run in.

    With ``cache_dir``, ``auto``'s measured choice is remembered there (``precision.json``) per processor,
    runtime and versions, and reused: a timing near the threshold must not flip the precision between runs,
    or every rerun would miss the feature cache and move the leaderboard by the bfloat16 rounding.
    """
    measure = functools.partial(resolve_precision, requested, seconds=functools.partial(probe_seconds, runtime))
    if requested != AUTO or cache_dir is None:
        return measure()
    return _remembered(Path(cache_dir), {"runtime": runtime}, measure)


def resolve_backbone_precision(
    spec: BackboneSpec, size: int, run_choice: PrecisionChoice, runtime: str, cache_dir: str | Path
) -> PrecisionChoice:
    """The run's choice checked on ``spec``'s own network: ``auto``'s bfloat16 stays only where it pays there.

    A dense convolution stack decides the run; depthwise networks (MobileNet) are memory-bound, and their
    bfloat16 casts can cost what the arithmetic saves, so under Keras each backbone is timed in both types
    (remembered as the run's choice is). OpenVINO's bfloat16 kernels paid on every backbone measured.
    """
    if run_choice.requested != AUTO or run_choice.precision == "float32" or runtime != "keras":
        return run_choice

    def measure() -> PrecisionChoice:
        full, half = (_backbone_seconds(spec.name, size, p) for p in ("float32", "bfloat16"))
        timed = f"{spec.name} at {size} px took {half * 1e3:.0f} ms in bfloat16 against {full * 1e3:.0f} ms in float32"
        if full >= MIN_SPEEDUP * half:
            return PrecisionChoice(AUTO, "bfloat16", f"{timed} ({full / half:.2f}x)")
        return PrecisionChoice(AUTO, "float32", f"{timed} ({full / half:.2f}x, not at least {MIN_SPEEDUP}x)")

    return _remembered(Path(cache_dir), {"runtime": runtime, "backbone": spec.name, "size": size}, measure)


@functools.cache
def _backbone_seconds(name: str, size: int, precision: str) -> float:
    """``backbone_probe_seconds``, measured once per process and backbone: the hardware stays put."""
    return backbone_probe_seconds(get_backbone(name), size, precision)


def _remembered(cache_dir: Path, what: dict, measure: Callable[[], PrecisionChoice]) -> PrecisionChoice:
    """``measure()``'s choice, remembered in ``cache_dir/precision.json`` per processor, versions and ``what``."""
    memo = cache_dir / "precision.json"
    key = cache_key({"cpuinfo": _processor(), "keras": keras.__version__, "backend": keras.backend.backend(),
                     **what})  # fmt: skip
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    remembered = known.get(key) if isinstance(known, dict) else None
    if isinstance(remembered, dict) and set(remembered) == {"requested", "precision", "reason"}:
        return PrecisionChoice(**{**remembered, "reason": remembered["reason"] + f" (remembered in {memo})"})
    choice = measure()
    memo.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(memo, {**(known if isinstance(known, dict) else {}), key: asdict(choice)})
    return choice


def _processor() -> str:
    """The processor's model name and flags: what a remembered precision choice holds for."""
    lines = read_cpuinfo().splitlines()
    wanted = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(dict.fromkeys(wanted))


def main(argv: list[str] | None = None) -> int:
    """``python -m features.runtime [BACKBONE ...]``: what ``--precision auto`` chooses here, run-wide and per
    backbone (at its default size), freshly measured and not remembered."""
    import argparse

    from backbones import BACKBONES

    parser = argparse.ArgumentParser(prog="python -m features.runtime", description=main.__doc__)
    parser.add_argument("backbones", nargs="*", default=list(BACKBONES), metavar="BACKBONE")
    parser.add_argument("--runtime", choices=RUNTIMES, default="keras")
    args = parser.parse_args(argv)
    run = resolve_run_precision(AUTO, args.runtime)
    print(f"run: {run.precision} ({run.reason})")
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.backbones:
            spec = get_backbone(name)
            choice = resolve_backbone_precision(spec, spec.default_size, run, args.runtime, scratch)
            print(f"{spec.name} {spec.default_size} px: {choice.precision} ({choice.reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
