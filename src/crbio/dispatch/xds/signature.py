"""The signature of a DMP submission set: an XAdES-style detached XML signature (IHE DSG).

The DMP requires the submission set to be signed ("lot de soumission XDS signé (XAdES)").
The signature is an extra XDS document (``text/xml``) whose ``ds:Signature`` carries:

- a ``ds:Manifest Id="IHEManifest"`` with one ``ds:Reference`` per document,
  ``URI="urn:oid:<document uniqueId>"`` and the digest of the document's bytes, plus one
  reference to the submission set, ``URI="urn:oid:<submission set uniqueId>"``;
- a ``ds:SignatureProperty Id="purposeOfSignature"`` = ``1.2.840.10065.1.12.1.14`` (Source);
- XAdES ``QualifyingProperties`` (signing time, signing certificate digest) targeting the
  signature's ``Id``, derived from the signature document's uniqueId (see :func:`signature_xml_id`).

``SignedInfo`` references the Manifest (``Type=…#Manifest``), the purpose property, the
XAdES SignedProperties and the KeyInfo. Note §1.4 (DRIMbox, TLSi samples).

Unconfirmed choices, to check against the DMPi guide:

- algorithms: the ANS samples use RSA-SHA1 and C14N-with-comments; SHA-1 is refused by
  signxml by default and deprecated, so crbio uses RSA-SHA256 and SHA-256 (inclusive C14N 1.0 for
  SignedInfo, exclusive C14N for the manifest reference);
  which algorithms the DMP mandates today is unconfirmed;
- the XAdES namespace is signxml's v1.3.2 (the DRIMbox sample uses v1.1.1);
- the signature ``Id``: the samples set it to the signature document's uniqueId, but an OID
  is not an ``xs:ID`` (it starts with a digit) and schema-validating verifiers refuse it, so
  crbio prefixes it with an underscore;
- ``purposeOfSignature`` holds the code as text, as in the samples, followed by an empty
  HL7 v3 coded element carrying the same code: the XML-DSig schema requires an element child
  in a ``SignatureProperty`` (the samples' text-only form fails schema validation), and the
  text value read by the samples' consumers is unchanged;
- the submission-set reference: the samples carry a placeholder digest; crbio digests the
  exclusive-C14N form of the submitted SubmissionSet ``RegistryPackage`` when given, so the
  value is at least meaningful.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lxml import etree
from signxml.algorithms import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)
from signxml.signer import SignatureReference
from signxml.util import SigningSettings
from signxml.xades.xades import XAdESDataObjectFormat, XAdESSigner

from crbio.dispatch.tls import ClientCredential

__all__ = ["MANIFEST_ID", "PURPOSE_OF_SIGNATURE", "SignedDocument", "sign_submission_set", "signature_xml_id"]

_DS = "http://www.w3.org/2000/09/xmldsig#"
_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
_EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
_MANIFEST_TYPE = "http://www.w3.org/2000/09/xmldsig#Manifest"
_HL7 = "urn:hl7-org:v3"
_PURPOSE_SYSTEM = "1.2.840.10065.1.12"  # ASTM E1762 signature purposes

MANIFEST_ID = "IHEManifest"
PURPOSE_OF_SIGNATURE = "1.2.840.10065.1.12.1.14"
_PURPOSE_ID = "purposeOfSignature"
_PURPOSE_OBJECT_ID = "purposeOfSignatureObject"


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """A document covered by the manifest: its XDS uniqueId and its exact bytes."""

    unique_id: str
    content: bytes


def signature_xml_id(signature_unique_id: str) -> str:
    """The ``ds:Signature/@Id`` for a signature document uniqueId: ``_`` + the OID (a valid xs:ID)."""
    return f"_{signature_unique_id}"


def _ds(parent: etree._Element | None, tag: str, **attributes: str) -> etree._Element:
    if parent is None:
        return etree.Element(f"{{{_DS}}}{tag}", attributes, nsmap={"ds": _DS})
    return etree.SubElement(parent, f"{{{_DS}}}{tag}", attributes)


def _manifest_reference(manifest: etree._Element, uri: str, digest: bytes) -> None:
    reference = _ds(manifest, "Reference", URI=uri)
    _ds(reference, "DigestMethod", Algorithm=_SHA256)
    _ds(reference, "DigestValue").text = base64.b64encode(digest).decode("ascii")


def _exc_c14n(element: etree._Element) -> bytes:
    return bytes(etree.tostring(element, method="c14n", exclusive=True, with_comments=False))


class _SubmissionSetSigner(XAdESSigner):
    """signxml's XAdES signer, plus the IHE manifest and purpose-of-signature objects.

    The manifest is the signed data: it is handed to signxml as a detached ``ds:Object`` (so
    its reference digest is computed by signxml) and moved into the signature afterwards.
    """

    def __init__(self, signature_id: str, manifest_object: etree._Element) -> None:
        super().__init__(
            method=SignatureConstructionMethod.detached,
            signature_algorithm=SignatureMethod.RSA_SHA256,
            digest_algorithm=DigestAlgorithm.SHA256,
            # Inclusive C14N 1.0 for SignedInfo and for the references signxml writes without
            # a Transform (XAdES properties, KeyInfo, the purpose): it is XML-DSig's default for
            # transform-less references, so any verifier recomputes the same digests.
            c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_0,
            data_object_format=XAdESDataObjectFormat(Description="IHE DSG manifest", MimeType="text/xml"),
        )
        self._signature_id = signature_id
        self._manifest_object = manifest_object
        # Before signxml's own annotators: the Id must exist when XAdES targets it.
        self.signature_annotators.insert(0, self._set_id)
        self.signature_annotators.append(self._add_objects)

    def _set_id(self, sig_root: etree._Element, signing_settings: SigningSettings) -> None:
        sig_root.set("Id", self._signature_id)

    def _add_objects(self, sig_root: etree._Element, signing_settings: SigningSettings) -> None:
        signed_info = sig_root.find(f"{{{_DS}}}SignedInfo")
        assert signed_info is not None
        for reference in signed_info.iterfind(f"{{{_DS}}}Reference"):
            if reference.get("URI") == f"#{MANIFEST_ID}":
                reference.set("Type", _MANIFEST_TYPE)
        sig_root.append(self._manifest_object)
        purpose_object = _ds(None, "Object", Id=_PURPOSE_OBJECT_ID)
        properties = _ds(purpose_object, "SignatureProperties")
        purpose = _ds(properties, "SignatureProperty", Id=_PURPOSE_ID, Target=f"#{self._signature_id}")
        purpose.text = PURPOSE_OF_SIGNATURE
        etree.SubElement(
            purpose,
            f"{{{_HL7}}}code",
            {"code": PURPOSE_OF_SIGNATURE, "codeSystem": _PURPOSE_SYSTEM, "displayName": "Source"},
            nsmap={"hl7": _HL7},
        )
        sig_root.append(purpose_object)
        # Like signxml's own XAdES references: no Transform, so the SignedInfo algorithm.
        reference = _ds(signed_info, "Reference", URI=f"#{_PURPOSE_ID}")
        _ds(reference, "DigestMethod", Algorithm=_SHA256)
        canonical = etree.tostring(purpose, method="c14n", exclusive=False, with_comments=False)
        _ds(reference, "DigestValue").text = base64.b64encode(hashlib.sha256(canonical).digest()).decode(
            "ascii"
        )


def sign_submission_set(
    *,
    documents: Sequence[SignedDocument],
    submission_set_unique_id: str,
    signature_unique_id: str,
    credential: ClientCredential,
    submission_set: etree._Element | None = None,
) -> bytes:
    """The signature document of a submission set, as UTF-8 XML bytes.

    Args:
        documents: The documents of the submission set (uniqueId and exact bytes).
        submission_set_unique_id: The SubmissionSet uniqueId (an OID).
        signature_unique_id: The signature document's uniqueId; the ``ds:Signature`` Id is
            :func:`signature_xml_id` of it.
        credential: The ORG SIGN certificate and key.
        submission_set: The SubmissionSet ``rim:RegistryPackage`` as submitted; its exclusive
            C14N form is what the submission-set reference digests (a placeholder otherwise).
    """
    manifest_object = _ds(None, "Object")
    manifest = _ds(manifest_object, "Manifest", Id=MANIFEST_ID)
    for document in documents:
        _manifest_reference(
            manifest, f"urn:oid:{document.unique_id}", hashlib.sha256(document.content).digest()
        )
    set_digest = hashlib.sha256(_exc_c14n(submission_set) if submission_set is not None else b"\0").digest()
    _manifest_reference(manifest, f"urn:oid:{submission_set_unique_id}", set_digest)
    signer = _SubmissionSetSigner(signature_xml_id(signature_unique_id), manifest_object)
    cert: list[Any] = [credential.certificate, *credential.chain]
    signature: etree._Element = signer.sign(
        manifest_object,
        key=credential.private_key,
        cert=cert,
        # Exclusive C14N for the manifest: its digest must not depend on the namespaces of the
        # signature it is moved into after signxml computed it.
        reference_uri=[
            SignatureReference(
                URI=f"#{MANIFEST_ID}", c14n_method=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
            )
        ],
    )
    return bytes(etree.tostring(signature, xml_declaration=True, encoding="UTF-8"))
