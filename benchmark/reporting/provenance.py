"""Where a result came from: library versions, the harness's git hash, the machine."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import keras

_REPO = Path(__file__).resolve().parent.parent
_PACKAGES = ("keras", "tensorflow", "jax", "torch", "numpy", "scikit-learn", "pandas", "pillow")


def git_revision() -> str:
    """Short hash of the harness checkout, with ``-dirty`` for uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=_REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of Python, the Keras backend and the libraries a result depends on."""
    found = {"python": platform.python_version(), "keras_backend": keras.backend.backend()}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> str:
    """A one-line description of the machine the run is on."""
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}"


def timestamp() -> str:
    """Now, in UTC, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
