"""Issue 24, the report's side: what the leaderboard says must be what the run did."""

from __future__ import annotations

import pytest

from benchmark.reporting.document import Report, render_markdown
from benchmark.reporting.sections import extraction_blocks
from features.settings import ComputePlan

BF16 = {"requested": "auto", "precision": "bfloat16", "reason": "the CPU has AVX512-BF16"}
F32 = {"requested": "auto", "precision": "float32", "reason": "float32 measured faster for this backbone"}
OV = {"requested": "auto", "runtime": "openvino", "reason": "on the CPU"}


def _markdown(blocks) -> str:
    return render_markdown(Report("t", [], blocks, [], {}))


def test_the_header_names_the_precision_the_only_backbone_ran_in_not_the_run_wide_choice():
    run_info = {"precision": {**BF16, "backbones": {"ResNet50-224px": F32}},
                "runtime": {**OV, "backbones": {"ResNet50-224px": OV}}}  # fmt: skip
    text = _markdown(extraction_blocks(ComputePlan.from_json(run_info["precision"], run_info["runtime"])))
    assert "Features computed in **float32**" in text and "float32 measured faster" in text
    assert "bfloat16" not in text


def test_mixed_choices_name_the_run_wide_choice_as_such_and_list_each_exception():
    run_info = {"precision": {**BF16, "backbones": {"ResNet50-224px": F32, "VGG16-224px": BF16}},
                "runtime": {**OV, "backbones": {"ResNet50-224px": OV, "VGG16-224px": OV}}}  # fmt: skip
    text = _markdown(extraction_blocks(ComputePlan.from_json(run_info["precision"], run_info["runtime"])))
    assert "Features computed in" not in text and "Run-wide choice: **bfloat16**" in text
    assert "- ResNet50-224px: **openvino** (on the CPU), **float32**" in text and "- VGG16" not in text


def test_a_plot_named_after_a_class_with_a_space_is_a_working_markdown_image_link():
    from benchmark.reporting.document import Section, figure

    text = render_markdown(
        Report("t", [], [], [Section("Plots", [figure("ROC", "plots/roc viral pneumonia.png")])], {})
    )
    assert "![ROC](plots/roc%20viral%20pneumonia.png)" in text


@pytest.mark.slow  # retrains the damaged point
def test_a_changed_digit_in_a_grid_points_record_is_reported_and_the_point_retrained(small_run, tmp_path, capsys):
    import json

    import pandas as pd

    small_run.copy_to(tmp_path)
    first = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    (point,) = (tmp_path / "results" / "heads").glob("*/point.json")
    record = json.loads(point.read_text())
    # A smaller validation loss: valid JSON and plausible, and it would change which point is selected.
    point.write_text(point.read_text().replace(f'"val_loss": {record["val_loss"]}', '"val_loss": 0.001'))
    assert json.loads(point.read_text())["val_loss"] == 0.001
    capsys.readouterr()
    assert small_run.rerun(tmp_path) == 0
    out = capsys.readouterr().out
    assert f"warning: {point} is damaged (its contents do not match their checksum); training grid point" in out
    assert json.loads((tmp_path / "results" / "run.json").read_text())["heads_trained_this_run"] == 1
    assert json.loads(point.read_text())["val_loss"] == record["val_loss"]
    second = pd.read_csv(tmp_path / "results" / "leaderboard.csv")
    pd.testing.assert_frame_equal(first[["task", "auc", "sensitivity"]], second[["task", "auc", "sensitivity"]])


@pytest.mark.slow  # retrains the damaged point
def test_a_flipped_byte_in_a_checkpoint_is_named_when_the_point_is_retrained(small_run, tmp_path, capsys):
    small_run.copy_to(tmp_path)
    (checkpoint,) = (tmp_path / "results" / "heads").glob("*/best.keras")
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    capsys.readouterr()
    assert small_run.rerun(tmp_path) == 0
    assert f"warning: {checkpoint} is damaged (its SHA-256 differs from the one recorded)" in capsys.readouterr().out


