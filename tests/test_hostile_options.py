"""Issue 24, the options' side: no option is silently wrong, ignored or recorded in a form another folder misreads."""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import PLAIN, make_kermany, run_small_benchmark

from benchmark.cli import build_parser, parse_command
from benchmark.config import RunConfig


def _validated(argv: list[str]) -> RunConfig:
    """``argv`` parsed and validated as ``run_benchmark.main`` does it: the config the run uses."""
    config, given = parse_command(argv)
    return config.validate(given)


def _refusal(argv: list[str]) -> str:
    """The one-line message ``argv`` is refused with."""
    with pytest.raises(ValueError) as error:
        _validated(argv)
    message = str(error.value)
    assert "\n" not in message
    return message


def _assert_refused_before_any_work(code: int, err: str, out: Path, *expected: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(text in err for text in expected), err
    assert not (out / "cache").exists() and not (out / "results").exists()


# 1. Paths are recorded absolute.


@pytest.mark.slow
def test_a_run_made_with_relative_paths_records_absolute_ones(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_kermany(Path("data"), {"train": 12, "val": 2, "test": 6})
    assert run_small_benchmark(Path("data"), Path("out")) == 0
    config = json.loads((tmp_path / "out" / "results" / "run.json").read_text())["config"]
    assert config["data"] == str((tmp_path / "data").resolve())
    assert config["results_dir"] == str((tmp_path / "out" / "results").resolve())
    assert config["cache_dir"] == str((tmp_path / "out" / "cache").resolve())
    # Read from another working folder (as predict and serve do), it still names the same files.
    monkeypatch.chdir(tmp_path / "out")
    assert Path(RunConfig.from_json(config).data).is_dir()


def test_every_path_option_is_made_absolute_before_any_work(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("data", "other", "weights"):
        (tmp_path / folder).mkdir()
    for name in ("labels.csv", "other.csv", "test_list.txt"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "scheduler.json").write_text(json.dumps({"address": "tcp://127.0.0.1:8786"}))
    config = _validated(["--data", "data", "--labels", "labels.csv", "--split-lists", "test=test_list.txt",
                         "--external-test", "other", "--external-labels", "other.csv", "--weights", "weights",
                         "--results-dir", "out/../res", "--cache-dir", "cache", "--executor", "dask",
                         "--cluster", "scheduler.json"])  # fmt: skip
    here = tmp_path.resolve()
    assert (config.data, config.labels, config.external_test, config.external_labels) == (
        str(here / "data"), str(here / "labels.csv"), str(here / "other"), str(here / "other.csv"))  # fmt: skip
    assert config.split_lists == (f"test={here / 'test_list.txt'}",) and config.weights == str(here / "weights")
    assert (config.results_dir, config.cache_dir) == (str(here / "res"), str(here / "cache"))
    assert config.cluster == str(here / "scheduler.json")
    assert RunConfig.from_json(config.to_json()).stages().extract.cache_dir == str(here / "cache")


def test_two_spellings_of_one_weights_folder_are_one_setting(tmp_path: Path, monkeypatch):
    # The fine-tuning stage keys its stored results on the weights: one folder, spelled two ways, is one key.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    relative = RunConfig(weights="weights", finetune=True, backbones=("MobileNetV2",))
    absolute = RunConfig(weights=str(tmp_path / "weights"), finetune=True, backbones=("MobileNetV2",))
    assert relative.validate().stages().finetune == absolute.validate().stages().finetune


# 2. Numbers: finite and in range, or refused naming the option and the range.


def _bad_numbers() -> list[tuple[str, object]]:
    """Every number field of RunConfig with the values it must refuse: inf, nan and -1 for a float, -1 for an int."""
    cases = []
    for field in fields(RunConfig):
        kind = str(field.type).removesuffix(" | None").removeprefix("tuple[").removesuffix(", ...]")
        if kind == "float":
            cases += [(field.name, math.inf), (field.name, math.nan), (field.name, -1.0)]
        elif kind == "int":
            cases.append((field.name, -1))
    return cases


@pytest.mark.parametrize(("name", "value"), _bad_numbers())
def test_every_number_option_refuses_inf_nan_and_out_of_range(name: str, value):
    with pytest.raises(ValueError) as error:
        RunConfig(backbones=("MobileNetV2",), **{name: value}).validate()
    message = str(error.value)
    assert message.startswith(f"--{name.replace('_', '-')}") and "\n" not in message
    assert "must be" in message or "minimum of" in message


def test_the_seed_range_counts_the_seeds_above_it():
    assert "--seed must be from 0 to 4294967294" in _refusal(["--seed", str(2**32 - 1), "--seeds", "2"])
    assert _validated(["--seed", str(2**32 - 2), "--seeds", "2", "--backbones", "MobileNetV2"]).seed == 2**32 - 2


def test_lr_inf_on_the_command_line_or_in_a_config_file_is_refused_before_any_work(kermany_root, tmp_path, capsys):
    code = run_small_benchmark(kermany_root, tmp_path, "--lr", "inf", **PLAIN)
    _assert_refused_before_any_work(code, capsys.readouterr().err, tmp_path, "--lr must be positive", "not inf")
    (tmp_path / "run.toml").write_text("l2 = [0.0, inf]\n")
    code = run_small_benchmark(kermany_root, tmp_path, "--config", str(tmp_path / "run.toml"), **PLAIN)
    _assert_refused_before_any_work(code, capsys.readouterr().err, tmp_path, "--l2 must be 0 or more", "not inf")


# 3. An option that does nothing beside the others is refused, when the user gave it.


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-probe", "--probe-l2", "0.1"], "--probe-l2 does nothing without the probe (--no-probe given)"),
        (["--finetune-sizes", "32"], "--finetune-sizes does nothing without --finetune"),
        (["--finetune-lr", "1e-3"], "--finetune-lr does nothing without --finetune"),
        (["--augment"], "--augment does nothing without --finetune"),
        (["--external-map", "NORMAL=normal"], "--external-map does nothing without --external-test"),
        (["--uncertain", "zeros"], "--uncertain does nothing without --finding-columns"),
        (["--blank", "ones"], "--blank does nothing without --finding-columns"),
        (["--step-decay-factor", "0.3"], "--step-decay-factor does nothing without --lr-schedule step"),
        (["--classes", "normal", "viral"], "--classes does nothing without --labels"),
        (["--split-column", "split"], "--split-column does nothing without --labels"),
    ],
)
def test_an_option_that_would_do_nothing_is_refused(argv: list[str], message: str):
    assert _refusal(["--backbones", "MobileNetV2", *argv]).startswith(message)


def test_uncertain_is_refused_beside_a_findings_column_and_taken_beside_finding_columns(tmp_path: Path):
    (tmp_path / "labels.csv").write_text("path,findings,A,B\n")
    csv = ["--backbones", "MobileNetV2", "--data", str(tmp_path), "--labels", str(tmp_path / "labels.csv")]
    assert "--uncertain does nothing without --finding-columns" in _refusal(
        [*csv, "--findings-column", "findings", "--uncertain", "zeros"])  # fmt: skip
    assert _validated([*csv, "--finding-columns", "A", "B", "--uncertain", "zeros"]).uncertain == "zeros"


def test_a_config_file_counts_as_given_and_a_default_left_alone_does_not(tmp_path: Path):
    (tmp_path / "probe.toml").write_text("probe_l2 = [0.1]\n")
    message = _refusal(["--config", str(tmp_path / "probe.toml"), "--no-probe", "--backbones", "MobileNetV2"])
    assert message == "--probe-l2 does nothing without the probe (--no-probe given)"
    (tmp_path / "finetune.toml").write_text("finetune_epochs = 3\n")
    assert "--finetune-epochs does nothing" in _refusal(["--config", str(tmp_path / "finetune.toml")])
    assert _validated(["--no-probe", "--backbones", "MobileNetV2"]).probe is False


def test_probe_l2_with_no_probe_stops_the_run_in_one_line(kermany_root: Path, tmp_path: Path, capsys):
    code = run_small_benchmark(kermany_root, tmp_path, "--no-probe", "--probe-l2", "0.1", **PLAIN)
    _assert_refused_before_any_work(code, capsys.readouterr().err, tmp_path, "--probe-l2 does nothing")


# 4. --help says each default as it is.


def test_help_says_each_default_in_words():
    # Each option's help as --help shows it (argparse writes %% as %), unwrapped.
    lines = {action.option_strings[0]: action.help.replace("%%", "%") for action in build_parser()._actions
             if action.option_strings and action.help}  # fmt: skip
    assert not [flag for flag, line in lines.items() if re.search(r"\(default: (None|True|False)\)", line)]
    assert [flag for flag, line in lines.items() if "backbone's own" in line] == ["--image-size"]
    for flag in ("--split-lists", "--finding-columns"):
        assert lines[flag].endswith("(default: none)")
    assert "(default: the training CSV's form)" in lines["--external-finding-columns"]
    assert "(default: off: the probe is fitted beside each head)" in lines["--no-probe"]
    assert "(default: off: progress bars are shown)" in lines["--no-progress"]
    assert lines["--augment"].endswith("(default: off)")
    assert "(default: imagenet on real data, none on the phantom set)" in lines["--weights"]


# 5. A missing scheduler file is named as such.


def test_a_missing_or_foreign_scheduler_file_is_named_before_any_work(kermany_root: Path, tmp_path: Path, capsys):
    scheduler = tmp_path / "scheduler.json"
    code = run_small_benchmark(kermany_root, tmp_path, "--executor", "dask", "--cluster", str(scheduler), **PLAIN)
    err = capsys.readouterr().err
    _assert_refused_before_any_work(code, err, tmp_path, f"--cluster {scheduler}: no such scheduler file")
    assert "port" not in err
    scheduler.write_text('{"workers": {}}')
    assert f"--cluster {scheduler} is not a Dask scheduler file" in _refusal(
        ["--executor", "dask", "--cluster", str(scheduler), "--backbones", "MobileNetV2"])  # fmt: skip
