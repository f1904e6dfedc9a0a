"""Build the three documents of a report: PDF/A-1b, CDA R2 N3 (PDF embedded) and CDA R2 N1."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from crbio._files import write_atomically
from crbio.documents.cda import DEFAULT_STYLESHEET_HREF, build_n1, build_n3, n1_document_info
from crbio.documents.context import BuildContext, resolve_document
from crbio.documents.pdf import render_pdf
from crbio.errors import ValidationFailed
from crbio.model import Report

__all__ = ["Documents", "build"]

log = logging.getLogger("crbio.build")


@dataclass(frozen=True)
class Documents:
    """The documents built from one report.

    Attributes:
        report: The report with its document id, set id and creation time resolved.
        n3: The CDA R2 N3 CR-BIO (UTF-8 XML bytes), embedding ``pdf``.
        n1: The CDA R2 N1 wrapping ``pdf``.
        pdf: The PDF/A-1b rendering.
        stylesheet_href: The stylesheet the documents point to for self-presentation.
    """

    report: Report
    n3: bytes
    n1: bytes
    pdf: bytes
    stylesheet_href: str = DEFAULT_STYLESHEET_HREF

    @property
    def document_id(self) -> str:
        """The OID of the N3 document (its DMP uniqueId)."""
        assert self.report.document.id is not None
        return self.report.document.id

    @property
    def n1_document_id(self) -> str:
        """The OID of the N1 document."""
        n1_id = n1_document_info(self.report.document).id
        assert n1_id is not None
        return n1_id

    def files(self, stem: str) -> dict[str, bytes]:
        """The documents under their file names: ``<stem>.n3.xml``, ``<stem>.n1.xml``, ``<stem>.pdf``."""
        return {f"{stem}.n3.xml": self.n3, f"{stem}.n1.xml": self.n1, f"{stem}.pdf": self.pdf}

    def write(self, directory: str | Path, *, stem: str | None = None) -> list[Path]:
        """Write the documents into ``directory``, all or nothing.

        Each file is written to a temporary name then renamed, so a reader never sees a
        partial document, and a failure leaves no file behind. When the documents use
        crbio's default stylesheet, it is written beside them so they present themselves.
        """
        from crbio.presentation import stylesheet_path

        target = Path(directory)
        files = self.files(stem or self.document_id)
        if self.stylesheet_href == DEFAULT_STYLESHEET_HREF:
            files[DEFAULT_STYLESHEET_HREF] = stylesheet_path().read_bytes()
        return write_atomically(target, files)


def build(
    report: Report,
    *,
    context: BuildContext | None = None,
    stylesheet_href: str | None = None,
    validate: bool = True,
) -> Documents:
    """Build the PDF/A-1b, the CDA R2 N3 and the CDA R2 N1 of a validated report.

    Missing document ids and creation time are assigned from ``context`` (the system
    clock and UUID-based OIDs by default). The documents point to ``stylesheet_href``,
    else the laboratory's stylesheet, else crbio's own. With ``validate`` (the default)
    both CDA documents are checked against the official XSD and crbio's rules before
    they are returned.

    Raises:
        InputError: the report cannot be turned into documents (e.g. inconsistent times).
        ValidationFailed: a produced document does not conform (a crbio defect: please report it).
        BuildError: the documents could not be produced.
    """
    resolved = resolve_document(report, context or BuildContext())
    href = stylesheet_href or resolved.laboratory.stylesheet or DEFAULT_STYLESHEET_HREF
    pdf = render_pdf(resolved)
    documents = Documents(
        report=resolved,
        n3=build_n3(resolved, pdf, stylesheet_href=href),
        n1=build_n1(resolved, pdf, stylesheet_href=href),
        pdf=pdf,
        stylesheet_href=href,
    )
    if validate:
        from crbio.validation.validate import validate_document

        for label, data in (("N3", documents.n3), ("N1", documents.n1)):
            outcome = validate_document(data, label=f"{documents.document_id} {label}")
            if not outcome.ok:
                raise ValidationFailed(outcome)
    log.info("built document %s (version %s)", documents.document_id, resolved.document.version)
    return documents