def test_a_sealed_record_refuses_any_changed_byte(tmp_path):
    import pytest

    from common.files import DamagedFileError, atomic_write_sealed_json, read_sealed_json

    (tmp_path / "w.bin").write_bytes(b"weights")
    atomic_write_sealed_json(tmp_path / "r.json", {"loss": 0.25, "n": [1, 2]}, ("w.bin",))
    assert read_sealed_json(tmp_path / "r.json") == {"loss": 0.25, "n": [1, 2]}
    text = (tmp_path / "r.json").read_text()
    for index in range(len(text)):
        flipped = text[:index] + chr(ord(text[index]) ^ 0x01) + text[index + 1 :]
        (tmp_path / "r.json").write_text(flipped)
        try:
            assert read_sealed_json(tmp_path / "r.json") == {"loss": 0.25, "n": [1, 2]}  # whitespace only
        except DamagedFileError:
            pass
    (tmp_path / "r.json").write_text(text)
    (tmp_path / "w.bin").write_bytes(b"weightz")
    with pytest.raises(DamagedFileError, match="w.bin is damaged"):
        read_sealed_json(tmp_path / "r.json")


def test_a_run_lists_the_sha256_of_every_file_it_wrote_and_predict_refuses_a_changed_one(small_run, tmp_path, capsys):
    import subprocess

    from benchmark import predict

    copy = small_run.copy_to(tmp_path) / "results"
    sums = (copy / "SHA256SUMS").read_text().splitlines()
    listed = {line.split("  ", 1)[1] for line in sums}
    assert {"leaderboard.csv", "predictions.csv", "run.json", "report.json", "grid.csv"} <= listed
    assert any(name.startswith("heads/") and name.endswith("/best.keras") for name in listed)
    assert any(name.startswith("heads/") and name.endswith("/point.json") for name in listed)
    # The format of sha256sum: a copy checks by hand.
    assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=copy).returncode == 0
    board = copy / "leaderboard.csv"
    board.write_text(board.read_text().replace(",32,", ",33,", 1))  # another image size: plausible, wrong
    image = next((small_run.root / "test" / "NORMAL").iterdir())
    assert predict.main([str(copy), str(image), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert f"{board} does not match its SHA-256 in {copy / 'SHA256SUMS'}" in err and "Traceback" not in err


def _copy(root, source: str, target: str):
    import shutil

    shutil.copyfile(sorted((root / source).iterdir())[0], root / target)


def test_leakage_fail_writes_the_leakage_csv_its_message_names(kermany_root, tmp_path, capsys):
    from conftest import run_small_benchmark

    _copy(kermany_root, "train/NORMAL", "test/NORMAL/IM-copy-0001.jpeg")
    assert run_small_benchmark(kermany_root, tmp_path, "--leakage", "fail") == 2
    err = capsys.readouterr().err
    listed = tmp_path / "results" / "leakage.csv"
    assert f"listed in {listed}" in err and listed.is_file()
    assert "IM-copy-0001.jpeg" in listed.read_text()


def test_leakage_drop_drops_label_conflicts_in_train_and_the_report_no_longer_warns(kermany_root):
    from benchmark.reporting.sections import banners, data_section
    from benchmark.run_folder import RunInfo
    from benchmark.settings import ReportSettings
    from features.data.audit import audit_images, flag_leakage
    from features.data.dataset import make_splits, scan_dataset

    _copy(kermany_root, "train/NORMAL", "test/NORMAL/IM-copy-0001.jpeg")  # into test
    _copy(kermany_root, "train/PNEUMONIA", "train/NORMAL/IM-conflict-0001.jpeg")  # bacterial and normal, in train
    prepared = make_splits(audit_images(scan_dataset(kermany_root), min_side=0, progress=False), seed=0)
    warned, dropped = flag_leakage(prepared, "warn"), flag_leakage(prepared, "drop")
    assert any("test image(s) also appear" in line for line in banners(RunInfo({}), warned, ReportSettings()))
    assert not any("test image(s) also appear" in line for line in banners(RunInfo({}), dropped, ReportSettings()))
    reasons = {skip.path: skip.reason for skip in dropped.skipped}
    conflict = [path for path, why in reasons.items() if "same image under two labels" in why]
    assert len(conflict) == 2 and "bacterial and normal" in reasons[conflict[0]]  # both train copies go
    assert not {r.path for r in dropped.records} & set(conflict)
    assert {r.action for r in dropped.leakage} == {"kept", "dropped"}
    assert "copies dropped (`--leakage drop`)" in str(data_section(dropped)[0].blocks[0].items)


def test_sizes_in_resource_messages_use_a_unit_that_says_something():
    from features.extract import byte_size

    assert byte_size(3.2 * 2**20) == "3.2 MiB" and byte_size(512 * 2**10) == "512.0 KiB"
    assert byte_size(37.25 * 2**30) == "37.2 GiB" and byte_size(12) == "12 bytes"
