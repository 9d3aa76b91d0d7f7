"""``--precision auto`` (CPU detection, the start-up probe, what run.json says), ``--runtime auto`` and
``--runtime openvino``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from conftest import run_small_benchmark

from backbones import get_backbone, resolve_precision, resolve_weights
from backbones.precision import native_bf16
from benchmark.config import RunConfig
from benchmark.speed.bench_extract import cosine_rows
from features.cache import cache_key
from features.data.dataset import scan_dataset
from features.extract import extract_features, feature_key_parts
from features.runtime import INSTALL_HINT, extraction_work, resolve_runtime, too_little_work
from features.settings import ExtractSettings

# Abridged /proc/cpuinfo texts of the machines this project met: the flags that matter, and a few that do not.
CASCADE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) CPU @ 2.50GHz
flags\t\t: fpu sse2 avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vnni
"""
SAPPHIRE_RAPIDS = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx512f avx512_vnni amx_bf16 amx_tile\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"
NO_GPU = lambda: None  # noqa: E731


def _never(precision: str) -> float:
    raise AssertionError("the probe ran where the CPU has no native bfloat16")


@pytest.mark.parametrize(("cpuinfo", "native", "flag"), [
    (CASCADE_LAKE, False, "no native bfloat16"), (EPYC, True, "avx512_bf16"), (SAPPHIRE_RAPIDS, True, "amx_bf16"),
    (GRAVITON3, True, "bf16"), ("", False, "could not be read"),
])  # fmt: skip
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo: str, native: bool, flag: str):
    found, reason = native_bf16(cpuinfo)
    assert found is native and flag in reason


def test_auto_is_float32_without_native_bf16_and_does_not_probe():
    choice = resolve_precision("auto", cpuinfo=CASCADE_LAKE, gpu=NO_GPU, seconds=_never)
    assert (choice.requested, choice.precision) == ("auto", "float32")
    assert "emulated" in choice.reason


@pytest.mark.parametrize(("half", "expected"), [(0.02, "bfloat16"), (0.05, "float32"), (0.038, "float32")])
def test_auto_with_native_bf16_keeps_it_only_when_the_probe_finds_it_faster(half: float, expected: str):
    timings = {"float32": 0.04, "bfloat16": half}
    choice = resolve_precision("auto", cpuinfo=EPYC, gpu=NO_GPU, seconds=timings.__getitem__)
    assert choice.precision == expected
    assert "avx512_bf16" in choice.reason and f"{half * 1e3:.1f} ms in bfloat16" in choice.reason


def test_a_gpu_decides_before_the_cpu():
    old_gpu = lambda: (False, "the GPU has no native bfloat16 (compute capability 7.5, below 8.0)")  # noqa: E731
    assert resolve_precision("auto", cpuinfo=EPYC, gpu=old_gpu, seconds=_never).precision == "float32"


def test_an_asked_for_precision_is_kept_and_a_wrong_one_named():
    assert resolve_precision("float16", seconds=_never).precision == "float16"
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        resolve_precision("int4", seconds=_never)


def test_the_cache_key_refuses_auto(kermany_root: Path):
    spec = get_backbone("MobileNetV2")
    with pytest.raises(ValueError, match="unknown precision 'auto'"):
        feature_key_parts(spec, resolve_weights(spec, "none", 32), 32, kermany_root, ["a.jpeg"], precision="auto")


