"""PNG figures for the leaderboard: training curves, metric bars, ROC and reliability curves, confusion matrices,
subgroup forest plots.

Every plotting function takes plain data (dicts, arrays, a DataFrame) and a path, writes the PNG
atomically (a temp file beside the target, then ``os.replace``, so a reader never sees half an
image), closes its figure and returns the path. Colours come from the Okabe-Ito palette, which stays
distinguishable under the common colour-vision deficiencies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

# Reports are written on headless machines (CI, GPU nodes): pick the file-only backend before pyplot
# loads, or pyplot would look for a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from benchmark.evaluation.metrics import expected_calibration_error, reliability_bins  # noqa: E402
from common.files import atomic_output  # noqa: E402

DPI = 110
# Okabe & Ito (2008), "Color Universal Design": black moved last so it is not the first curve.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
# Beyond this many heads a legend covers more than it explains.
MAX_LEGEND_ENTRIES = 12
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "precision": "Precision (PPV)",
    "f1": "F1",
    "auc": "ROC AUC",
}


def _palette(n: int) -> list[str]:
    """``n`` colours: Okabe-Ito while it lasts, then evenly spaced viridis (also colour-blind safe)."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    cmap = matplotlib.colormaps["viridis"]
    # Stop short of viridis' pale yellow end, which vanishes on a white background.
    return [to_hex(cmap(x)) for x in np.linspace(0.0, 0.9, n)]


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and close it, whatever happens."""
    path = Path(path)
    try:
        _lay_out_once(fig)
        with atomic_output(path, "wb") as fh:
            # No bbox_inches="tight": constrained layout already fits the outside legends, and
            # "tight" would draw every figure twice.
            fig.savefig(fh, format="png", dpi=DPI, facecolor="white")
    finally:
        plt.close(fig)
    return path


def _lay_out_once(fig: Figure) -> None:
    """Run ``fig``'s layout engine now, at the saving resolution, and then drop it: ``savefig`` lays out a figure
    that has an engine twice (a draw without rendering, then the real draw), which was a third of a run's plotting
    time; the positions are the same either way."""
    engine = fig.get_layout_engine()
    if engine is None:
        return
    fig.set_dpi(DPI)
    engine.execute(fig)
    fig.set_layout_engine("none")


def _series(history: Mapping[str, Sequence[float]], key: str) -> np.ndarray | None:
    values = history.get(key)
    if values is None or len(values) == 0:
        return None
    return np.asarray(values, dtype=np.float64)


def plot_training_curves(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    path: Path,
    *,
    best_epochs: Mapping[str, int] | None = None,
    title: str = "Training curves",
) -> Path:
    """Loss (and accuracy, when recorded) per epoch for every head; returns ``path``.

    ``histories`` maps a head name to a Keras-style history dict (``loss``, ``val_loss``, optionally
    ``accuracy``, ``val_accuracy``). Each head has one colour; training is dashed, validation solid.
    ``best_epochs`` (1-based) puts a dot on each head's validation loss at the epoch whose weights were
    kept; an epoch outside the recorded range is not drawn. Above 12 heads the head legend is
    replaced by a note, since 40 colour swatches would hide the curves.
    """
    if not histories:
        raise ValueError("plot_training_curves needs at least one history")
    best_epochs = best_epochs or {}
    names = list(histories)
    colours = dict(zip(names, _palette(len(names)), strict=True))
    has_accuracy = any(
        _series(h, "accuracy") is not None or _series(h, "val_accuracy") is not None for h in histories.values()
    )
    many = len(names) > MAX_LEGEND_ENTRIES
    n_panels = 2 if has_accuracy else 1
    fig, axes = plt.subplots(
        1, n_panels, figsize=(6.0 * n_panels + (2.6 if not many else 0.4), 4.8), layout="constrained", squeeze=False
    )
    panels = [("loss", "Loss (cross-entropy)", axes[0, 0])]
    if has_accuracy:
        panels.append(("accuracy", "Accuracy", axes[0, 1]))
    try:
        for key, ylabel, ax in panels:
            _draw_history_panel(ax, key, ylabel, histories, colours, best_epochs, many)
        _add_curve_legends(fig, axes[0, 0], colours, best_epochs, many)
        fig.suptitle(title, fontsize=13)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def _draw_history_panel(
    ax,
    key: str,
    ylabel: str,
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    colours: Mapping[str, str],
    best_epochs: Mapping[str, int],
    many: bool,
) -> None:
    """Training (dashed) and validation (solid) ``key`` of every head, with the kept epoch dotted on the loss."""
    # Thinner, fainter lines when there are many heads, so overlapping curves stay readable.
    width, alpha = (1.0, 0.65) if many else (1.8, 0.95)
    for name, colour in colours.items():
        train = _series(histories[name], key)
        val = _series(histories[name], f"val_{key}")
        if train is not None:
            ax.plot(np.arange(1, len(train) + 1), train, "--", color=colour, lw=width * 0.8, alpha=alpha)
        if val is not None:
            ax.plot(np.arange(1, len(val) + 1), val, "-", color=colour, lw=width, alpha=alpha)
            best = best_epochs.get(name)
            if key == "loss" and best is not None and 1 <= int(best) <= len(val):
                ax.plot(
                    int(best),
                    val[int(best) - 1],
                    "o",
                    color=colour,
                    markeredgecolor="black",
                    markersize=7 if not many else 5,
                    zorder=3,
                )
    ax.set_title(ylabel.split(" (")[0])
    ax.set_xlabel("Epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _add_curve_legends(
    fig: Figure, loss_ax, colours: Mapping[str, str], best_epochs: Mapping[str, int], many: bool
) -> None:
    """The line-style legend on the loss panel, and the head legend beside the panels (or a note instead)."""
    style = [
        Line2D([], [], color="0.3", ls="--", lw=1.5, label="training"),
        Line2D([], [], color="0.3", ls="-", lw=1.8, label="validation"),
    ]
    if best_epochs:
        style.append(Line2D([], [], color="0.3", ls="", marker="o", markeredgecolor="black", label="best epoch (kept)"))
    loss_ax.legend(handles=style, loc="upper right", fontsize=9, framealpha=0.9)
    if many:
        # As the figure's x label, so constrained layout makes room for it.
        fig.supxlabel(
            f"{len(colours)} heads: head legend omitted; colours run from dark purple (first head) to "
            "yellow-green (last head) in the order given.",
            fontsize=9,
            style="italic",
        )
    else:
        heads = [Line2D([], [], color=colour, lw=2.5, label=name) for name, colour in colours.items()]
        fig.legend(handles=heads, loc="outside right upper", title="Head", fontsize=9, title_fontsize=10)


def _bar_frame(
    rows: pd.DataFrame | Sequence[Mapping], metrics: list[str], label_column: str, error_columns: Mapping[str, str]
) -> pd.DataFrame:
    """``rows`` as a DataFrame with numeric metric columns, string tasks and a ``_group`` label per row."""
    required = ["task", label_column, *metrics, *error_columns.values()]
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}; they have {list(frame.columns)}")
    if frame.empty:
        raise ValueError("plot_metric_bars needs at least one row")
    for column in [*metrics, *error_columns.values()]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["task"] = frame["task"].astype(str)
    frame["_group"] = ""
    for task in pd.unique(frame["task"]):
        mask = frame["task"] == task
        frame.loc[mask, "_group"] = _group_labels([str(v) for v in frame.loc[mask, label_column]])
    return frame


def _group_labels(labels: list[str]) -> list[str]:
    """Suffix repeated labels (" #2", " #3") so two heads of one backbone stay two bar groups."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def plot_metric_bars(
    rows: pd.DataFrame | Sequence[Mapping],
    path: Path,
    *,
    metrics: Sequence[str] = ("sensitivity", "specificity", "f1", "auc"),
    label_column: str = "backbone",
    title: str = "Test metrics per backbone and task",
    error_columns: Mapping[str, str] | None = None,
    value_labels: bool = False,
) -> Path:
    """Grouped bars of test metrics, one panel per task; returns ``path``.

    ``rows`` (leaderboard rows, a DataFrame or a list of dicts) need ``task``, ``label_column`` and
    every metric column; a ``positive`` column, when present, is named in each panel's title. Tasks
    are drawn in the order they first appear. Every panel shares one x axis of labels (in order of
    first appearance), so a backbone sits in the same place in each task; a label that repeats within
    a task (two settings of one backbone) becomes its own group, suffixed ``#2``. A NaN metric gets no
    bar, only a small "n/a"; a label missing from a task is marked "no result". ``error_columns`` maps
    a metric to a column of standard deviations (several seeds averaged), drawn as error bars clipped
    to [0, 1]. ``value_labels`` writes each value above its bar.
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("plot_metric_bars needs at least one metric")
    error_columns = {m: c for m, c in (error_columns or {}).items() if m in metrics}
    frame = _bar_frame(rows, metrics, label_column, error_columns)
    tasks = list(pd.unique(frame["task"]))
    groups = list(pd.unique(frame["_group"]))
    position = {group: i for i, group in enumerate(groups)}
    colours = _palette(len(metrics))
    fig, axes, tilt = _bar_figure(len(tasks), groups, len(metrics))
    try:
        for ax, task in zip(axes[:, 0], tasks, strict=True):
            table = frame[frame["task"] == task]
            _draw_task_bars(ax, table, metrics, position, colours, error_columns, value_labels)
            _label_task_panel(ax, task, table, position, tilt, value_labels)
        handles = [Patch(color=colours[k], label=METRIC_LABELS.get(m, m)) for k, m in enumerate(metrics)]
        # Beside the panels: above them it would collide with the suptitle or a long task title.
        fig.legend(handles=handles, loc="outside right upper", title="Metric", fontsize=10, title_fontsize=10)
        suffix = "\n(bars: mean; whiskers: ±1 SD)" if error_columns else ""
        fig.suptitle(title + suffix, fontsize=13)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def _bar_figure(n_tasks: int, groups: list[str], n_metrics: int) -> tuple[Figure, np.ndarray, bool]:
    """One panel per task, wide enough for every group's bars; also whether the group names must tilt."""
    axes_width = max(6.0, 0.22 * len(groups) * n_metrics + 0.6 * len(groups) + 0.8)
    fig, axes = plt.subplots(
        n_tasks, 1, figsize=(axes_width + 2.4, 2.9 * n_tasks + 0.7), layout="constrained", squeeze=False
    )
    # Tilt the names only when the longest (~0.085 in per character) would not fit its group.
    tilt = max(map(len, groups)) * 0.085 > 0.95 * axes_width / len(groups)
    return fig, axes, tilt


