"""Reading a CR-BIO CDA (volets 2021.01, 2023.01, 2024.01) into the model, and building it again.

Every official CR-BIO example of the ANS kit is read, rebuilt in the 2024.01 volet, put through
the kit, and compared with the original observation by observation (code, value, unit, range,
interpretation, in the XML); crbio's own sample outputs come back byte for byte. Hostile and
foreign inputs are refused with an InputError naming the element, and no traceback on the
command line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

import crbio
from conftest import ANS_KIT, SAMPLES, assert_kit_accepts, sample_files
from crbio.cli import main
from crbio.documents.context import BuildContext, FixedClock, SequenceIds
from crbio.errors import InputError
from crbio.input import cda as cda_module
from crbio.input import load_report
from crbio.input.cda import load_cda, read_cda, read_cda_document, read_cda_unstructured

EXAMPLES = ANS_KIT / "ExemplesCDA"
CR_BIO = sorted(EXAMPLES.glob("BIO-CR-BIO_*.xml"))
N1_EXAMPLES = [
    EXAMPLES / "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml",
    EXAMPLES / "DOC_NON_STRUCTURE_CDA-R2-N1.xml",
]
N3_EXAMPLES = [p for p in CR_BIO if p not in N1_EXAMPLES]
TROD = sorted(EXAMPLES.glob("BIO-TROD_*.xml"))
NEEDS_EXAMPLES = pytest.mark.skipif(not N3_EXAMPLES, reason=f"the ANS kit's examples are not in {EXAMPLES}")
OWN_OUTPUTS = sorted((SAMPLES / "output").glob("*.n3.xml"))

H = "urn:hl7-org:v3"
NS = {"h": H}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
LAB_OBSERVATION = "1.3.6.1.4.1.19376.1.3.1.6"
_BASE64 = re.compile(rb'(representation="B64">)[A-Za-z0-9+/=\s]+(<)')


def examples(paths: list[Path]) -> list[Any]:
    return paths or [pytest.param(None, marks=pytest.mark.skip(reason=f"no official example in {EXAMPLES}"))]


def ids_of(path: Path | None) -> str:
    return path.name if path else "none"


def context() -> BuildContext:
    return BuildContext(
        FixedClock(datetime.fromisoformat("2026-01-04T18:00:00+01:00")), SequenceIds("1.2.250.1.999.9.9")
    )


# --- what is compared: the observations of a document, as its XML says them ----------------------


def clinical_document(data: bytes) -> etree._Element:
    root = etree.fromstring(data)
    return root if root.tag == f"{{{H}}}ClinicalDocument" else root.find(f".//{{{H}}}ClinicalDocument")


def squeeze(text: str | None) -> str:
    return " ".join((text or "").split())


def shown(root: etree._Element, node: etree._Element | None) -> str:
    """The text of an originalText/text, following a reference into the narrative."""
    if node is None:
        return ""
    reference = node.find("h:reference", NS)
    if reference is not None:
        target = root.xpath(".//*[@ID=$id]", id=reference.get("value", "").lstrip("#"))
        return squeeze("".join(target[0].itertext())) if target else ""
    return squeeze("".join(node.itertext()))


def quantity(node: etree._Element | None) -> tuple[str, str] | None:
    # The written value as a string: "63.000000" must come back as "63.000000".
    return None if node is None else (node.get("value"), node.get("unit") or "1")


def value_facts(root: etree._Element, value: etree._Element | None) -> tuple[Any, ...] | None:
    if value is None:
        return None
    kind = value.get(XSI_TYPE, "").rpartition(":")[2]
    # The model writes REAL/INT as a dimensionless PQ, ED text as ST, CE/CV… as CD: same data.
    kind = {"REAL": "PQ", "INT": "PQ", "ED": "ST", "CE": "CD", "CV": "CD", "CO": "CD", "CS": "CD"}.get(
        kind, kind
    )
    if kind == "PQ":
        return ("PQ", quantity(value))
    if kind == "IVL_PQ":
        low, high = value.find("h:low", NS), value.find("h:high", NS)
        return (
            "IVL_PQ",
            quantity(low),
            low.get("inclusive", "true") if low is not None else None,
            quantity(high),
            high.get("inclusive", "true") if high is not None else None,
        )
    if kind == "CD":
        text = shown(root, value.find("h:originalText", NS)) or value.get("displayName") or value.get("code")
        return ("CD", value.get("code"), value.get("codeSystem"), text)
    if kind == "ST":
        return ("ST", squeeze("".join(value.itertext())))
    if kind.startswith("RTO"):
        return (
            "RTO",
            value.find("h:numerator", NS).get("value"),
            value.find("h:denominator", NS).get("value"),
        )
    return (kind,)


def observation_facts(data: bytes) -> list[tuple[Any, ...]]:
    """Per lab observation, in document order: codes, value with unit, reference range, interpretation."""
    root = clinical_document(data)
    facts = []
    for obs in root.iter(f"{{{H}}}observation"):
        if not any(t.get("root") == LAB_OBSERVATION for t in obs.findall("h:templateId", NS)):
            continue
        code = obs.find("h:code", NS)
        codes = [(code.get("code"), code.get("codeSystem"))] if code.get("code") else []
        codes += [(t.get("code"), t.get("codeSystem")) for t in code.findall("h:translation", NS)]
        observation_range = obs.find("h:referenceRange/h:observationRange", NS)
        reference = None
        if observation_range is not None:
            bounds = observation_range.find("h:value", NS)
            reference = (
                quantity(bounds.find("h:low", NS)) if bounds is not None else None,
                quantity(bounds.find("h:high", NS)) if bounds is not None else None,
                shown(root, observation_range.find("h:text", NS)) or None,
            )
        interpretation = obs.find("h:interpretationCode", NS)
        facts.append(
            (
                tuple(codes),
                value_facts(root, obs.find("h:value", NS)),
                reference,
                interpretation.get("code") if interpretation is not None else None,
            )
        )
    return facts


# --- the official examples ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt() -> dict[str, crbio.Documents]:
    """Every official CR-BIO N3 example read and built again (once for the module)."""
    return {
        path.name: crbio.build(read_cda(path.read_bytes(), label=path.name), context=context())
        for path in N3_EXAMPLES
    }


@NEEDS_EXAMPLES
@pytest.mark.parametrize("example", examples(N3_EXAMPLES), ids=ids_of)
def test_every_official_example_is_read(example: Path) -> None:
    reading = read_cda_document(example.read_bytes(), label=example.name)
    source = observation_facts(example.read_bytes())
    assert sum(1 for _ in reading.report.observations()) == len(source) > 0
    declared = re.search(r"BIO-CR-BIO_(\d{4}\.\d{2})", example.name)
    assert declared is not None
    # The volet comes from the templateId's extension; 2021.01 (and two 2024.01 examples) wrote none.
    assert reading.volet in (declared.group(1), None)
    for omission in reading.omissions:
        assert omission.location.startswith("ClinicalDocument")


@NEEDS_EXAMPLES
@pytest.mark.parametrize("example", examples(N3_EXAMPLES), ids=ids_of)
def test_every_observation_survives_the_round_trip(
    rebuilt: dict[str, crbio.Documents], example: Path
) -> None:
    original = observation_facts(example.read_bytes())
    again = observation_facts(rebuilt[example.name].n3)
    assert len(again) == len(original)
    for n, (before, after) in enumerate(zip(original, again, strict=True)):
        assert after == before, f"observation {n + 1} of {example.name}"


@NEEDS_EXAMPLES
@pytest.mark.parametrize("example", examples(N3_EXAMPLES), ids=ids_of)
def test_rebuilt_examples_pass_the_ans_kit(
    rebuilt: dict[str, crbio.Documents], example: Path, ans_kit_n3: Any, ans_kit_n1: Any
) -> None:
    documents = rebuilt[example.name]
    assert_kit_accepts(documents, f"{example.name}", ans_kit_n3, ans_kit_n1)


@NEEDS_EXAMPLES
def test_auto_presentable_example_is_read_from_its_stylesheet() -> None:
    example = EXAMPLES / "BIO-CR-BIO_2021.01_Auto-Presentable.xml"
    report = read_cda(example.read_bytes(), label=example.name)
    assert etree.QName(etree.fromstring(example.read_bytes())).localname == "stylesheet"
    assert report.patient.qualified_ins is not None
    assert sum(1 for _ in report.observations()) == 11


@NEEDS_EXAMPLES
def test_second_intention_pdf_is_kept_as_an_attachment(rebuilt: dict[str, crbio.Documents]) -> None:
    name = "BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml"
    report = read_cda((EXAMPLES / name).read_bytes(), label=name)
    (attachment,) = report.attachments
    assert attachment.media_type == "application/pdf" and attachment.data.startswith(b"%PDF")
    root = clinical_document(rebuilt[name].n3)
    media = root.xpath(
        ".//h:section[h:templateId/@root='1.2.250.1.213.1.1.2.60']//h:observationMedia/h:value", namespaces=NS
    )
    assert len(media) == 1
    import base64

    assert base64.b64decode(media[0].text) == attachment.data


@NEEDS_EXAMPLES
@pytest.mark.parametrize("example", examples(TROD), ids=ids_of)
def test_another_document_type_is_refused(example: Path) -> None:
    with pytest.raises(InputError) as error:
        read_cda(example.read_bytes(), label=example.name)
    assert error.value.code == "input.cda.type"
    assert "is not a CR-BIO" in str(error.value)


@NEEDS_EXAMPLES
@pytest.mark.parametrize("example", examples([p for p in N1_EXAMPLES if p.exists()]), ids=ids_of)
def test_an_n1_is_refused_where_results_are_needed_but_its_header_and_pdf_are_read(example: Path) -> None:
    with pytest.raises(InputError) as error:
        read_cda(example.read_bytes(), label=example.name)
    assert error.value.code == "input.cda.unstructured"
    assert "ClinicalDocument/component/nonXMLBody" in str(error.value)
    unstructured = read_cda_unstructured(example.read_bytes(), label=example.name)
    assert not unstructured.structured
    assert unstructured.pdf is not None and unstructured.pdf.startswith(b"%PDF")


# --- crbio's own documents ------------------------------------------------------------------------


@pytest.mark.parametrize("document", OWN_OUTPUTS, ids=lambda p: p.name)
def test_crbio_outputs_come_back_identical(document: Path) -> None:
    """Read with the ids kept and built again, crbio's N3 is the same document (its PDF aside)."""
    reading = read_cda_document(document.read_bytes(), label=document.name, ids="keep")
    assert reading.omissions == ()
    assert reading.volet == "2024.01"
    again = crbio.build(reading.report)
    assert _BASE64.sub(rb"\1...\2", again.n3) == _BASE64.sub(rb"\1...\2", document.read_bytes())
    assert observation_facts(again.n3) == observation_facts(document.read_bytes())