def test_run_json_the_report_and_the_cache_hold_the_resolved_precision(small_run):
    run = json.loads((small_run.results / "run.json").read_text())
    choice = run["precision"]
    assert run["config"]["precision"] == "auto" and choice["requested"] == "auto"
    assert choice["precision"] in ("float32", "bfloat16") and choice["reason"]
    # The default runtime is auto; 60 images at 32 px are too little work for OpenVINO to pay: Keras, float32, and
    # nothing measured or remembered (test_auto_runtime_keeps_openvino_only_on_the_backbones_where_it_pays: larger).
    runtime = run["runtime"]
    assert run["config"]["runtime"] == runtime["requested"] == "auto"
    assert runtime["runtime"] == "keras" and choice["precision"] == "float32"
    assert runtime["reason"] == choice["reason"] == too_little_work(extraction_work(60, 32))
    assert not (small_run.cache / "precision.json").exists()
    # The backbone's own check chose its runtime (OpenVINO only where it paid); its features were computed there.
    where = runtime["backbones"]["MobileNetV2-32px"]
    assert where["requested"] == "auto" and where["reason"]
    manifests = [json.loads(p.read_text()) for p in (small_run.cache / "MobileNetV2").glob("*/manifest.json")]
    # Each backbone computes in what auto chose for it (its own check may overrule the run's bfloat16).
    own = choice["backbones"]["MobileNetV2-32px"]
    assert own["requested"] == "auto" and own["reason"]
    assert manifests and {m["precision"] for m in manifests} == {own["precision"]}
    assert {m["runtime"].split("-")[0] for m in manifests} == {where["runtime"]}
    report = (small_run.results / "leaderboard.md").read_text()
    # One backbone: the header names what it used, which is the run's choice whatever the run-wide value was.
    assert f"Features computed in **{own['precision']}** (`--precision auto`: {own['reason']})" in report
    assert f"runtime **{where['runtime']}** (`--runtime auto`: {where['reason']})" in report


ON_THE_CPU = {"installed": lambda: True, "gpu": NO_GPU}


def test_auto_runtime_is_openvino_on_the_cpu_where_it_is_installed():
    choice = resolve_runtime("auto", **ON_THE_CPU)
    assert (choice.requested, choice.runtime) == ("auto", "openvino") and "on the CPU" in choice.reason
    assert resolve_runtime("auto", "bfloat16", **ON_THE_CPU).runtime == "openvino"
    for asked in ("keras", "openvino"):  # asked for: kept, whatever is installed
        assert resolve_runtime(asked, installed=lambda: False, gpu=lambda: (9, 0)).runtime == asked


@pytest.mark.parametrize(("change", "why"), [
    ({"installed": lambda: False}, f"OpenVINO, the faster CPU runtime, is not installed ({INSTALL_HINT})"),
    ({"gpu": lambda: (9, 0)}, "the Keras backend has a GPU (compute capability 9.0)"),
    ({"precision": "float16"}, "--precision float16: OpenVINO's CPU plugin computes float32, bfloat16, int8"),
    ({"jit_compile": True}, "--jit-compile asks Keras for XLA"),
])  # fmt: skip
def test_auto_runtime_is_keras_where_openvino_cannot_serve(change: dict, why: str):
    choice = resolve_runtime("auto", **{**ON_THE_CPU, **change})
    assert choice.runtime == "keras" and choice.reason.startswith(why)


def test_auto_runtime_keeps_openvino_only_on_the_backbones_where_it_pays(tmp_path, monkeypatch, own_machine_memo):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'cxr-bench[openvino]')")
    import features.runtime as runtime

    keras_ms, openvino_ms = {"ResNet50": 300, "VGG16": 580}, {"ResNet50": 150, "VGG16": 570}  # as measured here
    timed = []
    monkeypatch.setattr(runtime, "_runtime_seconds", lambda name, size, keras_in, openvino_in: timed.append(name) or (
        openvino_ms[name] / 1e3, keras_ms[name] / 1e3))  # fmt: skip
    plan = [(get_backbone("ResNet50"), 224), (get_backbone("VGG16"), 224)]
    auto = runtime.RuntimeChoice("auto", "openvino", "installed")
    _, chosen = runtime.resolve_backbones(auto, "float32", plan, tmp_path)
    (resnet, resnet_precision), (vgg, _) = chosen[("ResNet50", 224)], chosen[("VGG16", 224)]
    assert resnet.runtime == "openvino" and "150 ms in OpenVINO (float32) against 300 ms in Keras" in resnet.reason
    assert vgg.runtime == "keras" and "(1.02x, not at least 1.1x)" in vgg.reason
    assert resnet_precision.precision == "float32" and timed == ["ResNet50", "VGG16"]
    # Remembered: a rerun measures nothing and keeps both choices.
    _, again = runtime.resolve_backbones(auto, "float32", plan, tmp_path)
    assert timed == ["ResNet50", "VGG16"] and [c[0].runtime for c in again.values()] == ["openvino", "keras"]
    assert all("remembered in" in c[0].reason for c in again.values())
    # An asked-for runtime is every backbone's, unmeasured.
    asked = runtime.RuntimeChoice("openvino", "openvino", "--runtime openvino was asked for")
    _, forced = runtime.resolve_backbones(asked, "float32", plan, tmp_path / "other")
    assert [c[0] for c in forced.values()] == [asked, asked] and len(timed) == 2


