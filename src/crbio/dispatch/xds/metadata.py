"""ebRIM metadata of a CR-BIO: the DMP submission (ITI-41, ITI-57) and the IHE_XDM ``METADATA.XML``.

Every value comes from the CDA header (:attr:`Job.header`), from the delivery's metadata
(confidentiality and masking codes decided by the routing plan) or from the sending
laboratory (:class:`SenderContext`), never from the report model: the DMP requires the XDS
metadata to be those of the document that was signed off. Identifiers that the registry
keeps (entryUUIDs, the submission set uniqueId) are derived from the delivery's idempotency
key so that a retry after a timeout submits exactly the same objects, which the registry can
recognise as a duplicate instead of a second document.

Sources: IHE ITI TF-3 §4.2 (metadata, classification scheme UUIDs), the ANS HL7 v2 volet
"Mapping XDS" table and the DMP value sets (JDV_J57 classCode, J58 confidentialityCode, J59
contentTypeCode, J60 formatCode); see ``shared/docs/dispatch-interfaces.md`` §1.5–1.7 and §2.3.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from lxml import etree

from crbio.dispatch.delivery import Action, Channel, Job
from crbio.dispatch.header import DocumentHeader, HeaderPerson
from crbio.dispatch.senders.base import SenderContext
from crbio.errors import PermanentSendError
from crbio.identifiers import FINESS_OID, NATIONAL_PS_OID

__all__ = [
    "CLASS_CODE_REPORT",
    "DEFAULT_CONTENT_TYPE",
    "FORMAT_CODE_N3",
    "GET_DOCUMENTS_QUERY",
    "NS",
    "STATUS_APPROVED",
    "STATUS_DELETED",
    "Code",
    "SubmissionIds",
    "availability_update",
    "confidentiality_codes",
    "derived_uuid",
    "dmp_submission",
    "entry_uuid",
    "get_documents_query",
    "hl7_escape",
    "ins_cx",
    "submission_ids",
    "xdm_metadata",
    "xds_time",
]

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
#: Prefixes used in every XDS message crbio writes or reads.
NS = {"rim": RIM, "lcm": LCM, "query": QUERY, "rs": RS}


@dataclass(frozen=True, slots=True)
class Code:
    """A coded XDS value: the code, its coding scheme (OID or URN) and its display name."""

    code: str
    scheme: str
    display: str


#: classCode 10 "Compte rendu" (TRE_A03); that a CR-BIO (11502-2) maps to it is inferred, see the note.
CLASS_CODE_REPORT = Code("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")
#: formatCode of a CR-BIO in CDA R2 N3 (ASS_A11: CI-SIS CR-BIO / IHE XD-LAB templates).
FORMAT_CODE_N3 = Code("urn:ihe:lab:xd-lab:2008", "1.3.6.1.4.1.19376.1.2.3", "CR d'examens biologiques")
#: contentTypeCode 07 "Consultation Soins Externes" (TRE_R209-TypeActivite, in JDV_J59).
DEFAULT_CONTENT_TYPE = Code("07", "1.2.250.1.213.2.2", "Consultation Soins Externes")

STATUS_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
STATUS_DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
#: The ITI-18 GetDocuments stored query.
GET_DOCUMENTS_QUERY = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"

_CONFIDENTIALITY_SCHEME = "2.16.840.1.113883.5.25"
_MASKING_SCHEME = "1.2.250.1.213.1.1.4.13"  # TRE_A07-StatutVisibiliteDocument
_CONFIDENTIALITY = {
    "N": Code("N", _CONFIDENTIALITY_SCHEME, "Normal"),
    "R": Code("R", _CONFIDENTIALITY_SCHEME, "Restreint"),
    "V": Code("V", _CONFIDENTIALITY_SCHEME, "Très restreint"),
    "MASQUE_PS": Code("MASQUE_PS", _MASKING_SCHEME, "Masqué aux professionnels de santé"),
    "INVISIBLE_PATIENT": Code("INVISIBLE_PATIENT", _MASKING_SCHEME, "Non visible par le patient"),
    "INVISIBLE_REPRESENTANTS_LEGAUX": Code(
        "INVISIBLE_REPRESENTANTS_LEGAUX",
        _MASKING_SCHEME,
        "Non visible par les représentants légaux du patient",
    ),
}

# The signature entry of a signed submission set (IHE DSG as the DMP uses it, note §1.4).
_SIGNATURE_CLASS = Code("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN", "Digital Signature")
_SIGNATURE_TYPE = Code("E1762", "ASTM", "Full Document")
_SIGNATURE_FORMAT = Code("http://www.w3.org/2000/09/xmldsig#", "URN", "Default Signature Style")
_SIGNATURE_EVENT = Code("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12", "Source")

_DOCUMENT_ENTRY_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"  # stable DocumentEntry
_SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
_HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
_SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
# IHE ITI TF-3 §4.2.2: RPLC is a 2007 association type (the domain note writes 2010 by mistake).
_RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
_UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"


class _Scheme:
    """Classification and identification scheme UUIDs (IHE ITI TF-3 §4.2.5)."""

    DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
    DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
    DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
    DE_EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
    DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
    DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
    DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
    DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
    DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
    DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
    SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
    SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
    SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
    SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
    SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"


# A fixed namespace for crbio's name-based UUIDs: the same delivery key always gives the same ids.
_CRBIO_UUID_NAMESPACE = uuid.UUID("5b0e8f52-3c1d-5a7e-9f43-2d6c1e0b7a91")


def derived_uuid(key: str, label: str) -> str:
    """A ``urn:uuid:`` that depends only on a delivery key and a label (UUID version 5)."""
    return f"urn:uuid:{uuid.uuid5(_CRBIO_UUID_NAMESPACE, f'{key}/{label}')}"


def entry_uuid(job: Job) -> str:
    """The entryUUID of the job's DocumentEntry: the same on every retry of the delivery."""
    return derived_uuid(job.key, "document-entry")


