"""The official ANS conformity kit run from Python: examples, findings, cache, kit defects.

Tests on the real kit use the session fixtures ``ans_kit_n3`` / ``ans_kit_n1`` of
``conftest.py``, so the slow first compile happens once per test session; they skip when the
kit or saxonche is absent. The cache and defect tests run on a tiny kit built in a temporary
folder around the real kit's ISO skeleton, so they take milliseconds. The last tests prove the
stylesheets crbio runs (rewritten for speed) give the same SVRL as the kit's own.
"""

from __future__ import annotations

import codecs
import importlib.util
import multiprocessing
import os
import re
import shutil
import sys
from pathlib import Path
from typing import cast

import pytest
from lxml import etree

from crbio._xml import xml_text
from crbio.errors import ConfigurationError, InputError
from crbio.validation import AnsKit
from crbio.validation import anskit as anskit_module
from crbio.validation.anskit import WITHHELD
from crbio.validation.anskit_rewrite import KEY_NAME, rewrite_stylesheet

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


# --- the rewritten stylesheets give the same verdicts as the kit's own -------------------------
#
# crbio runs the kit's transpiled schematrons after a compile-time rewrite that makes them walk
# the document once instead of once per pattern (crbio.validation.anskit_rewrite). These tests
# prove the SVRL is the same, byte for byte (but for its timestamp), as the unrewritten
# stylesheets' (what ans-check and the kit's own compilverif run): on a tiny kit built around
# the rewrite's edge cases, and on the real kit over the official examples, crbio's samples and
# deliberately broken documents. CI runs a chosen subset (about 40 s of CPU, half of it compiling
# the unrewritten stylesheets); CRBIO_ANS_EQUIVALENCE=all runs every official BIO-CR-BIO example
# and every sample, N3 and N1 (about 90 s of CPU).

_TIMESTAMP = re.compile(r'\sdateHeure="[^"]*"')

EDGE_VOLET = """<?xml version="1.0" encoding="UTF-8"?>
<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">
  <ns prefix="cda" uri="urn:hl7-org:v3"/>
  <pattern id="root">
    <rule context="/"><assert test="cda:ClinicalDocument">Pas de ClinicalDocument.</assert></rule>
  </pattern>
  <pattern id="template-ids">
    <rule context="*[cda:templateId/@root = '1.2.3']/cda:code">
      <assert test="@code = 'A'">Code A attendu.</assert>
    </rule>
    <rule context="*[cda:templateId/@root = '1.2.3']">
      <assert test="cda:code">Code obligatoire.</assert>
    </rule>
    <rule context="cda:section"><report test="true()">Section sans gabarit 1.2.3.</report></rule>
  </pattern>
  <pattern id="unions">
    <rule context="cda:entry | //cda:observation[cda:value] | cda:section/@classCode">
      <report test="self::cda:observation and not(cda:value/@value = ('3', '7'))">Valeur inattendue.</report>
      <report test="self::cda:entry and not(*)">Entrée vide.</report>
    </rule>
  </pattern>
  <pattern id="first-entry">
    <rule context="cda:entry[1]"><report test="true()">Première entrée.</report></rule>
  </pattern>
  <pattern id="positions">
    <rule context="cda:entry"><report test="position() = last()">Dernière entrée.</report></rule>
  </pattern>
  <pattern id="numbers">
    <rule context="cda:value[@value &gt; 5]"><report test="true()">Grande valeur.</report></rule>
  </pattern>
  <pattern id="attributes">
    <rule context="@classCode">
      <report test="true()">Jamais : la promenade ne visite pas les attributs.</report>
    </rule>
  </pattern>
</schema>
"""

EDGE_DOCUMENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment and a processing instruction before the root: the walk visits them -->
<?crbio test?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <templateId root="1.2.3"/>
  <component><structuredBody>
    <section classCode="DOCSECT"><templateId root="1.2.3"/><code code="B"/>
      <entry><observation><value value="3"/></observation></entry>
      <entry><observation><value value="7"/></observation></entry>
      <!-- a comment inside -->
      <entry><observation><value value="9"/></observation></entry>
    </section>
    <section><entry/></section>
  </structuredBody></component>
