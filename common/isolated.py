"""Runs one function call in a fresh Python process of its own, single-threaded or not.

A cluster task must give the numbers the same work gives in a local run, and
two things of the process it lands in would change them:

* Keras draws the seeds of a new model's layers from Python's global
  ``random``, which ``keras.utils.set_random_seed`` resets; in a Dask worker
  the event loop's thread draws from the same generator while the task builds
  its model, so a seeded random-init backbone came out different (measured:
  features 3x apart for one of two image sizes).
* TensorFlow fixes its thread counts when it starts, and a float sum split
  over two threads can round differently than over one; the local run trains
  heads in single-threaded processes, and the worker may already run
  TensorFlow with every core.

So each task runs in a process started for it, where nothing else runs, with
the local run's thread settings for that work.

The call goes to the child as a pickle on its standard input, after the
caller's import path, and the answer comes back on a copy of its standard
output (the child's own standard output is pointed at standard error, so
nothing it prints can mix with the answer): the same pickling
``concurrent.futures.ProcessPoolExecutor`` does over its pipes, between two
processes of ours. This module imports nothing of ours.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

# What a single-threaded head worker runs with; read by TensorFlow (and OpenMP) at start, hence set before it.
SINGLE_THREADED = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
# The folder holding our packages: the child finds this module there, whatever its working folder.
_CODE_ROOT = str(Path(__file__).resolve().parent.parent)


def exit_when_orphaned(parent: int) -> None:
    """Exit this process (from a daemon thread) as soon as ``parent`` is no longer its parent.

    A child left behind by a ``kill -9`` of its parent (a run, or a cluster
    worker) would otherwise go on computing and holding memory for nobody.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def call_in_fresh_process(function, *args, single_threaded: bool = False):
    """``function(*args)`` in a new Python process; its result, or its exception raised here.

    ``single_threaded`` starts it with ``SINGLE_THREADED``, as the local head
    workers are. ``function`` must be importable by name (a module-level
    function), as for any process pool. A child that dies without answering
    raises ``ChildProcessError`` naming its exit status.
    """
    environment = dict(os.environ, **(SINGLE_THREADED if single_threaded else {}))
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [_CODE_ROOT, os.environ.get("PYTHONPATH")]))
    child = subprocess.run(
        [sys.executable, "-m", "common.isolated", str(os.getpid())],
        # This process's import path first, as multiprocessing's spawn hands it on: the call may name any of its
        # modules (a test's, say).
        input=pickle.dumps(sys.path) + pickle.dumps((function, args)),
        stdout=subprocess.PIPE,
        env=environment,
        check=False,
    )
    if child.returncode != 0 or not child.stdout:
        raise ChildProcessError(f"the process running {function.__name__} ended with exit status {child.returncode}")
    succeeded, value = pickle.loads(child.stdout)
    if not succeeded:
        raise value
    return value


def _child_main() -> None:
    """In the child: read the call, run it, write ``(succeeded, result or exception)``."""
    exit_when_orphaned(int(sys.argv[1]))
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the call prints goes to standard error, never into the answer
    sys.path[:] = pickle.load(sys.stdin.buffer)
    function, args = pickle.load(sys.stdin.buffer)
    try:
        outcome = (True, function(*args))
    except Exception as error:  # handed to the caller, which raises it
        outcome = (False, error)
    try:
        payload = pickle.dumps(outcome)
    except Exception:  # an exception that does not pickle still reaches the caller, as its text
        payload = pickle.dumps((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    answer.write(payload)
    answer.close()


if __name__ == "__main__":
    _child_main()
