"""cxr-bench: which ImageNet backbone transfers best to chest X-rays? The documented entry point.

    python run_benchmark.py [OPTIONS]      (the same command as: cxr-bench run [OPTIONS])

Parses the options into one RunConfig and runs every stage (data -> features
-> heads -> selection -> reports); ``--help`` lists every option. The code is
in ``benchmark.cli`` (the options) and ``benchmark.pipeline`` (the stages).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # before TensorFlow loads: its start-up lines go to a log, not the terminal
    from common.console import library_output_to_log

    library_output_to_log("run")

from benchmark.cli import build_parser, main, parse_args, run_command  # noqa: E402

__all__ = ["build_parser", "main", "parse_args", "run_command"]

if __name__ == "__main__":
    sys.exit(run_command())