</ClinicalDocument>
"""


def svrl_outputs(kit: AnsKit, data: bytes) -> list[str]:
    """The SVRL each schematron of ``kit`` writes for ``data``, timestamp removed, errors as text."""
    processor, _, saxon_error, _ = anskit_module._saxon()
    node = processor.parse_xml(xml_text=xml_text(data, label="doc"), encoding="UTF-8")
    outputs = []
    for _, executable in kit._schematrons:
        try:
            outputs.append(_TIMESTAMP.sub("", executable.transform_to_string(xdm_node=node)))
        except saxon_error as error:
            outputs.append(f"error: {error}")
    return outputs


def failures(svrl: str) -> list[tuple[str, str | None, str | None]]:
    """(tag, location, id or test) of each failed assert and successful report of an SVRL text."""
    if svrl.startswith("error: "):
        return [("error", None, svrl)]
    root = etree.fromstring(svrl.encode("utf-8"))
    return [
        (etree.QName(item).localname, item.get("location"), item.get("id") or item.get("test"))
        for item in root
        if etree.QName(item).localname in ("failed-assert", "successful-report")
    ]


def assert_same_svrl(reference: AnsKit, fast: AnsKit, data: bytes) -> list[str]:
    expected, actual = svrl_outputs(reference, data), svrl_outputs(fast, data)
    assert len(expected) == len(actual) == len(reference.checks)
    for name, want, got in zip(reference.checks, expected, actual, strict=True):
        assert failures(got) == failures(want), name
        assert got == want, name
    return expected


@NEEDS_KIT
class TestRewrite:
    """The rewrite on a tiny kit made of its edge cases: what it rewrites, what it keeps, same SVRL."""

    def kits(self, tmp_path: Path) -> tuple[AnsKit, AnsKit]:
        kit_dir, cache = make_tiny_kit(tmp_path, volet=EDGE_VOLET, include=None), tmp_path / "cache"
        fast = AnsKit(kit_dir, volet="TINY", profiles=(), cache_dir=cache)
        reference = AnsKit(kit_dir, volet="TINY", profiles=(), cache_dir=cache, optimised=False)
        return reference, fast

    def test_what_is_rewritten_and_what_is_kept(self, tmp_path: Path) -> None:
        _, fast = self.kits(tmp_path)
        rewrite = fast.rewrites["TINY"]
        assert rewrite.default_walks == 7
        assert rewrite.patterns == 5 and rewrite.key_lookups == 2
        kept = dict(rewrite.kept)
        assert len(kept) == 2
        assert any("position() or last()" in reason for reason in kept.values())
        assert any(
            "operator >" in reason or "leaves the safe vocabulary" in reason for reason in kept.values()
        )
        xsl = next(fast.cache_entry.rglob("TINY.crbio-fast.xsl")).read_text(encoding="utf-8")
        assert f'<xsl:key name="{KEY_NAME}"' in xsl

    @pytest.mark.parametrize(
        "variant",
        [
            EDGE_DOCUMENT,
            EDGE_DOCUMENT.replace(b'code="B"', b'code="A"'),
            EDGE_DOCUMENT.replace(b'value="9"', b'value="neuf"'),  # the kept pattern compares it to 5
            EDGE_DOCUMENT.replace(b'<templateId root="1.2.3"/>\n  <component>', b"<component>"),
            TINY_DOCUMENT,
        ],
        ids=["edges", "code-a", "not-a-number", "no-root-template-id", "other-document"],
    )
    def test_the_svrl_is_the_same(self, tmp_path: Path, variant: bytes) -> None:
        reference, fast = self.kits(tmp_path)
        [svrl] = assert_same_svrl(reference, fast, variant)
        if variant is EDGE_DOCUMENT:
            found = failures(svrl)
            assert (
                "successful-report",
                "/ClinicalDocument/component/structuredBody/section[2]",
                "true()",
            ) in found
            assert [f for f in found if f[0] == "failed-assert"] == [
                ("failed-assert", "/ClinicalDocument", None),
                ("failed-assert", "/ClinicalDocument/component/structuredBody/section/code", None),
            ]
            assert "Jamais" not in svrl
        assert fast.check(variant, label="x") == reference.check(variant, label="x")

    def test_a_stylesheet_that_is_not_the_skeletons_is_left_alone(self) -> None:
        stylesheet = etree.ElementTree(
            etree.fromstring(
                b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="2.0">'
                b'<xsl:import href="other.xsl"/><xsl:template match="/"><xsl:apply-templates/></xsl:template>'
                b"</xsl:stylesheet>"
            )
        )
        before = etree.tostring(stylesheet)
        rewrite = rewrite_stylesheet(stylesheet)
        assert (rewrite.default_walks, rewrite.patterns, rewrite.key_lookups) == (0, 0, 0)
        assert etree.tostring(stylesheet) == before


def _mutated(path: Path, change: str) -> bytes:
    """An official example or a sample, deliberately broken in one way."""
    tree = etree.parse(str(path))
    root = tree.getroot()

    def one(xpath: str) -> etree._Element:
        found = root.xpath(xpath, namespaces=HL7)
        assert found, xpath
        return cast(etree._Element, found[0])

    if change == "wrong-loinc":
        one("h:code").set("code", "11502-9")  # not the CR-BIO document type
        result = one("//h:observation/h:code[@codeSystem='2.16.840.1.113883.6.1']")
        result.set("code", "99999-9")
        result.set("codeSystem", "2.16.840.1.113883.6.96")
    elif change == "no-author":
        author = one("h:author")
        root.remove(author)
    elif change == "wrong-value-set-code":
        one("h:confidentialityCode").set("code", "X")
        one("//h:administrativeGenderCode").set("code", "Z")
    elif change == "no-results-sections":
        # Every section but the PDF copy, then the PDF copy's own entry.
        for section in root.xpath(
            "//h:section[not(h:templateId/@root = '1.2.250.1.213.1.1.2.243')]", namespaces=HL7
        ):
            component = section.getparent()
            component.getparent().remove(component)
        entry = one("//h:section/h:entry")
        entry.getparent().remove(entry)
    elif change == "entry-without-code":
        # The templateIds stay (they are what makes the rules fire); what they require goes.
        observation = one("//h:section[not(h:templateId/@root = '1.2.250.1.213.1.1.2.243')]//h:observation")
        for name in ("h:code", "h:statusCode"):
            element = observation.find(name, namespaces=HL7)
            if element is not None:
                observation.remove(element)
    elif change == "wrong-interpretation":
        one("//h:interpretationCode").set("code", "ZZ")
    elif change == "nil-and-comments":
        one("h:title").addprevious(etree.Comment(" commentaire "))
        root.addprevious(etree.ProcessingInstruction("crbio", "test"))
        effective = one("h:effectiveTime")
        del effective.attrib["value"]
        effective.set("nullFlavor", "UNK")
        one("//h:observation/h:effectiveTime").set("nullFlavor", "UNK")
    else:
        raise AssertionError(change)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))


SAMPLES_OUT = Path(__file__).resolve().parents[1] / "samples" / "output"
BROKEN = [
    ("wrong-loinc", "03-ecbu.n3.xml"),
    ("no-author", "01-biochimie.n3.xml"),
    ("wrong-value-set-code", "04-serologie.n3.xml"),
    ("no-results-sections", "05-immuno-hematologie.n3.xml"),
    ("entry-without-code", "02-hemogramme.n3.xml"),
    ("wrong-interpretation", "08b-diabete-v2.n3.xml"),
    ("nil-and-comments", "10-accents-apostrophes.n3.xml"),
]
FULL_EQUIVALENCE = os.environ.get("CRBIO_ANS_EQUIVALENCE") == "all"
if FULL_EQUIVALENCE:
    EQUIVALENCE_FILES = sorted(EXAMPLES.glob("BIO-CR-BIO_*.xml")) + sorted(SAMPLES_OUT.glob("*.xml"))
else:
    # One example of each kind (microbiology, electrophoresis, PDF-only second opinion, non-LOINC,
    # cervical screening, older volets, an N1) and samples of each shape; the full set on demand.
    EQUIVALENCE_FILES = [
        EXAMPLES / name
        for name in (
            "BIO-CR-BIO_2024.01_Microbiologie_V2.xml",
            "BIO-CR-BIO_2024.01_Electrophorese.xml",
            "BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml",
            "BIO-CR-BIO_2024.01_CRP_non_LOINC.xml",
            "BIO-CR-BIO_2024.01_DEP-CCU-tout-structuré.xml",
            "BIO-CR-BIO_2021.01_Microbiologie_V1.xml",
            "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml",
        )
    ] + [
        SAMPLES_OUT / name
        for name in (
            "06-sous-traitance.n3.xml",
            "13-identite-provisoire.n3.xml",
            "07-mineure-beta-hcg.n1.xml",
        )
    ]


@pytest.fixture(scope="module")
def reference_n3(ans_kit_n3: object) -> AnsKit:
    """The kit run from its transpiled stylesheets as they are, as ans-check runs them."""
    return AnsKit(ANS_KIT, volet=VOLET, optimised=False)


@pytest.mark.parametrize("path", EQUIVALENCE_FILES, ids=lambda p: p.name)
def test_official_examples_and_samples_get_the_same_svrl(
    kit_n3: AnsKit, reference_n3: AnsKit, path: Path
) -> None:
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    assert_same_svrl(reference_n3, kit_n3, path.read_bytes())


@pytest.mark.parametrize(("change", "name"), BROKEN, ids=[change for change, _ in BROKEN])
def test_broken_documents_get_the_same_svrl(
    kit_n3: AnsKit, reference_n3: AnsKit, change: str, name: str
) -> None:
    data = _mutated(SAMPLES_OUT / name, change)
    expected = assert_same_svrl(reference_n3, kit_n3, data)
    assert any(failures(svrl) for svrl in expected), f"{change}: the kit found nothing to compare"
    report = kit_n3.check(data, label=change)
    assert report.findings
