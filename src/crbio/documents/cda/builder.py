"""Render the CDA R2 N3 and N1 documents of a report from the Jinja2 templates."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any, Final

from markupsafe import Markup

from crbio.documents.cda.environment import derived_oid, environment
from crbio.errors import BuildError
from crbio.model import DocumentInfo, Report

__all__ = ["DEFAULT_STYLESHEET_HREF", "build_n1", "build_n3", "n1_document_info"]

#: Written in the xml-stylesheet processing instruction unless the laboratory has its own.
DEFAULT_STYLESHEET_HREF: Final = "crbio-cda.xsl"

_N3_TEMPLATES: Final = (
    ("2.16.840.1.113883.2.8.2.1", None),  # HL7 France
    ("1.2.250.1.213.1.1.1.1", None),  # CI-SIS
    ("1.3.6.1.4.1.19376.1.3.3", None),  # IHE PaLM XD-LAB
    ("1.2.250.1.213.1.1.1.55", "2024.01"),  # CI-SIS CR-BIO, volet 2024.01
)
_N1_TEMPLATES: Final = (
    ("2.16.840.1.113883.2.8.2.1", None),
    ("1.2.250.1.213.1.1.1.1", None),
    ("1.3.6.1.4.1.19376.1.2.20", None),  # IHE XDS-SD: scanned/unstructured document
)
_CONFIDENTIALITY: Final = {"N": "Normal", "R": "Restreint", "V": "Très restreint"}


def n1_document_info(document: DocumentInfo) -> DocumentInfo:
    """The identity of the N1 document that goes with a given N3 version.

    The N1 is a document of its own, so it needs its own id and set id; they are
    derived from the N3's (OIDs under 2.25) so that they are stable, need no
    extra input, and an amended N1 replaces the N1 of the replaced version.
    """
    if document.id is None or document.set_id is None:
        raise BuildError("the document id must be resolved before building", code="build.unresolved")
    return dataclasses.replace(
        document,
        id=derived_oid(document.id, "n1"),
        set_id=derived_oid(document.set_id, "n1"),
        replaces=derived_oid(document.replaces, "n1") if document.replaces else None,
    )


def build_n3(report: Report, pdf: bytes, *, stylesheet_href: str = DEFAULT_STYLESHEET_HREF) -> bytes:
    """The CDA R2 N3 CR-BIO of a resolved report, with ``pdf`` embedded as its PDF copy."""
    return _render("cr-bio-n3.xml.j2", report, report.document, _N3_TEMPLATES, pdf, stylesheet_href)


def build_n1(report: Report, pdf: bytes, *, stylesheet_href: str = DEFAULT_STYLESHEET_HREF) -> bytes:
    """The CDA R2 N1 of a resolved report: the same header around ``pdf`` (byte-identical copy)."""
    return _render(
        "cr-bio-n1.xml.j2", report, n1_document_info(report.document), _N1_TEMPLATES, pdf, stylesheet_href
    )


def _render(
    template: str, report: Report, doc: DocumentInfo, template_ids: Any, pdf: bytes, stylesheet_href: str
) -> bytes:
    if doc.id is None or doc.set_id is None or doc.created_at is None:
        raise BuildError("the document id must be resolved before building", code="build.unresolved")
    context = {
        "report": report,
        "doc": doc,
        "template_ids": template_ids,
        "confidentiality_display": _CONFIDENTIALITY[report.document.confidentiality.value],
        # A report read from a CDA may name no specimen: the care context's start stands in.
        "service_start": min(
            (s.received_at or s.collected_at for s in report.specimens), default=report.encounter.start
        ),
        "notices": _notices(report),
        "stylesheet_href": stylesheet_href,
        # Base64 has no character to escape: marked safe, the 70 kB are not scanned again.
        "pdf_base64": Markup(base64.b64encode(pdf).decode("ascii")),
    }
    return environment().get_template(template).render(context).encode("utf-8")


def _notices(report: Report) -> list[str]:
    """Mentions the reader must not miss, shown in a dedicated comment section."""
    doc = report.document
    notices = []
    if doc.replaces:
        notices.append(
            f"Ce compte rendu annule et remplace la version {doc.version - 1} (document {doc.replaces})."
        )
    if doc.before_validation:
        notices.append(
            "Résultats transmis avant validation biologique, en raison de l'urgence : "
            "un compte rendu validé suivra."
        )
    return notices
