"""PDF/A-1b finishing with pikepdf, and PDF/A-1b validation.

The document graph gets what PDF/A-1b adds to a plain PDF: an sRGB output intent (the
ICC v2 profile pikepdf ships), an XMP packet declaring PDF/A-1b, and an Info dictionary
that agrees with it. The metadata comes from the report's creation time only, so the
same report always gives the same bytes. The file is saved with the settings pikepdf
resolves for PDF/A-1b: PDF 1.4, no object streams, a content-derived ``/ID``.

``pikepdf.pdfa.prepare`` would do the same repairs and more (annotations, images,
CIDFonts, JavaScript: none of which a report contains) but it rewrites the XMP with the
current time, which would have to be undone; ``pikepdf.pdfa.save`` would in addition
re-read and validate every file it writes, which costs several times the rendering.
The validation is :func:`check_pdfa`, run by the tests and by ``crbio validate``.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files
from typing import Any
from xml.sax.saxutils import escape

import pikepdf
import pikepdf.pdfa

from crbio.validation.report import Finding

__all__ = ["Metadata", "check_pdfa", "finish_pdfa"]

_FLAVOUR = "1b"


@dataclass(frozen=True, slots=True)
class Metadata:
    """The document information written to both the Info dictionary and the XMP packet.

    It must never hold patient data: these fields are indexed and shown by file managers.
    """

    title: str
    author: str
    creator: str
    producer: str
    created: datetime


@cache
def _save_kwargs() -> dict[str, Any]:
    return pikepdf.pdfa.resolve_save_kwargs(_FLAVOUR, deterministic_id=True)


def finish_pdfa(pdf: pikepdf.Pdf, metadata: Metadata) -> bytes:
    """Add the output intent and the metadata to a document and write it as PDF/A-1b.

    Raises:
        pikepdf.PdfError: The document cannot be written.
    """
    _add_output_intent(pdf)
    _write_metadata(pdf, metadata)
    out = io.BytesIO()
    pdf.save(out, **_save_kwargs())
    return out.getvalue()


@cache
def _srgb_profile() -> bytes:
    """The sRGB ICC profile pikepdf ships (version 2, as PDF/A-1 requires), Flate-compressed once."""
    return zlib.compress((files("pikepdf.pdfa") / "data" / "sRGB.icc").read_bytes(), 9)


def _add_output_intent(pdf: pikepdf.Pdf) -> None:
    profile = pdf.make_stream(b"", N=3)
    # Already Flate-encoded: qpdf copies the stream as is instead of compressing it again.
    profile.write(_srgb_profile(), filter=pikepdf.Name.FlateDecode)
    pdf.Root.OutputIntents = pikepdf.Array(
        [
            pdf.make_indirect(
                pikepdf.Dictionary(
                    Type=pikepdf.Name.OutputIntent,
                    S=pikepdf.Name.GTS_PDFA1,
                    OutputConditionIdentifier=pikepdf.String("sRGB IEC61966-2.1"),
                    Info=pikepdf.String("sRGB IEC61966-2.1"),
                    RegistryName=pikepdf.String("http://www.color.org"),
                    DestOutputProfile=profile,
                )
            )
        ]
    )


def _write_metadata(pdf: pikepdf.Pdf, meta: Metadata) -> None:
    when = meta.created if meta.created.tzinfo is not None else meta.created.replace(tzinfo=UTC)
    when = when.replace(microsecond=0)
    iso = when.isoformat()
    packet = _XMP.format(
        title=escape(meta.title),
        author=escape(meta.author),
        creator=escape(meta.creator),
        producer=escape(meta.producer),
        date=iso,
    )
    stream = pdf.make_stream(packet.encode("utf-8"))
    stream["/Type"] = pikepdf.Name.Metadata
    stream["/Subtype"] = pikepdf.Name.XML
    pdf.Root.Metadata = stream
    pdf.trailer.Info = pdf.make_indirect(
        pikepdf.Dictionary(
            Title=pikepdf.String(meta.title),
            Author=pikepdf.String(meta.author),
            Creator=pikepdf.String(meta.creator),
            Producer=pikepdf.String(meta.producer),
            CreationDate=pikepdf.String(_pdf_date(when)),
            ModDate=pikepdf.String(_pdf_date(when)),
        )
    )


def _pdf_date(when: datetime) -> str:
    """``D:20240104161000+01'00'``: the PDF date of the same instant as the XMP date."""
    offset = when.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"D:{when:%Y%m%d%H%M%S}{sign}{hours:02d}'{mins:02d}'"


# One rdf:Description with every namespace declared on it: PDFBox Preflight rejects
# properties that declare their namespace inline. No xpacket "bytes"/"encoding"
# attributes and no xmpMM properties (PDF/A-1 6.7.5, 6.7.9).
_XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" \
xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:pdf="http://ns.adobe.com/pdf/1.3/" \
xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/">
   <dc:format>application/pdf</dc:format>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{title}</rdf:li></rdf:Alt></dc:title>
   <dc:creator><rdf:Seq><rdf:li>{author}</rdf:li></rdf:Seq></dc:creator>
   <xmp:CreateDate>{date}</xmp:CreateDate>
   <xmp:ModifyDate>{date}</xmp:ModifyDate>
   <xmp:MetadataDate>{date}</xmp:MetadataDate>
   <xmp:CreatorTool>{creator}</xmp:CreatorTool>
   <pdf:Producer>{producer}</pdf:Producer>
   <pdfaid:part>1</pdfaid:part>
   <pdfaid:conformance>B</pdfaid:conformance>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def check_pdfa(pdf: bytes) -> list[Finding]:
    """Validate a PDF against PDF/A-1b with pikepdf's veraPDF-derived rules.

    Returns:
        One finding per problem (source ``pdfa``, rule = the veraPDF rule id); an empty
        list when the file passes. Constructs the validator does not check are reported
        too (``unsupported``): an approval must be unconditional.
    """
    report = pikepdf.pdfa.validate_written(io.BytesIO(pdf), _FLAVOUR)
    return [
        Finding(
            source="pdfa",
            message=(f.message if f.kind == "violation" else f"unsupported: {f.message}"),
            location=f.where or None,
            rule=f.rule,
        )
        for f in report.findings
    ]
