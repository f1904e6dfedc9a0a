"""A hospital PFI/DPI listening for HL7 v2 over MLLP, checking the CDA-in-HL7 volet's rules.

:class:`MllpSimulator` accepts ``ORU^R01^ORU_R01`` messages (HL7 v2.5, profile
``2.1^CISIS_CDA_HL7_V2``) on 127.0.0.1, in MLLP framing, over plain TCP or TLS with the test
PKI (client certificate optional or required). It parses each message with python-hl7, checks
what a PFI checks before publishing (message type, version, profile, patient, the document
OBX carrying base64 XML, ``OBX-11`` agreeing with ``ORC-1``, the metadata flags and the PRT
segments they call for), keeps the message and answers ``ACK^R01^ACK`` with ``MSA-1 = AA``.
A message that breaks a rule is answered ``AR`` with an ERR (HL7 table 0357 code, location),
as the volet says a PFI rejects it. A resend (same ``MSH-10``) is acknowledged again and
flagged as a duplicate, not kept twice.

Faults (one :meth:`~crbio.simulators.base.FaultPlan.draw` per message, when its first bytes
arrive): BUSY → ``AE`` with ERR ``206``; SERVER_ERROR → the message is read, then the
connection closes with no ACK; DROP → the connection closes at once; REJECT → ``AR`` with
ERR ``204``; LATENCY → the ACK comes late.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import hl7

from crbio._xml import parse_xml
from crbio.dispatch.hl7v2 import (
    FLAG_LABELS,
    FLAG_ORDER,
    FLAG_SYSTEM,
    MESSAGE_PROFILE,
    MESSAGE_TYPE,
    NO_REPLY,
    PROCESSING_IDS,
    VERSION,
    escape,
)
from crbio.dispatch.senders.mllp import END_BLOCK, START_BLOCK, frame
from crbio.errors import InputError
from crbio.simulators.base import Fault, FaultPlan, LocalServer, server_tls_context
from crbio.simulators.pki import TestPki

__all__ = ["MllpSimulator", "ReceivedMessage", "RefusedMessage"]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
_CHARSETS: Final = {"UNICODE UTF-8": "utf-8", "8859/15": "iso8859_15"}
_STATUS_FOR_ORDER: Final = {"NW": "F", "RO": "C", "CA": "D"}
_OPTIONAL_METADATA: Final = frozenset({"CORPSMAIL_PS", "CORPSMAIL_PATIENT"})
_CDA_ROOT: Final = "{urn:hl7-org:v3}ClinicalDocument"
# HL7 table 0357 texts of the codes the simulator answers with.
_ERROR_TEXTS: Final = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "206": "Application record locked",
}


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    r"""A message the simulator accepted (``AA``).

    Attributes:
        raw: The message text as received (segments separated by ``\r``).
        parsed: The python-hl7 ``Message``.
        control_id: Its ``MSH-10``.
        event: The document OBX's ``OBX-11``: F (new), C (replacement), D (deletion).
        order_control: ``ORC-1``: NW, RO or CA.
        flags: The metadata OBX values, code → Y/N, in message order.
        cda: The decoded document.
        duplicate: True when a message with the same ``MSH-10`` was accepted before.
        received_at: When it arrived.
        recipients: The MSSanté addresses of the ``RCT`` PRT segments (``PRT-15``).
        sender_id: ``PRT-5.1`` (or ``PRT-10.1``) of the ``SB`` PRT segment.
        no_reply: Whether an ``NTE-4 = FIN`` follows the DESTMSSANTEPAT OBX.
        client_certificate: Subject CN of the TLS client certificate, if one was presented.
    """

    raw: str
    parsed: Any
    control_id: str
    event: str
    order_control: str
    flags: dict[str, str]
    cda: bytes
    duplicate: bool
    received_at: datetime
    recipients: tuple[str, ...] = ()
    sender_id: str | None = None
    no_reply: bool = False
    client_certificate: str | None = None


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """A message answered ``AE`` or ``AR``: by an injected fault or because it broke a rule."""

    raw: str
    control_id: str | None
    ack_code: str
    error_code: str
    error: str
    received_at: datetime


class _Problem(Exception):
    """A rule the message breaks: HL7 table 0357 code, ERL location, a short explanation."""

    def __init__(self, code: str, location: str, explanation: str) -> None:
        super().__init__(code, location, explanation)
        self.code = code
        self.location = location
        self.explanation = explanation

    def __str__(self) -> str:
        return f"{self.code} {_ERROR_TEXTS.get(self.code, '')} at {self.location}: {self.explanation}"


# Stands for the document while python-hl7 splits the message (see _parse): no HL7 separator in it.
_PLACEHOLDER: Final = "CRBIO0DOCUMENT0PLACEHOLDER"
# Below this size the document component is left in place: splitting it costs nothing.
_SHORTCUT_MIN: Final = 4096


def _document_span(text: str, separators: str) -> tuple[int, int] | None:
    """Where the first OBX's OBX-5.5 (the base64 document) lies in ``text``, when it is plain.

    ``separators`` are python-hl7's, in its order: segment, field, repetition, component,
    subcomponent. None when there is no such component, when it is small, or when its field
    repeats or it holds a subcomponent: then python-hl7 splits the message as it is.
    """
    segment, field_sep, repetition, component, subcomponent = (separators[i] for i in range(5))
    at = text.find(f"{segment}OBX{field_sep}")
    if at < 0:
        return None
    end = text.find(segment, at + 1)
    end = len(text) if end < 0 else end
    start = at + 1
    for _ in range(5):  # to the start of OBX-5
        start = text.find(field_sep, start, end) + 1
        if start == 0:
            return None
    stop = text.find(field_sep, start, end)
    stop = end if stop < 0 else stop
    if text.find(repetition, start, stop) >= 0:
        return None
    for _ in range(4):  # to the start of the fifth component
        start = text.find(component, start, stop) + 1
        if start == 0:
            return None
    finish = text.find(component, start, stop)
    finish = stop if finish < 0 else finish
    if finish - start < _SHORTCUT_MIN or text.find(subcomponent, start, finish) >= 0:
        return None
    return start, finish


def _replace_leaf(node: Any, old: str, new: str) -> int:
    """Replace the string leaves equal to ``old`` under ``node`` by ``new``; how many were replaced."""
    count = 0
    for index, child in enumerate(node):
        if isinstance(child, str):
            if child == old:
                node[index] = new
                count += 1
        else:
            count += _replace_leaf(child, old, new)
    return count


def _parse(text: str) -> Any:
    """``hl7.parse(text)``, without python-hl7 copying the embedded document at every level.

    python-hl7 splits each segment, field, repetition and component with ``str.split``: the
    document OBX's base64 (hundreds of kilobytes) is copied and scanned at each of those
    levels. The document component holds no separator, so it is one leaf of the tree wherever
    it stands; the message is parsed with a short placeholder in its place and the leaf is
    then set to the document, giving the very tree ``hl7.parse(text)`` gives.
    """
    message = text.strip()
    if message[:3] not in ("MSH", "FHS", "BHS") or len(message) < 9:
        return hl7.parse(text)
    separators = hl7.parser.create_parse_plan(message).separators
    span = _document_span(message, separators)
    if span is None or any(c in _PLACEHOLDER for c in separators):
        return hl7.parse(text)
    start, finish = span
    parsed = hl7.parse(message[:start] + _PLACEHOLDER + message[finish:])
    # The first OBX of the parsed message is the one the span was found in.
    obx = next((s for s in parsed if str(s[0]) == "OBX"), None)
    if obx is None or len(obx) <= 5 or _replace_leaf(obx[5], _PLACEHOLDER, message[start:finish]) != 1:
        return hl7.parse(text)  # not the expected shape: let python-hl7 split it all
    return parsed


def _get(segment: Any, field_no: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
    try:
        return str(segment.extract_field(1, field_no, repetition, component, subcomponent))
    except IndexError:
        return ""


def _raw(segment: Any, field_no: int) -> str:
    return str(segment(field_no)) if field_no < len(segment) else ""


def _safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)[:100] or "message"


@dataclass
class _Checked:
    control_id: str
    order_control: str
    event: str
    cda: bytes
    flags: dict[str, str] = field(default_factory=dict)
    recipients: list[str] = field(default_factory=list)
    sender_id: str | None = None
    no_reply: bool = False


def _check(parsed: Any) -> _Checked:
    """Apply the volet's rules to a parsed ORU; raises :class:`_Problem` on the first broken one."""
    msh = parsed.segment("MSH")
    if _raw(msh, 9) != MESSAGE_TYPE:
        raise _Problem("200", "MSH^1^9", f"message type must be {MESSAGE_TYPE}")
    if _get(msh, 12) != VERSION:
        raise _Problem("203", "MSH^1^12", f"version must be {VERSION}")
    if _get(msh, 11) not in PROCESSING_IDS:
        raise _Problem("202", "MSH^1^11", "processing id must be P, T or D")
    if _raw(msh, 21) != MESSAGE_PROFILE:
        raise _Problem("103", "MSH^1^21", f"message profile must be {MESSAGE_PROFILE}")
    if _get(msh, 18) not in _CHARSETS:
        raise _Problem("103", "MSH^1^18", "character set must be UNICODE UTF-8 or 8859/15")
    control_id = _get(msh, 10)
    if not control_id:
        raise _Problem("101", "MSH^1^10", "message control id missing")
    names = [str(segment[0][0]) for segment in parsed]
    for required in ("PID", "ORC", "OBR", "OBX"):
        if required not in names:
            raise _Problem("100", required, f"{required} segment missing")
    order = [names.index(n) for n in ("PID", "ORC", "OBR", "OBX")]
    if order != sorted(order) or ("PV1" in names and not order[0] < names.index("PV1") < order[1]):
        raise _Problem("100", "ORC", "segments out of order (MSH, PID, [PV1], ORC, OBR, OBX…)")
    pid = parsed.segment("PID")
    if not _get(pid, 3):
        raise _Problem("101", "PID^1^3", "patient identifiers missing")
    order_control = _get(parsed.segment("ORC"), 1)
    if order_control not in _STATUS_FOR_ORDER:
        raise _Problem("103", "ORC^1^1", "order control must be NW, RO or CA")
    document = parsed.segment("OBX")
    checked = _Checked(control_id, order_control, _get(document, 11), _document(document))
    if checked.event not in _STATUS_FOR_ORDER.values():
        raise _Problem("103", "OBX^1^11", "result status must be F, C or D")
    if _STATUS_FOR_ORDER[order_control] != checked.event:
        raise _Problem(
            "103", "OBX^1^11", f"result status {checked.event} disagrees with order control {order_control}"
        )
    _metadata(parsed, checked)
    return checked


