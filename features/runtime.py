"""Where a backbone's forward pass runs: Keras itself (the default), or OpenVINO, a CPU inference runtime (optional).

OpenVINO gets the Keras backbone through Keras' own exporter (``model.export(path, format="openvino")``), once
per backbone, size and weights: the IR is kept beside the feature cache, with a manifest written last holding the
SHA-256 of ``model.xml`` and ``model.bin``, checked before every compile (a damaged IR is said in one line and
converted again: a flipped bit in ``model.bin`` would change every feature, silently). It is compiled for the CPU with
``INFERENCE_PRECISION_HINT`` f32 or bf16; its graph compiler fuses batch normalisation and activations into the
convolutions, which TensorFlow's graph of the Keras model does not. Only this module imports ``openvino``, and
only when it is asked for, so the package stays an optional extra (``pip install 'cxr-bench[openvino]'``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import keras
import numpy as np

from backbones import AUTO, INT8, BackboneSpec, PrecisionChoice, get_backbone, resolve_precision
from backbones.precision import (
    MIN_SPEEDUP,
    alternating_best,
    backbone_probe_seconds,
    gpu_bf16,
    gpu_capability,
    keras_call,
    keras_probe_pair,
    native_bf16,
    probe_backbone,
    probe_batch,
    probe_model,
    probe_shape,
    read_cpuinfo,
)
from common.environment import environment
from common.files import (
    DamagedFileError,
    atomic_folder,
    atomic_write_json,
    atomic_write_sealed_json,
    read_sealed_json,
)
from common.home import HOME_VARIABLE, cxr_bench_home
from features.cache import cache_key, entry_lock, warn_damaged

RUNTIMES = ("keras", "openvino")
RUNTIME_CHOICES = (AUTO, *RUNTIMES)
# OpenVINO's CPU plugin computes float32 and bfloat16; float16 only on CPUs with AVX512_FP16, which are rare.
OPENVINO_HINTS = {"float32": "f32", "bfloat16": "bf16"}
# What OpenVINO computes: its hints, and int8 (a network quantized by NNCF, features.quantize; never chosen by auto).
OPENVINO_PRECISIONS = (*OPENVINO_HINTS, INT8)
INSTALL_HINT = "pip install 'cxr-bench[openvino]' (or pip install openvino)"
NNCF_INSTALL_HINT = "pip install 'cxr-bench[int8]' (or pip install nncf)"
# Keras backends whose models OpenVINO converts here: JAX's export reaches it as an XlaCallModule op, which it
# cannot convert; PyTorch's export is untested.
OPENVINO_BACKENDS = ("tensorflow",)
# Beside an IR's model.xml and model.bin, written last: their SHA-256, sealed.
IR_MANIFEST = "manifest.json"
# How much a backbone extracts, in images at 224 px (``extraction_work``), decides how ``auto`` chooses. Below
# KERAS_BELOW OpenVINO's conversion (1 to 16 s a backbone) cannot repay itself: Keras in float32, unmeasured. Below
# MEASURE_FROM a measurement (14 to 21 s a backbone on 2 cores: networks built in both types and runtimes, a
# conversion, about 200 timed forwards) would cost more than a tenth of the extraction it decides: the prior,
# unmeasured, which is what every measurement so far chose (OpenVINO, in bfloat16 where the CPU computes it
# natively; docs/performance.md). From MEASURE_FROM (the whole Kermany set at 224 px is 5,856) each backbone is
# measured, and remembered per cache folder and machine-wide.
KERAS_BELOW = 200
MEASURE_FROM = 4000

Forward = Callable[[np.ndarray], np.ndarray]


class RuntimeUnavailableError(ValueError):
    """The asked-for runtime's package is not installed, or cannot take this Keras backend's models."""


@dataclass(frozen=True)
class RuntimeChoice:
    """Where a run's backbones compute: what was asked (``auto`` or a runtime), what is used, and why."""

    requested: str
    runtime: str
    reason: str


