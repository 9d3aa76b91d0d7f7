"""A finished run's training curves as TensorBoard event files, written without TensorFlow.

The ``tensorboard`` package's own event writer and protocol buffers (what ``torch.utils.tensorboard`` uses), so the
curves are written under any Keras backend (the GPU machines run JAX, without TensorFlow). One TensorBoard run per
head (``DIR/heads/<point id>/``) and per fine-tuned model (``DIR/finetune/<model id>/``), a scalar per column of its
history (loss, val_loss, accuracy, ...) per epoch; ``tensorboard --logdir DIR`` shows them side by side.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from benchmark.run_folder import FINETUNE, HEADS, RunFolder
from benchmark.tracking.run_files import Curves, RunHistory, run_history


def check_tensorboard() -> None:
    """``ValueError`` (one line) where the ``tensorboard`` package is not installed: checked before any work."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--tensorboard needs the tensorboard package: pip install 'cxr-bench[track]' (or "
                         "pip install tensorboard)")  # fmt: skip


def write_curves(logdir: Path, epochs: list[int], curves: Curves) -> None:
    """One TensorBoard run in ``logdir``: each curve as a scalar, its step the epoch."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(logdir))
    try:
        now = time.time()
        for index, epoch in enumerate(epochs):
            values = [Summary.Value(tag=name, simple_value=values[index]) for name, values in curves.items()
                      if index < len(values)]  # fmt: skip
            writer.add_event(Event(wall_time=now, step=epoch, summary=Summary(value=values)))
    finally:
        writer.close()


def write_tensorboard(folder: RunFolder, logdir: Path, history: RunHistory | None = None) -> list[Path]:
    """Every head's and fine-tuned model's curves of the run in ``folder`` under ``logdir``; the run folders written.
    ``history``: the run's training as already read (``run_history``), else read here.

    A fine-tuned model's epochs count on across the sizes of progressive resizing, from 1."""
    history = history or run_history(folder)
    written = []
    runs = [(logdir / HEADS / point_id, history.heads[point_id]) for point in history.points
            for point_id in point.point_ids]  # fmt: skip
    runs += [(logdir / FINETUNE / model_id, curves) for model_id, curves in history.finetuned.items()]
    for target, (epochs, curves) in runs:
        if epochs:
            write_curves(target, epochs, curves)
            written.append(target)
    return written