def test_read_report_matches_the_json_report_on_results() -> None:
    document = SAMPLES / "output" / "03-ecbu.n3.xml"
    read = read_cda(document.read_bytes(), label=document.name, ids="keep")
    original = load_report(SAMPLES / "03-ecbu.json")
    assert list(read.observations()) == list(original.observations())
    assert read.patient.qualified_ins == original.patient.qualified_ins
    assert read.document.id == original.document.id


# --- document ids ---------------------------------------------------------------------------------


def test_ids_new_replace_keep() -> None:
    path = SAMPLES / "output" / "08b-diabete-v2.n3.xml"
    data = path.read_bytes()
    original = load_report(SAMPLES / "08b-diabete-v2.json").document

    new = read_cda(data, label=path.name)
    assert (new.document.id, new.document.set_id, new.document.version, new.document.replaces) == (
        None,
        None,
        1,
        None,
    )
    built = crbio.build(new, context=context())
    assert built.document_id != original.id

    replacing = read_cda(data, label=path.name, ids="replace").document
    assert replacing.id is None and replacing.set_id == original.set_id
    assert replacing.version == original.version + 1 and replacing.replaces == original.id
    again = crbio.build(read_cda(data, label=path.name, ids="replace"), context=context())
    parent = clinical_document(again.n3).find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", NS)
    assert parent.get("root") == original.id

    kept = read_cda(data, label=path.name, ids="keep").document
    assert (kept.id, kept.set_id, kept.version, kept.replaces, kept.created_at) == (
        original.id,
        original.set_id,
        original.version,
        original.replaces,
        original.created_at,
    )