def openvino_installed() -> bool:
    """Whether ``import openvino`` would find the package (without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except ValueError:  # a module set to None in sys.modules (how tests hide it)
        return False


def backend_problem(backend: str | None = None) -> str | None:
    """Why OpenVINO cannot take the models of Keras backend ``backend`` (default: this process's), or None."""
    backend = backend or keras.backend.backend()
    if backend in OPENVINO_BACKENDS:
        return None
    return f"OpenVINO converts only TensorFlow-backend models; KERAS_BACKEND={backend}"


def resolve_runtime(
    requested: str,
    precision: str = AUTO,
    jit_compile: bool = False,
    *,
    installed: Callable[[], bool] = openvino_installed,
    gpu: Callable[[], object] = gpu_capability,
    backend: Callable[[], str] = keras.backend.backend,
    work: float | None = None,
) -> RuntimeChoice:
    """The run's runtime for ``requested`` (``auto``, ``keras`` or ``openvino``), and the reason.

    ``auto`` is OpenVINO where the backbones run on the CPU and the package is installed, and each backbone
    then keeps it only where it is measurably faster there than Keras (``resolve_backbone_runtime``). Keras
    under a Keras backend other than TensorFlow (``backend_problem``), where a GPU is there (OpenVINO's plugin
    here is the CPU's), where ``precision`` or ``jit_compile`` asks for what only Keras does (float16, XLA), or
    where OpenVINO is not installed, or where the run's largest extraction, ``work`` (``run_work``), is too small for
    OpenVINO's conversion to repay itself (``too_little_work``).
    """
    if requested != AUTO:
        return RuntimeChoice(requested, requested, f"--runtime {requested} was asked for")
    problem = backend_problem(backend())
    if problem is not None:
        return RuntimeChoice(AUTO, "keras", problem)
    capability = gpu()
    if capability is not None:
        text = ".".join(map(str, capability))
        return RuntimeChoice(AUTO, "keras", f"the Keras backend has a GPU (compute capability {text}); OpenVINO "
                             "runs here on the CPU")  # fmt: skip
    if precision not in (AUTO, *OPENVINO_PRECISIONS):
        return RuntimeChoice(AUTO, "keras", f"--precision {precision}: OpenVINO's CPU plugin computes "
                             f"{', '.join(OPENVINO_PRECISIONS)}")  # fmt: skip
    if precision == INT8:  # check_runtime has refused int8 where OpenVINO is missing or cannot take the backend
        return RuntimeChoice(AUTO, "openvino", "--precision int8 is OpenVINO's post-training quantization")
    if jit_compile:
        return RuntimeChoice(AUTO, "keras", "--jit-compile asks Keras for XLA")
    if not installed():
        return RuntimeChoice(AUTO, "keras", f"OpenVINO, the faster CPU runtime, is not installed ({INSTALL_HINT})")
    if small := too_little_work(work):
        return RuntimeChoice(AUTO, "keras", small)
    return RuntimeChoice(AUTO, "openvino", "the backbones run on the CPU and OpenVINO, an inference runtime for "
                         f"CPUs, is installed; from {MEASURE_FROM} images at 224 px a backbone keeps it where measured "
                         f"{MIN_SPEEDUP}x faster than Keras")  # fmt: skip


def openvino_module():
    """The ``openvino`` module, or one clear error naming the install command."""
    try:
        import openvino
    except ImportError as error:
        raise RuntimeUnavailableError(
            f"--runtime openvino needs the openvino package, which is not installed: {INSTALL_HINT}"
        ) from error
    return openvino


def nncf_version() -> str:
    """The installed NNCF's version (``--precision int8``), or one clear error naming the install command."""
    try:
        return importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError as error:
        raise RuntimeUnavailableError(f"--precision int8 needs NNCF, which is not installed: {NNCF_INSTALL_HINT}") \
            from error


def check_runtime(runtime: str, precision: str) -> None:
    """Raise ``ValueError`` (one line) for an unknown runtime, a missing package, a Keras backend it cannot take,
    or a precision it cannot run."""
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"--runtime must be one of {', '.join(RUNTIME_CHOICES)}, not {runtime!r}")
    if precision == INT8 and runtime == "keras":
        raise ValueError("--precision int8 runs in OpenVINO (NNCF post-training quantization), not Keras: use "
                         "--runtime openvino or auto")  # fmt: skip
    if runtime == "openvino" or precision == INT8:
        asked = "--runtime openvino" if runtime == "openvino" else "--precision int8 (OpenVINO's)"
        problem = backend_problem()
        if problem is not None:
            raise RuntimeUnavailableError(f"{asked} cannot run here: {problem}. Use --runtime keras (or auto) "
                                          "without int8, or KERAS_BACKEND=tensorflow")  # fmt: skip
        openvino_module()
        if precision not in (AUTO, *OPENVINO_PRECISIONS):
            raise ValueError(f"--runtime openvino computes {', '.join(OPENVINO_PRECISIONS)} on the CPU, not "
                             f"{precision}")  # fmt: skip
    if precision == INT8:
        nncf_version()


