"""The official ANS conformity kit run from Python: examples, findings, cache, kit defects.

Tests on the real kit use the session fixtures ``ans_kit_n3`` / ``ans_kit_n1`` of
``conftest.py``, so the slow first compile happens once per test session; they skip when the
kit or saxonche is absent. The cache and defect tests run on a tiny kit built in a temporary
folder around the real kit's ISO skeleton, so they take milliseconds.
"""

from __future__ import annotations

import codecs
import importlib.util
import multiprocessing
import shutil
import sys
from pathlib import Path
from typing import cast

import pytest
from lxml import etree

from crbio.errors import ConfigurationError, InputError
from crbio.validation import AnsKit
from crbio.validation import anskit as anskit_module
from crbio.validation.anskit import WITHHELD

ANS_KIT = Path(__file__).resolve().parents[1].parent / "shared" / "ans-kit"
EXAMPLES = ANS_KIT / "ExemplesCDA"
N3_EXAMPLES = sorted(EXAMPLES.glob("BIO-CR-BIO_2024.01_*.xml"))
N1_EXAMPLE = EXAMPLES / "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml"
TSH = EXAMPLES / "BIO-CR-BIO_2024.01_TSH_1.xml"
HAVE_SAXON = importlib.util.find_spec("saxonche") is not None
NEEDS_KIT = pytest.mark.skipif(
    not (ANS_KIT / "schematrons" / "moteur").is_dir() or not HAVE_SAXON,
    reason=f"needs the ANS kit in {ANS_KIT} and saxonche (pip install 'crbio[ans]')",
)
NEEDS_SAXON = pytest.mark.skipif(
    not HAVE_SAXON, reason="saxonche is not installed (pip install 'crbio[ans]')"
)
HL7 = {"h": "urn:hl7-org:v3"}
VOLET = "CI-SIS_BIO-CR-BIO_2024.01"


@pytest.fixture
def kit_n3(ans_kit_n3: object) -> AnsKit:
    return cast(AnsKit, ans_kit_n3)


@pytest.fixture
def kit_n1(ans_kit_n1: object) -> AnsKit:
    return cast(AnsKit, ans_kit_n1)


def line_of(data: bytes, fragment: bytes) -> int:
    return data[: data.index(fragment)].count(b"\n") + 1


# --- the real kit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "example",
    N3_EXAMPLES or [pytest.param(None, marks=pytest.mark.skip(reason=f"no official example in {EXAMPLES}"))],
    ids=lambda p: p.name if p else "none",
)
def test_official_n3_examples_pass_the_kit(kit_n3: AnsKit, example: Path) -> None:
    report = kit_n3.check(example.read_bytes(), label=example.name)
    assert report.ok, report.summary()


def test_official_n1_example_passes_the_transverse_profiles(kit_n1: AnsKit) -> None:
    report = kit_n1.check(N1_EXAMPLE.read_bytes(), label=N1_EXAMPLE.name)
    assert report.ok, report.summary()
    assert report.checks == (
        "ans:IHE",
        "ans:CI-SIS_ModelesDeContenusCDA",
        "ans:CI-SIS_Modeles_ANS",
        "ans:ASIP-STRUCT-MIN-StrucMin",
    )


def test_the_report_names_every_schematron_and_the_kit_version(kit_n3: AnsKit) -> None:
    report = kit_n3.check(TSH.read_bytes(), label="tsh")
    assert report.document == "tsh"
    assert report.checks[0] == f"ans:{VOLET}" and len(report.checks) == 5
    assert len(kit_n3.digest) == 64
    assert kit_n3.digest[:16] in kit_n3.version and VOLET in str(kit_n3) and "Saxon" in kit_n3.version


def test_a_missing_pdf_copy_section_gives_the_ans_message(kit_n3: AnsKit) -> None:
    tree = etree.parse(str(TSH))
    (section,) = tree.xpath("//h:section[h:templateId/@root='1.2.250.1.213.1.1.2.243']", namespaces=HL7)
    component = section.getparent()
    component.getparent().remove(component)
    data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")

    report = kit_n3.check(data, label="no-pdf")

    expected = "La section FR-Document-PDF-copie (1.2.250.1.213.1.1.2.243) doit être présente"
    matching = [f for f in report.findings if expected in f.message]
    assert matching, report.summary()
    finding = matching[0]
    assert finding.source == f"ans:{VOLET}"
    assert finding.message.startswith("[CI-SIS_BIO-CR-BIO] Erreur de conformité au modèle :")
    assert "  " not in finding.message and "\n" not in finding.message
    assert finding.location == "/ClinicalDocument/component/structuredBody"
    assert finding.line == line_of(data, b"<structuredBody")
    assert finding.rule  # the kit's asserts have no id: the pattern names the rule


