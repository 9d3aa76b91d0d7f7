"""Who an image is of and how it was taken: the attributes subgroups are read from (sex, age, view).

A leaf (it imports nothing of ours). The labels CSV (its ``--sex-column``, ``--age-column``, ``--view-column``, or a
dataset preset's), and a DICOM file's header, give these values in many spellings; each is written here in one form,
so a subgroup of NIH's ``M`` and CheXpert's ``Male`` is the same subgroup.
"""

from __future__ import annotations

import math
import re

# The attributes every source names the same way; any other column a run asks for (``--subgroups COLUMN``) is kept
# under its own name, as written.
SEX, AGE, VIEW = "sex", "age", "view"
STANDARD_ATTRIBUTES = (SEX, AGE, VIEW)

_SEXES = {"m": "M", "male": "M", "f": "F", "female": "F", "o": "O", "other": "O"}
# DICOM's Age String: 3 digits and a unit (045Y, 006M, 012W, 003D).
_DICOM_AGE = re.compile(r"^(\d{1,3})([DWMY])$", re.IGNORECASE)
_DAYS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
_VIEWS = {"POSTERO_ANTERIOR": "PA", "ANTERO_POSTERIOR": "AP", "LATERAL": "LATERAL", "LAT": "LATERAL", "LL": "LL",
          "RL": "RL", "AP_SUPINE": "AP", "AP AXIAL": "AP", "AP LLD": "AP", "AP RLD": "AP", "PA LLD": "PA",
          "PA RLD": "PA"}  # fmt: skip


def normalise_sex(value: str) -> str:
    """``M``, ``F`` or ``O`` from the spellings the public sets use (``M``, ``Male``, ``female``); else ``""``."""
    return _SEXES.get(value.strip().lower(), "")


def normalise_age(value: str) -> str:
    """Age in whole years as text (``"45"``), from a number of years or DICOM's ``045Y`` / ``006M`` / ``012W``; ``""``
    where it is not an age (blank, negative, over 130)."""
    text = value.strip()
    match = _DICOM_AGE.match(text)
    try:
        years = int(match.group(1)) * _DAYS[match.group(2).upper()] / 365.25 if match else float(text)
    except ValueError:
        return ""
    if not math.isfinite(years) or not 0 <= years <= 130:
        return ""
    return str(int(years))


def normalise_view(value: str) -> str:
    """``PA``, ``AP``, ``LATERAL``, ``LL`` ... upper-case, with the long DICOM and PadChest spellings folded."""
    text = value.strip().upper().replace("-", "_")
    return _VIEWS.get(text, text)


NORMALISERS = {SEX: normalise_sex, AGE: normalise_age, VIEW: normalise_view}


def normalise(name: str, value: str) -> str:
    """``value`` of attribute ``name`` in its one form (a standard attribute), or stripped (any other column)."""
    return NORMALISERS.get(name, str.strip)(value)
