"""HL7 TS (``YYYYMMDD[HHMM[SS]][+ZZZZ]``), written and read: CDA documents, XDS and HL7 v2 share it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

__all__ = ["hl7_ts", "parse_hl7_time"]


def hl7_ts(value: datetime | date | None) -> str:
    """HL7 TS: ``YYYYMMDDHHMMSS+ZZZZ`` for a date-time (with its offset), ``YYYYMMDD`` for a date."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d%H%M%S%z")
    return value.strftime("%Y%m%d")


def parse_hl7_time(value: str) -> datetime | date:
    """An HL7 TS (``YYYYMMDD[HHMM[SS[.fff]]][+ZZZZ]``) as a date, or an aware datetime."""
    digits, offset = value, None
    for sign in "+-":
        if sign in value[8:]:
            cut = value.rindex(sign)
            digits, offset = value[:cut], value[cut:]
    digits = digits.split(".", 1)[0]
    if len(digits) == 8:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    digits = digits.ljust(14, "0")
    tz = UTC
    if offset is not None:
        minutes = int(offset[1:3]) * 60 + int(offset[3:5])
        tz = timezone(timedelta(minutes=minutes if offset[0] == "+" else -minutes))
    return datetime(
        int(digits[:4]),
        int(digits[4:6]),
        int(digits[6:8]),
        int(digits[8:10]),
        int(digits[10:12]),
        int(digits[12:14]),
        tzinfo=tz,
    )
