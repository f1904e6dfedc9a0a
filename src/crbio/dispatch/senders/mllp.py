r"""HL7 v2 over MLLP: the CR-BIO as an ``ORU^R01`` to a hospital PFI/DPI, answered by an ``ACK``.

MLLP (HL7 "Minimal Lower Layer Protocol") frames each message as ``\x0b`` message
``\x1c\x0d`` on a TCP stream; the receiver answers with an acknowledgement in the same
framing. The sender keeps its connection (optionally TLS with a client certificate) open
while messages follow each other, so a burst pays for one TLS handshake, and closes it after
``keep_alive`` idle seconds, before interface engines drop it on their side. A connection the
server closed meanwhile is noticed before it is reused; one that fails during an exchange is
closed, since the stream may be out of step.

How acknowledgements are read (HL7 v2.5 §2.9.2, original and enhanced modes; ERR-3 from HL7
table 0357):

- ``AA`` / ``CA``: delivered.
- An ERR-3 code saying the message itself is wrong (1xx segment/field errors, 200-205
  unsupported type/event/processing id/version, unknown or duplicate key): permanent, since the
  same message would be refused again.
- ERR-3 ``206`` (record locked) or ``207`` (internal error): transient.
- Otherwise by MSA-1: ``AE`` / ``CE`` (application or commit error) are transient (the receiver
  could not process the message now), ``AR`` / ``CR`` (rejected) are permanent.
- No ACK (timeout, connection closed or refused, TLS failure), an unreadable ACK, or an ACK
  whose ``MSA-2`` is not the ``MSH-10`` sent: transient. A resend carries the same ``MSH-10``
  (``job.control_id``), so the PFI can recognise it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Self

from crbio.dispatch.delivery import Acknowledgement, Channel, Job
from crbio.dispatch.hl7v2 import PROCESSING_IDS, AckInfo, build_oru, read_ack
from crbio.dispatch.senders._shared import shared
from crbio.dispatch.senders.base import Sender, SenderContext, peer_closed
from crbio.dispatch.tls import server_certificate_problem, tls_context
from crbio.errors import ConfigurationError, InputError, PermanentSendError, TransientSendError

__all__ = ["END_BLOCK", "START_BLOCK", "MllpSender", "frame", "read_frame"]

logger = logging.getLogger(__name__)

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\x0d"
MAX_ACK_BYTES: Final = 1024 * 1024

_WHERE: Final = "destinations.hl7v2"
_KNOWN_KEYS: Final = frozenset(
    {
        "name",
        "host",
        "port",
        "tls",
        "ca_file",
        "timeout",
        "keep_alive",
        "receiving_application",
        "receiving_facility",
        "processing_id",
    }
)
_SUCCESS: Final = frozenset({"AA", "CA"})
_REJECT_CODES: Final = frozenset({"AR", "CR"})
# HL7 table 0357: errors in the message itself, which a resend cannot fix...
_PERMANENT_ERRORS: Final = frozenset(
    {"100", "101", "102", "103", "104", "200", "201", "202", "203", "204", "205"}
)
# ...and the receiver's own troubles, which may clear.
_TRANSIENT_ERRORS: Final = frozenset({"206", "207"})


def frame(message: bytes) -> bytes:
    r"""``message`` in an MLLP block: ``\x0b`` + message + ``\x1c\x0d``."""
    return START_BLOCK + message + END_BLOCK


class _NoFrame(Exception):
    """The peer closed the connection before a complete MLLP block arrived."""


def read_frame(
    sock: socket.socket, *, max_bytes: int = MAX_ACK_BYTES, deadline: float | None = None
) -> bytes:
    """Read one MLLP block from ``sock`` and return its content (without the framing bytes).

    Bytes before the start block are skipped. ``deadline`` is a :func:`time.monotonic` time
    after which :class:`TimeoutError` is raised, however slowly the bytes trickle in.

    Raises:
        TimeoutError: the deadline (or the socket's own timeout) passed.
        ConnectionError: the peer closed the connection before the end block.
        ValueError: the block is larger than ``max_bytes``.
    """
    buffer = bytearray()
    while True:
        start = buffer.find(START_BLOCK)
        if start >= 0:
            end = buffer.find(END_BLOCK, start + 1)
            if end >= 0:
                return bytes(buffer[start + 1 : end])
        if len(buffer) > max_bytes + 3:
            raise ValueError(f"MLLP block larger than {max_bytes} bytes")
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no complete MLLP block before the deadline")
            sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a complete MLLP block")
        buffer += chunk


class MllpSender(Sender):
    """Sends jobs as HL7 v2.5 ``ORU^R01`` messages over MLLP (TCP, optionally TLS).

    Configuration (``[destinations.hl7v2]``, ``sender = "mllp"``):

    - ``host`` (required), ``port`` (required): the PFI's MLLP listener.
    - ``tls`` (default false): wrap the connection in TLS; the server certificate is always
      verified, against ``ca_file`` when given.
    - ``ca_file``: PEM bundle of the CAs to trust (IGC Santé chains are not in public stores).
    - ``client_cert`` + ``client_key``, or ``client_pkcs12``, with ``client_password_file`` /
      ``client_password_env``: the client certificate (ORG AUTH_CLI) when the PFI asks for one.
    - ``timeout`` (seconds, default 30): for connecting, and for the whole wait for the ACK.
    - ``keep_alive`` (seconds, default 30): how long an idle connection is kept for the next
      message; 0 opens one connection per message.
    - ``receiving_application``, ``receiving_facility`` (required): ``MSH-5`` and ``MSH-6``, as
      HD values (``PFI`` or ``PFI^1.2.3^ISO``).
    - ``processing_id`` (default ``P``): ``MSH-11``, ``P`` production, ``T`` test, ``D`` debug.
    - ``name``: the destination's name, used as the recipient address by the routing plan.
    """

    channel = Channel.HL7V2

    def __init__(
        self,
        *,
        host: str,
        port: int,
        context: SenderContext,
        receiving_application: str,
        receiving_facility: str,
        processing_id: str = "P",
        timeout: float = 30.0,
        keep_alive: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.receiving_application = receiving_application
        self.receiving_facility = receiving_facility
        self.processing_id = processing_id
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.tls = tls
        self._sock: socket.socket | None = None
        self._idle_since = 0.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any], context: SenderContext) -> Self:
        """Build the sender from ``[destinations.hl7v2]`` (keys in the class docstring).

        Raises:
            ConfigurationError: a setting is missing, unknown or wrong; the message names it.
        """
        for key in section:
            if key not in _KNOWN_KEYS and not key.startswith("client_"):
                raise ConfigurationError(f"{_WHERE}.{key}: unknown setting", code="config.key")
        host = _text(section, "host")
        port = section.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"{_WHERE}.port: must be a port number (1-65535)", code="config.value")
        use_tls = section.get("tls", False)
        if not isinstance(use_tls, bool):
            raise ConfigurationError(f"{_WHERE}.tls: must be true or false", code="config.value")
        tls_keys = sorted(k for k in section if k == "ca_file" or k.startswith("client_"))
        if tls_keys and not use_tls:
            raise ConfigurationError(
                f"{_WHERE}.{tls_keys[0]}: only used with tls = true", code="config.value"
            )
        timeout = section.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(
                f"{_WHERE}.timeout: must be a positive number of seconds", code="config.value"
            )
        keep_alive = section.get("keep_alive", 30.0)
        if isinstance(keep_alive, bool) or not isinstance(keep_alive, int | float) or keep_alive < 0:
            raise ConfigurationError(
                f"{_WHERE}.keep_alive: must be a number of seconds (0 or more)", code="config.value"
            )
        processing_id = section.get("processing_id", "P")
        if processing_id not in PROCESSING_IDS:
            raise ConfigurationError(f"{_WHERE}.processing_id: must be P, T or D", code="config.value")
        return cls(
            host=host,
            port=port,
            context=context,
            receiving_application=_text(section, "receiving_application"),
            receiving_facility=_text(section, "receiving_facility"),
            processing_id=str(processing_id),
            timeout=float(timeout),
            keep_alive=float(keep_alive),
            # Read once per process for identical settings: every worker thread builds a sender.
            tls=shared("mllp", section, context, lambda: tls_context(section, context, where=_WHERE))
            if use_tls
            else None,
        )

    @property
    def destination(self) -> str:
        """``host:port``, for logs and journal entries."""
        return f"{self.host}:{self.port}"

    def send(self, job: Job) -> Acknowledgement:
        """Send the job's ORU and return the PFI's acknowledgement (see the module docstring).

        Raises:
            TransientSendError: no usable acknowledgement, or one saying "try later".
            PermanentSendError: the message cannot be built, or the PFI rejected it.
        """
        document = job.delivery.document_id
        try:
            message = build_oru(
                job,
                self.context,
                receiving_application=self.receiving_application,
                receiving_facility=self.receiving_facility,
                processing_id=self.processing_id,
                sent_at=datetime.now().astimezone(),
            )
        except (ValueError, InputError) as exc:
            raise PermanentSendError(
                f"HL7 v2 message for {document} cannot be built: {exc}",
                reason=str(exc),
                detail={"message_control_id": job.control_id},
            ) from exc
        control_id = job.control_id
        detail: dict[str, object] = {"message_control_id": control_id, "destination": self.destination}
        try:
            reply = self._exchange(message.encode("utf-8"))
        except TimeoutError:
            raise TransientSendError(
                f"HL7 v2 {document} to {self.destination}: no acknowledgement within {self.timeout:g} s",
                reason="timeout",
                detail=detail,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            # Our CA bundle, the host name or the listener's certificate: a person must fix it.
            reason = f"TLS: {server_certificate_problem(exc, where=_WHERE, address='host')}"
            raise PermanentSendError(
                f"HL7 v2 {document} to {self.destination}: {reason}", reason=reason, detail=detail
            ) from None
        except ssl.SSLError as exc:
            reason = f"TLS: {exc.reason or type(exc).__name__}"
            raise TransientSendError(
                f"HL7 v2 {document} to {self.destination}: {reason}", reason=reason, detail=detail
            ) from None
        except (OSError, ValueError) as exc:
            reason = _describe(exc)
            raise TransientSendError(
                f"HL7 v2 {document} to {self.destination}: {reason}", reason=reason, detail=detail
            ) from None
        try:
            info = read_ack(reply.decode("utf-8", errors="replace"))
        except ValueError as exc:
            raise TransientSendError(
                f"HL7 v2 {document} to {self.destination}: unreadable acknowledgement ({exc})",
                reason=f"unreadable acknowledgement: {exc}",
                detail=detail,
            ) from None
        detail.update({"msa": info.code, "ack_control_id": info.ack_control_id})
        if info.control_id != control_id:
            # An ACK for another message (a confused or shared listener) proves nothing about ours.
            raise TransientSendError(
                f"HL7 v2 {document} to {self.destination}: acknowledgement is for another message",
                reason="acknowledgement control id mismatch",
                detail={**detail, "acknowledged_control_id": info.control_id},
            )
        if info.code in _SUCCESS:
            logger.info(
                "HL7 v2 %s (%s) delivered to %s: MSA %s", document, job.key[:12], self.destination, info.code
            )
            # control_id is MSA-2, the MSH-10 acknowledged (equal to the one sent, checked above).
            return Acknowledgement(
                f"MSA {info.code}",
                {
                    "msa": info.code,
                    "control_id": info.control_id,
                    "message_control_id": control_id,
                    "ack_control_id": info.ack_control_id,
                },
            )
        reason = f"MSA {info.code}" + (f": {info.error_text}" if info.error_text else "")
        detail["errors"] = [e.code for e in info.errors if e.code]
        if _retryable(info):
            logger.warning("HL7 v2 %s to %s not accepted, will retry: %s", document, self.destination, reason)
            raise TransientSendError(
                f"HL7 v2 {document} to {self.destination}: {reason}", reason=reason, detail=detail
            )
        raise PermanentSendError(
            f"HL7 v2 {document} to {self.destination}: {reason}", reason=reason, detail=detail
        )

    def close(self) -> None:
        """Close the connection kept for the next message, if any."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connection(self, deadline: float) -> socket.socket:
        if self._sock is not None and (
            time.monotonic() - self._idle_since > self.keep_alive or peer_closed(self._sock)
        ):
            self.close()
        if self._sock is None:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
            try:
                self._sock = raw if self.tls is None else self.tls.wrap_socket(raw, server_hostname=self.host)
            except BaseException:
                raw.close()
                raise
        self._sock.settimeout(max(0.001, deadline - time.monotonic()))
        return self._sock

    def _exchange(self, payload: bytes) -> bytes:
        """Send the framed message and read the framed reply on the kept (or a new) connection."""
        deadline = time.monotonic() + self.timeout
        try:
            sock = self._connection(deadline)
            sock.sendall(frame(payload))
            reply = read_frame(sock, deadline=deadline)
        except BaseException:
            self.close()
            raise
        if self.keep_alive > 0:
            self._idle_since = time.monotonic()
        else:
            self.close()
        return reply


def _retryable(info: AckInfo) -> bool:
    codes = {e.code for e in info.errors}
    if codes & _PERMANENT_ERRORS:
        return False
    if codes & _TRANSIENT_ERRORS:
        return True
    # AE/CE say "could not process it now"; codes outside HL7 table 0008 say nothing final either.
    return info.code not in _REJECT_CODES


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, ConnectionError):
        return "connection closed without acknowledgement"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, ValueError):
        return str(exc)
    return f"network error ({exc.strerror or type(exc).__name__})" if isinstance(exc, OSError) else str(exc)


def _text(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{_WHERE}.{key}: required (a non-empty string)", code="config.value")
    return value.strip()
