"""Return reports from the lab's MSSanté mailbox: delivery status (DSN) and read receipts (MDN).

The SMTP sender asks for them: ``RET=HDRS ENVID=<job.message_id>`` and
``NOTIFY=SUCCESS,FAILURE`` (RFC 3461), and ``Disposition-Notification-To`` (RFC 8098). They
come back to the laboratory's mailbox as ``multipart/report`` messages (RFC 6522):

- ``report-type=delivery-status`` (RFC 3464, or RFC 6533's ``global-delivery-status``): a
  ``message/delivery-status`` part with per-message fields (``Original-Envelope-Id``,
  ``Arrival-Date``) then one block per recipient (``Final-Recipient``, ``Action`` failed /
  delayed / delivered / relayed / expanded, ``Status`` x.y.z, ``Diagnostic-Code``,
  ``Last-Attempt-Date``), usually followed by the original's headers (``text/rfc822-headers``);
- ``report-type=disposition-notification`` (RFC 8098): a ``message/disposition-notification``
  part with ``Final-Recipient``, ``Original-Message-ID`` and ``Disposition``
  (``automatic-action/MDN-sent-automatically; displayed``). The ANS volet adds the error form
  ``processed/Error: <code>^<label>`` for a document the receiving system could not integrate.

A report is matched to its delivery by the 32-hex id every message carries (``job.message_id``,
the first half of the delivery key): the ``Original-Envelope-Id``, the ``Original-Message-ID``,
the ``Message-ID`` of the returned headers, then the report's ``In-Reply-To`` and
``References``, in that order. Anything else (ordinary mail, reports for messages this outbox
did not send, malformed reports) is classified, never raised. Parsing is defensive: a size
limit, and any failure of the ``email`` package on hostile input makes the message
*malformed*, described by what is wrong, never by its content.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Final

from crbio.dispatch.delivery import Delivery, Job
from crbio.dispatch.outbox import Outbox
from crbio.dispatch.redaction import redact
from crbio.errors import OutboxError

__all__ = [
    "MAX_REPORT_BYTES",
    "ParsedReport",
    "RecordResult",
    "ReportKind",
    "ReportStatus",
    "ReturnEntry",
    "parse_report",
    "record_report",
]

log = logging.getLogger("crbio.dispatch.returns")

# Above the 25 MB Mon espace santé accepts: an ANS error MDN returns the original message
# with its IHE_XDM.ZIP and PDF.
MAX_REPORT_BYTES: Final = 32 * 1024 * 1024
_MAX_RECIPIENT_BLOCKS: Final = 100
_MAX_FIELD: Final = 4000

DSN_ACTIONS: Final = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
# RFC 8098's types, and RFC 2298's "denied"/"failed" that old user agents still send.
MDN_DISPOSITIONS: Final = frozenset({"displayed", "deleted", "dispatched", "processed", "denied", "failed"})

_DSN_PARTS: Final = {"message/delivery-status", "message/global-delivery-status"}
_MDN_PARTS: Final = {"message/disposition-notification", "message/global-disposition-notification"}
_RETURNED_PARTS: Final = {"text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers"}
_REPORT_TYPES: Final = {
    "delivery-status": "dsn",
    "global-delivery-status": "dsn",
    "disposition-notification": "mdn",
    "global-disposition-notification": "mdn",
}

_HEX_ID = re.compile(r"[0-9a-fA-F]{32}")
_MSG_ID = re.compile(r"<\s*([^<>\s@]+)@[^<>\s]+\s*>")
_BARE_ID = re.compile(r"\s*<?\s*([0-9a-fA-F]{32})@[^<>\s]+?\s*>?\s*")
_STATUS = re.compile(r"\s*([245])\.([0-9]{1,3})\.([0-9]{1,3})(?![0-9])")
_XTEXT_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:(.*)", re.DOTALL)
_DISPOSITION_TYPE = re.compile(r"\s*([A-Za-z-]+)\s*(?:/(.*))?", re.DOTALL)
_ERROR_CODE = re.compile(r"\s*([0-9A-Za-z._-]{1,16})\s*(?:\^|$)")


class ReportKind(StrEnum):
    """The two kinds of return report: delivery status (RFC 3464) and disposition (RFC 8098)."""

    DSN = "dsn"
    MDN = "mdn"


class ReportStatus(StrEnum):
    """What became of one message read from the mailbox."""

    RECORDED = "recorded"  # matched, and at least one of its entries is new in the journal
    ALREADY_KNOWN = "already-known"  # matched, every entry was recorded before
    UNMATCHED = "unmatched"  # a well-formed report for a message this outbox did not send
    MALFORMED = "malformed"  # a report (or claims to be one) that cannot be read
    NOT_A_REPORT = "not-a-report"  # ordinary mail, or a report of another type


@dataclass(frozen=True, slots=True)
class ReturnEntry:
    """One recipient's line of a report.

    Attributes:
        kind: DSN or MDN.
        recipient: The ``Final-Recipient`` address (lower case, without its address type).
        action: The DSN ``Action`` (failed, delayed, delivered, relayed, expanded) or the MDN
            disposition type (displayed, deleted, dispatched, processed), with ``/error``
            appended when the MDN carries the error modifier.
        status: The DSN status code (``5.1.1``), or the error code of an MDN in error (ANS:
            ``902``); None when absent.
        diagnostic: The server's or receiving system's own words, as received (redact them
            before keeping them: servers quote addresses).
        reported_at: When it happened, as the report says (UTC), if it says.
    """

    kind: ReportKind
    recipient: str
    action: str
    status: str | None
    diagnostic: str | None
    reported_at: datetime | None

    @property
    def failure(self) -> bool:
        """A bounce (DSN ``failed``) or a refusal by the receiving system (MDN in error)."""
        if self.kind is ReportKind.DSN:
            return self.action == "failed"
        return self.action.endswith("/error") or self.action in {"denied", "failed"}


@dataclass(frozen=True, slots=True)
class ParsedReport:
    """A message of the mailbox, read.

    Attributes:
        status: NOT_A_REPORT, MALFORMED, or UNMATCHED for a readable report (until
            :func:`record_report` matches it).
        kind: DSN or MDN for a report, else None.
        report_id: A stable id of the report message: a SHA-256 of its ``Message-ID``, or of
            its bytes when it has none. The journal records a report once per delivery and id.
        entries: The report's recipient lines.
        references: The 32-hex message ids it refers to, with the route each came from
            (``envelope-id``, ``original-message-id``, ``returned-headers``, ``in-reply-to``,
            ``references``), in the order they are tried.
        problem: For a malformed message, what is wrong with it (never its content).
    """

    status: ReportStatus
    kind: ReportKind | None
    report_id: str
    entries: tuple[ReturnEntry, ...] = ()
    references: tuple[tuple[str, str], ...] = ()
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What recording a report did.

    Attributes:
        status: RECORDED, ALREADY_KNOWN, UNMATCHED, MALFORMED or NOT_A_REPORT.
        key: The matched delivery's key.
        delivery: The matched delivery.
        route: How it was matched (see :attr:`ParsedReport.references`).
        recorded: The entries newly written to the journal.
        problem: For a malformed message, what is wrong with it.
    """

    status: ReportStatus
    key: str | None = None
    delivery: Delivery | None = None
    route: str | None = None
    recorded: tuple[ReturnEntry, ...] = ()
    problem: str | None = None

    @property
    def failures(self) -> tuple[ReturnEntry, ...]:
        """The newly recorded bounces and refusals."""
        return tuple(e for e in self.recorded if e.failure)