def _document(obx: Any) -> bytes:
    """The CDA of the first OBX, decoded and checked to be a ClinicalDocument."""
    if _get(obx, 2) != "ED":
        raise _Problem("102", "OBX^1^2", "the document OBX must be of type ED")
    kind, subtype, encoding = (_get(obx, 5, c) for c in (2, 3, 4))
    if kind.upper() != "TEXT" or subtype != "XML" or encoding != "Base64":
        raise _Problem("102", "OBX^1^5", "the document must be ^TEXT^XML^Base64^…")
    try:
        cda = base64.b64decode(_get(obx, 5, 5), validate=True)
    except (binascii.Error, ValueError):
        raise _Problem("102", "OBX^1^5", "the document is not valid base64") from None
    try:
        root = parse_xml(cda, label="OBX-5").getroot()
    except InputError:
        raise _Problem("102", "OBX^1^5", "the document is not well-formed XML") from None
    if root.tag != _CDA_ROOT:
        raise _Problem("102", "OBX^1^5", "the document is not a CDA R2 ClinicalDocument")
    return cda


def _metadata(parsed: Any, checked: _Checked) -> None:
    """Read the PRT and metadata OBX segments after the document OBX, checking the volet's rules."""
    obx_seen = 0
    last_flag: str | None = None
    has_sender = False
    for segment in parsed:
        name = str(segment[0][0])
        if name == "OBX":
            obx_seen += 1
            if obx_seen == 1:
                continue
            location = f"OBX^{obx_seen}^3"
            code = _get(segment, 3, 1)
            last_flag = code
            if code in _OPTIONAL_METADATA:
                continue
            if code not in FLAG_LABELS or _get(segment, 3, 3) != FLAG_SYSTEM:
                raise _Problem("103", location, "unknown DMP/MSSanté metadata")
            if _get(segment, 2) != "CE":
                raise _Problem("102", f"OBX^{obx_seen}^2", "metadata OBX must be of type CE")
            value = _get(segment, 5, 1)
            if value not in ("Y", "N"):
                raise _Problem("103", f"OBX^{obx_seen}^5", "metadata value must be Y or N")
            if code in checked.flags:
                raise _Problem("100", location, "metadata repeated")
            if checked.flags and FLAG_ORDER.index(code) < FLAG_ORDER.index(list(checked.flags)[-1]):
                raise _Problem("100", location, "metadata out of the volet's order")
            checked.flags[code] = value
        elif name == "PRT" and obx_seen == 1:
            role = _get(segment, 4, 1)
            if role == "SB":
                has_sender = True
                checked.sender_id = _get(segment, 5, 1) or _get(segment, 10, 1) or None
            elif role == "RCT":
                if _get(segment, 15, 3) != "X.400" or "@" not in _get(segment, 15, 4):
                    raise _Problem("101", "PRT^1^15", "an RCT participation needs ^^X.400^<address>")
                checked.recipients.append(_get(segment, 15, 4))
        elif name == "NTE" and last_flag == "DESTMSSANTEPAT" and _get(segment, 4) == NO_REPLY:
            checked.no_reply = True
    if checked.flags.get("DESTDMP") == "Y" and not has_sender:
        raise _Problem("101", "PRT", "DMP publication needs the sender (PRT SB)")
    if (
        "Y" in (checked.flags.get("DESTMSSANTEPS"), checked.flags.get("DESTMSSANTEPAT"))
        and not checked.recipients
    ):
        raise _Problem("101", "PRT", "MSSanté sending needs the recipients (PRT RCT)")


