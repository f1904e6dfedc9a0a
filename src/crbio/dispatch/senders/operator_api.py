"""MSSanté through an operator's REST API: FHIR R4 over HTTPS with OAuth 2.0 client credentials.

Some MSSanté operators and intermediaries offer an HTTP API instead of (or beside) SMTP
submission. This sender follows the shape the Lifen API documents publicly
(https://developer.lifen.fr, "Send a document to healthcare professionals" and "Machine to
machine communications"); it works with any operator exposing the same shape, and the paths
are settings.

What the public documentation gives, and this sender follows:

- a token from an OAuth 2.0 token endpoint with the ``client_credentials`` grant, the client
  id and secret in the form body (``client_secret_post``), plus operator-specific form fields
  (Lifen asks for ``audience`` and ``database_reference``: settings ``audience`` and
  ``token_params``); the token is sent as ``Authorization: Bearer``;
- ``POST {base}/v3/CommunicationRequest/$send-to-mss`` whose body is a FHIR ``Parameters``
  resource with ``detailed-subject`` (a ``Patient`` with the identity traits and the
  strongest identifier: the INS when the document carries one, which crbio writes only for a
  qualified identity, else the IPP), ``recipients`` (one per recipient, with its MSSanté
  address), ``sender-identifier`` (the RPPS of the biologist who signed), ``managing-
  organization`` (the issuing structure) and one ``payload`` per document, each a ``document``
  part holding a ``DocumentReference`` whose ``content[0].attachment`` carries ``contentType``
  and ``data`` (base64);
- a ``201`` answer whose extension holds the tracking URL ``…/$tracking?transaction-id=…``;
  ``GET {base}/v3/CommunicationRequest/$tracking?transaction-id=…`` for the status;
- errors as FHIR ``OperationOutcome`` resources, ``429`` when rate-limited.

Where the documentation is silent, crbio's own choices (plain FHIR R4, to be checked against
the operator's interface contract before production):

- a recipient is a ``Practitioner`` (a professional: RPPS as ``identifier`` under
  ``urn:oid:1.2.250.1.71.4.2.1``, the label as ``name.text``), a ``Patient`` (the patient's
  Mon espace santé address; no other data) or an ``Organization``, each with exactly one
  ``telecom`` of system ``email`` holding the MSSanté address;
- ``managing-organization`` is a logical reference by identifier (``1`` + FINESS under
  ``urn:oid:1.2.250.1.71.4.2.2``) rather than an operator-side id;
- two payloads: ``IHE_XDM.ZIP`` (``application/zip``) and the PDF/A under its normative name
  (``application/pdf``), built exactly as on the SMTP path (:mod:`crbio.dispatch.mssante`,
  :mod:`crbio.dispatch.xdm`), so a replacement or a deletion carries the XDM action C or D and
  the matching body text. Lifen documents ``application/pdf`` as the only content type it
  currently accepts: sending the XDM needs an operator that takes it [unconfirmed for Lifen];
- the ``DocumentReference`` carries the document OID as ``masterIdentifier``, the LOINC type,
  the confidentiality and masking codes as ``securityLabel`` and, for a replacement, a
  ``relatesTo`` ``replaces`` the previous OID; attachments carry ``size`` and SHA-1 ``hash``;
- extra parameters: ``message-id`` (the RFC 5322 id, stable across retries, as on SMTP),
  ``sender-address`` (the lab's BAL), ``action`` (submit/replace/delete), ``in-reply-to``
  (for a replacement or deletion, the ``message-id`` of the earlier message when the journal
  has its acknowledgement), ``mail-subject``
  and ``mail-body`` (the normative subject and the body text), one ``mss-header`` per
  ``X-MSS-*`` header (parts ``name`` and ``value``), ``request-dsn`` and ``request-mdn``;
- an ``Idempotency-Key: <delivery key>`` header. Lifen documents no idempotency key, so a
  resend after a lost answer may be delivered twice there; operators that honour the header
  (the simulator does) recognise it, and the stable ``message-id`` lets receivers de-duplicate.

How answers are read: any 2xx is an acknowledgement (``transaction_id`` from the tracking URL,
the ``Location`` header or the resource id); ``429``, ``408``, ``425`` and 5xx, timeouts and
connection errors are :class:`~crbio.errors.TransientSendError` (``Retry-After`` goes to
``detail["retry_after"]`` in seconds); a ``401`` is retried once with a fresh token, and
``401`` again, ``400``, ``403``, ``404``, ``409``, ``412``, ``413``, ``422`` and any other
answer are :class:`~crbio.errors.PermanentSendError` whose reason is the status with the
``OperationOutcome`` issue codes and diagnostics, patient identifiers and names masked. A
server certificate that fails verification is permanent too (a person has to fix the trust
store). Tokens are cached until shortly before they expire.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, NoReturn, Self
from urllib.parse import parse_qs, urlsplit

import httpx

from crbio import __version__
from crbio.dispatch.delivery import Acknowledgement, Action, Channel, Job, RecipientKind
from crbio.dispatch.header import DocumentHeader
from crbio.dispatch.mssante import (
    body_text,
    message_id,
    mss_headers,
    pdf_file_name,
    previous_message_id,
    subject,
)
from crbio.dispatch.redaction import redact
from crbio.dispatch.senders._shared import shared
from crbio.dispatch.senders.base import Sender, SenderContext
from crbio.dispatch.tls import CERTIFICATE_ALERTS, read_secret, server_certificate_problem, tls_context
from crbio.dispatch.xdm import ARCHIVE_NAME, build_xdm
from crbio.errors import ConfigurationError, InputError, PermanentSendError, TransientSendError
from crbio.identifiers import FINESS_OID, NATIONAL_PS_OID

__all__ = ["SEND_PATH", "TRACKING_PATH", "OperatorApiSender", "TrackingStatus", "build_request"]

logger = logging.getLogger("crbio.dispatch.operator_api")

SEND_PATH: Final = "/v3/CommunicationRequest/$send-to-mss"
TRACKING_PATH: Final = "/v3/CommunicationRequest/$tracking"

_WHERE: Final = "destinations.mssante"
_KEYS: Final = frozenset(
    {
        "base_url",
        "token_url",
        "client_id",
        "client_secret",
        "client_secret_file",
        "client_secret_env",
        "scope",
        "audience",
        "token_params",
        "token_auth",
        "ca_file",
        "timeout",
        "sender_address",
        "send_path",
        "tracking_path",
    }
)
_TOKEN_AUTH: Final = frozenset({"client_secret_post", "client_secret_basic"})
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
_FHIR_JSON: Final = "application/fhir+json"
_LOINC_OID: Final = "2.16.840.1.113883.6.1"
_CONFIDENTIALITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
_MASKING_SYSTEM: Final = "urn:oid:1.2.250.1.213.1.1.4.13"  # TRE_A07-StatutVisibiliteDocument
_IDENTIFIER_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
_GENDERS: Final = {"M": "male", "F": "female"}
_DEFAULT_LIFETIME: Final = 300.0  # when a token answer has no expires_in
_MAX_RETRY_AFTER: Final = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class TrackingStatus:
    """What ``$tracking`` says about a sending.

    Attributes:
        transaction_id: The transaction asked about.
        status: The overall status as the operator words it (``delivered``, ``in-progress``…),
            or ``unknown`` when the answer has none.
        recipients: Recipient address → status, when the operator details them. A patient's
            address contains the INS: do not log it.
        http_status: The HTTP status of the answer.
        resource: The FHIR resource answered, as parsed JSON.
    """

    transaction_id: str
    status: str
    recipients: dict[str, str] = field(default_factory=dict)
    http_status: int = 200
    resource: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Token:
    value: str
    refresh_at: float  # time.monotonic() after which a new token is fetched


def _idnat_ps(identifier: str) -> str:
    # The national PS id under 1.2.250.1.71.4.2.1 is "8" + RPPS.
    return "8" + identifier if re.fullmatch(r"\d{11}", identifier) else identifier


def _rpps(national_id: str) -> str:
    return national_id[1:] if re.fullmatch(r"8\d{11}", national_id) else national_id


def _coding_system(oid: str) -> str:
    return "http://loinc.org" if oid == _LOINC_OID else f"urn:oid:{oid}"


def _patient(header: DocumentHeader) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = []
    if header.ins is not None:
        matricule, oid = header.ins
        identifiers.append({"use": "official", "system": f"urn:oid:{oid}", "value": matricule})
    for root, extension in header.local_ids:
        if extension:
            identifiers.append(
                {
                    "use": "usual",
                    "type": {"coding": [{"system": _IDENTIFIER_TYPE_SYSTEM, "code": "PI"}]},
                    "system": f"urn:oid:{root}",
                    "value": extension,
                }
            )
    names: list[dict[str, Any]] = [
        {"use": "official", "family": header.birth_family_name, "given": [header.birth_given_name]}
    ]
    if header.used_family_name and header.used_family_name != header.birth_family_name:
        names.append({"use": "usual", "family": header.used_family_name, "given": [header.birth_given_name]})
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": identifiers,
        "name": names,
        "gender": _GENDERS.get(header.sex, "unknown"),
    }
    if header.birth_date is not None:
        patient["birthDate"] = header.birth_date.isoformat()
    return patient


def _recipient(job: Job) -> dict[str, Any]:
    recipient = job.delivery.recipient
    telecom = [{"system": "email", "value": recipient.address}]
    if recipient.kind is RecipientKind.PATIENT:
        # The identity is in detailed-subject; the address alone says where it goes.
        return {"resourceType": "Patient", "telecom": telecom}
    kind = "Practitioner" if recipient.kind is RecipientKind.PROFESSIONAL else "Organization"
    resource: dict[str, Any] = {"resourceType": kind}
    if recipient.identifier:
        system = NATIONAL_PS_OID if kind == "Practitioner" else FINESS_OID
        value = _idnat_ps(recipient.identifier) if kind == "Practitioner" else recipient.identifier
        resource["identifier"] = [{"system": f"urn:oid:{system}", "value": value}]
    if recipient.label:
        resource["name"] = [{"text": recipient.label}] if kind == "Practitioner" else recipient.label
    resource["telecom"] = [{**telecom[0], "use": "work"}]
    return resource


def _security_labels(job: Job) -> list[dict[str, Any]]:
    codes = job.delivery.metadata.get("confidentiality") or [job.header.confidentiality]
    labels = []
    for index, code in enumerate(codes):
        system = _CONFIDENTIALITY_SYSTEM if index == 0 and code in {"N", "R", "V"} else _MASKING_SYSTEM
        labels.append({"coding": [{"system": system, "code": str(code)}]})
    return labels


def _document(job: Job, *, data: bytes, content_type: str, title: str) -> dict[str, Any]:
    header = job.header
    reference: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{header.document_id}"},
        "status": "current",
        "type": {
            "coding": [
                {
                    "system": _coding_system(header.code.system),
                    "code": header.code.code,
                    "display": header.code.display,
                }
            ]
        },
        "date": header.effective_time.isoformat(),
        "securityLabel": _security_labels(job),
    }
    replaced = job.delivery.replaces or header.replaces
    if job.delivery.action is Action.REPLACE and replaced:
        reference["relatesTo"] = [
            {
                "code": "replaces",
                "target": {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{replaced}"}},
            }
        ]
    # Attachment.hash is SHA-1 in FHIR R4: an integrity check, not a security feature.
    digest = hashlib.sha1(data, usedforsecurity=False).digest()
    reference["content"] = [
        {
            "attachment": {
                "contentType": content_type,
                "title": title,
                "size": len(data),
                "hash": base64.b64encode(digest).decode("ascii"),
                "data": base64.b64encode(data).decode("ascii"),
            }
        }
    ]
    return {"name": "payload", "part": [{"name": "document", "resource": reference}]}


def build_request(
    job: Job, context: SenderContext, *, sender_address: str, submission_time: datetime
) -> dict[str, Any]:
    """The FHIR ``Parameters`` body of ``$send-to-mss`` for one job (shape in the module docstring).

    The XDM archive and the body text come from :mod:`crbio.dispatch.xdm` and
    :mod:`crbio.dispatch.mssante`, so the content is the same as on the SMTP path.

    Raises:
        InputError: the document's header cannot be read.
        ValueError: an ``X-MSS-*`` header of the plan is unusable.
        PermanentSendError: ``sender_address`` is not an e-mail address.
    """
    header = job.header
    metadata = job.delivery.metadata
    parameters: list[dict[str, Any]] = [
        {"name": "detailed-subject", "resource": _patient(header)},
        {"name": "recipients", "resource": _recipient(job)},
    ]
    signer = header.legal_authenticator or header.author
    if signer.rpps:
        parameters.append({"name": "sender-identifier", "valueString": _rpps(signer.rpps)})
    parameters += [
        {
            "name": "managing-organization",
            "valueReference": {
                "identifier": {"system": f"urn:oid:{FINESS_OID}", "value": "1" + context.laboratory_finess},
                "display": context.laboratory_name,
            },
        },
        {"name": "sender-address", "valueString": sender_address},
        {"name": "message-id", "valueString": message_id(job, sender_address)},
        {"name": "action", "valueCode": job.delivery.action.value},
    ]
    previous = previous_message_id(job)
    if previous is not None and job.delivery.action is not Action.SUBMIT:
        parameters.append({"name": "in-reply-to", "valueString": previous})
    parameters += [
        {"name": "mail-subject", "valueString": subject(header)},
        {"name": "mail-body", "valueString": body_text(job)},
    ]
    for name, value in sorted(mss_headers(job, context).items()):
        parameters.append(
            {
                "name": "mss-header",
                "part": [{"name": "name", "valueString": name}, {"name": "value", "valueString": value}],
            }
        )
    parameters += [
        {"name": "request-dsn", "valueBoolean": bool(metadata.get("request_dsn"))},
        {"name": "request-mdn", "valueBoolean": bool(metadata.get("request_mdn"))},
        _document(
            job,
            data=build_xdm(job, context, submission_time=submission_time),
            content_type="application/zip",
            title=ARCHIVE_NAME,
        ),
        _document(job, data=job.pdf, content_type="application/pdf", title=pdf_file_name(header)),
    ]
    return {"resourceType": "Parameters", "parameter": parameters}


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _issues(data: Any) -> tuple[list[str], str]:
    """The issue codes of an ``OperationOutcome`` and its diagnostics, joined."""
    if not isinstance(data, dict) or data.get("resourceType") != "OperationOutcome":
        return [], ""
    codes: list[str] = []
    texts: list[str] = []
    for issue in data.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        if isinstance(issue.get("code"), str):
            codes.append(issue["code"])
        details = issue.get("details")
        detail_text = details.get("text") if isinstance(details, dict) else None
        for text in (issue.get("diagnostics"), detail_text):
            if isinstance(text, str) and text.strip():
                texts.append(" ".join(text.split())[:200])
    return codes, "; ".join(texts)


def _tls_problem(error: BaseException, address: str = "base_url") -> str | None:
    """The certificate problem behind a connection error, if that is what it is."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            problem = server_certificate_problem(current, where=_WHERE, address=address)
            return f"the operator's certificate was not accepted: {problem}"
        if isinstance(current, ssl.SSLError) and (current.reason or "") in CERTIFICATE_ALERTS:
            return f"certificate refused ({current.reason})"
        current = current.__cause__ or current.__context__
    return None


