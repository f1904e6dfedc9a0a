"""Merging a subcontractor's results into the laboratory's own report (crbio.merge, crbio merge).

The subcontractor is a second laboratory whose report (tests/fixtures/subcontractor-report.json)
crbio builds; its N3 is merged into sample 01 (same patient, same qualified INS). The merged
documents go through the ANS kit and show both laboratories' results, the subcontractor's with
a FR-Laboratoire-executant performer naming it; an N1 (or an N3 whose results cannot be read)
is attached as a PDF instead.
"""

from __future__ import annotations

import base64
import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

import crbio
from conftest import SAMPLES, assert_kit_accepts
from crbio.cli import main
from crbio.errors import InputError
from crbio.input import load_report
from crbio.merge import MergeOutcome, merge_subcontracted
from crbio.model import IdentityStatus, Ins, Report

FIXTURE = Path(__file__).parent / "fixtures" / "subcontractor-report.json"
H = "urn:hl7-org:v3"
NS = {"h": H}
LAB_OBSERVATION = "1.3.6.1.4.1.19376.1.3.1.6"
SECOND_INTENTION = "1.2.250.1.213.1.1.2.60"
SUBCONTRACTOR_FINESS = "690001235"
OWN = SAMPLES / "01-biochimie.json"


@pytest.fixture(scope="module")
def own() -> Report:
    return load_report(OWN)


@pytest.fixture(scope="module")
def subcontractor() -> crbio.Documents:
    """The second laboratory's documents, as crbio builds them."""
    return crbio.build(load_report(FIXTURE))


@pytest.fixture(scope="module")
def structured(own: Report, subcontractor: crbio.Documents) -> tuple[MergeOutcome, crbio.Documents]:
    outcome = merge_subcontracted(own, subcontractor.n3, label="subcontractor.n3.xml")
    return outcome, crbio.build(outcome.report)


@pytest.fixture(scope="module")
def attached(own: Report, subcontractor: crbio.Documents) -> tuple[MergeOutcome, crbio.Documents]:
    outcome = merge_subcontracted(own, subcontractor.n1, label="subcontractor.n1.xml")
    return outcome, crbio.build(outcome.report)


def lab_observations(data: bytes) -> list[etree._Element]:
    return etree.fromstring(data).xpath(
        f"//h:observation[h:templateId/@root='{LAB_OBSERVATION}']", namespaces=NS
    )


def performer_finess(observation: etree._Element) -> str | None:
    """The FINESS of the FR-Laboratoire-executant of the act (or isolate) holding a result."""
    for ancestor in observation.iterancestors():
        found = ancestor.xpath(
            "h:performer[h:templateId/@root='1.3.6.1.4.1.19376.1.3.3.1.7']"
            "/h:assignedEntity/h:representedOrganization/h:id[@root='1.2.250.1.71.4.2.2']/@extension",
            namespaces=NS,
        )
        if found:
            return str(found[0])[1:]
        if etree.QName(ancestor).localname == "section":
            return None
    return None


def facts(observation: etree._Element) -> tuple[Any, ...]:
    code = observation.find("h:code", NS)
    value = observation.find("h:value", NS)
    return (code.get("code"), etree.tostring(value, method="c14n") if value is not None else None)


# --- structured merge -----------------------------------------------------------------------------


def test_results_are_inserted_unchanged_with_the_subcontractor_as_executing_lab(
    own: Report, structured: tuple[MergeOutcome, crbio.Documents]
) -> None:
    outcome, _ = structured
    sub = load_report(FIXTURE)
    assert outcome.structured and outcome.reason is None
    assert outcome.results == 3
    lab = outcome.laboratory
    assert (lab.finess, lab.name, lab.performed_at) == (
        SUBCONTRACTOR_FINESS,
        sub.laboratory.name,
        sub.validated_at,
    )
    assert lab.address == sub.laboratory.address and lab.biologist is not None
    assert lab.biologist.rpps == sub.biologist.rpps
    merged = outcome.report
    assert merged.document == own.document and merged.patient == own.patient
    assert merged.laboratory == own.laboratory
    # Own results first, then the subcontractor's values exactly as it wrote them.
    observations = list(merged.observations())
    own_results = list(own.observations())
    assert observations[: len(own_results)] == own_results
    assert [
        (o.code, o.value, o.reference_range, o.interpretation) for o in observations[len(own_results) :]
    ] == [(o.code, o.value, o.reference_range, o.interpretation) for o in sub.observations()]
    # The subcontractor's biochemistry joins the own Biochimie chapter; serology is a new chapter.
    assert [c.code.code for c in merged.chapters] == ["18719-5", "18727-8"]
    assert [b.performed_by for b in merged.chapters[0].batteries] == [None, None, None, lab.key]
    assert merged.chapters[1].batteries[0].performed_by == lab.key
    # The subcontractor's specimen keys (S1 as read from its CDA) are renamed after it.
    assert [s.key for s in merged.specimens] == ["S1", "S2", f"{lab.key}-S1"]