@dataclass(frozen=True, slots=True)
class SubmissionIds:
    """The registry ids of one submission, all stable across retries of the same delivery."""

    submission_set: str  # entryUUID of the SubmissionSet
    submission_set_unique_id: str  # its uniqueId (an OID)
    document: str  # entryUUID of the DocumentEntry
    signature: str  # entryUUID of the signature DocumentEntry
    signature_unique_id: str  # uniqueId of the signature document (an OID)


def submission_ids(job: Job) -> SubmissionIds:
    """The ids of the objects submitted for ``job``."""
    signature_oid = f"2.25.{uuid.UUID(derived_uuid(job.key, 'signature-unique-id')[9:]).int}"
    return SubmissionIds(
        submission_set=derived_uuid(job.key, "submission-set"),
        submission_set_unique_id=job.submission_oid,
        document=entry_uuid(job),
        signature=derived_uuid(job.key, "signature-entry"),
        signature_unique_id=signature_oid,
    )


def xds_time(moment: datetime | date) -> str:
    """An XDS DTM in UTC: ``YYYYMMDDhhmmss`` for a datetime, ``YYYYMMDD`` for a date."""
    if isinstance(moment, datetime):
        aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    return moment.strftime("%Y%m%d")


def hl7_escape(text: str) -> str:
    """``text`` with the HL7 v2 delimiters escaped, for a component of a CX/XCN/XON value."""
    out = text.replace("\\", "\\E\\")
    for char, escape in (("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        out = out.replace(char, escape)
    return " ".join(out.split())


def ins_cx(ins: tuple[str, str]) -> str:
    """The INS as an HL7 v2 CX: ``<matricule>^^^&<OID>&ISO^NH``."""
    matricule, oid = ins
    return f"{matricule}^^^&{oid}&ISO^NH"


def _local_cx(local: tuple[str, str]) -> str:
    root, extension = local
    return f"{hl7_escape(extension)}^^^&{root}&ISO^PI"


def _person_xcn(person: HeaderPerson) -> str:
    return (
        f"{hl7_escape(person.rpps)}^{hl7_escape(person.family)}^{hl7_escape(person.given)}"
        f"^^^^^^&{NATIONAL_PS_OID}&ISO^D^^^IDNPS"
    )


def _organization_xon(name: str, finess_with_prefix: str) -> str:
    return f"{hl7_escape(name)}^^^^^&{FINESS_OID}&ISO^IDNST^^^{finess_with_prefix}"


def _split_name(full: str) -> tuple[str, str]:
    """``"NOM Prénom"`` as (family, given): leading upper-case words are the family name."""
    words = full.split()
    count = 0
    while count < len(words) and words[count].isupper():
        count += 1
    if count == 0:
        return full.strip(), ""
    return " ".join(words[:count]), " ".join(words[count:])


def _sender_author(context: SenderContext) -> dict[str, list[str]]:
    """The SubmissionSet author: the person responsible for the automated sending, or the system."""
    institution = _organization_xon(context.laboratory_name, f"1{context.laboratory_finess}")
    if context.responsible_rpps:
        family, given = _split_name(context.responsible_name or "")
        person = (
            f"8{hl7_escape(context.responsible_rpps)}^{hl7_escape(family)}^{hl7_escape(given)}"
            f"^^^^^^&{NATIONAL_PS_OID}&ISO^D^^^IDNPS"
        )
    else:
        # A system author (ANS AuthorPersonSystem): "3" + FINESS "/" local id, name, model, type RI.
        person = (
            f"3{context.laboratory_finess}/{hl7_escape(context.software_name)}"
            f"^{hl7_escape(context.software_name)}^{hl7_escape(context.software_version)}"
            f"^^^^^^&{NATIONAL_PS_OID}&ISO^U^^^RI"
        )
    return {"authorPerson": [person], "authorInstitution": [institution]}


def _document_author(header: DocumentHeader) -> dict[str, list[str]]:
    author = header.author
    slots = {"authorPerson": [_person_xcn(author)]}
    finess = author.organization_finess or header.custodian_finess
    name = author.organization_name or header.custodian_name
    if finess:
        slots["authorInstitution"] = [_organization_xon(name, finess)]
    if author.specialty is not None:
        spec = author.specialty
        slots["authorSpecialty"] = [f"{hl7_escape(spec.code)}^{hl7_escape(spec.display)}^{spec.system}"]
    return slots


def confidentiality_codes(job: Job) -> list[Code]:
    """The confidentialityCode values: the CDA one (N/R/V), then each active masking code.

    Raises:
        PermanentSendError: a code is outside the DMP value set JDV_J58 (a routing plan bug).
    """
    wanted = job.delivery.metadata.get("confidentiality") or [job.header.confidentiality]
    codes: list[Code] = []
    for value in wanted:
        code = _CONFIDENTIALITY.get(str(value))
        if code is None:
            raise PermanentSendError(
                f"{job.delivery.document_id}: confidentiality code {value!r} is not in JDV_J58",
                code="dispatch.xds.metadata",
                reason="confidentiality code outside JDV_J58",
            )
        if code not in codes:
            codes.append(code)
    return codes


class _Writer:
    """Builds the ebRIM objects of one submission, numbering the ids of nested objects."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.count = 0

    def new_id(self) -> str:
        self.count += 1
        return derived_uuid(self.key, f"object-{self.count}")

    @staticmethod
    def el(parent: etree._Element | None, tag: str, **attributes: str) -> etree._Element:
        qname = f"{{{RIM}}}{tag}"
        if parent is None:
            return etree.Element(qname, attributes, nsmap={"rim": RIM})
        return etree.SubElement(parent, qname, attributes)

    def slot(self, parent: etree._Element, name: str, values: Iterable[str]) -> None:
        slot = self.el(parent, "Slot", name=name)
        value_list = self.el(slot, "ValueList")
        for value in values:
            self.el(value_list, "Value").text = value

    def name(self, parent: etree._Element, text: str, tag: str = "Name") -> None:
        self.el(self.el(parent, tag), "LocalizedString", value=text)

    def classification(self, parent: etree._Element, scheme: str, obj: str, code: Code) -> None:
        element = self.el(
            parent,
            "Classification",
            classificationScheme=scheme,
            classifiedObject=obj,
            id=self.new_id(),
            nodeRepresentation=code.code,
        )
        self.slot(element, "codingScheme", [code.scheme])
        self.name(element, code.display)

    def author(self, parent: etree._Element, scheme: str, obj: str, slots: dict[str, list[str]]) -> None:
        element = self.el(
            parent, "Classification", classificationScheme=scheme, classifiedObject=obj, id=self.new_id()
        )
        element.set("nodeRepresentation", "")
        for name in ("authorPerson", "authorInstitution", "authorRole", "authorSpecialty"):
            if slots.get(name):
                self.slot(element, name, slots[name])

    def external_id(self, parent: etree._Element, scheme: str, obj: str, value: str, label: str) -> None:
        element = self.el(
            parent,
            "ExternalIdentifier",
            id=self.new_id(),
            identificationScheme=scheme,
            registryObject=obj,
            value=value,
        )
        self.name(element, label)

    def association(
        self,
        parent: etree._Element,
        kind: str,
        source: str,
        target: str,
        slots: Sequence[tuple[str, str]] = (),
    ) -> None:
        element = self.el(
            parent,
            "Association",
            associationType=kind,
            id=self.new_id(),
            sourceObject=source,
            targetObject=target,
        )
        for name, value in slots:
            self.slot(element, name, [value])


@dataclass(frozen=True)
class _DocumentFacts:
    """What a DocumentEntry says beyond the header: its ids, codes, content and extra slots."""

    entry_id: str
    unique_id: str
    patient_id: str
    mime_type: str
    title: str
    class_code: Code
    type_code: Code
    format_code: Code
    confidentiality: Sequence[Code]
    language: str
    content: bytes | None  # for hash and size; None to leave them to the repository
    event_codes: Sequence[Code] = ()
    extra_slots: Sequence[tuple[str, str]] = ()


def _source_patient_id(header: DocumentHeader) -> str:
    if header.ipp is not None:
        return _local_cx(header.ipp)
    if header.ins is not None:
        return ins_cx(header.ins)
    raise PermanentSendError(
        f"{header.document_id}: the document has no patient identifier",
        code="dispatch.xds.metadata",
        reason="no patient identifier",
    )


def _document_entry(
    w: _Writer, parent: etree._Element, header: DocumentHeader, facts: _DocumentFacts
) -> None:
    entry = w.el(
        parent,
        "ExtrinsicObject",
        id=facts.entry_id,
        mimeType=facts.mime_type,
        objectType=_DOCUMENT_ENTRY_TYPE,
    )
    slots: list[tuple[str, list[str]]] = [("creationTime", [xds_time(header.effective_time)])]
    if facts.content is not None:
        slots.append(("hash", [hashlib.sha1(facts.content).hexdigest()]))
    slots.append(("languageCode", [facts.language]))
    if header.legal_authenticator is not None:
        slots.append(("legalAuthenticator", [_person_xcn(header.legal_authenticator)]))
    if header.service_start is not None:
        slots.append(("serviceStartTime", [xds_time(header.service_start)]))
    if header.service_stop is not None:
        slots.append(("serviceStopTime", [xds_time(header.service_stop)]))
    if facts.content is not None:
        slots.append(("size", [str(len(facts.content))]))
    slots.append(("sourcePatientId", [_source_patient_id(header)]))
    info = [f"PID-5|{hl7_escape(header.birth_family_name)}^{hl7_escape(header.birth_given_name)}^^^^^L"]
    if header.birth_date is not None:
        info.append(f"PID-7|{xds_time(header.birth_date)}")
    info.append(f"PID-8|{header.sex}")
    slots.append(("sourcePatientInfo", info))
    slots.extend((name, [value]) for name, value in facts.extra_slots)
    for name, values in slots:
        w.slot(entry, name, values)
    w.name(entry, facts.title)
    w.author(entry, _Scheme.DE_AUTHOR, facts.entry_id, _document_author(header))
    w.classification(entry, _Scheme.DE_CLASS, facts.entry_id, facts.class_code)
    for code in facts.confidentiality:
        w.classification(entry, _Scheme.DE_CONFIDENTIALITY, facts.entry_id, code)
    for code in facts.event_codes:
        w.classification(entry, _Scheme.DE_EVENT, facts.entry_id, code)
    w.classification(entry, _Scheme.DE_FORMAT, facts.entry_id, facts.format_code)
    if header.facility_type is not None:
        facility = header.facility_type
        w.classification(
            entry, _Scheme.DE_FACILITY, facts.entry_id, Code(facility.code, facility.system, facility.display)
        )
    if header.practice_setting is not None:
        practice = header.practice_setting
        w.classification(
            entry, _Scheme.DE_PRACTICE, facts.entry_id, Code(practice.code, practice.system, practice.display)
        )
    w.classification(entry, _Scheme.DE_TYPE, facts.entry_id, facts.type_code)
    w.external_id(
        entry, _Scheme.DE_PATIENT_ID, facts.entry_id, facts.patient_id, "XDSDocumentEntry.patientId"
    )
    w.external_id(entry, _Scheme.DE_UNIQUE_ID, facts.entry_id, facts.unique_id, "XDSDocumentEntry.uniqueId")


def _report_facts(
    job: Job, entry_id: str, patient_id: str, *, extra_slots: Sequence[tuple[str, str]] = ()
) -> _DocumentFacts:
    """The DocumentEntry facts of the job's CR-BIO N3, the same for the DMP and for XDM."""
    header = job.header
    return _DocumentFacts(
        entry_id=entry_id,
        unique_id=header.document_id,
        patient_id=patient_id,
        mime_type="text/xml",
        title=header.title,
        class_code=CLASS_CODE_REPORT,
        type_code=_type_code(header),
        format_code=FORMAT_CODE_N3,
        confidentiality=confidentiality_codes(job),
        language=header.language,
        content=job.n3,
        extra_slots=extra_slots,
    )


def _submission_set(
    w: _Writer,
    parent: etree._Element,
    *,
    set_id: str,
    unique_id: str,
    patient_id: str,
    submission_time: datetime,
    context: SenderContext,
    content_type: Code,
    intended_recipients: Sequence[str] = (),
) -> etree._Element:
    package = w.el(parent, "RegistryPackage", id=set_id)
    w.slot(package, "submissionTime", [xds_time(submission_time)])
    if intended_recipients:
        w.slot(package, "intendedRecipient", intended_recipients)
    w.author(package, _Scheme.SS_AUTHOR, set_id, _sender_author(context))
    w.classification(package, _Scheme.SS_CONTENT_TYPE, set_id, content_type)
    w.external_id(package, _Scheme.SS_PATIENT_ID, set_id, patient_id, "XDSSubmissionSet.patientId")
    w.external_id(package, _Scheme.SS_SOURCE_ID, set_id, context.laboratory_oid, "XDSSubmissionSet.sourceId")
    w.external_id(package, _Scheme.SS_UNIQUE_ID, set_id, unique_id, "XDSSubmissionSet.uniqueId")
    w.el(
        parent,
        "Classification",
        classificationNode=_SUBMISSION_SET_NODE,
        classifiedObject=set_id,
        id=w.new_id(),
    )
    return package


def _request() -> tuple[etree._Element, etree._Element]:
    request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    return request, etree.SubElement(request, f"{{{RIM}}}RegistryObjectList")


def _type_code(header: DocumentHeader) -> Code:
    return Code(header.code.code, header.code.system, header.code.display)


def _dmp_patient_id(job: Job) -> str:
    if job.header.ins is None:
        raise PermanentSendError(
            f"{job.delivery.document_id}: the DMP requires a qualified INS and the document has none",
            code="dispatch.dmp.no-ins",
            reason="no qualified INS",
        )
    return ins_cx(job.header.ins)


def dmp_submission(
    job: Job,
    context: SenderContext,
    *,
    submission_time: datetime,
    content_type: Code = DEFAULT_CONTENT_TYPE,
    replaced_entry_uuid: str | None = None,
    signature: bytes | None = None,
    sign: Callable[[etree._Element], bytes] | None = None,
) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of an ITI-41 for ``job``: a signed submission set.

    It holds the SubmissionSet, the CR-BIO DocumentEntry, the signature DocumentEntry, the
    HasMember associations (``SubmissionSetStatus=Original``), the ``signs`` association and,
    for a replacement, the RPLC association to ``replaced_entry_uuid``. ``signature`` (the
    XAdES document) only feeds the signature entry's hash and size; instead, ``sign`` is
    called with the finished SubmissionSet ``rim:RegistryPackage`` and returns the signature,
    so the request is built once (see :func:`crbio.dispatch.xds.signature.sign_submission_set`).

    Raises:
        PermanentSendError: no qualified INS (``dispatch.dmp.no-ins``) or a confidentiality code
            outside the DMP value set.
    """
    header = job.header
    patient_id = _dmp_patient_id(job)
    ids = submission_ids(job)
    w = _Writer(job.key)
    request, objects = _request()
    package = _submission_set(
        w,
        objects,
        set_id=ids.submission_set,
        unique_id=ids.submission_set_unique_id,
        patient_id=patient_id,
        submission_time=submission_time,
        context=context,
        content_type=content_type,
    )
    if sign is not None:
        signature = sign(package)
    _document_entry(
        w,
        objects,
        header,
        _report_facts(job, ids.document, patient_id),
    )
    _document_entry(
        w,
        objects,
        header,
        _DocumentFacts(
            entry_id=ids.signature,
            unique_id=ids.signature_unique_id,
            patient_id=patient_id,
            mime_type="text/xml",
            title="Signature du lot de soumission",
            class_code=_SIGNATURE_CLASS,
            type_code=_SIGNATURE_TYPE,
            format_code=_SIGNATURE_FORMAT,
            confidentiality=[_CONFIDENTIALITY["N"]],
            language="art",
            content=signature,
            event_codes=[_SIGNATURE_EVENT],
        ),
    )
    original = [("SubmissionSetStatus", "Original")]
    w.association(objects, _HAS_MEMBER, ids.submission_set, ids.document, original)
    w.association(objects, _HAS_MEMBER, ids.submission_set, ids.signature, original)
    w.association(objects, _SIGNS, ids.signature, ids.submission_set)
    if replaced_entry_uuid is not None:
        w.association(objects, _RPLC, ids.document, replaced_entry_uuid)
    return request


def availability_update(
    job: Job,
    context: SenderContext,
    *,
    submission_time: datetime,
    target_entry_uuid: str,
    new_status: str = STATUS_DELETED,
    content_type: Code = DEFAULT_CONTENT_TYPE,
) -> etree._Element:
    """The ``lcm:SubmitObjectsRequest`` of an ITI-57 that changes an entry's availability status.

    A SubmissionSet plus an ``UpdateAvailabilityStatus`` association from it to the target,
    with ``OriginalStatus`` Approved and ``NewStatus`` (by default the CI-SIS Deleted status).

    Raises:
        PermanentSendError: no qualified INS (``dispatch.dmp.no-ins``).
    """
    patient_id = _dmp_patient_id(job)
    ids = submission_ids(job)
    w = _Writer(job.key)
    request, objects = _request()
    _submission_set(
        w,
        objects,
        set_id=ids.submission_set,
        unique_id=ids.submission_set_unique_id,
        patient_id=patient_id,
        submission_time=submission_time,
        context=context,
        content_type=content_type,
    )
    w.association(
        objects,
        _UPDATE_STATUS,
        ids.submission_set,
        target_entry_uuid,
        [("OriginalStatus", STATUS_APPROVED), ("NewStatus", new_status)],
    )
    return request


def get_documents_query(*, unique_ids: Sequence[str] = (), entry_uuids: Sequence[str] = ()) -> etree._Element:
    """An ITI-18 ``query:AdhocQueryRequest`` for GetDocuments (LeafClass) by uniqueId or entryUUID."""
    if bool(unique_ids) == bool(entry_uuids):
        raise ValueError("give either unique_ids or entry_uuids")
    request = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    etree.SubElement(
        request, f"{{{QUERY}}}ResponseOption", returnComposedObjects="true", returnType="LeafClass"
    )
    query = etree.SubElement(request, f"{{{RIM}}}AdhocQuery", id=GET_DOCUMENTS_QUERY)
    name, values = (
        ("$XDSDocumentEntryUniqueId", unique_ids)
        if unique_ids
        else ("$XDSDocumentEntryEntryUUID", entry_uuids)
    )
    _Writer("").slot(query, name, ["(" + ",".join(f"'{v}'" for v in values) + ")"])
    return request


def xdm_metadata(job: Job, context: SenderContext, *, document_uri: str, submission_time: datetime) -> bytes:
    """The ``METADATA.XML`` of an IHE_XDM archive carrying ``job.n3`` as ``document_uri``.

    One SubmissionSet (with an ``intendedRecipient`` slot holding the recipient's MSSanté
    address when the delivery goes over MSSanté) and one DocumentEntry with the ``URI``,
    ``hash`` (SHA-1) and ``size`` slots of ``job.n3``; for a replacement or a deletion the
    DocumentEntry also carries the extra slot ``action`` = ``C`` / ``D`` that receiving PFIs
    read. The patientId is the INS when the document carries one (crbio writes it only when
    qualified), otherwise the local identifier. No signature entry: XDM over MSSanté is not
    signed at the metadata level. The output is deterministic for a given job and time.

    Raises:
        PermanentSendError: the document has no patient identifier, or a confidentiality code
            is outside JDV_J58.
    """
    header = job.header
    patient_id = ins_cx(header.ins) if header.ins is not None else _source_patient_id(header)
    ids = submission_ids(job)
    w = _Writer(job.key)
    request, objects = _request()
    recipients: list[str] = []
    if job.delivery.channel is Channel.MSSANTE and job.delivery.recipient.address:
        # XON|XCN|XTN with only the telecommunication part: an Internet (e-mail) address.
        recipients.append(f"||^^Internet^{job.delivery.recipient.address}")
    _submission_set(
        w,
        objects,
        set_id=ids.submission_set,
        unique_id=ids.submission_set_unique_id,
        patient_id=patient_id,
        submission_time=submission_time,
        context=context,
        content_type=DEFAULT_CONTENT_TYPE,
        intended_recipients=recipients,
    )
    extra = [("URI", document_uri)]
    action = {Action.REPLACE: "C", Action.DELETE: "D"}.get(job.delivery.action)
    if action is not None:
        extra.append(("action", action))
    _document_entry(
        w,
        objects,
        header,
        _report_facts(job, ids.document, patient_id, extra_slots=extra),
    )
    w.association(
        objects, _HAS_MEMBER, ids.submission_set, ids.document, [("SubmissionSetStatus", "Original")]
    )
    return bytes(etree.tostring(request, xml_declaration=True, encoding="UTF-8", pretty_print=True))
