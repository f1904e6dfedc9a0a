"""A DMP-like IHE XDS.b registry and repository on 127.0.0.1, over HTTPS with mutual TLS.

:class:`XdsSimulator` answers the three transactions a lab system uses to feed the DMP:

* ITI-41 Provide and Register Document Set-b (``POST …/repository``), MTOM/XOP only;
* ITI-18 Registry Stored Query (``POST …/registry``): FindDocuments and GetDocuments;
* ITI-57 Update Document Set (``POST …/registry``), limited to the availability-status change
  the DMP uses for deletion and archiving.

It checks what the DMP checks, written from the specifications (IHE ITI TF vol. 2/3, the ANS
volets and value sets) rather than from crbio's own client: real MTOM/XOP, a SOAP 1.2
envelope with WS-Addressing, a signed VIHF (SAML 2.0) assertion verified against the test CA,
DocumentEntry metadata against the DMP value sets and against the CDA header, a signed
submission set (XAdES, IHE DSG manifest), the patient, duplicates and replacements. A refusal
is a ``RegistryResponse`` Failure with the IHE error code (or a SOAP fault for the security and
envelope layers), the kind of answer a sender has to handle from the real service.

Faults are injected with a :class:`~crbio.simulators.base.FaultPlan`, and everything received
is kept for the tests: :attr:`XdsSimulator.entries`, :attr:`XdsSimulator.requests`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import re
import ssl
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesHeaderParser
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate, SignXMLException
from signxml.util import X509CertChainVerifier
from signxml.verifier import SignatureConfiguration, XMLVerifier

from crbio._xml import parse_xml
from crbio.errors import InputError
from crbio.identifiers import INS_OIDS, check_ins_matricule, check_oid
from crbio.simulators.base import Fault, FaultPlan, HttpHandler, LocalServer, server_tls_context
from crbio.simulators.pki import TestPki

__all__ = [
    "APPROVED",
    "ARCHIVED",
    "DELETED",
    "DEPRECATED",
    "SERVICE_PATH",
    "TrustedChains",
    "XdsEntry",
    "XdsRequest",
    "XdsSimulator",
]

logger = logging.getLogger("crbio.simulators.xds")

SERVICE_PATH: Final = "/si-dmp-server/v2/services"
"""Path of the services under the host, as on the DMP (``…/repository``, ``…/registry``)."""

# Availability statuses: ebRIM ones, plus the two the DMP adds for TD3.3c/d (JDV_J52).
APPROVED: Final = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED: Final = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
DELETED: Final = "urn:asip:ci-sis:2010:StatusType:Deleted"
ARCHIVED: Final = "urn:asip:ci-sis:2010:StatusType:Archived"

# A repository uniqueId for the simulated DMP repository (the value seen in ANS sample code).
REPOSITORY_UNIQUE_ID: Final = "1.2.250.1.213.4.1.1.1.2"

# --- namespaces -------------------------------------------------------------------------------
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XOP = "http://www.w3.org/2004/08/xop/include"
XDSB = "urn:ihe:iti:xds-b:2007"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
HL7 = "urn:hl7-org:v3"
XML_NS = "http://www.w3.org/XML/1998/namespace"

_RESPONSE_NSMAP = {"soap": SOAP12, "wsa": WSA, "wsse": WSSE, "rs": RS, "rim": RIM, "query": QUERY}

# --- WS-Addressing actions --------------------------------------------------------------------
ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
_TRANSACTIONS = {ITI41: "ITI-41", ITI18: "ITI-18", ITI57: "ITI-57"}
_ENDPOINT_ACTIONS = {"repository": {ITI41}, "registry": {ITI18, ITI57}}
_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"

# --- XDS metadata identifiers (IHE ITI TF-3 §4.2) ----------------------------------------------
STABLE_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND_ENTRY = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_CODES = {
    "classCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "typeCode": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "formatCode": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "healthcareFacilityTypeCode": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practiceSettingCode": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "confidentialityCode": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "eventCodeList": "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4",
}
_SINGLE_CODES = ("classCode", "typeCode", "formatCode", "healthcareFacilityTypeCode", "practiceSettingCode")

HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
UPDATE_AVAILABILITY = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"

FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
SEVERITY_ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"

# IHE DSG signature entry (the DMP wants a signed submission set).
SIGNATURE_CLASS = "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
SIGNATURE_FORMATS = {"http://www.w3.org/2000/09/xmldsig#", "urn:ihe:iti:dsg:detached:2014"}
SIGNATURE_TYPE = "E1762"

HL7_CONFIDENTIALITY = "2.16.840.1.113883.5.25"
VISIBILITY_SYSTEM = "1.2.250.1.213.1.1.4.13"
FACILITY_SYSTEM = "1.2.250.1.71.4.2.4"
PURPOSE_OF_USE_SYSTEM = "1.2.250.1.213.1.1.4.248"
PROFESSION_SYSTEM = "1.2.250.1.71.1.2.7"  # TRE_G15-ProfessionSante
_SECOND_ROLE_PROFESSIONS = {"10", "21"}  # médecin, pharmacien: a second role occurrence is required

# ASS_A11: CDA templates -> the formatCode the DMP expects for them.
_XD_LAB = "urn:ihe:lab:xd-lab:2008"
_XDS_SD_PDF = "urn:ihe:iti:xds-sd:pdf:2008"
_LAB_TEMPLATES = {"1.2.250.1.213.1.1.1.55", "1.3.6.1.4.1.19376.1.3.3"}
_XDS_SD_TEMPLATE = "1.3.6.1.4.1.19376.1.2.20"

# VIHF attributes the DMP requires (IG HL7v2 "Mapping VIHF pour le DMP").
VIHF_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
VIHF_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
VIHF_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
VIHF_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
VIHF_CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
MANDATORY_VIHF_ATTRIBUTES: Final = (
    "VIHF_Version",
    "Authentification_Mode",
    "Identifiant_Structure",
    "Secteur_Activite",
    VIHF_SUBJECT_ID,
    VIHF_ROLE,
    VIHF_RESOURCE_ID,
    "Ressource_URN",
    VIHF_PURPOSE,
    "LPS_Nom",
    "LPS_Version",
)
# Attributes whose values are HL7 v3 coded elements (xsi:type="CE"), by element name.
_CODED_ATTRIBUTES = {VIHF_ROLE: "Role", VIHF_PURPOSE: "PurposeOfUse"}
_VIHF_VERSIONS = {"3.0", "4.0"}  # the examples say 3.0, the IG table 4.0 (domain note §5)
_AUTHENTICATION_MODES = {"INDIRECTE", "INDIRECTE_RENFORCEE", "DIRECTE"}
_CLOCK_SKEW = timedelta(minutes=5)

_MAX_BODY = 64 * 1024 * 1024
_HANDSHAKE_TIMEOUT = 10.0
_IDLE_TIMEOUT = 30.0

_INS_CX = re.compile(r"([^^&]+)\^\^\^&([0-9.]+)&ISO(?:\^(NH)?)?")
_TIMESTAMP = re.compile(r"[0-9]{4}(?:[0-9]{2}){0,5}")

# Every algorithm but HMAC: SHA-1 too, which ANS sample code still uses (domain note §1.4).
_SIGNATURE_METHODS: Final = frozenset(m for m in SignatureMethod if not m.name.startswith("HMAC"))


def _signature_config(*, location: str = ".//", references: int = 1) -> SignatureConfiguration:
    return SignatureConfiguration(
        location=location,
        expect_references=references,
        signature_methods=_SIGNATURE_METHODS,
        digest_algorithms=frozenset(DigestAlgorithm),
    )


_DIGESTS: Final = {
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "http://www.w3.org/2001/04/xmldsig-more#sha224": "sha224",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
# Canonicalisations a manifest reference may apply to a CDA before digesting it:
# algorithm -> (exclusive, with comments). C14N 1.1 gives C14N 1.0's octets for a CDA.
_C14N: Final = {
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315": (False, False),
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments": (False, True),
    "http://www.w3.org/2006/12/xml-c14n11": (False, False),
    "http://www.w3.org/2006/12/xml-c14n11#WithComments": (False, True),
    "http://www.w3.org/2001/10/xml-exc-c14n#": (True, False),
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments": (True, True),
}


# A verified chain: its signing certificate and when every certificate of its path is valid.
_KnownChain = tuple[x509.Certificate, datetime, datetime]


class TrustedChains:
    """The CA that signatures must chain to, read once, and the chains already verified against it.

    signxml reads the CA file and verifies the certificate chain of the ``KeyInfo`` on every
    signature; a DMP verifies the same few structure certificates over and over. Verifying a
    chain is a pure function of the chain, the trust anchors and the time, so the outcome is
    kept per distinct chain (the exact DER bytes of its certificates) together with the period
    in which every certificate of the built path is valid: outside that period, or for any
    other chain, the chain is verified again. Failures are never kept. The signature itself,
    the references and every other check are verified on each request as before.

    Args:
        ca_file: PEM file of the trust anchors (the test PKI's CA).
        limit: How many verified chains to remember (least recently used forgotten first).
    """

    def __init__(self, ca_file: Path, *, limit: int = 256) -> None:
        self.ca_file = Path(ca_file)
        self.store = x509.verification.Store(x509.load_pem_x509_certificates(self.ca_file.read_bytes()))
        self.limit = limit
        self.verified_chains = 0  # chains verified in full (cache misses that passed), for the tests
        self._lock = threading.Lock()
        self._known: OrderedDict[tuple[bytes, ...], _KnownChain] = OrderedDict()

    def signing_certificate(self, chain: Sequence[x509.Certificate], at: datetime) -> x509.Certificate:
        """The leaf of ``chain`` once it chains to the CA at time ``at`` (signxml's rules).

        Raises:
            InvalidCertificate: the chain does not lead to the CA, a certificate is outside its
                validity period at ``at``, or the leaf may not sign (KeyUsage).
        """
        key = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
        with self._lock:
            known = self._known.get(key)
            if known is not None and known[1] <= at <= known[2]:
                self._known.move_to_end(key)
                return known[0]
        checker = _StoreChainVerifier(self.store, at)
        # Raises InvalidCertificate; a failure is never kept.
        leaf: x509.Certificate = checker.verify(list(chain))  # type: ignore[no-untyped-call]
        path = checker.path or [leaf]
        valid_from = max(c.not_valid_before_utc for c in path)
        valid_until = min(c.not_valid_after_utc for c in path)
        with self._lock:
            self.verified_chains += 1
            self._known[key] = (leaf, valid_from, valid_until)
            self._known.move_to_end(key)
            while len(self._known) > self.limit:
                self._known.popitem(last=False)
        return leaf


class _StoreChainVerifier(X509CertChainVerifier):
    """signxml's chain verifier (same policies, same fallback order) on an already built store."""

    def __init__(self, store: x509.verification.Store, at: datetime) -> None:
        super().__init__(ca_pem_file="(preloaded)", verification_time=at)  # type: ignore[no-untyped-call]
        self._store = store
        self.path: list[x509.Certificate] | None = None

    @property
    def store(self) -> x509.verification.Store:
        return self._store

    def _do_verify(self, cert_chain: list[x509.Certificate]) -> x509.Certificate:
        leaf, intermediates = cert_chain[0], cert_chain[1:]
        result = self.verifier.verify(leaf=leaf, intermediates=intermediates)
        self.path = list(result.chain)
        signing: x509.Certificate = result.chain[0]
        return signing


class _CachedChainCheck:
    """What signxml asks for a chain (``verify(chain)``), answered by :class:`TrustedChains`."""

    def __init__(self, trusted: TrustedChains, at: datetime) -> None:
        self._trusted = trusted
        self._at = at

    def verify(self, cert_chain: list[x509.Certificate]) -> x509.Certificate:
        return self._trusted.signing_certificate(cert_chain, self._at)


class _Verifier(XMLVerifier):
    """signxml's verifier whose certificate-chain step goes through :class:`TrustedChains`."""

    def __init__(self, trusted: TrustedChains) -> None:
        super().__init__()
        self._trusted = trusted

    def get_cert_chain_verifier(self, ca_pem_file: Any, ee_policy: Any, ca_policy: Any) -> Any:
        if ee_policy is not None or ca_policy is not None:  # not used here: signxml's own path
            return super().get_cert_chain_verifier(ca_pem_file, ee_policy, ca_policy)  # type: ignore[no-untyped-call]
        at: datetime = self._get_cert_verification_time()  # type: ignore[no-untyped-call]
        return _CachedChainCheck(self._trusted, at)


def _q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


def _now() -> datetime:
    return datetime.now(UTC)


# =============================================================================================
# What the simulator keeps
# =============================================================================================


@dataclass(frozen=True)
class XdsEntry:
    """A DocumentEntry the simulated DMP holds, with its document.

    Attributes:
        entry_uuid: The registry id (``urn:uuid:…``): the one the source gave, or one assigned.
        unique_id: The document's uniqueId (the CDA ``id/@root``).
        patient_id: The patientId as submitted (INS in CX form).
        status: The availability status (:data:`APPROVED`, :data:`DEPRECATED`, :data:`DELETED`…).
        metadata: The DocumentEntry metadata: one key per code (``typeCode``, ``classCode``,
            ``formatCode``, ``healthcareFacilityTypeCode``, ``practiceSettingCode`` as a code;
            ``confidentialityCode`` and ``eventCodeList`` as lists, N/R/V first), ``codes``
            (every code with its codingScheme and display name), ``slots`` (name → values),
            ``authors`` (one dict of slots per author), ``title``, ``mimeType``, ``uniqueId``,
            ``patientId``.
        content: The document's bytes.
        submission_set_unique_id: The uniqueId of the submission set that brought it.
        received_at: When it was accepted (UTC).
        vihf: The VIHF attributes of the submitting request (name → values; coded values as
            ``code^displayName^codeSystem``), plus ``Issuer``, ``NameID`` and
            ``AuthnContextClassRef``.
        replaced_entry_uuid: For a replacement, the entryUUID of the entry it deprecated.
        mime_type: The declared mimeType.
        hash: SHA-1 of the content, lowercase hex.
        size: Size of the content in bytes.
        is_signature: Whether this is the submission-set signature (IHE DSG) entry.
    """

    entry_uuid: str
    unique_id: str
    patient_id: str
    status: str
    metadata: Mapping[str, Any]
    content: bytes
    submission_set_unique_id: str
    received_at: datetime
    vihf: Mapping[str, tuple[str, ...]]
    replaced_entry_uuid: str | None = None
    mime_type: str = "text/xml"
    hash: str = ""
    size: int = 0
    is_signature: bool = False

    @property
    def document(self) -> bytes:
        """The document's bytes (same as :attr:`content`)."""
        return self.content


@dataclass(frozen=True)
class XdsRequest:
    """One HTTP request the simulator received and how it ended.

    Attributes:
        transaction: ``ITI-41``, ``ITI-18``, ``ITI-57``, or ``unknown`` when the request could
            not be read far enough to tell.
        outcome: ``success``, ``failure`` (a RegistryResponse Failure), ``soap-fault``,
            ``server-error`` (injected HTTP 500), ``dropped`` (connection closed unanswered) or
            ``http-error`` (wrong path, unreadable body).
        errors: The IHE error codes of a failure, or the fault's subcode.
        raw: The request body as received.
        content_type: The request's Content-Type.
        path: The request path.
        fault: The injected fault, if any.
        client_subject: The subject of the client certificate, when one was presented.
        received_at: When the request arrived (UTC).
    """

    transaction: str
    outcome: str
    errors: tuple[str, ...]
    raw: bytes
    content_type: str
    path: str
    fault: Fault | None
    client_subject: str | None
    received_at: datetime


# =============================================================================================
# Errors the transactions answer with
# =============================================================================================


@dataclass(frozen=True)
class _Error:
    code: str
    context: str
    location: str = ""


class _Failure(Exception):
    """A RegistryResponse Failure: one or more IHE errors."""

    def __init__(self, errors: Sequence[_Error]) -> None:
        super().__init__("; ".join(f"{e.code}: {e.context}" for e in errors))
        self.errors = list(errors)


def _fail(code: str, context: str, location: str = "") -> _Failure:
    return _Failure([_Error(code, context, location)])


class _SoapFault(Exception):
    """A SOAP 1.2 fault: the message could not be taken as a valid, authenticated request."""

    def __init__(self, reason: str, *, subcode: str | None = None, code: str = "Sender") -> None:
        super().__init__(reason)
        self.reason = reason
        self.subcode = subcode  # a QName with a prefix of the response envelope (wsse:, wsa:)
        self.code = code  # Sender, Receiver, VersionMismatch, MustUnderstand

    @property
    def http_status(self) -> int:
        # SOAP 1.2 HTTP binding: a Sender fault is the client's (400), the others are 500.
        return 400 if self.code == "Sender" else 500


# =============================================================================================
# Value sets
# =============================================================================================


@dataclass(frozen=True)
class _ValueSet:
    name: str
    pairs: frozenset[tuple[str, str]]  # (code, codingScheme)
    codes: frozenset[str] = frozenset()  # the codes alone, derived from pairs

    def __post_init__(self) -> None:
        # Derived once: a membership test per author specialty must not rebuild the set.
        object.__setattr__(self, "codes", frozenset(code for code, _ in self.pairs))


@cache
def _value_sets() -> dict[str, _ValueSet]:
    path = Path(__file__).resolve().parent / "data" / "xds-value-sets.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        key: _ValueSet(value["name"], frozenset((c[0], c[1]) for c in value["concepts"]))
        for key, value in data["value_sets"].items()
    }


# =============================================================================================
# HTTP message: MTOM/XOP or plain SOAP
# =============================================================================================


@dataclass
class _Message:
    envelope: etree._Element
    attachments: dict[str, bytes]
    mtom: bool
    action: str = ""
    message_id: str | None = None


def _content_id(value: str | None) -> str:
    unfolded = (value or "").replace("\r\n", "").replace("\n", "")  # RFC 5322 §2.2.3
    return unfolded.strip().removeprefix("<").removesuffix(">").strip()


def _read_message(content_type: str, body: bytes) -> _Message:
    """Parse the HTTP body: a multipart/related XOP package or a bare SOAP 1.2 envelope."""
    header = Message()
    header["Content-Type"] = content_type or "application/octet-stream"
    media = header.get_content_type()
    if media == "multipart/related":
        return _read_multipart(content_type, body)
    if media == "application/soap+xml":
        return _Message(_parse_envelope(body), {}, mtom=False)
    if media == "text/xml":
        raise _SoapFault(
            "SOAP 1.1 (text/xml) is not accepted: the DMP speaks SOAP 1.2", code="VersionMismatch"
        )
    raise _SoapFault(f"unsupported Content-Type {media!r}: expected multipart/related (MTOM/XOP)")


def _read_multipart(content_type: str, body: bytes) -> _Message:
    header = Message()
    header["Content-Type"] = content_type
    if header.get_param("type") != "application/xop+xml":
        raise _SoapFault('MTOM requires multipart/related; type="application/xop+xml"')
    parts = _mime_parts(body, str(header.get_param("boundary") or ""))
    if not parts:
        raise _SoapFault("multipart/related body without parts")
    start = _content_id(str(header.get_param("start") or ""))
    root = next((p for p in parts if start and _content_id(p[0]["Content-ID"]) == start), None)
    if start and root is None:
        raise _SoapFault("the start parameter names no MIME part")
    root_headers, envelope = root or parts[0]
    if (
        root_headers.get_content_type() != "application/xop+xml"
        or root_headers.get_param("type") != "application/soap+xml"
    ):
        raise _SoapFault('the root part must be application/xop+xml; type="application/soap+xml"')
    attachments = {
        cid: content
        for headers, content in parts
        if headers is not root_headers and (cid := _content_id(headers["Content-ID"]))
    }
    return _Message(_parse_envelope(envelope), attachments, mtom=True)


def _mime_parts(body: bytes, boundary: str) -> list[tuple[Message, bytes]]:
    """The parts of a multipart body: each one's headers and decoded content (RFC 2046 §5.1.1).

    The standard library's parser would do, but it walks megabytes of attachments line by line
    in Python; splitting on the delimiter is what an HTTP server's MIME reader does.
    """
    if not boundary:
        raise _SoapFault("multipart/related without a boundary parameter")
    delimiter = b"\r\n--" + boundary.encode("latin-1", "replace")
    chunks = (b"\r\n" + body).split(delimiter)
    parts: list[tuple[Message, bytes]] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            return parts
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise _SoapFault("a MIME part has no blank line after its headers")
        # What follows the delimiter on its line is transport padding, not a header.
        header_lines = head.partition(b"\r\n")[2]
        # compat32 reads the few MIME headers of a part ten times faster than the HTTP policy's
        # header registry; get_content_type/get_param give the same answers (values unfolded
        # where they are used, see _content_id).
        headers = BytesHeaderParser().parsebytes(header_lines + b"\r\n\r\n")
        encoding = str(headers.get("Content-Transfer-Encoding", "binary")).strip().lower()
        if encoding == "base64":
            content = base64.b64decode(content)
        elif encoding not in ("binary", "8bit", "7bit"):
            raise _SoapFault(f"unsupported Content-Transfer-Encoding {encoding[:20]!r} in a MIME part")
        parts.append((headers, content))
    raise _SoapFault("multipart/related body without its closing delimiter")


def _parse_envelope(data: bytes) -> etree._Element:
    try:
        return parse_xml(data, label="SOAP envelope").getroot()
    except InputError as error:
        raise _SoapFault(error.message) from None


def _check_envelope(message: _Message, endpoint: str) -> None:
    """Check SOAP 1.2, the header blocks and the WS-Addressing Action of the endpoint."""
    envelope = message.envelope
    if envelope.tag == _q(SOAP11, "Envelope"):
        raise _SoapFault("SOAP 1.1 envelope: the DMP speaks SOAP 1.2", code="VersionMismatch")
    if envelope.tag != _q(SOAP12, "Envelope"):
        raise _SoapFault("the root element is not a SOAP 1.2 Envelope")
    header = envelope.find(_q(SOAP12, "Header"))
    body = envelope.find(_q(SOAP12, "Body"))
    if header is None or body is None or len(body) != 1:
        raise _SoapFault("the envelope needs a Header and a Body with one element")
    for block in header:
        if not isinstance(block.tag, str):
            continue
        understood = etree.QName(block).namespace in (WSA, WSSE)
        if block.get(_q(SOAP12, "mustUnderstand")) in ("true", "1") and not understood:
            raise _SoapFault(f"header block {block.tag} is not understood", code="MustUnderstand")
    message_id = header.findtext(_q(WSA, "MessageID"))
    action = (header.findtext(_q(WSA, "Action")) or "").strip()
    message.message_id = message_id.strip() if message_id else None
    message.action = action
    if not action:
        raise _SoapFault("no wsa:Action header", subcode="wsa:MessageAddressingHeaderRequired")
    if not message.message_id:
        raise _SoapFault("no wsa:MessageID header", subcode="wsa:MessageAddressingHeaderRequired")
    if action not in _ENDPOINT_ACTIONS[endpoint]:
        raise _SoapFault(
            f"action {action} is not served by the {endpoint} endpoint", subcode="wsa:ActionNotSupported"
        )


# =============================================================================================
# VIHF: the SAML 2.0 assertion in wsse:Security
# =============================================================================================


@dataclass(frozen=True)
class _Vihf:
    attributes: dict[str, tuple[str, ...]]
    patient: tuple[str, str]  # (matricule, INS OID) of resource-id
    structure: str  # Identifiant_Structure


def _coded_value(value: etree._Element) -> str:
    """An AttributeValue as text, a coded one (Role, PurposeOfUse) as code^displayName^codeSystem."""
    children = [c for c in value if isinstance(c.tag, str)]
    if children:
        coded = children[0]
        return "^".join((coded.get("code", ""), coded.get("displayName", ""), coded.get("codeSystem", "")))
    return (value.text or "").strip()


def _signing_certificate(signature: etree._Element, public_key_pem: bytes) -> x509.Certificate | None:
    for text in signature.iterfind(f".//{{{DS}}}X509Certificate"):
        cert = x509.load_der_x509_certificate(base64.b64decode("".join((text.text or "").split())))
        pem = cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if pem.strip() == public_key_pem.strip():
            return cert
    return None


def _name_set(name: x509.Name) -> set[tuple[str, str]]:
    return {(attribute.oid.dotted_string, str(attribute.value)) for attribute in name}


def _saml_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _SoapFault(f"unreadable SAML time {value!r}", subcode="wsse:InvalidSecurityToken") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_vihf(header: etree._Element, trusted: TrustedChains) -> _Vihf:
    """Verify the VIHF: signature against the CA, issuer, validity and the mandatory attributes."""
    security = header.find(_q(WSSE, "Security"))
    if security is None:
        raise _SoapFault("no wsse:Security header: a VIHF is required", subcode="wsse:InvalidSecurity")
    assertions = security.findall(_q(SAML, "Assertion"))
    if len(assertions) != 1:
        raise _SoapFault(
            "wsse:Security must hold one SAML 2.0 Assertion (VIHF)", subcode="wsse:InvalidSecurity"
        )
    assertion = assertions[0]
    elements = [c for c in assertion if isinstance(c.tag, str)]
    if len(elements) < 2 or elements[0].tag != _q(SAML, "Issuer") or elements[1].tag != _q(DS, "Signature"):
        raise _SoapFault(
            "the assertion must start with saml:Issuer then ds:Signature (SAML 2.0 schema)",
            subcode="wsse:InvalidSecurityToken",
        )
    try:
        result = _Verifier(trusted).verify(
            etree.tostring(assertion),
            ca_pem_file=str(trusted.ca_file),
            expect_config=_signature_config(),
        )
    except InvalidCertificate as error:
        raise _SoapFault(
            f"VIHF signing certificate not trusted: {error}", subcode="wsse:FailedAuthentication"
        ) from None
    except (SignXMLException, etree.DocumentInvalid) as error:
        raise _SoapFault(f"VIHF signature does not verify: {error}", subcode="wsse:FailedCheck") from None
    assert not isinstance(result, list)
    signed = result.signed_xml
    # Read only what the signature covers: the whole assertion, by its ID.
    if signed is None or signed.tag != _q(SAML, "Assertion") or signed.get("ID") != assertion.get("ID"):
        raise _SoapFault("the VIHF signature does not cover the assertion", subcode="wsse:FailedCheck")
    if signed.get("Version") != "2.0" or not signed.get("ID") or not signed.get("IssueInstant"):
        raise _SoapFault(
            "the assertion needs Version 2.0, an ID and an IssueInstant", subcode="wsse:InvalidSecurityToken"
        )
    issuer = (signed.findtext(_q(SAML, "Issuer")) or "").strip()
    cert = _signing_certificate(result.signature_xml, result.signature_key)
    try:
        issuer_name = x509.Name.from_rfc4514_string(issuer)
    except ValueError:
        raise _SoapFault("saml:Issuer is not an RFC 2253 DN", subcode="wsse:InvalidSecurityToken") from None
    if cert is None or _name_set(issuer_name) != _name_set(cert.subject):
        raise _SoapFault(
            "saml:Issuer is not the DN of the certificate that signed the VIHF",
            subcode="wsse:FailedAuthentication",
        )
    now = _now()
    conditions = signed.find(_q(SAML, "Conditions"))
    if conditions is not None:
        not_before = _saml_time(conditions.get("NotBefore"))
        not_after = _saml_time(conditions.get("NotOnOrAfter"))
        if (not_before and now + _CLOCK_SKEW < not_before) or (not_after and now - _CLOCK_SKEW >= not_after):
            raise _SoapFault("the VIHF is outside its validity period", subcode="wsse:MessageExpired")
    name_id = (signed.findtext(f"{{{SAML}}}Subject/{{{SAML}}}NameID") or "").strip()
    context = (
        signed.findtext(f".//{{{SAML}}}AuthnStatement/{{{SAML}}}AuthnContext/{{{SAML}}}AuthnContextClassRef")
        or ""
    ).strip()
    if not name_id or not context:
        raise _SoapFault(
            "the VIHF needs Subject/NameID and AuthnStatement/AuthnContext/AuthnContextClassRef",
            subcode="wsse:InvalidSecurityToken",
        )
    attributes: dict[str, list[str]] = {}
    for attribute in signed.iterfind(f"{{{SAML}}}AttributeStatement/{{{SAML}}}Attribute"):
        name = attribute.get("Name", "")
        values = list(attribute.iterfind(_q(SAML, "AttributeValue")))
        element = _CODED_ATTRIBUTES.get(name)
        if element is not None and not all(
            any(isinstance(c.tag, str) and c.tag == _q(HL7, element) for c in v) for v in values
        ):
            raise _SoapFault(
                f"VIHF: {name} values must be hl7:{element} coded elements",
                subcode="wsse:InvalidSecurityToken",
            )
        attributes.setdefault(name, []).extend(text for text in map(_coded_value, values) if text)
    missing = [name for name in MANDATORY_VIHF_ATTRIBUTES if not attributes.get(name)]
    if missing:
        raise _SoapFault(
            f"VIHF attributes missing: {', '.join(missing)}", subcode="wsse:InvalidSecurityToken"
        )
    patient = _check_vihf_values(attributes)
    result_attributes = {name: tuple(values) for name, values in attributes.items()}
    result_attributes.update(Issuer=(issuer,), NameID=(name_id,), AuthnContextClassRef=(context,))
    return _Vihf(result_attributes, patient, attributes["Identifiant_Structure"][0])


def _check_vihf_values(attributes: Mapping[str, list[str]]) -> tuple[str, str]:
    def bad(reason: str) -> _SoapFault:
        return _SoapFault(f"VIHF: {reason}", subcode="wsse:InvalidSecurityToken")

    if attributes["VIHF_Version"][0] not in _VIHF_VERSIONS:
        raise bad(f"VIHF_Version must be one of {sorted(_VIHF_VERSIONS)}")
    if attributes["Authentification_Mode"][0] not in _AUTHENTICATION_MODES:
        raise bad(f"Authentification_Mode must be one of {sorted(_AUTHENTICATION_MODES)}")
    if attributes["Ressource_URN"][0] != "urn:dmp":
        raise bad("Ressource_URN must be urn:dmp")
    if not re.fullmatch(r"[0-4]\S+", attributes["Identifiant_Structure"][0]):
        raise bad("Identifiant_Structure must be a Struct_IdNat (1+FINESS, 2+SIREN, 3+SIRET, 4…, 0…)")
    sector = attributes["Secteur_Activite"][0].split("^")
    facilities = _value_sets()["healthcareFacilityTypeCode"]
    if len(sector) != 2 or (sector[0], sector[1]) not in facilities.pairs or sector[1] != FACILITY_SYSTEM:
        raise bad(f"Secteur_Activite must be SAxx^{FACILITY_SYSTEM} (TRE_R02-SecteurActivite)")
    roles = [value.split("^") for value in attributes[VIHF_ROLE]]
    if any(len(role) != 3 or not role[0] or not role[2] for role in roles):
        raise bad("each role must be a coded value (code and codeSystem)")
    first = roles[0]
    if first[2] == PROFESSION_SYSTEM and first[0] in _SECOND_ROLE_PROFESSIONS and len(roles) < 2:
        raise bad(
            "a doctor's or a pharmacist's role needs a second occurrence (savoir-faire or CNOP section)"
        )
    purpose = attributes[VIHF_PURPOSE][0].split("^")
    if len(purpose) != 3 or purpose[0] != "normal" or purpose[2] != PURPOSE_OF_USE_SYSTEM:
        raise bad(f"purposeofuse must be code normal of {PURPOSE_OF_USE_SYSTEM} to feed the DMP")
    for confidentiality in attributes.get(VIHF_CONFIDENTIALITY, []):
        if confidentiality.split("^")[:1] != ["INVISIBLE_REPRESENTANTS_LEGAUX"]:
            raise bad(
                "the only confidentiality-code accepted is INVISIBLE_REPRESENTANTS_LEGAUX (connexion secrète)"
            )
    patient = _parse_ins(attributes[VIHF_RESOURCE_ID][0])
    if patient is None:
        raise bad("resource-id must be the patient's INS as matricule^^^&<INS OID>&ISO^NH")
    return patient


def _parse_ins(value: str) -> tuple[str, str] | None:
    """An INS in CX form (``matricule^^^&OID&ISO[^NH]``) as (matricule, OID), if well-formed."""
    match = _INS_CX.fullmatch(value.strip())
    if not match or match.group(2) not in INS_OIDS or check_ins_matricule(match.group(1)) is not None:
        return None
    return match.group(1), match.group(2)


# =============================================================================================
# ebRIM reading
# =============================================================================================


@dataclass(frozen=True)
class _Code:
    code: str
    scheme: str
    display: str


@dataclass
class _Object:
    """A registry object of the request with its slots, classifications and identifiers."""

    element: etree._Element
    id: str
    classifications: list[etree._Element] = field(default_factory=list)
    identifiers: list[etree._Element] = field(default_factory=list)
    _by_scheme: dict[str, list[etree._Element]] | None = field(default=None, repr=False, compare=False)
    _by_scheme_count: int = field(default=0, repr=False, compare=False)
    _codes: dict[str, list[_Code]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def slots(self) -> dict[str, list[str]]:
        return _slots(self.element)

    def _classified(self) -> dict[str, list[etree._Element]]:
        # The classifications by scheme, built once the object is complete (every check of an
        # entry asks for several schemes; the request is not changed while it is checked).
        if self._by_scheme is None or self._by_scheme_count != len(self.classifications):
            by_scheme: dict[str, list[etree._Element]] = {}
            for c in self.classifications:
                by_scheme.setdefault(c.get("classificationScheme") or "", []).append(c)
            self._by_scheme, self._by_scheme_count = by_scheme, len(self.classifications)
            self._codes = {}
        return self._by_scheme

    def identifier(self, scheme: str) -> str | None:
        values = [
            (e.get("value") or "").strip()
            for e in self.identifiers
            if e.get("identificationScheme") == scheme
        ]
        return values[0] if len(values) == 1 else None

    def identifier_count(self, scheme: str) -> int:
        return sum(e.get("identificationScheme") == scheme for e in self.identifiers)

    def codes(self, scheme: str) -> list[_Code]:
        by_scheme = self._classified()
        codes = self._codes.get(scheme)
        if codes is None:
            codes = self._codes[scheme] = [
                _Code(c.get("nodeRepresentation") or "", (_slots(c).get("codingScheme") or [""])[0], _name(c))
                for c in by_scheme.get(scheme, ())
            ]
        return list(codes)

    def authors(self, scheme: str) -> list[dict[str, list[str]]]:
        return [_slots(c) for c in self._classified().get(scheme, ())]

    def classified_as(self, node: str) -> bool:
        return any(c.get("classificationNode") == node for c in self.classifications)


def _slots(element: etree._Element) -> dict[str, list[str]]:
    slots: dict[str, list[str]] = {}
    for slot in element.iterfind(_q(RIM, "Slot")):
        values = [(v.text or "").strip() for v in slot.iterfind(f"{{{RIM}}}ValueList/{{{RIM}}}Value")]
        slots.setdefault(slot.get("name", ""), []).extend(values)
    return slots


def _name(element: etree._Element) -> str:
    localized = element.find(f"{{{RIM}}}Name/{{{RIM}}}LocalizedString")
    return localized.get("value", "") if localized is not None else ""


@dataclass
class _Request:
    entries: list[_Object]
    packages: list[_Object]
    associations: list[etree._Element]


def _read_registry_objects(request: etree._Element) -> _Request:
    """The objects of a SubmitObjectsRequest, nested and top-level classifications attached."""
    object_list = request.find(_q(RIM, "RegistryObjectList"))
    if object_list is None:
        raise _fail("XDSRegistryMetadataError", "SubmitObjectsRequest without rim:RegistryObjectList")
    objects: dict[str, _Object] = {}
    result = _Request([], [], [])
    loose: list[etree._Element] = []
    for child in object_list:
        if child.tag in (_q(RIM, "ExtrinsicObject"), _q(RIM, "RegistryPackage")):
            item = _Object(child, child.get("id", ""))
            item.classifications.extend(child.iterfind(_q(RIM, "Classification")))
            item.identifiers.extend(child.iterfind(_q(RIM, "ExternalIdentifier")))
            if item.id in objects:
                raise _fail(
                    "XDSRegistryMetadataError", f"object id {item.id} is used twice in the submission"
                )
            objects[item.id] = item
            (result.entries if child.tag == _q(RIM, "ExtrinsicObject") else result.packages).append(item)
        elif child.tag == _q(RIM, "Association"):
            result.associations.append(child)
        elif child.tag in (_q(RIM, "Classification"), _q(RIM, "ExternalIdentifier")):
            loose.append(child)
    for element in loose:
        target = element.get("classifiedObject") or element.get("registryObject") or ""
        owner = objects.get(target)
        if owner is None:
            raise _fail(
                "XDSRegistryMetadataError",
                f"{etree.QName(element).localname} refers to unknown object {target}",
            )
        if element.tag == _q(RIM, "Classification"):
            owner.classifications.append(element)
        else:
            owner.identifiers.append(element)
    return result


def _submission_set(request: _Request) -> _Object:
    sets = [p for p in request.packages if p.classified_as(SUBMISSION_SET_NODE)]
    if len(sets) != 1:
        raise _fail(
            "XDSRegistryMetadataError", f"expected one SubmissionSet RegistryPackage, found {len(sets)}"
        )
    return sets[0]


def _check_submission_set(submission_set: _Object, *, full: bool) -> list[_Error]:
    errors: list[_Error] = []
    where = submission_set.id

    def err(context: str) -> None:
        errors.append(_Error("XDSRegistryMetadataError", f"SubmissionSet: {context}", where))

    unique_id = submission_set.identifier(SS_UNIQUE_ID)
    if unique_id is None or check_oid(unique_id) is not None:
        err("uniqueId must be one OID")
    if (
        submission_set.identifier(SS_PATIENT_ID) is None
        or _parse_ins(submission_set.identifier(SS_PATIENT_ID) or "") is None
    ):
        err("patientId must be an INS: matricule^^^&<INS OID>&ISO^NH")
    if not full:
        return errors
    source_id = submission_set.identifier(SS_SOURCE_ID)
    if source_id is None or check_oid(source_id) is not None:
        err("sourceId must be one OID")
    times = submission_set.slots.get("submissionTime", [])
    if len(times) != 1 or not _TIMESTAMP.fullmatch(times[0]):
        err("submissionTime must be one UTC timestamp YYYYMMDDhhmmss")
    content = submission_set.codes(SS_CONTENT_TYPE)
    if len(content) != 1 or not content[0].code or not content[0].scheme:
        err("contentTypeCode must be one code with its codingScheme")
    if not any(
        a.get("authorPerson") or a.get("authorInstitution") for a in submission_set.authors(SS_AUTHOR)
    ):
        err("an author (the sender: authorPerson and its authorInstitution) is required")
    return errors


# =============================================================================================
# DocumentEntry checks
# =============================================================================================


@dataclass
class _Checked:
    """A DocumentEntry that passed its own checks, with what the next steps need."""

    entry: _Object
    unique_id: str
    patient_id: str
    patient: tuple[str, str]
    content: bytes
    is_signature: bool
    replaces: str | None = None  # the CDA's relatedDocument RPLC parent id


def _is_signature_entry(entry: _Object) -> bool:
    return any(code.code == SIGNATURE_CLASS for code in entry.codes(DE_CODES["classCode"]))


def _check_entry(entry: _Object, content: bytes) -> tuple[_Checked | None, list[_Error]]:
    """Check one DocumentEntry against XDS, the DMP value sets and (for a CDA) its header."""
    errors: list[_Error] = []
    where = entry.id
    sets = _value_sets()
    signature = _is_signature_entry(entry)

    def err(context: str, code: str = "XDSRegistryMetadataError") -> None:
        errors.append(_Error(code, f"DocumentEntry {where}: {context}", where))

    if entry.element.get("objectType") != STABLE_ENTRY:
        err(f"objectType must be {STABLE_ENTRY} (stable document)")
    mime_type = entry.element.get("mimeType") or ""
    if not mime_type:
        err("mimeType is required")
    unique_id = entry.identifier(DE_UNIQUE_ID) or ""
    if entry.identifier_count(DE_UNIQUE_ID) != 1:
        err("exactly one uniqueId is required")
    elif "^" in unique_id:
        err("uniqueId must be an OID without extension (the DMP refuses OID^extension)")
    elif check_oid(unique_id) is not None:
        err(f"uniqueId {check_oid(unique_id)}")
    patient_id = entry.identifier(DE_PATIENT_ID) or ""
    patient = _parse_ins(patient_id)
    if entry.identifier_count(DE_PATIENT_ID) != 1 or patient is None:
        err("patientId must be one INS: matricule^^^&<INS OID>&ISO^NH")

    for name in _SINGLE_CODES:
        codes = entry.codes(DE_CODES[name])
        if len(codes) != 1:
            err(f"{name} must occur once (found {len(codes)})")
            continue
        code = codes[0]
        if not code.scheme:
            err(f"{name} {code.code!r} has no codingScheme slot")
        elif name == "typeCode" and signature:
            if code.code != SIGNATURE_TYPE:
                err(f"the signature entry's typeCode must be {SIGNATURE_TYPE} (ASTM, Full Document)")
        elif (code.code, code.scheme) not in sets[name].pairs:
            err(f"{name} {code.code!r} (codingScheme {code.scheme}) is not in {sets[name].name}")
    confidentiality = entry.codes(DE_CODES["confidentialityCode"])
    if not 1 <= len(confidentiality) <= 4:
        err(f"confidentialityCode must occur 1 to 4 times (found {len(confidentiality)})")
    for code in confidentiality:
        if (code.code, code.scheme) not in sets["confidentialityCode"].pairs:
            value_set = sets["confidentialityCode"].name
            err(f"confidentialityCode {code.code!r} (codingScheme {code.scheme}) is not in {value_set}")
    levels = [c.code for c in confidentiality if c.scheme == HL7_CONFIDENTIALITY]
    if len(levels) != 1:
        err("confidentialityCode must hold exactly one of N, R, V (then the masking codes)")
    if len({c.code for c in confidentiality}) != len(confidentiality):
        err("confidentialityCode repeats a code")
    specialties = sets["authorSpecialty"]
    for author in entry.authors(DE_AUTHOR):
        for specialty in author.get("authorSpecialty", []):
            value, system = _coded(specialty)
            if value not in specialties.codes or (system and (value, system) not in specialties.pairs):
                err(f"authorSpecialty {value!r} is not in {specialties.name}")
    slots = entry.slots
    for slot in ("creationTime", "languageCode", "sourcePatientId"):
        if len(slots.get(slot, [])) != 1:
            err(f"slot {slot} must have one value")
    for slot in ("creationTime", "serviceStartTime", "serviceStopTime"):
        for value in slots.get(slot, []):
            if not _TIMESTAMP.fullmatch(value):
                err(f"slot {slot} must be a UTC timestamp YYYYMMDDhhmmss")
    if not signature and not any(a.get("authorPerson") for a in entry.authors(DE_AUTHOR)):
        err("an author with authorPerson is required")
    # hash and size are the repository's to compute; a source may send them, but then they must match.
    for value in slots.get("hash", []):
        if value.lower() != hashlib.sha1(content).hexdigest():
            err("hash does not match the document (SHA-1, hex)", "XDSRepositoryMetadataError")
    for value in slots.get("size", []):
        if value != str(len(content)):
            err("size does not match the document", "XDSRepositoryMetadataError")

    replaces: str | None = None
    if signature:
        format_codes = {c.code for c in entry.codes(DE_CODES["formatCode"])}
        if not format_codes <= SIGNATURE_FORMATS:
            err("the signature entry's formatCode must be http://www.w3.org/2000/09/xmldsig#")
        if mime_type != "text/xml":
            err("the signature entry's mimeType must be text/xml")
    elif mime_type == "text/xml" and not errors and patient is not None:
        cda_errors, replaces = _check_cda(entry, content, unique_id, patient)
        errors.extend(cda_errors)
    if errors or patient is None:
        return None, errors
    return _Checked(entry, unique_id, patient_id, patient, content, signature, replaces), errors


def _coded(value: str) -> tuple[str, str]:
    """(code, system) of a CE/CWE string ``code^display^system`` (or ``…&system&ISO``)."""
    parts = value.split("^")
    system = parts[2] if len(parts) > 2 else ""
    for part in parts[3:]:
        if "&" in part:
            system = part.split("&")[1] if part.count("&") >= 2 else system
    return parts[0], system


def _check_cda(
    entry: _Object, content: bytes, unique_id: str, patient: tuple[str, str]
) -> tuple[list[_Error], str | None]:
    """Check that the metadata says what the CDA header says (the DMP derives one from the other)."""
    where = entry.id
    errors: list[_Error] = []

    def err(context: str, code: str = "XDSRegistryMetadataError") -> None:
        errors.append(_Error(code, f"DocumentEntry {where}: {context}", where))

    try:
        root = parse_xml(content, label=f"document {unique_id}").getroot()
    except InputError:
        err("the text/xml document is not well-formed XML", "XDSRepositoryMetadataError")
        return errors, None
    if root.tag != _q(HL7, "ClinicalDocument"):
        err("the text/xml document is not a CDA R2 ClinicalDocument", "XDSRepositoryMetadataError")
        return errors, None
    document_id = root.find(_q(HL7, "id"))
    if document_id is None or document_id.get("extension") is not None:
        err("ClinicalDocument/id must be a root-only OID (the DMP refuses OID^extension)")
    elif document_id.get("root") != unique_id:
        err("uniqueId is not ClinicalDocument/id/@root")
    code = root.find(_q(HL7, "code"))
    (type_code,) = entry.codes(DE_CODES["typeCode"])
    if code is None or (code.get("code"), code.get("codeSystem")) != (type_code.code, type_code.scheme):
        err("typeCode is not ClinicalDocument/code")
    confidentiality = root.find(_q(HL7, "confidentialityCode"))
    levels = [c.code for c in entry.codes(DE_CODES["confidentialityCode"]) if c.scheme == HL7_CONFIDENTIALITY]
    if confidentiality is None or levels != [confidentiality.get("code")]:
        err("the N/R/V confidentialityCode is not ClinicalDocument/confidentialityCode")
    ins = [
        (i.get("extension"), i.get("root"))
        for i in root.iterfind(f"{{{HL7}}}recordTarget/{{{HL7}}}patientRole/{{{HL7}}}id")
        if i.get("root") in INS_OIDS
    ]
    if not ins:
        err("the CDA carries no INS: the DMP only takes documents of patients with a qualified INS")
    elif ins[0] != patient:
        err("patientId is not the INS of recordTarget", "XDSPatientIdDoesNotMatch")
    templates = {t.get("root") for t in root.iterfind(_q(HL7, "templateId"))}
    (format_code,) = entry.codes(DE_CODES["formatCode"])
    if templates & _LAB_TEMPLATES and format_code.code != _XD_LAB:
        err(f"a CR-BIO (CI-SIS / XD-LAB template) has formatCode {_XD_LAB} (ASS_A11)")
    elif _XDS_SD_TEMPLATE in templates and not templates & _LAB_TEMPLATES:
        body = root.find(f"{{{HL7}}}component/{{{HL7}}}nonXMLBody/{{{HL7}}}text")
        if (
            body is not None
            and body.get("mediaType") == "application/pdf"
            and format_code.code != _XDS_SD_PDF
        ):
            err(f"a CDA with a PDF body (XDS-SD) has formatCode {_XDS_SD_PDF}")
    replaces = None
    for related in root.iterfind(_q(HL7, "relatedDocument")):
        if related.get("typeCode") == "RPLC":
            parent = related.find(f"{{{HL7}}}parentDocument/{{{HL7}}}id")
            replaces = parent.get("root") if parent is not None else None
    return errors, replaces


# =============================================================================================
# Submission-set signature (XAdES, IHE DSG)
# =============================================================================================


def _check_submission_signature(
    signature_entry: _Checked,
    documents: Mapping[str, bytes],
    submission_set_uid: str,
    trusted: TrustedChains,
) -> list[_Error]:
    """Verify the signature document: XML-DSig chain to the CA, manifest digests of every document."""
    where = signature_entry.entry.id

    def err(context: str) -> list[_Error]:
        return [_Error("XDSRegistryMetadataError", f"submission-set signature: {context}", where)]

    try:
        root = parse_xml(signature_entry.content, label="submission-set signature").getroot()
    except InputError:
        return err("not well-formed XML")
    signature = root if root.tag == _q(DS, "Signature") else root.find(f".//{{{DS}}}Signature")
    if signature is None:
        return err("no ds:Signature")
    count = len(signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference"))
    try:
        # No XML-DSig schema validation: DMP practice (a text-only SignatureProperty, as in ANS
        # sample code) breaks the schema while the signature itself is sound.
        verified = _Verifier(trusted).verify(
            etree.tostring(signature),
            ca_pem_file=str(trusted.ca_file),
            validate_schema=False,
            expect_config=_signature_config(location="./", references=count),
        )
    except InvalidCertificate as error:
        return err(f"signing certificate not trusted: {error}")
    except (SignXMLException, etree.DocumentInvalid) as error:
        return err(f"does not verify: {error}")
    results = verified if isinstance(verified, list) else [verified]
    manifests = [
        r.signed_xml for r in results if r.signed_xml is not None and r.signed_xml.tag == _q(DS, "Manifest")
    ]
    if not manifests:
        return err("SignedInfo references no ds:Manifest (IHE DSG manifest of the documents)")
    references = {
        ref.get("URI", ""): ref for manifest in manifests for ref in manifest.iterfind(_q(DS, "Reference"))
    }
    errors: list[_Error] = []
    for unique_id, content in documents.items():
        reference = references.get(f"urn:oid:{unique_id}")
        if reference is None:
            errors += err(f"the manifest has no reference urn:oid:{unique_id}")
        elif not _digest_matches(reference, content):
            errors += err(f"the manifest digest of urn:oid:{unique_id} does not match the document")
    if f"urn:oid:{submission_set_uid}" not in references:
        errors += err(f"the manifest has no reference to the submission set urn:oid:{submission_set_uid}")
    return errors


def _digest_matches(reference: etree._Element, content: bytes) -> bool:
    method = reference.find(_q(DS, "DigestMethod"))
    algorithm = _DIGESTS.get(method.get("Algorithm", "") if method is not None else "")
    expected = "".join((reference.findtext(_q(DS, "DigestValue")) or "").split())
    if algorithm is None or not expected:
        return False
    candidates = [content]
    transforms = [t.get("Algorithm", "") for t in reference.iterfind(f"{{{DS}}}Transforms/{{{DS}}}Transform")]
    if transforms:
        if len(transforms) != 1 or transforms[0] not in _C14N:
            return False
        exclusive, comments = _C14N[transforms[0]]
        try:
            tree = parse_xml(content, label="signed document")
        except InputError:
            return False
        candidates.append(etree.tostring(tree, method="c14n", exclusive=exclusive, with_comments=comments))
    return any(base64.b64encode(hashlib.new(algorithm, c).digest()).decode() == expected for c in candidates)


# =============================================================================================
# The registry
# =============================================================================================


@dataclass
class _Stored:
    entry: XdsEntry
    xml: bytes  # the ExtrinsicObject as the registry returns it (status set when queried)
    codes: dict[str, list[tuple[str, str]]]  # metadata name -> (code, codingScheme)


def _entry_metadata(entry: _Object, unique_id: str, patient_id: str) -> dict[str, Any]:
    codes = {name: entry.codes(scheme) for name, scheme in DE_CODES.items()}
    confidentiality = sorted(codes["confidentialityCode"], key=lambda c: c.scheme != HL7_CONFIDENTIALITY)
    metadata: dict[str, Any] = {
        name: (codes[name][0].code if codes[name] else None) for name in _SINGLE_CODES
    }
    metadata["confidentialityCode"] = [c.code for c in confidentiality]
    metadata["eventCodeList"] = [c.code for c in codes["eventCodeList"]]
    metadata["codes"] = {
        name: [{"code": c.code, "codingScheme": c.scheme, "displayName": c.display} for c in values]
        for name, values in codes.items()
    }
    metadata["slots"] = entry.slots
    metadata["authors"] = entry.authors(DE_AUTHOR)
    metadata["title"] = _name(entry.element)
    metadata["mimeType"] = entry.element.get("mimeType") or ""
    metadata["uniqueId"] = unique_id
    metadata["patientId"] = patient_id
    return metadata


def _normalised_entry(entry: _Object, entry_uuid: str, content: bytes) -> bytes:
    """The ExtrinsicObject as stored: registry ids, repository slots, every classification inside."""
    element = copy.deepcopy(entry.element)
    for child in list(element):
        if child.tag in (_q(RIM, "Classification"), _q(RIM, "ExternalIdentifier")):
            element.remove(child)
    element.set("id", entry_uuid)
    element.set("lid", entry_uuid)
    element.set("status", APPROVED)
    present = _slots(element)
    added = {
        "repositoryUniqueId": REPOSITORY_UNIQUE_ID,
        "hash": hashlib.sha1(content).hexdigest(),
        "size": str(len(content)),
    }
    for index, (name, value) in enumerate((n, v) for n, v in added.items() if n not in present):
        slot = etree.Element(_q(RIM, "Slot"), name=name)
        etree.SubElement(etree.SubElement(slot, _q(RIM, "ValueList")), _q(RIM, "Value")).text = value
        element.insert(index, slot)
    for item in entry.classifications:
        classification = copy.deepcopy(item)
        classification.set("classifiedObject", entry_uuid)
        if not (classification.get("id") or "").startswith("urn:uuid:"):
            classification.set("id", f"urn:uuid:{uuid.uuid4()}")
        element.append(classification)
    for item in entry.identifiers:
        identifier = copy.deepcopy(item)
        identifier.set("registryObject", entry_uuid)
        if not (identifier.get("id") or "").startswith("urn:uuid:"):
            identifier.set("id", f"urn:uuid:{uuid.uuid4()}")
        element.append(identifier)
    serialised: bytes = etree.tostring(element)
    return serialised


def _query_code(value: str) -> tuple[str, str]:
    """(code, codingScheme) of a stored-query code parameter ``code^^scheme`` (scheme optional)."""
    parts = value.split("^")
    return parts[0], parts[2] if len(parts) > 2 else ""


def _split_values(text: str) -> list[str]:
    """Stored-query parameter values: ``'a'``, ``('a','b')`` or a bare number."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    values: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        if char == "'":
            if quoted and text[index + 1 : index + 2] == "'":
                current.append("'")
                index += 1
            else:
                quoted = not quoted
        elif char == "," and not quoted:
            values.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        index += 1
    values.append("".join(current).strip())
    return [v for v in values if v]


_CODE_PARAMETERS = {
    "$XDSDocumentEntryClassCode": "classCode",
    "$XDSDocumentEntryTypeCode": "typeCode",
    "$XDSDocumentEntryFormatCode": "formatCode",
    "$XDSDocumentEntryPracticeSettingCode": "practiceSettingCode",
    "$XDSDocumentEntryHealthcareFacilityTypeCode": "healthcareFacilityTypeCode",
    "$XDSDocumentEntryConfidentialityCode": "confidentialityCode",
    "$XDSDocumentEntryEventCodeList": "eventCodeList",
}
_TIME_PARAMETERS = {
    "$XDSDocumentEntryCreationTimeFrom": ("creationTime", True),
    "$XDSDocumentEntryCreationTimeTo": ("creationTime", False),
    "$XDSDocumentEntryServiceStartTimeFrom": ("serviceStartTime", True),
    "$XDSDocumentEntryServiceStartTimeTo": ("serviceStartTime", False),
    "$XDSDocumentEntryServiceStopTimeFrom": ("serviceStopTime", True),
    "$XDSDocumentEntryServiceStopTimeTo": ("serviceStopTime", False),
}
_FIND_PARAMETERS = {
    "$XDSDocumentEntryPatientId",
    "$XDSDocumentEntryStatus",
    "$XDSDocumentEntryType",
    "$homeCommunityId",
    *_CODE_PARAMETERS,
    *_TIME_PARAMETERS,
}


# =============================================================================================
# The HTTPS server
# =============================================================================================


class _Handler(HttpHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crbio-xds-simulator"
    timeout = _IDLE_TIMEOUT

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.simulator._handle_post(self)


def _read_body(handler: _Handler) -> bytes:
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(handler.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY:
                raise ValueError("body too large")
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline(1024)
    length = int(handler.headers.get("Content-Length") or 0)
    if length < 0 or length > _MAX_BODY:
        raise ValueError("body too large")
    return handler.rfile.read(length)


# =============================================================================================
# The simulator
# =============================================================================================


class XdsSimulator:
    """A DMP-like XDS.b registry and repository over HTTPS on 127.0.0.1.

    Args:
        pki: The test PKI: the server certificate, and the CA that client certificates, the
            VIHF and the submission-set signatures must chain to.
        require_client_cert: Refuse TLS connections without a client certificate of the CA.
        faults: Faults to inject, drawn once per request (a fresh plan when None).
        known_patients: INS matricules that have a DMP; None accepts any valid INS.
        store_dir: Where to write each accepted document and its metadata, if anywhere.
        verify_submission_signature: Verify the XAdES signature of the submission set
            (chain and manifest digests), not just its presence.
        retain: How many requests :attr:`requests` keeps in memory, the oldest forgotten
            first (None: all). With a ``store_dir``, also how many of the latest entries keep
            their document in memory: older ones hold ``b""`` as :attr:`XdsEntry.content`, their
            document being in ``store_dir``. The registry itself forgets nothing.

    :attr:`trusted` (a :class:`TrustedChains`) holds the CA, read once, and the signing
    chains already verified; ``trusted.verified_chains`` counts the full verifications.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        pki: TestPki,
        *,
        require_client_cert: bool = True,
        faults: FaultPlan | None = None,
        known_patients: Iterable[str] | None = None,
        store_dir: Path | None = None,
        verify_submission_signature: bool = True,
        retain: int | None = None,
    ) -> None:
        self.pki = pki
        self.retain = retain
        self.require_client_cert = require_client_cert
        self.faults = faults if faults is not None else FaultPlan()
        self.known_patients: set[str] | None = set(known_patients) if known_patients is not None else None
        self.store_dir = Path(store_dir) if store_dir is not None else None
        self.verify_submission_signature = verify_submission_signature
        # The CA read once; each distinct signing chain verified once (see TrustedChains).
        self.trusted = TrustedChains(pki.ca_cert)
        self._lock = threading.RLock()
        self._stored: dict[str, _Stored] = {}  # entryUUID -> entry
        self._by_unique_id: dict[str, str] = {}  # document uniqueId -> entryUUID
        self._submission_sets: set[str] = set()
        self._requests: list[XdsRequest] = []
        self._with_content: deque[str] = deque()  # entryUUIDs still holding their document
        self._accepted = 0
        self._refused_handshakes = 0
        self._server: LocalServer | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> XdsSimulator:
        """Start serving in a background thread (idempotent)."""
        if self._server is not None:
            return self
        tls = server_tls_context(
            self.pki, client_certificate="required" if self.require_client_cert else "none"
        )
        if self.store_dir is not None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        self._server = LocalServer.http(
            self,
            _Handler,
            name="xds-simulator",
            tls=tls,
            handshake_timeout=_HANDSHAKE_TIMEOUT,
            on_handshake_error=self._refused_handshake,
        )
        self._server.start()
        logger.info("XDS.b simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and wait for the threads (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> XdsSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- where it listens ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address it listens on."""
        return "127.0.0.1"

    @property
    def port(self) -> int:
        """The port it listens on (only once started)."""
        if self._server is None:
            raise RuntimeError("the XDS simulator is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """The base URL of the services: ``https://127.0.0.1:<port>/si-dmp-server/v2/services``."""
        return f"https://{self.host}:{self.port}{SERVICE_PATH}"

    @property
    def repository_url(self) -> str:
        """The ITI-41 endpoint."""
        return f"{self.url}/repository"

    @property
    def registry_url(self) -> str:
        """The ITI-18 and ITI-57 endpoint."""
        return f"{self.url}/registry"

    # --- inspection (thread-safe snapshots) ---------------------------------------------------

    @property
    def entries(self) -> list[XdsEntry]:
        """The document entries held, in the order received (signature entries excluded)."""
        with self._lock:
            return [s.entry for s in self._stored.values() if not s.entry.is_signature]

    @property
    def signature_entries(self) -> list[XdsEntry]:
        """The submission-set signature entries held."""
        with self._lock:
            return [s.entry for s in self._stored.values() if s.entry.is_signature]

    def entry(self, unique_id: str) -> XdsEntry | None:
        """The entry of a document uniqueId, whatever its status, or None."""
        with self._lock:
            entry_uuid = self._by_unique_id.get(unique_id)
            return self._stored[entry_uuid].entry if entry_uuid else None

    @property
    def requests(self) -> list[XdsRequest]:
        """Every request received (the last ``retain`` ones), in order."""
        with self._lock:
            return list(self._requests)

    @property
    def accepted_submissions(self) -> int:
        """How many ITI-41 submissions were accepted."""
        with self._lock:
            return self._accepted

    @property
    def refused_handshakes(self) -> int:
        """How many TLS handshakes failed (no or untrusted client certificate…)."""
        with self._lock:
            return self._refused_handshakes

    # --- request handling ---------------------------------------------------------------------

    def _refused_handshake(self, error: BaseException) -> None:
        with self._lock:
            self._refused_handshakes += 1
        logger.info("TLS handshake refused: %s", getattr(error, "reason", None) or error.__class__.__name__)

    def _record(self, request: XdsRequest) -> None:
        with self._lock:
            self._requests.append(request)
            if self.retain is not None and len(self._requests) > self.retain:
                del self._requests[: len(self._requests) - self.retain]
        logger.info(
            "%s %s%s",
            request.transaction,
            request.outcome,
            f" {','.join(request.errors)}" if request.errors else "",
        )

    def _handle_post(self, handler: _Handler) -> None:
        received_at = _now()
        path = urlsplit(handler.path).path.rstrip("/")
        content_type = handler.headers.get("Content-Type") or ""
        peer = handler.connection.getpeercert() if isinstance(handler.connection, ssl.SSLSocket) else None
        client_subject = (
            ",".join("=".join(pair) for rdn in peer.get("subject", ()) for pair in rdn) if peer else None
        )

        def record(
            transaction: str, outcome: str, errors: Sequence[str] = (), fault: Fault | None = None
        ) -> None:
            self._record(
                XdsRequest(
                    transaction,
                    outcome,
                    tuple(errors),
                    raw,
                    content_type,
                    path,
                    fault,
                    client_subject,
                    received_at,
                )
            )

        raw = b""
        try:
            raw = _read_body(handler)
        except ValueError:
            handler.close_connection = True
            handler.send_body(413, "text/plain; charset=utf-8", b"request body unreadable or too large\n")
            record("unknown", "http-error")
            return
        endpoint = {f"{SERVICE_PATH}/repository": "repository", f"{SERVICE_PATH}/registry": "registry"}.get(
            path
        )
        if endpoint is None:
            handler.send_body(404, "text/plain; charset=utf-8", b"no such service\n")
            record("unknown", "http-error")
            return
        message: _Message | None = None
        problem: _SoapFault | None = None
        try:
            message = _read_message(content_type, raw)
            _check_envelope(message, endpoint)
        except _SoapFault as error:
            problem = error
        if message is not None and message.action in _TRANSACTIONS:
            action, transaction = message.action, _TRANSACTIONS[message.action]
        else:
            action = ITI41 if endpoint == "repository" else ITI18
            transaction = "ITI-41" if endpoint == "repository" else "unknown"
        mtom = message.mtom if message is not None else False
        relates_to = message.message_id if message is not None else None

        fault = self.faults.draw()
        if fault is Fault.DROP:
            handler.drop()
            record(transaction, "dropped", fault=fault)
            return
        if fault is Fault.SERVER_ERROR:
            crash = _SoapFault("simulated internal error", code="Receiver")
            handler.send_body(500, "application/soap+xml; charset=UTF-8", _fault_envelope(crash, relates_to))
            record(transaction, "server-error", ("Receiver",), fault)
            return
        if problem is not None and fault not in (Fault.BUSY, Fault.REJECT):
            handler.send_body(
                problem.http_status,
                "application/soap+xml; charset=UTF-8",
                _fault_envelope(problem, relates_to),
            )
            record(transaction, "soap-fault", (problem.subcode or problem.code,))
            return

        def answer(element: etree._Element, errors: Sequence[_Error]) -> None:
            envelope = _envelope(element, action + "Response", relates_to)
            if mtom:
                content, body = _mtom_package(envelope, action + "Response")
            else:
                content, body = f'application/soap+xml; charset=UTF-8; action="{action}Response"', envelope
            handler.send_body(200, content, body)
            record(transaction, "failure" if errors else "success", [e.code for e in errors], fault)

        if fault is Fault.BUSY or fault is Fault.REJECT:
            code = "XDSRegistryBusy" if fault is Fault.BUSY else "XDSUnknownPatientId"
            errors = [
                _Error(
                    code,
                    "simulated refusal" if fault is Fault.REJECT else "the registry is busy, retry later",
                )
            ]
            answer(_failure_element(transaction, errors), errors)
            return
        assert message is not None
        try:
            header = message.envelope.find(_q(SOAP12, "Header"))
            assert header is not None
            vihf = _check_vihf(header, self.trusted)
            body = message.envelope.find(_q(SOAP12, "Body"))
            assert body is not None
            if action == ITI41:
                element = self._provide_and_register(message, body[0], vihf, received_at)
            elif action == ITI18:
                element = self._stored_query(body[0], vihf)
            else:
                element = self._update_document_set(body[0], vihf)
            answer(element, ())
        except _SoapFault as error:
            handler.send_body(
                error.http_status, "application/soap+xml; charset=UTF-8", _fault_envelope(error, relates_to)
            )
            record(transaction, "soap-fault", (error.subcode or error.code,))
        except _Failure as failure:
            answer(_failure_element(transaction, failure.errors), failure.errors)
        except Exception:
            # A bug of the simulator, not of the request: answer like a server that crashed.
            logger.exception("XDS simulator error while serving %s", transaction)
            crash = _SoapFault("internal error of the XDS simulator", code="Receiver")
            handler.send_body(500, "application/soap+xml; charset=UTF-8", _fault_envelope(crash, relates_to))
            record(transaction, "server-error", ("Receiver",))

    # --- ITI-41 -------------------------------------------------------------------------------

    def _provide_and_register(
        self, message: _Message, request: etree._Element, vihf: _Vihf, received_at: datetime
    ) -> etree._Element:
        if not message.mtom:
            raise _fail(
                "XDSRepositoryError",
                'ITI-41 must be MTOM/XOP (multipart/related; type="application/xop+xml")',
            )
        if request.tag != _q(XDSB, "ProvideAndRegisterDocumentSetRequest"):
            raise _fail("XDSRepositoryError", "the Body is not an xdsb:ProvideAndRegisterDocumentSetRequest")
        submit = request.find(_q(LCM, "SubmitObjectsRequest"))
        if submit is None:
            raise _fail("XDSRegistryMetadataError", "no lcm:SubmitObjectsRequest")
        documents = self._documents(request, message.attachments)
        objects = _read_registry_objects(submit)
        submission_set = _submission_set(objects)
        errors = _check_submission_set(submission_set, full=True)
        entry_ids = {e.id for e in objects.entries}
        for document_id in documents.keys() - entry_ids:
            errors.append(
                _Error(
                    "XDSMissingDocumentMetadata", f"document {document_id} has no DocumentEntry", document_id
                )
            )
        checked: list[_Checked] = []
        for entry in objects.entries:
            if entry.id not in documents:
                errors.append(
                    _Error("XDSMissingDocument", f"DocumentEntry {entry.id} has no document", entry.id)
                )
                continue
            result, entry_errors = _check_entry(entry, documents[entry.id])
            errors += entry_errors
            if result is not None:
                checked.append(result)
        if not objects.entries:
            errors.append(_Error("XDSRegistryMetadataError", "the submission holds no DocumentEntry"))
        errors += self._check_associations(objects, submission_set, checked)
        seen: set[str] = set()
        for item in checked:
            if item.unique_id in seen:
                errors.append(
                    _Error(
                        "XDSRegistryDuplicateUniqueIdInMessage",
                        f"uniqueId {item.unique_id} twice",
                        item.entry.id,
                    )
                )
            seen.add(item.unique_id)
        if errors:
            raise _Failure(errors)

        submission_uid = submission_set.identifier(SS_UNIQUE_ID) or ""
        signatures = [c for c in checked if c.is_signature]
        clinical = [c for c in checked if not c.is_signature]
        if self.verify_submission_signature:
            for signature in signatures:
                errors += _check_submission_signature(
                    signature, {c.unique_id: c.content for c in clinical}, submission_uid, self.trusted
                )
            if errors:
                raise _Failure(errors)

        # The patient: one per submission, known to the DMP, and the one the VIHF names.
        submission_patient = _parse_ins(submission_set.identifier(SS_PATIENT_ID) or "")
        assert submission_patient is not None
        for item in checked:
            if item.patient != submission_patient:
                errors.append(
                    _Error(
                        "XDSPatientIdDoesNotMatch",
                        f"DocumentEntry {item.entry.id}: patientId is not the SubmissionSet's",
                    )
                )
        if vihf.patient != submission_patient:
            errors.append(
                _Error("XDSPatientIdDoesNotMatch", "the VIHF resource-id is not the submission's patientId")
            )
        if errors:
            raise _Failure(errors)
        if self.known_patients is not None and submission_patient[0] not in self.known_patients:
            raise _fail("XDSUnknownPatientId", "the patient has no DMP")
        return self._register(objects, submission_set, checked, vihf, received_at)

    def _documents(self, request: etree._Element, attachments: Mapping[str, bytes]) -> dict[str, bytes]:
        documents: dict[str, bytes] = {}
        errors: list[_Error] = []
        used: set[str] = set()
        for document in request.iterfind(_q(XDSB, "Document")):
            document_id = document.get("id", "")
            include = document.find(_q(XOP, "Include"))
            if include is None:
                errors.append(
                    _Error(
                        "XDSMissingDocument",
                        f"document {document_id} is not an xop:Include of a MIME part",
                        document_id,
                    )
                )
                continue
            cid = unquote((include.get("href") or "").removeprefix("cid:"))
            if cid not in attachments:
                errors.append(
                    _Error(
                        "XDSMissingDocument",
                        f"document {document_id}: no MIME part with Content-ID <{cid}>",
                        document_id,
                    )
                )
                continue
            if document_id in documents:
                errors.append(
                    _Error(
                        "XDSRepositoryMetadataError", f"document id {document_id} is used twice", document_id
                    )
                )
            documents[document_id] = attachments[cid]
            used.add(cid)
        for cid in attachments.keys() - used:
            errors.append(
                _Error("XDSMissingDocumentMetadata", f"MIME part <{cid}> is referenced by no xdsb:Document")
            )
        if errors:
            raise _Failure(errors)
        return documents

    def _check_associations(
        self, objects: _Request, submission_set: _Object, checked: list[_Checked]
    ) -> list[_Error]:
        errors: list[_Error] = []
        entries = {e.id for e in objects.entries}
        signatures = {c.entry.id for c in checked if c.is_signature}
        members: set[str] = set()
        signed = False

        def err(context: str, where: str) -> None:
            errors.append(_Error("XDSRegistryMetadataError", context, where))

        for association in objects.associations:
            kind = association.get("associationType", "")
            source, target = association.get("sourceObject", ""), association.get("targetObject", "")
            where = association.get("id", "")
            if kind == HAS_MEMBER:
                if source != submission_set.id or target not in entries:
                    err("HasMember must link the SubmissionSet to a DocumentEntry of the submission", where)
                elif _slots(association).get("SubmissionSetStatus") != ["Original"]:
                    err("HasMember needs the slot SubmissionSetStatus = Original", where)
                else:
                    members.add(target)
            elif kind == SIGNS:
                if source not in signatures or target != submission_set.id:
                    err("signs must go from the signature DocumentEntry to the SubmissionSet", where)
                else:
                    signed = True
            elif kind == RPLC:
                if source not in entries or source in signatures:
                    err("RPLC must go from a new DocumentEntry of the submission", where)
                elif not target.startswith("urn:uuid:"):
                    err("the RPLC target must be the entryUUID (urn:uuid:…) of the registry entry", where)
            else:
                hint = f"; a replacement is {RPLC}" if kind.endswith(":RPLC") else ""
                err(f"association type {kind!r} is not accepted here{hint}", where)
        for entry_id in entries - members:
            err(f"DocumentEntry {entry_id} is not a member of the SubmissionSet (HasMember)", entry_id)
        if not signatures:
            err(
                "the DMP requires a signed submission set: no signature DocumentEntry (IHE DSG)",
                submission_set.id,
            )
        elif not signed:
            err("the DMP requires a signed submission set: no signs association", submission_set.id)
        return errors

    def _register(
        self,
        objects: _Request,
        submission_set: _Object,
        checked: list[_Checked],
        vihf: _Vihf,
        received_at: datetime,
    ) -> etree._Element:
        submission_uid = submission_set.identifier(SS_UNIQUE_ID) or ""
        replacements = {
            a.get("sourceObject", ""): a.get("targetObject", "")
            for a in objects.associations
            if a.get("associationType") == RPLC
        }
        with self._lock:
            errors: list[_Error] = []
            for item in checked:
                known = self._by_unique_id.get(item.unique_id)
                if known is not None:
                    same = self._stored[known].entry.hash == hashlib.sha1(item.content).hexdigest()
                    code = "XDSDuplicateUniqueIdInRegistry" if same else "XDSNonIdenticalHash"
                    errors.append(
                        _Error(code, f"uniqueId {item.unique_id} is already registered", item.entry.id)
                    )
                entry_id = item.entry.id
                # A resend reuses its entryUUIDs too; the uniqueId error already says it all.
                if known is None and entry_id.startswith("urn:uuid:") and entry_id in self._stored:
                    errors.append(
                        _Error("XDSRegistryMetadataError", f"entryUUID {entry_id} is already used", entry_id)
                    )
            if submission_uid in self._submission_sets:
                errors.append(
                    _Error(
                        "XDSDuplicateUniqueIdInRegistry",
                        f"SubmissionSet uniqueId {submission_uid} is already registered",
                    )
                )
            for item in checked:
                target_uuid = replacements.get(item.entry.id)
                if target_uuid is None:
                    continue
                target = self._stored.get(target_uuid)
                if target is None:
                    errors.append(
                        _Error(
                            "UnresolvedReferenceException",
                            f"RPLC target {target_uuid} is not in the registry",
                        )
                    )
                elif target.entry.status != APPROVED:
                    errors.append(
                        _Error(
                            "XDSRegistryDeprecatedDocumentError", f"RPLC target {target_uuid} is not Approved"
                        )
                    )
                elif _parse_ins(target.entry.patient_id) != item.patient:
                    errors.append(
                        _Error("XDSPatientIdDoesNotMatch", f"RPLC target {target_uuid} is another patient's")
                    )
                elif target.entry.is_signature:
                    errors.append(
                        _Error("XDSRegistryMetadataError", f"RPLC target {target_uuid} is a signature")
                    )
                elif item.replaces is not None and item.replaces != target.entry.unique_id:
                    errors.append(
                        _Error(
                            "XDSRegistryMetadataError",
                            f"the CDA replaces {item.replaces}, the RPLC targets {target.entry.unique_id}",
                        )
                    )
                elif item.replaces is None:
                    errors.append(
                        _Error(
                            "XDSRegistryMetadataError",
                            "RPLC association but the CDA has no relatedDocument RPLC",
                        )
                    )
            if errors:
                raise _Failure(errors)

            registered: list[XdsEntry] = []
            for item in checked:
                entry_uuid = (
                    item.entry.id if item.entry.id.startswith("urn:uuid:") else f"urn:uuid:{uuid.uuid4()}"
                )
                target_uuid = replacements.get(item.entry.id)
                stored = _Stored(
                    XdsEntry(
                        entry_uuid=entry_uuid,
                        unique_id=item.unique_id,
                        patient_id=item.patient_id,
                        status=APPROVED,
                        metadata=_entry_metadata(item.entry, item.unique_id, item.patient_id),
                        content=item.content,
                        submission_set_unique_id=submission_uid,
                        received_at=received_at,
                        vihf=vihf.attributes,
                        replaced_entry_uuid=target_uuid,
                        mime_type=item.entry.element.get("mimeType") or "",
                        hash=hashlib.sha1(item.content).hexdigest(),
                        size=len(item.content),
                        is_signature=item.is_signature,
                    ),
                    _normalised_entry(item.entry, entry_uuid, item.content),
                    {
                        name: [(c.code, c.scheme) for c in item.entry.codes(scheme)]
                        for name, scheme in DE_CODES.items()
                    },
                )
                self._stored[entry_uuid] = stored
                self._by_unique_id[item.unique_id] = entry_uuid
                registered.append(stored.entry)
                if target_uuid is not None:
                    self._set_status(target_uuid, DEPRECATED)
            self._submission_sets.add(submission_uid)
            self._accepted += 1
            for entry in registered:
                self._write(entry)
            if self.retain is not None and self.store_dir is not None:
                self._with_content.extend(entry.entry_uuid for entry in registered)
                while len(self._with_content) > self.retain:
                    stored = self._stored[self._with_content.popleft()]
                    stored.entry = replace(stored.entry, content=b"")
        logger.info(
            "ITI-41 submission %s registered %s",
            submission_uid,
            ", ".join(e.unique_id for e in registered if not e.is_signature),
        )
        return _registry_response(SUCCESS, [])

    def _set_status(self, entry_uuid: str, status: str) -> None:
        stored = self._stored[entry_uuid]
        stored.entry = replace(stored.entry, status=status)
        self._write(stored.entry)

    def _write(self, entry: XdsEntry) -> None:
        if self.store_dir is None:
            return
        extension = {"text/xml": ".xml", "application/pdf": ".pdf"}.get(entry.mime_type, ".bin")
        document = self.store_dir / f"{entry.unique_id}{extension}"
        if not document.exists():
            document.write_bytes(entry.content)
        # The fields as they are (json copies nothing): asdict() would deep-copy the metadata first.
        facts = {f.name: getattr(entry, f.name) for f in fields(entry) if f.name != "content"}
        facts["received_at"] = entry.received_at.isoformat()
        facts["document_file"] = document.name
        (self.store_dir / f"{entry.unique_id}.json").write_text(
            json.dumps(facts, ensure_ascii=False, indent=1, default=list) + "\n", encoding="utf-8"
        )

    # --- ITI-18 -------------------------------------------------------------------------------

    def _stored_query(self, request: etree._Element, vihf: _Vihf) -> etree._Element:
        if request.tag != _q(QUERY, "AdhocQueryRequest"):
            raise _fail("XDSRegistryError", "the Body is not a query:AdhocQueryRequest")
        option = request.find(_q(QUERY, "ResponseOption"))
        return_type = option.get("returnType", "ObjectRef") if option is not None else "ObjectRef"
        if return_type not in ("LeafClass", "ObjectRef"):
            raise _fail(
                "XDSRegistryError", f"returnType {return_type} is not supported (LeafClass or ObjectRef)"
            )
        query = request.find(_q(RIM, "AdhocQuery"))
        if query is None:
            raise _fail("XDSRegistryError", "no rim:AdhocQuery")
        parameters: dict[str, list[list[str]]] = {}
        for slot in query.iterfind(_q(RIM, "Slot")):
            values = [
                v
                for text in slot.iterfind(f"{{{RIM}}}ValueList/{{{RIM}}}Value")
                for v in _split_values(text.text or "")
            ]
            parameters.setdefault(slot.get("name", ""), []).append(values)
        query_id = query.get("id", "")
        if query_id == FIND_DOCUMENTS:
            found = self._find_documents(parameters, vihf)
        elif query_id == GET_DOCUMENTS:
            found = self._get_documents(parameters, vihf)
        else:
            raise _fail(
                "XDSUnknownStoredQuery",
                f"stored query {query_id} is not supported (FindDocuments, GetDocuments)",
            )
        response = etree.Element(_q(QUERY, "AdhocQueryResponse"), nsmap=_RESPONSE_NSMAP, status=SUCCESS)
        object_list = etree.SubElement(response, _q(RIM, "RegistryObjectList"))
        for stored in found:
            if return_type == "ObjectRef":
                etree.SubElement(object_list, _q(RIM, "ObjectRef"), id=stored.entry.entry_uuid)
            else:
                element = etree.fromstring(stored.xml)
                element.set("status", stored.entry.status)
                object_list.append(element)
        return response

    @staticmethod
    def _single(parameters: Mapping[str, list[list[str]]], name: str) -> str:
        values = [v for group in parameters.get(name, []) for v in group]
        if not values:
            raise _fail("XDSStoredQueryMissingParam", f"{name} is required")
        if len(values) > 1:
            raise _fail("XDSStoredQueryParamNumber", f"{name} takes one value")
        return values[0]

    def _find_documents(self, parameters: Mapping[str, list[list[str]]], vihf: _Vihf) -> list[_Stored]:
        unknown = parameters.keys() - _FIND_PARAMETERS
        if unknown:
            raise _fail(
                "XDSRegistryError", f"parameters not supported by FindDocuments: {', '.join(sorted(unknown))}"
            )
        patient = _parse_ins(self._single(parameters, "$XDSDocumentEntryPatientId"))
        statuses = {v for group in parameters.get("$XDSDocumentEntryStatus", []) for v in group}
        if not statuses:
            raise _fail("XDSStoredQueryMissingParam", "$XDSDocumentEntryStatus is required")
        if patient is None:
            raise _fail("XDSRegistryError", "$XDSDocumentEntryPatientId must be an INS in CX form")
        if patient != vihf.patient:
            raise _fail("XDSPatientIdDoesNotMatch", "the VIHF resource-id is not the queried patient")
        if self.known_patients is not None and patient[0] not in self.known_patients:
            raise _fail("XDSUnknownPatientId", "the patient has no DMP")
        code_filters = [
            (metadata, [_query_code(v) for v in group])
            for name, metadata in _CODE_PARAMETERS.items()
            for group in parameters.get(name, [])
        ]
        time_filters = [
            (slot, lower, group[0])
            for name, (slot, lower) in _TIME_PARAMETERS.items()
            for group in parameters.get(name, [])
            if group
        ]

        def matches(stored: _Stored) -> bool:
            # AND across parameters (and repeated slots), OR within one slot's values.
            if _parse_ins(stored.entry.patient_id) != patient or stored.entry.status not in statuses:
                return False
            for metadata, wanted in code_filters:
                codes = stored.codes.get(metadata, [])
                if not any(code == w[0] and w[1] in ("", scheme) for code, scheme in codes for w in wanted):
                    return False
            for slot, lower, bound in time_filters:
                values = [v.ljust(14, "0") for v in stored.entry.metadata["slots"].get(slot, [])]
                limit = bound.ljust(14, "0")
                if not any((v >= limit) if lower else (v < limit) for v in values):
                    return False
            return True

        with self._lock:
            return [s for s in self._stored.values() if matches(s)]

    def _get_documents(self, parameters: Mapping[str, list[list[str]]], vihf: _Vihf) -> list[_Stored]:
        uuids = [v for group in parameters.get("$XDSDocumentEntryEntryUUID", []) for v in group]
        unique_ids = [v for group in parameters.get("$XDSDocumentEntryUniqueId", []) for v in group]
        if bool(uuids) == bool(unique_ids):
            raise _fail(
                "XDSStoredQueryParamNumber" if uuids else "XDSStoredQueryMissingParam",
                "GetDocuments takes either $XDSDocumentEntryEntryUUID or $XDSDocumentEntryUniqueId",
            )
        with self._lock:
            if unique_ids:
                uuids = [self._by_unique_id[u] for u in unique_ids if u in self._by_unique_id]
            found = [self._stored[u] for u in uuids if u in self._stored]
        # Only the VIHF's patient's documents: the others are not this caller's to see.
        return [s for s in found if _parse_ins(s.entry.patient_id) == vihf.patient]

    # --- ITI-57 -------------------------------------------------------------------------------

    def _update_document_set(self, request: etree._Element, vihf: _Vihf) -> etree._Element:
        if request.tag != _q(LCM, "SubmitObjectsRequest"):
            raise _fail("XDSMetadataUpdateOperationError", "the Body is not an lcm:SubmitObjectsRequest")
        objects = _read_registry_objects(request)
        submission_set = _submission_set(objects)
        errors = _check_submission_set(submission_set, full=False)
        if errors:
            raise _Failure(errors)
        if objects.entries:
            raise _fail(
                "XDSMetadataUpdateOperationError",
                "only availability status changes are supported, not metadata updates (new entry versions)",
            )
        patient = _parse_ins(submission_set.identifier(SS_PATIENT_ID) or "")
        if patient != vihf.patient:
            raise _fail("XDSPatientIdDoesNotMatch", "the VIHF resource-id is not the submission's patientId")
        if self.known_patients is not None and patient is not None and patient[0] not in self.known_patients:
            raise _fail("XDSUnknownPatientId", "the patient has no DMP")
        changes: list[tuple[str, str]] = []
        with self._lock:
            for association in objects.associations:
                kind = association.get("associationType", "")
                where = association.get("id", "")
                if kind == HAS_MEMBER and association.get("sourceObject") == submission_set.id:
                    continue  # a SubmissionSet may list its update associations
                if kind != UPDATE_AVAILABILITY:
                    errors.append(
                        _Error(
                            "XDSMetadataUpdateOperationError",
                            f"association type {kind!r} is not supported",
                            where,
                        )
                    )
                    continue
                target_uuid = association.get("targetObject", "")
                slots = _slots(association)
                original, new = slots.get("OriginalStatus", []), slots.get("NewStatus", [])
                target = self._stored.get(target_uuid)
                if association.get("sourceObject") != submission_set.id:
                    errors.append(
                        _Error("XDSMetadataUpdateError", "the source must be the SubmissionSet", where)
                    )
                elif len(original) != 1 or len(new) != 1:
                    errors.append(
                        _Error("XDSMetadataUpdateError", "OriginalStatus and NewStatus are required", where)
                    )
                elif target is None:
                    errors.append(
                        _Error("XDSMetadataUpdateError", f"{target_uuid} is not in the registry", where)
                    )
                elif _parse_ins(target.entry.patient_id) != patient:
                    errors.append(
                        _Error("XDSPatientIdDoesNotMatch", f"{target_uuid} is another patient's", where)
                    )
                elif target.entry.vihf.get("Identifiant_Structure") != (vihf.structure,):
                    errors.append(
                        _Error(
                            "XDSMetadataUpdateError",
                            f"only the authoring structure may change {target_uuid}",
                            where,
                        )
                    )
                elif original[0] != target.entry.status:
                    errors.append(
                        _Error(
                            "XDSMetadataUpdateError",
                            f"OriginalStatus is not the status of {target_uuid}",
                            where,
                        )
                    )
                elif not _transition_allowed(target.entry.status, new[0]):
                    errors.append(
                        _Error(
                            "XDSMetadataUpdateOperationError",
                            f"{target.entry.status} -> {new[0]} is not allowed",
                            where,
                        )
                    )
                else:
                    changes.append((target_uuid, new[0]))
            if not changes and not errors:
                errors.append(
                    _Error("XDSMetadataUpdateOperationError", "no UpdateAvailabilityStatus association")
                )
            if errors:
                raise _Failure(errors)
            for target_uuid, status in changes:
                self._set_status(target_uuid, status)
        logger.info(
            "ITI-57 %s",
            ", ".join(f"{self._stored[u].entry.unique_id} -> {s.rsplit(':', 1)[-1]}" for u, s in changes),
        )
        return _registry_response(SUCCESS, [])


def _transition_allowed(current: str, new: str) -> bool:
    allowed = {
        APPROVED: {DELETED, ARCHIVED},
        ARCHIVED: {APPROVED, DELETED},
        DEPRECATED: {DELETED},
    }
    return new in allowed.get(current, set())


# =============================================================================================
# Responses
# =============================================================================================


def _error_list(parent: etree._Element, errors: Sequence[_Error]) -> None:
    if not errors:
        return
    error_list = etree.SubElement(parent, _q(RS, "RegistryErrorList"), highestSeverity=SEVERITY_ERROR)
    for error in errors:
        element = etree.SubElement(
            error_list,
            _q(RS, "RegistryError"),
            errorCode=error.code,
            codeContext=error.context,
            severity=SEVERITY_ERROR,
        )
        if error.location:
            element.set("location", error.location)


def _registry_response(status: str, errors: Sequence[_Error]) -> etree._Element:
    response = etree.Element(_q(RS, "RegistryResponse"), nsmap=_RESPONSE_NSMAP, status=status)
    _error_list(response, errors)
    return response


def _failure_element(transaction: str, errors: Sequence[_Error]) -> etree._Element:
    if transaction == "ITI-18":
        response = etree.Element(_q(QUERY, "AdhocQueryResponse"), nsmap=_RESPONSE_NSMAP, status=FAILURE)
        _error_list(response, errors)
        return response
    return _registry_response(FAILURE, errors)


def _envelope(body_content: etree._Element | None, action: str, relates_to: str | None) -> bytes:
    envelope = etree.Element(_q(SOAP12, "Envelope"), nsmap=_RESPONSE_NSMAP)
    header = etree.SubElement(envelope, _q(SOAP12, "Header"))
    etree.SubElement(header, _q(WSA, "Action"), {_q(SOAP12, "mustUnderstand"): "true"}).text = action
    etree.SubElement(header, _q(WSA, "MessageID")).text = f"urn:uuid:{uuid.uuid4()}"
    if relates_to:
        etree.SubElement(header, _q(WSA, "RelatesTo")).text = relates_to
    body = etree.SubElement(envelope, _q(SOAP12, "Body"))
    if body_content is not None:
        body.append(body_content)
    serialised: bytes = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    return serialised


def _fault_envelope(fault: _SoapFault, relates_to: str | None) -> bytes:
    element = etree.Element(_q(SOAP12, "Fault"), nsmap=_RESPONSE_NSMAP)
    code = etree.SubElement(element, _q(SOAP12, "Code"))
    etree.SubElement(code, _q(SOAP12, "Value")).text = f"soap:{fault.code}"
    if fault.subcode:
        subcode = etree.SubElement(code, _q(SOAP12, "Subcode"))
        etree.SubElement(subcode, _q(SOAP12, "Value")).text = fault.subcode
    reason = etree.SubElement(element, _q(SOAP12, "Reason"))
    etree.SubElement(reason, _q(SOAP12, "Text"), {_q(XML_NS, "lang"): "en"}).text = fault.reason
    return _envelope(element, _FAULT_ACTION, relates_to)


def _mtom_package(envelope: bytes, action: str) -> tuple[str, bytes]:
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    root_id = f"root.{uuid.uuid4().hex}@crbio-xds-simulator"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
            "Content-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{root_id}>\r\n\r\n"
        ).encode()
        + envelope
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<{root_id}>"; '
        f'start-info="application/soap+xml"; action="{action}"'
    )
    return content_type, body
