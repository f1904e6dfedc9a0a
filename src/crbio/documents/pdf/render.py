"""Render a report as a PDF/A-1b: lay out the blocks, draw the pages, finish with pikepdf."""

from __future__ import annotations

import logging
from datetime import datetime

import pikepdf
import reportlab

import crbio
from crbio.documents.pdf import french
from crbio.documents.pdf.content import DOCUMENT_TITLE, report_blocks
from crbio.documents.pdf.datamatrix import Symbol, ins_datamatrix_payload, symbol
from crbio.documents.pdf.layout import Frame, Page, paginate
from crbio.documents.pdf.painter import Painter
from crbio.documents.pdf.pdfa import Metadata, finish_pdfa
from crbio.documents.pdf.styles import PAGE, Colors, styles
from crbio.documents.pdf.text import Line, Span, wrap
from crbio.documents.pdf.writer import Document
from crbio.errors import BuildError, CrbioError
from crbio.model import Report
from crbio.model.common import format_date

__all__ = ["METADATA_TITLE", "render_pdf"]

log = logging.getLogger("crbio.pdf")

#: The PDF's Info/XMP title: the document type only, never patient data.
METADATA_TITLE = "Compte rendu d'examens biologiques"
_CREATOR = f"crbio {crbio.__version__}"
_PRODUCER = f"crbio {crbio.__version__} (reportlab {reportlab.Version}, pikepdf {pikepdf.__version__})"

_FIRST = Frame(PAGE.margin_x, PAGE.height - PAGE.margin_top, PAGE.margin_bottom)
_HEADER_GAP = 8.0  # between the running header's rule and the flow


def render_pdf(report: Report) -> bytes:
    """Render a report as PDF/A-1b bytes, with the INS Datamatrix when the identity is qualified.

    The report's document must be resolved (id and creation time set, see
    :func:`crbio.documents.context.resolve_document`). The output depends on the report
    only: the same report always gives the same bytes.

    Raises:
        BuildError: The document is not resolved, or the PDF could not be produced.
    """
    doc = report.document
    if doc.id is None or doc.created_at is None:
        raise BuildError(
            "the document id and creation time must be resolved before rendering the PDF",
            code="pdf.unresolved",
        )
    payload = ins_datamatrix_payload(report.patient)
    try:
        pages, header = _layout(report, symbol(payload) if payload is not None else None)
        pdf = finish_pdfa(_draw(report, pages, header), _metadata(report, doc.created_at))
    except CrbioError:
        raise
    except (pikepdf.PdfError, ValueError, TypeError, KeyError, IndexError, OSError) as exc:
        # The original message may quote report text: only its type is kept.
        log.error("PDF rendering failed for document %s (%s)", doc.id, type(exc).__name__)
        raise BuildError(
            f"the PDF of document {doc.id} could not be produced ({type(exc).__name__})", code="pdf.render"
        ) from None
    log.debug("rendered the PDF of document %s: %d page(s), %d bytes", doc.id, len(pages), len(pdf))
    return pdf


def _metadata(report: Report, created: datetime) -> Metadata:
    """The document information and XMP metadata of a report's PDF, created at ``created``."""
    return Metadata(
        title=METADATA_TITLE,
        author=report.laboratory.name,
        creator=_CREATOR,
        producer=_PRODUCER,
        created=created,
    )


def _layout(report: Report, ins_symbol: Symbol | None) -> tuple[list[Page], list[Line]]:
    """The paginated content, and the running header of pages 2 and after."""
    header = _running_header(report)
    others = Frame(
        PAGE.margin_x, _FIRST.top - sum(line.height for line in header) - _HEADER_GAP, PAGE.margin_bottom
    )
    return paginate(report_blocks(report, ins_symbol), _FIRST, others), header


def _draw(report: Report, pages: list[Page], header: list[Line]) -> pikepdf.Pdf:
    document = Document(PAGE.width, PAGE.height)
    painter = Painter(document)
    count = len(pages)
    for number, page in enumerate(pages, start=1):
        if number > 1:
            _draw_running_header(painter, header)
        for block, top in page.placements:
            block.draw(painter, page.frame.x, top)
        _draw_footer(painter, report, number, count)
        painter.end_page()
    return document.build()


def _running_header(report: Report) -> list[Line]:
    """Pages 2 and after: who the report is about, so that a loose page cannot be misfiled."""
    s, patient = styles(), report.patient
    name = f"{patient.birth_family_name} {patient.first_birth_given_name}"
    if patient.used_family_name and patient.used_family_name != patient.birth_family_name:
        name += f" (nom utilisé{french.COLON} {patient.used_family_name})"
    born = ""
    if patient.birth_date is not None:
        born = f", {french.born_word(patient.sex)} le {format_date(patient.birth_date)}"
    created = report.document.created_at
    subtitle = DOCUMENT_TITLE + (f" du {format_date(created.date())}" if created else "")
    width = PAGE.content_width
    return [
        *wrap([Span(name, s.body_bold), Span(born, s.body)], width),
        *wrap([Span(subtitle, s.small)], width),
    ]


def _draw_running_header(painter: Painter, lines: list[Line]) -> None:
    top = _FIRST.top
    for line in lines:
        line.draw(painter, PAGE.margin_x, top)
        top -= line.height
    rule = top - 2.0
    painter.line(PAGE.margin_x, rule, PAGE.width - PAGE.margin_x, rule, color=Colors.BLUE, width=0.6)


def _draw_footer(painter: Painter, report: Report, number: int, count: int) -> None:
    s, doc = styles(), report.document
    rule = PAGE.margin_bottom - 10.0
    painter.line(PAGE.margin_x, rule, PAGE.width - PAGE.margin_x, rule, color=Colors.RULE, width=0.5)
    baseline = rule - 9.0
    tiny = s.tiny
    painter.text(PAGE.margin_x, baseline, report.laboratory.name, tiny.font, tiny.size, tiny.color)
    painter.text(
        PAGE.margin_x,
        baseline - tiny.leading,
        f"Document {doc.id} \u2014 version {doc.version}",
        tiny.font,
        tiny.size,
        tiny.color,
    )
    page = f"Page {number}/{count}"
    bold = s.small_bold
    right = PAGE.width - PAGE.margin_x - bold.width(page)
    painter.text(right, baseline, page, bold.font, bold.size, bold.color)
