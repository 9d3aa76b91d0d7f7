"""The verdict: tied-with-the-best per task, the validation-chosen ensemble, the report model, published references."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmark.evaluation.verdict import ENSEMBLE, ensemble_members, make_ensemble, verdicts
from benchmark.records import HeadResult
from benchmark.references import KERMANY_TEST_COUNTS, REFERENCES, references_for
from benchmark.reporting.document import Report, Section, bullets, figure, fmt, paragraph, render_markdown, table
from benchmark.settings import HeadSettings

CLASSES = ("normal", "bacterial", "viral")


def _probabilities(labels: np.ndarray, skill: float, rng: np.random.Generator) -> np.ndarray:
    """Class probabilities that put ``skill`` of their mass on the true class, the rest at random."""
    noise = rng.dirichlet(np.ones(3), size=len(labels))
    truth = np.eye(3)[labels]
    return (skill * truth + (1 - skill) * noise).astype(np.float32)


def _head(name: str, val: np.ndarray, test: np.ndarray, val_loss: float, seed: int = 0) -> HeadResult:
    return HeadResult(backbone=name, image_size=32, settings=HeadSettings(seed=seed), weights="none",
                      head_id=f"{name}-{seed}", best_epoch=1, epochs_run=2, best_val_loss=val_loss, history={},
                      probabilities={"val": val, "test": test})  # fmt: skip


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    return rng.integers(0, 3, 240), rng.integers(0, 3, 300)


def test_identical_heads_are_tied_and_a_clearly_better_one_is_not(labels):
    val_labels, test_labels = labels
    rng = np.random.default_rng(1)
    good_val, good_test = _probabilities(val_labels, 0.6, rng), _probabilities(test_labels, 0.6, rng)
    chance_val, chance_test = _probabilities(val_labels, 0.0, rng), _probabilities(test_labels, 0.0, rng)
    heads = [_head("A", good_val, good_test, 0.5), _head("A-copy", good_val, good_test, 0.5),
             _head("chance", chance_val, chance_test, 1.1)]  # fmt: skip
    found = verdicts(heads, test_labels, val_labels, CLASSES, False, 0.9)
    assert set(found) == {"normal_vs_pneumonia", "bacterial_vs_rest", "viral_vs_rest"}
    for verdict in found.values():
        assert set(verdict.tied) == {"A", "A-copy"}
        assert verdict.n_pairs == 3 and verdict.n_different == 2
        copy = next(p for p in verdict.pairs if {p.a, p.b} == {"A", "A-copy"})
        assert copy.auc.difference == 0 and copy.p_holm == 1.0


def test_only_first_seeds_are_compared(labels):
    val_labels, test_labels = labels
    rng = np.random.default_rng(2)
    first = _head("A", _probabilities(val_labels, 0.5, rng), _probabilities(test_labels, 0.5, rng), 0.6, seed=0)
    second = _head("A", _probabilities(val_labels, 0.0, rng), _probabilities(test_labels, 0.0, rng), 0.6, seed=1)
    other = _head("B", first.probabilities["val"], first.probabilities["test"], 0.6)
    verdict = verdicts([second, first, other], test_labels, val_labels, CLASSES, False, 0.9)["viral_vs_rest"]
    # Seed 0 of A equals B: a tie with difference 0; seed 1 (chance) would have been told apart.
    assert verdict.n_pairs == 1 and verdict.pairs[0].auc.difference == 0


def test_ensemble_members_are_chosen_on_validation_only(labels):
    val_labels, test_labels = labels
    rng = np.random.default_rng(3)
    best = _head("best", _probabilities(val_labels, 0.5, rng), _probabilities(test_labels, 0.5, rng), 0.55)
    near = _head("near", _probabilities(val_labels, 0.48, rng), _probabilities(test_labels, 0.48, rng), 0.56)
    poor = _head("poor", _probabilities(val_labels, 0.0, rng), _probabilities(test_labels, 0.9, rng), 1.2)
    winner, members = ensemble_members([poor, near, best], val_labels, CLASSES, False, "val_loss")
    assert winner == "best" and members == ["best", "near"]  # "poor" is perfect on test: test chose nothing
    swapped = [_head(h.backbone, h.probabilities["val"], h.probabilities["test"][::-1], h.best_val_loss)
               for h in (poor, near, best)]  # fmt: skip
    assert ensemble_members(swapped, val_labels, CLASSES, False, "val_loss") == (winner, members)
    by_auc = ensemble_members([poor, near, best], val_labels, CLASSES, False, "viral_vs_rest.auc")
    assert by_auc[1][0] in ("best", "near")


def test_the_ensemble_averages_its_members_and_is_compared_like_any_head(labels):
    val_labels, test_labels = labels
    rng = np.random.default_rng(4)
    heads = [_head(n, _probabilities(val_labels, s, rng), _probabilities(test_labels, s, rng), 1 - s)
             for n, s in (("a", 0.5), ("b", 0.45))]  # fmt: skip
    ensemble = make_ensemble(heads, ["a", "b"], val_labels, False)
    expected = (heads[0].probabilities["test"] + heads[1].probabilities["test"]) / 2
    np.testing.assert_allclose(ensemble.probabilities["test"], expected, rtol=1e-6)
    assert ensemble.backbone == ENSEMBLE and ensemble.settings.kind == ENSEMBLE
    chosen = ensemble.probabilities["val"][np.arange(len(val_labels)), val_labels]
    assert ensemble.best_val_loss == pytest.approx(-np.mean(np.log(chosen)), rel=1e-5)
    verdict = verdicts([*heads, ensemble], test_labels, val_labels, CLASSES, False, 0.9)["normal_vs_pneumonia"]
    assert verdict.n_pairs == 3 and ENSEMBLE in {name for pair in verdict.pairs for name in (pair.a, pair.b)}


def test_report_round_trips_through_json_and_renders_every_block():
    report = Report("title", ["**loud** banner"], [paragraph("made by `x`")],
                    [Section("One", [paragraph("text"), bullets(["a", "b"]), table(["h1", "h2"], [[1, 0.5]]),
                                     figure("Plot", "plots/p.png")], key="one"),
                     Section("Sub", [paragraph("more")], 3, "one/sub")],
                    {"numbers": [1.5]})  # fmt: skip
    again = Report.from_json(json.loads(json.dumps(report.to_json())))
    assert render_markdown(again) == render_markdown(report)
    markdown = render_markdown(report)
    for expected in ("# title", "> **loud** banner", "## One", "- a", "| h1 ", "![Plot](plots/p.png)", "### Sub"):
        assert expected in markdown
    assert [one.key for one in again.section("one")] == ["one", "one/sub"]
    with pytest.raises(ValueError, match="format"):
        Report.from_json({**report.to_json(), "version": 99})
    assert fmt(float("nan")) == "n/a" and fmt(np.int64(3)) == "3" and fmt(np.float32(0.5)) == "0.500"


def test_references_apply_only_to_kermany_test_set():
    assert references_for(KERMANY_TEST_COUNTS) == REFERENCES
    assert references_for({**KERMANY_TEST_COUNTS, "viral": 147}) == ()
    kermany = next(ref for ref in REFERENCES if ref.source == "Kermany 2018")
    assert (kermany.auc, kermany.sensitivity, kermany.selection) == (0.968, 0.932, "test")
    assert {ref.selection for ref in REFERENCES} <= {"test", "validation AUC", "validation loss"}


def test_a_run_writes_the_verdict_and_renders_markdown_from_report_json(probe_run):
    results = probe_run.results
    report = Report.from_json(json.loads((results / "report.json").read_text(encoding="utf-8")))
    assert (results / "leaderboard.md").read_text(encoding="utf-8") == render_markdown(report)
    comparisons = pd.read_csv(results / "comparisons.csv")
    board = pd.read_csv(results / "leaderboard.csv")
    models = board["backbone"].nunique()
    assert len(comparisons) == 3 * models * (models - 1) // 2
    assert comparisons.to_dict("records") == pd.DataFrame(report.data["comparisons"]).to_dict("records")
    for verdict in report.data["verdict"].values():
        assert verdict["best"] in verdict["tied"] and set(verdict["tied"]) <= set(board["backbone"])
        assert verdict["sentence"] in (results / "leaderboard.md").read_text(encoding="utf-8")
    assert "vs best" in report.section("tasks")[1].blocks[0].headers
    assert report.data["references"]["rows"] == []  # a 6-image test split is not Kermany's


def test_when_the_ensemble_is_best_the_single_heads_get_their_own_tie():
    from benchmark.evaluation.comparisons import compare_task
    from benchmark.reporting.verdict_report import sentence, single_head_tie

    rng = np.random.default_rng(5)
    truth = rng.random(400) < 0.5
    good = truth + rng.normal(0, 0.6, 400)
    also = truth + rng.normal(0, 0.6, 400)
    chance = rng.normal(0, 1, 400)
    scores = {"good": good, "also": also, "chance": chance, ENSEMBLE: (good + also) / 2}
    decisions = {name: score > 0.5 for name, score in scores.items()}
    verdict = compare_task("t", truth, scores, decisions)
    assert verdict.best == ENSEMBLE
    best, tied = single_head_tie(verdict)
    assert best in ("good", "also") and set(tied) == {"good", "also"}
    assert "Among single heads, 2 of 3 are indistinguishable from the best one" in sentence(verdict)


def test_a_damaged_report_json_is_named_in_one_error(tmp_path):
    from benchmark.serve.results import read_report

    path = tmp_path / "report.json"
    for damaged in ('{"version": 1, "title": ', '{"version": 7}', "[]"):
        path.write_text(damaged, encoding="utf-8")
        with pytest.raises(ValueError, match="report.json is damaged or not a cxr-bench report"):
            read_report(path)
