"""An MSSanté operator's SMTP submission server, on aiosmtpd, for the tests and ``crbio simulate``.

It behaves like the LPS interface of an operator: STARTTLS with a server certificate of the
test PKI; a client certificate verified against the test CA and required before ``MAIL``
(``530 5.7.0`` without one; an untrusted one is refused by the TLS handshake itself, since the
standard library cannot ask for a certificate without verifying it); DSN advertised
(RFC 3461: ``RET``/``ENVID`` on ``MAIL``, ``NOTIFY``/``ORCPT`` on ``RCPT`` are accepted and
kept); and ``250 2.0.0 Ok: queued as <id>`` for each message. It keeps every message, and
marks (without refusing) one whose ``Message-ID`` it has already received, which is how a
test sees that a resend was recognisable.

Faults are drawn once per transaction, at ``MAIL``: SERVER_ERROR answers ``421`` there and
closes the connection, REJECT answers ``550 5.1.1`` to ``RCPT``, BUSY answers ``451`` once the
data is received (nothing is kept), DROP closes the connection instead of answering the data
(nothing is kept), LATENCY delays the transaction.

With a ``report_mailbox`` (an :class:`~crbio.simulators.imap.ImapSimulator` holding the
sender's mailbox), it also plays the recipients' side the way an operator's MTA and the
recipients' mail readers do, after accepting a message:

- delivery status notifications (RFC 3464) as RFC 3461 asks: ``delivered`` when ``NOTIFY``
  includes SUCCESS, ``failed`` with ``5.1.1`` for an address of ``unknown_recipients`` unless
  ``NOTIFY=NEVER`` (failures are reported by default), with the ``ENVID`` as
  ``Original-Envelope-Id``, and the original's headers (``RET=HDRS``, the default) or the
  whole original (``RET=FULL``);
- a ``displayed`` read receipt (RFC 8098) when the message asks for one with
  ``Disposition-Notification-To`` and reached its recipient, for a share ``mdn_rate`` of
  messages, ``mdn_delay`` seconds later.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
import json
import logging
import random
import re
import ssl
import threading
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import format_datetime, parseaddr
from functools import cached_property, lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509

from crbio.simulators.base import Fault, FaultPlan, server_tls_context
from crbio.simulators.pki import TestPki

if TYPE_CHECKING:
    from crbio.simulators.imap import ImapSimulator

__all__ = ["ReceivedMessage", "SmtpSimulator"]

log = logging.getLogger("crbio.simulators.smtp")

MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # what Mon espace santé accepts (ENS Messagerie v1.3)

_MAIL_DSN = {"RET", "ENVID"}
_RCPT_DSN = {"NOTIFY", "ORCPT"}
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+")
REPORTING_HOST = "mta.simulation.mssante.fr"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the simulator accepted.

    Attributes:
        mail_from: The envelope sender.
        rcpt_tos: The envelope recipients.
        mail_options: ``MAIL FROM`` parameters as sent (``SIZE=…``, ``RET=HDRS``, ``ENVID=…``).
        rcpt_options: ``RCPT TO`` parameters as sent (``NOTIFY=SUCCESS,FAILURE``…).
        raw: The message bytes as received (CRLF line ends, dot-stuffing removed).
        headers: The message's headers, parsed when it arrived (the full parse, ``message``,
            happens on first use: a server reads only the headers).
        message_id: Its ``Message-ID`` without angle brackets ("" when it has none).
        queue_id: The id given in the ``250`` reply.
        received_at: When the data was accepted (UTC).
        duplicate: A message with the same ``Message-ID`` was accepted before.
        client_certificate: Subject of the TLS client certificate (RFC 4514), if one was presented.
        authenticated_as: The SMTP AUTH user name, when the client authenticated.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    raw: bytes
    headers: EmailMessage
    message_id: str
    queue_id: str
    received_at: datetime
    duplicate: bool
    client_certificate: str | None = None
    authenticated_as: str | None = None

    @cached_property
    def message(self) -> EmailMessage:
        """``raw`` parsed completely (attachments included)."""
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    @property
    def dsn_parameters(self) -> dict[str, str]:
        """The DSN parameters of the transaction (``RET``, ``ENVID``, ``NOTIFY``, ``ORCPT``)."""
        found: dict[str, str] = {}
        for option in (*self.mail_options, *self.rcpt_options):
            name, _, value = option.partition("=")
            if name.upper() in _MAIL_DSN | _RCPT_DSN:
                found[name.upper()] = value
        return found


class _HeaderRegistry(HeaderRegistry):
    """The email package's header factory, with the class it builds for each header name kept.

    ``HeaderRegistry`` creates a new class (``type(...)``) for every header it is asked for,
    which costs more than parsing the header; the class depends only on the name.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found


