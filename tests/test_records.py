"""The data's typed values: a record's label (every form, its text and back) and a file left out."""

from __future__ import annotations

import math

import pytest

from features.data.records import NO_FINDING, Label, Skip, unwritable_finding

# Every form a label takes, with the text every output file has always written for it.
FORMS = [
    (Label.of_class("normal"), "normal", False),
    (Label.of_group(("bacterial", "viral")), "bacterial+viral", False),
    (Label.of_findings(), NO_FINDING, True),
    (Label.of_findings(["Pneumonia", "Effusion"]), "Effusion|Pneumonia", True),
    (Label.of_findings(["Effusion"], ["Edema", "Atelectasis"]), "Effusion|Atelectasis?|Edema?", True),
    (Label.of_findings([], ["Edema"]), "Edema?", True),
]


@pytest.mark.parametrize(("label", "text", "multi_label"), FORMS, ids=[text for _, text, _ in FORMS])
def test_every_form_writes_its_text_and_reads_back(label: Label, text: str, multi_label: bool):
    assert str(label) == label.text == text
    assert Label.parse(text, multi_label) == label
    assert label.multi_label is multi_label


def test_unknown_findings_keep_the_order_their_marked_text_always_had():
    # "A ?" sorts before "A?" (a space is below "?"), though "A" sorts before "A ".
    assert Label.of_findings([], ["A", "A "]).text == "|".join(sorted(["A?", "A ?"]))


def test_targets_say_shown_absent_and_unknown():
    label = Label.parse("Effusion|Edema?", multi_label=True)
    shown, unknown, absent = label.targets(("Effusion", "Edema", "Pneumonia"))
    assert (shown, absent) == (1.0, 0.0) and math.isnan(unknown)
    assert Label.of_findings().targets(("Effusion",)) == [0.0]


def test_groups_and_what_each_label_is_counted_under():
    group = Label.parse("bacterial+viral", multi_label=False)
    assert group.is_group and group.classes == ("bacterial", "viral") and group.counted_as == ("bacterial+viral",)
    assert not Label.of_class("normal").is_group and Label.of_class("normal").counted_as == ("normal",)
    findings = Label.of_findings(["Effusion"], ["Edema"])
    assert not findings.is_group and findings.counted_as == ("Effusion",) and not findings.is_no_finding
    assert Label.parse(NO_FINDING, multi_label=True).is_no_finding
    # One class per image: "No Finding" is a class like any other, and a "+" in a multi-label finding is no group.
    assert not Label.of_class(NO_FINDING).is_no_finding and not Label.of_findings(["a+b"]).is_group


def test_labels_sort_as_their_text():
    labels = [Label.of_findings(["b"]), Label.of_findings(), Label.of_findings(["a"], ["c"])]
    assert [label.text for label in sorted(labels)] == sorted(label.text for label in labels)


def test_finding_names_the_text_cannot_tell_apart():
    assert unwritable_finding("Edema?") and unwritable_finding("a|b") and not unwritable_finding("Edema")


def test_a_skip_writes_its_reason_and_keeps_its_kind_and_line_apart():
    plain = Skip("a.png", "too small: 20x20 px")
    assert str(plain) == plain.reason == plain.kind and plain.line is None
    row = Skip.of_row("b.png", "unknown label 'x'", 7)
    assert (row.kind, row.line, str(row)) == ("unknown label 'x'", 7, "unknown label 'x' (line 7)")
    assert row.kind == Skip.of_row("c.png", "unknown label 'x'", 12).kind
