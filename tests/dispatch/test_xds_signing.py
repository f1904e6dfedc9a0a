"""The VIHF assertion and the XAdES signature of the submission set, verified against the test CA."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from lxml import etree
from signxml import XMLVerifier
from signxml.algorithms import CanonicalizationMethod
from signxml.exceptions import InvalidDigest, InvalidSignature
from signxml.xades.xades import XAdESSignatureConfiguration, XAdESVerifier

from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.tls import ClientCredential, client_credential
from crbio.dispatch.xds.signature import (
    MANIFEST_ID,
    PURPOSE_OF_SIGNATURE,
    SignedDocument,
    sign_submission_set,
    signature_xml_id,
)
from crbio.dispatch.xds.vihf import SAML, VihfIdentity, build_vihf, issuer_name
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki

DS = "http://www.w3.org/2000/09/xmldsig#"
NS = {"saml2": SAML, "ds": DS, "hl7": "urn:hl7-org:v3"}
INS = ("279035121518989", "1.2.250.1.213.1.4.10")
N3 = (Path(__file__).resolve().parents[2] / "samples" / "output" / "01-biochimie.n3.xml").read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def lab() -> SenderContext:
    return SenderContext(
        laboratory_finess="920000015",
        laboratory_name="Laboratoire des Charmes",
        laboratory_oid="1.2.250.1.999.1",
        software_name="crbio",
        software_version="0.1.0",
        dmp_homologation="CRB-2024-0001",
    )


@pytest.fixture
def sign(pki: Pki, lab: SenderContext) -> ClientCredential:
    section = {"sign_cert": str(pki.sign_cert), "sign_key": str(pki.sign_key)}
    credential = client_credential(section, "sign", lab, where="test", required=True)
    assert credential is not None
    return credential


def attributes(assertion: etree._Element) -> dict[str, etree._Element]:
    return {
        a.get("Name"): a.find(f"{{{SAML}}}AttributeValue")
        for a in assertion.iterfind(f"{{{SAML}}}AttributeStatement/{{{SAML}}}Attribute")
    }


def test_vihf_is_signed_by_org_sign_and_verifies_against_the_ca(
    pki: Pki, lab: SenderContext, sign: ClientCredential
) -> None:
    assertion = build_vihf(VihfIdentity(lab, sign), ins=INS)
    data = etree.tostring(assertion)
    result = XMLVerifier().verify(data, ca_pem_file=str(pki.ca_cert), id_attribute="ID")
    assert etree.QName(result.signed_xml).localname == "Assertion"
    # The signature sits right after Issuer and covers the assertion's ID.
    children = [etree.QName(c).localname for c in assertion]
    assert children[:3] == ["Issuer", "Signature", "Subject"]
    reference = assertion.find(f"{{{DS}}}Signature/{{{DS}}}SignedInfo/{{{DS}}}Reference")
    assert reference is not None and reference.get("URI") == f"#{assertion.get('ID')}"
    signed_info = assertion.find(f"{{{DS}}}Signature/{{{DS}}}SignedInfo")
    assert signed_info is not None
    assert signed_info.find(f"{{{DS}}}SignatureMethod").get("Algorithm").endswith("rsa-sha256")  # type: ignore[union-attr]
    assert signed_info.find(f"{{{DS}}}CanonicalizationMethod").get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    )
    issuer = assertion.find(f"{{{SAML}}}Issuer")
    assert issuer is not None
    assert (
        issuer.text == "CN=LABORATOIRE TEST ORG SIGN,O=crbio test PKI,C=FR" == issuer_name(sign.certificate)
    )
    assert issuer.get("Format") == "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
    # Tampering with an attribute breaks the signature.
    tampered = data.replace(b"279035121518989", b"279035121518990")
    with pytest.raises((InvalidDigest, InvalidSignature)):
        XMLVerifier().verify(tampered, ca_pem_file=str(pki.ca_cert), id_attribute="ID")


def test_vihf_attributes(lab: SenderContext, sign: ClientCredential) -> None:
    assertion = build_vihf(VihfIdentity(lab, sign), ins=INS)
    values = attributes(assertion)
    text = {name: (value.text or "") for name, value in values.items() if len(value) == 0}
    assert text == {
        "VIHF_Version": "3.0",
        "Authentification_Mode": "INDIRECTE",
        "Identifiant_Structure": "1920000015",
        "Secteur_Activite": "SA25^1.2.250.1.71.4.2.4",
        "urn:oasis:names:tc:xspa:1.0:subject:subject-id": "crbio",
        "urn:oasis:names:tc:xacml:2.0:resource:resource-id": "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH",
        "Ressource_URN": "urn:dmp",
        "LPS_Nom": "crbio",
        "LPS_Version": "0.1.0",
        "LPS_ID_HOMOLOGATION_DMP": "CRB-2024-0001",
    }
    role = values["urn:oasis:names:tc:xacml:2.0:subject:role"].find("hl7:Role", NS)
    assert role is not None
    assert (role.get("code"), role.get("codeSystem")) == ("AUTOMATE", "1.2.250.1.213.1.1.4.6")
    assert role.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "CE"
    purpose = values["urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"].find("hl7:PurposeOfUse", NS)
    assert purpose is not None
    assert (purpose.get("code"), purpose.get("codeSystem")) == ("normal", "1.2.250.1.213.1.1.4.248")
    assert "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code" not in values
    assert assertion.findtext("saml2:Subject/saml2:NameID", namespaces=NS) == "1920000015/crbio"
    assert assertion.findtext(
        "saml2:AuthnStatement/saml2:AuthnContext/saml2:AuthnContextClassRef", namespaces=NS
    ) == ("urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified")
    assert assertion.get("Version") == "2.0" and assertion.get("ID", "").startswith("_")


def test_vihf_secret_connection_and_responsible_person(sign: ClientCredential) -> None:
    context = SenderContext("920000015", "Lab", "1.2.3", responsible_rpps="10100012342", software_version="1")
    first = build_vihf(
        VihfIdentity(context, sign, "SA25^1.2.250.1.71.4.2.4", "LPS-1"), ins=INS, secret_connection=True
    )
    values = attributes(first)
    code = values["urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"]
    assert code.text == "INVISIBLE_REPRESENTANTS_LEGAUX^1.2.250.1.213.1.1.4.13"
    assert values["LPS_ID"].text == "LPS-1"
    assert "LPS_ID_HOMOLOGATION_DMP" not in values  # not configured
    assert first.findtext("saml2:Subject/saml2:NameID", namespaces=NS) == "810100012342"
    second = build_vihf(VihfIdentity(context, sign), ins=INS)
    assert second.get("ID") != first.get("ID")


def test_submission_set_signature(pki: Pki, sign: ClientCredential) -> None:
    package = etree.fromstring(
        b'<rim:RegistryPackage xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0" id="x"/>'
    )
    data = sign_submission_set(
        documents=[SignedDocument("1.2.250.1.999.1.1.2024.1001.1", N3)],
        submission_set_unique_id="2.25.1234",
        signature_unique_id="2.25.5678",
        credential=sign,
        submission_set=package,
    )
    config = XAdESSignatureConfiguration(
        expect_references=4, default_reference_c14n_method=CanonicalizationMethod.CANONICAL_XML_1_0
    )
    results = XAdESVerifier().verify(data, ca_pem_file=str(pki.ca_cert), expect_config=config)
    assert [etree.QName(r.signed_xml).localname for r in results] == [
        "Manifest",
        "SignedProperties",
        "KeyInfo",
        "SignatureProperty",
    ]
    signature = etree.fromstring(data)
    assert signature.get("Id") == signature_xml_id("2.25.5678") == "_2.25.5678"
    manifest = signature.find(f"{{{DS}}}Object/{{{DS}}}Manifest[@Id='{MANIFEST_ID}']")
    assert manifest is not None
    digests = {
        r.get("URI"): base64.b64decode(r.findtext(f"{{{DS}}}DigestValue") or "")
        for r in manifest.iterfind(f"{{{DS}}}Reference")
    }
    assert digests == {
        "urn:oid:1.2.250.1.999.1.1.2024.1001.1": hashlib.sha256(N3).digest(),
        "urn:oid:2.25.1234": hashlib.sha256(etree.tostring(package, method="c14n", exclusive=True)).digest(),
    }
    purpose = signature.find(f".//{{{DS}}}SignatureProperty[@Id='purposeOfSignature']")
    assert (
        purpose is not None
        and purpose.text == PURPOSE_OF_SIGNATURE
        and purpose.get("Target") == "#_2.25.5678"
    )
    qualifying = signature.find(".//{http://uri.etsi.org/01903/v1.3.2#}QualifyingProperties")
    assert qualifying is not None and qualifying.get("Target") == "#_2.25.5678"
    manifest_ref = signature.find(f"{{{DS}}}SignedInfo/{{{DS}}}Reference[@URI='#{MANIFEST_ID}']")
    assert (
        manifest_ref is not None and manifest_ref.get("Type") == "http://www.w3.org/2000/09/xmldsig#Manifest"
    )
    # A changed document digest in the manifest is caught.
    tampered = data.replace(
        base64.b64encode(hashlib.sha256(N3).digest()), base64.b64encode(hashlib.sha256(b"x").digest())
    )
    with pytest.raises(InvalidDigest):
        XAdESVerifier().verify(tampered, ca_pem_file=str(pki.ca_cert), expect_config=config)
