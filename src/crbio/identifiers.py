"""National identifiers: INS matricule and its OIDs, RPPS, FINESS, OIDs.

Each ``check_*`` function returns None when the value is valid, or a short reason
(never quoting the value) when it is not, so callers can attach it to a field.
"""

from __future__ import annotations

import re
from typing import Final

from stdnum import luhn

__all__ = [
    "FINESS_OID",
    "INS_OIDS",
    "NATIONAL_PS_OID",
    "check_finess",
    "check_ins_matricule",
    "check_oid",
    "check_rpps",
    "finess_identifier",
    "ins_key",
    "rpps_identifier",
]

#: Assigning authorities of the INS matricule, with the label the ANS viewers print.
INS_OIDS: Final = {
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR de test",
    "1.2.250.1.213.1.4.11": "INS-NIR de démonstration",
}

#: OID of the national health-professional identifiers (RPPS prefixed with 8).
NATIONAL_PS_OID: Final = "1.2.250.1.71.4.2.1"
#: OID of the national structure identifiers (FINESS prefixed with 1).
FINESS_OID: Final = "1.2.250.1.71.4.2.2"

_MATRICULE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}")
_OID = re.compile(r"(?:0|1|2)(?:\.(?:0|[1-9][0-9]*))+")
_FINESS = re.compile(r"(?:[0-9]{2}|2A|2B)[0-9]{7}")


def ins_key(first13: str) -> int:
    """The two-digit key of an INS matricule: 97 − (number mod 97), with 2A→19 and 2B→18."""
    body = first13.upper()
    if body[5:7] == "2A":
        body = body[:5] + "19" + body[7:]
    elif body[5:7] == "2B":
        body = body[:5] + "18" + body[7:]
    return 97 - int(body) % 97


def check_ins_matricule(matricule: str) -> str | None:
    """Check an INS matricule's 15-character layout and its key."""
    if not _MATRICULE.fullmatch(matricule):
        return "must be 15 characters: sex, year, month, département (digits, 2A or 2B), commune, order, key"
    if ins_key(matricule[:13]) != int(matricule[13:]):
        return "key (last two digits) does not match the first thirteen characters"
    return None


def check_oid(oid: str) -> str | None:
    """Check the syntax of an OID (dotted arcs, no leading zeros) and the 64-character limit."""
    if not _OID.fullmatch(oid):
        return "is not an OID (digits separated by dots, no leading zeros)"
    if len(oid) > 64:
        return "is longer than the 64 characters XDS allows for an OID"
    return None


def check_rpps(rpps: str) -> str | None:
    """Check an RPPS number: 11 digits, the last one a Luhn key."""
    if not re.fullmatch(r"[0-9]{11}", rpps):
        return "must be 11 digits"
    if not luhn.is_valid(rpps):
        return "key (last digit) does not match (Luhn)"
    return None


def check_finess(finess: str) -> str | None:
    """Check a FINESS number: 9 characters, département first, the last one a Luhn key.

    The key rule of Corsican numbers (2A/2B) is not published; only their layout is checked.
    """
    if not _FINESS.fullmatch(finess):
        return "must be 9 characters: département (digits, 2A or 2B) then 7 digits"
    if finess[:2] not in ("2A", "2B") and not luhn.is_valid(finess):
        return "key (last digit) does not match (Luhn)"
    return None


def rpps_identifier(rpps: str) -> str:
    """The national PS identifier written in documents: ``8`` + RPPS."""
    return "8" + rpps


def finess_identifier(finess: str) -> str:
    """The national structure identifier written in documents: ``1`` + FINESS."""
    return "1" + finess
