"""Issue 25: each run option is declared once, on its RunConfig field, and everything else is built from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from benchmark.cli import build_parser, parse_command
from benchmark.config import CHOICES, NUMBER_RANGES, RunConfig, load_toml
from features.data.labels import add_label_options, label_settings
from features.options import add_options, declared, given_values, number_ranges, option
from features.settings import LabelSettings


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by destination, but --help and --config."""
    return {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}


def test_every_field_is_one_option_of_the_command_line_and_a_key_of_the_config_file(tmp_path: Path):
    assert [one.name for one, _ in declared(RunConfig)] == [one.name for one in fields(RunConfig)]
    actions = _options(build_parser())
    assert sorted(actions) == sorted(one.name for one in fields(RunConfig))
    flags = [flag for action in actions.values() for flag in action.option_strings]
    assert len(flags) == len(set(flags)) == len(actions)  # one flag per field, none shared
    (tmp_path / "bad.toml").write_text("no_such_option = 1\n")
    with pytest.raises(ValueError) as error:
        load_toml(tmp_path / "bad.toml")
    assert str(error.value).endswith("valid keys: " + ", ".join(sorted(one.name for one in fields(RunConfig))))


def test_a_new_option_is_one_declaration():
    @dataclass(frozen=True)
    class Settings:
        shard_size: int = option(512, "images per shard", metavar="N", range=(lambda v: v >= 1, "at least 1"))
        mode: str = option("fast", "how", choices=("fast", "slow"), group="modes")
        sizes: tuple[int, ...] = option((), "sizes", metavar="PX")
        cache: bool = option(True, "no cache (default: off: the cache is used)")

    parser = argparse.ArgumentParser()
    add_options(parser, Settings)
    help = parser.format_help()
    assert "--shard-size N" in help and "images per shard (default: 512)" in help and "--no-cache" in help
    assert "modes:" in help and "{fast,slow}" in help
    args = parser.parse_args(["--shard-size", "64", "--sizes", "224", "299", "--no-cache"])
    assert Settings(**given_values(Settings, args)) == Settings(shard_size=64, sizes=(224, 299), cache=False)
    assert Settings(**given_values(Settings, parser.parse_args([]))) == Settings()
    assert set(number_ranges(Settings)) == {"shard_size"}


def test_the_checks_come_from_the_declarations():
    assert {"lr", "dropout", "extract_shard_size", "bootstrap"} <= set(NUMBER_RANGES)
    assert CHOICES["uncertain"] == CHOICES["blank"] and "leakage" in CHOICES and "runtime" in CHOICES
    with pytest.raises(ValueError, match="--extract-shard-size must be at least 1, not 0"):
        RunConfig(extract_shard_size=0).validate()
    with pytest.raises(ValueError, match="--uncertain must be one of ignore, zeros, ones, not 'maybe'"):
        RunConfig(uncertain="maybe").validate()


def test_run_and_audit_read_the_label_options_from_one_declaration():
    run = _options(build_parser())
    audit = argparse.ArgumentParser()
    add_label_options(audit)
    for name, action in _options(audit).items():
        same = ("option_strings", "help", "choices", "metavar", "nargs", "type")
        assert all(getattr(action, key) == getattr(run[name], key) for key in same), name
        assert getattr(RunConfig(), name) == getattr(LabelSettings(), name)
    args = audit.parse_args(["--labels", "l.csv", "--finding-columns", "A", "B", "--uncertain", "ones"])
    assert label_settings(args) == LabelSettings(labels="l.csv", finding_columns=("A", "B"), uncertain="ones")


def test_validate_leaves_the_config_as_it_is_and_returns_the_one_the_run_uses(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    config, given = parse_command(["--data", "data", "--backbones", "mobilenetv2", "--cache-dir", "c"])
    used = config.validate(given)
    assert (config.data, config.backbones, config.weights, config.cache_dir) == ("data", ("mobilenetv2",), None, "c")
    assert (used.data, used.backbones, used.weights) == (str(tmp_path / "data"), ("MobileNetV2",), "imagenet")
    assert used.resolved() == used and used.cache_dir == str(tmp_path / "c")
    assert RunConfig().resolved().weights == "none"  # no data here: the phantom set, random weights
    with pytest.raises(AttributeError):
        config.weights = "none"  # frozen: a derived value is a new config