def runtime_identity(runtime: str) -> str:
    """The runtime as the feature cache key names it: its version too, since another version computes otherwise."""
    return "keras" if runtime == "keras" else f"openvino-{openvino_module().__version__}"


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
    """Write ``model`` as OpenVINO IR at ``ir_file`` (``.xml`` + ``.bin``) with its manifest (``ir_damage``),
    atomically: a whole folder or none, replacing what stood there.

    Raises ``RuntimeUnavailableError`` under a Keras backend whose models OpenVINO cannot convert.
    """
    problem = backend_problem()
    if problem is not None:
        raise RuntimeUnavailableError(problem)
    return write_ir(ir_file, lambda path: model.export(str(path), format="openvino", verbose=False))


def write_ir(ir_file: Path, write: Callable[[Path], object], kind: str = "openvino-ir") -> Path:
    """``write(path)`` an OpenVINO IR into a temporary folder, seal it with its manifest (``ir_damage``) and put the
    folder at ``ir_file.parent`` in one rename: a whole IR or none, replacing what stood there."""
    with atomic_folder(ir_file.parent) as temp:
        write(temp / ir_file.name)
        files = (ir_file.name, ir_file.with_suffix(".bin").name)
        atomic_write_sealed_json(temp / IR_MANIFEST, {"format": kind}, files=files)
    return ir_file


def openvino_root(cache_root: str | Path) -> Path:
    """The folder converted backbones are kept in: ``$CXR_BENCH_HOME/openvino`` (``common.home.cxr_bench_home``),
    shared by every ``--cache-dir`` of this user on this machine, so a new cache folder converts nothing already
    converted (1 to 16 s a backbone); ``cache_root/openvino`` where ``CXR_BENCH_HOME`` is ``off`` or cannot be
    written. Each IR is checked against its manifest before every compile wherever it lies (``kept_ir``)."""
    home = cxr_bench_home()
    if home is not None:
        try:
            (home / "openvino").mkdir(parents=True, exist_ok=True)
            if os.access(home / "openvino", os.W_OK):
                return home / "openvino"
        except OSError:
            pass
    return Path(cache_root) / "openvino"


def ir_damage(ir_file: Path) -> str | None:
    """What is wrong with the IR kept at ``ir_file``, in words, or None when it matches its manifest.

    Raises ``FileNotFoundError`` where none is kept. An IR without a manifest (converted by a version before
    manifests, or a file lost) cannot be checked, so it counts as damaged.
    """
    if not ir_file.parent.is_dir():
        raise FileNotFoundError(ir_file)
    try:
        read_sealed_json(ir_file.parent / IR_MANIFEST)
    except FileNotFoundError:
        return f"{ir_file.parent / IR_MANIFEST} is missing (an older cxr-bench's conversion, or damaged)"
    except DamagedFileError as damage:
        return str(damage)
    return None


def kept_openvino_ir(make_model: Callable[[], keras.Model], ir_file: Path) -> Path:
    """``ir_file``, checked against its manifest; converted from ``make_model()`` where absent, and again where
    damaged, after one line saying so: a damaged IR is never compiled."""
    return kept_ir(ir_file, lambda: export_openvino(make_model(), ir_file), "converted")