def test_merged_documents_show_both_labs_results(
    own: Report, subcontractor: crbio.Documents, structured: tuple[MergeOutcome, crbio.Documents]
) -> None:
    _, documents = structured
    merged = lab_observations(documents.n3)
    own_count = sum(1 for _ in own.observations())
    assert len(merged) == own_count + 3
    assert [performer_finess(o) for o in merged] == [None] * own_count + [SUBCONTRACTOR_FINESS] * 3
    # In the XML too, the subcontractor's codes and values are those of its own document.
    assert [facts(o) for o in merged[own_count:]] == [facts(o) for o in lab_observations(subcontractor.n3)]
    root = etree.fromstring(documents.n3)
    assert root.find("h:id", NS).get("root") == own.document.id
    assert "Laboratoire Rhône Spécialités" in "".join(root.itertext())


def test_merged_documents_pass_the_ans_kit(
    structured: tuple[MergeOutcome, crbio.Documents], ans_kit_n3: Any, ans_kit_n1: Any
) -> None:
    _, documents = structured
    assert_kit_accepts(documents, "merged", ans_kit_n3, ans_kit_n1)


def test_a_report_already_read_can_be_merged(own: Report) -> None:
    outcome = merge_subcontracted(own, load_report(FIXTURE), label="subcontractor")
    assert outcome.structured and outcome.results == 3


def test_keys_stay_unique_when_the_report_already_has_an_executing_lab(
    subcontractor: crbio.Documents,
) -> None:
    # Sample 06 already subcontracts to another lab; its patient is another: give it sample 01's.
    report = load_report(SAMPLES / "06-sous-traitance.json")
    patient = load_report(OWN).patient
    report = dataclasses.replace(report, patient=patient)
    outcome = merge_subcontracted(report, subcontractor.n3, label="sub.xml")
    keys = [x.key for x in outcome.report.executing_laboratories]
    assert len(keys) == len(set(keys)) == 2
    crbio.build(outcome.report)  # the templates resolve every key


# --- PDF attached ---------------------------------------------------------------------------------


def test_an_n1_is_attached_as_a_pdf(
    subcontractor: crbio.Documents, attached: tuple[MergeOutcome, crbio.Documents], own: Report
) -> None:
    outcome, documents = attached
    assert not outcome.structured and outcome.results == 0
    assert outcome.reason is not None and "N1" in outcome.reason
    (attachment,) = outcome.report.attachments
    assert attachment.data == subcontractor.pdf and attachment.performed_by == outcome.laboratory.key
    assert list(outcome.report.observations()) == list(own.observations())
    root = etree.fromstring(documents.n3)
    (media,) = root.xpath(
        f"//h:section[h:templateId/@root='{SECOND_INTENTION}']//h:observationMedia/h:value", namespaces=NS
    )
    assert base64.b64decode(media.text) == subcontractor.pdf
    assert SUBCONTRACTOR_FINESS in "".join(
        root.xpath(f"//h:section[h:templateId/@root='{SECOND_INTENTION}']//text()", namespaces=NS)
    )
    # The document's own PDF copy is still the first PDF of the N3 (crbio's rendering, not the attachment).
    copy = root.xpath("//h:observationMedia/h:value", namespaces=NS)[0]
    assert base64.b64decode(copy.text) == documents.pdf


def test_pdf_merge_passes_the_ans_kit(
    attached: tuple[MergeOutcome, crbio.Documents], ans_kit_n3: Any, ans_kit_n1: Any
) -> None:
    _, documents = attached
    assert_kit_accepts(documents, "merged-pdf", ans_kit_n3, ans_kit_n1)


def test_an_n3_whose_results_cannot_be_read_is_attached_with_the_reason(
    own: Report, subcontractor: crbio.Documents
) -> None:
    unreadable = subcontractor.n3.replace(b'xsi:type="PQ" value="48.0"', b'xsi:type="BL" value="true"', 1)
    outcome = merge_subcontracted(own, unreadable, label="sub.xml")
    assert not outcome.structured
    assert outcome.reason is not None and "observation/value: a value of type BL" in outcome.reason
    (attachment,) = outcome.report.attachments
    assert attachment.data == subcontractor.pdf  # its FR-Document-PDF-copie


# --- refusals -------------------------------------------------------------------------------------


def rebuilt_subcontractor(**changes: Any) -> bytes:
    report = load_report(FIXTURE)
    patient = changes.pop("patient", None)
    if patient is not None:
        report = dataclasses.replace(report, patient=patient)
    return crbio.build(dataclasses.replace(report, **changes)).n3


