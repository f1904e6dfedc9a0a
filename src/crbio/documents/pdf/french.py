"""French wording and formats of the printed report: dates, telephone numbers, labels, flags.

Dates and times are printed as the laboratory recorded them, in their own UTC offset.
A no-break space (U+00A0) precedes the colon, as French typography requires.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

from crbio.model import Code, Patient, Sex, Telecom

__all__ = [
    "ABNORMAL",
    "COLON",
    "age_text",
    "born_word",
    "interpretation_flag",
    "is_abnormal",
    "phone",
    "sex_label",
    "telecom_text",
]

#: A label and its colon: « Sexe : ».
COLON: Final = "\u00a0:"

#: Interpretations that mark a result as abnormal: printed in bold with a flag.
ABNORMAL: Final = frozenset(
    {
        "A",
        "AA",
        "H",
        "HH",
        "HU",
        "HX",
        "L",
        "LL",
        "LU",
        "LX",
        "EX",
        "POS",
        "DET",
        "RR",
        "WR",
        "R",
        "NS",
        "SYN-R",
        "UNE",
    }
)
# Interpretations that need no mark next to the result.
_NORMAL: Final = frozenset({"N", "NEG", "ND", "NR", "S", "EXP"})
_FLAGS: Final = {
    "H": "↑\u00a0H",
    "HU": "↑\u00a0HU",
    "HX": "↑\u00a0HX",
    "HH": "↑↑\u00a0HH",
    "L": "↓\u00a0L",
    "LU": "↓\u00a0LU",
    "LX": "↓\u00a0LX",
    "LL": "↓↓\u00a0LL",
    "A": "*\u00a0A",
    "AA": "**\u00a0AA",
}
_SEX: Final = {Sex.FEMALE: "Féminin", Sex.MALE: "Masculin", Sex.UNKNOWN: "Non renseigné"}
_BORN: Final = {Sex.FEMALE: "née", Sex.MALE: "né", Sex.UNKNOWN: "né(e)"}
_TELECOM_USE: Final = {
    "H": "domicile",
    "HP": "domicile",
    "HV": "vacances",
    "WP": "travail",
    "MC": "mobile",
    "PG": "bip",
    "EC": "urgence",
    "AS": "répondeur",
    "TMP": "temporaire",
}


def sex_label(sex: Sex) -> str:
    """``Féminin``, ``Masculin`` or ``Non renseigné``."""
    return _SEX[sex]


def born_word(sex: Sex) -> str:
    """« née », « né » or « né(e) », agreeing with the patient's sex."""
    return _BORN[sex]


def age_text(patient: Patient, when: datetime) -> str | None:
    """The patient's age at a time (« 44 ans », « 1 an », « 7 mois »), or None if unknown."""
    born = patient.birth_date
    if born is None:
        return None
    years = patient.age_at(when)
    if years is None or years < 0:
        return None
    if years >= 1:
        return f"{years}\u00a0an{'s' if years > 1 else ''}"
    day = when.date()
    months = (day.year - born.year) * 12 + day.month - born.month - (day.day < born.day)
    return f"{max(months, 0)}\u00a0mois"


def phone(number: str) -> str:
    """A French number in pairs (``+33174589607`` → ``01 74 58 96 07``); others unchanged."""
    digits = number.replace(" ", "").replace(".", "").replace("-", "")
    if re.fullmatch(r"\+33[1-9][0-9]{8}", digits):
        digits = "0" + digits[3:]
    if re.fullmatch(r"0[1-9][0-9]{8}", digits):
        return "\u00a0".join(digits[i : i + 2] for i in range(0, 10, 2))
    return number


def telecom_text(telecom: Telecom) -> str:
    """A telecom address as printed: « Tél. (mobile) : 06 47 15 10 10 », « Messagerie : … »."""
    use = _TELECOM_USE.get(telecom.use or "")
    suffix = f" ({use})" if use else ""
    scheme = telecom.scheme.lower()
    if scheme == "tel":
        return f"Tél.{suffix}{COLON} {phone(telecom.address)}"
    if scheme == "fax":
        return f"Fax{suffix}{COLON} {phone(telecom.address)}"
    if scheme == "mailto":
        return f"Messagerie{suffix}{COLON} {telecom.address}"
    return telecom.uri


def interpretation_flag(interpretation: Code | None) -> str | None:
    """The mark printed next to a result (``↑ H``, ``↓↓ LL``, ``POS``), None for a normal one."""
    if interpretation is None or interpretation.code in _NORMAL:
        return None
    return _FLAGS.get(interpretation.code, interpretation.code)


def is_abnormal(interpretation: Code | None) -> bool:
    """Whether the interpretation marks the result as abnormal."""
    return interpretation is not None and interpretation.code in ABNORMAL