def kept_ir(ir_file: Path, make: Callable[[], Path], verb: str) -> Path:
    """``ir_file`` where it matches its manifest, else ``make()`` (which writes it), after one line where it was
    damaged: a damaged IR is never compiled. ``verb`` says how ``make`` makes it, for that line."""
    try:
        damage = ir_damage(ir_file)
        if damage is None:
            return ir_file
        warn_damaged(damage, f"the OpenVINO model is {verb} again (rebuilt)")
    except FileNotFoundError:
        pass
    # Two workers of one backbone take turns: the second finds the first's IR whole.
    with entry_lock(ir_file.parent.parent):
        try:
            if ir_damage(ir_file) is None:
                return ir_file
        except FileNotFoundError:
            pass
        return make()


def openvino_forward(model_file: Path, batch_shape: tuple[int, ...], precision: str) -> Forward:
    """A forward function over the OpenVINO IR ``model_file`` compiled for the CPU at ``batch_shape``, ``precision``."""
    ov = openvino_module()
    core = ov.Core()
    network = core.read_model(str(model_file))
    network.reshape(list(batch_shape))  # one static shape, as on the Keras path: the compiler plans for it
    # An int8 network's quantized operations are fixed by its FakeQuantize nodes; the rest computes in float32.
    hint = OPENVINO_HINTS["float32" if precision == INT8 else precision]
    compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": hint})
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
    ir_file: Path | None = None,
    jit_compile: bool = False,
    quantize: Callable[[Path], Path] | None = None,
) -> Forward:
    """The forward function of ``runtime``; OpenVINO converts ``make_model()`` only when ``ir_file`` is not there yet.

    ``make_model`` builds the Keras backbone: in ``precision`` for Keras, in float32 for OpenVINO (whose compile
    hint sets the compute type). ``ir_file`` (OpenVINO only) is where the converted model is kept. ``quantize``
    (int8) gives the quantized IR of the converted one (``features.quantize.int8_ir``).
    """
    if runtime == "keras":
        return keras_forward(make_model(), jit_compile)
    model_file = kept_openvino_ir(make_model, ir_file)
    if precision == INT8:
        model_file = quantize(model_file)
    return openvino_forward(model_file, batch_shape, precision)


@functools.cache
def openvino_probe_pair() -> dict[str, float]:
    """Seconds of one forward of the probe stack through OpenVINO in float32 and in bfloat16 (one IR compiled
    with either hint, ``alternating_best``), measured once per process."""
    batch = probe_batch()
    with tempfile.TemporaryDirectory() as temp:
        ir_file = export_openvino(probe_model("float32"), Path(temp) / "probe" / "model.xml")
        forwards = {precision: openvino_forward(ir_file, batch.shape, precision) for precision in OPENVINO_HINTS}
    return alternating_best({precision: (lambda f=forward: f(batch)) for precision, forward in forwards.items()})


def probe_seconds(runtime: str, precision: str) -> float:
    """The probe's forward time in ``runtime`` and ``precision``, timed against the other type."""
    return (keras_probe_pair() if runtime == "keras" else openvino_probe_pair())[precision]


def extraction_work(images: int | None, size: int) -> float | None:
    """``images`` images at ``size`` px as images at 224 px (the work grows with the pixels); None where unknown."""
    return None if images is None else images * (size / 224) ** 2


def run_work(images: int | None, sizes) -> float | None:
    """The largest ``extraction_work`` of a run that extracts ``images`` images at each of ``sizes``."""
    return None if images is None else max((extraction_work(images, size) for size in sizes), default=0.0)


def too_little_work(work: float | None) -> str | None:
    """Why ``auto`` takes Keras in float32 unmeasured for an extraction of ``work`` (below ``KERAS_BELOW``), or None
    (also where the work is not known)."""
    if work is None or work >= KERAS_BELOW:
        return None
    return (f"the extraction is the work of {work:.0f} images at 224 px, too little for OpenVINO's conversion or a "
            f"measured choice to repay itself (below {KERAS_BELOW}, auto takes Keras in float32 "
            "unmeasured)")  # fmt: skip


