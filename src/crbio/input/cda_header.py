"""The header of a CR-BIO CDA (N3 or N1) read into the report model's people and document facts.

The header is the same in the structured N3 and the PDF-only N1, so merging reads it alone when
the body cannot be read (an N1): the patient, to check it is the same one, and the laboratory
that issued the document.

Read from the header: the document's id, set id, version, replaced document, creation time and
confidentiality; the patient (INS when the document gives one, then the identity is qualified;
otherwise the identity is taken as provisional, the weakest status, since a CDA does not state
it), the IPP, INS traits, used names, address, telecoms, legal representatives; the laboratory
(custodian, with its practice setting from the legal authenticator or the service performer,
its COFRAC accreditation and its facility type from the encounter); the validating biologist
(legal authenticator) and the validation time; the prescriber (participant REF) and the
prescription time; copy recipients identified by RPPS; the order id; the encounter.

Not held by the model, hence not read: authors other than the biologist, authenticators,
informants, the specimen collector (participant PRF), other participants, the service event's
ids and times (rebuilt from the results), the patient's oppositions and DMP masking (they are
not in a CDA).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from lxml import etree

from crbio.codes import lookup
from crbio.identifiers import INS_OIDS, NATIONAL_PS_OID, check_ins_matricule, check_oid
from crbio.input.cda_common import HEADER_ERROR, LAB, Reading, child, children, squeeze
from crbio.model import (
    Confidentiality,
    DocumentInfo,
    Encounter,
    IdentityStatus,
    Ins,
    InstanceIdentifier,
    Laboratory,
    LegalRepresentative,
    Patient,
    Professional,
    Sex,
)

__all__ = ["Header", "read_header"]

COFRAC_OID = "1.2.250.1.213.6.3.1"
_MSSANTE_DOMAIN = "mssante.fr"


@dataclass(frozen=True, slots=True)
class Header:
    """What a CR-BIO header says, as the report model holds it.

    ``document`` holds the ids as read; the reader decides which of them a rebuilt document
    keeps. ``prescriber`` and ``encounter`` are None when the header lacks them (a full reading
    then refuses the document; merging an N1 does not need them).
    """

    document: DocumentInfo
    patient: Patient
    laboratory: Laboratory
    biologist: Professional
    validated_at: datetime
    prescriber: Professional | None
    prescribed_at: datetime | None
    encounter: Encounter | None
    copy_recipients: tuple[Professional, ...]
    order_id: InstanceIdentifier | None
    before_validation: bool


def read_header(reading: Reading) -> Header:
    """Read the header of the ClinicalDocument ``reading`` walks.

    Raises:
        InputError: an element the report model needs is missing or unusable (code
            ``input.cda.header``); the message names the element, never its content.
    """
    return _HeaderReader(reading).header()


class _HeaderReader:
    def __init__(self, reading: Reading) -> None:
        self.r = reading
        self.root = reading.root

    def fail(self, node: etree._Element, message: str) -> NoReturn:
        self.r.fail(node, message, code=HEADER_ERROR)

    def need(self, *path: str) -> etree._Element:
        """The element down a path from ClinicalDocument; refuse the document when it is missing."""
        node: etree._Element = self.root
        for name in path:
            found = child(node, name)
            if found is None:
                self.fail(node, f"has no {name} (required)")
            node = found
        return node

    # -- document ---------------------------------------------------------------------------------

    def header(self) -> Header:
        legal = self.need("legalAuthenticator")
        validated_at = self.r.time(child(legal, "time"))
        if validated_at is None:
            self.fail(legal, "has no time: the validation time is required")
        prescriber, prescribed_at = self.prescriber()
        return Header(
            document=self.document(),
            patient=self.patient(),
            laboratory=self.laboratory(),
            biologist=self.biologist(legal),
            validated_at=validated_at,
            prescriber=prescriber,
            prescribed_at=prescribed_at,
            encounter=self.encounter(),
            copy_recipients=self.copy_recipients(),
            order_id=self.identifier(child(self.root, "inFulfillmentOf", "order", "id")),
            before_validation=any(
                status.get("code") == "active"
                for status in self.root.iterfind(
                    f"{{*}}documentationOf/{{*}}serviceEvent/{{{LAB}}}statusCode"
                )
            ),
        )

    def document(self) -> DocumentInfo:
        doc_id = self.need("id")
        set_id = child(self.root, "setId")
        version = child(self.root, "versionNumber")
        number = 1
        if version is not None and version.get("value"):
            try:
                number = int(version.get("value", ""))
            except ValueError:
                self.fail(version, "@value is not a whole number")
            if number < 1:
                self.fail(version, "@value must be 1 or more")
        parent = child(self.root, "relatedDocument", "parentDocument", "id")
        related = child(self.root, "relatedDocument")
        if related is not None and related.get("typeCode") not in (None, "RPLC"):
            self.r.omit(related, "a relatedDocument other than RPLC (the CI-SIS knows only RPLC)")
            parent = None
        confidentiality = child(self.root, "confidentialityCode")
        level = confidentiality.get("code", "N") if confidentiality is not None else "N"
        if confidentiality is not None and level not in {c.value for c in Confidentiality}:
            self.fail(confidentiality, "@code must be N, R or V")
        return DocumentInfo(
            id=self.oid_of(doc_id),
            set_id=self.oid_of(set_id) if set_id is not None else None,
            version=number,
            replaces=self.oid_of(parent) if parent is not None else None,
            created_at=self.r.time(child(self.root, "effectiveTime")),
            confidentiality=Confidentiality(level),
        )

    def oid_of(self, node: etree._Element) -> str | None:
        """A document identifier: crbio's documents are identified by an OID root alone.

        An identifier with an extension, or whose root is not an OID (a UUID), cannot be kept as
        a DMP uniqueId; None then, and the reader refuses to keep or replace it.
        """
        root = str(node.get("root") or "")
        if node.get("extension") or check_oid(root) is not None:
            return None
        return root

    def identifier(self, node: etree._Element | None) -> InstanceIdentifier | None:
        if node is None or not node.get("root"):
            return None
        return InstanceIdentifier(self.r.uid(node, "root"), node.get("extension") or None)

    # -- patient ----------------------------------------------------------------------------------

    def patient(self) -> Patient:
        role = self.need("recordTarget", "patientRole")
        person = child(role, "patient")
        if person is None:
            self.fail(role, "has no patient (required)")
        ins: Ins | None = None
        ipp: InstanceIdentifier | None = None
        for node in children(role, "id"):
            root = node.get("root", "")
            if root in INS_OIDS:
                matricule = node.get("extension", "")
                reason = check_ins_matricule(matricule)
                if reason:
                    self.fail(node, f"INS matricule: {reason}")
                if ins is None:
                    ins = Ins(matricule=matricule, oid=root)
                else:
                    self.r.omit(node, "a second INS (the model holds one)")
            elif root and ipp is None:
                ipp = InstanceIdentifier(self.r.uid(node, "root"), node.get("extension") or None)
            elif root:
                self.r.omit(node, "a further local patient identifier (the model holds the IPP only)")
        if ipp is None:
            self.fail(role, "has no local patient identifier (IPP)")
        name = child(person, "name")
        if name is None:
            self.fail(person, "has no name (required)")
        names = _Names(name)
        if not names.birth_family:
            self.fail(name, "has no family name")
        gender = child(person, "administrativeGenderCode")
        code = gender.get("code") if gender is not None else None
        sex = Sex(code) if code in ("M", "F") else Sex.UNKNOWN
        birth_date = self.r.date(child(person, "birthTime"))
        if birth_date is None:
            # An INS trait the structuration minimale requires even without an INS.
            self.fail(person, "has no birth date (birthTime/@value)")
        place = child(person, "birthplace", "place", "addr")
        birthplace_code = (
            squeeze("".join(county.itertext())) or None
            if (county := child(place, "county")) is not None
            else None
        )
        birthplace_name = (
            squeeze("".join(city.itertext())) or None if (city := child(place, "city")) is not None else None
        )
        if ins is not None:
            # The INS is written only with every INS trait (RNIV); a document that breaks the
            # rule cannot be re-emitted as it is.
            missing = [
                label
                for label, present in (
                    ("birth family name (qualifier BR)", names.qualified_family),
                    ("first birth given name (qualifier BR)", names.qualified_first_given),
                    ("sex", sex is not Sex.UNKNOWN),
                    ("birth date", birth_date is not None),
                    ("birthplace code", birthplace_code is not None),
                )
                if not present
            ]
            if missing:
                self.fail(person, "the INS is given without the INS traits: " + ", ".join(missing))
        return Patient(
            ipp=ipp,
            identity_status=IdentityStatus.QUALIFIED if ins is not None else IdentityStatus.PROVISIONAL,
            birth_family_name=names.birth_family,
            first_birth_given_name=names.first_given,
            birth_given_names=names.given,
            sex=sex,
            birth_date=birth_date,
            ins=ins,
            birthplace_code=birthplace_code,
            birthplace_name=birthplace_name,
            used_family_name=names.used_family,
            used_given_name=names.used_given,
            address=self.r.address(child(role, "addr")),
            telecoms=self.r.telecoms(role),
            legal_representatives=self.guardians(person),
        )

    def guardians(self, person: etree._Element) -> tuple[LegalRepresentative, ...]:
        guardians = []
        for guardian in children(person, "guardian"):
            if child(guardian, "guardianPerson") is None:
                self.r.omit(guardian, "a guardian organisation (the model holds persons)")
                continue
            name = self.r.person_name(child(guardian, "guardianPerson", "name"))
            if name is None:
                self.fail(guardian, "has no name with a family name")
            guardians.append(
                LegalRepresentative(name, self.r.address(child(guardian, "addr")), self.r.telecoms(guardian))
            )
        return tuple(guardians)

    # -- laboratory and professionals -------------------------------------------------------------

    def finess(self, organization: etree._Element) -> str:
        finess = self.r.finess(organization)
        if finess is None:
            self.fail(organization, "has no FINESS identifier (national structure id 1 + FINESS)")
        return finess

    def rpps(self, entity: etree._Element) -> str:
        rpps = self.r.rpps(entity)
        if rpps is None:
            self.fail(entity, "the professional has no RPPS identifier (national PS id 8 + RPPS)")
        return rpps

    def laboratory(self) -> Laboratory:
        organization = self.need("custodian", "assignedCustodian", "representedCustodianOrganization")
        name = squeeze("".join(n.itertext())) if (n := child(organization, "name")) is not None else ""
        if not name:
            self.fail(organization, "has no name (required)")
        address = self.r.address(child(organization, "addr")) or self.r.address(
            child(self.root, "legalAuthenticator", "assignedEntity", "representedOrganization", "addr")
        )
        if address is None:
            self.fail(organization, "has no address (required)")
        setting = None
        for path in (
            ("legalAuthenticator", "assignedEntity", "representedOrganization"),
            ("documentationOf", "serviceEvent", "performer", "assignedEntity", "representedOrganization"),
            ("author", "assignedAuthor", "representedOrganization"),
        ):
            setting = self.r.code(child(child(self.root, *path), "standardIndustryClassCode"))
            if setting is not None:
                break
        if setting is None:
            self.fail(organization, "no practice setting (standardIndustryClassCode) in the header")
        responsible = child(
            self.root,
            "componentOf",
            "encompassingEncounter",
            "responsibleParty",
            "assignedEntity",
            "representedOrganization",
        )
        accreditation = None
        for node in children(responsible, "id") if responsible is not None else []:
            if node.get("root") == COFRAC_OID and node.get("extension"):
                accreditation = node.get("extension")
        facility = self.r.code(
            child(self.root, "componentOf", "encompassingEncounter", "location", "healthCareFacility", "code")
        ) or lookup("facility_type", "SA25")
        assert facility is not None
        doc_id = child(self.root, "id")
        root_oid = doc_id.get("root", "") if doc_id is not None else ""
        return Laboratory(
            finess=self.finess(organization),
            name=name,
            address=address,
            telecoms=self.r.telecoms(organization),
            # The lab's own OID root is not in a CDA; its documents' arc stands in (it only names
            # the lab's identifiers, none of which a rebuilt document takes from it).
            oid=root_oid.rpartition(".")[0] or root_oid,
            practice_setting=setting,
            facility_type=facility,
            accreditation=accreditation,
        )

    def professional(
        self, entity: etree._Element, person: etree._Element | None, organization: str | None = None
    ) -> Professional:
        name = self.r.person_name(child(person, "name"))
        if name is None:
            self.fail(entity, "the professional has no name with a family name")
        telecoms = self.r.telecoms(entity)
        mssante = next(
            (
                t.address
                for t in telecoms
                if t.scheme == "mailto" and t.address.lower().endswith(_MSSANTE_DOMAIN)
            ),
            None,
        )
        return Professional(
            rpps=self.rpps(entity),
            name=name,
            specialty=self.r.code(child(entity, "code")),
            address=self.r.address(child(entity, "addr")),
            telecoms=tuple(
                t for t in telecoms if not (mssante and t.scheme == "mailto" and t.address == mssante)
            ),
            mssante=mssante,
            organization=organization,
        )

    def biologist(self, legal: etree._Element) -> Professional:
        entity = child(legal, "assignedEntity")
        if entity is None:
            self.fail(legal, "has no assignedEntity (required)")
        return self.professional(entity, child(entity, "assignedPerson"))

    def prescriber(self) -> tuple[Professional | None, datetime | None]:
        for participant in children(self.root, "participant"):
            if participant.get("typeCode") != "REF":
                continue
            entity = child(participant, "associatedEntity")
            if entity is None:
                self.fail(participant, "has no associatedEntity")
            organization = child(entity, "scopingOrganization", "name")
            return (
                self.professional(
                    entity,
                    child(entity, "associatedPerson"),
                    squeeze("".join(organization.itertext())) or None if organization is not None else None,
                ),
                self.r.time(child(participant, "time")),
            )
        return None, None

    def copy_recipients(self) -> tuple[Professional, ...]:
        recipients = []
        for recipient in children(self.root, "informationRecipient"):
            entity = child(recipient, "intendedRecipient")
            if entity is None:
                continue
            if (
                not any(i.get("root") == NATIONAL_PS_OID for i in children(entity, "id"))
                or child(entity, "informationRecipient") is None
            ):
                self.r.omit(recipient, "a recipient not identified as a professional by RPPS")
                continue
            organization = child(entity, "receivedOrganization", "name")
            recipients.append(
                self.professional(
                    entity,
                    child(entity, "informationRecipient"),
                    squeeze("".join(organization.itertext())) or None if organization is not None else None,
                )
            )
        return tuple(recipients)

    def encounter(self) -> Encounter | None:
        encounter = child(self.root, "componentOf", "encompassingEncounter")
        if encounter is None:
            return None
        kind = self.r.code(child(encounter, "code"))
        start = self.r.time(child(encounter, "effectiveTime"))
        if kind is None or start is None:
            return None  # a full reading refuses it; merging an N1 does not need it
        return Encounter(kind=kind, start=start, id=self.identifier(child(encounter, "id")))


class _Names:
    """The patient's names: birth names (qualifier BR and the unqualified given names), used names (CL)."""

    def __init__(self, name: etree._Element) -> None:
        def parts(tag: str) -> list[tuple[str | None, str]]:
            return [(n.get("qualifier"), squeeze("".join(n.itertext()))) for n in children(name, tag)]

        families = parts("family")
        givens = parts("given")
        birth = [t for q, t in families if q == "BR" and t]
        plain_families = [t for q, t in families if not q and t]
        self.qualified_family = bool(birth)
        self.birth_family = (birth or plain_families or [t for _, t in families if t] or [""])[0]
        used = [t for q, t in families if q == "CL" and t]
        self.used_family = used[0] if used else None
        first = [t for q, t in givens if q == "BR" and t]
        self.qualified_first_given = bool(first)
        plain = [t for q, t in givens if not q and t]
        self.given = " ".join(plain) or (first[0] if first else "")
        self.first_given = first[0] if first else (self.given.split(" ")[0] if self.given else "")
        used_given = [t for q, t in givens if q == "CL" and t]
        self.used_given = used_given[0] if used_given else None