# email.policy.default, with the header classes kept (see _HeaderRegistry).
_HEADER_POLICY = email.policy.default.clone(header_factory=_HeaderRegistry())


@lru_cache(maxsize=64)
def _certificate(der: bytes) -> x509.Certificate:
    # The same few client certificates on every transaction: loaded once each.
    return x509.load_der_x509_certificate(der)


@lru_cache(maxsize=64)
def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string()


def _take_dsn(arg: str, names: set[str]) -> tuple[str, list[str]] | None:
    """Split DSN parameters off a MAIL/RCPT argument; None when one is malformed (RFC 3461)."""
    words = arg.split(" ")
    kept: list[str] = []
    taken: list[str] = []
    seen: set[str] = set()
    for index, word in enumerate(words):
        name, eq, value = word.partition("=")
        if index == 0 or name.upper() not in names:
            kept.append(word)
            continue
        upper = name.upper()
        if not eq or not value or upper in seen:
            return None
        seen.add(upper)
        if upper == "RET" and value.upper() not in {"FULL", "HDRS"}:
            return None
        if upper == "ENVID" and (len(value) > 100 or not _XTEXT.fullmatch(value)):
            return None
        if upper == "NOTIFY":
            flags = set(value.upper().split(","))
            if not (flags == {"NEVER"} or (flags and flags <= {"SUCCESS", "FAILURE", "DELAY"})):
                return None
        if upper == "ORCPT" and (";" not in value or not _XTEXT.fullmatch(value.partition(";")[2])):
            return None
        taken.append(f"{upper}={value}")
    return " ".join(kept), taken