def unmeasured(work: float | None) -> str | None:
    """Why ``auto`` takes its prior unmeasured for an extraction of ``work`` (below ``MEASURE_FROM``), or None where it
    measures (also where the work is not known)."""
    if work is None or work >= MEASURE_FROM:
        return None
    return (f"the extraction is the work of {work:.0f} images at 224 px, too little for a measurement (14 to 21 s a "
            f"backbone) to repay itself (below {MEASURE_FROM}, auto chooses unmeasured)")  # fmt: skip


def prior_precision(runtime: str, why: str, cpuinfo: str | None = None, gpu=gpu_bf16) -> PrecisionChoice:
    """``auto``'s precision unmeasured: OpenVINO in bfloat16 where the CPU computes it natively (1.6x to 2.0x its
    float32 on every backbone measured there), Keras in bfloat16 on a GPU that computes it natively, else float32
    (Keras' bfloat16 on a CPU pays only on some networks: docs/performance.md)."""
    if runtime == "openvino":
        native, hardware = native_bf16(read_cpuinfo() if cpuinfo is None else cpuinfo)
    else:
        on_gpu = gpu()
        native, hardware = on_gpu if on_gpu is not None else (False, "Keras on the CPU")
    return PrecisionChoice(AUTO, "bfloat16" if native else "float32", f"{why}; {hardware}")


def resolve_run_precision(
    requested: str, runtime: str, cache_dir: str | Path | None = None, work: float | None = None
) -> PrecisionChoice:
    """``resolve_precision`` with the probe timed in the runtime the backbone will run in; for ``auto``, float32
    unmeasured where the run's ``work`` is too little for OpenVINO (``too_little_work``), the prior unmeasured where
    too little for a measurement (``unmeasured``, ``prior_precision``).

    With ``cache_dir``, ``auto``'s measured choice is remembered there (``precision.json``) per processor,
    runtime and versions, and reused: a timing near the threshold must not flip the precision between runs,
    or every rerun would miss the feature cache and move the leaderboard by the bfloat16 rounding.
    """
    if requested == AUTO and (small := too_little_work(work)):
        return PrecisionChoice(AUTO, "float32", small)
    if requested == AUTO and (why := unmeasured(work)):
        return prior_precision(runtime, why)
    measure = functools.partial(resolve_precision, requested, seconds=functools.partial(probe_seconds, runtime))
    if requested != AUTO or cache_dir is None:
        return measure()
    # The runtime with its version: another OpenVINO may compute the probe otherwise.
    return _remembered(Path(cache_dir), {"runtime": runtime_identity(runtime)}, measure)


