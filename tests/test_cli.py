"""The ``cxr-bench`` command: subcommands reach the same code as the module commands and run_benchmark.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.__main__ import SUBCOMMANDS, cxr_bench
from features.data import audit

REPO = Path(__file__).resolve().parent.parent


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


def test_the_libraries_console_output_goes_to_a_log_and_ours_to_the_terminal(tmp_path: Path):
    # What TensorFlow's C++ start-up lines do (file descriptor 2), what its retracing warnings do (Python logging),
    # a library's Python warning, and our own line on sys.stderr, in a process of its own.
    script = ("import logging, os, sys, warnings\n"
              "from common.console import library_output_to_log\n"
              "log = library_output_to_log('probe')\n"
              "os.write(2, b'I0000 cudart_stub.cc:31] Could not find cuda drivers\\n')\n"
              "logging.getLogger('tensorflow').warning('5 out of the last 6 calls triggered tf.function retracing')\n"
              "warnings.warn('a library warning', FutureWarning)\n"
              "print('run_benchmark.py: error: ours', file=sys.stderr)\n"
              "print(log)\n")  # fmt: skip
    env = {**os.environ, "CXR_BENCH_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("CXR_BENCH_LIBRARY_OUTPUT", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "run_benchmark.py: error: ours\n"
    log = Path(done.stdout.strip())
    assert log.parent == tmp_path / "logs" and log.name.startswith("probe-")
    text = log.read_text()
    assert "cudart_stub" in text and "retracing" in text and "a library warning" in text and "ours" not in text
    env["CXR_BENCH_LIBRARY_OUTPUT"] = "terminal"  # everything left on the terminal
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert "cudart_stub" in done.stderr and done.stdout.strip() == "None"