@pytest.mark.slow  # an end-to-end run; its units have quick tests of their own
def test_auto_runtime_falls_back_to_keras_without_openvino_and_says_why(kermany_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert run_small_benchmark(kermany_root, tmp_path, "--runtime", "auto") == 0
    run = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run["runtime"]["runtime"] == "keras" and "is not installed" in run["runtime"]["reason"]
    assert not (tmp_path / "cache" / "openvino").exists()


def test_without_openvino_the_runtime_fails_in_one_line_before_any_work(kermany_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert run_small_benchmark(kermany_root, tmp_path, "--runtime", "openvino") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--runtime openvino needs the openvino package" in error
    assert "pip install 'cxr-bench[openvino]'" in error
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"jit_compile": True}, "--jit-compile"), ({"precision": "float16"}, "not float16"),
])  # fmt: skip
def test_openvino_refuses_what_it_cannot_do(options: dict, message: str):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'cxr-bench[openvino]')")
    with pytest.raises(ValueError, match=message):
        RunConfig(backbones=("MobileNetV2",), runtime="openvino", **options).validate()


@pytest.mark.slow  # OpenVINO's conversion: seconds, more than the quick suite's share
def test_openvino_features_match_keras_float32(kermany_root: Path, tmp_path: Path, own_machine_memo: Path):
    """OpenVINO float32 within cosine 1e-5 of Keras float32, bf16 within 1e-2 (random init, 32 px, 60 images)."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'cxr-bench[openvino]')")
    spec = get_backbone("MobileNetV2")
    source, paths = resolve_weights(spec, "none", 32), [r.path for r in scan_dataset(kermany_root).records]
    on_keras = ExtractSettings(batch_size=16, pixel_cache=False, cache_dir=str(tmp_path), progress=False)
    vino = dataclasses.replace(on_keras, runtime="openvino")
    keras32, _ = extract_features(spec, source, 32, kermany_root, paths, on_keras)
    vino32, stats = extract_features(spec, source, 32, kermany_root, paths, vino)
    assert not stats.from_cache and cosine_rows(keras32, vino32).min() > 1 - 1e-5
    # Kept machine-wide (a new cache folder of this machine converts nothing already converted), not in the cache.
    ir_files = list((own_machine_memo / "openvino").rglob("model.xml"))
    assert len(ir_files) == 1 and not (tmp_path / "openvino").exists()

    def no_build():
        raise AssertionError("the backbone was converted again")

    # bfloat16 compiles the same IR with another hint: no second conversion, another cache entry.
    vino16, stats = extract_features(spec, source, 32, kermany_root, paths,
                                     dataclasses.replace(vino, precision="bfloat16"), build=no_build)  # fmt: skip
    assert stats.key not in (cache_key(feature_key_parts(spec, source, 32, kermany_root, paths, runtime=r))
                             for r in ("keras", "openvino"))  # fmt: skip
    assert cosine_rows(keras32, vino16).min() > 0.99


def test_the_runtime_is_in_the_cache_key(kermany_root: Path):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'cxr-bench[openvino]')")
    spec = dataclasses.replace(get_backbone("MobileNetV2"), feature_size=3)
    source, paths = resolve_weights(spec, "none", 32), [r.path for r in scan_dataset(kermany_root).records]
    keys = {runtime: cache_key(feature_key_parts(spec, source, 32, kermany_root, paths, runtime=runtime))
            for runtime in ("keras", "openvino")}  # fmt: skip
    assert keys["keras"] != keys["openvino"]
    assert feature_key_parts(spec, source, 32, kermany_root, paths, runtime="openvino")["runtime"].startswith(
        "openvino-"
    )


def test_autos_measured_choice_is_remembered_so_reruns_keep_their_cache(tmp_path, monkeypatch, own_machine_memo):
    import features.runtime as runtime
    from backbones import PrecisionChoice

    calls = []

    def measured(requested, seconds):
        calls.append(requested)
        return PrecisionChoice(requested, "bfloat16", "measured")

    monkeypatch.setattr(runtime, "resolve_precision", measured)
    first = runtime.resolve_run_precision("auto", "keras", tmp_path)
    again = runtime.resolve_run_precision("auto", "keras", tmp_path)
    assert calls == ["auto"] and first.precision == again.precision == "bfloat16"
    assert "remembered in" in again.reason and (tmp_path / "precision.json").is_file()
    runtime.resolve_run_precision("auto", "openvino", tmp_path)  # another runtime is measured on its own
    runtime.resolve_run_precision("float32", "keras", tmp_path)  # an explicit precision is never remembered
    assert calls == ["auto", "auto", "float32"]


def test_auto_checks_its_bfloat16_on_each_backbone_and_keeps_it_only_where_it_pays(
    tmp_path, monkeypatch, own_machine_memo
):
    import features.runtime as runtime
    from backbones import PrecisionChoice, get_backbone
    from features.settings import BackboneCompute, Choice, ComputePlan, ExtractSettings

    # Measured on an AMD EPYC with AVX512_BF16: ResNet50's bfloat16 pays, MobileNetV2's depthwise layers do not.
    timings = {("ResNet50", "float32"): 1.0, ("ResNet50", "bfloat16"): 0.6,
               ("MobileNetV2", "float32"): 1.0, ("MobileNetV2", "bfloat16"): 1.05}  # fmt: skip
    calls = []

    def timed(name, size, precision):
        calls.append((name, precision))
        return timings[(name, precision)]

    monkeypatch.setattr(runtime, "_backbone_seconds", timed)
    run = PrecisionChoice("auto", "bfloat16", "the probe stack paid")
    resnet = runtime.resolve_backbone_precision(get_backbone("ResNet50"), 224, run, "keras", tmp_path)
    mobile = runtime.resolve_backbone_precision(get_backbone("MobileNetV2"), 224, run, "keras", tmp_path)
    assert resnet.precision == "bfloat16" and mobile.precision == "float32"
    assert "MobileNetV2 at 224 px" in mobile.reason and "not at least 1.1x" in mobile.reason
    again = runtime.resolve_backbone_precision(get_backbone("MobileNetV2"), 224, run, "keras", tmp_path)
    assert again.precision == "float32" and len(calls) == 4  # remembered, not timed again
    # Nothing to check where the run is float32, was asked for a type, or runs on OpenVINO.
    for choice, where in ((PrecisionChoice("auto", "float32", "x"), "keras"),
                          (PrecisionChoice("bfloat16", "bfloat16", "x"), "keras"), (run, "openvino")):  # fmt: skip
        assert runtime.resolve_backbone_precision(get_backbone("MobileNetV2"), 224, choice, where, tmp_path) is choice
    assert len(calls) == 4
    own = BackboneCompute("MobileNetV2", 224, Choice("keras", "keras"), Choice("auto", "float32"))
    settings = ExtractSettings(compute=ComputePlan(precision=Choice("auto", "bfloat16"), backbones=(own,)))
    assert settings.precision_for("MobileNetV2", 224) == "float32"
    assert settings.precision_for("MobileNetV2", 160) == settings.precision_for("ResNet50", 224) == "bfloat16"


def _counting_precision(monkeypatch, calls: list, delay: float = 0.0):
    """``resolve_precision`` replaced by one that counts its calls (after ``delay`` seconds) and says bfloat16."""
    import time

    import features.runtime as runtime
    from backbones import PrecisionChoice

    def measured(requested, seconds):
        time.sleep(delay)
        calls.append(requested)
        return PrecisionChoice(requested, "bfloat16", "measured")

    monkeypatch.setattr(runtime, "resolve_precision", measured)


def test_a_new_cache_folder_takes_the_machine_wide_choice_without_measuring(tmp_path, monkeypatch, own_machine_memo):
    import features.runtime as runtime

    calls = []
    _counting_precision(monkeypatch, calls)
    first = runtime.resolve_run_precision("auto", "keras", tmp_path / "cache-a")
    other = runtime.resolve_run_precision("auto", "keras", tmp_path / "cache-b")
    assert calls == ["auto"] and first.precision == other.precision == "bfloat16"
    assert other.reason == f"measured (remembered in {own_machine_memo / 'choices.json'})"
    # The new folder now holds the choice itself: its features stay its own even if the machine's memo goes.
    (own_machine_memo / "choices.json").unlink()
    again = runtime.resolve_run_precision("auto", "keras", tmp_path / "cache-b")
    assert calls == ["auto"] and again.reason == f"measured (remembered in {tmp_path / 'cache-b' / 'precision.json'})"


def test_the_machine_wide_choice_is_not_trusted_across_a_change_of_any_key_part(
    tmp_path, monkeypatch, own_machine_memo
):
    import features.runtime as runtime

    calls = []
    _counting_precision(monkeypatch, calls)
    runtime.resolve_run_precision("auto", "keras", tmp_path / "a")
    monkeypatch.setattr(runtime, "_processor", lambda: "model name : another processor\nflags : avx2")
    runtime.resolve_run_precision("auto", "keras", tmp_path / "b")
    monkeypatch.setattr(runtime, "_backend_version", lambda: "0.0.0")
    runtime.resolve_run_precision("auto", "keras", tmp_path / "c")
    monkeypatch.setattr(runtime.keras, "__version__", "0.0.0")
    runtime.resolve_run_precision("auto", "keras", tmp_path / "d")
    runtime.resolve_run_precision("auto", "openvino", tmp_path / "e")  # another runtime
    assert calls == ["auto"] * 5


def test_a_damaged_machine_wide_memo_is_said_and_measured_again(tmp_path, monkeypatch, own_machine_memo, capsys):
    import features.runtime as runtime

    calls = []
    _counting_precision(monkeypatch, calls)
    runtime.resolve_run_precision("auto", "keras", tmp_path / "a")
    memo = own_machine_memo / "choices.json"
    memo.write_text(memo.read_text().replace("bfloat16", "float32"))  # a changed choice, still valid JSON
    capsys.readouterr()
    assert runtime.resolve_run_precision("auto", "keras", tmp_path / "b").precision == "bfloat16"
    assert calls == ["auto", "auto"]
    assert capsys.readouterr().out.startswith(f"warning: {memo} is damaged (1 remembered choice(s)")
    assert "remembered in" in runtime.resolve_run_precision("auto", "keras", tmp_path / "c").reason


def test_concurrent_runs_measure_a_choice_once(tmp_path, monkeypatch, own_machine_memo):
    import threading

    import features.runtime as runtime

    calls = []
    _counting_precision(monkeypatch, calls, delay=0.5)
    found = {}
    threads = [threading.Thread(target=lambda n=n: found.__setitem__(n, runtime.resolve_run_precision(
        "auto", "keras", tmp_path / f"cache-{n}"))) for n in range(3)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["auto"] and {choice.precision for choice in found.values()} == {"bfloat16"}
    assert len(json.loads((own_machine_memo / "choices.json").read_text())) == 1


def test_an_unwritable_machine_wide_memo_is_said_and_the_run_measures(tmp_path, monkeypatch, capsys):
    import features.runtime as runtime

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CXR_BENCH_HOME", str(blocker))
    calls = []
    _counting_precision(monkeypatch, calls)
    assert runtime.resolve_run_precision("auto", "keras", tmp_path / "cache").precision == "bfloat16"
    out = capsys.readouterr().out
    assert calls == ["auto"] and out.startswith(f"warning: the machine-wide memo {blocker / 'choices.json'} cannot")
    runtime.resolve_run_precision("auto", "openvino", tmp_path / "cache")  # another choice: measured, said once
    assert calls == ["auto", "auto"] and capsys.readouterr().out == ""
    monkeypatch.setenv("CXR_BENCH_HOME", "off")
    assert runtime.machine_choices() is None


def test_a_run_too_small_for_a_measurement_to_pay_takes_keras_float32_unmeasured(tmp_path, monkeypatch,
                                                                             own_machine_memo):  # fmt: skip
    import features.runtime as runtime

    calls = []
    _counting_precision(monkeypatch, calls)
    few = runtime.KERAS_BELOW - 1
    choice = resolve_runtime("auto", work=few, **ON_THE_CPU)
    assert choice.runtime == "keras" and choice.reason.startswith(f"the extraction is the work of {few} images")
    assert resolve_runtime("auto", work=runtime.KERAS_BELOW, **ON_THE_CPU).runtime == "openvino"
    assert resolve_runtime("openvino", work=few, **ON_THE_CPU).runtime == "openvino"  # asked for: kept
    small = runtime.resolve_run_precision("auto", "keras", tmp_path, work=few)
    assert small.precision == "float32" and "too little" in small.reason and calls == []
    prior = runtime.resolve_run_precision("auto", "openvino", tmp_path, work=runtime.MEASURE_FROM - 1)
    assert "unmeasured" in prior.reason and calls == []
    assert not (tmp_path / "precision.json").exists()  # nothing measured, nothing remembered
    runtime.resolve_run_precision("auto", "keras", tmp_path, work=runtime.MEASURE_FROM)
    assert runtime.resolve_run_precision("bfloat16", "keras", tmp_path, work=few).precision == "bfloat16"
    assert calls == ["auto", "bfloat16"]


@pytest.mark.parametrize(("cpuinfo", "gpu", "runtime_name", "expected"), [
    ("flags\t: avx2 fma", lambda: None, "openvino", "float32"),
    ("flags\t: avx2 avx512_bf16 amx_bf16", lambda: None, "openvino", "bfloat16"),
    ("flags\t: avx2 avx512_bf16 amx_bf16", lambda: None, "keras", "float32"),  # Keras' CPU bfloat16: per network
    ("flags\t: avx2", lambda: (True, "the GPU computes bfloat16 natively"), "keras", "bfloat16"),
])  # fmt: skip
def test_the_unmeasured_precision_is_bfloat16_only_where_it_always_paid(cpuinfo, gpu, runtime_name, expected):
    import features.runtime as runtime

    choice = runtime.prior_precision(runtime_name, "why", cpuinfo=cpuinfo, gpu=gpu)
    assert choice.requested == "auto" and choice.precision == expected and choice.reason.startswith("why; ")


def test_a_middle_sized_run_takes_openvino_unmeasured_and_a_tiny_one_keras(tmp_path, monkeypatch, own_machine_memo):
    import features.runtime as runtime

    def measured(*args):
        raise AssertionError("measured")

    for name in ("_runtime_seconds", "_precision_seconds", "keras_probe_pair", "openvino_probe_pair"):
        monkeypatch.setattr(runtime, name, measured)
    spec = get_backbone("ResNet50")
    both = runtime.RuntimeChoice("auto", "openvino", "both")
    plan = [(spec, 224), (spec, 32)]
    _, chosen = runtime.resolve_backbones(both, "auto", plan, tmp_path, images=900)
    middle, tiny = chosen[("ResNet50", 224)], chosen[("ResNet50", 32)]
    assert middle[0].runtime == "openvino" and "900 images at 224 px" in middle[0].reason
    assert middle[1].precision in ("float32", "bfloat16") and "unmeasured" in middle[1].reason
    assert tiny[0].runtime == "keras" and tiny[1].precision == "float32" and "too little" in tiny[0].reason
    assert not (tmp_path / "precision.json").exists()


@pytest.mark.slow
def test_a_run_large_enough_measures_openvino_against_keras_on_its_backbone(tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'cxr-bench[openvino]')")
    import features.runtime as runtime
    from benchmark.pipeline import resolve_compute

    config = RunConfig(backbones=("MobileNetV2",), image_size=(32,), weights="none", cache_dir=str(tmp_path))
    plan = resolve_compute(config, images=int(runtime.MEASURE_FROM * (224 / 32) ** 2) + 1)
    assert plan.runtime.value == "openvino" and plan.runtime.requested == "auto"
    (one,) = plan.backbones
    assert one.runtime.value in ("openvino", "keras") and one.runtime.requested == "auto"
    # Measured here (or by an earlier test of this session, remembered machine-wide): both runtimes were timed.
    assert "in OpenVINO" in one.runtime.reason and "in Keras" in one.runtime.reason
    assert (tmp_path / "precision.json").is_file()
