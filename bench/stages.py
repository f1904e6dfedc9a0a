"""The stages of a complete CR-Bio build, timed one by one in process CPU time.

    from bench.stages import STAGES, complete_build, stage_timings
    documents = complete_build(raw_json)          # what ``crbio build`` does for one report
    seconds = stage_timings(raw_json, rounds=5)   # {"load": ..., "pdf": ..., ..., "complete": ...}

A complete build is what :func:`crbio.build` does by default: PDF/A-1b, CDA N3 (PDF
embedded), CDA N1, then the official XSD and crbio's rules on both CDA documents. The
stages are the pieces of that path, each timed on its own on the same report:

``load``      JSON bytes to the report model (schema and semantic checks included)
``pdf``       the PDF: layout, INS Datamatrix, drawing, font subsets
``pdf/a``     the PDF/A-1b finishing: output intent, XMP metadata, the save (pikepdf/qpdf)
``n3``        the CDA N3 from its template, PDF embedded
``n1``        the CDA N1 from its template
``parse``     the N3 and the N1 read back with crbio's safe parser
``xsd``       both documents checked against ``CDA_extended.xsd``
``rules``     crbio's own rules on both documents
``complete``  ``crbio.build(crbio.load_report(raw))``, timed separately (not the sum)

Times are process CPU seconds (``time.process_time``), which other processes sharing the
machine distort far less than wall time. Each stage runs once untimed (warm-up: templates
compiled, schema and fonts loaded), then ``rounds`` times; the median is reported. The INS
Datamatrix symbol is cached per payload (a patient's next report reuses it); ``pdf`` and
``complete`` clear that cache before each run, so that they cost what a report for a new
patient costs, as in a batch, rather than what re-rendering the same report costs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import crbio
from crbio._xml import parse_xml
from crbio.documents.cda import build_n1, build_n3
from crbio.documents.context import BuildContext, FixedClock, SequenceIds, resolve_document
from crbio.documents.pdf import render, render_pdf
from crbio.documents.pdf.datamatrix import ins_datamatrix_payload, symbol
from crbio.documents.pdf.pdfa import finish_pdfa
from crbio.validation.rules import check_rules
from crbio.validation.xsd import validate_xsd

__all__ = ["STAGES", "complete_build", "cpu_median", "default_context", "stage_timings"]

STAGES = ("load", "pdf", "pdf/a", "n3", "n1", "parse", "xsd", "rules", "complete")


def default_context() -> BuildContext:
    """A fixed clock and sequential ids: every build of one report gives the same bytes."""
    return BuildContext(FixedClock(datetime.fromisoformat("2026-01-04T18:00:00+01:00")), SequenceIds("1.2.3"))


def _new_patient() -> None:
    symbol.cache_clear()


def complete_build(report_json: bytes, *, context: BuildContext | None = None) -> crbio.Documents:
    """Build one report from its crbio JSON exactly as ``crbio build`` does (validation included)."""
    return crbio.build(crbio.load_report(report_json), context=context or default_context())


def cpu_median(fn: Callable[[], Any], rounds: int) -> float:
    """The median process CPU time of ``rounds`` calls of ``fn``, after one untimed call."""
    fn()
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return statistics.median(samples)


def _drawn(report: crbio.Report) -> Any:
    """The report's PDF drawn, not yet finished as PDF/A (a ``pikepdf.Pdf``)."""
    payload = ins_datamatrix_payload(report.patient)
    pages, header = render._layout(report, symbol(payload) if payload is not None else None)
    return render._draw(report, pages, header)


def _cpu_median_of_finish(report: crbio.Report, rounds: int) -> float:
    """The median process CPU time of the PDF/A finishing alone, each time on a freshly drawn PDF."""
    samples = []
    for _ in range(rounds + 1):  # the first is the warm-up
        drawn = _drawn(report)
        start = time.process_time()
        finish_pdfa(drawn, render._metadata(report, report.document.created_at))
        samples.append(time.process_time() - start)
    return statistics.median(samples[1:])


def stage_timings(
    report_json: bytes, *, rounds: int = 5, context: BuildContext | None = None
) -> dict[str, float]:
    """The median process CPU seconds of each stage of :data:`STAGES` for one report."""
    context = context or default_context()
    report = resolve_document(crbio.load_report(report_json), context)
    pdf = render_pdf(report)
    n3 = build_n3(report, pdf)
    n1 = build_n1(report, pdf)
    trees = [parse_xml(n3, label="n3"), parse_xml(n1, label="n1")]
    return {
        "load": cpu_median(lambda: crbio.load_report(report_json), rounds),
        "pdf": cpu_median(lambda: (_new_patient(), _drawn(report)), rounds),
        "pdf/a": _cpu_median_of_finish(report, rounds),
        "n3": cpu_median(lambda: build_n3(report, pdf), rounds),
        "n1": cpu_median(lambda: build_n1(report, pdf), rounds),
        "parse": cpu_median(lambda: (parse_xml(n3, label="n3"), parse_xml(n1, label="n1")), rounds),
        "xsd": cpu_median(lambda: [validate_xsd(tree, label="b") for tree in trees], rounds),
        "rules": cpu_median(lambda: [check_rules(tree, label="b") for tree in trees], rounds),
        "complete": cpu_median(
            lambda: (_new_patient(), complete_build(report_json, context=context)), rounds
        ),
    }