# -- parsing ------------------------------------------------------------------------------------


def _unfold(value: str) -> str:
    return " ".join(value.split())[:_MAX_FIELD]


def _blocks_from_text(text: str) -> list[dict[str, str]]:
    """Header-like blocks separated by blank lines (RFC 3464 §2.1), names in lower case."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] = _unfold(current[last] + " " + line)
            continue
        found = _FIELD.fullmatch(line)
        if found is None:
            last = None  # not a field: ignored, like a mail reader would
            continue
        last = found.group(1).lower()
        current.setdefault(last, _unfold(found.group(2)))
    if current:
        blocks.append(current)
    return blocks


def _fields(message: Message) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in message.raw_items():
        found.setdefault(str(name).lower(), _unfold(str(value)))
    return found


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a report part, however the ``email`` package split it.

    ``message/delivery-status`` comes as one sub-message per block; the other ``message/*``
    types as one sub-message whose body holds the following blocks; anything else as text.
    """
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks: list[dict[str, str]] = []
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            fields = _fields(sub)
            if fields:
                blocks.append(fields)
            rest = sub.get_payload()
            if isinstance(rest, str) and rest.strip():
                blocks.extend(_blocks_from_text(rest))
        return blocks
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return []
    return _blocks_from_text(data.decode("utf-8", "replace"))


def _address(value: str | None) -> str:
    """The address of a ``Final-Recipient``-style field: ``rfc822; a@b`` → ``a@b``."""
    if not value:
        return ""
    _, _, address = value.partition(";")
    return (address or value).strip().strip("<>").strip().lower()[:320]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": the time is UTC, the zone unknown (RFC 5322 §3.3)
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def _xtext(value: str) -> str:
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def _hex_ids(value: str | None) -> list[str]:
    """The 32-hex local parts of the message ids in a header value, in order."""
    if not value:
        return []
    ids = [m.group(1) for m in _MSG_ID.finditer(value)]
    if not ids:
        bare = _BARE_ID.fullmatch(value)
        ids = [bare.group(1)] if bare else []
    return [i.lower() for i in ids if _HEX_ID.fullmatch(i)]


