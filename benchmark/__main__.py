"""The ``cxr-bench`` command (also ``python -m benchmark``): one subcommand per job, each a module's own CLI.

Subcommands are imported only when asked for, so ``cxr-bench --help`` and an
unknown command answer at once, before TensorFlow loads.
"""

from __future__ import annotations

import importlib
import os
import sys

from common.console import library_output_to_log

# Subcommand -> (module whose main(argv) it runs, what it does).
SUBCOMMANDS = {
    "run": ("benchmark.cli", "extract features, train and select heads, write the leaderboard (run_benchmark.py)"),
    "predict": ("benchmark.predict", "one image's (or a folder's) answer with a heatmap, from a finished run"),
    "verify": ("benchmark.evaluation.verify", "recompute a run's test numbers from predictions.csv with scikit-learn"),
    "audit": ("features.data.audit", "check a dataset folder's images, splits and leakage without running anything"),
    "download": ("features.data.download", "download a public chest X-ray dataset, checksummed"),
    "export": ("benchmark.export.cli", "the run's model as one file per format (Keras, ONNX, OpenVINO, LiteRT, "
               "SavedModel), checked against the run, with a model card"),
    "serve": ("benchmark.serve", "a local web page for a run: leaderboard, plots, and one image's answer"),
}



def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
    return "usage: cxr-bench COMMAND [OPTIONS]   (cxr-bench COMMAND --help for its options)\n\ncommands:\n" + "\n".join(
        lines
    )


def cxr_bench(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` to a subcommand; an unknown one fails naming the valid ones. Returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"cxr-bench: error: unknown command {name!r}; valid commands: {', '.join(SUBCOMMANDS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before any subcommand loads TensorFlow
    module = importlib.import_module(SUBCOMMANDS[name][0])
    if name == "run":
        return module.run_command(rest, prog="cxr-bench run")
    return module.main(rest)


def console_main() -> None:
    """Entry point of the installed ``cxr-bench`` script: the libraries' console output goes to a log
    (``common.console``) before a subcommand loads TensorFlow."""
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        library_output_to_log(sys.argv[1])
    sys.exit(cxr_bench())


if __name__ == "__main__":
    console_main()
