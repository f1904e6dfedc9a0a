"""crbio's own checks of a CR-BIO document: what neither the XSD nor the ANS kit verifies.

They work on the document alone, so ``crbio validate`` can run them on any CR-BIO,
whoever produced it:

- the document id is usable as a DMP uniqueId (an OID root, no extension, ≤ 64 chars);
- versioning is coherent (version > 1 ⇔ a replaced document, which is another id);
- an INS matricule has a valid key;
- every narrative reference (``reference/@value="#id"``, ``renderMultiMedia``) resolves;
- every quantitative result is printed in the narrative row it references, with its unit;
- every LOINC code has a valid check digit and every unit is valid UCUM;
- the PDF copy (N3) or body (N1) is a base64 PDF 1.4 (PDF/A-1);
- the document presents itself through an ``xml-stylesheet`` processing instruction.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from lxml import etree

from crbio.codes import check_loinc, check_ucum
from crbio.identifiers import INS_OIDS, check_ins_matricule, check_oid
from crbio.model.common import display_unit, format_decimal
from crbio.validation.report import Finding, ValidationReport

__all__ = ["check_rules", "embedded_pdf", "is_n1"]

NS = {"h": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_SOURCE = "crbio"


def check_rules(tree: etree._ElementTree, *, label: str) -> ValidationReport:
    """Run crbio's own rules on a parsed CR-BIO (N3 or N1) and report every failure."""
    root = tree.getroot()
    index = _Index(root)
    findings = list(_identity(root))
    findings += _stylesheet(tree)
    findings += _codes(index)
    if is_n1(tree):
        findings += _n1_body(root)
    else:
        findings += _references(index)
        findings += _narrative_agreement(index)
        findings += _pdf_copy(root)
    return ValidationReport(label, ("crbio",), tuple(findings))


class _Index:
    """What the rules look at, gathered once per document.

    Attribute steps (``//@ID``) and ``iter(tag)`` walk the tree in C; an element step with a
    predicate (``//*[@ID]``) costs libxml2 several times more on a document of thousands of
    elements, and the rules run on every document crbio builds.
    """

    def __init__(self, root: etree._Element) -> None:
        self.by_id: dict[str, etree._Element] = {str(attr): attr.getparent() for attr in _IDS(root)}
        self.loinc: list[etree._Element] = [
            node
            for node in (attr.getparent() for attr in _LOINC_SYSTEMS(root))
            if node.get("code") is not None
        ]
        self.units: list[etree._Element] = [attr.getparent() for attr in _UNITS(root)]
        self.references: list[etree._Element] = [
            node for node in root.iter(_H + "reference") if node.get("value") is not None
        ]
        self.media_refs: list[etree._Element] = list(root.iter(_H + "renderMultiMedia"))
        self.observations: list[etree._Element] = list(root.iter(_H + "observation"))


_H = "{urn:hl7-org:v3}"
_IDS = etree.XPath("//@ID")
_LOINC_SYSTEMS = etree.XPath("//@codeSystem[.='2.16.840.1.113883.6.1']")
_UNITS = etree.XPath("//@unit")


def is_n1(tree: etree._ElementTree) -> bool:
    """Whether a CDA is an N1 (non-XML body, here the PDF) rather than a structured N3."""
    return tree.getroot().find("h:component/h:nonXMLBody", NS) is not None