def _report_id(message: Message, raw: bytes) -> str:
    message_id = next((v for n, v in message.raw_items() if str(n).lower() == "message-id"), None)
    if message_id is not None and 0 < len(_unfold(str(message_id))) <= 998:
        return hashlib.sha256(
            b"message-id:" + _unfold(str(message_id)).encode("utf-8", "replace")
        ).hexdigest()
    return hashlib.sha256(b"raw:" + raw).hexdigest()


def _returned_message_id(part: Message) -> str | None:
    payload = part.get_payload()
    if isinstance(payload, list):
        first = next((p for p in payload if isinstance(p, Message)), None)
        return _fields(first).get("message-id") if first is not None else None
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return None
    blocks = _blocks_from_text(data.decode("utf-8", "replace"))
    return blocks[0].get("message-id") if blocks else None


def _malformed(report_id: str, problem: str, kind: ReportKind | None = None) -> ParsedReport:
    return ParsedReport(ReportStatus.MALFORMED, kind, report_id, problem=problem)


def _dsn_entries(blocks: list[dict[str, str]], mail_date: datetime | None) -> list[ReturnEntry]:
    per_message, recipients = blocks[0], blocks[1 : 1 + _MAX_RECIPIENT_BLOCKS]
    arrival = _date(per_message.get("arrival-date"))
    entries = []
    for block in recipients:
        words = block.get("action", "").split()
        action = words[0].lower() if words else ""
        recipient = _address(block.get("final-recipient"))
        if action not in DSN_ACTIONS or not recipient:
            continue
        found = _STATUS.match(block.get("status", ""))
        diagnostic = block.get("diagnostic-code")
        if diagnostic:
            kind, semicolon, text = diagnostic.partition(";")
            diagnostic = (text if semicolon else kind).strip() or None
        entries.append(
            ReturnEntry(
                ReportKind.DSN,
                recipient,
                action,
                ".".join(found.groups()) if found else None,
                diagnostic,
                _date(block.get("last-attempt-date")) or mail_date or arrival,
            )
        )
    return entries


def _mdn_entry(fields: dict[str, str], mail_date: datetime | None) -> ReturnEntry | str:
    """The MDN's one entry, or what is wrong with it."""
    recipient = _address(fields.get("final-recipient"))
    disposition = fields.get("disposition", "")
    if not recipient:
        return "no Final-Recipient field"
    _, semicolon, kind_part = disposition.partition(";")
    found = _DISPOSITION_TYPE.fullmatch(kind_part) if semicolon else None
    if found is None or found.group(1).lower() not in MDN_DISPOSITIONS:
        return "no valid Disposition field"
    action = found.group(1).lower()
    modifier = (found.group(2) or "").strip()
    status: str | None = None
    diagnostic = fields.get("error") or fields.get("failure") or None
    if modifier.lower().startswith("error"):
        action += "/error"
        text = modifier[len("error") :].lstrip(" :\t")
        code = _ERROR_CODE.match(text)
        status = code.group(1) if code else None
        diagnostic = text or diagnostic
    return ReturnEntry(ReportKind.MDN, recipient, action, status, diagnostic, mail_date)