def _draw_task_bars(
    ax,
    table: pd.DataFrame,
    metrics: list[str],
    position: Mapping[str, int],
    colours: list[str],
    error_columns: Mapping[str, str],
    value_labels: bool,
) -> None:
    """Every metric's bars for one task's rows, side by side within each group."""
    x = np.array([position[g] for g in table["_group"]], dtype=np.float64)
    bar_width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        sd_column = error_columns.get(metric)
        _draw_metric(
            ax,
            offsets=x + (k - (len(metrics) - 1) / 2) * bar_width,
            values=table[metric].to_numpy(dtype=np.float64),
            sd=None if sd_column is None else table[sd_column].to_numpy(dtype=np.float64),
            bar_width=bar_width,
            colour=colours[k],
            value_labels=value_labels,
        )


def _draw_metric(
    ax,
    *,
    offsets: np.ndarray,
    values: np.ndarray,
    sd: np.ndarray | None,
    bar_width: float,
    colour: str,
    value_labels: bool,
) -> None:
    """One metric's bars at ``offsets`` (an "n/a" where a value is NaN), with ±``sd`` whiskers when given."""
    finite = np.isfinite(values)
    for xpos in offsets[~finite]:
        ax.text(xpos, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="0.35")
    if not finite.any():
        return
    yerr = None
    if sd is not None:
        sd = np.nan_to_num(sd[finite], nan=0.0)
        v = values[finite]
        # A metric lives in [0, 1]; whiskers past that would only be cut by the axes.
        yerr = np.vstack([np.minimum(sd, v), np.minimum(sd, 1.0 - v)]).clip(min=0.0)
    ax.bar(
        offsets[finite],
        values[finite],
        bar_width * 0.92,
        yerr=yerr,
        capsize=2.5 if yerr is not None else 0,
        error_kw={"elinewidth": 1.0, "ecolor": "0.15"},
        color=colour,
    )
    if value_labels:
        # Above the whisker, not the bar, so the number never sits on the error bar.
        tops = values[finite] + (yerr[1] if yerr is not None else 0.0)
        for xpos, value, top in zip(offsets[finite], values[finite], tops, strict=True):
            ax.text(xpos, top + 0.015, f"{value:.2f}", rotation=90, ha="center", va="bottom", fontsize=7)


