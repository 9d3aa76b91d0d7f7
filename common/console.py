"""The libraries' console output, kept off the user's terminal: TensorFlow's absl start-up lines, oneDNN's and
OpenVINO's notes, TensorFlow's retracing warnings, other libraries' logging and Python warnings go to a log file;
the command's own lines (what it prints, its progress bars, its errors) stay on the terminal.

A console entry point calls ``library_output_to_log`` first thing, before anything imports TensorFlow: the C++
libraries write to file descriptor 2 directly, so the descriptor itself is pointed at the log, and Python's
``sys.stderr`` at a copy of the terminal's. Worker processes inherit the log as their standard error. The log lives
under ``$CXR_BENCH_HOME/logs`` (default ``~/.cache/cxr-bench/logs``), and a run copies it into its results folder
at its end. ``CXR_BENCH_LIBRARY_OUTPUT=terminal`` leaves everything on the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from common.files import atomic_write_bytes
from common.home import cxr_bench_home

OUTPUT_VARIABLE = "CXR_BENCH_LIBRARY_OUTPUT"
KEPT_LOGS = 20  # the newest logs kept in the home folder; older ones are removed

_active: Path | None = None


def library_output_to_log(command: str) -> Path | None:
    """Point this process's file descriptor 2 (and Python logging, and warnings) at a new log file, keeping
    ``sys.stderr`` on the terminal; the log's path, or None where it stays on the terminal (the variable says so,
    or no log can be written: then nothing changes)."""
    global _active
    if _active is not None or os.environ.get(OUTPUT_VARIABLE, "").strip().lower() == "terminal":
        return _active
    folder = (cxr_bench_home() or Path(os.environ.get("TMPDIR", "/tmp"))) / "logs"
    path = folder / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError:
        return None
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = io.TextIOWrapper(os.fdopen(terminal, "wb", buffering=0), encoding=sys.stderr.encoding,
                                  errors="backslashreplace", line_buffering=True, write_through=True)  # fmt: skip
    _route_python_logging(path)
    _prune(folder)
    _active = path
    return path


def _route_python_logging(path: Path) -> None:
    """Library logging (TensorFlow's retracing warnings, absl, Dask) and Python warnings into the log: a handler on
    the root logger also stops TensorFlow from adding one of its own on the terminal."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # a web server's request lines too: the log is where they are looked for
    logging.captureWarnings(True)


def _prune(folder: Path) -> None:
    logs = sorted(folder.glob("*.log"), key=lambda one: one.stat().st_mtime)
    for old in logs[:-KEPT_LOGS]:
        old.unlink(missing_ok=True)


def active_log() -> Path | None:
    """This process's library log, where ``library_output_to_log`` made one."""
    return _active


@contextlib.contextmanager
def stdout_to_library_log() -> Iterator[None]:
    """Python's ``sys.stdout`` into this process's library log while a library that prints runs (NNCF's progress
    bars, drawn on standard output), where there is a log; else left as it is."""
    if _active is None:
        yield
        return
    with open(_active, "a", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        yield


def copy_library_log(target: Path) -> Path | None:
    """This process's library log so far, copied to ``target`` (a run's results folder keeps it); None without one."""
    if _active is None or not _active.is_file():
        return None
    atomic_write_bytes(target, _active.read_bytes())
    return target