def embedded_pdf(tree: etree._ElementTree) -> bytes | None:
    """The PDF a CR-BIO carries (N3 PDF copy or N1 body), decoded, or None."""
    root = tree.getroot()
    node = root.find("h:component/h:nonXMLBody/h:text", NS)
    if node is None:
        node = root.find(".//h:observationMedia/h:value[@mediaType='application/pdf']", NS)
    if node is None or not (node.text or "").strip():
        return None
    try:
        return base64.b64decode("".join(node.text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def _finding(message: str, rule: str, node: etree._Element | None = None) -> Finding:
    return Finding(
        _SOURCE,
        message,
        location=node.getroottree().getpath(node) if node is not None else None,
        line=node.sourceline if node is not None else None,
        rule=rule,
    )


def _identity(root: etree._Element) -> Iterator[Finding]:
    doc_id = root.find("h:id", NS)
    if doc_id is None:
        yield _finding("the document has no id", "id.missing")
    else:
        if doc_id.get("extension"):
            yield _finding(
                "the document id has an extension: the DMP only accepts an OID root as uniqueId",
                "id.dmp-unique-id",
                doc_id,
            )
        reason = check_oid(doc_id.get("root", ""))
        if reason:
            yield _finding(f"the document id root {reason}", "id.dmp-unique-id", doc_id)
    version = root.find("h:versionNumber", NS)
    number = (
        int(version.get("value", "0")) if version is not None and version.get("value", "").isdigit() else 0
    )
    parent = root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", NS)
    if number > 1 and parent is None:
        yield _finding(
            f"version {number} must name the document it replaces (relatedDocument RPLC)",
            "version.replaces",
            version,
        )
    if parent is not None:
        if number <= 1:
            yield _finding(
                "a replacing document must have a version number above 1", "version.replaces", version
            )
        if doc_id is not None and parent.get("root") == doc_id.get("root") and not parent.get("extension"):
            yield _finding("the replaced document has the same id as this one", "version.replaces", parent)
    for node in root.iterfind("h:recordTarget/h:patientRole/h:id", NS):
        if node.get("root") in INS_OIDS:
            reason = check_ins_matricule(node.get("extension", ""))
            if reason:
                yield _finding(f"INS matricule: {reason}", "ins.matricule", node)


def _stylesheet(tree: etree._ElementTree) -> Iterator[Finding]:
    node = tree.getroot().getprevious()
    while node is not None:
        text = node.text or ""
        if (
            isinstance(node, etree._ProcessingInstruction)
            and node.target == "xml-stylesheet"
            and "text/xsl" in text
            and "href=" in text
        ):
            return
        node = node.getprevious()
    yield _finding(
        "no xml-stylesheet processing instruction: the document does not present itself", "self-presentation"
    )


def _codes(index: _Index) -> Iterator[Finding]:
    for node in index.loinc:
        code = node.get("code", "")
        reason = check_loinc(code)
        if reason:
            yield _finding(f"LOINC code {code!r} {reason}", "loinc", node)
    for node in index.units:
        reason = check_ucum(node.get("unit", ""))
        if reason:
            yield _finding(f"unit {node.get('unit')!r} {reason}", "ucum", node)


def _references(index: _Index) -> Iterator[Finding]:
    for node in index.references:
        target = node.get("value", "")
        if target.startswith("#") and target[1:] not in index.by_id:
            yield _finding(
                f"reference {target} points to no element of the narrative", "narrative.reference", node
            )
    for node in index.media_refs:
        for target in node.get("referencedObject", "").split():
            if target not in index.by_id:
                yield _finding(
                    f"renderMultiMedia points to no object {target!r}", "narrative.reference", node
                )


def _narrative_agreement(index: _Index) -> Iterator[Finding]:
    """Each quantitative result must be printed, with its unit, in the row its label references."""
    for obs in index.observations:
        # iterchildren(tag) runs in C; find() with a path goes through lxml's Python ElementPath.
        value = next(obs.iterchildren(_H + "value"), None)
        if value is None or value.get(_XSI_TYPE, "").split(":")[-1] != "PQ":
            continue
        ref = _label_reference(obs)
        if ref is None:
            continue
        label = index.by_id.get(ref.get("value", "").lstrip("#"))
        if label is None:
            continue  # reported by _references
        row = next(label.iterancestors("{*}tr"), label)
        # Compare without spaces (thousands separators) and case (mUI/l for m[IU]/L). The text
        # method of tostring is itertext() joined (comments and PIs left out too), in C.
        text = _squeeze(etree.tostring(row, method="text", encoding="unicode", with_tail=False))
        try:
            number = Decimal(value.get("value", ""))
        except InvalidOperation:
            yield _finding("a quantitative result has no numeric value", "narrative.agreement", value)
            continue
        unit = value.get("unit", "1")
        shown = display_unit(unit)
        numbers = {_squeeze(format_decimal(number)), format(number, "f")}
        units = {unit.lower(), _squeeze(shown)}
        if not any(n in text for n in numbers) or (shown and not any(u in text for u in units)):
            yield _finding(
                "the narrative row of this result does not show its value and unit",
                "narrative.agreement",
                value,
            )


def _label_reference(observation: etree._Element) -> etree._Element | None:
    """The first ``code/originalText/reference`` of an observation (what ``find`` would return)."""
    for code in observation.iterchildren(_H + "code"):
        for original_text in code.iterchildren(_H + "originalText"):
            for reference in original_text.iterchildren(_H + "reference"):
                return reference
    return None


def _squeeze(text: str) -> str:
    """Text without spaces, in lower case, with an ASCII minus: how narrative and entries are compared."""
    return "".join(text.split()).replace("\u2212", "-").lower()


def _pdf_copy(root: etree._Element) -> Iterator[Finding]:
    section = _pdf_copy_section(root)
    if section is None:
        return  # the volet schematron reports the missing FR-Document-PDF-copie section
    media = section.find(".//h:observationMedia/h:value", NS)
    if media is None or media.get("mediaType") != "application/pdf" or media.get("representation") != "B64":
        yield _finding("the PDF copy is not an application/pdf B64 observationMedia", "pdf.copy", section)
        return
    yield from _pdf_bytes(media)


def _pdf_copy_section(root: etree._Element) -> etree._Element | None:
    """The first FR-Document-PDF-copie section in document order, or None.

    Found from its templateId (``iter`` with a tag runs in C) rather than by an XPath
    predicate on every section, which libxml2 evaluates far more slowly on a long report.
    """
    sections = []
    for node in root.iter(_H + "templateId"):
        parent = node.getparent()
        # A descendant section, as ".//h:section" selects: never the root element itself.
        if node.get("root") != _PDF_COPY_TEMPLATE or parent is None or parent is root:
            continue
        if parent.tag == _H + "section":
            sections.append(parent)
    if len(sections) > 1:
        # A templateId normally opens its section; should one come after a nested section,
        # document order of the sections themselves still decides.
        order = {node: position for position, node in enumerate(root.iter(_H + "section"))}
        sections.sort(key=order.__getitem__)
    return sections[0] if sections else None


_PDF_COPY_TEMPLATE = "1.2.250.1.213.1.1.2.243"


def _n1_body(root: etree._Element) -> Iterator[Finding]:
    text = root.find("h:component/h:nonXMLBody/h:text", NS)
    assert text is not None
    if text.get("mediaType") != "application/pdf" or text.get("representation") != "B64":
        yield _finding("the N1 body is not an application/pdf B64 text", "pdf.n1", text)
        return
    yield from _pdf_bytes(text)


def _pdf_bytes(node: etree._Element) -> Iterator[Finding]:
    try:
        pdf = base64.b64decode("".join((node.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        yield _finding("the embedded PDF is not valid base64", "pdf.base64", node)
        return
    if not re.match(rb"%PDF-1\.[0-4]", pdf):
        yield _finding(
            "the embedded document is not a PDF 1.4 (PDF/A-1 is based on PDF 1.4)", "pdf.version", node
        )
