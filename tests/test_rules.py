"""crbio's own rules: each one catches the defect it is written for, on a real document."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from lxml import etree

import crbio
from crbio.documents.context import BuildContext
from crbio.model import Report
from crbio.validation.rules import check_rules, embedded_pdf

NS = {"h": "urn:hl7-org:v3"}


@pytest.fixture
def n3(sample_report: Callable[[str], Report], context: BuildContext) -> bytes:
    return crbio.build(sample_report("01-biochimie.json"), context=context).n3


def rules_of(tree: etree._ElementTree) -> set[str]:
    return {f.rule for f in check_rules(tree, label="test").findings if f.rule}


def mutate(data: bytes, change: Callable[[etree._Element], None]) -> etree._ElementTree:
    tree = etree.ElementTree(etree.fromstring(data))
    change(tree.getroot())
    return etree.ElementTree(etree.fromstring(etree.tostring(tree, xml_declaration=True, encoding="UTF-8")))


def test_a_built_document_breaks_no_rule(n3: bytes) -> None:
    tree = etree.ElementTree(etree.fromstring(n3))
    assert check_rules(tree, label="n3").ok
    assert embedded_pdf(tree).startswith(b"%PDF-1.4")


def set_id_extension(root: etree._Element) -> None:
    root.find("h:id", NS).set("extension", "42")


def drop_related_document(root: etree._Element) -> None:
    root.find("h:versionNumber", NS).set("value", "2")


def bad_ins_key(root: etree._Element) -> None:
    root.find("h:recordTarget/h:patientRole/h:id", NS).set("extension", "279035121518988")


def dangling_reference(root: etree._Element) -> None:
    root.find(".//h:originalText/h:reference", NS).set("value", "#nowhere")


def narrative_disagrees(root: etree._Element) -> None:
    root.find(".//h:observation/h:value[@unit]", NS).set("value", "9999")


def bad_loinc(root: etree._Element) -> None:
    root.find(".//h:observation/h:code", NS).set("code", "14749-7")


def bad_unit(root: etree._Element) -> None:
    root.find(".//h:observation/h:value[@unit]", NS).set("unit", "mmoll")


def pdf_not_pdf(root: etree._Element) -> None:
    root.find(".//h:observationMedia/h:value", NS).text = base64.b64encode(b"not a pdf").decode()


def pdf_not_base64(root: etree._Element) -> None:
    root.find(".//h:observationMedia/h:value", NS).text = "***"


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (set_id_extension, "id.dmp-unique-id"),
        (drop_related_document, "version.replaces"),
        (bad_ins_key, "ins.matricule"),
        (dangling_reference, "narrative.reference"),
        (narrative_disagrees, "narrative.agreement"),
        (bad_loinc, "loinc"),
        (bad_unit, "ucum"),
        (pdf_not_pdf, "pdf.version"),
        (pdf_not_base64, "pdf.base64"),
    ],
)
def test_each_rule_catches_its_defect(n3: bytes, change: Callable[[etree._Element], None], rule: str) -> None:
    assert rule in rules_of(mutate(n3, change))


def test_missing_stylesheet_instruction_is_reported(n3: bytes) -> None:
    without = n3.replace(b'<?xml-stylesheet type="text/xsl" href="crbio-cda.xsl"?>', b"")
    assert "self-presentation" in rules_of(etree.ElementTree(etree.fromstring(without)))


def test_findings_name_the_line(n3: bytes) -> None:
    tree = mutate(n3, bad_unit)
    finding = next(f for f in check_rules(tree, label="x").findings if f.rule == "ucum")
    assert finding.line and finding.location and "mmoll" in finding.message
