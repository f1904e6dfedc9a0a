"""The official CDA_extended.xsd: vendored unmodified, compiled once, precise findings."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from lxml import etree

from crbio._resources import data_path
from crbio._xml import parse_xml
from crbio.errors import InputError
from crbio.validation import validate_xsd
from crbio.validation.xsd import _schema

ANS_KIT = Path(__file__).resolve().parents[1].parent / "shared" / "ans-kit"
EXAMPLES = ANS_KIT / "ExemplesCDA"
N3_EXAMPLES = sorted(EXAMPLES.glob("BIO-CR-BIO_2024.01_*.xml"))
N1_EXAMPLE = EXAMPLES / "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml"
NO_KIT = pytest.mark.skipif(not N3_EXAMPLES, reason=f"the ANS kit's examples are not in {EXAMPLES}")

# The smallest CDA R2 document the schema accepts; one element per line, so that each
# mutation below has a known line.
MINIMAL = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="1.2.250.1.999.1" extension="1"/>
  <code code="11502-2" codeSystem="2.16.840.1.113883.6.1"/>
  <effectiveTime value="20240104180000+0100"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <recordTarget>
    <patientRole>
      <id root="1.2.250.1.999.2" extension="42"/>
      <patient>
        <birthTime value="19790328"/>
      </patient>
    </patientRole>
  </recordTarget>
  <author>
    <time value="20240104180000+0100"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="810000000000"/>
    </assignedAuthor>
  </author>
  <custodian>
    <assignedCustodian>
      <representedCustodianOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1000000000"/>
      </representedCustodianOrganization>
    </assignedCustodian>
  </custodian>
  <component>
    <structuredBody>
      <component>
        <section>
          <title>Résultats</title>
          <text>Aucun</text>
        </section>
      </component>
      <component>
        <section>
          <title>Commentaire</title>
          <text>Aucun</text>
        </section>
      </component>
    </structuredBody>
  </component>
</ClinicalDocument>
"""


def mutated(old: str, new: str) -> bytes:
    assert MINIMAL.count(old) == 1
    return MINIMAL.replace(old, new).encode()


def line_of(text: str) -> int:
    return MINIMAL.split("\n").index(next(line for line in MINIMAL.split("\n") if text in line)) + 1


def test_the_minimal_document_is_valid() -> None:
    report = validate_xsd(MINIMAL.encode(), label="minimal")
    assert report.ok, report.summary()
    assert report.checks == ("xsd",)
    assert report.document == "minimal"


def test_bytes_and_a_parsed_tree_give_the_same_report() -> None:
    data = mutated("<title>Commentaire</title>", "<bogus/><title>Commentaire</title>")
    assert validate_xsd(data, label="d") == validate_xsd(parse_xml(data, label="d"), label="d")


def test_an_unknown_element_is_reported_on_its_line() -> None:
    data = mutated("<title>Commentaire</title>", "<title>Commentaire</title><bogus/>")
    report = validate_xsd(data, label="d")
    assert not report.ok
    (finding,) = report.findings
    assert finding.source == "xsd"
    assert finding.line == line_of("<title>Commentaire</title>")
    assert finding.location == "/ClinicalDocument/component/structuredBody/component[2]/section/bogus"
    assert finding.rule == "SCHEMAV_ELEMENT_CONTENT"
    assert "Element '{urn:hl7-org:v3}bogus': This element is not expected." in finding.message


def test_an_unknown_attribute_is_reported_on_its_line() -> None:
    data = mutated('<code code="11502-2"', '<code bogus="1" code="11502-2"')
    (finding,) = validate_xsd(data, label="d").findings
    assert finding.line == line_of('<code code="11502-2"')
    assert finding.location == "/ClinicalDocument/code/@bogus"
    assert "attribute 'bogus'" in finding.message and "not allowed" in finding.message