def _parse(message: EmailMessage, raw: bytes) -> ParsedReport:
    report_id = _report_id(message, raw)
    if message.get_content_type() != "multipart/report":
        return ParsedReport(ReportStatus.NOT_A_REPORT, None, report_id)
    report_type = str(message.get_param("report-type", "", header="content-type") or "").lower()
    kind_name = _REPORT_TYPES.get(report_type)
    if kind_name is None:
        return ParsedReport(ReportStatus.NOT_A_REPORT, None, report_id)
    kind = ReportKind(kind_name)
    parts = message.get_payload()
    if not isinstance(parts, list) or not parts:
        return _malformed(report_id, "a multipart/report without parts", kind)
    wanted = _DSN_PARTS if kind is ReportKind.DSN else _MDN_PARTS
    machine = next((p for p in parts if isinstance(p, Message) and p.get_content_type() in wanted), None)
    if machine is None:
        return _malformed(report_id, f"no {sorted(wanted)[0]} part", kind)
    blocks = _field_blocks(machine)
    if not blocks:
        return _malformed(report_id, f"an empty {machine.get_content_type()} part", kind)
    headers = _fields(message)
    mail_date = _date(headers.get("date"))
    references: list[tuple[str, str]] = []
    if kind is ReportKind.DSN:
        entries = _dsn_entries(blocks, mail_date)
        if not entries:
            return _malformed(report_id, "no recipient block with Final-Recipient and a valid Action", kind)
        envid = _xtext(blocks[0].get("original-envelope-id", "")).strip()
        if _HEX_ID.fullmatch(envid):
            references.append(("envelope-id", envid.lower()))
    else:
        merged: dict[str, str] = {}
        for block in blocks:
            for name, value in block.items():
                merged.setdefault(name, value)
        entry = _mdn_entry(merged, mail_date)
        if isinstance(entry, str):
            return _malformed(report_id, entry, kind)
        entries = [entry]
        references += [("original-message-id", i) for i in _hex_ids(merged.get("original-message-id"))]
    returned = next(
        (p for p in parts if isinstance(p, Message) and p.get_content_type() in _RETURNED_PARTS), None
    )
    if returned is not None:
        references += [("returned-headers", i) for i in _hex_ids(_returned_message_id(returned))]
    references += [("in-reply-to", i) for i in _hex_ids(headers.get("in-reply-to"))]
    # The last References entry is the direct parent (RFC 5322 §3.6.4): try it first.
    references += [("references", i) for i in reversed(_hex_ids(headers.get("references")))]
    unique: dict[str, str] = {}
    for route, value in references:
        unique.setdefault(value, route)
    return ParsedReport(
        ReportStatus.UNMATCHED,
        kind,
        report_id,
        tuple(entries),
        tuple((route, value) for value, route in unique.items()),
    )


def parse_report(raw: bytes, *, max_bytes: int = MAX_REPORT_BYTES) -> ParsedReport:
    """Read one message of the mailbox: a DSN, an MDN, or something else (never raises).

    A message over ``max_bytes`` is not parsed and comes back MALFORMED, as does any
    ``multipart/report`` of the delivery-status or disposition-notification type that lacks
    its machine-readable part or whose fields are unusable. Other messages are NOT_A_REPORT.
    A readable report comes back UNMATCHED, with its entries and the message ids it refers to,
    for :func:`record_report` to match.
    """
    if len(raw) > max_bytes:
        return _malformed(hashlib.sha256(b"raw:" + raw).hexdigest(), f"larger than {max_bytes} bytes")
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        return _parse(message, raw)
    except Exception as error:  # noqa: BLE001 - the email package has known crashes on hostile input
        return _malformed(hashlib.sha256(b"raw:" + raw).hexdigest(), f"unreadable ({type(error).__name__})")


# -- recording ----------------------------------------------------------------------------------


def _job(outbox: Outbox, delivery: Delivery) -> Job | None:
    try:
        n3, pdf = outbox.document(delivery.document_id)
    except OutboxError:
        return None
    return Job(delivery, 0, n3, pdf)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def record_report(outbox: Outbox, report: ParsedReport) -> RecordResult:
    """Match a parsed report to its MSSanté delivery and record its entries in the journal.

    The first of the report's references that names a delivery of this outbox wins. Each entry
    is recorded once per (delivery, report id, recipient): recording the same report again
    changes nothing and answers ALREADY_KNOWN. Diagnostics are redacted with the delivery's
    document (servers quote addresses; receiving systems quote patients).
    """
    if report.status is not ReportStatus.UNMATCHED or report.kind is None:
        return RecordResult(report.status, problem=report.problem)
    for route, message_id in report.references:
        found = outbox.mssante_delivery(message_id)
        if found is None:
            continue
        key, delivery = found
        job = _job(outbox, delivery) if any(e.diagnostic for e in report.entries) else None
        recorded = []
        for entry in report.entries:
            new = outbox.record_return(
                key,
                report_id=report.report_id,
                kind=entry.kind.value,
                recipient=entry.recipient,
                action=entry.action,
                status=entry.status,
                diagnostic=redact(entry.diagnostic, job) or None,
                reported_at=_iso(entry.reported_at),
            )
            if new:
                recorded.append(entry)
                if entry.failure:
                    log.warning(
                        "delivery %s (document %s): %s %s%s",
                        key[:16],
                        delivery.document_id,
                        entry.kind.value.upper(),
                        entry.action,
                        f" {entry.status}" if entry.status else "",
                    )
                else:
                    log.info("delivery %s: %s %s", key[:16], entry.kind.value.upper(), entry.action)
        status = ReportStatus.RECORDED if recorded else ReportStatus.ALREADY_KNOWN
        return RecordResult(status, key, delivery, route, tuple(recorded))
    return RecordResult(ReportStatus.UNMATCHED)