def _serve(simulator: MllpSimulator, sock: socket.socket, certificate: str | None) -> None:
    buffer = bytearray()
    while True:
        while not buffer.strip():
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
        # The first bytes of a message are here: this is one request.
        fault = simulator.faults.draw()
        if fault is Fault.DROP:
            return
        # A TLS read brings at most 16 KB: look for the end block in the new bytes only (and
        # the byte before them), not in the whole message again after every read.
        start = buffer.find(START_BLOCK)
        end = buffer.find(END_BLOCK, start + 1) if start >= 0 else -1
        while end < 0:
            if len(buffer) > MAX_MESSAGE_BYTES:
                return
            chunk = sock.recv(65536)
            if not chunk:
                return
            searched = len(buffer)
            buffer += chunk
            if start < 0:
                start = buffer.find(START_BLOCK)
                if start >= 0:
                    end = buffer.find(END_BLOCK, start + 1)
            else:
                end = buffer.find(END_BLOCK, max(start + 1, searched - len(END_BLOCK) + 1))
        with memoryview(buffer) as view:
            payload = bytes(view[start + 1 : end])
        del buffer[: end + len(END_BLOCK)]
        if fault is Fault.SERVER_ERROR:
            return
        sock.sendall(frame(simulator._answer(payload, fault, certificate)))


