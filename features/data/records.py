"""What the data holds about an image, typed: its label (``Label``), or why it was left out (``Skip``).

A leaf (it imports nothing of ours), so every layer holds and reads these values instead of re-parsing strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# A label's text, as predictions.csv, leakage.csv, the counts and the cache keys have always written it: a
# multi-label record's findings joined by FINDING_SEPARATOR, a finding whose value is unknown (CheXpert's uncertain
# -1 under --uncertain ignore) marked with UNKNOWN_MARK, NO_FINDING for none; a class group joined by GROUP_JOIN.
NO_FINDING = "No Finding"
FINDING_SEPARATOR = "|"
UNKNOWN_MARK = "?"
GROUP_JOIN = "+"


def unwritable_finding(name: str) -> bool:
    """Whether a finding's name cannot be told apart in a label's text: it ends in ``?`` or holds ``|``."""
    return name.endswith(UNKNOWN_MARK) or FINDING_SEPARATOR in name


@dataclass(frozen=True)
class Label:
    """What one image is labelled.

    One class per image: ``classes`` holds the class, or a class group (an external class mapped onto several
    training classes, ``PNEUMONIA=bacterial+viral``): the image is one of them, not known which.
    Multi-label (``classes`` empty): the ``findings`` shown and those whose value is ``unknown``; neither is
    No Finding. ``str()`` gives the text form (``bacterial+viral``, ``Effusion|Edema?``), ``parse`` reads it back.
    """

    classes: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    @classmethod
    def of_class(cls, name: str) -> Label:
        """One class."""
        return cls(classes=(name,))

    @classmethod
    def of_group(cls, names: tuple[str, ...]) -> Label:
        """A class group, in the order given (the training classes' order); one name is one class."""
        return cls(classes=tuple(names))

    @classmethod
    def of_findings(cls, present: Iterable[str] = (), unknown: Iterable[str] = ()) -> Label:
        """Multi-label: the findings shown and those whose value is unknown; none of either is No Finding."""
        # Unknown findings are ordered as their marked text (``Edema?``) always was, so the text does not move.
        return cls(findings=tuple(sorted(present)), unknown=tuple(sorted(unknown, key=lambda n: n + UNKNOWN_MARK)))

    @classmethod
    def parse(cls, text: str, multi_label: bool) -> Label:
        """The label whose text is ``text`` (what ``str()`` writes): findings when ``multi_label``, else a class
        or a class group."""
        if not multi_label:
            return cls.of_group(tuple(text.split(GROUP_JOIN)))
        if text == NO_FINDING:
            return cls.of_findings()
        tokens = text.split(FINDING_SEPARATOR)
        return cls.of_findings([t for t in tokens if not t.endswith(UNKNOWN_MARK)],
                               [t[: -len(UNKNOWN_MARK)] for t in tokens if t.endswith(UNKNOWN_MARK)])  # fmt: skip

    @property
    def multi_label(self) -> bool:
        """Whether this is a multi-label record's label (findings), not a class or a class group."""
        return not self.classes

    @property
    def is_group(self) -> bool:
        """Whether this is a class group: one of several classes, not known which."""
        return len(self.classes) > 1

    @property
    def is_no_finding(self) -> bool:
        """Multi-label: whether no finding is shown and none is unknown."""
        return self.multi_label and not self.findings and not self.unknown

    @property
    def text(self) -> str:
        """The label as every output file writes it: ``normal``, ``bacterial+viral``, ``Effusion|Edema?``,
        ``No Finding``."""
        if self.classes:
            return GROUP_JOIN.join(self.classes)
        return FINDING_SEPARATOR.join(self.findings + tuple(n + UNKNOWN_MARK for n in self.unknown)) or NO_FINDING

    @property
    def counted_as(self) -> tuple[str, ...]:
        """The names an image is counted under: its findings shown, else its class (a group under its own text)."""
        return self.findings if self.multi_label else (self.text,)

    def targets(self, findings: tuple[str, ...]) -> list[float]:
        """Multi-label: one target per finding of ``findings``: 1.0 shown, 0.0 not shown, NaN unknown."""
        return [1.0 if name in self.findings else math.nan if name in self.unknown else 0.0 for name in findings]

    def __str__(self) -> str:
        return self.text

    def __lt__(self, other: Label) -> bool:
        # Labels sort as their text always did: the seeded subset draws one class after another in this order.
        return self.text < other.text


@dataclass(frozen=True)
class Skip:
    """A file (or a labels-CSV row) left out, and why.

    ``kind`` is why, in the words every file left out that way shares: what a summary counts once. ``detail``,
    where given, is the whole reason when it names more than the kind (the CSV lines of this row and of others);
    ``line`` is the labels-CSV line that named the file. ``reason`` (and ``str()``) is what skipped.csv writes.
    """

    path: str
    kind: str
    detail: str = ""
    line: int | None = None

    @classmethod
    def of_row(cls, path: str, kind: str, line: int) -> Skip:
        """A labels-CSV row left out for ``kind``: its reason names the line, ``unknown label 'x' (line 7)``."""
        return cls(path, kind, f"{kind} (line {line})", line)

    @property
    def reason(self) -> str:
        """The one-line reason skipped.csv and external_skipped.csv write beside the path."""
        return self.detail or self.kind

    def __str__(self) -> str:
        return self.reason
