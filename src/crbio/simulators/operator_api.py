"""An MSSanté operator's REST API (FHIR R4 over HTTPS, OAuth 2.0 client credentials) on 127.0.0.1.

:class:`OperatorApiSimulator` serves the shape :mod:`crbio.dispatch.senders.operator_api`
sends to, modelled on the publicly documented Lifen API:

- ``POST /oauth/token``: the client-credentials grant (client authenticated in the form body
  or with HTTP Basic); answers ``{"access_token", "token_type": "Bearer", "expires_in"}``, or
  ``401 {"error": "invalid_client"}`` / ``400 {"error": "unsupported_grant_type"}``.
- ``POST /v3/CommunicationRequest/$send-to-mss``: needs a live bearer token; the body is a
  FHIR ``Parameters`` resource (recipients with their MSSanté address as ``telecom``, one
  ``payload`` per document, each a ``DocumentReference`` whose attachment carries the data in
  base64; see the sender's module docstring). The simulator checks the shape, that the
  ``IHE_XDM.ZIP`` attachment is a zip with the IHE XDM layout and a readable ``METADATA.XML``,
  and that the PDF attachment starts with ``%PDF``; it then keeps the message and answers
  ``201`` with a ``CommunicationRequest`` whose extension holds the tracking URL. A request
  repeating an ``Idempotency-Key`` already accepted is answered ``200`` with the same
  transaction id and is not kept twice.
- ``GET /v3/CommunicationRequest/$tracking?transaction-id=…``: the sending status as a FHIR
  ``Parameters`` resource (``delivered`` for every recipient unless a test sets another).

Errors are ``OperationOutcome`` resources. Faults apply to ``$send-to-mss`` only (one
:meth:`~crbio.simulators.base.FaultPlan.draw` per authenticated request), so that tokens and
tracking keep working while sends fail: BUSY → ``429`` with ``Retry-After``; SERVER_ERROR →
``503``; DROP → the connection closes without an answer; REJECT → ``422`` (business rule);
LATENCY → the answer comes late.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from crbio._xml import parse_xml
from crbio.errors import InputError
from crbio.simulators.base import Fault, FaultPlan, HttpHandler, LocalServer, server_tls_context
from crbio.simulators.pki import TestPki

__all__ = ["OperatorApiSimulator", "ReceivedRequest", "StoredMessage", "TRACKING_EXTENSION"]

logger = logging.getLogger(__name__)

SEND_PATH: Final = "/v3/CommunicationRequest/$send-to-mss"
TRACKING_PATH: Final = "/v3/CommunicationRequest/$tracking"
TOKEN_PATH: Final = "/oauth/token"
TRACKING_EXTENSION: Final = "https://crbio.readthedocs.io/fhir/StructureDefinition/mss-tracking-url"
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
MAX_RECIPIENTS: Final = 10  # the limit Lifen documents per sending
MAX_DOCUMENTS: Final = 10
XDM_FILES: Final = frozenset({"README.TXT", "INDEX.HTM", "IHE_XDM/SUBSET01/METADATA.XML"})
_ADDRESS: Final = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_RECIPIENT_TYPES: Final = frozenset({"Practitioner", "PractitionerRole", "Organization", "Patient"})


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One HTTP request the simulator answered (or dropped), for the tests to inspect.

    Attributes:
        method: ``GET`` or ``POST``.
        path: The request path, without the query.
        status: The HTTP status answered; 0 when the connection was dropped.
        headers: The request headers (names in lower case); ``authorization`` is kept as sent.
        received_at: When the request arrived.
        fault: The injected fault, if any.
        client_certificate: Subject CN of the TLS client certificate, if one was presented.
    """

    method: str
    path: str
    status: int
    headers: dict[str, str]
    received_at: datetime
    fault: Fault | None = None
    client_certificate: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A ``$send-to-mss`` request the simulator accepted and kept.

    Attributes:
        transaction_id: The id the simulator gave it (what ``$tracking`` takes).
        message_id: The ``message-id`` parameter (stable across the sender's retries).
        idempotency_key: The ``Idempotency-Key`` header, if any.
        recipients: The MSSanté addresses, in request order.
        recipient_types: The FHIR resource type of each recipient (``Practitioner``, ``Patient``…).
        attachments: Attachment title → decoded bytes (``IHE_XDM.ZIP``, the PDF).
        content_types: Attachment title → declared content type.
        xdm_files: The names in the ``IHE_XDM.ZIP``.
        xdm_action: The value of the ``action`` slot of ``METADATA.XML`` (C, D), if present.
        mail_subject: The ``mail-subject`` parameter.
        mail_body: The ``mail-body`` parameter.
        mss_headers: The ``mss-header`` parameters (X-MSS-*), name → value.
        sender_address: The ``sender-address`` parameter (the lab's mailbox).
        action: The ``action`` parameter (submit, replace, delete).
        resource: The whole ``Parameters`` resource as received.
        received_at: When it was accepted.
    """

    transaction_id: str
    message_id: str | None
    idempotency_key: str | None
    recipients: tuple[str, ...]
    recipient_types: tuple[str, ...]
    attachments: dict[str, bytes]
    content_types: dict[str, str]
    xdm_files: tuple[str, ...]
    xdm_action: str | None
    mail_subject: str | None
    mail_body: str | None
    mss_headers: dict[str, str]
    sender_address: str | None
    action: str | None
    resource: dict[str, Any]
    received_at: datetime
    statuses: dict[str, str] = field(default_factory=dict)


class _Refusal(Exception):
    """An answer other than success: HTTP status, OperationOutcome issue code and diagnostics."""

    def __init__(self, status: int, code: str, diagnostics: str, *, headers: dict[str, str] | None = None):
        super().__init__(status, code, diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.headers = headers or {}


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """A FHIR ``OperationOutcome`` with one issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


class _Handler(HttpHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    timeout = 60
    server_version = "crbio-operator-simulator"

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.simulator._answer(self, "POST")

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.simulator._answer(self, "GET")


def _client_cn(sock: socket.socket) -> str | None:
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    if not cert:
        return None
    subject: Any = cert.get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class OperatorApiSimulator:
    """An HTTPS operator API (OAuth 2.0 token endpoint, ``$send-to-mss``, ``$tracking``).

    Args:
        pki: The test PKI; its server certificate is presented, and a client certificate issued
            by its CA is accepted (not required).
        client_id: The only client id the token endpoint accepts.
        client_secret: Its secret.
        faults: Faults to inject into ``$send-to-mss`` answers.
        store_dir: Where to write each accepted message (``<transaction id>/request.json`` and
            the decoded attachments); None keeps them in memory only.
        token_lifetime: ``expires_in`` of the tokens issued, in seconds; a short one makes
            tokens expire during a test.
        retain: How many of the latest requests and messages :attr:`requests` and
            :attr:`messages` keep (None: all). Older messages stay known to ``$tracking``, to
            idempotent replays and to :meth:`message`, without their attachments and resource.

    Attributes:
        requests: Every request answered, in order.
        messages: The messages accepted, in order (an idempotent replay is not added again).
        tokens_issued: How many tokens the token endpoint issued.
        token_forms: The form fields of every token request, ``client_secret`` left out.
        retry_after: The ``Retry-After`` seconds of a BUSY answer.
        reject_tokens: When true, every bearer token is refused with 401 (to test the sender
            giving up after one refresh).
    """

    def __init__(
        self,
        pki: TestPki,
        *,
        client_id: str = "crbio",
        client_secret: str = "secret",
        faults: FaultPlan | None = None,
        store_dir: str | Path | None = None,
        token_lifetime: float = 3600,
        retain: int | None = None,
    ) -> None:
        self.pki = pki
        self.retain = retain
        self.client_id = client_id
        self.client_secret = client_secret
        self.faults = faults or FaultPlan()
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.token_lifetime = token_lifetime
        self.retry_after = 1
        self.reject_tokens = False
        self.requests: list[ReceivedRequest] = []
        self.messages: list[StoredMessage] = []
        self.tokens_issued = 0
        self.token_forms: list[dict[str, str]] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.tls = server_tls_context(pki, client_certificate="optional")
        self._tokens: dict[str, float] = {}  # token -> monotonic expiry
        self._by_key: dict[str, StoredMessage] = {}
        self._by_transaction: dict[str, StoredMessage] = {}
        self._lock = threading.Lock()
        self._server: LocalServer | None = None

    # Life cycle.

    @property
    def base_url(self) -> str:
        """The FHIR base URL (operations are under ``/v3``)."""
        return f"https://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        """The OAuth 2.0 token endpoint."""
        return f"{self.base_url}{TOKEN_PATH}"

    def start(self) -> OperatorApiSimulator:
        """Listen on 127.0.0.1 (a free port) and serve in a background thread."""
        if self._server is not None:
            return self
        server = LocalServer.http(self, _Handler, name="operator-api-simulator", tls=self.tls)
        self.port = server.port
        self._server = server
        server.start()
        return self

    def stop(self) -> None:
        """Stop listening, close open connections and wait for every connection thread."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> OperatorApiSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # What tests may change.

    def revoke_tokens(self) -> None:
        """Forget every token issued: the next API call gets 401 until a new token is fetched."""
        with self._lock:
            self._tokens.clear()

    def set_status(self, transaction_id: str, status: str, address: str | None = None) -> None:
        """Set the tracking status of a message (of one recipient, or of all when ``address`` is None).

        Raises:
            KeyError: no message has that transaction id.
        """
        with self._lock:
            message = self._by_transaction[transaction_id]
            for recipient in message.recipients:
                if address is None or recipient == address:
                    message.statuses[recipient] = status

    def _keep_slim(self, message: StoredMessage) -> None:
        # What tracking and replays need; the statuses dict is the same object, still updated.
        slim = replace(message, attachments={}, resource={})
        self._by_transaction[message.transaction_id] = slim
        if message.idempotency_key and self._by_key.get(message.idempotency_key) is message:
            self._by_key[message.idempotency_key] = slim

    def message(self, transaction_id: str) -> StoredMessage:
        """The message accepted under ``transaction_id``.

        Raises:
            KeyError: no message has that transaction id.
        """
        with self._lock:
            return self._by_transaction[transaction_id]

    # Answering.

    def _answer(self, handler: _Handler, method: str) -> None:
        received_at = datetime.now(UTC)
        split = urlsplit(handler.path)
        path = unquote(split.path)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        certificate = _client_cn(handler.connection)
        fault: Fault | None = None
        status = 0
        body: bytes | None = None
        try:
            body = self._read_body(handler)
            if method == "POST" and path == TOKEN_PATH:
                status, payload, extra = self._token(headers, body)
                self._reply(handler, status, payload, extra, content_type="application/json")
            elif method == "POST" and path == SEND_PATH:
                self._authenticate(headers)
                fault = self.faults.draw()
                if fault is Fault.DROP:
                    handler.close_connection = True
                    return
                status, payload, extra = self._send(headers, body, fault)
                self._reply(handler, status, payload, extra)
            elif method == "GET" and path == TRACKING_PATH:
                self._authenticate(headers)
                status, payload = self._tracking(parse_qs(split.query))
                self._reply(handler, status, payload, {})
            elif path in {TOKEN_PATH, SEND_PATH, TRACKING_PATH}:
                raise _Refusal(405, "not-supported", f"{method} is not supported on {path}")
            else:
                raise _Refusal(404, "not-found", f"no operation at {path}")
        except _Refusal as refusal:
            status = refusal.status
            if body is None:
                handler.close_connection = True  # the unread body would be taken for the next request
            self._reply(
                handler, status, operation_outcome(refusal.code, refusal.diagnostics), refusal.headers
            )
        except (OSError, ssl.SSLError):
            raise  # the connection itself failed: nothing can be answered
        except Exception:
            # A simulator bug must show as a server error, not as a dropped connection.
            logger.exception("operator API simulator: error while answering %s %s", method, path)
            status = 500
            self._reply(handler, status, operation_outcome("exception", "internal error"), {})
        finally:
            with self._lock:
                self.requests.append(
                    ReceivedRequest(method, path, status, headers, received_at, fault, certificate)
                )
                if self.retain is not None and len(self.requests) > self.retain:
                    del self.requests[: len(self.requests) - self.retain]

    @staticmethod
    def _read_body(handler: _Handler) -> bytes:
        if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
            raise _Refusal(411, "structure", "send a Content-Length, not a chunked body")
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            raise _Refusal(400, "structure", "unreadable Content-Length") from None
        if length < 0:
            raise _Refusal(400, "structure", "unreadable Content-Length")
        if length > MAX_BODY_BYTES:
            raise _Refusal(413, "too-costly", f"body larger than {MAX_BODY_BYTES} bytes")
        return handler.rfile.read(length) if length else b""

    @staticmethod
    def _reply(
        handler: _Handler,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str],
        *,
        content_type: str = "application/fhir+json; charset=utf-8",
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        handler.send_response(status, HTTPStatus(status).phrase)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Cache-Control", "no-store")
        if handler.close_connection:
            handler.send_header("Connection", "close")
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _token(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}
        with self._lock:
            self.token_forms.append({k: v for k, v in form.items() if k != "client_secret"})
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
                client_id, _, client_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = client_secret = None
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, {}
        # Compare in constant time, as a real authorisation server does.
        if not (
            client_id is not None
            and client_secret is not None
            and secrets.compare_digest(client_id, self.client_id)
            and secrets.compare_digest(client_secret, self.client_secret)
        ):
            return (
                401,
                {"error": "invalid_client", "error_description": "client authentication failed"},
                {"WWW-Authenticate": 'Basic realm="crbio-operator-simulator"'},
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
            self.tokens_issued += 1
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
        }
        if form.get("scope"):
            answer["scope"] = form["scope"]
        return 200, answer, {}

    def _authenticate(self, headers: dict[str, str]) -> None:
        authorization = headers.get("authorization", "")
        token = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        now = time.monotonic()
        with self._lock:
            expiry = self._tokens.get(token)
            valid = expiry is not None and expiry > now and not self.reject_tokens
        if not valid:
            raise _Refusal(
                401,
                "login",
                "missing, unknown or expired access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    def _send(
        self, headers: dict[str, str], body: bytes, fault: Fault | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if fault is Fault.BUSY:
            raise _Refusal(
                429,
                "throttled",
                "too many requests (injected fault)",
                headers={"Retry-After": str(self.retry_after)},
            )
        if fault is Fault.SERVER_ERROR:
            raise _Refusal(503, "transient", "service unavailable (injected fault)")
        if fault is Fault.REJECT:
            raise _Refusal(422, "business-rule", "refused by the operator (injected fault)")
        key = headers.get("idempotency-key")
        if key:
            with self._lock:
                seen = self._by_key.get(key)
            if seen is not None:
                return 200, self._created(seen), {"Location": self._tracking_url(seen.transaction_id)}
        message = self._check(body, key)
        with self._lock:
            # Two concurrent requests with the same key: the first one stored wins.
            if key and key in self._by_key:
                message = self._by_key[key]
                return 200, self._created(message), {"Location": self._tracking_url(message.transaction_id)}
            if key:
                self._by_key[key] = message
            self._by_transaction[message.transaction_id] = message
            self.messages.append(message)
            if self.retain is not None and len(self.messages) > self.retain:
                for old in self.messages[: len(self.messages) - self.retain]:
                    self._keep_slim(old)
                del self.messages[: len(self.messages) - self.retain]
        self._store(message)
        return 201, self._created(message), {"Location": self._tracking_url(message.transaction_id)}

    def _tracking_url(self, transaction_id: str) -> str:
        return f"{self.base_url}{TRACKING_PATH}?transaction-id={transaction_id}"

    def _created(self, message: StoredMessage) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "CommunicationRequest",
            "id": message.transaction_id,
            "status": "active",
            "extension": [
                {"url": TRACKING_EXTENSION, "valueUrl": self._tracking_url(message.transaction_id)}
            ],
        }
        if message.message_id:
            resource["identifier"] = [{"system": "urn:ietf:rfc:5322", "value": message.message_id}]
        return resource

    def _tracking(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        values = query.get("transaction-id") or [""]
        with self._lock:
            message = self._by_transaction.get(values[0])
            statuses = dict(message.statuses) if message is not None else {}
        if message is None:
            raise _Refusal(404, "not-found", "unknown transaction-id")
        overall = _overall(list(statuses.values()))
        parameters: list[dict[str, Any]] = [
            {"name": "transaction-id", "valueString": message.transaction_id},
            {"name": "status", "valueCode": overall},
        ]
        for address in message.recipients:
            parameters.append(
                {
                    "name": "recipient",
                    "part": [
                        {"name": "address", "valueString": address},
                        {"name": "status", "valueCode": statuses.get(address, "pending")},
                    ],
                }
            )
        return 200, {"resourceType": "Parameters", "parameter": parameters}

    # Checking a $send-to-mss body.

    def _check(self, body: bytes, key: str | None) -> StoredMessage:
        try:
            resource = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _Refusal(400, "structure", "the body is not JSON") from None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
            raise _Refusal(400, "structure", "the body must be a FHIR Parameters resource")
        parameters = resource.get("parameter")
        if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
            raise _Refusal(400, "structure", "Parameters.parameter must be a list of parameters")
        recipients, types = _recipients(parameters)
        attachments, content_types = _attachments(parameters)
        xdm = [
            title
            for title, kind in content_types.items()
            if kind in {"application/zip", "application/x-zip-compressed"}
        ]
        pdfs = [title for title, kind in content_types.items() if kind == "application/pdf"]
        if len(xdm) != 1:
            raise _Refusal(
                422, "invariant", "exactly one IHE_XDM.ZIP attachment (application/zip) is required"
            )
        if not pdfs:
            raise _Refusal(422, "invariant", "a PDF attachment (application/pdf) is required")
        for title in pdfs:
            if not attachments[title].startswith(b"%PDF"):
                raise _Refusal(422, "invalid", f"attachment {title!r} is not a PDF")
        xdm_files, xdm_action = _check_xdm(attachments[xdm[0]])
        if _value(parameters, "subject") is None and _value(parameters, "detailed-subject") is None:
            raise _Refusal(422, "required", "a detailed-subject (Patient) or subject is required")
        headers: dict[str, str] = {}
        for parameter in parameters:
            if parameter.get("name") == "mss-header":
                parts = {
                    p.get("name"): p.get("valueString")
                    for p in parameter.get("part", [])
                    if isinstance(p, dict)
                }
                name, value = parts.get("name"), parts.get("value")
                if (
                    not isinstance(name, str)
                    or not isinstance(value, str)
                    or not name.upper().startswith("X-MSS-")
                ):
                    raise _Refusal(422, "invalid", "an mss-header needs a name (X-MSS-*) and a value")
                headers[name] = value
        return StoredMessage(
            transaction_id=uuid.uuid4().hex,
            message_id=_string(parameters, "message-id"),
            idempotency_key=key,
            recipients=recipients,
            recipient_types=types,
            attachments=attachments,
            content_types=content_types,
            xdm_files=xdm_files,
            xdm_action=xdm_action,
            mail_subject=_string(parameters, "mail-subject"),
            mail_body=_string(parameters, "mail-body"),
            mss_headers=headers,
            sender_address=_string(parameters, "sender-address"),
            action=_string(parameters, "action"),
            resource=resource,
            received_at=datetime.now(UTC),
            statuses={address: "delivered" for address in recipients},
        )

    def _store(self, message: StoredMessage) -> None:
        if self.store_dir is None:
            return
        folder = self.store_dir / message.transaction_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "request.json").write_text(json.dumps(message.resource, indent=1), encoding="utf-8")
        for index, (title, data) in enumerate(message.attachments.items(), start=1):
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", title).strip(".") or f"attachment-{index}"
            (folder / safe).write_bytes(data)


def _overall(statuses: list[str]) -> str:
    if statuses and all(s == "delivered" for s in statuses):
        return "delivered"
    if any(s in {"failed", "error"} for s in statuses):
        return "failed"
    return "in-progress"


def _value(parameters: list[dict[str, Any]], name: str) -> Any:
    for parameter in parameters:
        if parameter.get("name") == name:
            for key, value in parameter.items():
                if key.startswith("value") or key in {"resource", "part"}:
                    return value
    return None


def _string(parameters: list[dict[str, Any]], name: str) -> str | None:
    value = _value(parameters, name)
    return value if isinstance(value, str) else None


def _recipients(parameters: list[dict[str, Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    addresses: list[str] = []
    types: list[str] = []
    for parameter in parameters:
        if parameter.get("name") != "recipients":
            continue
        resource = parameter.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") not in _RECIPIENT_TYPES:
            raise _Refusal(
                422, "invalid", "a recipient must be a Practitioner, Organization or Patient resource"
            )
        emails = [
            t.get("value")
            for t in resource.get("telecom", [])
            if isinstance(t, dict) and t.get("system") == "email"
        ]
        if len(emails) != 1 or not isinstance(emails[0], str) or not _ADDRESS.match(emails[0]):
            raise _Refusal(
                422, "invalid", "each recipient needs exactly one email telecom (its MSSanté address)"
            )
        addresses.append(emails[0])
        types.append(str(resource["resourceType"]))
    if not addresses:
        raise _Refusal(422, "required", "at least one recipient is required")
    if len(addresses) > MAX_RECIPIENTS:
        raise _Refusal(422, "too-costly", f"at most {MAX_RECIPIENTS} recipients per sending")
    if len(set(addresses)) != len(addresses):
        raise _Refusal(422, "invariant", "a recipient appears twice")
    return tuple(addresses), tuple(types)


def _attachments(parameters: list[dict[str, Any]]) -> tuple[dict[str, bytes], dict[str, str]]:
    data: dict[str, bytes] = {}
    kinds: dict[str, str] = {}
    for parameter in parameters:
        if parameter.get("name") != "payload":
            continue
        parts = parameter.get("part")
        documents = (
            [p.get("resource") for p in parts if isinstance(p, dict) and p.get("name") == "document"]
            if isinstance(parts, list)
            else []
        )
        if len(documents) != 1 or not isinstance(documents[0], dict):
            raise _Refusal(422, "invalid", "each payload needs one document part")
        reference = documents[0]
        if reference.get("resourceType") != "DocumentReference":
            raise _Refusal(422, "invalid", "a payload document must be a DocumentReference")
        content = reference.get("content")
        attachment = (
            content[0].get("attachment")
            if isinstance(content, list) and content and isinstance(content[0], dict)
            else None
        )
        if not isinstance(attachment, dict):
            raise _Refusal(422, "required", "DocumentReference.content[0].attachment is required")
        title, kind, encoded = attachment.get("title"), attachment.get("contentType"), attachment.get("data")
        if not all(isinstance(v, str) and v for v in (title, kind, encoded)):
            raise _Refusal(422, "required", "an attachment needs a title, a contentType and data")
        assert isinstance(title, str) and isinstance(kind, str) and isinstance(encoded, str)
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise _Refusal(422, "invalid", f"attachment {title!r}: data is not base64") from None
        if title in data:
            raise _Refusal(422, "invariant", f"two attachments are named {title!r}")
        size = attachment.get("size")
        if size is not None and size != len(decoded):
            raise _Refusal(422, "invalid", f"attachment {title!r}: size does not match the data")
        data[title] = decoded
        kinds[title] = kind.split(";")[0].strip().lower()
    if not data:
        raise _Refusal(422, "required", "at least one payload is required")
    if len(data) > MAX_DOCUMENTS:
        raise _Refusal(422, "too-costly", f"at most {MAX_DOCUMENTS} documents per sending")
    return data, kinds


def _check_xdm(data: bytes) -> tuple[tuple[str, ...], str | None]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = tuple(archive.namelist())
            missing = sorted(XDM_FILES - set(names))
            if missing:
                raise _Refusal(422, "invalid", f"IHE_XDM.ZIP lacks {', '.join(missing)}")
            documents = [n for n in names if re.fullmatch(r"IHE_XDM/SUBSET01/[A-Z0-9_]{1,8}\.XML", n)]
            if not [n for n in documents if not n.endswith("/METADATA.XML")]:
                raise _Refusal(422, "invalid", "IHE_XDM.ZIP holds no document in IHE_XDM/SUBSET01")
            metadata = archive.read("IHE_XDM/SUBSET01/METADATA.XML")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise _Refusal(422, "invalid", "IHE_XDM.ZIP is not a zip archive") from None
    try:
        root = parse_xml(metadata, label="METADATA.XML").getroot()
    except InputError:
        raise _Refusal(422, "invalid", "IHE_XDM.ZIP: METADATA.XML is not well-formed XML") from None
    if root.tag != "{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0}SubmitObjectsRequest":
        raise _Refusal(422, "invalid", "IHE_XDM.ZIP: METADATA.XML is not an lcm:SubmitObjectsRequest")
    action = root.xpath("string(//*[local-name()='Slot'][@name='action']//*[local-name()='Value'][1])")
    return names, (str(action).strip() or None)