def test_a_bad_attribute_value_is_located_but_not_quoted() -> None:
    data = mutated('<birthTime value="19790328"/>', '<birthTime value="1979-03-28"/>')
    (finding,) = validate_xsd(data, label="d").findings
    assert finding.line == line_of("<birthTime")
    assert finding.location == "/ClinicalDocument/recordTarget/patientRole/patient/birthTime/@value"
    assert finding.rule == "SCHEMAV_CVC_PATTERN_VALID"
    # A birth date is patient data: the message names the rule, not the value.
    assert "1979" not in finding.message
    assert "[value withheld] is not accepted by the pattern" in finding.message


def test_a_bad_code_value_is_not_quoted_either() -> None:
    data = mutated('<confidentialityCode code="N"', '<confidentialityCode code="N" nullFlavor="SECRET42"')
    findings = validate_xsd(data, label="d").findings
    assert findings
    assert all("SECRET42" not in f.message for f in findings)
    assert {f.location for f in findings} == {"/ClinicalDocument/confidentialityCode/@nullFlavor"}


def test_every_error_is_reported() -> None:
    data = mutated("<title>Commentaire</title>", "<title>Commentaire</title><bogus/>").replace(
        b'<code code="11502-2"', b'<code bogus="1" code="11502-2"'
    )
    report = validate_xsd(data, label="d")
    assert [f.line for f in report.findings] == [line_of("<code code"), line_of("<title>Commentaire")]
    assert len(report.summary().splitlines()) == 3


def test_not_well_formed_bytes_are_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        validate_xsd(b"<ClinicalDocument>", label="d")
    assert caught.value.code == "input.xml"


def test_the_schema_is_compiled_once_per_process() -> None:
    assert _schema() is _schema()


def test_the_vendored_schema_is_the_official_one_unmodified() -> None:
    folder = data_path("schemas", "cda")
    provenance = (folder / "PROVENANCE.md").read_text(encoding="utf-8")
    listed = dict(
        re.findall(r"^\| `([^`]+\.xsd)` \| `[0-9a-f]{40}` \| `([0-9a-f]{64})` \|$", provenance, re.M)
    )
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"PROVENANCE.md"}
    assert set(listed) == present
    for name, sha256 in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha256, name


def test_every_include_and_import_resolves_inside_the_folder() -> None:
    folder = data_path("schemas", "cda").resolve()
    xs = "{http://www.w3.org/2001/XMLSchema}"
    for path in folder.rglob("*.xsd"):
        for ref in etree.parse(str(path)).iter(f"{xs}include", f"{xs}import"):
            target = (path.parent / ref.get("schemaLocation", "")).resolve()
            assert target.is_file() and target.is_relative_to(folder), (path.name, ref.get("schemaLocation"))


@NO_KIT
@pytest.mark.parametrize(
    "example",
    N3_EXAMPLES or [pytest.param(None, marks=pytest.mark.skip(reason=f"no official example in {EXAMPLES}"))],
    ids=lambda p: p.name if p else "none",
)
def test_official_n3_examples_are_valid(example: Path) -> None:
    report = validate_xsd(example.read_bytes(), label=example.name)
    assert report.ok, report.summary()


@NO_KIT
def test_official_n1_example_is_valid() -> None:
    report = validate_xsd(N1_EXAMPLE.read_bytes(), label=N1_EXAMPLE.name)
    assert report.ok, report.summary()


@NO_KIT
def test_a_broken_official_example_gives_the_right_line() -> None:
    text = N3_EXAMPLES[0].read_bytes().decode("utf-8")
    marker = "<title>"
    line = text[: text.index(marker)].count("\n") + 1
    data = text.replace(marker, "<unexpected/>" + marker, 1).encode()
    findings = validate_xsd(data, label="x").findings
    assert [(f.line, f.rule) for f in findings] == [(line, "SCHEMAV_ELEMENT_CONTENT")]
    assert findings[0].location == "/ClinicalDocument/unexpected"
