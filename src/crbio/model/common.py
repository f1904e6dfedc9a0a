"""Small value types shared by the whole report model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache

__all__ = [
    "Address",
    "Code",
    "InstanceIdentifier",
    "PersonName",
    "Quantity",
    "Telecom",
]


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept: a code, the OID of its code system and its display name."""

    code: str
    system: str
    display: str | None = None
    system_name: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceIdentifier:
    """An HL7 II: an OID ``root`` and, for identifiers that are not OIDs themselves, an ``extension``."""

    root: str
    extension: str | None = None


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address, either structured (house number, street…) or as free ``lines``.

    The CI-SIS address model does not mix the two forms: free lines are written as
    CDA ``streetAddressLine`` elements, postal code and city included.
    """

    lines: tuple[str, ...] = ()
    house_number: str | None = None
    street_name: str | None = None
    unit_id: str | None = None  # building, staircase, flat
    additional_locator: str | None = None  # residence, lieu-dit
    post_box: str | None = None  # BP, CS
    postal_code: str | None = None
    city: str | None = None
    country: str | None = None
    use: str | None = None  # HL7 PostalAddressUse: H (home), WP (work)…

    def street_lines(self) -> tuple[str, ...]:
        """The address lines above the postal code and city, whichever form was given."""
        if self.lines:
            return self.lines
        street = " ".join(p for p in (self.house_number, self.street_name) if p)
        return tuple(p for p in (self.unit_id, self.additional_locator, street, self.post_box) if p)

    def one_line(self) -> str:
        """The address on one line, as printed on a report."""
        tail = " ".join(p for p in (self.postal_code, self.city) if p)
        return ", ".join(p for p in (*self.street_lines(), tail, self.country or "") if p)


@dataclass(frozen=True, slots=True)
class Telecom:
    """A telecom address as a URI (``tel:``, ``fax:``, ``mailto:``, ``http(s):``) with an optional use."""

    uri: str
    use: str | None = None  # HL7 TelecomAddressUse: H, WP, MC, HP, EC…

    @property
    def scheme(self) -> str:
        """The URI scheme: ``tel``, ``fax``, ``mailto``, etc."""
        return self.uri.split(":", 1)[0]

    @property
    def address(self) -> str:
        """The URI without its scheme."""
        return self.uri.split(":", 1)[1]


@dataclass(frozen=True, slots=True)
class PersonName:
    """A person's name as printed: given names, family name, optional prefix and suffix."""

    family: str
    given: tuple[str, ...] = ()
    prefix: str | None = None  # civility: M, MME…
    suffix: str | None = None  # title: DR, PR…

    def display(self) -> str:
        """The name as printed on a report (``DR Marcel CAMPARINI``)."""
        return " ".join(p for p in (self.suffix, *self.given, self.family) if p)


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured quantity; the value keeps its written precision, the unit is UCUM."""

    value: Decimal
    unit: str = "1"

    def display(self) -> str:
        """French display: decimal comma, unit after a no-break space (``4,89 mmol/L``)."""
        number = format_decimal(self.value)
        unit = display_unit(self.unit)
        return f"{number}\u00a0{unit}" if unit else number


def format_date(value: date) -> str:
    """A date as printed in French: ``04/01/2024``."""
    return f"{value.day:02d}/{value.month:02d}/{value.year:04d}"


def format_datetime(value: datetime) -> str:
    """A date-time as printed in French, in its own UTC offset, never cut: ``04/01/2024 à 16:05``."""
    return f"{format_date(value)}\u00a0à\u00a0{value.hour:02d}:{value.minute:02d}"


def format_decimal(value: Decimal) -> str:
    """Write a decimal the French way (``0,88``, ``120 000``), keeping its written precision.

    Integer parts of five digits or more are grouped by three with a narrow no-break space.
    """
    sign = "\u2212" if value.is_signed() and value != 0 else ""
    whole, _, fraction = format(abs(value), "f").partition(".")
    if len(whole) >= 5:
        whole = f"{int(whole):,}".replace(",", "\u202f")
    return sign + whole + ("," + fraction if fraction else "")


@lru_cache(maxsize=1024)
def display_unit(unit: str) -> str:
    """Turn a UCUM unit into its printed form (``10*9/L`` → ``10⁹/L``, ``ug`` → ``µg``).

    Dimensionless units print as nothing: ``1`` and pure annotations such as ``{ratio}``.
    """
    if unit == "1" or re.fullmatch(r"(?:\{[^{}]*\})+", unit):
        return ""
    text = unit
    for ucum, shown in _UNIT_DISPLAY:
        text = text.replace(ucum, shown)
    return text


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_UNIT_DISPLAY = tuple(
    [(f"10*{n}", "10" + str(n).translate(_SUPERSCRIPT)) for n in range(15, 0, -1)]
    + [(f"10^{n}", "10" + str(n).translate(_SUPERSCRIPT)) for n in range(15, 0, -1)]
    + [
        ("{1.73_m2}", "1,73\u00a0m²"),
        ("ug", "µg"),
        ("umol", "µmol"),
        ("uL", "µL"),
        ("[IU]", "UI"),
        ("[iU]", "UI"),
        ("{", ""),
        ("}", ""),
    ]
)
