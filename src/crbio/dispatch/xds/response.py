"""What an XDS registry answers, and what crbio does about it: retry later or give up.

A ``rs:RegistryResponse`` (ITI-41, ITI-57) or ``query:AdhocQueryResponse`` (ITI-18) carries a
status (Success, PartialSuccess, Failure), a ``RegistryErrorList`` and, for a query, the
matching ExtrinsicObjects. Failures are mapped to the dispatch error tree:

- retryable (:class:`TransientSendError`): ``XDSRegistryBusy``, ``XDSRepositoryBusy``,
  ``XDSRegistryNotAvailable``, ``XDSRegistryError``, ``XDSRepositoryError``, SOAP
  ``Receiver`` faults, HTTP 5xx (and 408/429), timeouts and connection errors;
- final (:class:`PermanentSendError`): every other XDS code (``XDSUnknownPatientId``,
  ``XDSPatientIdDoesNotMatch``, metadata errors, ``XDSNonIdenticalHash``,
  ``XDSRegistryDeprecatedDocumentError``…), SOAP ``Sender`` faults, HTTP 4xx.

The ``reason`` is the XDS error code, with the registry's ``codeContext`` when something
is left of it after redaction: registries echo identifiers back, so anything that looks
like a patient identifier (CX values, long digit runs, e-mail addresses) is removed before
the text reaches a log line, an exception or the journal. IHE ITI TF-3 §4.2.4; note §1.8.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from crbio.dispatch.redaction import redact
from crbio.dispatch.xds.metadata import NS, RIM, RS
from crbio.dispatch.xds.soap import SOAP, SoapMessage
from crbio.errors import InputError, PermanentSendError, SendError, TransientSendError

__all__ = [
    "STATUS_FAILURE",
    "STATUS_PARTIAL_SUCCESS",
    "STATUS_SUCCESS",
    "TRANSIENT_CODES",
    "DocumentEntryInfo",
    "RegistryError",
    "RegistryResult",
    "SoapFault",
    "failure_error",
    "fault_error",
    "http_error",
    "registry_result",
    "soap_fault",
]

STATUS_SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
STATUS_PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
STATUS_FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"

#: XDS error codes worth retrying: the service is busy or failed internally.
TRANSIENT_CODES = frozenset(
    {
        "XDSRegistryBusy",
        "XDSRepositoryBusy",
        "XDSRegistryNotAvailable",
        "XDSRepositoryNotAvailable",
        "XDSRegistryError",
        "XDSRepositoryError",
    }
)

_UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
_PATIENT_ID_SCHEME = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"


@dataclass(frozen=True, slots=True)
class RegistryError:
    """One ``rs:RegistryError``: the code, its context, location and severity (all as sent)."""

    code: str
    context: str
    location: str
    severity: str

    @property
    def is_error(self) -> bool:
        """Whether its severity is Error (a Warning does not fail a request)."""
        return not self.severity.endswith("Warning")

    def as_detail(self) -> dict[str, str]:
        """A redacted, JSON-serialisable form for acknowledgement and error details."""
        return {
            "code": self.code,
            "severity": self.severity.rsplit(":", 1)[-1],
            "context": redact(self.context),
            "location": redact(self.location),
        }


@dataclass(frozen=True, slots=True)
class DocumentEntryInfo:
    """A DocumentEntry returned by an ITI-18 query: the facts the DMP sender needs."""

    entry_uuid: str
    unique_id: str | None
    status: str | None
    hash: str | None
    logical_id: str | None

    @property
    def approved(self) -> bool:
        """Whether the entry is the current, available version."""
        return (self.status or "").endswith(":Approved")


@dataclass(frozen=True)
class RegistryResult:
    """A parsed RegistryResponse or AdhocQueryResponse."""

    status: str
    errors: tuple[RegistryError, ...]
    entries: tuple[DocumentEntryInfo, ...] = ()

    @property
    def success(self) -> bool:
        """Success, or PartialSuccess with nothing worse than warnings."""
        if self.status.endswith(":Success"):
            return True
        return self.status.endswith(":PartialSuccess") and not any(e.is_error for e in self.errors)

    @property
    def short_status(self) -> str:
        """The last segment of the status URN (``Success``, ``Failure``…)."""
        return self.status.rsplit(":", 1)[-1]

    @property
    def error_codes(self) -> tuple[str, ...]:
        """The codes of the Error-severity entries, in order."""
        return tuple(e.code for e in self.errors if e.is_error)


@dataclass(frozen=True, slots=True)
class SoapFault:
    """A SOAP 1.2 fault: ``Sender``/``Receiver`` (or another code), its subcode and reason."""

    code: str
    subcode: str | None
    reason: str


def _local(qname_text: str | None) -> str:
    return (qname_text or "").strip().rsplit(":", 1)[-1]


def soap_fault(message: SoapMessage) -> SoapFault | None:
    """The fault carried by ``message``, if its body is a ``soap:Fault``."""
    body = message.body
    if body is None or body.tag != f"{{{SOAP}}}Fault":
        return None
    ns = {"soap": SOAP}
    code = body.findtext("soap:Code/soap:Value", namespaces=ns)
    subcode = body.findtext("soap:Code/soap:Subcode/soap:Value", namespaces=ns)
    reason = body.findtext("soap:Reason/soap:Text", namespaces=ns) or ""
    return SoapFault(code=_local(code), subcode=_local(subcode) or None, reason=reason.strip())


def _slot(element: etree._Element, name: str) -> str | None:
    found = element.xpath(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value/text()", namespaces=NS)
    return str(found[0]).strip() if found else None


def _entries(objects: Iterable[etree._Element]) -> tuple[DocumentEntryInfo, ...]:
    entries = []
    for obj in objects:
        unique = obj.xpath(
            f"rim:ExternalIdentifier[@identificationScheme='{_UNIQUE_ID_SCHEME}']/@value", namespaces=NS
        )
        entries.append(
            DocumentEntryInfo(
                entry_uuid=obj.get("id", ""),
                unique_id=str(unique[0]) if unique else None,
                status=obj.get("status"),
                hash=_slot(obj, "hash"),
                logical_id=obj.get("lid"),
            )
        )
    return tuple(entries)


def registry_result(message: SoapMessage, *, label: str = "registry response") -> RegistryResult:
    """The status, errors and returned DocumentEntries of a RegistryResponse or AdhocQueryResponse.

    Raises:
        InputError: the body is neither (``input.xds``).
    """
    body = message.body
    if body is None or etree.QName(body).localname not in ("RegistryResponse", "AdhocQueryResponse"):
        raise InputError(f"{label}: the SOAP body is not a registry response", code="input.xds")
    errors = tuple(
        RegistryError(
            code=e.get("errorCode", ""),
            context=e.get("codeContext", ""),
            location=e.get("location", ""),
            severity=e.get("severity", "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"),
        )
        for e in body.iterfind(f"{{{RS}}}RegistryErrorList/{{{RS}}}RegistryError")
    )
    objects = body.iterfind(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}ExtrinsicObject")
    return RegistryResult(status=body.get("status", ""), errors=errors, entries=_entries(objects))


def failure_error(result: RegistryResult, *, transaction: str, label: str) -> SendError:
    """The error to raise for a failed registry response: transient for busy/internal codes.

    ``label`` names the delivery (document OID or key) in the message; never patient data.
    """
    failing = [e for e in result.errors if e.is_error] or list(result.errors)
    codes = [e.code for e in failing if e.code]
    detail: dict[str, object] = {
        "transaction": transaction,
        "registry_status": result.short_status,
        "errors": [e.as_detail() for e in failing],
    }
    if not codes:
        reason = f"{transaction} {result.short_status or 'no status'} without error code"
        return PermanentSendError(f"{label}: {reason}", reason=reason, detail=detail)
    first = failing[0]
    context = redact(first.context)
    reason = first.code + (f": {context}" if context else "")
    message = f"{label}: {transaction} refused: {reason}"
    if all(code in TRANSIENT_CODES for code in codes):
        return TransientSendError(message, code="dispatch.dmp.busy", reason=reason, detail=detail)
    return PermanentSendError(message, code="dispatch.dmp.refused", reason=reason, detail=detail)


def fault_error(fault: SoapFault, *, http_status: int, transaction: str, label: str) -> SendError:
    """The error for a SOAP fault: a ``Receiver`` fault is retryable, any other is not."""
    reason = f"SOAP {fault.code} fault" + (f" {fault.subcode}" if fault.subcode else "")
    text = redact(fault.reason)
    if text:
        reason += f": {text}"
    detail: dict[str, object] = {
        "transaction": transaction,
        "http_status": http_status,
        "fault_code": fault.code,
        "fault_subcode": fault.subcode,
    }
    message = f"{label}: {transaction} {reason}"
    if fault.code == "Receiver":
        return TransientSendError(message, code="dispatch.dmp.fault", reason=reason, detail=detail)
    return PermanentSendError(message, code="dispatch.dmp.fault", reason=reason, detail=detail)


def http_error(status: int, *, transaction: str, label: str) -> SendError:
    """The error for an HTTP answer that carries no usable SOAP response."""
    reason = f"HTTP {status}"
    detail: dict[str, object] = {"transaction": transaction, "http_status": status}
    message = f"{label}: {transaction} answered {reason}"
    if status >= 500 or status in (408, 429):
        return TransientSendError(message, code="dispatch.dmp.http", reason=reason, detail=detail)
    return PermanentSendError(message, code="dispatch.dmp.http", reason=reason, detail=detail)