def test_another_patient_is_refused_without_patient_data(own: Report) -> None:
    sub = load_report(FIXTURE)
    other = dataclasses.replace(sub.patient, ins=Ins("157015935032185", sub.patient.ins.oid))  # type: ignore[union-attr]
    for data in (
        rebuilt_subcontractor(patient=other),
        crbio.build(dataclasses.replace(sub, patient=other)).n1,
    ):
        with pytest.raises(InputError) as error:
            merge_subcontracted(own, data, label="sub.xml")
        assert error.value.code == "input.merge.patient"
        message = str(error.value)
        assert "INS differ" in message
        for datum in ("157015935032185", "279035121518989", "PAT-TROIS", "1979"):
            assert datum not in message


def test_without_ins_the_ipp_and_birth_data_must_agree(own: Report) -> None:
    sub = load_report(FIXTURE)
    provisional = dataclasses.replace(
        sub.patient, ins=None, identity_status=IdentityStatus.PROVISIONAL, ipp=own.patient.ipp
    )
    outcome = merge_subcontracted(own, rebuilt_subcontractor(patient=provisional), label="sub.xml")
    assert outcome.structured
    other_ipp = dataclasses.replace(provisional, ipp=dataclasses.replace(own.patient.ipp, extension="999"))
    with pytest.raises(InputError, match="IPP differ"):
        merge_subcontracted(own, rebuilt_subcontractor(patient=other_ipp), label="sub.xml")
    other_birth = dataclasses.replace(provisional, birth_date=provisional.birth_date.replace(day=1))  # type: ignore[union-attr]
    with pytest.raises(InputError, match="birth dates differ"):
        merge_subcontracted(own, rebuilt_subcontractor(patient=other_birth), label="sub.xml")


def test_the_laboratory_itself_results_not_validated_and_late_results_are_refused(own: Report) -> None:
    sub = load_report(FIXTURE)
    same_lab = crbio.build(dataclasses.replace(sub, laboratory=own.laboratory)).n3
    with pytest.raises(InputError) as error:
        merge_subcontracted(own, same_lab, label="sub.xml")
    assert error.value.code == "input.merge.same-laboratory"
    early = dataclasses.replace(sub, document=dataclasses.replace(sub.document, before_validation=True))
    with pytest.raises(InputError) as error:
        merge_subcontracted(own, crbio.build(early).n3, label="sub.xml")
    assert error.value.code == "input.merge.not-validated"
    late = own.validated_at + timedelta(hours=1)
    after = dataclasses.replace(
        sub,
        validated_at=late,
        document=dataclasses.replace(sub.document, created_at=late + timedelta(minutes=5)),
    )
    with pytest.raises(InputError) as error:
        merge_subcontracted(own, crbio.build(after).n3, label="sub.xml")
    assert error.value.code == "input.merge.chronology"


def test_hostile_or_foreign_incoming_documents_are_refused(own: Report) -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3">&a;</ClinicalDocument>'
    )
    with pytest.raises(InputError) as error:
        merge_subcontracted(own, laughs, label="sub.xml")
    assert error.value.code == "input.xml"
    with pytest.raises(InputError) as error:
        merge_subcontracted(own, b"<report/>", label="sub.xml")
    assert error.value.code == "input.cda.type"


# --- command line ---------------------------------------------------------------------------------


def test_crbio_merge_writes_the_merged_documents(
    tmp_path: Path, subcontractor: crbio.Documents, capsys: pytest.CaptureFixture[str]
) -> None:
    incoming = tmp_path / "subcontractor.xml"
    incoming.write_bytes(subcontractor.n3)
    assert main(["merge", str(OWN), str(incoming), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert (
        "01-biochimie.json + subcontractor.xml: 01-biochimie.n3.xml, 01-biochimie.n1.xml, 01-biochimie.pdf"
        in out
    )
    assert (
        f"3 results inserted, performed by Laboratoire Rhône Spécialités (FINESS {SUBCONTRACTOR_FINESS})"
        in out
    )
    merged = (tmp_path / "out" / "01-biochimie.n3.xml").read_bytes()
    assert len(lab_observations(merged)) == sum(1 for _ in load_report(OWN).observations()) + 3

    n1 = tmp_path / "subcontractor-n1.xml"
    n1.write_bytes(subcontractor.n1)
    assert main(["merge", str(OWN), str(n1), "-o", str(tmp_path / "out2")]) == 0
    assert "attached: it is a CDA R2 N1" in capsys.readouterr().out


def test_crbio_merge_refuses_another_patient_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    incoming = tmp_path / "subcontractor.xml"
    incoming.write_bytes(crbio.build(load_report(FIXTURE)).n3)
    other = SAMPLES / "06-sous-traitance.json"  # another patient
    assert main(["merge", str(other), str(incoming), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "crbio: subcontractor.xml: the incoming document is not about the patient of the report" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
