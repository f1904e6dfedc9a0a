"""LOINC codes: syntax and check digit."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from stdnum import luhn

__all__ = ["LOINC_OID", "check_loinc"]

LOINC_OID: Final = "2.16.840.1.113883.6.1"
_LOINC = re.compile(r"([1-9][0-9]{0,6})-([0-9])")


@lru_cache(maxsize=8192)
def check_loinc(code: str) -> str | None:
    """Check a LOINC code (``2345-7``): digits, a hyphen and the mod-10 check digit."""
    match = _LOINC.fullmatch(code)
    if match is None:
        return "is not a LOINC code (digits, a hyphen, one check digit)"
    if luhn.calc_check_digit(match.group(1)) != match.group(2):
        return "check digit (after the hyphen) does not match (mod 10)"
    return None
