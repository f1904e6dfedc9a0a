"""The CDA R2 N3 and N1 built from every sample: official XSD, ANS kit, crbio's rules, structure."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

import crbio
from conftest import assert_kit_accepts, sample_files
from crbio.documents.context import BuildContext
from crbio.identifiers import INS_OIDS
from crbio.model import IntervalValue, Quantity, Report
from crbio.validation.validate import validate_document

NS = {"h": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
SAMPLES = [p.name for p in sample_files()]


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> dict[str, crbio.Documents]:
    """Every sample built once for the module, reproducibly."""
    from datetime import datetime

    from crbio.documents.context import FixedClock, SequenceIds

    out = {}
    for path in sample_files():
        context = BuildContext(
            FixedClock(datetime.fromisoformat("2026-01-04T18:00:00+01:00")), SequenceIds("1.2.250.1.999.9.9")
        )
        out[path.name] = crbio.build(crbio.load_report(path), context=context)
    return out


def xml(data: bytes) -> etree._Element:
    return etree.fromstring(data)


@pytest.mark.parametrize("name", SAMPLES)
def test_documents_pass_xsd_and_crbio_rules(built: dict[str, crbio.Documents], name: str) -> None:
    documents = built[name]
    for kind, data in (("n3", documents.n3), ("n1", documents.n1)):
        report = validate_document(data, label=f"{name} {kind}", pdfa=True)
        assert not report.findings, report.summary()


@pytest.mark.parametrize("name", SAMPLES)
def test_documents_pass_the_official_ans_kit(
    built: dict[str, crbio.Documents], name: str, ans_kit_n3: object, ans_kit_n1: object
) -> None:
    documents = built[name]
    # Zero findings, warnings included: as many as the ANS's own ans-check counts.
    assert_kit_accepts(documents, f"{name}", ans_kit_n3, ans_kit_n1)


def test_build_is_deterministic(sample_report: Callable[[str], Report], context: BuildContext) -> None:
    report = sample_report("01-biochimie.json")
    first = crbio.build(report, context=context)
    second = crbio.build(report, context=context)
    assert (first.n3, first.n1, first.pdf) == (second.n3, second.n1, second.pdf)


def test_n1_and_n3_carry_the_same_pdf(built: dict[str, crbio.Documents]) -> None:
    for documents in built.values():
        n3_pdf = xml(documents.n3).find(".//h:observationMedia/h:value", NS).text
        n1_pdf = xml(documents.n1).find("h:component/h:nonXMLBody/h:text", NS).text
        assert base64.b64decode(n3_pdf) == base64.b64decode(n1_pdf) == documents.pdf


def test_ids_are_usable_as_dmp_unique_ids(built: dict[str, crbio.Documents]) -> None:
    for documents in built.values():
        for data in (documents.n3, documents.n1):
            doc_id = xml(data).find("h:id", NS)
            assert doc_id.get("extension") is None
            assert len(doc_id.get("root")) <= 64
        assert documents.n1_document_id != documents.document_id


def test_missing_ids_are_generated_as_uuid_oids(sample_report: Callable[[str], Report]) -> None:
    report = crbio.load_report(Path(__file__).parents[1] / "samples" / "01-biochimie.json")
    bare = dataclasses.replace(report, document=dataclasses.replace(report.document, id=None, set_id=None))
    documents = crbio.build(bare)
    root = xml(documents.n3)
    assert root.find("h:id", NS).get("root").startswith("2.25.")
    assert root.find("h:setId", NS).get("root") == root.find("h:id", NS).get("root")


def test_ins_is_written_only_for_a_qualified_identity(built: dict[str, crbio.Documents]) -> None:
    for documents in built.values():
        ins_ids = [
            i
            for i in xml(documents.n3).iterfind("h:recordTarget/h:patientRole/h:id", NS)
            if i.get("root") in INS_OIDS
        ]
        qualified = documents.report.patient.qualified_ins
        if qualified is None:
            assert ins_ids == []
        else:
            assert [(i.get("root"), i.get("extension")) for i in ins_ids] == [
                (qualified.oid, qualified.matricule)
            ]


def test_amendment_replaces_the_previous_version(built: dict[str, crbio.Documents]) -> None:
    amended = [d for d in built.values() if d.report.document.replaces]
    assert amended, "the samples must include an amended report"
    for documents in amended:
        doc = documents.report.document
        for data, parent_id in (
            (documents.n3, doc.replaces),
            (documents.n1, crbio.documents.cda.n1_document_info(doc).replaces),
        ):
            root = xml(data)
            assert root.find("h:relatedDocument", NS).get("typeCode") == "RPLC"
            assert root.find("h:relatedDocument/h:parentDocument/h:id", NS).get("root") == parent_id
            assert root.find("h:versionNumber", NS).get("value") == str(doc.version)
        previous = [d for d in built.values() if d.document_id == doc.replaces]
        if previous:  # the replaced version is a sample too: same set, N1 chain follows
            assert previous[0].report.document.set_id == doc.set_id
            assert crbio.documents.cda.n1_document_info(doc).replaces == previous[0].n1_document_id


def test_every_result_is_an_entry_with_the_same_data(built: dict[str, crbio.Documents]) -> None:
    for documents in built.values():
        root = xml(documents.n3)
        entries = root.xpath("//h:observation[h:templateId/@root='1.3.6.1.4.1.19376.1.3.1.6']", namespaces=NS)
        observations = list(documents.report.observations())
        assert len(entries) == len(observations)
        for obs, entry in zip(observations, entries, strict=True):
            code = entry.find("h:code", NS)
            if obs.code:
                assert code.get("code") == obs.code.code
            assert entry.find("h:statusCode", NS).get("code") == obs.status.value
            value = entry.find("h:value", NS)
            if isinstance(obs.value, Quantity):
                assert Decimal(value.get("value")) == obs.value.value
                assert value.get("unit", "1") == obs.value.unit
                assert format(obs.value.value, "f") == value.get("value")  # written precision kept
            elif isinstance(obs.value, IntervalValue):
                bound = obs.value.high or obs.value.low
                node = value.find("h:high" if obs.value.high else "h:low", NS)
                assert Decimal(node.get("value")) == bound.value
            elif obs.value is None:
                assert value is None


def test_documents_present_themselves(sample_report: Callable[[str], Report], context: BuildContext) -> None:
    report = sample_report("01-biochimie.json")
    default = crbio.build(report, context=context)
    assert b'<?xml-stylesheet type="text/xsl" href="crbio-cda.xsl"?>' in default.n3
    lab_own = dataclasses.replace(
        report,
        laboratory=dataclasses.replace(
            report.laboratory, stylesheet="https://labo.example.fr/cda/cr-bio.xsl"
        ),
    )
    documents = crbio.build(lab_own, context=context)
    for data in (documents.n3, documents.n1):
        assert b'href="https://labo.example.fr/cda/cr-bio.xsl"' in data
    chosen = crbio.build(report, context=context, stylesheet_href="local.xsl")
    assert b'href="local.xsl"' in chosen.n3


def test_write_puts_documents_and_stylesheet_side_by_side(
    sample_report: Callable[[str], Report], context: BuildContext, tmp_path: Path
) -> None:
    documents = crbio.build(sample_report("01-biochimie.json"), context=context)
    written = documents.write(tmp_path, stem="report")
    assert sorted(p.name for p in written) == [
        "crbio-cda.xsl",
        "report.n1.xml",
        "report.n3.xml",
        "report.pdf",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temp files left


def test_validation_time_after_creation_time_is_refused(
    sample_report: Callable[[str], Report], context: BuildContext
) -> None:
    report = sample_report("01-biochimie.json")
    late = dataclasses.replace(report, validated_at=report.document.created_at.replace(year=2030))
    with pytest.raises(crbio.InputError) as error:
        crbio.build(late, context=context)
    assert "validated_at" in str(error.value)
