"""The run's command line: the options of ``run_benchmark.py`` and ``cxr-bench run``, parsed into a RunConfig.

``cxr-bench run ...`` and ``python run_benchmark.py ...`` are the same
command: both parse the options below into one ``RunConfig`` (over a
``--config`` TOML file, over the dataclass defaults) and hand it to
``benchmark.pipeline``. The ``cxr-bench`` dispatcher is ``benchmark.__main__``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter hides our output

from benchmark.config import OPTION_GROUPS, RunConfig, load_toml  # noqa: E402
from common.console import active_log  # noqa: E402
from features.options import add_options  # noqa: E402

DESCRIPTION = """cxr-bench: which ImageNet backbone transfers best to chest X-rays?

Extracts pooled features from each backbone (cached), trains a
GlobalAveragePooling -> Dropout -> softmax head per backbone on train,
early-stopped on validation, and reports test metrics per binary task in
results/leaderboard.md, leaderboard.csv and predictions.csv.

With no --data and no data/chest_xray/ folder, it runs on a built-in synthetic
phantom set so the whole pipeline can be seen offline; those numbers are not medical.
"""


def build_parser(prog: str = "run_benchmark.py") -> argparse.ArgumentParser:
    """The run's command line, built from RunConfig's fields (``features.options``): defaults are shown from
    RunConfig but applied after --config."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file setting any option below (by its field "
                        "name, for example lr = [1e-4, 1e-3]); the command line overrides it")  # fmt: skip
    add_options(parser, RunConfig, OPTION_GROUPS)
    return parser


def parse_command(argv: list[str] | None, prog: str = "run_benchmark.py") -> tuple[RunConfig, frozenset[str]]:
    """Command line (over ``--config`` TOML, over the dataclass defaults) -> the RunConfig, and the fields the
    command line or the TOML file set (``RunConfig.validate`` refuses those that would do nothing)."""
    given = vars(build_parser(prog).parse_args(argv))
    values = load_toml(given.pop("config")) if "config" in given else {}
    values.update(given)
    return RunConfig(**values), frozenset(values)


def parse_args(argv: list[str] | None, prog: str = "run_benchmark.py") -> RunConfig:
    """Command line (over ``--config`` TOML, over the dataclass defaults) -> RunConfig."""
    return parse_command(argv, prog)[0]


def main(argv: list[str] | None = None, prog: str = "run_benchmark.py") -> int:
    """The run: parse ``argv`` into a RunConfig and run every stage (``benchmark.pipeline``); the exit code."""
    from benchmark import pipeline  # TensorFlow loads here, not for --help of the other subcommands

    try:
        config, given = parse_command(argv, prog)
        config = config.validate(given)
    except (ValueError, TypeError, OSError) as error:
        return pipeline.error_line(prog, error)
    return pipeline.run(config, argv, prog)


def run_command(argv: list[str] | None = None, prog: str = "run_benchmark.py") -> int:
    """``main`` as a terminal runs it: Ctrl-C ends with one line and exit 130; the total time is printed."""
    from benchmark import pipeline

    started = time.perf_counter()
    try:
        code = main(argv, prog)
    except KeyboardInterrupt:
        code = pipeline.error_line(prog, "interrupted. Finished features, extraction shards and grid points are "
                                   "kept: run the same command again to resume.", 130)  # fmt: skip
    print(f"done in {time.perf_counter() - started:.0f} s")
    if code == 1 and (log := active_log()) is not None:
        print(f"the libraries' own messages (TensorFlow, OpenVINO, the workers' output): {log}", file=sys.stderr)
    return code
