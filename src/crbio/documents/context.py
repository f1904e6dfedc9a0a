"""What a build needs besides the report: a clock and an id generator, injectable for tests."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from crbio.errors import InputError
from crbio.model import Report

__all__ = [
    "BuildContext",
    "Clock",
    "FixedClock",
    "IdGenerator",
    "SequenceIds",
    "SystemClock",
    "UuidOids",
    "resolve_document",
]


class Clock(Protocol):
    """Gives the current time (timezone-aware)."""

    def now(self) -> datetime:
        """The current time, with its UTC offset."""
        ...


class SystemClock:
    """The machine's clock, in its local time zone."""

    def now(self) -> datetime:
        """The current time, with the local UTC offset."""
        return datetime.now().astimezone().replace(microsecond=0)


@dataclass(frozen=True)
class FixedClock:
    """A clock stopped at one instant, for reproducible builds and tests."""

    when: datetime

    def now(self) -> datetime:
        """The fixed instant."""
        return self.when


class IdGenerator(Protocol):
    """Hands out new document OIDs (usable as DMP uniqueIds: an OID, no extension)."""

    def new_oid(self) -> str:
        """A new, never used OID."""
        ...


class UuidOids:
    """OIDs under the UUID arc ``2.25`` (ITU-T X.667): unique without coordination."""

    def new_oid(self) -> str:
        """``2.25.<the decimal value of a random UUID>`` (at most 44 characters)."""
        return f"2.25.{uuid.uuid4().int}"


@dataclass
class SequenceIds:
    """OIDs ``<root>.1``, ``<root>.2``… in order, for tests."""

    root: str
    _next: int = field(default=1, repr=False)

    def new_oid(self) -> str:
        """The next OID of the sequence."""
        oid = f"{self.root}.{self._next}"
        self._next += 1
        return oid


@dataclass(frozen=True)
class BuildContext:
    """The clock and id generator a build uses; the defaults are the real ones."""

    clock: Clock = field(default_factory=SystemClock)
    ids: IdGenerator = field(default_factory=UuidOids)


def resolve_document(report: Report, context: BuildContext) -> Report:
    """The report with its document id, set id and creation time filled in.

    Ids the input gives are kept; a missing id comes from the id generator, a missing
    set id is the id itself (first version), a missing creation time is the clock's now.
    """
    doc = report.document
    doc_id = doc.id or context.ids.new_oid()
    created_at = doc.created_at or context.clock.now()
    if created_at < report.validated_at:
        raise InputError(
            "$.validated_at: the validation time is in the future of the document's creation time",
            code="input.chronology",
        )
    resolved = dataclasses.replace(doc, id=doc_id, set_id=doc.set_id or doc_id, created_at=created_at)
    return dataclasses.replace(report, document=resolved)
