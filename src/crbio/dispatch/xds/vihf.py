"""The VIHF: the signed SAML 2.0 assertion that authenticates an automated sender to the DMP.

The DMP trusts the structure, not a person: in indirect authentication the laboratory's
software asserts who it is (its FINESS, activity sector, software name and CNDA
homologation), which patient record it touches (the INS) and why (normal access), and signs
the assertion with the structure's ORG SIGN certificate. The attribute set follows the ANS
"Mapping VIHF pour le DMP" table and its "VIHF avec automate" example
(``IG-hl7v2-volet-transmission-document-cda-r2`` ``mapping.md``); see the domain note §1.3.

VIHF_Version is ``3.0`` as in every example and sample code, although the IG table says
``4.0`` (note §5.1, unconfirmed). The value format of the secret-connection
``confidentiality-code`` attribute (``code^codeSystem``) is also unconfirmed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.x509 import Certificate
from lxml import etree
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)
from signxml.signer import XMLSigner

from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.tls import ClientCredential
from crbio.dispatch.xds.metadata import ins_cx

__all__ = [
    "DEFAULT_SECTEUR_ACTIVITE",
    "SAML",
    "VIHF_VERSION",
    "VihfIdentity",
    "build_vihf",
    "issuer_name",
    "vihf_attributes",
]

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
_DS = "http://www.w3.org/2000/09/xmldsig#"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_HL7 = "urn:hl7-org:v3"

VIHF_VERSION = "3.0"
#: "Laboratoire de biologie médicale" in TRE_R02-SecteurActivite (JDV_J61).
DEFAULT_SECTEUR_ACTIVITE = "SA25^1.2.250.1.71.4.2.4"

_ROLE_SYSTEM = "1.2.250.1.213.1.1.4.6"  # TRE_A00-ProducteurDocNonPS
_PURPOSE_SYSTEM = "1.2.250.1.213.1.1.4.248"
_VISIBILITY_SYSTEM = "1.2.250.1.213.1.1.4.13"  # TRE_A07-StatutVisibiliteDocument
_AUTHN_UNSPECIFIED = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"


@dataclass(frozen=True, slots=True)
class VihfIdentity:
    """Who the assertion speaks for, from the sender's configuration.

    Attributes:
        context: The sending laboratory and software.
        credential: The ORG SIGN certificate and key that sign the assertion.
        secteur_activite: ``code^codeSystem`` of the structure's activity sector (JDV_J61).
        lps_id: Optional ``LPS_ID`` (an identifier of the software installation).
    """

    context: SenderContext
    credential: ClientCredential
    secteur_activite: str = DEFAULT_SECTEUR_ACTIVITE
    lps_id: str | None = None


def issuer_name(certificate: Certificate) -> str:
    """The certificate's subject DN in RFC 2253/4514 form (``CN=…,O=…,C=FR``), as the Issuer."""
    return certificate.subject.rfc4514_string()


def _name_id(context: SenderContext) -> str:
    # For automated processing the NameID is the person responsible for it; without one
    # configured, the IG example's "structure id / local id" form names the software.
    if context.responsible_rpps:
        return f"8{context.responsible_rpps}"
    return f"1{context.laboratory_finess}/{context.software_name}"


