"""Validate a CR-BIO document with every available check."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crbio._xml import parse_xml
from crbio.validation.report import Finding, ValidationReport
from crbio.validation.rules import check_rules, embedded_pdf, is_n1
from crbio.validation.xsd import validate_xsd

if TYPE_CHECKING:
    from crbio.validation.anskit import AnsKit

__all__ = ["validate_document"]


def validate_document(
    data: bytes,
    *,
    label: str,
    ans_kit: AnsKit | None = None,
    pdfa: bool = False,
) -> ValidationReport:
    """Check a CDA R2 N3 or N1 CR-BIO: official XSD, crbio's rules, and optionally more.

    Args:
        data: The document as bytes.
        label: An opaque name for the document in the report (file name, document id).
        ans_kit: The official ANS kit; its CR-BIO volet applies to an N3, its transverse
            profiles to both (an N1 is checked by ``ans_kit.transverse()``).
        pdfa: Also validate the embedded PDF against PDF/A-1b.

    Raises:
        InputError: ``data`` is not well-formed, safe XML.
    """
    tree = parse_xml(data, label=label)
    report = validate_xsd(tree, label=label).merged(check_rules(tree, label=label))
    if pdfa:
        from crbio.documents.pdf import check_pdfa

        pdf = embedded_pdf(tree)
        findings: tuple[Finding, ...] = tuple(check_pdfa(pdf)) if pdf is not None else ()
        report = report.merged(ValidationReport(label, ("pdfa",), findings))
    if ans_kit is not None:
        # The CR-BIO volet applies to the structured N3; an N1 only meets the transverse profiles.
        report = report.merged((ans_kit.transverse() if is_n1(tree) else ans_kit).check(data, label=label))
    return report
