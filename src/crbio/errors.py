"""The crbio exception tree.

Every error crbio raises on purpose derives from :class:`CrbioError` and carries a
machine-readable ``code``; callers can catch the whole family or one branch::

    CrbioError
    ├── InputError                  the report given to crbio is unusable (exit 2)
    │   └── InvalidReport           one or more fields break a rule; .problems lists them
    ├── ConfigurationError          a setting, a stylesheet or a resource is missing or wrong
    ├── BuildError                  a document could not be produced from a valid report
    ├── ValidationFailed            a produced document fails XSD, crbio's rules or the ANS kit
    │                               (exit 1); .report holds every finding
    └── DispatchError               a delivery could not be planned, queued or made
        ├── SendError               a sender failed; .retryable says whether to try again
        │   ├── TransientSendError  timeouts, refused connections, 5xx, XDS *Busy/*NotAvailable
        │   └── PermanentSendError  the server refused the message: retrying cannot help
        └── OutboxError             the outbox database is missing, locked or corrupted

Messages never quote patient data: they name the field (a JSON path such as
``$.patient.ins.matricule``) and the rule that was broken, nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crbio.validation.report import ValidationReport

__all__ = [
    "BuildError",
    "ConfigurationError",
    "CrbioError",
    "DispatchError",
    "InputError",
    "InvalidReport",
    "OutboxError",
    "PermanentSendError",
    "Problem",
    "SendError",
    "TransientSendError",
    "ValidationFailed",
]


class CrbioError(Exception):
    """Root of every error crbio raises on purpose.

    Attributes:
        code: A stable, dotted, machine-readable identifier such as ``input.invalid``.
    """

    code = "crbio"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


class InputError(CrbioError):
    """The input cannot be read as a report (not JSON, unreadable file, wrong format)."""

    code = "input"


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule in an input report.

    Attributes:
        field: Where the problem is, as a JSON path (``$.chapters[0].batteries[1].label``).
        rule: A short machine-readable rule id (``ins.key``, ``loinc.check-digit``…).
        message: A sentence for humans; it never contains patient data.
    """

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} [{self.rule}]"


class InvalidReport(InputError):
    """The report breaks one or more rules; every problem found is listed.

    Attributes:
        problems: All the problems found, in document order.
        document_id: An opaque id of the report when one could be read, for logs.
    """

    code = "input.invalid"

    def __init__(self, problems: Iterable[Problem], *, document_id: str | None = None) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.document_id = document_id
        shown = "\n".join(f"  - {p}" for p in self.problems[:20])
        more = len(self.problems) - 20
        if more > 0:
            shown += f"\n  … and {more} more"
        count = len(self.problems)
        super().__init__(f"invalid report ({count} problem{'s' * (count != 1)}):\n{shown}")

    @property
    def fields(self) -> Sequence[str]:
        """The JSON paths of the fields in error."""
        return [p.field for p in self.problems]


class ConfigurationError(CrbioError):
    """A setting, a resource file or an optional component is missing or invalid."""

    code = "config"


class BuildError(CrbioError):
    """A valid report could not be turned into a document (a bug or an environment problem)."""

    code = "build"


class ValidationFailed(CrbioError):
    """A produced document does not conform; ``report`` lists every finding."""

    code = "validation.failed"

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        super().__init__(report.summary())


class DispatchError(CrbioError):
    """A delivery could not be planned, queued or made."""

    code = "dispatch"


class SendError(DispatchError):
    """A sender could not deliver; the outbox retries it or dead-letters it.

    Attributes:
        retryable: Whether trying again later may succeed.
        reason: The server's own reason (an XDS error code, an SMTP reply, an HL7 ERR), kept in
            the journal; like every message it must not quote patient data.
        detail: JSON-serialisable facts about the failure for the journal (status codes, ids).
    """

    code = "dispatch.send"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        reason: str | None = None,
        detail: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.reason = reason or message
        self.detail = dict(detail or {})


class TransientSendError(SendError):
    """A failure worth retrying: timeout, connection error, 5xx, XDS *Busy / *NotAvailable."""

    code = "dispatch.transient"
    retryable = True


class PermanentSendError(SendError):
    """The destination refused the delivery for good (unknown patient, metadata error, 5xx SMTP)."""

    code = "dispatch.permanent"


class OutboxError(DispatchError):
    """The outbox database is missing, locked, corrupted or of an unknown schema version."""

    code = "dispatch.outbox"
