r"""The lab's MSSanté mailbox, read over IMAP for the return reports of what crbio sent.

Delivery status notifications and read receipts come back to the laboratory's own BAL (the
``From`` of every message). :func:`collect_returns` opens it over IMAP4rev1 with implicit TLS
(port 993; the 2014 DST's TM3.1C transaction described STARTTLS on port 143, which this client
does not speak), with the server's certificate always verified and the lab's ORG client
certificate when configured, logs in with ``user`` and the password, and reads the folder's
messages it has not handled yet:

- a report matched to a delivery of the outbox is recorded in the journal (once, however many
  times it is read), then flagged ``\Seen`` with the keyword ``$CrbioReturn``, and moved to
  ``processed_folder`` when one is configured (``UID MOVE`` when the server offers MOVE,
  otherwise ``UID COPY``, ``\Deleted`` and ``UID EXPUNGE`` with UIDPLUS or ``EXPUNGE``);
- anything else (ordinary mail, a report for a message this outbox did not send, a malformed
  report) is left where it is, unread, and only given the keyword ``$CrbioSkipped`` so that it
  is not examined again; remove the keyword to have it looked at once more.

Each message is recorded before it is flagged or moved: a connection lost in between only
means the report is read again next time, and found already known.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from crbio.dispatch.config import DispatchConfig, MailboxSettings
from crbio.dispatch.outbox import Outbox
from crbio.dispatch.outbox_backends import open_outbox
from crbio.dispatch.redaction import redact
from crbio.dispatch.returns import RecordResult, ReportStatus, parse_report, record_report
from crbio.dispatch.tls import CERTIFICATE_ALERTS, read_secret, tls_context
from crbio.errors import ConfigurationError, DispatchError

__all__ = ["KEYWORD_HANDLED", "KEYWORD_SKIPPED", "MailboxError", "ReturnsSummary", "collect_returns"]

log = logging.getLogger("crbio.dispatch.mailbox")

KEYWORD_HANDLED: Final = "$CrbioReturn"
KEYWORD_SKIPPED: Final = "$CrbioSkipped"
_WHERE: Final = "mailbox"
_CHUNK: Final = 200
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


class MailboxError(DispatchError):
    """The mailbox could not be read this time: unreachable, connection lost, unexpected answer.

    Attributes:
        retryable: Whether reading again later may succeed (a network problem) or not (the
            server answers something this client does not understand).
    """

    code = "dispatch.mailbox"

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ReturnsSummary:
    """What one reading of the mailbox did.

    ``read`` messages were examined: ``matched`` were reports of this outbox's deliveries
    (``recorded`` brought something new to the journal, ``already_known`` nothing), the others
    were ``unmatched`` reports, ``malformed`` ones (their mailbox UIDs in ``malformed_uids``)
    or ``not_reports`` (ordinary mail). ``results`` holds the newly recorded reports;
    ``failures`` how many of their entries are bounces or refusals.
    """

    read: int = 0
    matched: int = 0
    recorded: int = 0
    already_known: int = 0
    unmatched: int = 0
    malformed: int = 0
    not_reports: int = 0
    failures: int = 0
    malformed_uids: tuple[int, ...] = ()
    results: tuple[RecordResult, ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        text = (
            f"{self.read} message{'s' * (self.read != 1)} read: {self.matched} matched "
            f"({self.recorded} recorded, {self.already_known} already known), {self.unmatched} unmatched, "
            f"{self.malformed} malformed, {self.not_reports} not reports"
        )
        if self.malformed_uids:
            text += f" (malformed: UID {', '.join(str(u) for u in self.malformed_uids)})"
        if self.failures:
            text += (
                f"; {self.failures} bounce{'s' * (self.failures != 1)} or refusal{'s' * (self.failures != 1)}"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        """The counts as JSON-serialisable data."""
        return {
            "read": self.read,
            "matched": self.matched,
            "recorded": self.recorded,
            "already_known": self.already_known,
            "unmatched": self.unmatched,
            "malformed": self.malformed,
            "not_reports": self.not_reports,
            "failures": self.failures,
            "malformed_uids": list(self.malformed_uids),
        }


def _quote(text: str) -> str:
    """An IMAP quoted string (imaplib sends arguments as they are)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple) and value:
        return _text(value[-1])
    return str(value)


