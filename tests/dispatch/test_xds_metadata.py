"""XDS metadata derived from real CR-BIO headers: the DMP submission, ITI-57, ITI-18 and XDM METADATA.XML."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.xds.metadata import (
    GET_DOCUMENTS_QUERY,
    NS,
    RIM,
    STATUS_DELETED,
    availability_update,
    dmp_submission,
    entry_uuid,
    get_documents_query,
    submission_ids,
    xdm_metadata,
    xds_time,
)
from crbio.errors import PermanentSendError

OUTPUT = Path(__file__).resolve().parents[2] / "samples" / "output"
NOW = datetime(2024, 3, 6, 10, 0, 0, tzinfo=UTC)

TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_PATIENT = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
DE_UNIQUE = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_PATIENT = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
SS_UNIQUE = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"


@pytest.fixture
def lab() -> SenderContext:
    return SenderContext(
        laboratory_finess="920000015",
        laboratory_name="Laboratoire des Charmes",
        laboratory_oid="1.2.250.1.999.1",
        responsible_rpps="10100012342",
        responsible_name="CAMPARINI Marcel",
        software_name="crbio",
        software_version="0.1.0",
    )


def make_job(
    sample: str,
    *,
    channel: Channel = Channel.DMP,
    action: Action = Action.SUBMIT,
    metadata: Mapping[str, Any] | None = None,
    address: str = "dmp",
    previous: Mapping[str, Any] | None = None,
) -> Job:
    n3 = (OUTPUT / f"{sample}.n3.xml").read_bytes()
    header = read_header(n3)
    kind = RecipientKind.DMP if channel is Channel.DMP else RecipientKind.PROFESSIONAL
    delivery = Delivery(
        channel=channel,
        action=action,
        recipient=Recipient(kind, address),
        document_id=header.document_id,
        version=header.version,
        replaces=header.replaces,
        metadata=dict(metadata or {"confidentiality": [header.confidentiality]}),
    )
    return Job(delivery, 1, n3, (OUTPUT / f"{sample}.pdf").read_bytes(), previous)


def one(node: etree._Element, path: str) -> Any:
    found = node.xpath(path, namespaces=NS)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0]


def slot(node: etree._Element, name: str) -> list[str]:
    return [
        str(v) for v in node.xpath(f"rim:Slot[@name='{name}']/rim:ValueList/rim:Value/text()", namespaces=NS)
    ]


def code(entry: etree._Element, scheme: str) -> list[tuple[str, str, str]]:
    """(code, codingScheme, display) of every classification of ``scheme`` on ``entry``."""
    return [
        (
            c.get("nodeRepresentation"),
            slot(c, "codingScheme")[0],
            c.xpath("rim:Name/rim:LocalizedString/@value", namespaces=NS)[0],
        )
        for c in entry.xpath(f"rim:Classification[@classificationScheme='{scheme}']", namespaces=NS)
    ]


def external(node: etree._Element, scheme: str) -> str:
    return str(one(node, f"rim:ExternalIdentifier[@identificationScheme='{scheme}']/@value"))


def document_entry(request: etree._Element, job: Job) -> etree._Element:
    entry: etree._Element = one(
        request, f"rim:RegistryObjectList/rim:ExtrinsicObject[@id='{entry_uuid(job)}']"
    )
    return entry


def test_dmp_submission_of_01_biochimie_matches_the_header(lab: SenderContext) -> None:
    job = make_job("01-biochimie")
    header = job.header
    request = dmp_submission(job, lab, submission_time=NOW)
    assert request.tag == "{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0}SubmitObjectsRequest"
    doc = document_entry(request, job)
    assert doc.get("mimeType") == "text/xml"
    assert doc.get("objectType") == DOCUMENT_ENTRY
    assert code(doc, TYPE) == [("11502-2", "2.16.840.1.113883.6.1", "CR d'examens biologiques")]
    assert code(doc, CLASS) == [("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")]
    assert code(doc, FORMAT)[0][:2] == ("urn:ihe:lab:xd-lab:2008", "1.3.6.1.4.1.19376.1.2.3")
    assert code(doc, CONFIDENTIALITY) == [("N", "2.16.840.1.113883.5.25", "Normal")]
    assert code(doc, FACILITY) == [("SA25", "1.2.250.1.71.4.2.4", "Laboratoire de biologie médicale")]
    assert code(doc, PRACTICE) == [("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire")]
    # effectiveTime 20240104161000+0100, serviceEvent 08:10 → 16:05 +0100, all as UTC.
    assert slot(doc, "creationTime") == ["20240104151000"]
    assert slot(doc, "serviceStartTime") == ["20240104071000"]
    assert slot(doc, "serviceStopTime") == ["20240104150500"]
    assert slot(doc, "languageCode") == ["fr-FR"]
    assert slot(doc, "hash") == [hashlib.sha1(job.n3).hexdigest()]
    assert slot(doc, "size") == [str(len(job.n3))]
    assert slot(doc, "legalAuthenticator") == [
        "810100012342^CAMPARINI^Marcel^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    ]
    assert slot(doc, "sourcePatientId") == ["1234567890121^^^&1.2.250.1.999.1.2&ISO^PI"]
    assert slot(doc, "sourcePatientInfo") == ["PID-5|PAT-TROIS^DOMINIQUE^^^^^L", "PID-7|19790328", "PID-8|F"]
    assert one(doc, "rim:Name/rim:LocalizedString/@value") == header.title
    author = one(doc, f"rim:Classification[@classificationScheme='{DE_AUTHOR}']")
    assert slot(author, "authorPerson") == [
        "810100012342^CAMPARINI^Marcel^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    ]
    assert slot(author, "authorInstitution") == [
        "Laboratoire des Charmes^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1920000015"
    ]
    assert slot(author, "authorSpecialty") == [
        "G15_10/SM03^Médecin - Biologie médicale (SM)^1.2.250.1.213.1.1.4.5"
    ]
    cx = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    assert external(doc, DE_PATIENT) == cx
    assert external(doc, DE_UNIQUE) == "1.2.250.1.999.1.1.2024.1001.1" == header.document_id
    assert not slot(doc, "URI") and not slot(doc, "action")

    ids = submission_ids(job)
    package = one(request, f"rim:RegistryObjectList/rim:RegistryPackage[@id='{ids.submission_set}']")
    assert slot(package, "submissionTime") == ["20240306100000"]
    assert external(package, SS_PATIENT) == cx
    assert external(package, SS_SOURCE) == lab.laboratory_oid
    assert external(package, SS_UNIQUE) == job.submission_oid
    assert code(package, SS_CONTENT) == [("07", "1.2.250.1.213.2.2", "Consultation Soins Externes")]
    sender = one(package, f"rim:Classification[@classificationScheme='{SS_AUTHOR}']")
    assert slot(sender, "authorPerson") == [
        "810100012342^CAMPARINI^Marcel^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    ]
    assert slot(sender, "authorInstitution") == [
        "Laboratoire des Charmes^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^1920000015"
    ]
    one(
        request,
        f"rim:RegistryObjectList/rim:Classification[@classificationNode='{SS_NODE}']"
        f"[@classifiedObject='{ids.submission_set}']",
    )


def test_signature_entry_and_associations(lab: SenderContext) -> None:
    job = make_job("01-biochimie")
    ids = submission_ids(job)
    request = dmp_submission(job, lab, submission_time=NOW, signature=b"<signature/>")
    sig = one(request, f"rim:RegistryObjectList/rim:ExtrinsicObject[@id='{ids.signature}']")
    assert code(sig, CLASS)[0][:2] == ("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN")
    assert code(sig, TYPE)[0][:2] == ("E1762", "ASTM")
    assert code(sig, FORMAT)[0][:2] == ("http://www.w3.org/2000/09/xmldsig#", "URN")
    assert slot(sig, "languageCode") == ["art"]
    assert slot(sig, "hash") == [hashlib.sha1(b"<signature/>").hexdigest()]
    assert external(sig, DE_UNIQUE) == ids.signature_unique_id
    assert external(sig, DE_PATIENT) == external(document_entry(request, job), DE_PATIENT)
    associations = request.xpath("rim:RegistryObjectList/rim:Association", namespaces=NS)
    kinds = [
        (a.get("associationType").rsplit(":", 1)[-1], a.get("sourceObject"), a.get("targetObject"))
        for a in associations
    ]
    assert kinds == [
        ("HasMember", ids.submission_set, ids.document),
        ("HasMember", ids.submission_set, ids.signature),
        ("signs", ids.signature, ids.submission_set),
    ]
    for association in associations[:2]:
        assert slot(association, "SubmissionSetStatus") == ["Original"]
    # Every object id is a UUID, unique in the request.
    all_ids = request.xpath("//@id")
    assert len(all_ids) == len(set(all_ids)) and all(i.startswith("urn:uuid:") for i in all_ids)


def test_signing_while_building_gives_the_request_built_around_the_signature(lab: SenderContext) -> None:
    job = make_job("01-biochimie")
    seen: list[bytes] = []

    def sign(package: etree._Element) -> bytes:
        seen.append(etree.tostring(package, method="c14n", exclusive=True))
        return b"<signature/>"

    built_once = dmp_submission(job, lab, submission_time=NOW, sign=sign)
    around = dmp_submission(job, lab, submission_time=NOW, signature=b"<signature/>")
    assert etree.tostring(built_once) == etree.tostring(around)
    # The signer saw the SubmissionSet exactly as it is submitted.
    package = around.find(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}RegistryPackage")
    assert seen == [etree.tostring(package, method="c14n", exclusive=True)]


def test_replacement_of_08b_has_rplc_and_masking_codes(lab: SenderContext) -> None:
    metadata = {"confidentiality": ["N", "INVISIBLE_PATIENT", "MASQUE_PS"], "secret_connection": False}
    job = make_job("08b-diabete-v2", action=Action.REPLACE, metadata=metadata)
    assert job.delivery.replaces == "1.2.250.1.999.5.1.2024.5002.1"
    old = "urn:uuid:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    request = dmp_submission(job, lab, submission_time=NOW, replaced_entry_uuid=old)
    doc = document_entry(request, job)
    assert code(doc, CONFIDENTIALITY) == [
        ("N", "2.16.840.1.113883.5.25", "Normal"),
        ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient"),
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué aux professionnels de santé"),
    ]
    assert external(doc, DE_UNIQUE) == "1.2.250.1.999.5.1.2024.5002.2"
    assert external(doc, DE_PATIENT) == "149126748209303^^^&1.2.250.1.213.1.4.10&ISO^NH"
    assert code(doc, TYPE)[0][0] == "11502-2"
    assert slot(doc, "creationTime") == ["20240306082500"]  # 09:25 +0100
    assert slot(doc, "serviceStartTime") == ["20240305072000"]
    assert slot(doc, "sourcePatientId") == ["670004456021^^^&1.2.250.1.999.5.2&ISO^PI"]
    assert code(doc, PRACTICE)[0][0] == "AMBULATOIRE" and code(doc, FACILITY)[0][0] == "SA25"
    rplc = one(
        request,
        "rim:RegistryObjectList/rim:Association[@associationType='urn:ihe:iti:2007:AssociationType:RPLC']",
    )
    assert rplc.get("sourceObject") == entry_uuid(job)
    assert rplc.get("targetObject") == old


def test_entry_uuid_is_stable_across_retries_and_distinct_per_delivery(lab: SenderContext) -> None:
    first = make_job("01-biochimie")
    retry = Job(first.delivery, 5, first.n3, first.pdf)
    assert entry_uuid(first) == entry_uuid(retry)
    assert submission_ids(first) == submission_ids(retry)
    assert etree.tostring(dmp_submission(first, lab, submission_time=NOW)) == etree.tostring(
        dmp_submission(retry, lab, submission_time=NOW)
    )
    other = make_job("08b-diabete-v2")
    assert entry_uuid(other) != entry_uuid(first)
    assert entry_uuid(first).startswith("urn:uuid:")


def test_system_author_without_a_responsible_person() -> None:
    context = SenderContext("920000015", "Laboratoire des Charmes", "1.2.250.1.999.1", software_version="2.0")
    request = dmp_submission(make_job("01-biochimie"), context, submission_time=NOW)
    author = one(request, f"//rim:Classification[@classificationScheme='{SS_AUTHOR}']")
    assert slot(author, "authorPerson") == ["3920000015/crbio^crbio^2.0^^^^^^&1.2.250.1.71.4.2.1&ISO^U^^^RI"]


def test_no_ins_and_bad_codes_are_refused(lab: SenderContext) -> None:
    with pytest.raises(PermanentSendError) as caught:
        dmp_submission(make_job("13-identite-provisoire"), lab, submission_time=NOW)
    assert caught.value.code == "dispatch.dmp.no-ins"
    assert "PAT" not in str(caught.value)
    with pytest.raises(PermanentSendError) as caught:
        dmp_submission(
            make_job("01-biochimie", metadata={"confidentiality": ["N", "SECRET"]}), lab, submission_time=NOW
        )
    assert caught.value.code == "dispatch.xds.metadata"


def test_availability_update_deletes_the_target(lab: SenderContext) -> None:
    job = make_job("01-biochimie", action=Action.DELETE)
    target = "urn:uuid:11111111-2222-4333-8444-555555555555"
    request = availability_update(job, lab, submission_time=NOW, target_entry_uuid=target)
    ids = submission_ids(job)
    one(request, f"rim:RegistryObjectList/rim:RegistryPackage[@id='{ids.submission_set}']")
    assert not request.xpath("//rim:ExtrinsicObject", namespaces=NS)
    association = one(request, "rim:RegistryObjectList/rim:Association")
    assert association.get("associationType") == "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
    assert association.get("sourceObject") == ids.submission_set
    assert association.get("targetObject") == target
    assert slot(association, "OriginalStatus") == ["urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"]
    assert slot(association, "NewStatus") == [STATUS_DELETED] == ["urn:asip:ci-sis:2010:StatusType:Deleted"]


def test_get_documents_query() -> None:
    query = get_documents_query(unique_ids=["1.2.3", "1.2.4"])
    assert one(query, "rim:AdhocQuery/@id") == GET_DOCUMENTS_QUERY
    assert one(query, "query:ResponseOption/@returnType") == "LeafClass"
    assert slot(one(query, "rim:AdhocQuery"), "$XDSDocumentEntryUniqueId") == ["('1.2.3','1.2.4')"]
    by_uuid = get_documents_query(entry_uuids=["urn:uuid:x"])
    assert slot(one(by_uuid, "rim:AdhocQuery"), "$XDSDocumentEntryEntryUUID") == ["('urn:uuid:x')"]
    with pytest.raises(ValueError):
        get_documents_query()


def test_xds_time_is_utc() -> None:
    paris = read_header((OUTPUT / "01-biochimie.n3.xml").read_bytes()).effective_time
    assert xds_time(paris) == "20240104151000"
    assert xds_time(datetime(2024, 7, 1, 0, 30)) == "20240701003000"  # naive is taken as UTC


# -- IHE_XDM METADATA.XML ------------------------------------------------------------------


def parse(data: bytes) -> etree._Element:
    assert data.startswith(b"<?xml")
    root: etree._Element = etree.fromstring(data)
    return root


def test_xdm_metadata_for_a_professional(lab: SenderContext) -> None:
    job = make_job("01-biochimie", channel=Channel.MSSANTE, address="dr.martin@test.mssante.fr")
    data = xdm_metadata(job, lab, document_uri="DOC0001.XML", submission_time=NOW)
    root = parse(data)
    doc = document_entry(root, job)
    assert slot(doc, "URI") == ["DOC0001.XML"]
    assert slot(doc, "hash") == [hashlib.sha1(job.n3).hexdigest()]
    assert slot(doc, "size") == [str(len(job.n3))]
    assert slot(doc, "action") == []
    assert external(doc, DE_UNIQUE) == job.header.document_id
    assert external(doc, DE_PATIENT) == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    package = one(root, "rim:RegistryObjectList/rim:RegistryPackage")
    assert slot(package, "intendedRecipient") == ["||^^Internet^dr.martin@test.mssante.fr"]
    assert slot(package, "submissionTime") == ["20240306100000"]
    # One document, no signature entry, one HasMember.
    assert len(root.xpath("//rim:ExtrinsicObject", namespaces=NS)) == 1
    association = one(root, "rim:RegistryObjectList/rim:Association")
    assert association.get("targetObject") == entry_uuid(job)
    # Deterministic for the same job and time.
    assert xdm_metadata(job, lab, document_uri="DOC0001.XML", submission_time=NOW) == data


@pytest.mark.parametrize(("action", "flag"), [(Action.REPLACE, "C"), (Action.DELETE, "D")])
def test_xdm_metadata_action_slot(lab: SenderContext, action: Action, flag: str) -> None:
    job = make_job("08b-diabete-v2", channel=Channel.MSSANTE, action=action, address="x@test.mssante.fr")
    doc = document_entry(parse(xdm_metadata(job, lab, document_uri="DOC0001.XML", submission_time=NOW)), job)
    assert slot(doc, "action") == [flag]
    assert slot(doc, "URI") == ["DOC0001.XML"]


def test_xdm_metadata_without_ins_uses_the_local_id(lab: SenderContext) -> None:
    job = make_job("13-identite-provisoire", channel=Channel.MSSANTE, address="dr.x@test.mssante.fr")
    doc = document_entry(parse(xdm_metadata(job, lab, document_uri="DOC0001.XML", submission_time=NOW)), job)
    assert external(doc, DE_PATIENT) == "800135501^^^&1.2.250.1.999.3.2&ISO^PI"
    assert code(doc, FACILITY)[0][0] == "SA01" and code(doc, PRACTICE)[0][0] == "ETABLISSEMENT"
