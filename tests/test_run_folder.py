"""Issue 25: the results folder's layout (``RunFolder``) and ``run.json``'s record (``RunInfo``), older runs' too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.run_folder import (
    FINETUNED,
    RUN_INFO_VERSION,
    RunFolder,
    RunInfo,
    finetuned_name,
    is_finetuned,
    plot_file,
    without_finetuned,
)
from features.settings import BackboneCompute, Choice, ComputePlan

# run.json's keys before the version field, in the order runs wrote them.
KEYS = ["config", "phantom", "classes", "git", "versions", "machine", "timestamp", "command", "forward_passes",
        "heads_trained_this_run", "grid_points_failed", "extraction", "external_extraction", "precision", "runtime"]


def _plan() -> ComputePlan:
    run_runtime, run_precision = Choice("auto", "openvino", "on the CPU"), Choice("auto", "bfloat16", "AMX")
    slow = BackboneCompute("MobileNetV2-0.35", 224, Choice("auto", "keras", "faster here"),
                           Choice("auto", "float32", "bf16 slower"))  # fmt: skip
    return ComputePlan(run_runtime, run_precision, (BackboneCompute("ResNet50", 224, run_runtime, run_precision), slow))


def _info(**changes) -> RunInfo:
    fields = dict(config={"weights": "none", "precision": "auto", "select_by": "val_loss"}, phantom=True,
                  classes=["NORMAL", "BACTERIAL", "VIRAL"], git="abc", versions={"keras": "3"}, machine="x86_64",
                  timestamp="2026-01-01T00:00:00Z", command="python run_benchmark.py", forward_passes=3,
                  heads_trained_this_run=16, grid_points_failed=0, extraction={"ResNet50-224px": {"images": 9}},
                  external_extraction={}, compute=_plan())  # fmt: skip
    return RunInfo(**fields | changes)


def test_every_path_of_a_run_comes_from_its_folder(tmp_path):
    results = RunFolder(tmp_path)
    assert results.run_json == tmp_path / "run.json" and results.checksums == tmp_path / "SHA256SUMS"
    assert results.file("grid.csv") == tmp_path / "grid.csv"
    assert results.checkpoint("p1") == tmp_path / "heads" / "p1" / "best.keras"
    assert results.point_record("p1") == tmp_path / "heads" / "p1" / "point.json"
    assert results.finetuned("m-ft-1") == tmp_path / "finetune" / "m-ft-1"
    assert results.plots == tmp_path / "plots" and plot_file("roc_x.png") == "plots/roc_x.png"
    fold = results.cv_fold(1, 2)
    assert isinstance(fold, RunFolder) and fold.heads == tmp_path / "cv" / "r1-f2" / "heads"
    assert RunFolder(str(tmp_path)).root == tmp_path  # a string is taken as a path


def test_a_selected_model_is_loaded_from_its_head_or_its_fine_tuned_files():
    assert RunFolder.model_files("ResNet50", "h1") == ["heads/h1/best.keras"]
    assert RunFolder.model_files("ResNet50-logreg", "h2") == ["heads/h2/best.keras"]
    assert RunFolder.model_files("ResNet50-ft", "f1") == ["finetune/f1/result.json", "finetune/f1/model.weights.h5"]


def test_the_fine_tuned_suffix_is_added_tested_and_removed_in_one_place():
    assert finetuned_name("MobileNetV2-0.35") == "MobileNetV2-0.35" + FINETUNED == "MobileNetV2-0.35-ft"
    assert is_finetuned("MobileNetV2-0.35-ft") and is_finetuned("resnet50-FT") and not is_finetuned("ResNet50-logreg")
    assert without_finetuned("MobileNetV2-0.35-ft") == "MobileNetV2-0.35"
    assert without_finetuned("ResNet50") == "ResNet50"


def test_run_json_keeps_every_key_and_value_and_gains_only_its_version():
    data = _info().to_json()
    assert list(data) == [*KEYS, "version"] and data["version"] == RUN_INFO_VERSION
    assert data["precision"] == {"requested": "auto", "precision": "bfloat16", "reason": "AMX", "backbones": {
        "ResNet50-224px": {"requested": "auto", "precision": "bfloat16", "reason": "AMX"},
        "MobileNetV2-0.35-224px": {"requested": "auto", "precision": "float32", "reason": "bf16 slower"}}}
    assert data["runtime"]["backbones"]["MobileNetV2-0.35-224px"] == {"requested": "auto", "runtime": "keras",
                                                                       "reason": "faster here"}  # fmt: skip
    assert RunInfo.from_json(json.loads(json.dumps(data))) == _info()


def test_the_plan_gives_each_backbone_its_own_choice_else_the_runs():
    plan = _plan()
    assert [one.key for one in plan.own()] == ["MobileNetV2-0.35-224px"]
    mobile = plan.for_backbone("MobileNetV2-0.35", 224)
    assert (mobile.runtime.value, mobile.precision.value) == ("keras", "float32")
    other = plan.for_backbone("VGG16", 224)
    assert (other.runtime.value, other.precision.value) == ("openvino", "bfloat16")


def test_a_run_json_from_before_the_compute_plan_is_read_with_its_configured_precision_in_keras():
    old = {key: value for key, value in _info().to_json().items() if key not in ("precision", "runtime", "version",
                                                                                "classes")}  # fmt: skip
    info = RunInfo.from_json(old)
    assert info.version == 0 and info.classes is None and info.compute is None and info.phantom
    plan = info.compute_plan().for_backbone("ResNet50", 224)
    assert (plan.runtime.value, plan.precision.value) == ("keras", "auto")  # as predict read such runs
    assert info.to_json()["grid_points_failed"] == 0 and "precision" not in info.to_json()


def test_a_run_json_whose_runtime_is_a_plain_name_is_read_for_every_backbone():
    old = _info().to_json() | {"runtime": "openvino"}  # runs before --runtime auto
    old["precision"] = {"requested": "float32", "precision": "float32", "reason": "asked"}  # before per-backbone checks
    plan = RunInfo.from_json(old).compute_plan()
    assert plan.backbones == () and plan.runtime == Choice("openvino", "openvino")
    resnet = plan.for_backbone("ResNet50", 224)
    assert (resnet.runtime.value, resnet.precision.value) == ("openvino", "float32")


def test_a_precision_per_backbone_with_a_runtime_without_is_read_with_the_runs_runtime():
    old = _info().to_json()
    old["runtime"] = {"requested": "auto", "runtime": "keras", "reason": "no OpenVINO"}
    plan = RunInfo.from_json(old).compute_plan()
    mobile = plan.for_backbone("MobileNetV2-0.35", 224)
    assert (mobile.runtime.value, mobile.precision.value) == ("keras", "float32")


@pytest.mark.parametrize("data", [[], {}, {"config": "x"}, {"config": {}, "precision": "float32"}])
def test_a_mapping_no_run_wrote_is_refused(data):
    with pytest.raises((KeyError, TypeError, ValueError, AttributeError)):
        RunInfo.from_json(data)


def test_a_written_run_json_reads_back(tmp_path):
    path = RunFolder(Path(tmp_path)).run_json
    path.write_text(json.dumps(_info().to_json()))
    assert RunInfo.from_json(json.loads(path.read_text())).compute == _plan()
