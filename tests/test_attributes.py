"""Who an image is of and how it was taken: sex, age and view read in one form from every spelling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from test_labels import write_csv

from features.data.attributes import normalise_age, normalise_sex, normalise_view
from features.data.labels import LabelsError, read_labels
from features.settings import LabelSettings


@pytest.mark.parametrize(("raw", "sex"), [("M", "M"), ("Male", "M"), (" female ", "F"), ("O", "O"), ("", ""),
                                          ("Unknown", "")])  # fmt: skip
def test_sex_is_read_in_one_form(raw: str, sex: str):
    assert normalise_sex(raw) == sex


@pytest.mark.parametrize(("raw", "age"), [("45", "45"), ("045Y", "45"), ("006M", "0"), ("018M", "1"), ("052W", "0"),
                                          ("61.9", "61"), ("", ""), ("-3", ""), ("412", ""), ("nan", ""), ("old", "")])
def test_age_is_whole_years_from_numbers_and_dicom_age_strings(raw: str, age: str):
    assert normalise_age(raw) == age


@pytest.mark.parametrize(("raw", "view"), [("PA", "PA"), ("ap", "AP"), ("POSTERO_ANTERIOR", "PA"),
                                           ("AP_supine", "AP"), ("Lateral", "LATERAL"), ("LL", "LL")])  # fmt: skip
def test_view_is_upper_case_with_long_spellings_folded(raw: str, view: str):
    assert normalise_view(raw) == view


def test_csv_columns_become_record_attributes_and_a_missing_column_names_its_option(tmp_path: Path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image(tmp_path / name, "normal", rng)
    labels = write_csv(tmp_path / "labels.csv", ["path", "label", "Patient Gender", "Patient Age", "View", "Site"],
                       [["a.png", "normal", "M", "045Y", "pa", "north"], ["b.png", "viral", "Female", "", "AP", ""]])
    settings = LabelSettings(labels=str(labels), sex_column="Patient Gender", age_column="Patient Age",
                             view_column="View", attribute_columns=("Site",))  # fmt: skip
    records = {record.path: record for record in read_labels(tmp_path, settings).records}
    assert dict(records["a.png"].attributes) == {"sex": "M", "age": "45", "view": "PA", "Site": "north"}
    assert records["b.png"].attribute("age") == "" and records["b.png"].attribute("sex") == "F"
    assert records["b.png"].attribute("Site") == ""
    with pytest.raises(LabelsError, match="'Gender' \\(--sex-column\\)"):
        read_labels(tmp_path, LabelSettings(labels=str(labels), sex_column="Gender"))
