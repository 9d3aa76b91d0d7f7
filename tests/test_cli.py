"""The ``cxr-bench`` command: subcommands reach the same code as the module commands and run_benchmark.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.__main__ import SUBCOMMANDS, cxr_bench
from features.data import audit


def test_no_command_prints_the_commands_and_fails(capsys):
    assert cxr_bench([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
    assert cxr_bench(["--help"]) == 0


def test_an_unknown_command_fails_naming_the_valid_ones(capsys):
    assert cxr_bench(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "run, predict, verify, audit, download" in err


def test_run_is_run_benchmark_with_its_validation(capsys, kermany_root: Path):
    assert cxr_bench(["run", "--data", str(kermany_root), "--lr", "-1"]) == 2
    assert "cxr-bench run: error: --lr must be positive" in capsys.readouterr().err


def test_audit_subcommand_is_the_audit_command(capsys, kermany_root: Path, tmp_path: Path):
    arguments = [str(kermany_root), "--min-side", "32", "--cache-dir", str(tmp_path / "audit")]
    assert audit.main(arguments) == 0
    direct = capsys.readouterr().out
    assert cxr_bench(["audit", *arguments]) == 0
    # The same report, but for how long the check took.
    assert _without_timings(capsys.readouterr().out) == _without_timings(direct) and "checked" in direct


def _without_timings(text: str) -> str:
    return re.sub(r"\d+(\.\d+)? s\b", "N s", text)


def test_every_subcommand_has_help():
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as stop:
            cxr_bench([name, "--help"])
        assert stop.value.code == 0, name


def test_the_installed_command_works_outside_the_checkout(tmp_path: Path):
    script = Path(sys.executable).parent / "cxr-bench"
    if not script.is_file():
        pytest.skip(f"cxr-bench is not installed in {Path(sys.executable).parent} (pip install -e . installs it)")
    done = subprocess.run([str(script), "audit", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--min-side" in done.stdout
