"""SOAP 1.2 for XDS.b: the envelope (WS-Addressing, WS-Security), MTOM/XOP packaging and unpacking.

An ITI-41 request is a ``multipart/related`` MTOM message: the root part is the SOAP envelope
(``application/xop+xml; type="application/soap+xml"``) in which each ``xdsb:Document`` holds
an ``xop:Include href="cid:…"``, and every document travels as its own binary
``application/octet-stream`` part. ITI-18 and ITI-57 requests are plain SOAP. Responses may
come back either way, so :func:`parse_message` reads both. Layout per the domain note §1.2
(the ANS DRIMbox client) and W3C XOP/MTOM.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message

from lxml import etree

from crbio._xml import parse_xml
from crbio.errors import InputError

__all__ = [
    "ACTION_PROVIDE_AND_REGISTER",
    "ACTION_REGISTRY_STORED_QUERY",
    "ACTION_UPDATE_DOCUMENT_SET",
    "SOAP_CONTENT_TYPE",
    "Attachment",
    "HttpRequest",
    "SoapMessage",
    "content_id",
    "envelope",
    "mtom_request",
    "parse_message",
    "provide_and_register",
    "soap_request",
]

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
XOP = "http://www.w3.org/2004/08/xop/include"
XDSB = "urn:ihe:iti:xds-b:2007"

ACTION_PROVIDE_AND_REGISTER = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_REGISTRY_STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_UPDATE_DOCUMENT_SET = "urn:ihe:iti:2010:UpdateDocumentSet"

SOAP_CONTENT_TYPE = "application/soap+xml"
_XOP_CONTENT_TYPE = "application/xop+xml"
_CID_DOMAIN = "crbio.invalid"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One binary MIME part: its Content-ID (without angle brackets), type and bytes."""

    content_id: str
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A ready-to-post SOAP request: the HTTP Content-Type header and the body bytes."""

    content_type: str
    body: bytes


@dataclass(frozen=True)
class SoapMessage:
    """A received SOAP 1.2 message: the envelope, its first Body child and any MIME parts."""

    envelope: etree._Element
    body: etree._Element | None
    attachments: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def action(self) -> str | None:
        """The WS-Addressing Action of the message, if any."""
        found = self.envelope.find(f"{{{SOAP}}}Header/{{{WSA}}}Action")
        return None if found is None or found.text is None else found.text.strip()


def envelope(
    *,
    action: str,
    to: str,
    body: etree._Element,
    security: Sequence[etree._Element] = (),
    message_id: str | None = None,
) -> etree._Element:
    """A SOAP 1.2 envelope with WS-Addressing and, when given, a ``wsse:Security`` header.

    ``wsa:Action`` is ``mustUnderstand``; ``message_id`` defaults to a new ``urn:uuid:``.
    ``security`` holds the elements of the Security header (the signed VIHF assertion).
    """
    env = etree.Element(f"{{{SOAP}}}Envelope", nsmap={"soap": SOAP, "wsa": WSA})
    header = etree.SubElement(env, f"{{{SOAP}}}Header")
    action_el = etree.SubElement(header, f"{{{WSA}}}Action", {f"{{{SOAP}}}mustUnderstand": "true"})
    action_el.text = action
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = message_id or f"urn:uuid:{uuid.uuid4()}"
    etree.SubElement(header, f"{{{WSA}}}To").text = to
    if security:
        holder = etree.SubElement(
            header, f"{{{WSSE}}}Security", {f"{{{SOAP}}}mustUnderstand": "true"}, nsmap={"wsse": WSSE}
        )
        for element in security:
            holder.append(element)
    etree.SubElement(env, f"{{{SOAP}}}Body").append(body)
    return env


def provide_and_register(
    submit_objects: etree._Element, documents: Sequence[tuple[str, str]]
) -> etree._Element:
    """The ITI-41 ``xdsb:ProvideAndRegisterDocumentSetRequest`` body.

    ``documents`` pairs each DocumentEntry id with the Content-ID of the MIME part holding its
    bytes; each becomes ``<xdsb:Document id="…"><xop:Include href="cid:…"/></xdsb:Document>``.
    """
    request = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": XDSB})
    request.append(submit_objects)
    for entry_id, content_id in documents:
        document = etree.SubElement(request, f"{{{XDSB}}}Document", id=entry_id)
        etree.SubElement(document, f"{{{XOP}}}Include", href=f"cid:{content_id}", nsmap={"xop": XOP})
    return request


def content_id(label: str) -> str:
    """A Content-ID (without angle brackets) for a part named ``label`` in a new message."""
    return f"{label}.{uuid.uuid4().hex}@{_CID_DOMAIN}"


def _serialize(element: etree._Element) -> bytes:
    return bytes(etree.tostring(element, xml_declaration=True, encoding="UTF-8"))


def soap_request(env: etree._Element, action: str) -> HttpRequest:
    """A plain SOAP 1.2 request (no attachments), for ITI-18 and ITI-57."""
    return HttpRequest(f'{SOAP_CONTENT_TYPE}; charset=UTF-8; action="{action}"', _serialize(env))


def mtom_request(env: etree._Element, attachments: Sequence[Attachment], action: str) -> HttpRequest:
    """An MTOM/XOP ``multipart/related`` request: the envelope as root part, then each attachment.

    Parts are sent with ``Content-Transfer-Encoding: binary``; the boundary is drawn until it
    occurs in none of the parts.
    """
    root_xml = _serialize(env)
    root_id = content_id("root")
    while True:
        boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
        marker = boundary.encode("ascii")
        if marker not in root_xml and all(marker not in a.data for a in attachments):
            break
    chunks: list[bytes] = []

    def part(headers: Sequence[tuple[str, str]], data: bytes) -> None:
        chunks.append(b"--" + marker + b"\r\n")
        for name, value in headers:
            chunks.append(f"{name}: {value}\r\n".encode("ascii"))
        chunks.append(b"\r\n")
        chunks.append(data)
        chunks.append(b"\r\n")

    part(
        [
            ("Content-Type", f'{_XOP_CONTENT_TYPE}; charset=UTF-8; type="{SOAP_CONTENT_TYPE}"'),
            ("Content-Transfer-Encoding", "binary"),
            ("Content-ID", f"<{root_id}>"),
        ],
        root_xml,
    )
    for attachment in attachments:
        part(
            [
                ("Content-Type", attachment.content_type),
                ("Content-Transfer-Encoding", "binary"),
                ("Content-ID", f"<{attachment.content_id}>"),
            ],
            attachment.data,
        )
    chunks.append(b"--" + marker + b"--\r\n")
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="{_XOP_CONTENT_TYPE}"; start="<{root_id}>"; '
        f'start-info="{SOAP_CONTENT_TYPE}"; action="{action}"'
    )
    return HttpRequest(content_type, b"".join(chunks))


def _content_type(value: str) -> Message:
    header = Message()
    header["Content-Type"] = value
    return header


def _split_multipart(body: bytes, boundary: str, label: str) -> list[tuple[Message, bytes]]:
    """The parts of a multipart body, each as (headers, exact bytes), without decoding."""
    delimiter = b"--" + boundary.encode("latin-1")
    pieces = body.split(delimiter)
    if len(pieces) < 3:
        raise InputError(f"{label}: multipart body without parts", code="input.mime")
    parts: list[tuple[Message, bytes]] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        # A delimiter is followed by optional blanks and CRLF, and its own CRLF belongs to it.
        piece = re.sub(rb"\A[ \t]*\r?\n", b"", piece, count=1)
        if piece.endswith(b"\r\n"):
            piece = piece[:-2]
        elif piece.endswith(b"\n"):
            piece = piece[:-1]
        head, sep, data = piece.partition(b"\r\n\r\n")
        if not sep:
            head, sep, data = piece.partition(b"\n\n")
        headers = Message()
        for line in re.split(rb"\r?\n(?![ \t])", head):
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                headers[name.strip()] = " ".join(value.split())
        parts.append((headers, data))
    return parts


def parse_message(content_type: str | None, body: bytes, *, label: str = "SOAP response") -> SoapMessage:
    """Read a SOAP 1.2 message, plain or MTOM/XOP ``multipart/related``.

    For a multipart message the root part is the one named by the ``start`` parameter (the
    first part otherwise); the other parts are returned by Content-ID.

    Raises:
        InputError: the body is not a SOAP 1.2 envelope (``input.xml`` / ``input.mime``).
    """
    header = _content_type(content_type or SOAP_CONTENT_TYPE)
    attachments: dict[str, bytes] = {}
    root = body
    if header.get_content_maintype() == "multipart":
        boundary = header.get_param("boundary")
        if not isinstance(boundary, str) or not boundary:
            raise InputError(f"{label}: multipart without a boundary", code="input.mime")
        parts = _split_multipart(body, boundary, label)
        start_param = header.get_param("start")
        start = start_param.strip("<>") if isinstance(start_param, str) else None
        root_index = 0
        for index, (headers, _data) in enumerate(parts):
            cid = (headers.get("Content-ID") or "").strip().strip("<>")
            if start is not None and cid == start:
                root_index = index
        for index, (headers, data) in enumerate(parts):
            if index == root_index:
                root = data
            else:
                attachments[(headers.get("Content-ID") or "").strip().strip("<>")] = data
    tree = parse_xml(root, label=label)
    env = tree.getroot()
    if env.tag != f"{{{SOAP}}}Envelope":
        raise InputError(f"{label}: not a SOAP 1.2 envelope", code="input.xml")
    body_el = env.find(f"{{{SOAP}}}Body")
    first = None
    if body_el is not None:
        first = next((child for child in body_el if isinstance(child.tag, str)), None)
    return SoapMessage(envelope=env, body=first, attachments=attachments)
