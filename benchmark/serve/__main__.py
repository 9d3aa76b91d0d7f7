"""``python -m benchmark.serve RESULTS_DIR``: the same command as ``cxr-bench serve``."""

import sys

from benchmark.serve.cli import main

sys.exit(main())
