"""Read a CR-BIO CDA R2 N3 (volets BIO-CR-BIO 2021.01, 2023.01, 2024.01) into the report model.

So a laboratory can re-emit an older CR-Bio in the current volet (``crbio build old.xml``) and
merge a subcontractor's results into its own report (:mod:`crbio.merge`).

Reading is safe (:func:`crbio._xml.parse_xml`: no DTD, no entities, no network, bounded size
and depth) and strict: a document that is not a CR-BIO (another document type, a CDA of
another kind), an N1 that only wraps a PDF, or a result the model cannot hold is refused with
an :class:`~crbio.errors.InputError` naming the element by an XPath-like location, never its
content. What the model does not hold around the results is listed as
:class:`~crbio.input.cda_common.Omission` s (and logged as warnings by :func:`read_cda`): see
:mod:`crbio.input.cda_header` and :mod:`crbio.input.cda_results` for what is read.

The volet is detected from the CR-BIO templateId's extension (``2023.01``, ``2024.01``…); the
2021.01 volet wrote no extension, so a document without one is reported as such (``None``).
The ANS's "auto-presentable" form, an XSL stylesheet carrying the CDA, is read too.

Document ids (``ids``): a document built from a read report is a new document of the
laboratory that builds it, so by default (``"new"``) the report carries no id and the build
assigns one (version 1, a set of its own). ``"replace"`` makes it the next version of the read
document (same set id, version + 1, ``relatedDocument typeCode="RPLC"`` on the read id): the
CI-SIS way for a laboratory to re-emit its own document in the current volet, so the DMP and
recipients replace the old one instead of holding both. ``"keep"`` keeps every id, the version
and the creation time as read: for inspection and comparison only, since two different
documents must never share an id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from lxml import etree

from crbio._files import read_input
from crbio._xml import parse_xml
from crbio.errors import InputError
from crbio.input.cda_common import HEADER_ERROR, HL7, Omission, Reading, child, children
from crbio.input.cda_header import Header, read_header
from crbio.input.cda_results import pdf_of, read_body
from crbio.model import DocumentInfo, Report

__all__ = [
    "CR_BIO_TEMPLATE",
    "MAX_CDA_BYTES",
    "CdaReading",
    "DocumentIds",
    "Omission",
    "UnstructuredCda",
    "load_cda",
    "read_cda",
    "read_cda_file",
    "read_cda_document",
    "read_cda_unstructured",
]

log = logging.getLogger("crbio.input.cda")

DocumentIds = Literal["new", "replace", "keep"]

#: Largest CDA accepted: far above a CR-BIO with its PDF (libxml2 caps one base64 text at 10 MB).
MAX_CDA_BYTES: Final = 50 * 1024 * 1024
#: The CI-SIS CR-BIO document template; its extension names the volet (none in 2021.01).
CR_BIO_TEMPLATE: Final = "1.2.250.1.213.1.1.1.55"
_XD_LAB = "1.3.6.1.4.1.19376.1.3.3"  # IHE PaLM XD-LAB, which every CR-BIO N3 declares
_LAB_REPORT_CODE = "11502-2"  # LOINC "CR d'examens biologiques"
_XSL = "http://www.w3.org/1999/XSL/Transform"

#: Error codes: the document is not a CR-BIO; it is an N1 (PDF only) where structure is needed.
TYPE_ERROR: Final = "input.cda.type"
UNSTRUCTURED_ERROR: Final = "input.cda.unstructured"


@dataclass(frozen=True)
class CdaReading:
    """A CR-BIO N3 read into the model.

    Attributes:
        report: The report; its document ids follow the ``ids`` choice of the reading.
        volet: The volet version the document declares (``"2024.01"``…), None when it declares
            none (as the 2021.01 volet wrote it).
        omissions: What the model does not hold and was left out, each with its location.
        pdf: The document's PDF copy (FR-Document-PDF-copie), when it has one.
        source_id: The read document's own id (OID root), when it is one.
    """

    report: Report
    volet: str | None
    omissions: tuple[Omission, ...]
    pdf: bytes | None
    source_id: str | None


@dataclass(frozen=True)
class UnstructuredCda:
    """What is read of a CR-BIO whose results cannot be read (an N1, or an N3 the reader refuses).

    Attributes:
        header: The header: patient, laboratory, biologist, validation time.
        pdf: The PDF the document carries (N1 body or N3 PDF copy), None when it has none.
        structured: Whether the document is an N3 (its results exist but could not be read).
        volet: As in :class:`CdaReading`.
    """

    header: Header
    pdf: bytes | None
    structured: bool
    volet: str | None


def read_cda(data: bytes, *, label: str, ids: DocumentIds = "new") -> Report:
    """Read a CR-BIO CDA R2 N3 into a report; what the model does not hold is logged as warnings.

    Args:
        data: The document's bytes (a CDA, or the ANS "auto-presentable" XSL carrying one).
        label: A name for the document in messages (its file name); never patient data.
        ids: Which ids the report keeps: ``"new"`` (none: a new document), ``"replace"`` (the
            next version of the read document) or ``"keep"`` (as read; not for sending).

    Raises:
        InputError: unsafe or malformed XML, not a CR-BIO, an N1, or a result the model cannot
            hold; the message names the element.
    """
    reading = read_cda_document(data, label=label, ids=ids)
    for omission in reading.omissions:
        log.warning("%s: not carried over: %s", label, omission)
    return reading.report


def load_cda(path: str | Path, *, ids: DocumentIds = "new") -> Report:
    """Read a CR-BIO CDA R2 N3 file into a report (see :func:`read_cda`).

    As for the other readers of :func:`crbio.input.load_report`, error messages name the element
    and leave the file to the caller, which knows it (the command line prefixes its name).

    Raises:
        InputError: the file cannot be read, or :func:`read_cda` refuses it.
    """
    file = Path(path)
    try:
        return read_cda(read_cda_file(file), label=file.name, ids=ids)
    except InputError as e:
        raise InputError(e.message.removeprefix(f"{file.name}: "), code=e.code) from None


def read_cda_document(data: bytes, *, label: str, ids: DocumentIds = "new") -> CdaReading:
    """Read a CR-BIO CDA R2 N3: the report, the volet, what was left out, the PDF copy.

    Raises:
        InputError: as :func:`read_cda`.
    """
    reading, volet, structured = _open(data, label)
    if not structured:
        raise InputError(
            f"{label}: ClinicalDocument/component/nonXMLBody: a CDA R2 N1 holds a PDF only, its results "
            "cannot be read (crbio merge can attach it to a report)",
            code=UNSTRUCTURED_ERROR,
        )
    header = read_header(reading)
    body = read_body(reading, default_time=header.validated_at)
    root = reading.root
    if header.prescriber is None:
        reading.fail(
            root, "has no participant typeCode='REF' (the prescriber is required)", code=HEADER_ERROR
        )
    if header.encounter is None:
        encounter = child(root, "componentOf", "encompassingEncounter")
        reading.fail(
            root if encounter is None else encounter,
            "the encompassingEncounter with its code and effectiveTime is required",
            code=HEADER_ERROR,
        )
    if not body.chapters:
        reading.fail(root, "has no FR-CR-BIO-Chapitre section: no result to read")
    report = Report(
        document=_document(
            reading, header, ids, before_validation=header.before_validation or body.before_validation
        ),
        laboratory=header.laboratory,
        biologist=header.biologist,
        validated_at=header.validated_at,
        patient=header.patient,
        prescriber=header.prescriber,
        encounter=header.encounter,
        specimens=tuple(body.specimens),
        chapters=tuple(body.chapters),
        copy_recipients=header.copy_recipients,
        executing_laboratories=tuple(body.executing_laboratories),
        order_id=header.order_id,
        prescribed_at=header.prescribed_at,
        conclusion=body.conclusion,
        comments=tuple(body.comments),
        attachments=tuple(body.attachments),
    )
    return CdaReading(report, volet, tuple(reading.omissions), body.pdf, header.document.id)


def read_cda_unstructured(data: bytes, *, label: str) -> UnstructuredCda:
    """Read the header and the PDF of a CR-BIO (N1 or N3), leaving its results aside.

    For merging a document whose results cannot be read: the header still says whose results
    they are and which laboratory issued them.

    Raises:
        InputError: unsafe or malformed XML, not a CR-BIO, or a header the model cannot hold.
    """
    reading, volet, structured = _open(data, label)
    return UnstructuredCda(read_header(reading), pdf_of(reading), structured, volet)


def read_cda_file(path: str | Path) -> bytes:
    """The bytes of a CDA file, refusing one above :data:`MAX_CDA_BYTES` before reading it.

    Raises:
        InputError: the file is too large or cannot be read.
    """
    return read_input(path, max_bytes=MAX_CDA_BYTES)


def _open(data: bytes, label: str) -> tuple[Reading, str | None, bool]:
    """Parse safely, find the ClinicalDocument, check it is a CR-BIO: (reading, volet, is N3)."""
    tree = parse_xml(data, label=label, max_bytes=MAX_CDA_BYTES)
    root = _clinical_document(tree.getroot(), label)
    reading = Reading(root, label)
    templates = {t.get("root"): t.get("extension") for t in children(root, "templateId")}
    code = child(root, "code")
    document_code = code.get("code") if code is not None else None
    structured = child(root, "component", "structuredBody") is not None
    unstructured = child(root, "component", "nonXMLBody") is not None
    if not structured and not unstructured:
        reading.fail(root, "has neither a structuredBody nor a nonXMLBody", code=TYPE_ERROR)
    is_cr_bio = CR_BIO_TEMPLATE in templates or (_XD_LAB in templates and document_code == _LAB_REPORT_CODE)
    if not is_cr_bio and not (unstructured and document_code == _LAB_REPORT_CODE):
        shown = ", ".join(sorted(r for r in templates if r)) or "none"
        reading.fail(
            root,
            f"is not a CR-BIO (document code {document_code or 'absent'}, templateId {shown}): crbio reads "
            f"CR d'examens biologiques ({_LAB_REPORT_CODE}) with the CR-BIO template {CR_BIO_TEMPLATE}",
            code=TYPE_ERROR,
        )
    return reading, templates.get(CR_BIO_TEMPLATE) or None, structured


def _clinical_document(root: etree._Element, label: str) -> etree._Element:
    """The ClinicalDocument: the root, or the one an ANS "auto-presentable" XSL stylesheet carries."""
    if root.tag == f"{{{HL7}}}ClinicalDocument":
        return root
    if root.tag == f"{{{_XSL}}}stylesheet":
        # The auto-presentable form keeps the CDA in a top-level data element of the stylesheet.
        found = [
            d for top in root for d in top if isinstance(d.tag, str) and d.tag == f"{{{HL7}}}ClinicalDocument"
        ]
        if len(found) == 1:
            return found[0]
    name = etree.QName(root)
    raise InputError(
        f"{label}: {name.localname}: not a CDA document (the root element is not an HL7 v3 ClinicalDocument)",
        code=TYPE_ERROR,
    )


def _document(reading: Reading, header: Header, ids: DocumentIds, *, before_validation: bool) -> DocumentInfo:
    read = header.document
    if ids == "new":
        return DocumentInfo(confidentiality=read.confidentiality, before_validation=before_validation)
    doc_id = child(reading.root, "id")
    assert doc_id is not None  # read_header required it
    if read.id is None:
        reading.fail(
            doc_id,
            "the document id is not an OID without extension: it cannot be kept or replaced",
            code=HEADER_ERROR,
        )
    if read.set_id is None:
        reading.fail(
            reading.root,
            "has no setId that is an OID without extension: it cannot be kept or replaced",
            code=HEADER_ERROR,
        )
    if ids == "replace":
        return DocumentInfo(
            set_id=read.set_id,
            version=read.version + 1,
            replaces=read.id,
            confidentiality=read.confidentiality,
            before_validation=before_validation,
        )
    if read.version > 1 and read.replaces is None:
        reading.fail(
            reading.root, "a version above 1 without relatedDocument RPLC cannot be kept", code=HEADER_ERROR
        )
    return DocumentInfo(
        id=read.id,
        set_id=read.set_id,
        version=read.version,
        replaces=read.replaces,
        created_at=read.created_at,
        confidentiality=read.confidentiality,
        before_validation=before_validation,
    )