class _Session:
    """One IMAP connection to the mailbox, logged in and with the folder selected."""

    def __init__(self, settings: MailboxSettings, tls: ssl.SSLContext, password: str) -> None:
        self.settings = settings
        self._tls = tls
        self._password = password
        self._imap: imaplib.IMAP4_SSL | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.keywords = True

    # -- errors ---------------------------------------------------------------------------------

    def _server_text(self, value: object) -> str:
        # What the server said, for a message: masked (it may echo the user) and never the password.
        text = _text(value)
        if self._password:
            text = text.replace(self._password, "[password]")
        return redact(text)[:200]

    @property
    def _endpoint(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @contextlib.contextmanager
    def _step(self, step: str) -> Iterator[None]:
        try:
            yield
        except (ConfigurationError, MailboxError):
            raise
        except imaplib.IMAP4.abort as error:
            raise MailboxError(
                f"mailbox {self._endpoint}: connection lost during {step} ({self._server_text(error.args)})",
                retryable=True,
            ) from None
        except imaplib.IMAP4.error as error:
            text = self._server_text(error.args)
            # A greeting other than OK, or a BYE, is a server turning clients away for now.
            unavailable = step == "connection" or "BYE" in text or "[UNAVAILABLE]" in text.upper()
            raise MailboxError(
                f"mailbox {self._endpoint}: unexpected answer to {step} ({text})", retryable=unavailable
            ) from None
        except TimeoutError:
            raise MailboxError(
                f"mailbox {self._endpoint}: no answer within {self.settings.timeout:g} s during {step}",
                retryable=True,
            ) from None
        except ssl.SSLCertVerificationError as error:
            raise ConfigurationError(
                f"mailbox.ca_file: the certificate of the IMAP server {self._endpoint} cannot be verified "
                f"({error.verify_message})",
                code="config.certificate",
            ) from None
        except ssl.SSLError as error:
            if error.reason in CERTIFICATE_ALERTS:
                raise ConfigurationError(
                    f"mailbox.client_cert: the IMAP server {self._endpoint} refused the client "
                    f"certificate ({error.reason})",
                    code="config.certificate",
                ) from None
            reason = error.reason or type(error).__name__
            raise MailboxError(
                f"mailbox {self._endpoint}: TLS failure during {step} ({reason})", retryable=True
            ) from None
        except OSError as error:
            raise MailboxError(
                f"mailbox {self._endpoint}: cannot reach the IMAP server during {step} "
                f"({type(error).__name__}: {error.strerror or error})",
                retryable=True,
            ) from None

    # -- life cycle -----------------------------------------------------------------------------

    def __enter__(self) -> _Session:
        try:
            self._open()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    @property
    def imap(self) -> imaplib.IMAP4_SSL:
        assert self._imap is not None
        return self._imap

    def _refresh_capabilities(self) -> None:
        _, data = self.imap.capability()
        self.capabilities = frozenset(_text(data).upper().split())

    def _open(self) -> None:
        settings = self.settings
        with self._step("connection"):
            self._imap = imaplib.IMAP4_SSL(
                settings.host, settings.port, ssl_context=self._tls, timeout=settings.timeout
            )
            self._refresh_capabilities()
        if "LOGINDISABLED" in self.capabilities:
            raise ConfigurationError(
                f"mailbox: the IMAP server {self._endpoint} does not accept a password login (LOGINDISABLED)",
                code="config.value",
            )
        with self._step("LOGIN"):
            try:
                self.imap.login(_quote(settings.user), self._password)
            except UnicodeEncodeError:
                raise ConfigurationError(
                    "mailbox.user: the user name and the password must be ASCII for IMAP LOGIN",
                    code="config.value",
                ) from None
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as error:
                text = self._server_text(error.args)
                if "[UNAVAILABLE]" in text.upper():
                    raise MailboxError(
                        f"mailbox {self._endpoint}: login unavailable for now ({text})", retryable=True
                    ) from None
                raise ConfigurationError(
                    f"mailbox.password: the IMAP server {self._endpoint} refused the login of "
                    f"mailbox.user ({text})",
                    code="config.secret",
                ) from None
            self._refresh_capabilities()
        with self._step("SELECT"):
            try:
                status, data = self.imap.select(_quote(settings.folder))
            except imaplib.IMAP4.readonly:
                raise ConfigurationError(
                    f"mailbox.folder: the IMAP server opens {settings.folder!r} read-only",
                    code="config.value",
                ) from None
            if status != "OK":
                raise ConfigurationError(
                    f"mailbox.folder: the IMAP server cannot open {settings.folder!r} "
                    f"({self._server_text(data)})",
                    code="config.value",
                )
            _, flags = self.imap.response("PERMANENTFLAGS")
            # Without "\*", keywords cannot be stored: reports are then found again at each
            # reading (and recognised as already known), ordinary mail examined again.
            self.keywords = any(b"\\*" in f for f in flags if isinstance(f, bytes))

    def _close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            with contextlib.suppress(OSError):
                imap.shutdown()

    # -- reading --------------------------------------------------------------------------------

    def candidates(self) -> list[int]:
        """The UIDs of the folder's messages not handled nor skipped yet, oldest first."""
        with self._step("UID SEARCH"):
            status, data = self.imap.uid(
                "SEARCH", "UNDELETED", "UNKEYWORD", KEYWORD_HANDLED, "UNKEYWORD", KEYWORD_SKIPPED
            )
            if status != "OK":
                raise MailboxError(
                    f"mailbox {self._endpoint}: UID SEARCH refused ({self._server_text(data)})",
                    retryable=False,
                )
        found = {
            int(word)
            for chunk in data
            if isinstance(chunk, bytes)
            for word in chunk.split()
            if word.isdigit()
        }
        return sorted(found)

    def sizes(self, uids: list[int]) -> dict[int, int]:
        """The size in bytes of each message (RFC822.SIZE)."""
        sizes: dict[int, int] = {}
        for start in range(0, len(uids), _CHUNK):
            chunk = ",".join(str(u) for u in uids[start : start + _CHUNK])
            with self._step("UID FETCH"):
                status, data = self.imap.uid("FETCH", chunk, "(RFC822.SIZE)")
            if status != "OK":
                continue
            for item in data:
                line = item[0] if isinstance(item, tuple) else item
                if not isinstance(line, bytes):
                    continue
                uid, size = _FETCH_UID.search(line), _FETCH_SIZE.search(line)
                if uid and size:
                    sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    def fetch(self, uid: int) -> bytes | None:
        """The message's bytes, without marking it read; None if it is gone meanwhile."""
        with self._step("UID FETCH"):
            status, data = self.imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
        if status != "OK":
            return None
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and b"BODY[]" in item[0].upper():
                body = item[1]
                return bytes(body) if isinstance(body, bytes | bytearray) else None
        return None

    # -- filing -------------------------------------------------------------------------------

    def _store(self, uids: list[int], flags: str) -> bool:
        with self._step("UID STORE"):
            status, data = self.imap.uid("STORE", ",".join(str(u) for u in uids), "+FLAGS.SILENT", flags)
        if status != "OK":
            log.warning(
                "mailbox: cannot set %s on %d message(s) (%s)", flags, len(uids), self._server_text(data)
            )
        return status == "OK"

    def _to_folder(self, command: str, uids: str) -> bool:
        target = _quote(self.settings.processed_folder or "")
        with self._step(f"UID {command}"):
            status, data = self.imap.uid(command, uids, target)
            if status == "NO" and "[TRYCREATE]" in _text(data).upper():
                self.imap.create(target)
                status, data = self.imap.uid(command, uids, target)
        if status != "OK":
            log.warning(
                "mailbox: cannot move handled reports to %r (%s); they stay flagged in %r",
                self.settings.processed_folder,
                self._server_text(data),
                self.settings.folder,
            )
        return status == "OK"

    def file_handled(self, uids: list[int]) -> None:
        """Mark handled reports read and ours, then move them to the processed folder if any."""
        if not uids:
            return
        self._store(uids, f"(\\Seen {KEYWORD_HANDLED})" if self.keywords else "(\\Seen)")
        if self.settings.processed_folder is None:
            return
        for start in range(0, len(uids), _CHUNK):
            chunk = uids[start : start + _CHUNK]
            uidset = ",".join(str(u) for u in chunk)
            if "MOVE" in self.capabilities:
                self._to_folder("MOVE", uidset)
                continue
            if not self._to_folder("COPY", uidset) or not self._store(chunk, "(\\Deleted)"):
                continue
            with self._step("EXPUNGE"):
                if "UIDPLUS" in self.capabilities:
                    self.imap.uid("EXPUNGE", uidset)
                else:
                    # Without UIDPLUS, EXPUNGE also removes what someone else marked \Deleted
                    # in this folder: the mailbox is the lab's application mailbox.
                    self.imap.expunge()

    def file_skipped(self, uids: list[int]) -> None:
        """Give what crbio leaves alone its keyword, so that it is not examined again."""
        if uids and self.keywords:
            for start in range(0, len(uids), _CHUNK):
                self._store(uids[start : start + _CHUNK], f"({KEYWORD_SKIPPED})")


def _collect(session: _Session, outbox: Outbox) -> ReturnsSummary:
    limit = session.settings.max_message_bytes
    uids = session.candidates()
    sizes = session.sizes(uids)
    counts = dict.fromkeys(ReportStatus, 0)
    handled: list[int] = []
    skipped: list[int] = []
    malformed: list[int] = []
    results: list[RecordResult] = []
    failures = 0
    for uid in uids:
        problem: str | None
        if sizes.get(uid, 0) > limit:
            status, problem = ReportStatus.MALFORMED, f"larger than {limit} bytes"
        else:
            raw = session.fetch(uid)
            if raw is None:
                continue  # expunged by someone else meanwhile
            result = record_report(outbox, parse_report(raw, max_bytes=limit))
            status, problem = result.status, result.problem
            if result.recorded:
                results.append(result)
                failures += len(result.failures)
        counts[status] += 1
        if status in (ReportStatus.RECORDED, ReportStatus.ALREADY_KNOWN):
            handled.append(uid)
            continue
        skipped.append(uid)
        if status is ReportStatus.MALFORMED:
            malformed.append(uid)
            log.warning("mailbox message UID %d: malformed report, left in place (%s)", uid, problem)
        elif status is ReportStatus.UNMATCHED:
            log.info("mailbox message UID %d: a report for a message this outbox did not send", uid)
    session.file_handled(handled)
    session.file_skipped(skipped)
    return ReturnsSummary(
        read=sum(counts.values()),
        matched=counts[ReportStatus.RECORDED] + counts[ReportStatus.ALREADY_KNOWN],
        recorded=counts[ReportStatus.RECORDED],
        already_known=counts[ReportStatus.ALREADY_KNOWN],
        unmatched=counts[ReportStatus.UNMATCHED],
        malformed=counts[ReportStatus.MALFORMED],
        not_reports=counts[ReportStatus.NOT_A_REPORT],
        failures=failures,
        malformed_uids=tuple(malformed),
        results=tuple(results),
    )


def collect_returns(config: DispatchConfig, *, outbox: Outbox | None = None) -> ReturnsSummary:
    """Read the ``[mailbox]`` once: record the new DSN and MDN in the journal, file them away.

    Raises:
        ConfigurationError: no ``[mailbox]`` section; its password or certificate files cannot
            be read; the server's certificate is not trusted, or it refuses our certificate or
            the login; the folder cannot be opened. A person must fix these.
        MailboxError: the server cannot be reached, the connection was lost or timed out
            (``retryable``), or it answered something unexpected.
        OutboxError: the outbox database is unusable.
    """
    settings = config.mailbox
    if settings is None:
        raise ConfigurationError("mailbox: not configured (add a [mailbox] section)", code="config.missing")
    tls = tls_context(settings.settings, config.context, where=_WHERE)
    password = read_secret(settings.settings, "password", where=_WHERE, context=config.context) or ""
    own = outbox is None
    box = outbox or open_outbox(config)
    try:
        with _Session(settings, tls, password) as session:
            summary = _collect(session, box)
    finally:
        if own:
            box.close()
    if summary.read:
        log.info("mailbox: %s", summary)
    return summary
