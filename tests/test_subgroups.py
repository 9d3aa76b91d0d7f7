"""Who a model works for: metrics per subgroup (sex, view, age bins, a kept column), the largest gap, ``--views``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DRAWN, run_small_benchmark, write_image
from sklearn.metrics import confusion_matrix, roc_auc_score
from test_labels import write_csv

from benchmark.config import RunConfig
from benchmark.evaluation.subgroups import (
    MIN_CASES,
    NOT_RECORDED,
    largest_gap,
    parse_subgroup,
    parse_subgroups,
    score_subgroup,
    score_subgroups,
    subgroups_problem,
)
from benchmark.evaluation.verify import verify
from benchmark.records import HeadResult
from benchmark.reporting.report import subgroup_rows
from benchmark.run_folder import SUBFOLDERS, RunInfo
from benchmark.serve import create_app, state
from benchmark.settings import HeadSettings, ReportSettings
from common.files import write_checksums
from features.data.dataset import Dataset, ImageRecord
from features.data.records import Label
from features.data.views import NO_VIEW, OTHER_VIEW, keep_views, views_problem

# Eight cases, four positive: AUC, and the confusion matrix at 0.5, are worked out by scikit-learn below.
TRUTH = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
SCORE = np.array([0.9, 0.7, 0.4, 0.6, 0.3, 0.55, 0.2, 0.1])


def test_a_subgroup_is_scored_at_the_given_threshold_as_scikit_learn_scores_it():
    one = score_subgroup("F", TRUTH, SCORE, 0.5, resamples=200, seed=0, minimum=4)
    tn, fp, fn, tp = confusion_matrix(TRUTH, SCORE >= 0.5).ravel()
    assert (one.n, one.positives, one.negatives, one.too_small) == (8, 4, 4, "")
    assert one.auc == pytest.approx(roc_auc_score(TRUTH, SCORE))
    assert one.sensitivity == pytest.approx(tp / (tp + fn)) and one.specificity == pytest.approx(tn / (tn + fp))
    for metric in ("auc", "sensitivity", "specificity"):
        low, high = getattr(one, f"{metric}_ci_low"), getattr(one, f"{metric}_ci_high")
        assert low <= getattr(one, metric) <= high
    # The threshold is the one given (the validation's), not one fitted here: a higher one lowers sensitivity.
    assert score_subgroup("F", TRUTH, SCORE, 0.65, resamples=0, seed=0, minimum=4).sensitivity == 0.5


def test_a_subgroup_too_small_is_listed_saying_what_it_lacks():
    no_positive = score_subgroup("AP", TRUTH[4:], SCORE[4:], 0.5, resamples=0, seed=0)
    assert (no_positive.n, no_positive.positives) == (4, 0)
    assert math.isnan(no_positive.auc) and math.isnan(no_positive.sensitivity)
    assert no_positive.too_small == (f"0 positives and 4 negatives (fewer than {MIN_CASES}): no AUC, no "
                                     "sensitivity, no specificity")  # fmt: skip
    few_negatives = score_subgroup("PA", TRUTH, SCORE, 0.5, resamples=0, seed=0, minimum=2)
    assert few_negatives.too_small == "" and not math.isnan(few_negatives.auc)
    one_negative = score_subgroup("PA", TRUTH[:5], SCORE[:5], 0.5, resamples=0, seed=0, minimum=2)
    assert one_negative.too_small == "1 negative (fewer than 2): no AUC, no specificity"
    assert one_negative.sensitivity == 0.75 and math.isnan(one_negative.specificity)
    assert score_subgroup("x", TRUTH[:0], SCORE[:0], 0.5, resamples=0, seed=0).too_small == "no image"


def test_unrecorded_images_form_their_own_row_left_out_of_the_gap():
    values = ["M", "M", "F", "F", "M", "F", "", ""]
    scores = score_subgroups(parse_subgroup("sex"), values, TRUTH, SCORE, 0.5, resamples=0, seed=0, minimum=1)
    assert [one.subgroup for one in scores] == ["F", "M", NOT_RECORDED]
    assert [one.n for one in scores] == [3, 3, 2]
    by_name = {one.subgroup: one for one in scores}
    for name, keep in (("M", [0, 1, 4]), ("F", [2, 3, 5])):
        assert by_name[name].auc == pytest.approx(roc_auc_score(TRUTH[keep], SCORE[keep]))
    gap = largest_gap(scores, "auc")
    aucs = {name: one.auc for name, one in by_name.items() if name != NOT_RECORDED}
    assert (gap.low, gap.high) == (min(aucs, key=aucs.get), max(aucs, key=aucs.get))
    assert gap.gap == pytest.approx(max(aucs.values()) - min(aucs.values()))
    # The not-recorded row scores better than both, yet is never one end of the gap.
    assert by_name[NOT_RECORDED].n == 2 and NOT_RECORDED not in (gap.low, gap.high)


def test_a_gap_needs_two_scored_subgroups():
    scores = score_subgroups(parse_subgroup("view"), ["PA"] * 4 + ["AP"] * 4, TRUTH, SCORE, 0.5, resamples=0, seed=0,
                             minimum=1)  # fmt: skip
    assert {one.subgroup: one.too_small != "" for one in scores} == {"AP": True, "PA": True}  # one class each
    assert largest_gap(scores, "auc") is None
    assert largest_gap(scores, "sensitivity") is None  # only PA has positives


@pytest.mark.parametrize(("text", "ages", "groups"), [
    ("age:0,18,40,65", ["0", "17", "18", "39", "40", "64", "65", "101", ""],
     ["0–17", "0–17", "18–39", "18–39", "40–64", "40–64", "65+", "65+", NOT_RECORDED]),
    ("age:18,65", ["3", "17", "18", "64", "65"], ["under 18", "under 18", "18–64", "18–64", "65+"]),
    ("age:0,1,2", ["0", "1", "2"], ["0", "1", "2+"]),
])  # fmt: skip
def test_age_bins_include_their_lower_edge_and_end_before_the_next(text: str, ages: list[str], groups: list[str]):
    spec = parse_subgroup(text)
    assert [spec.subgroup_of(age) for age in ages] == groups
    assert spec.text == text


def test_every_age_bin_is_listed_even_an_empty_one():
    scores = score_subgroups(parse_subgroup("age:0,18,65"), ["20"] * 8, TRUTH, SCORE, 0.5, resamples=0, seed=0)
    assert [(one.subgroup, one.n, one.too_small) for one in scores] == [
        ("0–17", 0, "no image"), ("18–64", 8, scores[1].too_small), ("65+", 0, "no image")]


@pytest.mark.parametrize(("values", "message"), [
    (["age:0,x"], "age bins are whole years separated by commas"),
    (["age:0,40,18"], "the bin edges must increase"),
    (["age:18,18"], "the bin edges must increase"),
    (["age"], "needs its bins"),
    (["sex:0,1"], "only age is cut into bins"),
    (["sex", "view", "sex"], "names sex twice"),
])  # fmt: skip
def test_bad_subgroups_fail_in_one_line(values: list[str], message: str):
    with pytest.raises(ValueError, match=message) as error:
        parse_subgroups(values)
    assert "\n" not in str(error.value)


def test_an_attribute_no_image_records_names_the_option_that_gives_it():
    recorded = [(("sex", "F"),), (("sex", "M"), ("view", "PA"))]
    assert subgroups_problem(parse_subgroups(["sex", "view"]), recorded) is None
    assert "--age-column NAME, or read DICOM files" in subgroups_problem(parse_subgroups(["age:0,18"]), recorded)
    assert "labels CSV's column of that name" in subgroups_problem(parse_subgroups(["Site"]), recorded)


def test_subgroup_options_are_validated_and_kept_columns_are_read(tmp_path: Path):
    labels = write_csv(tmp_path / "labels.csv", ["path", "label"], [])
    config = RunConfig(data=str(tmp_path), labels=str(labels), subgroups=("sex", "age:0,18,65", "Site"))
    assert config.label_settings().attribute_columns == ("Site",)
    assert config.external_settings() is None and config.stages().report.subgroups == config.subgroups
    with pytest.raises(ValueError, match="must increase"):
        RunConfig(data=str(tmp_path), subgroups=("age:40,18",), backbones=("MobileNetV2",)).validate()
    phantom = RunConfig(subgroups=("sex",), backbones=("MobileNetV2",))
    if not Path("data/chest_xray").is_dir():
        with pytest.raises(ValueError, match="--subgroups needs --data DIR: the synthetic phantom set"):
            phantom.validate()
        with pytest.raises(ValueError, match="--views needs --data DIR"):
            RunConfig(views=("PA",), backbones=("MobileNetV2",)).validate()


def _dataset(views: list[str]) -> Dataset:
    records = [ImageRecord(f"{i}.png", Label.of_class("normal"), "train", attributes=(("view", v),) if v else ())
               for i, v in enumerate(views)]  # fmt: skip
    return Dataset(Path("."), "csv", ("normal",), records, notes=["labels: labels.csv"])


def test_views_keep_only_the_views_named_and_list_the_others_with_their_reason():
    dataset = _dataset(["PA", "AP", "LATERAL", "", "PA"])
    kept = keep_views(dataset, ("pa", "AP"))
    assert [record.path for record in kept.records] == ["0.png", "1.png", "4.png"]
    assert {skip.path: skip.kind for skip in kept.skipped} == {"2.png": OTHER_VIEW, "3.png": NO_VIEW}
    assert "view LATERAL" in next(skip.reason for skip in kept.skipped if skip.path == "2.png")
    assert kept.notes[-1].startswith("views: 3 of 5 images kept (--views PA AP)")
    assert keep_views(dataset, ()) is dataset
    assert views_problem(("PA",), dataset) is None
    assert "no image has a view recorded" in views_problem(("PA",), _dataset(["", ""]))


def test_multi_label_subgroups_score_each_finding_on_the_images_whose_value_is_known():
    findings = ("Edema", "Effusion")
    labels = [Label.of_findings(["Edema"]), Label.of_findings([], ["Edema"]), Label.of_findings(["Effusion"]),
              Label.of_findings()] * 3  # fmt: skip
    sexes = ["F", "M", "", "M"] * 3
    records = [ImageRecord(f"t{i}.png", label, "test", attributes=(("sex", sex),) if sex else ())
               for i, (label, sex) in enumerate(zip(labels, sexes, strict=True))]  # fmt: skip
    records += [ImageRecord(f"v{i}.png", label, "val") for i, label in enumerate(labels)]
    dataset = Dataset(Path("."), "csv", findings, records, multi_label=True)
    rng = np.random.default_rng(0)
    head = HeadResult("MobileNetV2", 32, HeadSettings(), "none", "h0", 1, 1, 0.5, {},
                      {"test": rng.random((12, 2)), "val": rng.random((12, 2))})  # fmt: skip
    rows, gaps = subgroup_rows([head], dataset, RunInfo(config={}), ReportSettings(bootstrap=0, subgroups=("sex",)))
    edema = {row["subgroup"]: row for row in rows if row["task"] == "edema"}
    # Edema is unknown on every second image (all the M ones of that pattern): they are not scored.
    assert {name: row["n"] for name, row in edema.items()} == {"F": 3, "M": 3, NOT_RECORDED: 3}
    assert edema["F"]["positives"] == 3 and edema["M"]["positives"] == 0
    effusion = {row["subgroup"]: row["n"] for row in rows if row["task"] == "effusion"}
    assert effusion == {"F": 3, "M": 6, NOT_RECORDED: 3}
    assert [(gap["task"], gap["gaps"]) for gap in gaps] == [("edema", {}), ("effusion", {})]  # too few to score


def _subgroup_set(root: Path) -> Path:
    """30 train and 30 test images per class (normal, pneumonia) with sex, age and view columns: a fifth LATERAL
    or without a view (left out by --views PA AP), two per class without a sex (not recorded, too few to score)."""
    rng = np.random.default_rng(0)
    rows = []
    for label in ("normal", "pneumonia"):
        for i in range(60):
            name = f"images/{label}_{i:03d}.png"
            write_image(root / name, "bacterial" if label == "pneumonia" else "normal", rng, size=36)
            view = {4: "LATERAL", 9: ""}.get(i % 10, "PA" if i % 2 else "AP")
            sex = "" if i % 11 == 7 else "FM"[i // 2 % 2]
            age = ("9", "30", "41", "70", "88")[i % 5]
            rows.append([name, label, f"p{label}{i}", "test" if i >= 30 else "train", sex, age, view])
    return write_csv(root / "labels.csv", ["path", "label", "patient", "split", "sex", "age", "view"], rows)


@pytest.mark.slow
def test_a_run_reports_subgroups_in_the_csv_the_leaderboard_and_the_report(tmp_path: Path):
    labels = _subgroup_set(tmp_path / "data")
    code = run_small_benchmark(
        tmp_path / "data", tmp_path, "--labels", str(labels), "--patient-column", "patient", "--split-column",
        "split", "--sex-column", "sex", "--age-column", "age", "--view-column", "view", "--subgroups", "sex", "view",
        "age:0,18,65", "--views", "PA", "AP", "--bootstrap", "100", preset=(*DRAWN, "--epochs", "2"))  # fmt: skip
    assert code == 0
    results = tmp_path / "results"
    skipped = pd.read_csv(results / "skipped.csv")
    assert skipped["reason"].str.contains("view LATERAL").sum() > 0 and (skipped["reason"] == NO_VIEW).sum() > 0
    table = pd.read_csv(results / "subgroups.csv")
    table["too_small"] = table["too_small"].fillna("")
    board = pd.read_csv(results / "leaderboard.csv")
    assert set(table["task"]) == set(board["task"]) and set(table["head_id"]) == set(board["head_id"])
    assert set(table["attribute"]) == {"sex", "view", "age"}
    assert {"config_subgroups", "git", "auc_ci_low", "sensitivity_ci_high", "too_small"} <= set(table.columns)
    assert set(table[table["attribute"] == "view"]["subgroup"]) == {"AP", "PA"}  # LATERAL left out by --views
    assert list(table[table["attribute"] == "age"]["subgroup"]) == ["0–17", "18–64", "65+"]
    sexes = table[table["attribute"] == "sex"].set_index("subgroup")
    assert list(sexes.index) == ["F", "M", NOT_RECORDED]
    # The subgroups add up to the test images the leaderboard scored, and use its validation-chosen threshold.
    for attribute, members in table.groupby("attribute"):
        assert members["n"].sum() == board["n_test"].iloc[0], attribute
    assert table["threshold"].iloc[0] == pytest.approx(board["op_threshold"].iloc[0])
    assert sexes.loc[NOT_RECORDED, "n"] == 4 and "fewer than" in sexes.loc[NOT_RECORDED, "too_small"]
    assert math.isnan(sexes.loc[NOT_RECORDED, "auc"])  # too few to score: no AUC
    assert not table[table["too_small"] == ""]["auc"].isna().any()
    report = json.loads((results / "report.json").read_text(encoding="utf-8"))
    assert len(report["data"]["subgroups"]["rows"]) == len(table)
    gaps = report["data"]["subgroups"]["gaps"]
    assert {gap["attribute"] for gap in gaps} == {"sex", "view", "age"}
    assert all("auc" in one["gaps"] and "sensitivity" in one["gaps"] for one in gaps)  # two scored subgroups each
    for one in gaps:
        members = table[table["attribute"] == one["attribute"]].set_index("subgroup")["auc"]
        gap = one["gaps"]["auc"]
        assert NOT_RECORDED not in (gap["low"], gap["high"])
        assert gap["gap"] == pytest.approx(members.drop(NOT_RECORDED, errors="ignore").max() -
                                           members.drop(NOT_RECORDED, errors="ignore").min())
        assert (members[gap["low"]], members[gap["high"]]) == (gap["low_value"], gap["high_value"])
    markdown = (results / "leaderboard.md").read_text(encoding="utf-8")
    assert "## Subgroups" in markdown and "**AUC gap " in markdown and "images kept (--views PA AP)" in markdown
    plot = "plots/subgroups_normal_vs_pneumonia.png"
    assert plot in markdown and (results / plot).is_file()
    app = create_app(results)
    try:
        html = app.test_client().get("/").get_data(as_text=True)
    finally:
        state(app).close()
    assert 'id="subgroups"' in html and "<strong>AUC gap " in html and "not recorded" in html
    # verify recomputes every subgroup's numbers from predictions.csv, and notices one changed.
    assert verify(results) == []
    table = pd.read_csv(results / "subgroups.csv", dtype=str, keep_default_na=False)
    table.loc[0, "positives"] = str(int(table.loc[0, "positives"]) + 1)
    table.to_csv(results / "subgroups.csv", index=False)
    write_checksums(results, SUBFOLDERS)
    assert any("positives: subgroups.csv" in problem for problem in verify(results))
