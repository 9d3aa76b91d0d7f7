"""The user's cxr-bench folder, shared by every cache folder of this user on this machine: the libraries' logs
(``common.console``), the machine-wide memo of measured choices and the converted OpenVINO models
(``features.runtime``). A leaf: imports nothing of ours."""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "CXR_BENCH_HOME"


def cxr_bench_home() -> Path | None:
    """``$CXR_BENCH_HOME`` (default ``~/.cache/cxr-bench``): the user's folder shared by every cache folder; None
    where it is ``off``."""
    home = os.environ.get(HOME_VARIABLE, "").strip()
    if home.lower() == "off":
        return None
    if home:
        return Path(home).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cxr-bench"