def _common_name(sock: socket.socket) -> str | None:
    peer = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    if not peer:
        return None
    for rdn in peer.get("subject", ()):
        for attribute in rdn:
            if attribute[0] == "commonName":
                return str(attribute[1])
    return None


class MllpSimulator:
    """A PFI/DPI on 127.0.0.1 that receives HL7 v2 ORU messages over MLLP (see the module docstring).

    Args:
        pki: The test PKI (server certificate and CA); required with ``tls``.
        tls: Serve TLS instead of plain TCP.
        faults: Faults to inject; a new, empty plan when None.
        store_dir: Where accepted messages are written (``<MSH-10>.hl7``, ``.cda.xml``, ``.json``).
        require_client_cert: With TLS, refuse clients without a certificate from the PKI's CA
            (otherwise one is asked for but optional).
        application: ``MSH-3`` of the acknowledgements when the message's ``MSH-5`` is unreadable.
        facility: ``MSH-4`` likewise.
        idle_timeout: Seconds a connection may stay silent before the simulator closes it.
        retain: How many accepted and refused messages :attr:`messages` and :attr:`refused`
            keep in memory, the oldest forgotten first (None: all). Resends are still
            recognised after that; a long run with a ``store_dir`` needs no more than the last few.
    """

    def __init__(
        self,
        *,
        pki: TestPki | None = None,
        tls: bool = False,
        faults: FaultPlan | None = None,
        store_dir: Path | None = None,
        require_client_cert: bool = False,
        application: str = "PFI-SIMULATEUR",
        facility: str = "CRBIO",
        idle_timeout: float = 10.0,
        retain: int | None = None,
    ) -> None:
        if tls and pki is None:
            raise ValueError("an MLLP simulator with TLS needs the test PKI")
        self.pki = pki
        self.tls = tls
        self.faults = faults if faults is not None else FaultPlan()
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.require_client_cert = require_client_cert
        self.application = application
        self.facility = facility
        self.idle_timeout = idle_timeout
        self.retain = retain
        self.messages: list[ReceivedMessage] = []
        self.refused: list[RefusedMessage] = []
        # The control ids of self.messages, so that a resend is found without a scan; rebuilt if
        # the list was changed from outside (its length is not the one last indexed).
        self._control_ids: set[str] = set()
        self._indexed = 0
        self._lock = threading.Lock()
        self._server: LocalServer | None = None

    @property
    def host(self) -> str:
        """The listening address (127.0.0.1)."""
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The listening port, chosen by the system when the simulator starts."""
        if self._server is None:
            raise RuntimeError("the MLLP simulator is not started")
        return self._server.port

    @property
    def accepted(self) -> list[ReceivedMessage]:
        """The accepted messages without their duplicates."""
        with self._lock:
            return [m for m in self.messages if not m.duplicate]

    def start(self) -> MllpSimulator:
        """Listen on 127.0.0.1 (a free port) and serve in a background thread."""
        if self._server is not None:
            return self
        tls = None
        if self.tls and self.pki is not None:
            tls = server_tls_context(
                self.pki, client_certificate="required" if self.require_client_cert else "optional"
            )
        if self.store_dir is not None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        self._server = LocalServer(
            self, self._serve_connection, name="mllp-simulator", tls=tls, handshake_timeout=self.idle_timeout
        )
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop listening, close open connections and wait for every connection thread."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        sock.settimeout(self.idle_timeout)
        _serve(self, sock, _common_name(sock))

    def clear(self) -> None:
        """Forget the messages received so far (duplicates are then detected afresh)."""
        with self._lock:
            self.messages.clear()
            self.refused.clear()
            self._control_ids.clear()
            self._indexed = 0

    def __enter__(self) -> MllpSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Answering a message.

    def _answer(self, payload: bytes, fault: Fault | None, certificate: str | None) -> bytes:
        received_at = datetime.now().astimezone()
        head = payload[:2048].decode("latin-1")
        charset = "utf-8"
        for name, codec in _CHARSETS.items():
            if f"|{name}|" in head.split("\r", 1)[0] + "|":
                charset = codec
        text = payload.decode(charset, errors="replace").replace("\r\n", "\r").replace("\n", "\r").strip("\r")
        try:
            parsed = _parse(text)
            msh = parsed.segment("MSH")
        except Exception:  # python-hl7 raises assorted errors on garbage
            return self._refuse(
                text, None, None, "AR", _Problem("100", "MSH", "not an HL7 v2 message"), received_at
            )
        control_id = _get(msh, 10) or None
        if fault is Fault.BUSY:
            problem = _Problem("206", "MSH", "simulated busy receiver, try later")
            return self._refuse(text, msh, control_id, "AE", problem, received_at)
        if fault is Fault.REJECT:
            problem = _Problem("204", "PID^1^3", "simulated permanent rejection")
            return self._refuse(text, msh, control_id, "AR", problem, received_at)
        try:
            checked = _check(parsed)
        except _Problem as problem:
            return self._refuse(text, msh, control_id, "AR", problem, received_at)
        with self._lock:
            if len(self.messages) != self._indexed:
                self._control_ids = {m.control_id for m in self.messages}
            duplicate = checked.control_id in self._control_ids
            message = ReceivedMessage(
                raw=text,
                parsed=parsed,
                control_id=checked.control_id,
                event=checked.event,
                order_control=checked.order_control,
                flags=checked.flags,
                cda=checked.cda,
                duplicate=duplicate,
                received_at=received_at,
                recipients=tuple(checked.recipients),
                sender_id=checked.sender_id,
                no_reply=checked.no_reply,
                client_certificate=certificate,
            )
            self.messages.append(message)
            self._control_ids.add(message.control_id)
            if self.retain is not None and len(self.messages) > self.retain:
                del self.messages[: len(self.messages) - self.retain]
            self._indexed = len(self.messages)
        if not duplicate:
            self._store(message)
        logger.info(
            "MLLP simulator: accepted %s (%s%s)", checked.control_id, checked.event, ", duplicate" * duplicate
        )
        return self._ack(msh, "AA", checked.control_id, None)

    def _refuse(
        self,
        text: str,
        msh: Any,
        control_id: str | None,
        code: str,
        problem: _Problem,
        received_at: datetime,
    ) -> bytes:
        with self._lock:
            self.refused.append(
                RefusedMessage(text, control_id, code, problem.code, str(problem), received_at)
            )
            if self.retain is not None and len(self.refused) > self.retain:
                del self.refused[: len(self.refused) - self.retain]
        logger.info("MLLP simulator: %s %s (%s)", code, control_id, problem)
        return self._ack(msh, code, control_id, problem)

    def _ack(self, msh: Any, code: str, control_id: str | None, problem: _Problem | None) -> bytes:
        """``ACK^R01^ACK``: the message's receiver as sender and back, its processing id, MSA, ERR."""
        application = _raw(msh, 5) if msh is not None else ""
        facility = _raw(msh, 6) if msh is not None else ""
        processing = _raw(msh, 11) if msh is not None else ""
        segments = [
            "|".join(
                [
                    "MSH",
                    "^~\\&",
                    application or escape(self.application),
                    facility or escape(self.facility),
                    _raw(msh, 3) if msh is not None else "",
                    _raw(msh, 4) if msh is not None else "",
                    datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z"),
                    "",
                    "ACK^R01^ACK",
                    uuid.uuid4().hex[:20],
                    processing if processing in PROCESSING_IDS else "P",
                    VERSION,
                    "",
                    "",
                    "",
                    "",
                    "FRA",
                    "UNICODE UTF-8",
                ]
            ),
            f"MSA|{code}|{escape(control_id or '')}",
        ]
        if problem is not None:
            text = _ERROR_TEXTS.get(problem.code, "")
            severity = "W" if code == "AE" and problem.code == "206" else "E"
            segments.append(f"ERR||{problem.location}|{problem.code}^{escape(text)}^HL70357|{severity}")
        return ("\r".join(segments) + "\r").encode("utf-8")

    def _store(self, message: ReceivedMessage) -> None:
        if self.store_dir is None:
            return
        stem = _safe_name(message.control_id)
        (self.store_dir / f"{stem}.hl7").write_text(message.raw.replace("\r", "\n"), encoding="utf-8")
        (self.store_dir / f"{stem}.cda.xml").write_bytes(message.cda)
        summary = {
            "control_id": message.control_id,
            "event": message.event,
            "order_control": message.order_control,
            "flags": message.flags,
            "recipients": list(message.recipients),
            "no_reply": message.no_reply,
            "received_at": message.received_at.isoformat(),
            "client_certificate": message.client_certificate,
        }
        (self.store_dir / f"{stem}.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8"
        )