@NEEDS_EXAMPLES
def test_a_2021_document_migrated_as_its_next_version_passes_the_kit(ans_kit_n3: Any) -> None:
    example = EXAMPLES / "BIO-CR-BIO_2021.01_Microbiologie_V2.xml"
    original = clinical_document(example.read_bytes())
    report = read_cda(example.read_bytes(), label=example.name, ids="replace")
    documents = crbio.build(report, context=context())
    root = clinical_document(documents.n3)
    assert root.find("h:setId", NS).get("root") == original.find("h:setId", NS).get("root")
    assert root.find("h:versionNumber", NS).get("value") == "3"
    parent = root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", NS)
    assert parent.get("root") == original.find("h:id", NS).get("root")
    assert root.find("h:templateId[@root='1.2.250.1.213.1.1.1.55']", NS).get("extension") == "2024.01"
    n3 = ans_kit_n3.check(documents.n3, label="migrated n3")
    assert not n3.findings, n3.summary()


def test_crbio_build_replace_original(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = EXAMPLES / "BIO-CR-BIO_2021.01_Microbiologie_V2.xml"
    original = clinical_document(example.read_bytes())
    for flags, version in (([], "1"), (["--replace-original"], "3")):
        out = tmp_path / str(version)
        assert main(["build", str(example), "-o", str(out), *flags]) == 0
        root = clinical_document((out / example.with_suffix(".n3.xml").name).read_bytes())
        assert root.find("h:versionNumber", NS).get("value") == version
        same_set = root.find("h:setId", NS).get("root") == original.find("h:setId", NS).get("root")
        assert same_set == bool(flags)
    capsys.readouterr()


# --- refusals: hostile, foreign, broken, unholdable -----------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol3;</title></ClinicalDocument>"""
ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&secret;</title></ClinicalDocument>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument SYSTEM "http://example.invalid/cda.dtd">
<ClinicalDocument xmlns="urn:hl7-org:v3"/>"""
NOT_CDA = b"""<?xml version="1.0"?><report><patient>x</patient></report>"""


def own_n3() -> bytes:
    return (SAMPLES / "output" / "01-biochimie.n3.xml").read_bytes()


def hostile_inputs() -> Iterator[Any]:
    yield pytest.param(BILLION_LAUGHS, "input.xml", id="billion-laughs")
    yield pytest.param(ENTITY, "input.xml", id="doctype-entity")
    yield pytest.param(EXTERNAL_DTD, "input.xml", id="external-dtd")
    yield pytest.param(b"this is not XML", "input.xml", id="not-xml")
    yield pytest.param(b"", "input.xml", id="empty")
    yield pytest.param(NOT_CDA, "input.cda.type", id="not-a-cda")
    yield pytest.param(own_n3()[: len(own_n3()) // 3], "input.xml", id="truncated")
    deep = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3">' + b"<a>" * 300 + b"</a>" * 300 + b"</ClinicalDocument>"
    )
    yield pytest.param(deep, "input.xml", id="too-deep")


@pytest.mark.parametrize(("data", "code"), list(hostile_inputs()))
def test_hostile_and_foreign_inputs_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(InputError) as error:
        read_cda(data, label="bad.xml")
    assert error.value.code == code
    assert str(error.value).startswith("bad.xml: ")
    assert "passwd" not in str(error.value)


def test_a_value_the_model_cannot_hold_is_refused_naming_the_element() -> None:
    data = own_n3().replace(b'xsi:type="PQ" value="4.89"', b'xsi:type="BL" value="true"', 1)
    with pytest.raises(InputError) as error:
        read_cda(data, label="bad.xml")
    assert error.value.code == "input.cda.body"
    message = str(error.value)
    assert re.search(
        r"ClinicalDocument/component/structuredBody/.*/observation/value: a value of type BL", message
    )


def test_messages_never_quote_patient_data() -> None:
    data = own_n3()
    bad_key = data.replace(b'extension="279035121518989"', b'extension="279035121518988"')
    no_birth_name = data.replace(b'<family qualifier="BR">PAT-TROIS</family>', b"", 1)
    for broken in (bad_key, no_birth_name):
        with pytest.raises(InputError) as error:
            read_cda(broken, label="bad.xml")
        message = str(error.value)
        for datum in ("27903512151898", "PAT-TROIS", "DOMINIQUE", "19790328", "1234567890121"):
            assert datum not in message
        assert "ClinicalDocument/recordTarget/patientRole" in message


def test_omissions_are_logged_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    data = own_n3().replace(
        b'<value xsi:type="PQ" value="4.89" unit="mmol/L"/>',
        b'<value xsi:type="PQ" value="4.89" unit="mmol/L"><translation value="0.88" code="g/L"/></value>',
        1,
    )
    with caplog.at_level(logging.WARNING, logger="crbio.input.cda"):
        report = read_cda(data, label="own.xml")
    assert any(
        isinstance(o.value, crbio.model.Quantity) and str(o.value.value) == "4.89"
        for o in report.observations()
    )
    (record,) = caplog.records
    assert "not carried over" in record.getMessage() and "secondary unit" in record.getMessage()
    assert "observation/value" in record.getMessage() and "0.88" not in record.getMessage()


def test_an_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cda_module, "MAX_CDA_BYTES", 1000)
    big = tmp_path / "big.xml"
    big.write_bytes(own_n3())
    with pytest.raises(InputError) as error:
        load_cda(big)
    assert error.value.code == "input.too-large"


# --- load_report and the command line -------------------------------------------------------------


def test_load_report_dispatches_on_the_suffix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cda = tmp_path / "REPORT.XML"
    cda.write_bytes(own_n3())
    assert load_report(cda).patient == read_cda(own_n3(), label="x").patient
    assert load_report(SAMPLES / "01-biochimie.json").document.id == "1.2.250.1.999.1.1.2024.1001.1"
    other = tmp_path / "report.txt"
    other.write_text("{}")
    with pytest.raises(InputError, match="report.txt: unsupported input type '.txt'"):
        load_report(other)
    hl7 = tmp_path / "message.hl7"
    hl7.write_bytes(b"MSH|^~\\&|")
    monkeypatch.setitem(sys.modules, "crbio.input.hl7v2", None)  # as if the HL7 v2 reader were absent
    with pytest.raises(InputError, match="HL7 v2 input is not available") as error:
        load_report(hl7)
    assert error.value.code == "input.unsupported"


@NEEDS_EXAMPLES
def test_build_accepts_a_cda_and_re_emits_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "micro.xml"
    source.write_bytes((EXAMPLES / "BIO-CR-BIO_2021.01_Microbiologie_V1.xml").read_bytes())
    assert main(["build", str(source), "-o", str(tmp_path / "out")]) == 0
    assert "micro.xml: micro.n3.xml, micro.n1.xml, micro.pdf" in capsys.readouterr().out
    n3 = (tmp_path / "out" / "micro.n3.xml").read_bytes()
    template = clinical_document(n3).find("h:templateId[@root='1.2.250.1.213.1.1.1.55']", NS)
    assert template.get("extension") == "2024.01"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (BILLION_LAUGHS, "bad.xml: XML refused at line 2"),
        (b"<not-closed", "bad.xml: not well-formed XML"),
        (NOT_CDA, "bad.xml: report: not a CDA document"),
    ],
)
def test_build_refuses_a_bad_cda_with_exit_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_bytes(content)
    assert main(["build", str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"crbio: {expected}" in err
    assert "Traceback" not in err and "bad.xml: bad.xml" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_json_reports_carry_no_attachment_nor_specimen_identifier() -> None:
    # The JSON reader and the templates are unchanged by the CDA reader's model additions.
    for path in sample_files()[:3]:
        report = load_report(path)
        assert report.attachments == ()
        assert all(s.identifier is None for s in report.specimens)


def test_crbio_batch_reads_cda_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("01-biochimie.n3.xml", "03-ecbu.n3.xml"):
        (inputs / name).write_bytes((SAMPLES / "output" / name).read_bytes())
    (inputs / "an-n1.xml").write_bytes((SAMPLES / "output" / "01-biochimie.n1.xml").read_bytes())
    # A folder is not searched for CDA files (it may hold N1s and earlier outputs): a pattern is.
    assert main(["batch", str(inputs), "-o", str(tmp_path / "none"), "--progress", "log"]) == 0
    assert not list((tmp_path / "none").glob("*.n3.xml"))
    status = main(["batch", str(inputs / "*.xml"), "-o", str(tmp_path / "out"), "--progress", "log"])
    capsys.readouterr()
    assert status == 2  # the two N3 re-emitted; the N1 has no results to read
    out = tmp_path / "out"
    for stem in ("01-biochimie.n3", "03-ecbu.n3"):
        assert (out / f"{stem}.n3.xml").is_file() and (out / f"{stem}.pdf").is_file()
    assert not (tmp_path / "out" / "an-n1.n3.xml").exists()