class OperatorApiSender(Sender):
    """Sends MSSanté messages through an operator's FHIR REST API (the Lifen shape, see the module).

    Configuration (``[destinations.mssante]`` with ``sender = "operator-api"``):

    - ``base_url`` (required): the FHIR base, e.g. ``https://api.lifen.fr/fhir`` (production)
      or ``https://api.post-prod.lifen.fr/fhir`` (test); operations are under ``/v3``;
    - ``token_url`` (required): the OAuth 2.0 token endpoint;
    - ``client_id`` (required), and ``client_secret_file`` or ``client_secret_env``: the
      client credentials (an inline ``client_secret`` is accepted for local tests only);
    - ``scope``, ``audience`` (optional): sent with the token request when given;
    - ``token_params`` (optional table): more form fields for the token request, e.g.
      ``{ database_reference = "…" }`` for Lifen;
    - ``token_auth``: ``client_secret_post`` (default: id and secret in the form body) or
      ``client_secret_basic`` (HTTP Basic);
    - ``ca_file``: the CA bundle to verify the operator with (verification is always on);
    - ``client_cert`` + ``client_key``, or ``client_pkcs12``, with ``client_password_file`` /
      ``client_password_env``: a TLS client certificate, when the operator asks for one;
    - ``timeout`` (seconds, default 30): connect, read, write and pool timeouts of each call;
    - ``sender_address`` (required): the laboratory's MSSanté mailbox (BAL);
    - ``send_path``, ``tracking_path``: the operation paths under ``base_url`` (defaults
      :data:`SEND_PATH`, :data:`TRACKING_PATH`).

    The acknowledgement's detail holds ``transaction_id`` (None if the operator gave none),
    ``http_status``, ``message_id`` and, when given, ``tracking_url``.
    """

    channel = Channel.MSSANTE

    def __init__(
        self,
        *,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        sender_address: str,
        context: SenderContext,
        tls: ssl.SSLContext,
        timeout: float = 30.0,
        scope: str | None = None,
        audience: str | None = None,
        token_params: Mapping[str, str] | None = None,
        token_auth: str = "client_secret_post",
        send_path: str = SEND_PATH,
        tracking_path: str = TRACKING_PATH,
    ) -> None:
        if token_auth not in _TOKEN_AUTH:
            raise ConfigurationError(
                f"{_WHERE}.token_auth: must be one of {', '.join(sorted(_TOKEN_AUTH))}", code="config.value"
            )
        self.base_url = base_url.rstrip("/")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.sender_address = sender_address
        self.context = context
        self.tls = tls
        self.timeout = timeout
        self.scope = scope
        self.audience = audience
        self.token_params = dict(token_params or {})
        self.token_auth = token_auth
        self.send_url = self.base_url + send_path
        self.tracking_url = self.base_url + tracking_path
        self._token: _Token | None = None
        self._http: httpx.Client | None = None

    def __repr__(self) -> str:
        # Never the secret, nor the token.
        return f"OperatorApiSender(base_url={self.base_url!r}, client_id={self.client_id!r})"

    @classmethod
    def from_config(cls, section: Mapping[str, Any], context: SenderContext) -> Self:
        """Build the sender from its ``[destinations.mssante]`` section (see the class docstring).

        Raises:
            ConfigurationError: a setting is missing, unknown or wrong, a file cannot be read.
        """
        unknown = sorted(k for k in section if k not in _KEYS and not k.startswith("client_"))
        if unknown:
            raise ConfigurationError(f"{_WHERE}.{unknown[0]}: unknown setting", code="config.key")
        base_url = _url(section, "base_url")
        token_url = _url(section, "token_url")
        client_id = _string(section, "client_id", required=True)
        assert client_id is not None
        secret = read_secret(section, "client_secret", where=_WHERE, context=context)
        if not secret:
            raise ConfigurationError(f"{_WHERE}.client_secret: the secret is empty", code="config.secret")
        sender_address = _string(section, "sender_address", required=True)
        assert sender_address is not None
        local, at, domain = sender_address.rpartition("@")
        if not local or not at or "." not in domain or any(c.isspace() for c in sender_address):
            raise ConfigurationError(
                f"{_WHERE}.sender_address: must be the laboratory's MSSanté address", code="config.value"
            )
        timeout = section.get("timeout", 30.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise ConfigurationError(f"{_WHERE}.timeout: must be a positive number", code="config.value")
        token_params = section.get("token_params", {})
        if not isinstance(token_params, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in token_params.items()
        ):
            raise ConfigurationError(
                f"{_WHERE}.token_params: must be a table of strings", code="config.value"
            )
        reserved = sorted({"grant_type", "client_id", "client_secret"} & set(token_params))
        if reserved:
            raise ConfigurationError(
                f"{_WHERE}.token_params.{reserved[0]}: set by crbio, not a parameter", code="config.value"
            )
        paths = {}
        for key, default in (("send_path", SEND_PATH), ("tracking_path", TRACKING_PATH)):
            path = _string(section, key) or default
            if not path.startswith("/"):
                raise ConfigurationError(f"{_WHERE}.{key}: must start with /", code="config.value")
            paths[key] = path
        return cls(
            base_url=base_url,
            token_url=token_url,
            client_id=client_id,
            client_secret=secret,
            sender_address=sender_address,
            context=context,
            tls=shared("operator-api", section, context, lambda: tls_context(section, context, where=_WHERE)),
            timeout=float(timeout),
            scope=_string(section, "scope"),
            audience=_string(section, "audience"),
            token_params=token_params,
            token_auth=_string(section, "token_auth") or "client_secret_post",
            **paths,
        )

    # -- HTTP -----------------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        if self._http is None:
            software = "/".join(p for p in (self.context.software_name, self.context.software_version) if p)
            self._http = httpx.Client(
                verify=self.tls,
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                headers={"User-Agent": f"{software} crbio/{__version__}"},
            )
        return self._http

    def close(self) -> None:
        """Close the HTTP connections and forget the token."""
        self._token = None
        if self._http is not None:
            self._http.close()
            self._http = None

    def _exchange(
        self, method: str, url: str, *, what: str, detail: dict[str, Any], **kwargs: Any
    ) -> httpx.Response:
        """One HTTP call; network failures become send errors (no patient data in them)."""
        try:
            return self._client().request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            reason = f"timeout ({type(exc).__name__})"
            raise TransientSendError(f"{what}: {reason}", reason=reason, detail=detail) from None
        except httpx.HTTPError as exc:
            problem = _tls_problem(exc, "token_url" if url == self.token_url else "base_url")
            if problem is not None:
                reason = f"TLS: {problem}"
                logger.warning("%s: %s", what, reason)
                raise PermanentSendError(f"{what}: {reason}", reason=reason, detail=detail) from None
            if isinstance(exc, httpx.RemoteProtocolError):
                reason = "connection closed without an answer"
            elif isinstance(exc, httpx.ConnectError):
                reason = "connection failed"
            else:
                reason = f"network error ({type(exc).__name__})"
            raise TransientSendError(f"{what}: {reason}", reason=reason, detail=detail) from None

    # -- OAuth 2.0 ------------------------------------------------------------------------------

    def access_token(self, *, renew: bool = False) -> str:
        """A bearer token: the cached one while it is fresh, else a new one (``renew`` forces it).

        Raises:
            TransientSendError: the token endpoint is unreachable, busy or failing (5xx).
            PermanentSendError: the token request was refused (bad client id or secret, scope…).
        """
        now = time.monotonic()
        if not renew and self._token is not None and now < self._token.refresh_at:
            return self._token.value
        self._token = None
        form = {"grant_type": "client_credentials", **self.token_params}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["audience"] = self.audience
        auth: httpx.BasicAuth | None = None
        if self.token_auth == "client_secret_basic":
            auth = httpx.BasicAuth(self.client_id, self._client_secret)
        else:
            form |= {"client_id": self.client_id, "client_secret": self._client_secret}
        detail: dict[str, Any] = {"operation": "token"}
        what = "MSSanté API token request"
        response = self._exchange(
            "POST",
            self.token_url,
            what=what,
            detail=detail,
            data=form,
            auth=auth,
            headers={"Accept": "application/json"},
        )
        data = _json(response)
        detail["http_status"] = response.status_code
        if response.status_code != 200:
            error = data.get("error") if isinstance(data, dict) else None
            description = data.get("error_description") if isinstance(data, dict) else None
            reason = f"OAuth token refused: HTTP {response.status_code}"
            if isinstance(error, str):
                reason += f" {error[:60]}"
                detail["oauth_error"] = error[:60]
            if isinstance(description, str) and description.strip():
                reason += f" ({redact(description)[:200]})"
            if response.status_code in _RETRYABLE_STATUS or response.status_code >= 500:
                self._add_retry_after(response, detail)
                raise TransientSendError(f"{what}: {reason}", reason=reason, detail=detail)
            logger.error("%s refused: HTTP %s %s", what, response.status_code, detail.get("oauth_error", ""))
            raise PermanentSendError(f"{what}: {reason}", reason=reason, detail=detail)
        token = data.get("access_token") if isinstance(data, dict) else None
        kind = data.get("token_type", "Bearer") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token or not isinstance(kind, str) or kind.lower() != "bearer":
            reason = "the token endpoint answered without a bearer access_token"
            raise PermanentSendError(f"{what}: {reason}", reason=reason, detail=detail)
        lifetime = _DEFAULT_LIFETIME
        expires_in = data.get("expires_in")
        if isinstance(expires_in, int | float | str) and not isinstance(expires_in, bool):
            with contextlib.suppress(ValueError):
                lifetime = max(float(expires_in), 0.0)
        # Renew before expiry, so a token never dies between the check and the call.
        margin = min(60.0, lifetime * 0.1)
        self._token = _Token(token, now + lifetime - margin)
        logger.debug("MSSanté API: new access token, valid %.0f s", lifetime)
        return token

    def _authorized(
        self,
        method: str,
        url: str,
        *,
        what: str,
        detail: dict[str, Any],
        headers: dict[str, str],
        **kwargs: Any,
    ) -> httpx.Response:
        """A call with the bearer token; a 401 is retried once with a new token."""
        token = self.access_token()
        response = self._exchange(
            method,
            url,
            what=what,
            detail=detail,
            headers={**headers, "Authorization": f"Bearer {token}"},
            **kwargs,
        )
        if response.status_code == 401:
            logger.info("%s: token refused (HTTP 401), fetching a new one", what)
            response.close()
            token = self.access_token(renew=True)
            response = self._exchange(
                method,
                url,
                what=what,
                detail=detail,
                headers={**headers, "Authorization": f"Bearer {token}"},
                **kwargs,
            )
        return response

    @staticmethod
    def _add_retry_after(response: httpx.Response, detail: dict[str, Any]) -> None:
        seconds = _retry_after(response.headers.get("Retry-After"))
        if seconds is not None:
            detail["retry_after"] = seconds

    def _refused(
        self, response: httpx.Response, *, what: str, detail: dict[str, Any], job: Job | None
    ) -> NoReturn:
        status = response.status_code
        codes, diagnostics = _issues(_json(response))
        reason = f"HTTP {status}"
        if codes:
            reason += " " + ",".join(c[:40] for c in codes[:5])
            detail["issues"] = codes[:5]
        if diagnostics:
            reason += f": {redact(diagnostics, job)}"
        elif status == 401:
            reason += ": access token refused after renewal"
        elif 300 <= status < 400:
            reason += ": redirected (check base_url)"
        reason = reason[:500]
        detail["http_status"] = status
        if status in _RETRYABLE_STATUS or status >= 500:
            self._add_retry_after(response, detail)
            logger.warning("%s: not accepted, will retry (%s)", what, reason)
            raise TransientSendError(f"{what}: {reason}", reason=reason, detail=detail)
        logger.error("%s: refused (%s)", what, reason)
        raise PermanentSendError(f"{what}: {reason}", reason=reason, detail=detail)

    # -- sending --------------------------------------------------------------------------------

    def send(self, job: Job) -> Acknowledgement:
        """Post the job's message to ``$send-to-mss`` and return the operator's acceptance.

        Raises:
            TransientSendError: timeout, connection error, 429/408/425/5xx, token endpoint down.
            PermanentSendError: the request cannot be built, the operator refused it (4xx), or
                the credentials or the operator's certificate were refused.
        """
        key = job.key[:16]
        what = f"MSSanté API delivery {key} of {job.delivery.document_id}"
        mid: str | None = None
        try:
            mid = message_id(job, self.sender_address)
            body = build_request(
                job, self.context, sender_address=self.sender_address, submission_time=datetime.now(UTC)
            )
        except (InputError, ValueError, PermanentSendError) as exc:
            reason = exc.reason if isinstance(exc, PermanentSendError) else str(exc)
            raise PermanentSendError(
                f"{what}: the request cannot be built: {reason}",
                reason=f"request cannot be built: {reason}",
                detail={"message_id": mid},
            ) from exc
        detail: dict[str, Any] = {"operation": "send-to-mss", "message_id": mid}
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        response = self._authorized(
            "POST",
            self.send_url,
            what=what,
            detail=detail,
            content=content,
            headers={
                "Content-Type": f"{_FHIR_JSON}; charset=utf-8",
                "Accept": _FHIR_JSON,
                "Idempotency-Key": job.key,
            },
        )
        if not 200 <= response.status_code < 300:
            self._refused(response, what=what, detail=detail, job=job)
        transaction_id, tracking_url = _transaction(response)
        ack: dict[str, Any] = {
            "transaction_id": transaction_id,
            "http_status": response.status_code,
            "message_id": mid,
        }
        if tracking_url:
            ack["tracking_url"] = tracking_url
        if transaction_id is None:
            logger.warning("%s: accepted (HTTP %s) without a transaction id", what, response.status_code)
        else:
            logger.info("%s: accepted (HTTP %s, transaction %s)", what, response.status_code, transaction_id)
        summary = f"HTTP {response.status_code} accepted" + (
            f", transaction {transaction_id}" if transaction_id else ""
        )
        return Acknowledgement(summary[:200], ack)

    def tracking(self, transaction_id: str) -> TrackingStatus:
        """The sending status of a transaction, from ``$tracking``.

        Raises:
            TransientSendError: the operator is unreachable, busy or failing.
            PermanentSendError: the operator refused the request (unknown transaction…).
        """
        what = f"MSSanté API tracking of {transaction_id[:64]}"
        detail: dict[str, Any] = {"operation": "tracking", "transaction_id": transaction_id}
        response = self._authorized(
            "GET",
            self.tracking_url,
            what=what,
            detail=detail,
            params={"transaction-id": transaction_id},
            headers={"Accept": _FHIR_JSON},
        )
        if response.status_code != 200:
            self._refused(response, what=what, detail=detail, job=None)
        data = _json(response)
        resource = data if isinstance(data, dict) else {}
        status: str | None = None
        recipients: dict[str, str] = {}
        if resource.get("resourceType") == "Parameters":
            for parameter in resource.get("parameter") or []:
                if not isinstance(parameter, dict):
                    continue
                if parameter.get("name") == "status":
                    status = _primitive(parameter)
                elif parameter.get("name") == "recipient":
                    parts = {
                        p.get("name"): _primitive(p)
                        for p in parameter.get("part") or []
                        if isinstance(p, dict)
                    }
                    address, state = parts.get("address"), parts.get("status")
                    if address:
                        recipients[address] = state or "unknown"
        elif isinstance(resource.get("status"), str):
            status = resource["status"]
        return TrackingStatus(transaction_id, status or "unknown", recipients, response.status_code, resource)


def _primitive(parameter: Mapping[str, Any]) -> str | None:
    for key in ("valueCode", "valueString", "valueUri", "valueUrl"):
        value = parameter.get(key)
        if isinstance(value, str):
            return value
    return None


def _transaction(response: httpx.Response) -> tuple[str | None, str | None]:
    """The transaction id and tracking URL of a ``$send-to-mss`` answer, wherever the operator put them."""
    data = _json(response)
    urls: list[str] = []
    if isinstance(data, dict):
        for extension in data.get("extension") or []:
            if isinstance(extension, dict):
                value = _primitive(extension)
                if value:
                    urls.append(value)
        if data.get("resourceType") == "Parameters":
            for parameter in data.get("parameter") or []:
                if isinstance(parameter, dict) and parameter.get("name") in {
                    "transaction-id",
                    "transactionId",
                }:
                    value = _primitive(parameter)
                    if value:
                        return value, None
    if response.headers.get("Location"):
        urls.append(response.headers["Location"])
    for url in urls:
        found = parse_qs(urlsplit(url).query).get("transaction-id")
        if found and found[0]:
            return found[0], url
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"]:
        return data["id"], None
    return None, None


def _string(section: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = section.get(key)
    if value is None:
        if required:
            raise ConfigurationError(f"{_WHERE}.{key}: required", code="config.missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{_WHERE}.{key}: must be a non-empty string", code="config.value")
    return value.strip()


def _url(section: Mapping[str, Any], key: str) -> str:
    value = _string(section, key, required=True)
    assert value is not None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigurationError(f"{_WHERE}.{key}: must be an https:// URL", code="config.value")
    return value