def _label_task_panel(
    ax, task: str, table: pd.DataFrame, position: Mapping[str, int], tilt: bool, value_labels: bool
) -> None:
    """Title, shared x axis and score axis of one task's panel; "no result" where a label is missing."""
    groups = list(position)
    for group in sorted(set(groups) - set(table["_group"]), key=position.get):
        ax.text(position[group], 0.5, "no result", ha="center", va="center", fontsize=9, color="0.4")
    heading = str(task)
    if "positive" in table.columns and isinstance(table["positive"].iloc[0], str):
        heading += f"  (positive: {table['positive'].iloc[0].replace('+', ' + ')})"
    ax.set_title(heading, fontsize=11, loc="left")
    x_all = np.arange(len(groups))
    if tilt:
        ax.set_xticks(x_all, groups, rotation=25, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x_all, groups)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylim(0.0, 1.18 if value_labels else 1.04)
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("Score (0 to 1)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def roc_points(y_true, score) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates of the ROC curve, from (0, 0) to (1, 1).

    One point per distinct score threshold, highest first, so tied scores move the curve diagonally
    at once (the same points as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``).
    ``y_true`` is truthy for the positive class. Raises ``ValueError`` when only one class is present
    (one of the two rates is then undefined) or a score is NaN.
    """
    y_true = np.asarray(y_true).astype(bool).ravel()
    score = np.asarray(score, dtype=np.float64).ravel()
    if y_true.shape != score.shape:
        raise ValueError(f"y_true has {y_true.size} values but score has {score.size}")
    if np.isnan(score).any():
        raise ValueError("score contains NaN")
    n_pos = int(y_true.sum())
    n_neg = y_true.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs both classes; got {n_pos} positive and {n_neg} negative")
    order = np.argsort(-score, kind="mergesort")
    sorted_score, sorted_true = score[order], y_true[order]
    # The last index of each run of equal scores: every sample up to it is called positive there.
    last_of_threshold = np.r_[np.flatnonzero(np.diff(sorted_score)), sorted_score.size - 1]
    tp = np.cumsum(sorted_true)[last_of_threshold]
    fp = (last_of_threshold + 1) - tp
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return fpr, tpr


def trapezoid_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve given by its points, with the trapezoid rule."""
    return float(np.trapezoid(np.asarray(tpr, dtype=np.float64), np.asarray(fpr, dtype=np.float64)))


def _unit_square(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Equal-aspect [0, 1] x [0, 1] axes with labels, title and a light grid."""
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=12)
    ax.grid(True, alpha=0.3)


def _roc_skip_reason(y_true: np.ndarray, score) -> str | None:
    """Why a model's ROC curve cannot be drawn (one class only, NaN scores), or None."""
    n_pos = int(y_true.sum())
    if n_pos == 0 or n_pos == y_true.size:
        return "no positive case" if n_pos == 0 else "no negative case"
    if np.isnan(np.asarray(score, dtype=np.float64)).any():
        # A diverged head predicts NaN; the report should still show the other curves.
        return "NaN scores"
    return None


def plot_roc_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str) -> Path:
    """ROC curves of several models on one task, each labelled with its AUC; returns ``path``.

    ``curves`` maps a label (a backbone) to ``(y_true, score)``. The legend lists curves by AUC,
    best first, then the chance diagonal. A curve whose ``y_true`` holds one class has no ROC, and one
    with a NaN score cannot be ranked: each is listed in the legend as skipped instead of drawn.
    """
    names = list(curves)
    colours = _palette(min(len(names), len(OKABE_ITO)))
    # Past eight curves the colours repeat, so the line style tells the repeats apart.
    styles = ["-", "--", ":", "-."]
    # Curves, chance line and skip notes: past the limit the legend moves beside the axes, which need the room.
    outside = len(names) + 1 > MAX_LEGEND_ENTRIES
    fig, ax = plt.subplots(figsize=(11.5 if outside else 7.2, 6.4), layout="constrained")
    try:
        drawn: list[tuple[float, Line2D]] = []
        skipped: list[Line2D] = []
        for i, name in enumerate(names):
            y_true, score = curves[name]
            y_true = np.asarray(y_true).astype(bool)
            reason = _roc_skip_reason(y_true, score)
            if reason:
                skipped.append(Line2D([], [], ls="", label=f"{name}: skipped ({reason})"))
                continue
            fpr, tpr = roc_points(y_true, score)
            auc = trapezoid_auc(fpr, tpr)
            (line,) = ax.plot(
                fpr,
                tpr,
                styles[(i // len(OKABE_ITO)) % len(styles)],
                color=colours[i % len(colours)] if colours else None,
                lw=2.0,
                label=f"{name} (AUC {auc:.3f})",
            )
            drawn.append((auc, line))
        (chance,) = ax.plot([0, 1], [0, 1], ":", color="0.5", lw=1.2, label="chance (AUC 0.500)")
        handles = [line for _, line in sorted(drawn, key=lambda item: -item[0])] + [chance] + skipped
        ax.legend(
            handles=handles,
            loc="upper left" if outside else "lower right",
            bbox_to_anchor=(1.02, 1.0) if outside else None,
            fontsize=9,
            title="Model (test AUC)",
            title_fontsize=9,
            framealpha=0.95,
        )
        _unit_square(ax, "False positive rate (1 − specificity)", "True positive rate (sensitivity)", title)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def plot_reliability(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, title: str, n_bins: int = 10
) -> Path:
    """Reliability diagram: observed frequency against mean predicted probability per bin, one line per
    model, each labelled with its expected calibration error; returns ``path``.

    ``curves`` maps a label to ``(y_true, score)``, as for ``plot_roc_curves``. Empty bins are not drawn.
    """
    names = list(curves)
    colours = _palette(min(len(names), len(OKABE_ITO)))
    fig, ax = plt.subplots(figsize=(7.2, 6.4), layout="constrained")
    try:
        ax.plot([0, 1], [0, 1], ":", color="0.5", lw=1.2, label="perfectly calibrated")
        for i, name in enumerate(names):
            y_true, score = (np.asarray(v, dtype=np.float64) for v in curves[name])
            bins = reliability_bins(y_true, score, n_bins)
            filled = bins["count"] > 0
            ece = expected_calibration_error(y_true, score, n_bins)
            ax.plot(
                bins["confidence"][filled],
                bins["frequency"][filled],
                "o-",
                color=colours[i % len(colours)] if colours else None,
                lw=1.8,
                label=f"{name} (ECE {ece:.3f})",
            )
        ax.legend(loc="upper left", fontsize=9, framealpha=0.95)
        _unit_square(
            ax, "Mean predicted probability of the positive class (per bin)",
            "Observed frequency of the positive class", title,
        )  # fmt: skip
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def _count_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path, *, title: str) -> Path:
    """Annotated confusion matrix (rows: true class, columns: predicted class); returns ``path``.

    Each cell shows the count and its share of the true class (row percentage). The colour follows
    the row percentage rather than the count, so a small class's errors are as visible as a large
    one's. A class with no test image shows "n/a" percentages.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    classes = [str(c) for c in classes]
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(classes):
        raise ValueError(f"need a square matrix with one row per class ({len(classes)}); got shape {matrix.shape}")
    n = len(classes)
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(totals[:, None] > 0, 100.0 * matrix / totals[:, None], np.nan)
    side = max(4.8, 1.25 * n + 2.4)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    try:
        image = ax.imshow(np.nan_to_num(percent), cmap="Blues", vmin=0.0, vmax=100.0)
        fontsize = 11 if n <= 4 else 9 if n <= 7 else 7
        for i in range(n):
            for j in range(n):
                share = "n/a" if math.isnan(percent[i, j]) else f"{percent[i, j]:.1f}%"
                dark = not math.isnan(percent[i, j]) and percent[i, j] > 55.0
                ax.text(
                    j,
                    i,
                    f"{_count_text(matrix[i, j])}\n({share})",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if dark else "black",
                    fontweight="bold" if i == j else "normal",
                )
        ax.set_xticks(np.arange(n), classes, rotation=30 if max(map(len, classes)) > 10 else 0)
        ax.set_yticks(np.arange(n), [f"{c}\n(n={_count_text(t)})" for c, t in zip(classes, totals, strict=True)])
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        ax.set_title(title, fontsize=12)
        # Cell borders make the grid readable where neighbouring cells have nearly the same colour.
        ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=2)
        ax.tick_params(which="minor", length=0)
        colourbar = fig.colorbar(image, ax=ax, shrink=0.85)
        colourbar.set_label("% of the true class (row)")
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def plot_auc_differences(
    names: Sequence[str], delta: np.ndarray, p_holm: np.ndarray, path: Path, *, title: str, alpha: float = 0.05
) -> Path:
    """A matrix of paired test AUC differences (row − column), coloured where Holm-corrected DeLong p < ``alpha``.

    Cells the test set cannot tell apart are grey, whatever their size: the colour is the verdict, the number
    the estimate. ``delta`` and ``p_holm`` are ``(n, n)``; the diagonal is left blank.
    """
    n = len(names)
    fig, ax = plt.subplots(figsize=(2.5 + 0.8 * n, 1.6 + 0.65 * n), dpi=DPI, layout="constrained")
    limit = max(float(np.nanmax(np.abs(delta))) if n > 1 else 0.0, 1e-3)
    shown = np.where(p_holm < alpha, delta, np.nan)
    image = ax.imshow(shown, cmap="RdBu", vmin=-limit, vmax=limit)
    ax.imshow(np.where(np.isnan(shown), 0.5, np.nan), cmap="Greys", vmin=0, vmax=2.5)
    for i in range(n):
        for j in range(n):
            if i != j:
                star = "*" if p_holm[i, j] < alpha else ""
                dark = p_holm[i, j] < alpha and abs(delta[i, j]) > 0.6 * limit
                ax.text(j, i, f"{delta[i, j]:+.3f}{star}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_title(f"{title}\ncoloured (and *) where DeLong p, Holm-corrected, < {alpha:g}; grey: not told apart",
                 fontsize=8)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Δ AUC (row − column)")
    return _save(fig, path)


def plot_critical_difference(
    mean_ranks: Mapping[str, float], pvalues: pd.DataFrame, path: Path, *, title: str, cd: float | None = None,
    alpha: float = 0.05,
) -> Path:
    """A critical-difference diagram: models on an axis of mean rank (1 = best), joined by a bar where the
    post-hoc ``pvalues`` (a model x model matrix) cannot tell them apart at ``alpha``; ``cd`` drawn above."""
    # Imported here: it loads scipy.stats and seaborn, which no other figure needs.
    import scikit_posthocs

    ranks = pd.Series(mean_ranks, dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, 1.6 + 0.3 * len(ranks)), dpi=DPI, layout="constrained")
    try:
        colours = dict(zip(ranks.index, _palette(len(ranks)), strict=True))
        scikit_posthocs.critical_difference_diagram(ranks, pvalues, ax=ax, cd=cd, alpha=alpha,
                                                    color_palette=colours)  # fmt: skip
        ax.set_title(title, fontsize=9, pad=24)  # room for the CD bar drawn above the axis
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, path)


def plot_subgroup_forest(points: Sequence[tuple[str, float, float, float]], path: Path, title: str) -> Path:
    """A forest plot: one row per (label, AUC, interval low, high), the AUC a dot and its interval a line, with
    chance (0.5) dashed; a row without an interval (``--bootstrap 0``) is its dot alone."""
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * max(len(points), 2) + 1.3), layout="constrained")
    for y, (_, auc, low, high) in enumerate(points):
        if not math.isnan(low):
            ax.plot([low, high], [y, y], color=OKABE_ITO[0], lw=1.6)
        ax.plot([auc], [y], "o", color=OKABE_ITO[-1], ms=4)
    ax.set_yticks(range(len(points)), [label for label, *_ in points], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.5, color="#999999", lw=0.8, ls="--")
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("test AUC (95% bootstrap interval)")
    ax.set_title(title if points else f"{title}: no subgroup can be scored")
    return _save(fig, path)

