"""What the senders need from a CR-BIO, read from its CDA header rather than from the model.

Senders work on the stored document alone, so a delivery queued by one process can be made
by another (or after a restart) with nothing but the outbox; and the XDS metadata, mail
subject and HL7 segments are then derived from exactly what was signed off, as the DMP
requires ("métadonnées issues de l'en-tête CDA").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from lxml import etree

from crbio._hl7 import parse_hl7_time
from crbio._xml import parse_xml
from crbio.errors import InputError
from crbio.identifiers import INS_OIDS, NATIONAL_PS_OID

__all__ = ["DocumentHeader", "HeaderCode", "HeaderPerson", "read_header"]

_NS = {"hl7": "urn:hl7-org:v3"}
_FINESS_OID = "1.2.250.1.71.4.2.2"
_ENCOUNTER = "hl7:componentOf/hl7:encompassingEncounter"


@dataclass(frozen=True, slots=True)
class HeaderCode:
    """A coded value of the header: code, display name and code system OID."""

    code: str
    display: str
    system: str


@dataclass(frozen=True, slots=True)
class HeaderPerson:
    """A health professional named in the header (author, legal authenticator)."""

    rpps: str  # the national id as written (8 + RPPS)
    family: str
    given: str
    specialty: HeaderCode | None
    time: datetime | None
    organization_finess: str | None  # as written (1 + FINESS)
    organization_name: str | None


@dataclass(frozen=True, slots=True)
class DocumentHeader:
    """The header facts of a CR-BIO that XDS metadata, MSSanté messages and HL7 v2 use.

    Identifiers are written as in the CDA (``rpps`` with its ``8`` prefix, ``custodian_finess``
    with its ``1``). ``ins`` is ``(matricule, oid)`` only when the document carries an INS,
    which crbio writes only for a qualified identity.
    """

    document_id: str
    set_id: str
    version: int
    code: HeaderCode
    title: str
    effective_time: datetime
    confidentiality: str
    language: str
    replaces: str | None
    ins: tuple[str, str] | None
    local_ids: tuple[tuple[str, str], ...]  # (root, extension) of the other patient ids (IPP)
    birth_family_name: str
    birth_given_name: str
    used_family_name: str | None
    sex: str  # M, F or U
    birth_date: date | None
    author: HeaderPerson
    legal_authenticator: HeaderPerson | None
    custodian_finess: str
    custodian_name: str
    service_start: datetime | None
    service_stop: datetime | None
    practice_setting: HeaderCode | None
    facility_type: HeaderCode | None
    encounter_code: str | None  # HL7 ActCode of the encounter (AMB, IMP, EMER…)
    encounter_id: tuple[str, str] | None  # (root, extension) of the visit number
    encounter_start: datetime | None
    encounter_end: datetime | None
    self_presenting: bool  # carries an xml-stylesheet processing instruction

    @property
    def ipp(self) -> tuple[str, str] | None:
        """The first local patient identifier (root, extension), usually the IPP."""
        return self.local_ids[0] if self.local_ids else None


class _Reader:
    def __init__(self, root: etree._Element, label: str) -> None:
        self.root = root
        self.label = label

    def first(self, path: str, context: etree._Element | None = None) -> etree._Element | None:
        found = (context if context is not None else self.root).xpath(path, namespaces=_NS)
        return found[0] if found else None

    def required(self, path: str, context: etree._Element | None = None) -> etree._Element:
        element = self.first(path, context)
        if element is None:
            raise InputError(f"{self.label}: CDA header has no {path}", code="input.cda-header")
        return element

    def text(self, path: str, context: etree._Element | None = None) -> str | None:
        element = self.first(path, context)
        return None if element is None else " ".join((element.text or "").split()) or None

    def time(self, path: str, context: etree._Element | None = None) -> datetime | None:
        element = self.first(path, context)
        value = None if element is None else element.get("value")
        if not value:
            return None
        parsed = parse_hl7_time(value)
        return parsed if isinstance(parsed, datetime) else datetime(*parsed.timetuple()[:3], tzinfo=UTC)

    def code(self, path: str, context: etree._Element | None = None) -> HeaderCode | None:
        element = self.first(path, context)
        if element is None or not element.get("code"):
            return None
        return HeaderCode(
            element.get("code", ""), element.get("displayName", ""), element.get("codeSystem", "")
        )

    def person(self, path: str, person_path: str) -> HeaderPerson | None:
        entity = self.first(path)
        if entity is None:
            return None
        national = self.first(f"hl7:id[@root='{NATIONAL_PS_OID}']", entity)
        return HeaderPerson(
            rpps=(national.get("extension", "") if national is not None else ""),
            family=self.text(f"{person_path}/hl7:name/hl7:family", entity) or "",
            given=self.text(f"{person_path}/hl7:name/hl7:given", entity) or "",
            specialty=self.code("hl7:code", entity),
            time=self.time("../hl7:time", entity),
            organization_finess=_attr(
                self.first(f"hl7:representedOrganization/hl7:id[@root='{_FINESS_OID}']", entity), "extension"
            ),
            organization_name=self.text("hl7:representedOrganization/hl7:name", entity),
        )


def _attr(element: etree._Element | None, name: str) -> str | None:
    return None if element is None else element.get(name)


def read_header(cda: bytes, *, label: str = "document") -> DocumentHeader:
    """Read the header facts of a CR-BIO (CDA R2 N3 or N1) that dispatch needs.

    Raises:
        InputError: the bytes are not XML, or a header element dispatch needs is missing;
            the message names the element, never its content.
    """
    tree = parse_xml(cda, label=label)
    r = _Reader(tree.getroot(), label)
    ids = r.root.xpath("hl7:recordTarget/hl7:patientRole/hl7:id", namespaces=_NS)
    ins = next(((i.get("extension"), i.get("root")) for i in ids if i.get("root") in INS_OIDS), None)
    local_ids = tuple(
        (i.get("root", ""), i.get("extension", ""))
        for i in ids
        if i.get("root") not in INS_OIDS and i.get("root")
    )
    patient = r.required("hl7:recordTarget/hl7:patientRole/hl7:patient")
    birth = r.first("hl7:birthTime", patient)
    birth_value = None if birth is None else birth.get("value")
    birth_date = parse_hl7_time(birth_value) if birth_value else None
    if isinstance(birth_date, datetime):
        birth_date = birth_date.date()
    effective = r.time("hl7:effectiveTime")
    if effective is None:
        raise InputError(f"{label}: CDA header has no effectiveTime", code="input.cda-header")
    code = r.code("hl7:code")
    if code is None:
        raise InputError(f"{label}: CDA header has no code", code="input.cda-header")
    author = r.person("hl7:author/hl7:assignedAuthor", "hl7:assignedPerson")
    if author is None:
        raise InputError(f"{label}: CDA header has no author", code="input.cda-header")
    version = r.first("hl7:versionNumber")
    sex = r.first("hl7:administrativeGenderCode", patient)
    return DocumentHeader(
        document_id=r.required("hl7:id").get("root", ""),
        set_id=r.required("hl7:setId").get("root", ""),
        version=int(version.get("value", "1")) if version is not None else 1,
        code=code,
        title=r.text("hl7:title") or code.display,
        effective_time=effective,
        confidentiality=r.required("hl7:confidentialityCode").get("code", "N"),
        language=r.required("hl7:languageCode").get("code", "fr-FR"),
        replaces=_attr(r.first("hl7:relatedDocument[@typeCode='RPLC']/hl7:parentDocument/hl7:id"), "root"),
        ins=ins,
        local_ids=local_ids,
        birth_family_name=r.text("hl7:name/hl7:family[@qualifier='BR']", patient)
        or r.text("hl7:name/hl7:family", patient)
        or "",
        birth_given_name=r.text("hl7:name/hl7:given[@qualifier='BR']", patient)
        or r.text("hl7:name/hl7:given", patient)
        or "",
        used_family_name=r.text("hl7:name/hl7:family[@qualifier='CL']", patient),
        sex=(sex.get("code") if sex is not None else None) or "U",
        birth_date=birth_date,
        author=author,
        legal_authenticator=r.person("hl7:legalAuthenticator/hl7:assignedEntity", "hl7:assignedPerson"),
        custodian_finess=r.required(
            "hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization/hl7:id"
        ).get("extension", ""),
        custodian_name=r.text(
            "hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization/hl7:name"
        )
        or "",
        service_start=r.time("hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime/hl7:low"),
        service_stop=r.time("hl7:documentationOf/hl7:serviceEvent/hl7:effectiveTime/hl7:high"),
        practice_setting=r.code(".//hl7:representedOrganization/hl7:standardIndustryClassCode"),
        facility_type=r.code(f"{_ENCOUNTER}/hl7:location/hl7:healthCareFacility/hl7:code"),
        encounter_code=_attr(r.first(f"{_ENCOUNTER}/hl7:code"), "code"),
        encounter_id=(
            (visit.get("root", ""), visit.get("extension", ""))
            if (visit := r.first(f"{_ENCOUNTER}/hl7:id[@root and @extension]")) is not None
            else None
        ),
        encounter_start=r.time(f"{_ENCOUNTER}/hl7:effectiveTime/hl7:low"),
        encounter_end=r.time(f"{_ENCOUNTER}/hl7:effectiveTime/hl7:high"),
        self_presenting=bool(tree.xpath("/processing-instruction('xml-stylesheet')")),
    )
