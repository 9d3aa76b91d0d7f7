"""``cxr-bench verify`` on folders a hostile tester made: a user's mistakes and damaged files are one line and a
non-zero exit (never a traceback), a selected head missing from the leaderboard is a failed check, and a byte
flipped in any file of a finished run is caught or changes nothing of verify's answer.

Every test works on a copy of the session's ``small_run`` (one head; its results folder only) or ``probe_run``
(a head, its probe and their ensemble), without its SHA256SUMS unless it says so: verify's own checks of what the
files hold are tested as for a run from before SHA256SUMS, and the record of the bytes on its own."""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation import verify as verify_module
from benchmark.evaluation.verify import main
from common.files import CHECKSUMS


def results_copy(run, tmp_path: Path, checksums: bool = False) -> Path:
    """The run's results folder (not its cache) copied into ``tmp_path``, to damage; without its SHA256SUMS unless
    ``checksums``."""
    results = Path(shutil.copytree(run.results, tmp_path / "results"))
    if not checksums:
        (results / CHECKSUMS).unlink()
    return results


def verify_output(results: Path, capsys) -> tuple[int, str, str]:
    """verify's exit code, stdout and stderr on ``results``, run in this process (a traceback fails the test)."""
    code = main([str(results)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(results: Path, capsys) -> str:
    """verify's one ``error:`` line on ``results``, asserting exit code 2 and that nothing else was printed."""
    code, out, err = verify_output(results, capsys)
    assert code == 2, out + err
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("verify: error: ")
    return err


def edit_csv(path: Path, change) -> None:
    """``path`` replaced by ``change`` of its table, every cell kept as the text it was."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame).to_csv(path, index=False)


def set_cell(name: str, row: int, column: str, value: str):
    def damage(results: Path) -> None:
        edit_csv(results / name, lambda frame: frame.assign(**{column: frame[column].where(frame.index != row, value)}))

    return damage


def keep_header_only(name: str):
    def damage(results: Path) -> None:
        path = results / name
        path.write_text(path.read_text(encoding="utf-8").splitlines(keepends=True)[0], encoding="utf-8")

    return damage


def delete(*names: str):
    def damage(results: Path) -> None:
        for name in names:
            (results / name).unlink()

    return damage


def overwritten_by_predict(results: Path) -> None:
    """predictions.csv replaced by what ``cxr-bench predict`` writes (its columns, in its order)."""
    row = {"path": "/x/chest.png", "predicted": "normal", "p_normal": 0.8, "p_bacterial": 0.15, "p_viral": 0.05,
           "task": "normal_vs_pneumonia", "score": 0.2, "threshold": 0.5, "flagged": False,
           "heatmap": "/out/chest_gradcam.png"}  # fmt: skip
    pd.DataFrame([row]).to_csv(results / "predictions.csv", index=False)


def not_json(name: str):
    def damage(results: Path) -> None:
        path = results / name
        path.write_text(path.read_text(encoding="utf-8")[:200], encoding="utf-8")

    return damage


def comparison_without_a_head(results: Path) -> None:
    """report.json still JSON, but a comparison row lacks the name of its first head."""
    path = results / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    del report["data"]["comparisons"][0]["a"]
    path.write_text(json.dumps(report), encoding="utf-8")


# Each damage is something the old verify answered with a traceback, a vague line, several lines, or exit 0.
@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (delete("leaderboard.csv", "predictions.csv", "report.json", "comparisons.csv", "grid.csv"),
         "has no leaderboard.csv: not the results folder of a finished run (interrupted? run the same command again"),
        (delete("predictions.csv"), "has no predictions.csv: not the results folder of a finished run (interrupted?"),
        (keep_header_only("predictions.csv"), "predictions.csv holds no rows, only its header: cut short"),
        (keep_header_only("leaderboard.csv"), "leaderboard.csv holds no rows, only its header: cut short"),
        (set_cell("leaderboard.csv", 1, "op_test_tp", "8x"), "leaderboard.csv line 3: op_test_tp is '8x', not a"),
        (set_cell("leaderboard.csv", 0, "auc_ci_low", "abc"), "leaderboard.csv line 2: auc_ci_low is 'abc', not a"),
        (set_cell("leaderboard.csv", 2, "n_test", ""), "leaderboard.csv line 4: n_test is empty, not a number"),
        (set_cell("leaderboard.csv", 0, "positive", "bacteria"),
         "leaderboard.csv line 2: positive 'bacteria' names no class of predictions.csv"),
        (set_cell("predictions.csv", 4, "label", "nromal"), "predictions.csv line 6: label 'nromal' is not one of the"),
        (set_cell("predictions.csv", 3, "lr", "0.0o1"), "predictions.csv line 5: lr is '0.0o1', not a number"),
        (overwritten_by_predict, "predictions.csv is the output of `cxr-bench predict`"),
        (not_json("run.json"), "run.json is not readable JSON"),
        (comparison_without_a_head, "report.json: data.comparisons[0].a is None, not what a run writes"),
    ],
    ids=["interrupted-run", "no-predictions", "predictions-header-only", "leaderboard-header-only",
         "text-in-op-count", "text-in-interval", "empty-n-test", "unknown-positive", "unknown-label",
         "text-in-predictions", "predict-output", "run-json-not-json", "report-json-shape"],
)  # fmt: skip
def test_a_mistake_or_a_damaged_file_is_one_line_naming_it(probe_run, tmp_path: Path, capsys, damage, said):
    results = results_copy(probe_run, tmp_path)
    damage(results)
    assert said in one_error_line(results, capsys)


def test_a_value_no_check_foresaw_is_one_line_and_the_traceback_is_there_when_asked(
    small_run, tmp_path: Path, capsys, monkeypatch
):
    results = results_copy(small_run, tmp_path)

    def unforeseen(*_):
        raise KeyError("p_normal")

    monkeypatch.setattr(verify_module, "check_leaderboard", unforeseen)
    err = one_error_line(results, capsys)
    assert "one of leaderboard.csv, predictions.csv holds a value verify cannot use (KeyError: 'p_normal')" in err
    assert "this is a bug in verify: --traceback shows where" in err
    with pytest.raises(verify_module.VerifyError) as raised:  # not swallowed: the cause is kept
        main([str(results), "--traceback"])
    assert isinstance(raised.value.__cause__, KeyError)


def test_a_file_verify_may_not_read_is_one_line(small_run, tmp_path: Path, capsys, monkeypatch):
    results = results_copy(small_run, tmp_path)
    read_csv = pd.read_csv

    def refused(path, *args, **kwargs):  # root reads any file, so the refusal is simulated
        if Path(path).name == "predictions.csv":
            raise PermissionError(13, "Permission denied", str(path))
        return read_csv(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", refused)
    assert f"cannot read {results / 'predictions.csv'}: Permission denied" in one_error_line(results, capsys)


def _drop_rows(results: Path, name: str, keep) -> None:
    edit_csv(results / name, lambda frame: frame[keep(frame)])


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda results: _drop_rows(results, "leaderboard.csv", lambda frame: frame.index != 1),
         "leaderboard.csv lacks the internal row of MobileNetV2-32px-lr0.001"),
        (lambda results: [_drop_rows(results, name, lambda frame: frame["backbone"] != "MobileNetV2-logreg")
                          for name in ("leaderboard.csv", "predictions.csv")],
         "leaderboard.csv has no row of MobileNetV2-logreg, whose point grid.csv selects (image_size 32, kind logreg"),
    ],
    ids=["one-row", "a-whole-model"],
)  # fmt: skip
def test_a_selected_head_missing_from_the_leaderboard_is_a_failed_check(probe_run, tmp_path: Path, capsys, damage,
                                                                         named):  # fmt: skip
    results = results_copy(probe_run, tmp_path)
    # Without report.json (a run older than the verdict), grid.csv alone records what was selected.
    (results / "report.json").unlink()
    damage(results)
    code, out, err = verify_output(results, capsys)
    assert code == 1 and named in out, out + err


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (set_cell("leaderboard.csv", 0, "weights", "imagenet"),
         "leaderboard.csv MobileNetV2-32px-lr0.001-do0.2-l20-constant-seed0-"),
        (set_cell("grid.csv", 0, "selection_score", "-1.0"), "grid.csv line 2 selection_score: -1.0, but its val_loss"),
        (set_cell("grid.csv", 0, "seeds", "2"), "leaderboard.csv holds 1 head(s) of MobileNetV2, but grid.csv records"),
        (set_cell("grid.csv", 0, "failed", "1"), "grid.csv counts 1 failed seed(s), run.json 0"),
        (set_cell("predictions.csv", 0, "lr", "0.002"), "predictions.csv and leaderboard.csv disagree on the lr of"),
    ],
    ids=["text-beside-report-json", "selection-score", "seeds", "failed", "head-settings"],
)  # fmt: skip
def test_a_changed_record_of_the_run_is_a_failed_check(small_run, tmp_path: Path, capsys, damage, named):
    results = results_copy(small_run, tmp_path)
    damage(results)
    code, out, err = verify_output(results, capsys)
    assert code == 1 and named in out, out + err


def test_a_probability_or_decision_changed_in_predictions_csv_is_named(small_run, tmp_path: Path, capsys):
    results = results_copy(small_run, tmp_path)
    text = (results / "predictions.csv").read_text(encoding="utf-8")
    frame = pd.read_csv(results / "predictions.csv", dtype=str, keep_default_na=False)
    shifted = frame.assign(p_viral=frame["p_viral"].where(frame.index != 2, str(float(frame.loc[2, "p_viral"]) + 1e-3)))
    shifted.to_csv(results / "predictions.csv", index=False)
    assert "predictions.csv line 4: the probabilities sum to 1.001" in one_error_line(results, capsys)
    (results / "predictions.csv").write_text(text, encoding="utf-8")
    wrong = frame.assign(predicted=frame["predicted"].where(frame.index != 0, "viral"))
    wrong.to_csv(results / "predictions.csv", index=False)
    assert "predictions.csv line 2: predicted is 'viral', but its probabilities say 'normal'" in one_error_line(
        results, capsys
    )


def test_the_single_head_tie_of_the_verdict_is_recomputed(probe_run, tmp_path: Path, capsys):
    results = results_copy(probe_run, tmp_path)
    path = results / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    verdict = report["data"]["verdict"]["normal_vs_pneumonia"]
    verdict["best_single"] = next(name for name in verdict["heads"] if name not in (verdict["best_single"], "ensemble"))
    path.write_text(json.dumps(report), encoding="utf-8")
    code, out, _ = verify_output(results, capsys)
    assert code == 1 and "verdict internal normal_vs_pneumonia: best_single" in out, out


# ---- one byte flipped in each file of a finished run

# Every file a small run leaves in its results folder, as glob patterns; the plots (PNG) and checkpoints
# (best.keras) are left out: verify reads neither. Files verify does not read are flipped too: its answer must
# not move. test_the_flips_cover_every_file keeps the list whole.
FLIPPED = ("leaderboard.csv", "predictions.csv", "report.json", "run.json", "grid.csv", "comparisons.csv",
           "leaderboard.md", "skipped.csv", "leakage.csv", ".cxr-bench.lock", "heads/*/history.csv",
           "heads/*/point.json", CHECKSUMS)  # fmt: skip
NOT_FLIPPED = ("*.png", "*.keras")
FLIPS = 10
MASKS = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)


def test_the_flips_cover_every_file(small_run):
    files = {p.relative_to(small_run.results) for p in small_run.results.rglob("*") if p.is_file()}
    covered = {p for pattern in (*FLIPPED, *NOT_FLIPPED) for p in files if p.match(pattern)}
    assert files - covered == set()


@pytest.mark.slow
@pytest.mark.parametrize("pattern", FLIPPED)
def test_a_flipped_byte_is_caught_or_changes_nothing(small_run, tmp_path: Path, capsys, pattern: str):
    # Without SHA256SUMS (as a run from before it) verify's checks of the contents alone must hold.
    results = results_copy(small_run, tmp_path, checksums=pattern == CHECKSUMS)
    clean = verify_output(results, capsys)
    assert clean[0] == 0, clean
    for path in sorted(results.glob(pattern)):
        data = path.read_bytes()
        # The same positions on every run (seeded by the name), spread over the whole file, header included.
        rng = np.random.default_rng(zlib.crc32(pattern.encode()))
        positions = sorted(rng.choice(len(data), size=min(FLIPS, len(data)), replace=False)) if data else []
        for flip, position in enumerate(positions):
            damaged = bytearray(data)
            damaged[position] ^= MASKS[flip % len(MASKS)]
            path.write_bytes(bytes(damaged))
            code, out, err = verify_output(results, capsys)
            where = f"{path.name} byte {position}: {data[max(0, position - 30) : position + 10]!r}"
            assert "Traceback" not in out + err, where
            if code == 0:
                assert (code, out, err) == clean, where  # not caught, so it must change nothing verify says
            else:
                assert code in (1, 2) and (code == 1 or len(err.strip().splitlines()) == 1), f"{where}: {out}{err}"
        path.write_bytes(data)


def _first_cell(data: bytes, column: str) -> int:
    """Where the first row's cell of ``column`` starts in a CSV file's bytes (no quoted cells before it)."""
    header, first = data.split(b"\n")[:2]
    index = header.split(b",").index(column.encode())
    return len(header) + 1 + sum(len(cell) + 1 for cell in first.split(b",")[:index])


# Bytes verify recomputes nothing from: a validation number grid.csv keeps beside the selection, and prose.
@pytest.mark.parametrize(
    ("name", "where"),
    [("grid.csv", lambda data: _first_cell(data, "val_viral_vs_rest_specificity") + 2),
     ("leaderboard.md", lambda data: data.index(b"# ") + 3),
     ("report.json", lambda data: data.index(b'"sentence": "') + 15)],
    ids=["unchecked-validation-number", "markdown", "report-prose"],
)  # fmt: skip
def test_a_byte_changed_where_no_number_is_recomputed_is_named_by_sha256sums(small_run, tmp_path: Path, capsys,
                                                                            name: str, where):  # fmt: skip
    results = results_copy(small_run, tmp_path, checksums=True)
    data = (results / name).read_bytes()
    position = where(data)
    (results / name).write_bytes(data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :])
    code, out, err = verify_output(results, capsys)
    assert code == 1 and f"{name} does not match its SHA-256 in {results / CHECKSUMS}" in out, out + err