def resolve_backbone_precision(
    spec: BackboneSpec, size: int, run_choice: PrecisionChoice, runtime: str, cache_dir: str | Path
) -> PrecisionChoice:
    """The run's choice checked on ``spec``'s own network: ``auto``'s bfloat16 stays only where it pays there.

    A dense convolution stack decides the run; depthwise networks (MobileNet) are memory-bound, and their
    bfloat16 casts can cost what the arithmetic saves, so under Keras each backbone is timed in both types
    (remembered as the run's choice is). OpenVINO's bfloat16 kernels paid on every backbone measured (1.6x to 2.0x
    its float32).
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


def resolve_backbone_runtime(
    spec: BackboneSpec, size: int, precisions: dict[str, PrecisionChoice], cache_dir: str | Path
) -> RuntimeChoice:
    """``--runtime auto`` on ``spec``'s own network: OpenVINO where it is at least ``MIN_SPEEDUP`` times faster
    than Keras, each timed in the precision it would compute in (``precisions``, by runtime); else Keras.

    Keras is the baseline (it is what a GPU, fine-tuning and the heatmaps run), so OpenVINO must clearly pay:
    VGG16, already at the arithmetic ceiling in Keras, stays there (docs/performance.md). Random weights,
    batch 8, at most the default size; the conversion takes 1 to 16 s; remembered as the precisions are.
    """
    keras_in, openvino_in = precisions["keras"].precision, precisions["openvino"].precision

    def measure() -> RuntimeChoice:
        fast, base = _runtime_seconds(spec.name, size, keras_in, openvino_in)
        timed = (f"{spec.name} at {size} px took {fast * 1e3:.0f} ms in OpenVINO ({openvino_in}) against "
                 f"{base * 1e3:.0f} ms in Keras ({keras_in})")  # fmt: skip
        if base >= MIN_SPEEDUP * fast:
            return RuntimeChoice(AUTO, "openvino", f"{timed} ({base / fast:.2f}x)")
        return RuntimeChoice(AUTO, "keras", f"{timed} ({base / fast:.2f}x, not at least {MIN_SPEEDUP}x)")

    what = {"runtime": "auto", "backbone": spec.name, "size": size, "keras": keras_in, "openvino": openvino_in,
            "openvino_version": openvino_module().__version__}  # fmt: skip
    return _remembered(Path(cache_dir), what, measure, RuntimeChoice)


def resolve_backbones(
    runtime: RuntimeChoice,
    precision: str,
    plan: list[tuple[BackboneSpec, int]],
    cache_dir: str | Path,
    images: int | None = None,
) -> tuple[PrecisionChoice, dict[tuple[str, int], tuple[RuntimeChoice, PrecisionChoice]]]:
    """The run's precision, and each backbone's ``(runtime, precision)`` at its size, measured where ``auto``.

    With ``--runtime auto`` resolved to OpenVINO, both runtimes are candidates: each gets its precision (the
    run's probe, then the backbone's own check), and ``resolve_backbone_runtime`` picks between them. ``images``,
    how many the run extracts, spares the measurements where they cannot pay: each backbone's work
    (``extraction_work``) below ``MEASURE_FROM`` takes ``auto``'s choice unmeasured (``unmeasured_choice``).
    """
    both = runtime.requested == AUTO and runtime.runtime == "openvino" and precision != INT8
    candidates = ("keras", "openvino") if both else (runtime.runtime,)
    work = run_work(images, [size for _, size in plan])
    run_precision = {name: resolve_run_precision(precision, name, cache_dir, work) for name in candidates}
    chosen = {}
    for spec, size in plan:
        mine = extraction_work(images, size)
        if unmeasured(mine):  # below MEASURE_FROM, which includes too little work for OpenVINO
            chosen[(spec.name, size)] = unmeasured_choice(runtime, precision, mine, cache_dir, both)
            continue
        own = {name: resolve_backbone_precision(spec, size, run_precision[name], name, cache_dir)
               for name in candidates}  # fmt: skip
        where = runtime if len(candidates) == 1 else resolve_backbone_runtime(spec, size, own, cache_dir)
        chosen[(spec.name, size)] = (where, own[where.runtime])
        probe_backbone.cache_clear()  # this backbone's probe networks: not needed by the next one
    return run_precision[runtime.runtime], chosen


def unmeasured_choice(runtime: RuntimeChoice, precision: str, work: float, cache_dir: str | Path,
                      both: bool) -> tuple[RuntimeChoice, PrecisionChoice]:  # fmt: skip
    """A backbone's ``(runtime, precision)`` where its ``work`` is too little for a measurement: with both runtimes
    candidates, Keras below ``KERAS_BELOW`` and OpenVINO above (faster than Keras, or as fast, on every backbone
    measured: docs/performance.md); the precision unmeasured too where ``auto`` (``resolve_run_precision``)."""
    if not both:
        return runtime, resolve_run_precision(precision, runtime.runtime, cache_dir, work)
    small = too_little_work(work)
    where = RuntimeChoice(AUTO, "keras", small) if small else RuntimeChoice(
        AUTO, "openvino", f"{unmeasured(work)}; OpenVINO ran faster than Keras, or as fast, on every backbone measured")
    return where, resolve_run_precision(precision, where.runtime, cache_dir, work)


def _backbone_seconds(name: str, size: int, precision: str) -> float:
    """One forward of ``name`` in Keras at ``precision``, timed against the other type: ``_precision_seconds``."""
    return _precision_seconds(name, size)[precision]


@functools.cache
def _precision_seconds(name: str, size: int) -> dict[str, float]:
    """``backbone_probe_seconds`` in float32 and bfloat16, measured once per process and backbone."""
    return backbone_probe_seconds(get_backbone(name), size)


@functools.cache
def _runtime_seconds(name: str, size: int, keras_precision: str, openvino_precision: str) -> tuple[float, float]:
    """Seconds of one forward of ``name``'s random-weight network in OpenVINO and in Keras, each in its precision
    (both built first, then ``alternating_best``), measured once per process."""
    spec = get_backbone(name)
    _, pixels = probe_shape(spec, size)
    model = probe_backbone(spec, size, keras_precision)  # built (and traced) by the precision check where it ran
    with tempfile.TemporaryDirectory() as temp:
        ir_file = export_openvino(probe_backbone(spec, size, "float32"), Path(temp) / "probe" / "model.xml")
        forward = openvino_forward(ir_file, pixels.shape, openvino_precision)
    best = alternating_best({"openvino": lambda: forward(pixels), "keras": keras_call(model, pixels)})
    return best["openvino"], best["keras"]


def machine_choices() -> Path | None:
    """The machine-wide memo of measured choices, shared by every ``--cache-dir`` of this user on this machine:
    ``$CXR_BENCH_HOME/choices.json`` (default ``~/.cache/cxr-bench``); None where ``CXR_BENCH_HOME`` is ``off``."""
    home = cxr_bench_home()
    return None if home is None else home / "choices.json"


@contextlib.contextmanager
def measured_afresh() -> Iterator[Path]:
    """A scratch cache folder, with the machine-wide memo off: choices resolved inside are measured now, never read
    from or written to a memo (``python -m features.runtime``, the benchmark's ``default`` variant)."""
    with environment(**{HOME_VARIABLE: "off"}), tempfile.TemporaryDirectory() as scratch:
        yield Path(scratch)


def _remembered(cache_dir: Path, what: dict, measure: Callable, kind: type = PrecisionChoice):
    """``measure()``'s choice (a ``kind``), remembered per processor, versions and ``what``, each entry sealed with
    the SHA-256 of its key and choice (``_read_choices``): first in ``cache_dir/precision.json`` (what this cache's
    features were made with), then in the machine-wide memo (``machine_choices``), so a new cache folder on the same
    machine, software and network measures nothing. The machine-wide memo is read and written under a lock, so
    concurrent runs measure a choice once and never lose one another's."""
    memo = cache_dir / "precision.json"
    key = cache_key({"cpuinfo": _processor(), "keras": keras.__version__, "backend": keras.backend.backend(),
                     "backend_version": _backend_version(), **what})  # fmt: skip
    known = _read_choices(memo)
    choice = _choice_in(known, key, kind)
    if choice is not None:
        return _said_remembered(choice, memo)
    choice, source = _machine_wide(key, measure, kind)
    memo.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(memo, {**known, key: _sealed_choice(key, asdict(choice))})
    return choice if source is None else _said_remembered(choice, source)


def _said_remembered(choice, where: Path):
    """``choice`` with its reason saying where it was remembered."""
    return type(choice)(**{**asdict(choice), "reason": choice.reason + f" (remembered in {where})"})


def _machine_wide(key: str, measure: Callable, kind: type) -> tuple:
    """``(choice, where it was remembered)`` from the machine-wide memo, or ``(measure(), None)``, kept there."""
    shared = machine_choices()
    if shared is None:
        return measure(), None
    try:
        with entry_lock(shared.parent):
            known = _read_choices(shared)
            choice = _choice_in(known, key, kind)
            if choice is not None:
                return choice, shared
            choice = measure()
            atomic_write_json(shared, {**known, key: _sealed_choice(key, asdict(choice))})  # the lock is still held
            return choice, None
    except OSError as error:  # an unwritable home: this run measures, as if there were no memo
        _say_memo_unusable(f"warning: the machine-wide memo {shared} cannot be used ({error}); choices are measured "
                           f"per --cache-dir (set {HOME_VARIABLE} to a folder you can write, or to off)")  # fmt: skip
        return measure(), None


@functools.cache
def _say_memo_unusable(line: str) -> None:
    """Print ``line`` once per process: a run resolves several choices, and one line says it."""
    print(line, flush=True)


def _choice_in(known: dict[str, dict], key: str, kind: type):
    """The ``kind`` remembered under ``key`` in ``known``, or None."""
    remembered = known.get(key, {}).get("choice")
    if isinstance(remembered, dict) and set(remembered) == {field.name for field in fields(kind)}:
        return kind(**remembered)
    return None


def _backend_version() -> str:
    """The version of the Keras backend's own library (TensorFlow, JAX or PyTorch): it computes the Keras side."""
    backend = keras.backend.backend()
    try:
        return importlib.metadata.version({"torch": "torch"}.get(backend, backend))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _sealed_choice(key: str, choice: dict) -> dict:
    """A remembered choice as ``precision.json`` holds it: with the SHA-256 of its key and values."""
    return {"choice": choice, "sha256": hashlib.sha256(json.dumps([key, choice], sort_keys=True).encode()).hexdigest()}


def _read_choices(memo: Path) -> dict[str, dict]:
    """The entries of ``memo`` (``precision.json``) that match their seals.

    A damaged file or entry is said in one line and the file rebuilt without it: its choice is measured again
    where needed, never used. Entries of a version before seals are left out quietly (measured again).
    """
    try:
        stored = json.loads(memo.read_text(encoding="utf-8"))
        damage = None if isinstance(stored, dict) else f"{memo} is damaged (not a table of choices)"
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        stored, damage = {}, f"{memo} is damaged ({type(error).__name__}: {error})"
    stored = stored if isinstance(stored, dict) else {}
    good = {key: entry for key, entry in stored.items() if _sealed_choice(key, _choice_of(entry)) == entry}
    older = [entry for key, entry in stored.items() if key not in good and _is_older_choice(entry)]
    damaged = len(stored) - len(good) - len(older)
    if damaged and damage is None:
        damage = f"{memo} is damaged ({damaged} remembered choice(s) do not match their checksum)"
    if damage is not None:
        warn_damaged(damage, "what it remembered is measured again where needed, and the file rebuilt")
        atomic_write_json(memo, good)
    return good


def _choice_of(entry: object) -> dict:
    return entry.get("choice") if isinstance(entry, dict) and isinstance(entry.get("choice"), dict) else {}


def _is_older_choice(entry: object) -> bool:
    """Whether ``entry`` is a choice as versions before seals remembered it (its fields, bare)."""
    return isinstance(entry, dict) and any(set(entry) == {f.name for f in fields(kind)}
                                           for kind in (PrecisionChoice, RuntimeChoice))  # fmt: skip


def _processor() -> str:
    """The processor's model name and flags: what a remembered precision choice holds for."""
    lines = read_cpuinfo().splitlines()
    wanted = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(dict.fromkeys(wanted))


def main(argv: list[str] | None = None) -> int:
    """``python -m features.runtime [BACKBONE ...]``: what ``--runtime auto --precision auto`` choose here, run-wide
    and per backbone (at its default size), freshly measured and not remembered."""
    import argparse

    from backbones import BACKBONES

    parser = argparse.ArgumentParser(prog="python -m features.runtime", description=main.__doc__)
    parser.add_argument("backbones", nargs="*", default=list(BACKBONES), metavar="BACKBONE")
    parser.add_argument("--runtime", choices=RUNTIME_CHOICES, default=AUTO)
    parser.add_argument("--precision", choices=(AUTO, "float32", "bfloat16"), default=AUTO)
    args = parser.parse_args(argv)
    runtime = resolve_runtime(args.runtime, args.precision)
    specs = [get_backbone(name) for name in args.backbones]
    with measured_afresh() as scratch:
        run, chosen = resolve_backbones(runtime, args.precision, [(s, s.default_size) for s in specs], scratch)
    print(f"runtime: {runtime.runtime} ({runtime.reason})")
    print(f"precision: {run.precision} ({run.reason})")
    for (name, size), (where, precision) in chosen.items():
        print(f"{name} {size} px: {where.runtime}, {precision.precision} ({where.reason}; {precision.reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