def vihf_attributes(
    identity: VihfIdentity, *, ins: tuple[str, str], secret_connection: bool
) -> list[tuple[str, str | etree._Element]]:
    """The VIHF attributes in order: (Name, text value or an HL7 v3 coded element)."""
    context = identity.context
    role = etree.Element(
        f"{{{_HL7}}}Role",
        {
            "code": "AUTOMATE",
            "codeSystem": _ROLE_SYSTEM,
            "displayName": "AUTOMATE",
            f"{{{_XSI}}}type": "CE",
        },
        nsmap={None: _HL7, "xsi": _XSI},
    )
    purpose = etree.Element(
        f"{{{_HL7}}}PurposeOfUse",
        {
            "code": "normal",
            "codeSystem": _PURPOSE_SYSTEM,
            "codeSystemName": "mode acces VIHF 1.0",
            "displayName": "Accès normal",
            f"{{{_XSI}}}type": "CE",
        },
        nsmap={None: _HL7, "xsi": _XSI},
    )
    attributes: list[tuple[str, str | etree._Element]] = [
        ("VIHF_Version", VIHF_VERSION),
        ("Authentification_Mode", "INDIRECTE"),
        ("Identifiant_Structure", f"1{context.laboratory_finess}"),
        ("Secteur_Activite", identity.secteur_activite),
        ("urn:oasis:names:tc:xspa:1.0:subject:subject-id", context.software_name),
        ("urn:oasis:names:tc:xacml:2.0:subject:role", role),
        ("urn:oasis:names:tc:xacml:2.0:resource:resource-id", ins_cx(ins)),
        ("Ressource_URN", "urn:dmp"),
        ("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse", purpose),
    ]
    if secret_connection:
        attributes.append(
            (
                "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code",
                f"INVISIBLE_REPRESENTANTS_LEGAUX^{_VISIBILITY_SYSTEM}",
            )
        )
    attributes.append(("LPS_Nom", context.software_name))
    attributes.append(("LPS_Version", context.software_version))
    if identity.lps_id:
        attributes.append(("LPS_ID", identity.lps_id))
    if context.dmp_homologation:
        attributes.append(("LPS_ID_HOMOLOGATION_DMP", context.dmp_homologation))
    return attributes


def _saml(parent: etree._Element, tag: str, **attributes: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{SAML}}}{tag}", attributes)


def build_vihf(
    identity: VihfIdentity,
    *,
    ins: tuple[str, str],
    secret_connection: bool = False,
    now: datetime | None = None,
) -> etree._Element:
    """A signed VIHF ``saml2:Assertion`` for one request about the patient ``ins``.

    The enveloped XML-DSig (exclusive c14n, RSA-SHA256, SHA-256, the certificate and its
    chain in KeyInfo) covers the whole assertion through its ``ID``, and sits right after
    ``Issuer`` as the SAML schema requires. ``secret_connection`` adds the "connexion
    secrète" confidentiality code (minors). A new ``ID`` is drawn for every call.
    """
    instant = (now or datetime.now(UTC)).astimezone(UTC)
    stamp = instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"
    assertion_id = f"_{uuid.uuid4()}"
    assertion = etree.Element(
        f"{{{SAML}}}Assertion",
        {"ID": assertion_id, "IssueInstant": stamp, "Version": "2.0"},
        nsmap={"saml2": SAML, "xsi": _XSI},
    )
    issuer = _saml(assertion, "Issuer", Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName")
    issuer.text = issuer_name(identity.credential.certificate)
    # signxml replaces this placeholder, which fixes where the signature goes.
    etree.SubElement(assertion, f"{{{_DS}}}Signature", Id="placeholder", nsmap={"ds": _DS})
    subject = _saml(assertion, "Subject")
    _saml(subject, "NameID").text = _name_id(identity.context)
    authn = _saml(assertion, "AuthnStatement", AuthnInstant=stamp)
    _saml(_saml(authn, "AuthnContext"), "AuthnContextClassRef").text = _AUTHN_UNSPECIFIED
    statement = _saml(assertion, "AttributeStatement")
    for name, value in vihf_attributes(identity, ins=ins, secret_connection=secret_connection):
        holder = _saml(_saml(statement, "Attribute", Name=name), "AttributeValue")
        if isinstance(value, str):
            holder.text = value
        else:
            holder.append(value)
    signer = XMLSigner(
        method=SignatureConstructionMethod.enveloped,
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signer.namespaces = {"ds": _DS}
    credential = identity.credential
    signed: etree._Element = signer.sign(
        assertion,
        key=credential.private_key,
        cert=[credential.certificate, *credential.chain],
        reference_uri=f"#{assertion_id}",
        id_attribute="ID",
    )
    return signed