def _may_hold_a_line_of(data: bytes | bytearray, length: int) -> bool:
    """False when no line of ``data`` (the bytes between two CRLF) is ``length`` bytes or longer.

    True when one may be, and then the lines are measured one by one. A line of ``length``
    bytes or more covers a whole window ``[k * step, (k + 1) * step)`` with ``step = length // 2``
    in which no CRLF starts: looking for a CRLF in each window (a few hundred bounded searches
    for a message of hundreds of kilobytes) costs much less than splitting it into its lines.
    """
    step = length // 2
    if step < 1:
        return True
    find = data.find
    return any(find(b"\r\n", start, start + step + 1) < 0 for start in range(0, len(data) - step + 1, step))


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Close a connection at once, without a goodbye (plain or TLS alike)."""
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    elif transport is not None:
        transport.close()


class _Server(SMTP):
    """One SMTP connection: aiosmtpd plus client certificates, DSN parameters and faults."""

    def __init__(self, simulator: SmtpSimulator, **kwargs: Any) -> None:
        super().__init__(_Handler(simulator), **kwargs)
        self.simulator = simulator
        if simulator.implicit_tls:
            # aiosmtpd only knows TLS started by STARTTLS and would hide AUTH; the whole
            # connection is TLS here (set after construction: the constructor warns otherwise).
            self._auth_require_tls = False
        self.fault: Fault | None = None
        self.pending_dsn: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:
            self.simulator._opened(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.simulator._closed(self)
        super().connection_lost(error)

    def peer_certificate(self) -> x509.Certificate | None:
        """The verified client certificate of this connection, if the client presented one."""
        if self.transport is None:
            return None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        der = ssl_object.getpeercert(binary_form=True)
        return _certificate(der) if der else None

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: D102 - aiosmtpd command
        assert self.session is not None and self.envelope is not None
        if self.simulator.require_client_cert and self.session.host_name and self.peer_certificate() is None:
            await self.push("530 5.7.0 A client certificate is required (IGC Sante ORG certificate)")
            return
        self.pending_dsn = []
        if arg is not None and self.session.extended_smtp and not self.envelope.mail_from:
            if self.simulator.advertise_dsn:
                split = _take_dsn(arg, _MAIL_DSN)
                if split is None:
                    await self.push("501 5.5.4 Invalid DSN parameter")
                    return
                arg, self.pending_dsn = split
            # Drawn here, in the event loop (a thread hop per transaction costs more than the
            # draw); a LATENCY fault is awaited rather than slept in a worker thread.
            plan = self.simulator.faults
            self.fault = plan.draw_nowait()
            if self.fault is Fault.LATENCY:
                await asyncio.sleep(plan.latency)
                self.fault = None
            if self.fault is Fault.SERVER_ERROR:
                await self.push("421 4.3.2 Service not available, closing transmission channel")
                assert self.transport is not None
                self.transport.close()
                return
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        """``DATA`` as aiosmtpd answers it, reading the content in blocks instead of line by line.

        aiosmtpd awaits one ``readline`` per line, which for a message of a few hundred
        kilobytes in 76-character base64 lines is most of what the server spends. Here the
        content is read as it arrives, up to the ``<CRLF>.<CRLF>`` that ends it, then checked
        the same way: ``552`` past ``data_size_limit``, ``500`` for a line longer than
        ``line_length_limit``, the leading dot of each line removed (RFC 5321 §4.5.2), and
        only then handed to ``handle_DATA``.
        """
        if self._decode_data:  # text content: aiosmtpd's own path (this simulator keeps bytes)
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limit = self.data_size_limit
        received = bytearray(b"\r\n")  # the CRLF ending the DATA line: the end is "<CRLF>.<CRLF>"
        end = -1
        refusal = ""
        while end < 0:
            try:
                # No await between taking the whole buffer and putting back what follows the
                # end: the client may not send more before our reply (no PIPELINING), but if it
                # does, its next command is read in order.
                block = await self._reader.read(max(limit or 0, MAX_MESSAGE_BYTES))
            except asyncio.CancelledError:
                log.info("connection lost during DATA")
                self._writer.close()
                raise
            if not block:  # the client closed the connection mid-message
                return
            searched = max(0, len(received) - 4)
            received += block
            end = received.find(b"\r\n.\r\n", searched)
            if end >= 0:
                rest = bytes(received[end + 5 :])
                if rest:
                    self._reader.feed_data(rest)
                del received[end + 2 :]
            if not refusal and limit and len(received) - 2 > limit:
                # As aiosmtpd: whichever limit the content broke first decides the reply; the
                # rest is read to the end but not kept.
                refusal = self._line_too_long(received) or "552 Error: Too much mail data"
            if refusal:
                del received[2:-4]
        content = bytes(received[2:])
        refusal = refusal or self._line_too_long(received)
        if refusal:
            await self.push(refusal)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        content = content.replace(b"\r\n.", b"\r\n")
        if content.startswith(b"."):
            content = content[1:]
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    def _line_too_long(self, received: bytearray) -> str:
        """The reply aiosmtpd gives to a line longer than ``line_length_limit`` (CRLF included), or ""."""
        if not _may_hold_a_line_of(received, self.line_length_limit - 1):
            return ""
        longest = max(map(len, received.split(b"\r\n")), default=0)
        return "500 Line too long (see RFC5321 4.5.3.1.6)" if longest + 2 > self.line_length_limit else ""

    async def smtp_RCPT(self, arg: str | None) -> None:  # noqa: D102 - aiosmtpd command
        assert self.session is not None
        self.pending_dsn = []
        if arg is not None and self.session.extended_smtp and self.simulator.advertise_dsn:
            split = _take_dsn(arg, _RCPT_DSN)
            if split is None:
                await self.push("501 5.5.4 Invalid DSN parameter")
                return
            arg, self.pending_dsn = split
        await super().smtp_RCPT(arg)


class _Handler:
    """The aiosmtpd hooks: EHLO extensions, envelope bookkeeping, faults, storing messages."""

    def __init__(self, simulator: SmtpSimulator) -> None:
        self.simulator = simulator

    async def handle_EHLO(  # noqa: N802 - aiosmtpd hook name
        self, server: _Server, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # Before the final "250 HELP" line: the extensions this server adds.
        extensions = ["250-DSN"] if self.simulator.advertise_dsn else []
        return [*responses[:-1], *extensions, "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_MAIL(  # noqa: N802 - aiosmtpd hook name
        self, server: _Server, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend([*options, *server.pending_dsn])
        return "250 2.1.0 Ok"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: _Server, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if server.fault is Fault.REJECT:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend([*options, *server.pending_dsn])
        return "250 2.1.5 Ok"

    async def handle_DATA(  # noqa: N802 - aiosmtpd hook name
        self, server: _Server, session: Session, envelope: Envelope
    ) -> str:
        fault, server.fault = server.fault, None
        if fault is Fault.BUSY:
            return "451 4.3.0 Mailbox temporarily unavailable, try again later"
        if fault is Fault.DROP:
            _abort(server.transport)
            # The connection is gone: wait to be cancelled by connection_lost.
            await asyncio.sleep(60)
            return "451 4.3.0 Connection dropped"
        certificate = server.peer_certificate()
        auth = session.auth_data
        received = self.simulator._store(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_options=tuple(envelope.mail_options),
            rcpt_options=tuple(envelope.rcpt_options),
            raw=bytes(envelope.original_content or b""),
            client_certificate=_subject(certificate) if certificate is not None else None,
            authenticated_as=auth.login.decode("utf-8", "replace")
            if isinstance(auth, LoginPassword)
            else None,
        )
        return f"250 2.0.0 Ok: queued as {received.queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        # A failed TLS handshake (untrusted client certificate) ends up here; it is expected.
        log.info("SMTP session ended by %s", type(error).__name__)
        return "421 4.3.0 Error in processing"


class _Controller(Controller):
    """aiosmtpd's threaded controller, bound to an ephemeral port, building :class:`_Server`."""

    def __init__(self, simulator: SmtpSimulator, **kwargs: Any) -> None:
        super().__init__(None, hostname="127.0.0.1", port=0, **kwargs)
        self.simulator = simulator

    def factory(self) -> _Server:
        return _Server(self.simulator, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        async def create() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
            )
            # aiosmtpd checks readiness by connecting to self.port: give it the bound one.
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class SmtpSimulator:
    """A local MSSanté SMTP submission server (see the module docstring).

    Args:
        pki: The test PKI: server certificate, and the CA client certificates must chain to.
        faults: Faults to inject per transaction (a new empty plan by default).
        store_dir: When given, each accepted message is also written there as ``.eml``, with
            its envelope beside it as ``.json``.
        require_client_cert: Refuse ``MAIL`` (530) on a connection without a client certificate.
        implicit_tls: Speak TLS from the first byte (port 465 style) instead of STARTTLS.
        users: SMTP AUTH user names and passwords; when given, AUTH is required as well.
        advertise_dsn: Offer the DSN extension (without it, DSN parameters get ``555``, as
            from a server that does not implement RFC 3461).
        report_mailbox: The sender's mailbox, where delivery and read reports are put (none
            are produced without it).
        unknown_recipients: Addresses accepted at ``RCPT`` but then bounced (``5.1.1``), as
            by an operator that checks its recipients after submission.
        mdn_rate: The share of messages asking for a read receipt whose recipient sends one.
        mdn_delay: Seconds between accepting a message and its read receipt arriving.
        seed: Seed of the ``mdn_rate`` draws, for repeatable runs.
        max_message_bytes: The largest message accepted (``552`` beyond; 25 MB by default).
        retain: How many accepted messages :attr:`messages` keeps in memory, the oldest
            forgotten first (None: all). Duplicates are still recognised after that; a long
            run with a ``store_dir`` needs no more than the last few.
    """

    def __init__(
        self,
        pki: TestPki,
        *,
        faults: FaultPlan | None = None,
        store_dir: Path | None = None,
        require_client_cert: bool = True,
        implicit_tls: bool = False,
        users: Mapping[str, str] | None = None,
        advertise_dsn: bool = True,
        report_mailbox: ImapSimulator | None = None,
        unknown_recipients: Iterable[str] = (),
        mdn_rate: float = 1.0,
        mdn_delay: float = 0.0,
        seed: int | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        retain: int | None = None,
    ) -> None:
        self.pki = pki
        self.retain = retain
        self.max_message_bytes = max_message_bytes
        self.faults = faults if faults is not None else FaultPlan()
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.require_client_cert = require_client_cert
        self.implicit_tls = implicit_tls
        self.users = dict(users or {})
        self.advertise_dsn = advertise_dsn
        self.report_mailbox = report_mailbox
        self.unknown_recipients = {a.lower() for a in unknown_recipients}
        self.mdn_rate = mdn_rate
        self.mdn_delay = mdn_delay
        self._random = random.Random(seed)
        self.host = "127.0.0.1"
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._seen: dict[str, list[ReceivedMessage]] = {}  # the retained messages by Message-ID
        self._seen_ids: set[str] = set()  # every Message-ID accepted, for duplicates
        self._connections: set[_Server] = set()
        self._queue_ids = itertools.count(1)
        self._controller: _Controller | None = None
        self._port = 0

    # -- life cycle ---------------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        # Optional: a presented certificate is verified, a missing one is refused at MAIL.
        return server_tls_context(self.pki, client_certificate="optional")

    def start(self) -> SmtpSimulator:
        """Start listening on 127.0.0.1 (an ephemeral port: see :attr:`port`)."""
        if self._controller is not None:
            return self
        if self.store_dir is not None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        tls = self._tls()
        options: dict[str, Any] = {
            "server_hostname": "localhost",
            "ident": "crbio MSSante simulator",
            "data_size_limit": self.max_message_bytes,
            "enable_SMTPUTF8": False,
            "timeout": 60,
        }
        if self.implicit_tls:
            options["ssl_context"] = tls
        else:
            options["tls_context"] = tls
            options["require_starttls"] = True
        if self.users:
            options["authenticator"] = self._authenticate
            options["auth_required"] = True
        controller = _Controller(self, **options)
        controller.start()
        self._controller = controller
        self._port = controller.port
        log.info("SMTP simulator listening on %s:%s", self.host, self._port)
        return self

    def stop(self) -> None:
        """Close every connection and stop the server."""
        controller, self._controller = self._controller, None
        if controller is None:
            return

        def abort_all() -> None:
            for connection in list(self._connections):
                _abort(connection.transport)

        controller.loop.call_soon_threadsafe(abort_all)
        controller.stop()

    def __enter__(self) -> SmtpSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before :meth:`start`)."""
        return self._port

    def _opened(self, connection: _Server) -> None:
        self._connections.add(connection)

    def _closed(self, connection: _Server) -> None:
        self._connections.discard(connection)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        password = data.password.decode("utf-8", "replace")
        ok = login in self.users and self.users[login] == password
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    # -- what was received --------------------------------------------------------------------

    def _store(self, **fields: Any) -> ReceivedMessage:
        raw: bytes = fields["raw"]
        # Headers only: parsing megabytes of attachments in Python is the client's cost to bear.
        end = raw.find(b"\r\n\r\n")
        headers = BytesHeaderParser(policy=_HEADER_POLICY).parsebytes(raw if end < 0 else raw[: end + 4])
        message_id = str(headers.get("Message-ID", "")).strip().strip("<>")
        now = datetime.now(UTC)
        with self._lock:
            queue_id = f"{next(self._queue_ids):010X}"
            received = ReceivedMessage(
                headers=headers,
                message_id=message_id,
                queue_id=queue_id,
                received_at=now,
                duplicate=bool(message_id) and message_id in self._seen_ids,
                **fields,
            )
            self._messages.append(received)
            if message_id:
                self._seen.setdefault(message_id, []).append(received)
                self._seen_ids.add(message_id)
            while self.retain is not None and len(self._messages) > self.retain:
                self._forget(self._messages.pop(0))
        if self.store_dir is not None:
            stem = self.store_dir / f"{now:%Y%m%dT%H%M%S%f}-{queue_id}"
            stem.with_suffix(".eml").write_bytes(raw)
            envelope = {
                "mail_from": received.mail_from,
                "rcpt_tos": list(received.rcpt_tos),
                "mail_options": list(received.mail_options),
                "rcpt_options": list(received.rcpt_options),
                "message_id": message_id,
                "queue_id": queue_id,
                "received_at": now.isoformat(),
                "duplicate": received.duplicate,
                "client_certificate": received.client_certificate,
            }
            stem.with_suffix(".json").write_text(json.dumps(envelope, indent=2), encoding="utf-8")
        log.info("SMTP simulator queued %s%s", queue_id, " (duplicate)" if received.duplicate else "")
        if self.report_mailbox is not None:
            self._report(received, self.report_mailbox)
        return received

    # -- the recipients' side ------------------------------------------------------------------

    def _report(self, received: ReceivedMessage, mailbox: ImapSimulator) -> None:
        """Put the delivery and read reports a real operator would send into the sender's mailbox."""
        dsn = received.dsn_parameters
        notify = set(dsn.get("NOTIFY", "FAILURE").upper().split(","))
        delivered = [r for r in received.rcpt_tos if r.lower() not in self.unknown_recipients]
        failed = [r for r in received.rcpt_tos if r.lower() in self.unknown_recipients]
        lines = [("delivered", r) for r in delivered if "SUCCESS" in notify]
        lines += [("failed", r) for r in failed if "FAILURE" in notify]
        if lines and received.mail_from:
            mailbox.append(_delivery_status(received, lines))
        reader = parseaddr(str(received.headers.get("Disposition-Notification-To", "") or ""))[1]
        if reader and received.message_id:
            for recipient in delivered:
                with self._lock:
                    chosen = self._random.random() < self.mdn_rate
                if chosen:
                    mailbox.append(_read_receipt(received, recipient, reader), delay=self.mdn_delay)

    def _forget(self, message: ReceivedMessage) -> None:
        same = self._seen.get(message.message_id)
        if same:
            same.remove(message)
            if not same:
                del self._seen[message.message_id]

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every accepted message (the last ``retain`` ones), in order (duplicates included, and marked)."""
        with self._lock:
            return list(self._messages)

    def by_message_id(self, message_id: str) -> list[ReceivedMessage]:
        """The accepted messages with this ``Message-ID`` (angle brackets optional), first one first."""
        with self._lock:
            return list(self._seen.get(message_id.strip().strip("<>"), ()))

    def clear(self) -> None:
        """Forget the messages received so far (the duplicate detection starts afresh)."""
        with self._lock:
            self._messages.clear()
            self._seen.clear()
            self._seen_ids.clear()


@lru_cache(maxsize=256)
def _encoded_subject(subject: str) -> str:
    """``Header(subject, "utf-8")`` encoded: a pure function of the few subjects a run sees, remembered."""
    return Header(subject, "utf-8").encode(linesep="\r\n")


def _original_headers(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


def _report_message(
    *, sender: str, to: str, subject: str, report_type: str, parts: list[tuple[str, bytes]], extra: str = ""
) -> bytes:
    """A multipart/report (RFC 6522) written out by hand, CRLF line ends."""
    boundary = f"=_report_{uuid.uuid4().hex}"
    encoded_subject = _encoded_subject(subject)
    head = (
        f"From: {sender}\r\n"
        f"To: <{to}>\r\n"
        f"Subject: {encoded_subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@{REPORTING_HOST}>\r\n"
        f"{extra}"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="{boundary}"\r\n'
        "\r\n"
    ).encode("ascii")
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")
        + data.rstrip(b"\r\n")
        + b"\r\n"
        for content_type, data in parts
    )
    return head + body + f"--{boundary}--\r\n".encode("ascii")


def _delivery_status(received: ReceivedMessage, lines: list[tuple[str, str]]) -> bytes:
    """The DSN of one accepted message: one block per recipient line (action, address)."""
    dsn = received.dsn_parameters
    now = format_datetime(datetime.now(UTC))
    fields = [f"Reporting-MTA: dns; {REPORTING_HOST}"]
    if "ENVID" in dsn:
        fields.append(f"Original-Envelope-Id: {dsn['ENVID']}")
    fields.append(f"Arrival-Date: {format_datetime(received.received_at)}")
    status = "\r\n".join(fields) + "\r\n"
    for action, recipient in lines:
        block = [f"Final-Recipient: rfc822; {recipient}"]
        if "ORCPT" in dsn:
            block.append(f"Original-Recipient: {dsn['ORCPT']}")
        if action == "delivered":
            block += ["Action: delivered", "Status: 2.0.0", "Diagnostic-Code: smtp; 250 2.0.0 Ok: delivered"]
        else:
            block += [
                "Action: failed",
                "Status: 5.1.1",
                f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown",
            ]
        block.append(f"Last-Attempt-Date: {now}")
        status += "\r\n" + "\r\n".join(block) + "\r\n"
    failed = any(action == "failed" for action, _ in lines)
    human = (
        "This is the mail system of the MSSante simulator.\r\n\r\n"
        + (
            "Your message could not be delivered to one or more recipients.\r\n"
            if failed
            else "Your message was delivered to its recipients.\r\n"
        )
    ).encode("ascii")
    full = dsn.get("RET", "HDRS").upper() == "FULL"
    original = (
        ("message/rfc822", received.raw) if full else ("text/rfc822-headers", _original_headers(received.raw))
    )
    return _report_message(
        sender=f"MAILER-DAEMON@{REPORTING_HOST}",
        to=received.mail_from,
        subject="Undelivered Mail Returned to Sender" if failed else "Successful Mail Delivery Report",
        report_type="delivery-status",
        parts=[
            ("text/plain; charset=us-ascii", human),
            ("message/delivery-status", status.encode("ascii")),
            original,
        ],
    )


def _read_receipt(received: ReceivedMessage, recipient: str, reader: str) -> bytes:
    """The ``displayed`` MDN a recipient's mail reader sends back (RFC 8098)."""
    original = f"<{received.message_id}>"
    fields = (
        "Reporting-UA: simulation-reader; crbio MSSante simulator\r\n"
        f"Original-Recipient: rfc822; {recipient}\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Message-ID: {original}\r\n"
        "Disposition: automatic-action/MDN-sent-automatically; displayed\r\n"
    )
    human = b"The message sent on the date below has been displayed by its recipient.\r\n"
    return _report_message(
        sender=recipient,
        to=reader,
        subject="Accusé de lecture : " + str(received.headers.get("Subject", "")),
        report_type="disposition-notification",
        parts=[
            ("text/plain; charset=us-ascii", human),
            ("message/disposition-notification", fields.encode("ascii")),
            ("text/rfc822-headers", _original_headers(received.raw)),
        ],
        extra=f"In-Reply-To: {original}\r\nReferences: {original}\r\n",
    )