def test_a_rebuilt_value_set_is_checked(kit_n3: AnsKit) -> None:
    # The kit lacks voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml (XDS typeCode); AnsKit rebuilds
    # it from jeuxDeValeurs, so a document code outside that value set is caught.
    data = TSH.read_bytes().replace(b'code="11502-2"', b'code="11502-9"', 1)
    report = kit_n3.check(data, label="bad-code")
    strucmin = [f for f in report.findings if f.source == "ans:ASIP-STRUCT-MIN-StrucMin"]
    assert [f.location for f in strucmin] == ["/ClinicalDocument/code"]
    assert "1.2.250.1.213.1.1.5.471" in strucmin[0].message
    assert strucmin[0].line == etree.fromstring(data).find("h:code", HL7).sourceline


def test_a_bom_is_accepted(kit_n3: AnsKit) -> None:
    report = kit_n3.check(codecs.BOM_UTF8 + TSH.read_bytes(), label="bom")
    assert report.ok, report.summary()


def test_an_external_entity_never_reaches_saxon(kit_n3: AnsKit) -> None:
    data = TSH.read_bytes()
    start = data.index(b"<ClinicalDocument")
    attack = (
        data[:start] + b'<!DOCTYPE ClinicalDocument [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + data[start:]
    )
    with pytest.raises(InputError) as caught:
        kit_n3.check(attack, label="xxe")
    assert caught.value.code == "input.xml"


def test_not_well_formed_is_an_input_error(kit_n3: AnsKit) -> None:
    with pytest.raises(InputError) as caught:
        kit_n3.check(b"<ClinicalDocument xmlns='urn:hl7-org:v3'><title></ClinicalDocument>", label="broken")
    assert caught.value.code == "input.xml"
    assert caught.value.message.startswith("broken: ")


def test_a_second_kit_in_the_process_reuses_both_caches(kit_n3: AnsKit) -> None:
    again = AnsKit(ANS_KIT, volet=VOLET)  # the fixture's cache: the default one
    assert again.cache_entry == kit_n3.cache_entry
    assert again.transpiled == () and again.compiled == ()


# --- a tiny kit around the real kit's ISO skeleton ---------------------------------------------

TINY_VOLET = """<?xml version="1.0" encoding="UTF-8"?>
<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">
  <ns prefix="cda" uri="urn:hl7-org:v3"/>
  <!-- the file is include/TITLE.sch: a href whose case differs, as in the real kit -->
  <include href="include/Title.sch"/>
  <pattern id="codes">
    <let name="jdv_fake" value="'../jeuxDeValeurs/JDV_Fake.xml'"/>
    <rule context="cda:ClinicalDocument/cda:code">
      <assert test="@code = doc('include/voc-1.2.250.1.999.7-DYNAMIC.xml')
                           //valueSet[1]/conceptList/concept/@code">
        Le code du document   doit faire partie
        du jeu de valeurs 1.2.250.1.999.7.
      </assert>
      <assert test="document($jdv_fake)//*:Concept[@code = current()/@code]">Hors JDV_Fake.</assert>
      <assert role="warning" test="false()">Un simple avertissement.</assert>
    </rule>
  </pattern>
</schema>
"""

TINY_INCLUDE = """<?xml version="1.0" encoding="UTF-8"?>
<pattern xmlns="http://purl.oclc.org/dsdl/schematron" id="title">
  <rule context="cda:ClinicalDocument">
    <assert test="cda:title">Le titre est obligatoire.</assert>
    <report test="cda:bogus">Erreur : l'élément bogus est interdit.</report>
  </rule>
</pattern>
"""

TINY_VALUE_SET = """<?xml version="1.0" encoding="UTF-8"?>
<RetrieveValueSetResponse xmlns="urn:ihe:iti:svs:2008">
  <ValueSet id="1.2.250.1.999.7" displayName="JDV_Fake">
    <ConceptList>
      <Concept code="11502-2" codeSystem="2.16.840.1.113883.6.1" displayName="CR d'examens biologiques"/>
    </ConceptList>
  </ValueSet>
</RetrieveValueSetResponse>
"""

TINY_DOCUMENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <code code="11502-2" codeSystem="2.16.840.1.113883.6.1"/>
  <title>Compte rendu</title>
