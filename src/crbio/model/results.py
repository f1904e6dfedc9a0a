"""Results: chapters, batteries, observations, values, specimens and microbiology isolates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from crbio.model.common import Code, InstanceIdentifier, Quantity, display_unit, format_decimal

__all__ = [
    "Battery",
    "Chapter",
    "CodedValue",
    "IntervalValue",
    "Isolate",
    "Observation",
    "ObservationStatus",
    "PreviousResult",
    "RatioValue",
    "ReferenceRange",
    "Specimen",
    "TextValue",
    "Value",
]


@dataclass(frozen=True, slots=True)
class CodedValue:
    """A coded result (``POS``, an organism…) with the text printed for it."""

    text: str
    code: Code | None = None

    def display(self) -> str:
        """The text printed for this result."""
        return self.text


@dataclass(frozen=True, slots=True)
class TextValue:
    """A free-text result."""

    text: str

    def display(self) -> str:
        """The text printed for this result."""
        return self.text


@dataclass(frozen=True, slots=True)
class RatioValue:
    """A ratio such as a titre (``1/64``)."""

    numerator: Decimal
    denominator: Decimal

    def display(self) -> str:
        """The ratio as printed (``1/64``)."""
        return f"{format_decimal(self.numerator)}/{format_decimal(self.denominator)}"


@dataclass(frozen=True, slots=True)
class IntervalValue:
    """A result known only as a bound or an interval (``< 0,5 g/L``, ``≥ 0,512 µg/mL``)."""

    low: Quantity | None = None
    high: Quantity | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def display(self) -> str:
        """The interval as printed (``< 0,012 µg/mL``, ``2 – 4 mmol/L``)."""
        if self.low is not None and self.high is not None:
            return f"{self.low.display()} \u2013 {self.high.display()}"
        if self.high is not None:
            return f"{'≤' if self.high_inclusive else '<'}\u00a0{self.high.display()}"
        assert self.low is not None
        return f"{'≥' if self.low_inclusive else '>'}\u00a0{self.low.display()}"


Value = Quantity | CodedValue | TextValue | RatioValue | IntervalValue


@dataclass(frozen=True, slots=True)
class ReferenceRange:
    """The reference interval of a result: bounds, or a text when it is not numeric."""

    low: Quantity | None = None
    high: Quantity | None = None
    text: str | None = None

    def display(self) -> str:
        """The range as printed, with its unit (``3,89 – 6,00 mmol/L``, ``< 5 mg/L``), or its text."""
        if self.text:
            return self.text
        if self.low is not None and self.high is not None:
            bounds = f"{format_decimal(self.low.value)} \u2013 {format_decimal(self.high.value)}"
        elif self.high is not None:
            bounds = f"<\u00a0{format_decimal(self.high.value)}"
        elif self.low is not None:
            bounds = f">\u00a0{format_decimal(self.low.value)}"
        else:
            return ""
        unit = display_unit((self.low or self.high or Quantity(Decimal(0))).unit)
        return f"{bounds}\u00a0{unit}" if unit else bounds


class ObservationStatus(StrEnum):
    """Status of a result: done, or not done (cancelled, specimen unusable…)."""

    COMPLETED = "completed"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class PreviousResult:
    """An earlier result of the same analysis, shown for comparison (antériorité)."""

    value: Value
    time: datetime


@dataclass(frozen=True, slots=True)
class Observation:
    """One result: what was measured (LOINC), its value, range and interpretation.

    ``code`` is the LOINC code with its French display name; ``local_code`` a
    laboratory code when there is no LOINC code or in addition to it.
    """

    label: str
    time: datetime
    code: Code | None = None
    local_code: Code | None = None
    value: Value | None = None
    reference_range: ReferenceRange | None = None
    interpretation: Code | None = None
    method: Code | None = None
    status: ObservationStatus = ObservationStatus.COMPLETED
    comment: str | None = None
    previous: tuple[PreviousResult, ...] = ()


@dataclass(frozen=True, slots=True)
class Specimen:
    """A specimen: its type, when it was collected and when the laboratory received it.

    ``key`` is the local reference batteries use to point at it.
    """

    key: str
    type: Code  # HL7 v2 table 0487 specimen type (JDV_HL7_SpecimenType-CISIS)
    collected_at: datetime
    received_at: datetime | None = None
    label: str | None = None  # as printed, when it differs from the type's display name
    procedure: Code | None = None  # NABM act code of the collection, if any
    identifier: InstanceIdentifier | None = None  # the specimen's own id (barcode), when known


@dataclass(frozen=True, slots=True)
class Battery:
    """A group of results requested and validated together (a panel, a test with its parts)."""

    label: str
    observations: tuple[Observation, ...]
    code: Code | None = None  # LOINC code of the panel, if any
    specimens: tuple[str, ...] = ()  # keys of the specimens used
    performed_by: str | None = None  # key of the subcontracted laboratory, if any
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Isolate:
    """A micro-organism isolated from a specimen, with its own results and antibiogram."""

    organism: Code  # SNOMED CT organism
    label: str
    time: datetime
    observations: tuple[Observation, ...] = ()  # count, identification details…
    antibiogram: tuple[Observation, ...] = ()  # one susceptibility result per antibiotic
    specimens: tuple[str, ...] = ()
    performed_by: str | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Chapter:
    """A chapter of the report: one laboratory specialty (biochemistry, haematology…)."""

    code: Code  # LOINC code of the specialty (18719-5 Chimie…)
    title: str
    batteries: tuple[Battery, ...] = ()
    isolates: tuple[Isolate, ...] = ()
    comment: str | None = None

    def observation_count(self) -> int:
        """How many results the chapter holds, isolate results included."""
        count = sum(len(b.observations) for b in self.batteries)
        return count + sum(len(i.observations) + len(i.antibiogram) for i in self.isolates)
