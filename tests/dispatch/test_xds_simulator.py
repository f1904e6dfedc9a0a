"""The XDS.b simulator, driven over real HTTPS with requests built by hand in this file.

Everything a DMP client sends is written here from the specifications (MTOM/XOP package,
SOAP 1.2 + WS-Addressing envelope, signed VIHF, ebRIM SubmitObjectsRequest, XAdES manifest
signature), independently of crbio's own client, so the two readings check each other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree
from signxml import XMLSigner, methods
from signxml.algorithms import CanonicalizationMethod

from conftest import ROOT
from crbio.simulators.base import Fault, FaultPlan
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import issue_certificate, make_test_pki
from crbio.simulators.xds import APPROVED, ARCHIVED, DELETED, DEPRECATED, XdsSimulator

OUTPUT = ROOT / "samples" / "output"

SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
XOP = "http://www.w3.org/2004/08/xop/include"
XDSB = "urn:ihe:iti:xds-b:2007"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

ITI41 = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ITI18 = "urn:ihe:iti:2007:RegistryStoredQuery"
ITI57 = "urn:ihe:iti:2010:UpdateDocumentSet"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"

DE = {
    "classCode": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "typeCode": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "formatCode": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "healthcareFacilityTypeCode": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practiceSettingCode": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "confidentialityCode": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
}
DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
UPDATE_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"

LAB_FINESS_ID = "1920000015"
LAB_INSTITUTION = f"Laboratoire des Charmes^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{LAB_FINESS_ID}"
OTHER_PATIENT = "180012B01234593^^^&1.2.250.1.213.1.4.10&ISO^NH"  # a valid INS of another patient
Code = tuple[str, str, str]  # code, codingScheme, display


# ------------------------------------------------------------------------------------------------
# Building requests
# ------------------------------------------------------------------------------------------------


def cda_facts(content: bytes) -> dict[str, Any]:
    """What the metadata of a CR-BIO is derived from, read from its header."""
    root = etree.fromstring(content)
    ns = {"h": HL7}
    ins = root.xpath(
        "h:recordTarget/h:patientRole/h:id[starts-with(@root, '1.2.250.1.213.1.4.')]", namespaces=ns
    )[0]
    return {
        "unique_id": root.find("h:id", ns).get("root"),
        "type": (root.find("h:code", ns).get("code"), root.find("h:code", ns).get("codeSystem")),
        "confidentiality": root.find("h:confidentialityCode", ns).get("code"),
        "patient": f"{ins.get('extension')}^^^&{ins.get('root')}&ISO^NH",
    }


def sample(name: str) -> bytes:
    return (OUTPUT / f"{name}.n3.xml").read_bytes()


# Fixed prefixes everywhere: a signed subtree keeps its prefixes when it moves into the envelope.
NSMAP = {
    "soap": SOAP,
    "wsa": WSA,
    "wsse": WSSE,
    "saml": SAML,
    "ds": DS,
    "xades": XADES,
    "xop": XOP,
    "xdsb": XDSB,
    "lcm": LCM,
    "rim": RIM,
    "query": QUERY,
    "hl7": HL7,
    "xsi": XSI,
}


def E(
    tag: str, attrib: dict[str, str] | None = None, *children: etree._Element, text: str | None = None
) -> Any:
    element = etree.Element(tag, attrib or {}, nsmap=NSMAP)
    element.extend(children)
    element.text = text
    return element


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def slot(name: str, *values: str) -> Any:
    return E(
        q(RIM, "Slot"),
        {"name": name},
        E(q(RIM, "ValueList"), None, *(E(q(RIM, "Value"), text=v) for v in values)),
    )


def name(text: str) -> Any:
    return E(q(RIM, "Name"), None, E(q(RIM, "LocalizedString"), {"value": text}))


def classification(scheme: str, owner: str, code: Code) -> Any:
    return E(
        q(RIM, "Classification"),
        {
            "id": f"cl-{uuid.uuid4().hex[:12]}",
            "classificationScheme": scheme,
            "classifiedObject": owner,
            "nodeRepresentation": code[0],
        },
        slot("codingScheme", code[1]),
        name(code[2]),
    )


def author(scheme: str, owner: str, **slots: str) -> Any:
    return E(
        q(RIM, "Classification"),
        {
            "id": f"au-{uuid.uuid4().hex[:12]}",
            "classificationScheme": scheme,
            "classifiedObject": owner,
            "nodeRepresentation": "",
        },
        *(slot(key, value) for key, value in slots.items()),
    )


def external_id(scheme: str, owner: str, value: str, label: str) -> Any:
    return E(
        q(RIM, "ExternalIdentifier"),
        {
            "id": f"ei-{uuid.uuid4().hex[:12]}",
            "identificationScheme": scheme,
            "registryObject": owner,
            "value": value,
        },
        name(label),
    )


@dataclass
class Entry:
    """A DocumentEntry and its document; the fields are the metadata, editable per test."""

    content: bytes
    id: str = "Document01"
    unique_id: str = ""
    patient: str = ""
    class_code: Code = ("10", "1.2.250.1.213.1.1.4.1", "Compte rendu")
    type_code: Code = ("11502-2", "2.16.840.1.113883.6.1", "CR d'examens biologiques")
    format_code: Code = ("urn:ihe:lab:xd-lab:2008", "1.3.6.1.4.1.19376.1.2.3", "CR-BIO structuré")
    facility: Code = ("SA25", "1.2.250.1.71.4.2.4", "Laboratoire de biologie médicale")
    practice: Code = ("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire")
    confidentiality: list[Code] = field(default_factory=lambda: [("N", "2.16.840.1.113883.5.25", "Normal")])
    specialty: str = "G15_10/SM03^Médecin - Biologie médicale (SM)^1.2.250.1.213.1.1.4.5"
    mime_type: str = "text/xml"
    extra_slots: dict[str, str] = field(default_factory=dict)
    language: str = "fr-FR"

    @classmethod
    def of(cls, content: bytes, **changes: Any) -> Entry:
        facts = cda_facts(content)
        values: dict[str, Any] = {"unique_id": facts["unique_id"], "patient": facts["patient"]}
        values["confidentiality"] = [(facts["confidentiality"], "2.16.840.1.113883.5.25", "")]
        values.update(changes)
        return cls(content, **values)

    def element(self) -> Any:
        eo = E(q(RIM, "ExtrinsicObject"), {"id": self.id, "mimeType": self.mime_type, "objectType": STABLE})
        slots = {
            "creationTime": "20240104151000",
            "languageCode": self.language,
            "sourcePatientId": "1234567890121^^^&1.2.250.1.999.1.2&ISO^PI",
            "serviceStartTime": "20240104073000",
            **self.extra_slots,
        }
        eo.extend(slot(k, v) for k, v in slots.items())
        eo.append(name("Compte rendu d'examens biologiques"))
        eo.append(
            author(
                DE_AUTHOR,
                self.id,
                authorPerson="810100012342^CAMPARINI^Marcel^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS",
                authorInstitution=LAB_INSTITUTION,
                authorSpecialty=self.specialty,
            )
        )
        eo.append(classification(DE["classCode"], self.id, self.class_code))
        eo.append(classification(DE["typeCode"], self.id, self.type_code))
        eo.append(classification(DE["formatCode"], self.id, self.format_code))
        eo.append(classification(DE["healthcareFacilityTypeCode"], self.id, self.facility))
        eo.append(classification(DE["practiceSettingCode"], self.id, self.practice))
        for code in self.confidentiality:
            eo.append(classification(DE["confidentialityCode"], self.id, code))
        eo.append(external_id(DE_PATIENT_ID, self.id, self.patient, "XDSDocumentEntry.patientId"))
        eo.append(external_id(DE_UNIQUE_ID, self.id, self.unique_id, "XDSDocumentEntry.uniqueId"))
        return eo


def signature_entry(content: bytes, unique_id: str, patient: str) -> Entry:
    return Entry(
        content,
        id="Signature01",
        unique_id=unique_id,
        patient=patient,
        class_code=("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN", "Digital Signature"),
        type_code=("E1762", "ASTM", "Full Document"),
        format_code=("http://www.w3.org/2000/09/xmldsig#", "URN", "Default Signature Style"),
        language="art",
    )


def c14n(element: Any) -> bytes:
    data: bytes = etree.tostring(element, method="c14n", exclusive=True)
    return data


def xades(pki: Pki, documents: dict[str, bytes], submission_uid: str, signature_id: str) -> bytes:
    """An IHE DSG submission-set signature: a manifest of the documents, XAdES signed properties."""
    signature = E(q(DS, "Signature"), {"Id": signature_id})
    signed_info = etree.SubElement(signature, q(DS, "SignedInfo"))
    etree.SubElement(signed_info, q(DS, "CanonicalizationMethod"), Algorithm=EXC_C14N)
    etree.SubElement(
        signed_info, q(DS, "SignatureMethod"), Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    )
    value = etree.SubElement(signature, q(DS, "SignatureValue"))
    cert = x509.load_pem_x509_certificate(pki.sign_cert.read_bytes())
    key_info = etree.SubElement(signature, q(DS, "KeyInfo"))
    etree.SubElement(
        etree.SubElement(key_info, q(DS, "X509Data")), q(DS, "X509Certificate")
    ).text = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    properties = etree.SubElement(etree.SubElement(signature, q(DS, "Object")), q(DS, "SignatureProperties"))
    etree.SubElement(
        properties, q(DS, "SignatureProperty"), Id="purposeOfSignature", Target=f"#{signature_id}"
    ).text = "1.2.840.10065.1.12.1.14"
    manifest = etree.SubElement(
        etree.SubElement(signature, q(DS, "Object")), q(DS, "Manifest"), Id="IHEManifest"
    )

    def reference(
        parent: Any, uri: str, digest: bytes, *, kind: str | None = None, transform: bool = False
    ) -> None:
        ref = etree.SubElement(parent, q(DS, "Reference"), URI=uri)
        if kind:
            ref.set("Type", kind)
        if transform:
            etree.SubElement(
                etree.SubElement(ref, q(DS, "Transforms")), q(DS, "Transform"), Algorithm=EXC_C14N
            )
        etree.SubElement(ref, q(DS, "DigestMethod"), Algorithm="http://www.w3.org/2001/04/xmlenc#sha256")
        etree.SubElement(ref, q(DS, "DigestValue")).text = base64.b64encode(
            hashlib.sha256(digest).digest()
        ).decode()

    reference(manifest, f"urn:oid:{submission_uid}", b"")
    for unique_id, content in documents.items():
        reference(manifest, f"urn:oid:{unique_id}", content)
    qualifying = etree.SubElement(
        etree.SubElement(signature, q(DS, "Object")),
        q(XADES, "QualifyingProperties"),
        Target=f"#{signature_id}",
    )
    signed_properties = etree.SubElement(qualifying, q(XADES, "SignedProperties"), Id="SignedProperties")
    etree.SubElement(
        etree.SubElement(signed_properties, q(XADES, "SignedSignatureProperties")), q(XADES, "SigningTime")
    ).text = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    reference(signed_info, "#IHEManifest", c14n(manifest), kind=f"{DS}Manifest", transform=True)
    reference(
        signed_info,
        "#SignedProperties",
        c14n(signed_properties),
        kind="http://uri.etsi.org/01903#SignedProperties",
        transform=True,
    )
    key = serialization.load_pem_private_key(pki.sign_key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    value.text = base64.b64encode(key.sign(c14n(signed_info), padding.PKCS1v15(), hashes.SHA256())).decode()
    data: bytes = etree.tostring(signature, xml_declaration=True, encoding="UTF-8")
    return data


VIHF_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
VIHF_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"


def vihf(
    pki: Pki,
    patient: str,
    *,
    drop: tuple[str, ...] = (),
    attributes: dict[str, str] | None = None,
    signer: tuple[bytes, bytes] | None = None,
    issuer: str | None = None,
    not_on_or_after: datetime | None = None,
) -> Any:
    """A VIHF for an automated feed (no CPS), signed with the SIGN certificate."""
    cert_pem, key_pem = signer or (pki.sign_cert.read_bytes(), pki.sign_key.read_bytes())
    cert = x509.load_pem_x509_certificate(cert_pem)
    now = datetime.now(UTC)
    assertion_id = f"_{uuid.uuid4().hex}"
    assertion = E(
        q(SAML, "Assertion"),
        {"ID": assertion_id, "Version": "2.0", "IssueInstant": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    assertion.append(
        E(
            q(SAML, "Issuer"),
            {"Format": "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"},
            text=issuer if issuer is not None else cert.subject.rfc4514_string(),
        )
    )
    assertion.append(E(q(DS, "Signature"), {"Id": "placeholder"}))
    assertion.append(E(q(SAML, "Subject"), None, E(q(SAML, "NameID"), text=f"1{LAB_FINESS_ID}/RESPONSABLE")))
    conditions = {"NotBefore": (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    conditions["NotOnOrAfter"] = (not_on_or_after or now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assertion.append(E(q(SAML, "Conditions"), conditions))
    assertion.append(
        E(
            q(SAML, "AuthnStatement"),
            {"AuthnInstant": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
            E(
                q(SAML, "AuthnContext"),
                None,
                E(q(SAML, "AuthnContextClassRef"), text="urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"),
            ),
        )
    )
    values: dict[str, Any] = {
        "VIHF_Version": "3.0",
        "Authentification_Mode": "INDIRECTE",
        "Identifiant_Structure": f"1{LAB_FINESS_ID}",
        "Secteur_Activite": "SA25^1.2.250.1.71.4.2.4",
        "urn:oasis:names:tc:xspa:1.0:subject:subject-id": "crbio, laboratoire",
        VIHF_ROLE: ("AUTOMATE", "1.2.250.1.213.1.1.4.6", "Automate", "Role"),
        "urn:oasis:names:tc:xacml:2.0:resource:resource-id": patient,
        "Ressource_URN": "urn:dmp",
        VIHF_PURPOSE: ("normal", "1.2.250.1.213.1.1.4.248", "Accès normal", "PurposeOfUse"),
        "LPS_Nom": "crbio",
        "LPS_Version": "0.1.0",
        "LPS_ID_HOMOLOGATION_DMP": "HOMOLOGATION-TEST",
    }
    values.update(attributes or {})
    statement = etree.SubElement(assertion, q(SAML, "AttributeStatement"))
    for attribute_name, value in values.items():
        if attribute_name in drop:
            continue
        attribute = etree.SubElement(statement, q(SAML, "Attribute"), Name=attribute_name)
        attribute_value = etree.SubElement(attribute, q(SAML, "AttributeValue"))
        if isinstance(value, tuple):
            code, system, display, tag = value
            coded = etree.SubElement(
                attribute_value, q(HL7, tag), code=code, codeSystem=system, displayName=display
            )
            coded.set(q(XSI, "type"), "CE")
        else:
            attribute_value.text = value
    signer_ = XMLSigner(
        method=methods.enveloped,
        signature_algorithm="rsa-sha256",
        digest_algorithm="sha256",
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    return signer_.sign(assertion, key=key_pem, cert=cert_pem, reference_uri=assertion_id)


def envelope(action: str, to: str, body: Any, assertion: Any | None) -> bytes:
    header = E(q(SOAP, "Header"))
    header.append(E(q(WSA, "Action"), {q(SOAP, "mustUnderstand"): "true"}, text=action))
    header.append(E(q(WSA, "MessageID"), text=f"urn:uuid:{uuid.uuid4()}"))
    header.append(E(q(WSA, "To"), text=to))
    if assertion is not None:
        header.append(E(q(WSSE, "Security"), {q(SOAP, "mustUnderstand"): "true"}, assertion))
    data: bytes = etree.tostring(E(q(SOAP, "Envelope"), None, header, E(q(SOAP, "Body"), None, body)))
    return data


def mtom(soap: bytes, parts: dict[str, bytes], action: str) -> tuple[str, bytes]:
    boundary = f"MIMEBoundary_{uuid.uuid4().hex}"
    chunks = [
        f'--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type="application/soap+xml"\r\n'
        "Content-Transfer-Encoding: binary\r\nContent-ID: <root.message@crbio.test>\r\n\r\n".encode()
        + soap
        + b"\r\n"
    ]
    for cid, content in parts.items():
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
            f"Content-ID: <{cid}>\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = (
        f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; '
        f'start="<root.message@crbio.test>"; start-info="application/soap+xml"; action="{action}"'
    )
    return content_type, b"".join(chunks)


@dataclass
class Submission:
    """An ITI-41 request: documents, submission set, signature, associations, VIHF."""

    entries: list[Entry]
    submission_uid: str = field(default_factory=lambda: f"2.25.{uuid.uuid4().int}")
    signed: bool = True
    signs_association: bool = True
    replaces: str | None = None  # entryUUID of the replaced entry
    replacement_type: str = RPLC
    vihf_patient: str | None = None
    vihf_options: dict[str, Any] = field(default_factory=dict)
    signature_documents: dict[str, bytes] | None = None  # what the manifest says, when not the truth
    as_mtom: bool = True
    missing_part: bool = False

    @property
    def patient(self) -> str:
        return self.entries[0].patient

    def body(self, pki: Pki) -> tuple[Any, dict[str, bytes]]:
        entries = list(self.entries)
        if self.signed:
            documents = self.signature_documents or {e.unique_id: e.content for e in self.entries}
            signature_uid = f"2.25.{uuid.uuid4().int}"
            content = xades(pki, documents, self.submission_uid, signature_uid)
            entries.append(signature_entry(content, signature_uid, self.patient))
        objects = E(q(RIM, "RegistryObjectList"))
        objects.extend(e.element() for e in entries)
        package = E(q(RIM, "RegistryPackage"), {"id": "SubmissionSet01"})
        package.append(slot("submissionTime", datetime.now(UTC).strftime("%Y%m%d%H%M%S")))
        package.append(name("Compte rendu de biologie"))
        package.append(
            author(
                SS_AUTHOR,
                "SubmissionSet01",
                authorPerson="10100012342^RESPONSABLE^Test^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^RPPS",
                authorInstitution=LAB_INSTITUTION,
            )
        )
        package.append(
            classification(SS_CONTENT_TYPE, "SubmissionSet01", ("07", "1.2.250.1.213.2.2", "Consultation"))
        )
        package.append(
            external_id(SS_UNIQUE_ID, "SubmissionSet01", self.submission_uid, "XDSSubmissionSet.uniqueId")
        )
        package.append(
            external_id(SS_SOURCE_ID, "SubmissionSet01", "1.2.250.1.999.77", "XDSSubmissionSet.sourceId")
        )
        package.append(
            external_id(SS_PATIENT_ID, "SubmissionSet01", self.patient, "XDSSubmissionSet.patientId")
        )
        objects.append(package)
        objects.append(
            E(
                q(RIM, "Classification"),
                {"id": "cl-ss", "classifiedObject": "SubmissionSet01", "classificationNode": SS_NODE},
            )
        )
        for index, entry in enumerate(entries):
            objects.append(
                E(
                    q(RIM, "Association"),
                    {
                        "id": f"as-member-{index}",
                        "associationType": HAS_MEMBER,
                        "sourceObject": "SubmissionSet01",
                        "targetObject": entry.id,
                    },
                    slot("SubmissionSetStatus", "Original"),
                )
            )
        if self.signed and self.signs_association:
            objects.append(
                E(
                    q(RIM, "Association"),
                    {
                        "id": "as-signs",
                        "associationType": SIGNS,
                        "sourceObject": "Signature01",
                        "targetObject": "SubmissionSet01",
                    },
                )
            )
        if self.replaces:
            objects.append(
                E(
                    q(RIM, "Association"),
                    {
                        "id": "as-rplc",
                        "associationType": self.replacement_type,
                        "sourceObject": self.entries[0].id,
                        "targetObject": self.replaces,
                    },
                )
            )
        request = E(
            q(XDSB, "ProvideAndRegisterDocumentSetRequest"),
            None,
            E(q(LCM, "SubmitObjectsRequest"), None, objects),
        )
        parts: dict[str, bytes] = {}
        for index, entry in enumerate(entries):
            cid = f"doc{index}.{uuid.uuid4().hex[:8]}@crbio.test"
            document = E(q(XDSB, "Document"), {"id": entry.id})
            if self.as_mtom:
                document.append(E(q(XOP, "Include"), {"href": f"cid:{cid}"}))
                if not (self.missing_part and index == 0):
                    parts[cid] = entry.content
            else:
                document.text = base64.b64encode(entry.content).decode()
            request.append(document)
        return request, parts

    def http(self, pki: Pki, url: str) -> tuple[str, bytes]:
        body, parts = self.body(pki)
        assertion = vihf(pki, self.vihf_patient or self.patient, **self.vihf_options)
        soap = envelope(ITI41, url, body, assertion)
        if not self.as_mtom:
            return f'application/soap+xml; charset=UTF-8; action="{ITI41}"', soap
        return mtom(soap, parts, ITI41)


@dataclass
class Answer:
    status_code: int
    status: str | None  # Success / Failure (last segment), None for a fault
    errors: list[str]
    fault: str | None  # Code/Subcode value of a SOAP fault
    root: Any
    mtom: bool
    reason: str = ""  # a fault's reason, or the codeContexts of the errors


def read_answer(response: httpx.Response) -> Answer:
    content_type = response.headers.get("content-type", "")
    mtom_answer = content_type.startswith("multipart/related")
    data = response.content
    if mtom_answer:
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + data
        )
        data = next(message.iter_parts()).get_payload(decode=True)
    root = etree.fromstring(data)
    body = root.find(q(SOAP, "Body"))[0]
    if body.tag == q(SOAP, "Fault"):
        subcode = body.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Subcode/{{{SOAP}}}Value")
        code = body.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Value")
        reason = body.findtext(f"{{{SOAP}}}Reason/{{{SOAP}}}Text") or ""
        return Answer(response.status_code, None, [], subcode or code, root, mtom_answer, reason)
    errors = [e.get("errorCode") for e in body.iter(q(RS, "RegistryError"))]
    contexts = "; ".join(e.get("codeContext") for e in body.iter(q(RS, "RegistryError")))
    status = body.get("status", "").rsplit(":", 1)[-1]
    return Answer(response.status_code, status, errors, None, body, mtom_answer, contexts)


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def simulator(pki: Pki, tmp_path: Path) -> Iterator[XdsSimulator]:
    with XdsSimulator(pki, store_dir=tmp_path / "received") as sim:
        yield sim


def tls_context(pki: Pki, *, client_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if client_cert:
        context.load_cert_chain(pki.auth_cert, pki.auth_key)
    return context


@pytest.fixture
def client(pki: Pki) -> Iterator[httpx.Client]:
    with httpx.Client(verify=tls_context(pki), timeout=20) as http:
        yield http


def submit(client: httpx.Client, simulator: XdsSimulator, submission: Submission, pki: Pki) -> Answer:
    url = f"{simulator.url}/repository"
    content_type, body = submission.http(pki, url)
    return read_answer(client.post(url, content=body, headers={"Content-Type": content_type}))


def registry_call(
    client: httpx.Client, simulator: XdsSimulator, pki: Pki, action: str, body: Any, patient: str
) -> Answer:
    url = f"{simulator.url}/registry"
    soap = envelope(action, url, body, vihf(pki, patient))
    headers = {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'}
    return read_answer(client.post(url, content=soap, headers=headers))


def stored_query(query_id: str, return_type: str = "LeafClass", **params: list[str]) -> Any:
    query = E(q(RIM, "AdhocQuery"), {"id": query_id})
    for key, values in params.items():
        query.append(slot(f"${key}", *values))
    return E(
        q(QUERY, "AdhocQueryRequest"),
        None,
        E(q(QUERY, "ResponseOption"), {"returnType": return_type, "returnComposedObjects": "true"}),
        query,
    )


def status_update(patient: str, target: str, original: str, new: str) -> Any:
    package = E(q(RIM, "RegistryPackage"), {"id": "SubmissionSet01"})
    package.append(slot("submissionTime", datetime.now(UTC).strftime("%Y%m%d%H%M%S")))
    package.append(external_id(SS_UNIQUE_ID, "SubmissionSet01", f"2.25.{uuid.uuid4().int}", "uniqueId"))
    package.append(external_id(SS_SOURCE_ID, "SubmissionSet01", "1.2.250.1.999.77", "sourceId"))
    package.append(external_id(SS_PATIENT_ID, "SubmissionSet01", patient, "patientId"))
    objects = E(
        q(RIM, "RegistryObjectList"),
        None,
        package,
        E(
            q(RIM, "Classification"),
            {"id": "cl-ss", "classifiedObject": "SubmissionSet01", "classificationNode": SS_NODE},
        ),
        E(
            q(RIM, "Association"),
            {
                "id": "as-update",
                "associationType": UPDATE_STATUS,
                "sourceObject": "SubmissionSet01",
                "targetObject": target,
            },
            slot("OriginalStatus", original),
            slot("NewStatus", new),
        ),
    )
    return E(q(LCM, "SubmitObjectsRequest"), None, objects)


BIOCHEMISTRY = sample("01-biochimie")


def biochemistry(**changes: Any) -> Submission:
    return Submission([Entry.of(BIOCHEMISTRY, **changes)])


# ------------------------------------------------------------------------------------------------
# ITI-41: accepted
# ------------------------------------------------------------------------------------------------


def test_a_conformant_submission_is_stored(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki, tmp_path: Path
) -> None:
    submission = biochemistry()
    answer = submit(client, simulator, submission, pki)
    assert (answer.status_code, answer.status, answer.errors) == (200, "Success", []), answer.reason
    assert answer.mtom  # an MTOM request gets an MTOM answer
    facts = cda_facts(BIOCHEMISTRY)
    (entry,) = simulator.entries
    assert entry == simulator.entry(facts["unique_id"])
    assert entry.content == BIOCHEMISTRY and entry.size == len(BIOCHEMISTRY)
    assert entry.hash == hashlib.sha1(BIOCHEMISTRY).hexdigest()
    assert entry.status == APPROVED and entry.entry_uuid.startswith("urn:uuid:")
    assert (
        entry.patient_id == facts["patient"] and entry.submission_set_unique_id == submission.submission_uid
    )
    assert entry.metadata["typeCode"] == "11502-2" and entry.metadata["classCode"] == "10"
    assert entry.metadata["formatCode"] == "urn:ihe:lab:xd-lab:2008"
    assert entry.metadata["confidentialityCode"] == ["N"]
    assert entry.metadata["slots"]["languageCode"] == ["fr-FR"]
    assert entry.metadata["authors"][0]["authorInstitution"][0].endswith(LAB_FINESS_ID)
    assert entry.vihf["LPS_Nom"] == ("crbio",) and entry.vihf["Authentification_Mode"] == ("INDIRECTE",)
    assert entry.vihf[VIHF_ROLE] == ("AUTOMATE^Automate^1.2.250.1.213.1.1.4.6",)
    assert entry.replaced_entry_uuid is None
    (signature,) = simulator.signature_entries
    assert signature.metadata["classCode"] == "urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1"
    assert simulator.accepted_submissions == 1
    (request,) = simulator.requests
    assert (request.transaction, request.outcome, request.errors) == ("ITI-41", "success", ())
    assert request.raw.startswith(b"--MIMEBoundary_") and BIOCHEMISTRY in request.raw
    assert request.client_subject and "AUTH_CLI" in request.client_subject
    # store_dir: the document and its metadata, as files.
    stored = tmp_path / "received"
    assert (stored / f"{facts['unique_id']}.xml").read_bytes() == BIOCHEMISTRY
    written = json.loads((stored / f"{facts['unique_id']}.json").read_text(encoding="utf-8"))
    assert written["status"] == APPROVED and written["entry_uuid"] == entry.entry_uuid


def test_masking_codes_travel_as_extra_confidentiality_codes(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    masks = [
        ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient"),
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13", "Masqué aux professionnels de santé"),
        ("N", "2.16.840.1.113883.5.25", "Normal"),
    ]
    answer = submit(client, simulator, biochemistry(confidentiality=masks), pki)
    assert answer.status == "Success", answer.errors
    (entry,) = simulator.entries
    assert entry.metadata["confidentialityCode"] == ["N", "INVISIBLE_PATIENT", "MASQUE_PS"]


def test_source_supplied_entry_uuid_hash_and_size_are_kept(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    entry_uuid = f"urn:uuid:{uuid.uuid4()}"
    extra = {"hash": hashlib.sha1(BIOCHEMISTRY).hexdigest().upper(), "size": str(len(BIOCHEMISTRY))}
    answer = submit(client, simulator, biochemistry(id=entry_uuid, extra_slots=extra), pki)
    assert answer.status == "Success", answer.errors
    assert simulator.entries[0].entry_uuid == entry_uuid
    # Another document may not take the same entryUUID.
    answer = submit(client, simulator, Submission([Entry.of(sample("08a-diabete-v1"), id=entry_uuid)]), pki)
    assert answer.errors == ["XDSRegistryMetadataError"] and "entryUUID" in answer.reason


# ------------------------------------------------------------------------------------------------
# ITI-41: metadata refused
# ------------------------------------------------------------------------------------------------

MASK = "1.2.250.1.213.1.1.4.13"
HL7_CONF = "2.16.840.1.113883.5.25"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        pytest.param(
            {"type_code": ("11488-4", "2.16.840.1.113883.6.1", "CR consultation")},
            "XDSRegistryMetadataError",
            id="typeCode-not-the-cda",
        ),
        pytest.param(
            {"type_code": ("99999-9", "2.16.840.1.113883.6.1", "?")},
            "XDSRegistryMetadataError",
            id="typeCode-not-in-J07",
        ),
        pytest.param(
            {"type_code": ("11502-2", "1.2.3", "wrong system")},
            "XDSRegistryMetadataError",
            id="typeCode-wrong-system",
        ),
        pytest.param(
            {"class_code": ("12", "1.2.250.1.213.1.1.4.1", "?")},
            "XDSRegistryMetadataError",
            id="classCode-not-in-J57",
        ),
        pytest.param(
            {"format_code": ("urn:asip:ci-sis:bio:2008", "1.2.250.1.213.1.1.4.2.282", "?")},
            "XDSRegistryMetadataError",
            id="formatCode-not-in-J60",
        ),
        pytest.param(
            {"format_code": ("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "?")},
            "XDSRegistryMetadataError",
            id="formatCode-not-xd-lab",
        ),
        pytest.param(
            {"facility": ("SA99", "1.2.250.1.71.4.2.4", "?")},
            "XDSRegistryMetadataError",
            id="facility-not-in-J02",
        ),
        pytest.param(
            {"practice": ("LIBERAL", "1.2.250.1.213.1.1.4.9", "?")},
            "XDSRegistryMetadataError",
            id="practice-not-in-J04",
        ),
        pytest.param(
            {"confidentiality": [("MASQUE_PT", MASK, "?"), ("N", HL7_CONF, "")]},
            "XDSRegistryMetadataError",
            id="confidentiality-not-in-J58",
        ),
        pytest.param({"confidentiality": []}, "XDSRegistryMetadataError", id="confidentiality-missing"),
        pytest.param(
            {"confidentiality": [("N", HL7_CONF, ""), ("R", HL7_CONF, "")]},
            "XDSRegistryMetadataError",
            id="confidentiality-two-levels",
        ),
        pytest.param(
            {"confidentiality": [("N", HL7_CONF, "")] + [("MASQUE_PS", MASK, "")] * 4},
            "XDSRegistryMetadataError",
            id="confidentiality-five",
        ),
        pytest.param(
            {"confidentiality": [("R", HL7_CONF, "")]},
            "XDSRegistryMetadataError",
            id="confidentiality-not-the-cda",
        ),
        pytest.param(
            {"specialty": "G15_99^Inconnu^1.2.250.1.213.1.1.4.5"},
            "XDSRegistryMetadataError",
            id="authorSpecialty-not-in-J01",
        ),
        pytest.param(
            {"patient": "279035121518989^^^&1.2.250.1.999&ISO^NH"},
            "XDSRegistryMetadataError",
            id="patientId-not-an-INS-OID",
        ),
        pytest.param(
            {"patient": "279035121518988^^^&1.2.250.1.213.1.4.10&ISO^NH"},
            "XDSRegistryMetadataError",
            id="patientId-bad-key",
        ),
        pytest.param(
            {"unique_id": "1.2.250.1.999.1.1.2024.1001.1^EXT"},
            "XDSRegistryMetadataError",
            id="uniqueId-with-extension",
        ),
        pytest.param(
            {"unique_id": "1.2.250.1.999.1.1.2024.1001.2"},
            "XDSRegistryMetadataError",
            id="uniqueId-not-the-cda",
        ),
        pytest.param({"extra_slots": {"hash": "0" * 40}}, "XDSRepositoryMetadataError", id="hash-mismatch"),
        pytest.param({"extra_slots": {"size": "12"}}, "XDSRepositoryMetadataError", id="size-mismatch"),
        pytest.param(
            {"extra_slots": {"creationTime": "2024-01-04"}},
            "XDSRegistryMetadataError",
            id="creationTime-not-a-timestamp",
        ),
        pytest.param({"mime_type": ""}, "XDSRegistryMetadataError", id="mimeType-missing"),
    ],
)
def test_metadata_errors_are_refused(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki, changes: dict[str, Any], code: str
) -> None:
    submission = biochemistry(**changes)
    if "patient" in changes:
        submission.vihf_patient = cda_facts(BIOCHEMISTRY)["patient"]
    answer = submit(client, simulator, submission, pki)
    assert (answer.status_code, answer.status) == (200, "Failure")
    assert code in answer.errors, answer.errors
    assert simulator.entries == [] and simulator.accepted_submissions == 0
    assert simulator.requests[-1].outcome == "failure" and code in simulator.requests[-1].errors


def test_a_document_whose_cda_has_no_ins_is_refused(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    content = sample("13-identite-provisoire")
    patient = cda_facts(BIOCHEMISTRY)["patient"]
    unique_id = etree.fromstring(content).find(q(HL7, "id")).get("root")
    answer = submit(
        client, simulator, Submission([Entry(content, unique_id=unique_id, patient=patient)]), pki
    )
    assert answer.status == "Failure" and answer.errors == ["XDSRegistryMetadataError"]


def test_the_submission_set_must_be_signed(simulator: XdsSimulator, client: httpx.Client, pki: Pki) -> None:
    assert (
        "XDSRegistryMetadataError"
        in submit(client, simulator, Submission([Entry.of(BIOCHEMISTRY)], signed=False), pki).errors
    )
    unsigned = Submission([Entry.of(BIOCHEMISTRY)], signs_association=False)
    assert "XDSRegistryMetadataError" in submit(client, simulator, unsigned, pki).errors
    # The manifest must carry each document's digest.
    forged = Submission(
        [Entry.of(BIOCHEMISTRY)], signature_documents={cda_facts(BIOCHEMISTRY)["unique_id"]: b"other"}
    )
    answer = submit(client, simulator, forged, pki)
    assert answer.errors == ["XDSRegistryMetadataError"]
    assert "digest" in answer.root.find(f".//{{{RS}}}RegistryError").get("codeContext")
    assert simulator.entries == []


def test_not_mtom_or_missing_parts_are_refused(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    answer = submit(client, simulator, Submission([Entry.of(BIOCHEMISTRY)], as_mtom=False), pki)
    assert answer.status == "Failure" and answer.errors == ["XDSRepositoryError"] and not answer.mtom
    answer = submit(client, simulator, Submission([Entry.of(BIOCHEMISTRY)], missing_part=True), pki)
    assert answer.status == "Failure" and "XDSMissingDocument" in answer.errors
    assert simulator.entries == []


def test_broken_mime_packages_are_soap_faults(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    url = f"{simulator.url}/repository"
    content_type, body = biochemistry().http(pki, url)
    boundary = content_type.split('boundary="', 1)[1].split('"', 1)[0]
    broken = {
        "no closing delimiter": (content_type, body[: body.rindex(f"--{boundary}--".encode())]),
        "no boundary": (content_type.replace(f'boundary="{boundary}"; ', ""), body),
        "a part without headers end": (content_type, f"--{boundary}\r\nContent-Type: x".encode()),
        "a boundary the body does not use": (content_type.replace(boundary, "other"), body),
    }
    for label, (kind, content) in broken.items():
        answer = read_answer(client.post(url, content=content, headers={"Content-Type": kind}))
        assert (answer.status_code, answer.fault) == (400, "soap:Sender"), label
    assert simulator.entries == []


def test_envelope_errors_are_soap_faults(simulator: XdsSimulator, client: httpx.Client, pki: Pki) -> None:
    url = f"{simulator.url}/repository"
    content_type, body = biochemistry().http(pki, url)
    # An action the endpoint does not serve.
    wrong = body.replace(ITI41.encode(), ITI18.encode())
    answer = read_answer(
        client.post(url, content=wrong, headers={"Content-Type": content_type.replace(ITI41, ITI18)})
    )
    assert (answer.status_code, answer.fault) == (400, "wsa:ActionNotSupported")
    # SOAP 1.1.
    soap11 = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>'
    response = client.post(url, content=soap11, headers={"Content-Type": "text/xml; charset=UTF-8"})
    assert response.status_code == 500 and read_answer(response).fault == "soap:VersionMismatch"
    # Not XML at all.
    response = client.post(url, content=b"<oops", headers={"Content-Type": "application/soap+xml"})
    assert read_answer(response).fault == "soap:Sender"
    assert client.post(f"{simulator.url}/nowhere", content=b"").status_code == 404
    assert [r.outcome for r in simulator.requests] == ["soap-fault"] * 3 + ["http-error"]


# ------------------------------------------------------------------------------------------------
# ITI-41: patient and VIHF
# ------------------------------------------------------------------------------------------------


def test_an_unknown_patient_is_refused(pki: Pki, client: httpx.Client) -> None:
    with XdsSimulator(pki, known_patients={"180012B01234593"}) as simulator:
        answer = submit(client, simulator, biochemistry(), pki)
        assert answer.errors == ["XDSUnknownPatientId"] and simulator.entries == []
    known = cda_facts(BIOCHEMISTRY)["patient"].split("^")[0]
    with XdsSimulator(pki, known_patients={known}) as simulator:
        assert submit(client, simulator, biochemistry(), pki).status == "Success"


def test_the_vihf_must_name_the_submitted_patient(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    other = OTHER_PATIENT
    submission = biochemistry()
    submission.vihf_patient = other
    assert submit(client, simulator, submission, pki).errors == ["XDSPatientIdDoesNotMatch"]


@pytest.mark.parametrize(
    ("options", "subcode"),
    [
        pytest.param({"drop": ("LPS_Nom",)}, "wsse:InvalidSecurityToken", id="missing-LPS_Nom"),
        pytest.param(
            {"drop": ("Secteur_Activite",)}, "wsse:InvalidSecurityToken", id="missing-Secteur_Activite"
        ),
        pytest.param({"drop": (VIHF_PURPOSE,)}, "wsse:InvalidSecurityToken", id="missing-purposeofuse"),
        pytest.param(
            {"attributes": {"Ressource_URN": "urn:autre"}},
            "wsse:InvalidSecurityToken",
            id="wrong-Ressource_URN",
        ),
        pytest.param(
            {"attributes": {VIHF_ROLE: "AUTOMATE^Automate^1.2.250.1.213.1.1.4.6"}},
            "wsse:InvalidSecurityToken",
            id="role-as-text",
        ),
        pytest.param(
            {"attributes": {VIHF_ROLE: ("10", "1.2.250.1.71.1.2.7", "Médecin", "Role")}},
            "wsse:InvalidSecurityToken",
            id="doctor-without-second-role",
        ),
        pytest.param(
            {"issuer": "CN=someone else,O=crbio test PKI,C=FR"},
            "wsse:FailedAuthentication",
            id="issuer-not-signer",
        ),
        pytest.param(
            {"not_on_or_after": datetime.now(UTC) - timedelta(hours=1)}, "wsse:MessageExpired", id="expired"
        ),
    ],
)
def test_vihf_problems_are_sender_faults(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki, options: dict[str, Any], subcode: str
) -> None:
    answer = submit(client, simulator, Submission([Entry.of(BIOCHEMISTRY)], vihf_options=options), pki)
    assert (answer.status_code, answer.fault) == (400, subcode)
    assert simulator.entries == [] and simulator.requests[-1].outcome == "soap-fault"


def test_a_missing_or_invalid_vihf_signature_is_a_fault(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    url = f"{simulator.url}/repository"
    submission = biochemistry()
    body, parts = submission.body(pki)

    def post(assertion: Any | None) -> Answer:
        content_type, data = mtom(envelope(ITI41, url, body, assertion), parts, ITI41)
        return read_answer(client.post(url, content=data, headers={"Content-Type": content_type}))

    assert post(None).fault == "wsse:InvalidSecurity"
    tampered = vihf(pki, submission.patient)
    lps = tampered.find(f".//{{{SAML}}}Attribute[@Name='LPS_Nom']/{{{SAML}}}AttributeValue")
    lps.text = "another software"
    assert post(tampered).fault == "wsse:FailedCheck"
    rogue_cert, rogue_key = issue_certificate(None, None, "rogue signer", usage="sign")
    rogue = (
        rogue_cert.public_bytes(serialization.Encoding.PEM),
        rogue_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    assert post(vihf(pki, submission.patient, signer=rogue)).fault == "wsse:FailedAuthentication"
    assert simulator.entries == []


def test_tls_needs_a_client_certificate_of_the_ca(pki: Pki, simulator: XdsSimulator) -> None:
    content_type, body = biochemistry().http(pki, f"{simulator.url}/repository")
    anonymous_context = tls_context(pki, client_cert=False)
    with httpx.Client(verify=anonymous_context, timeout=10) as anonymous, pytest.raises(httpx.TransportError):
        anonymous.post(f"{simulator.url}/repository", content=body, headers={"Content-Type": content_type})
    deadline = time.monotonic() + 5  # the server counts the refusal in its own thread
    while simulator.refused_handshakes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert simulator.refused_handshakes == 1 and simulator.requests == []
    with XdsSimulator(pki, require_client_cert=False) as open_simulator:
        with httpx.Client(verify=tls_context(pki, client_cert=False), timeout=10) as anonymous:
            url = f"{open_simulator.url}/repository"
            response = anonymous.post(url, content=body, headers={"Content-Type": content_type})
        assert read_answer(response).status == "Success"
        assert open_simulator.requests[0].client_subject is None


# ------------------------------------------------------------------------------------------------
# ITI-41: duplicates and replacement
# ------------------------------------------------------------------------------------------------


def test_duplicates_are_refused_and_never_stored_twice(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    assert submit(client, simulator, biochemistry(), pki).status == "Success"
    again = submit(client, simulator, biochemistry(), pki)
    assert again.errors == ["XDSDuplicateUniqueIdInRegistry"]
    # Same uniqueId, other bytes: a different document under a reused id.
    changed = BIOCHEMISTRY.replace(b"<title>Compte rendu", b"<title>Compte-rendu")
    answer = submit(client, simulator, Submission([Entry.of(changed)]), pki)
    assert answer.errors == ["XDSNonIdenticalHash"]
    assert len(simulator.entries) == 1 and simulator.entries[0].content == BIOCHEMISTRY
    assert simulator.accepted_submissions == 1


def test_concurrent_resends_store_the_document_once(pki: Pki, simulator: XdsSimulator) -> None:
    content_type, body = biochemistry().http(pki, f"{simulator.url}/repository")
    answers: list[Answer] = []

    def send() -> None:
        with httpx.Client(verify=tls_context(pki), timeout=30) as http:
            response = http.post(
                f"{simulator.url}/repository", content=body, headers={"Content-Type": content_type}
            )
            answers.append(read_answer(response))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status for a in answers) == ["Failure"] * 5 + ["Success"]
    assert all("XDSDuplicateUniqueIdInRegistry" in a.errors for a in answers if a.status == "Failure")
    assert len(simulator.entries) == 1


def test_a_replacement_deprecates_the_replaced_entry(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    v1, v2 = sample("08a-diabete-v1"), sample("08b-diabete-v2")
    assert submit(client, simulator, Submission([Entry.of(v1)]), pki).status == "Success"
    old = simulator.entry(cda_facts(v1)["unique_id"])
    assert old is not None
    # The RPLC association type of IHE is the 2007 one.
    typo = Submission(
        [Entry.of(v2)], replaces=old.entry_uuid, replacement_type="urn:ihe:iti:2010:AssociationType:RPLC"
    )
    assert submit(client, simulator, typo, pki).errors == ["XDSRegistryMetadataError"]
    unknown = Submission([Entry.of(v2)], replaces=f"urn:uuid:{uuid.uuid4()}")
    assert submit(client, simulator, unknown, pki).errors == ["UnresolvedReferenceException"]
    answer = submit(client, simulator, Submission([Entry.of(v2)], replaces=old.entry_uuid), pki)
    assert answer.status == "Success", answer.errors
    old, new = simulator.entry(cda_facts(v1)["unique_id"]), simulator.entry(cda_facts(v2)["unique_id"])
    assert old is not None and new is not None
    assert old.status == DEPRECATED and new.status == APPROVED and new.replaced_entry_uuid == old.entry_uuid
    # A deprecated version cannot be replaced again.
    v3 = v2.replace(b"1.2.250.1.999.5.1.2024.5002.2", b"1.2.250.1.999.5.1.2024.5002.3")
    again = submit(client, simulator, Submission([Entry.of(v3)], replaces=old.entry_uuid), pki)
    assert again.errors == ["XDSRegistryDeprecatedDocumentError"]


def test_a_replacement_must_match_the_cda_related_document(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    v1 = sample("08a-diabete-v1")
    assert submit(client, simulator, Submission([Entry.of(v1)]), pki).status == "Success"
    old = simulator.entry(cda_facts(v1)["unique_id"])
    assert old is not None
    # 01-biochimie has no relatedDocument RPLC and is another patient's document.
    answer = submit(client, simulator, Submission([Entry.of(BIOCHEMISTRY)], replaces=old.entry_uuid), pki)
    assert answer.errors == ["XDSPatientIdDoesNotMatch"]
    # Same patient, but a CDA that replaces nothing.
    unrelated = v1.replace(b"1.2.250.1.999.5.1.2024.5002.1", b"1.2.250.1.999.5.1.2024.5002.7")
    answer = submit(client, simulator, Submission([Entry.of(unrelated)], replaces=old.entry_uuid), pki)
    assert answer.errors == ["XDSRegistryMetadataError"] and "relatedDocument" in answer.reason
    # The v2 CDA replaces v1, so its RPLC association may not target another entry.
    assert submit(client, simulator, Submission([Entry.of(unrelated)]), pki).status == "Success"
    other = simulator.entry("1.2.250.1.999.5.1.2024.5002.7")
    assert other is not None
    answer = submit(
        client, simulator, Submission([Entry.of(sample("08b-diabete-v2"))], replaces=other.entry_uuid), pki
    )
    assert (
        answer.errors == ["XDSRegistryMetadataError"]
        and "replaces 1.2.250.1.999.5.1.2024.5002.1" in answer.reason
    )
    assert old.status == APPROVED and other.status == APPROVED


def test_a_uniqueid_twice_in_one_submission_is_refused(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    twice = Submission([Entry.of(BIOCHEMISTRY), Entry.of(BIOCHEMISTRY, id="Document02")])
    assert submit(client, simulator, twice, pki).errors == ["XDSRegistryDuplicateUniqueIdInMessage"]


# ------------------------------------------------------------------------------------------------
# ITI-18 and ITI-57
# ------------------------------------------------------------------------------------------------


def test_find_and_get_documents(simulator: XdsSimulator, client: httpx.Client, pki: Pki) -> None:
    assert submit(client, simulator, biochemistry(), pki).status == "Success"
    facts = cda_facts(BIOCHEMISTRY)
    patient = facts["patient"]
    (entry,) = simulator.entries
    find = stored_query(
        FIND_DOCUMENTS,
        XDSDocumentEntryPatientId=[f"'{patient}'"],
        XDSDocumentEntryStatus=["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
    )
    answer = registry_call(client, simulator, pki, ITI18, find, patient)
    assert answer.status == "Success" and not answer.mtom
    found = answer.root.findall(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}ExtrinsicObject")
    assert len(found) == 2  # the report and the submission-set signature
    report = next(e for e in found if e.get("id") == entry.entry_uuid)
    assert report.get("status") == APPROVED and report.get("mimeType") == "text/xml"
    slots = {s.get("name"): s.findtext(f".//{{{RIM}}}Value") for s in report.findall(f"{{{RIM}}}Slot")}
    assert slots["hash"] == entry.hash and slots["size"] == str(entry.size) and slots["repositoryUniqueId"]
    schemes = {
        c.get("classificationScheme"): c.get("nodeRepresentation")
        for c in report.findall(f"{{{RIM}}}Classification")
    }
    assert schemes[DE["typeCode"]] == "11502-2" and schemes[DE["practiceSettingCode"]] == "AMBULATOIRE"
    assert all(
        c.get("classifiedObject") == entry.entry_uuid for c in report.findall(f"{{{RIM}}}Classification")
    )
    identifiers = {
        e.get("identificationScheme"): e.get("value") for e in report.findall(f"{{{RIM}}}ExternalIdentifier")
    }
    assert identifiers[DE_UNIQUE_ID] == facts["unique_id"] and identifiers[DE_PATIENT_ID] == patient

    by_type = stored_query(
        FIND_DOCUMENTS,
        XDSDocumentEntryPatientId=[f"'{patient}'"],
        XDSDocumentEntryStatus=["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
        XDSDocumentEntryTypeCode=["('11502-2^^2.16.840.1.113883.6.1')"],
        XDSDocumentEntryCreationTimeFrom=["20240101"],
    )
    answer = registry_call(client, simulator, pki, ITI18, by_type, patient)
    assert [e.get("id") for e in answer.root.iter(q(RIM, "ExtrinsicObject"))] == [entry.entry_uuid]

    for key, value in (
        ("XDSDocumentEntryUniqueId", facts["unique_id"]),
        ("XDSDocumentEntryEntryUUID", entry.entry_uuid),
    ):
        get = stored_query(GET_DOCUMENTS, **{key: [f"('{value}')"]})
        answer = registry_call(client, simulator, pki, ITI18, get, patient)
        assert [e.get("id") for e in answer.root.iter(q(RIM, "ExtrinsicObject"))] == [entry.entry_uuid]
    refs = registry_call(
        client,
        simulator,
        pki,
        ITI18,
        stored_query(GET_DOCUMENTS, "ObjectRef", XDSDocumentEntryUniqueId=[f"'{facts['unique_id']}'"]),
        patient,
    )
    assert [r.get("id") for r in refs.root.iter(q(RIM, "ObjectRef"))] == [entry.entry_uuid]
    # Another patient's VIHF sees nothing of this patient's documents.
    other = OTHER_PATIENT
    hidden = registry_call(
        client,
        simulator,
        pki,
        ITI18,
        stored_query(GET_DOCUMENTS, XDSDocumentEntryEntryUUID=[f"'{entry.entry_uuid}'"]),
        other,
    )
    assert hidden.status == "Success" and list(hidden.root.iter(q(RIM, "ExtrinsicObject"))) == []


def test_each_entry_is_answered_with_its_own_hash_and_the_same_object_every_time(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    """The registry object is written on the first query and the SHA-1 is kept per document
    bytes: two documents of one patient each get their own hash, twice the same answer."""
    unique_id = cda_facts(BIOCHEMISTRY)["unique_id"]
    v1 = BIOCHEMISTRY.replace(f'<id root="{unique_id}"/>'.encode(), f'<id root="{unique_id}.7"/>'.encode(), 1)
    assert v1 != BIOCHEMISTRY
    assert submit(client, simulator, Submission([Entry.of(v1)]), pki).status == "Success"
    assert submit(client, simulator, biochemistry(), pki).status == "Success"
    patient = cda_facts(v1)["patient"]
    find = stored_query(
        FIND_DOCUMENTS,
        XDSDocumentEntryPatientId=[f"'{patient}'"],
        XDSDocumentEntryStatus=["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
    )
    answers = [registry_call(client, simulator, pki, ITI18, find, patient) for _ in range(2)]
    objects = [
        {e.get("id"): etree.tostring(e) for e in a.root.iter(q(RIM, "ExtrinsicObject"))} for a in answers
    ]
    assert len(objects[0]) == 4 and objects[0] == objects[1]
    hashes = {
        e.get("id"): e.findtext(f"{{{RIM}}}Slot[@name='hash']//{{{RIM}}}Value")
        for e in answers[0].root.iter(q(RIM, "ExtrinsicObject"))
    }
    for document in (v1, BIOCHEMISTRY):
        entry = simulator.entry(cda_facts(document)["unique_id"])
        assert entry is not None
        assert hashes[entry.entry_uuid] == entry.hash == hashlib.sha1(document).hexdigest()


def test_stored_query_errors(simulator: XdsSimulator, client: httpx.Client, pki: Pki) -> None:
    patient = cda_facts(BIOCHEMISTRY)["patient"]
    missing = stored_query(FIND_DOCUMENTS, XDSDocumentEntryPatientId=[f"'{patient}'"])
    assert registry_call(client, simulator, pki, ITI18, missing, patient).errors == [
        "XDSStoredQueryMissingParam"
    ]
    unknown = stored_query(
        "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9", XDSSubmissionSetPatientId=[f"'{patient}'"]
    )
    answer = registry_call(client, simulator, pki, ITI18, unknown, patient)
    assert answer.errors == ["XDSUnknownStoredQuery"] and answer.root.tag == q(QUERY, "AdhocQueryResponse")
    both = stored_query(
        GET_DOCUMENTS, XDSDocumentEntryUniqueId=["'1.2.3'"], XDSDocumentEntryEntryUUID=["'urn:uuid:x'"]
    )
    assert registry_call(client, simulator, pki, ITI18, both, patient).errors == ["XDSStoredQueryParamNumber"]


def test_deletion_and_archiving_change_the_status(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki, tmp_path: Path
) -> None:
    assert submit(client, simulator, biochemistry(), pki).status == "Success"
    patient = cda_facts(BIOCHEMISTRY)["patient"]
    (entry,) = simulator.entries

    def update(target: str, original: str, new: str) -> Answer:
        return registry_call(
            client, simulator, pki, ITI57, status_update(patient, target, original, new), patient
        )

    assert update(entry.entry_uuid, DEPRECATED, DELETED).errors == [
        "XDSMetadataUpdateError"
    ]  # wrong original
    assert update(f"urn:uuid:{uuid.uuid4()}", APPROVED, DELETED).errors == ["XDSMetadataUpdateError"]
    assert update(entry.entry_uuid, APPROVED, ARCHIVED).status == "Success"
    assert simulator.entries[0].status == ARCHIVED
    assert update(entry.entry_uuid, ARCHIVED, APPROVED).status == "Success"
    answer = update(entry.entry_uuid, APPROVED, DELETED)
    assert answer.status == "Success" and simulator.requests[-1].transaction == "ITI-57"
    assert simulator.entries[0].status == DELETED
    assert update(entry.entry_uuid, DELETED, APPROVED).errors == ["XDSMetadataUpdateOperationError"]
    # Logical deletion: gone from FindDocuments, still known by GetDocuments, never purged.
    find = stored_query(
        FIND_DOCUMENTS,
        XDSDocumentEntryPatientId=[f"'{patient}'"],
        XDSDocumentEntryStatus=["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"],
    )
    found = registry_call(client, simulator, pki, ITI18, find, patient).root.iter(q(RIM, "ExtrinsicObject"))
    assert entry.entry_uuid not in [e.get("id") for e in found]
    get = stored_query(GET_DOCUMENTS, XDSDocumentEntryEntryUUID=[f"'{entry.entry_uuid}'"])
    (shown,) = registry_call(client, simulator, pki, ITI18, get, patient).root.iter(q(RIM, "ExtrinsicObject"))
    assert shown.get("status") == DELETED and simulator.entries[0].content == BIOCHEMISTRY
    written = json.loads((tmp_path / "received" / f"{entry.unique_id}.json").read_text(encoding="utf-8"))
    assert written["status"] == DELETED


def test_only_the_patients_vihf_may_delete(simulator: XdsSimulator, client: httpx.Client, pki: Pki) -> None:
    assert submit(client, simulator, biochemistry(), pki).status == "Success"
    patient = cda_facts(BIOCHEMISTRY)["patient"]
    other = OTHER_PATIENT
    body = status_update(patient, simulator.entries[0].entry_uuid, APPROVED, DELETED)
    assert registry_call(client, simulator, pki, ITI57, body, other).errors == ["XDSPatientIdDoesNotMatch"]
    assert simulator.entries[0].status == APPROVED


# ------------------------------------------------------------------------------------------------
# Faults
# ------------------------------------------------------------------------------------------------


def test_injected_faults(pki: Pki, client: httpx.Client) -> None:
    faults = FaultPlan(latency=0.3)
    with XdsSimulator(pki, faults=faults) as simulator:
        url = f"{simulator.url}/repository"
        content_type, body = biochemistry().http(pki, url)

        def post() -> httpx.Response:
            return client.post(url, content=body, headers={"Content-Type": content_type})

        faults.queue(Fault.BUSY)
        assert read_answer(post()).errors == ["XDSRegistryBusy"]
        faults.queue(Fault.REJECT)
        assert read_answer(post()).errors == ["XDSUnknownPatientId"]
        faults.queue(Fault.SERVER_ERROR)
        response = post()
        assert response.status_code == 500 and read_answer(response).fault == "soap:Receiver"
        faults.queue(Fault.DROP)
        with pytest.raises(httpx.RemoteProtocolError):
            post()
        assert simulator.entries == []
        faults.queue(Fault.LATENCY)
        started = time.monotonic()
        assert read_answer(post()).status == "Success"
        assert time.monotonic() - started >= 0.3
        outcomes = [(r.outcome, r.fault) for r in simulator.requests]
        assert outcomes == [
            ("failure", Fault.BUSY),
            ("failure", Fault.REJECT),
            ("server-error", Fault.SERVER_ERROR),
            ("dropped", Fault.DROP),
            ("success", None),
        ]
        assert len(simulator.entries) == 1 and faults.injected == [
            Fault.BUSY,
            Fault.REJECT,
            Fault.SERVER_ERROR,
            Fault.DROP,
            Fault.LATENCY,
        ]


def test_registry_faults_answer_as_the_registry(pki: Pki, client: httpx.Client) -> None:
    faults = FaultPlan()
    with XdsSimulator(pki, faults=faults) as simulator:
        patient = cda_facts(BIOCHEMISTRY)["patient"]
        faults.queue(Fault.BUSY)
        find = stored_query(
            FIND_DOCUMENTS, XDSDocumentEntryPatientId=[f"'{patient}'"], XDSDocumentEntryStatus=["('x')"]
        )
        answer = registry_call(client, simulator, pki, ITI18, find, patient)
        assert answer.errors == ["XDSRegistryBusy"] and answer.root.tag == q(QUERY, "AdhocQueryResponse")


# ------------------------------------------------------------------------------------------------
# Signing certificates: each distinct chain verified once, every signature every time
# ------------------------------------------------------------------------------------------------


def _signer(pki: Pki, common_name: str, **dates: datetime) -> tuple[bytes, bytes]:
    """A SIGN certificate of the test CA (or expired, with ``not_after``), as PEM (cert, key)."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    cert, key = issue_certificate(ca_cert, ca_key, common_name, usage="sign", **dates)
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def test_each_signing_chain_is_verified_once_and_every_signature_always(
    simulator: XdsSimulator, client: httpx.Client, pki: Pki
) -> None:
    patient = biochemistry().patient
    url = f"{simulator.url}/registry"
    find = stored_query(
        FIND_DOCUMENTS,
        XDSDocumentEntryPatientId=[f"'{patient}'"],
        XDSDocumentEntryStatus=[f"('{APPROVED}')"],
    )

    def query(assertion: Any) -> Answer:
        headers = {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{ITI18}"'}
        return read_answer(client.post(url, content=envelope(ITI18, url, find, assertion), headers=headers))

    # A submission: the VIHF and the XAdES signature share the SIGN certificate, verified once.
    assert submit(client, simulator, biochemistry(), pki).status == "Success"
    assert simulator.trusted.verified_chains == 1
    assert query(vihf(pki, patient)).status == "Success"
    assert simulator.trusted.verified_chains == 1
    # A known certificate does not make a bad signature good.
    tampered = vihf(pki, patient)
    tampered.find(f".//{{{SAML}}}Attribute[@Name='LPS_Nom']/{{{SAML}}}AttributeValue").text = "other"
    assert query(tampered).fault == "wsse:FailedCheck"
    # Another certificate of the CA is verified in its turn, then known.
    other = _signer(pki, "another signer")
    assert query(vihf(pki, patient, signer=other)).status == "Success"
    assert query(vihf(pki, patient, signer=other)).status == "Success"
    assert simulator.trusted.verified_chains == 2
    # Refusals are never kept: a foreign or expired certificate is refused every time.
    rogue_cert, rogue_key = issue_certificate(None, None, "rogue signer", usage="sign")
    rogue = (
        rogue_cert.public_bytes(serialization.Encoding.PEM),
        rogue_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    past = datetime.now(UTC) - timedelta(days=2)
    expired = _signer(pki, "expired signer", not_before=past - timedelta(days=30), not_after=past)
    for _ in range(2):
        assert query(vihf(pki, patient, signer=rogue)).fault == "wsse:FailedAuthentication"
        assert query(vihf(pki, patient, signer=expired)).fault == "wsse:FailedAuthentication"
    assert simulator.trusted.verified_chains == 2


def test_a_known_chain_is_verified_again_outside_its_validity_and_when_forgotten(pki: Pki) -> None:
    from signxml.exceptions import InvalidCertificate

    from crbio.simulators.xds import TrustedChains

    trusted = TrustedChains(pki.ca_cert, limit=1)
    sign = x509.load_pem_x509_certificate(pki.sign_cert.read_bytes())
    other = x509.load_pem_x509_certificate(_signer(pki, "another signer")[0])
    now = datetime.now(UTC)
    assert trusted.signing_certificate([sign], now) == sign
    assert trusted.signing_certificate([sign], now + timedelta(minutes=1)) == sign
    assert trusted.verified_chains == 1
    # After the certificate's end the known chain is not trusted: verified again, and refused.
    with pytest.raises(InvalidCertificate):
        trusted.signing_certificate([sign], sign.not_valid_after_utc + timedelta(days=1))
    with pytest.raises(InvalidCertificate):
        trusted.signing_certificate([sign], sign.not_valid_before_utc - timedelta(days=1))
    # One chain remembered (limit=1): a second one pushes the first out.
    assert trusted.signing_certificate([other], now) == other
    assert trusted.signing_certificate([sign], now) == sign
    assert trusted.verified_chains == 3


def test_a_simulator_keeping_few_documents_in_memory_forgets_none_in_its_registry(
    pki: Pki, client: httpx.Client, tmp_path: Path
) -> None:
    unique_id = cda_facts(BIOCHEMISTRY)["unique_id"]
    other = BIOCHEMISTRY.replace(
        f'<id root="{unique_id}"/>'.encode(), f'<id root="{unique_id}.9"/>'.encode(), 1
    )
    # Two entries a submission: the document and the submission set's signature (IHE DSG).
    with XdsSimulator(pki, store_dir=tmp_path / "received", retain=2) as sim:
        assert submit(client, sim, biochemistry(), pki).status == "Success"
        assert submit(client, sim, Submission([Entry.of(other)]), pki).status == "Success"
        again = submit(client, sim, biochemistry(), pki)  # known although its bytes were let go
        first, second = sim.entry(unique_id), sim.entry(f"{unique_id}.9")
        assert len(sim.requests) == 2
    assert again.errors == ["XDSDuplicateUniqueIdInRegistry"]
    assert first is not None and second is not None
    assert first.content == b"" and second.content == other
    assert (tmp_path / "received" / f"{unique_id}.xml").read_bytes() == BIOCHEMISTRY