</ClinicalDocument>
"""


def make_tiny_kit(root: Path, *, volet: str = TINY_VOLET, include: str | None = TINY_INCLUDE) -> Path:
    kit = root / "kit"
    moteur = kit / "schematrons" / "moteur"
    moteur.mkdir(parents=True)
    for xsl in (ANS_KIT / "schematrons" / "moteur").glob("*.xsl"):
        shutil.copyfile(xsl, moteur / xsl.name)
    (kit / "schematrons" / "TINY.sch").write_text(volet, encoding="utf-8")
    if include is not None:
        (kit / "schematrons" / "include").mkdir()
        (kit / "schematrons" / "include" / "TITLE.sch").write_text(include, encoding="utf-8")
    (kit / "jeuxDeValeurs").mkdir()
    (kit / "jeuxDeValeurs" / "JDV_Fake.xml").write_text(TINY_VALUE_SET, encoding="utf-8")
    return kit


def tiny(kit: Path, cache: Path) -> AnsKit:
    return AnsKit(kit, volet="TINY", profiles=(), cache_dir=cache)


@NEEDS_KIT
class TestTinyKit:
    """Findings, mending and caching, on a kit small enough to compile in milliseconds."""

    def test_a_conforming_document_passes(self, tmp_path: Path) -> None:
        report = tiny(make_tiny_kit(tmp_path), tmp_path / "cache").check(TINY_DOCUMENT, label="ok")
        assert report.ok, report.summary()
        assert report.checks == ("ans:TINY",)

    def test_failed_asserts_and_successful_reports_are_findings(self, tmp_path: Path) -> None:
        kit = tiny(make_tiny_kit(tmp_path), tmp_path / "cache")
        data = TINY_DOCUMENT.replace(b'code="11502-2"', b'code="XXX"').replace(
            b"<title>Compte rendu</title>", b"<bogus/>"
        )
        report = kit.check(data, label="bad")
        findings = report.errors
        assert [(f.message, f.location, f.line, f.rule) for f in findings] == [
            ("Le titre est obligatoire.", "/ClinicalDocument", 2, "title"),
            # The kit's skeleton writes @test on reports, not on asserts.
            ("Erreur : l'élément bogus est interdit.", "/ClinicalDocument", 2, "cda:bogus"),
            (
                "Le code du document doit faire partie du jeu de valeurs 1.2.250.1.999.7.",
                "/ClinicalDocument/code",
                3,
                "codes",
            ),
            ("Hors JDV_Fake.", "/ClinicalDocument/code", 3, "codes"),
        ]
        assert {f.source for f in findings} == {"ans:TINY"}
        # role="warning" asserts are reported as advice: they do not fail the document.
        assert [(f.message, f.severity) for f in report.warnings] == [("Un simple avertissement.", "warning")]

    def test_messages_do_not_quote_document_values(self, tmp_path: Path) -> None:
        volet = TINY_VOLET.replace(
            "Hors JDV_Fake.",
            'Hors JDV_Fake : code <value-of select="@code"/>, valeur « <value-of select="@value"/> », '
            'extension « <value-of select="@extension"/> ».',
        )
        kit = tiny(make_tiny_kit(tmp_path, volet=volet), tmp_path / "cache")
        data = TINY_DOCUMENT.replace(
            b'code="11502-2"', b'code="XXX" value="19790328" extension="279035121518989"'
        )
        [message] = [f.message for f in kit.check(data, label="bad").errors if f.message.startswith("Hors")]
        assert message == f"Hors JDV_Fake : code XXX, valeur « {WITHHELD} », extension « {WITHHELD} »."

    def test_kit_defects_are_mended_in_the_cache_not_in_the_kit(self, tmp_path: Path) -> None:
        kit_dir = make_tiny_kit(tmp_path)
        kit = tiny(kit_dir, tmp_path / "cache")
        voc = kit.cache_entry / "schematrons" / "include" / "voc-1.2.250.1.999.7-DYNAMIC.xml"
        concepts = etree.parse(str(voc)).findall("valueSet/conceptList/concept")
        assert [(c.get("code"), c.get("codeSystem")) for c in concepts] == [
            ("11502-2", "2.16.840.1.113883.6.1")
        ]
        assert (kit.cache_entry / "schematrons" / "include" / "Title.sch").is_file()
        assert not (kit_dir / "schematrons" / "include" / "voc-1.2.250.1.999.7-DYNAMIC.xml").exists()
        assert sorted(p.name for p in (kit_dir / "schematrons" / "include").iterdir()) == ["TITLE.sch"]

    def test_a_second_kit_on_the_same_cache_does_not_transpile_again(self, tmp_path: Path) -> None:
        kit_dir, cache = make_tiny_kit(tmp_path), tmp_path / "cache"
        first = tiny(kit_dir, cache)
        assert first.transpiled == ("TINY",)
        xsl = next(first.cache_entry.rglob("*.crbio.xsl"))
        stamp = xsl.stat().st_mtime_ns

        second = tiny(kit_dir, cache)

        assert second.cache_entry == first.cache_entry
        assert second.transpiled == ()
        assert second.compiled == ()  # the process keeps compiled stylesheets too
        assert xsl.stat().st_mtime_ns == stamp
        assert [p.name for p in cache.iterdir()] == [first.cache_entry.name]  # no leftovers
        assert second.check(TINY_DOCUMENT, label="ok").ok

    def test_a_changed_kit_gets_a_new_cache_entry(self, tmp_path: Path) -> None:
        kit_dir, cache = make_tiny_kit(tmp_path), tmp_path / "cache"
        first = tiny(kit_dir, cache)
        volet = kit_dir / "schematrons" / "TINY.sch"
        volet.write_text(
            volet.read_text(encoding="utf-8").replace("Hors JDV_Fake.", "Hors JDV."), encoding="utf-8"
        )

        second = tiny(kit_dir, cache)

        assert second.digest != first.digest and second.cache_entry != first.cache_entry
        assert second.transpiled == ("TINY",) and second.compiled == ("TINY",)
        bad = TINY_DOCUMENT.replace(b'code="11502-2"', b'code="XXX"')
        assert "Hors JDV." in [f.message for f in second.check(bad, label="bad").findings]

    def test_the_cache_folder_follows_crbio_cache_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("CRBIO_CACHE_DIR", str(tmp_path / "elsewhere"))
        kit = AnsKit(make_tiny_kit(tmp_path), volet="TINY", profiles=())
        assert kit.cache_entry.parent == tmp_path / "elsewhere" / "ans-kit"
        assert anskit_module.default_cache_root() == tmp_path / "elsewhere" / "ans-kit"

    def test_concurrent_processes_share_a_cold_cache_safely(self, tmp_path: Path) -> None:
        kit_dir, cache = make_tiny_kit(tmp_path), tmp_path / "cache"
        context = multiprocessing.get_context("spawn")
        with context.Pool(3) as pool:
            results = pool.starmap(_check_in_a_new_process, [(kit_dir, cache)] * 3)
        assert results == [True] * 3
        (entry,) = cache.iterdir()  # one entry, no temporary folder left behind
        assert not [p for p in entry.rglob("*") if p.name.startswith(".")]

    def test_a_schematron_that_breaks_on_a_document_never_lets_it_pass(self, tmp_path: Path) -> None:
        breaking = TINY_VOLET.replace(
            '<assert role="warning" test="false()">', '<assert test="xs:integer(../cda:title) > 0">'
        )
        kit = tiny(make_tiny_kit(tmp_path, volet=breaking), tmp_path / "cache")
        (finding,) = kit.check(TINY_DOCUMENT.replace(b"Compte rendu", b"DUPONT"), label="x").findings
        assert finding.rule == "kit-error" and finding.source == "ans:TINY"
        assert finding.message.startswith("the schematron failed on this document:")
        assert "DUPONT" not in finding.message  # Saxon quotes the value it could not convert

    def test_a_missing_include_is_a_clear_configuration_error(self, tmp_path: Path) -> None:
        kit_dir = make_tiny_kit(tmp_path, include=None)
        with pytest.raises(
            ConfigurationError, match=r"TINY\.sch includes include/Title\.sch, which is missing"
        ):
            tiny(kit_dir, tmp_path / "cache")

    def test_a_missing_value_set_is_a_clear_configuration_error(self, tmp_path: Path) -> None:
        kit_dir = make_tiny_kit(tmp_path, volet=TINY_VOLET.replace("1.2.250.1.999.7-DYNAMIC", "9.9-DYNAMIC"))
        with pytest.raises(
            ConfigurationError, match=r"reads include/voc-9\.9-DYNAMIC\.xml, which is missing"
        ):
            tiny(kit_dir, tmp_path / "cache")

    def test_an_unknown_volet_is_a_configuration_error(self, tmp_path: Path) -> None:
        kit_dir = make_tiny_kit(tmp_path)
        with pytest.raises(ConfigurationError, match="has no schematron NOPE.sch") as caught:
            AnsKit(kit_dir, volet="NOPE", profiles=(), cache_dir=tmp_path / "cache")
        assert caught.value.code == "config.ans-kit"
        with pytest.raises(ConfigurationError, match="invalid volet name"):
            AnsKit(kit_dir, volet="../../etc/passwd", profiles=(), cache_dir=tmp_path / "cache")


def _check_in_a_new_process(kit_dir: Path, cache: Path) -> bool:
    return tiny(kit_dir, cache).check(TINY_DOCUMENT, label="ok").ok


@NEEDS_SAXON
def test_a_folder_that_is_not_the_kit_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not the ANS conformity kit") as caught:
        AnsKit(tmp_path)
    assert caught.value.code == "config.ans-kit"


def test_missing_saxonche_is_a_configuration_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anskit_module, "_saxon_state", {})
    monkeypatch.setitem(sys.modules, "saxonche", None)  # makes `import saxonche` fail
    with pytest.raises(ConfigurationError, match=r"pip install 'crbio\[ans\]'") as caught:
        AnsKit(tmp_path)
    assert caught.value.code == "config.ans-kit"
