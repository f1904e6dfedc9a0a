"""crbio's stylesheet and render_html: the ANS examples, crbio's own documents, hostile input."""

from __future__ import annotations

import base64
import codecs
import functools
import http.server
import re
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from lxml import etree

import crbio
from crbio.documents.context import BuildContext, FixedClock, SequenceIds
from crbio.errors import ConfigurationError, InputError
from crbio.presentation import render_html, stylesheet_path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT.parent / "shared" / "ans-kit" / "ExemplesCDA"
NS = {"h": "urn:hl7-org:v3"}
XSL = "http://www.w3.org/1999/XSL/Transform"


def _examples(pattern: str = "BIO-CR-BIO_*.xml") -> list[Any]:
    if not EXAMPLES.is_dir():
        reason = f"the ANS examples are not at {EXAMPLES}: rendering of the official examples not tested"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    return [pytest.param(path, id=path.stem) for path in sorted(EXAMPLES.glob(pattern))]


def _example(name: str) -> Path:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"the ANS example {name} is not at {EXAMPLES}")
    return path


@functools.cache
def _rendered(path: Path) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(render_html(path))


def text_of(node: Any) -> str:
    return " ".join(node.text_content().split())


def values(page: lxml.html.HtmlElement, card: str, label: str) -> list[str]:
    """The values of the rows called ``label`` in the header card titled ``card``."""
    rows = page.xpath("//section[h2=$card]//dt[.=$label]/following-sibling::dd[1]", card=card, label=label)
    return [text_of(dd) for dd in rows]


def _clinical_document(path: Path) -> etree._Element:
    """The CDA in an example (the "auto-présentable" ones wrap it in an XSL stylesheet)."""
    root = etree.parse(str(path)).getroot()
    return root if root.tag == "{urn:hl7-org:v3}ClinicalDocument" else root.find(".//h:ClinicalDocument", NS)


def assert_inert(page: lxml.html.HtmlElement) -> None:
    """Nothing in the page runs or fetches: no script, no frame, no handler, data: images only."""
    assert not page.xpath("//script | //iframe | //object | //embed | //link | //base | //form")
    for element in page.iter():
        if isinstance(element.tag, str):
            assert not [name for name in element.attrib if name.lower().startswith("on")], element.tag
    for src in page.xpath("//@src"):
        assert re.match(r"data:image/(png|jpeg|gif);base64,[A-Za-z0-9+/=]*\Z", src), src[:80]
    for href in page.xpath("//@href"):
        assert href.startswith(("https://", "http://", "mailto:", "#", "data:application/pdf;base64,")), href[
            :80
        ]
    assert "url(" not in "".join(page.xpath("//style/text()"))


# --------------------------------------------------------------------------- the ANS examples


@pytest.mark.parametrize("path", _examples())
def test_every_official_example_renders_its_header_and_narrative(path: Path) -> None:
    page = _rendered(path)
    cda = _clinical_document(path)
    assert_inert(page)
    text = text_of(page)

    title = " ".join(cda.findtext("h:title", namespaces=NS).split())
    assert text_of(page.xpath("//h1")[0]) == title
    patient = cda.find("h:recordTarget/h:patientRole/h:patient", NS)
    birth_name = patient.findtext("h:name/h:family[@qualifier='BR']", namespaces=NS)
    assert text_of(page.xpath("//p[@class='banner']/strong")[0]) == birth_name
    assert "Nom de naissance" in text and "Premier prénom de naissance" in text
    custodian = cda.findtext(".//h:representedCustodianOrganization/h:name", namespaces=NS)
    assert custodian in text
    biologist = cda.findtext("h:legalAuthenticator//h:assignedPerson/h:name/h:family", namespaces=NS)
    assert biologist in text_of(page.xpath("//section[h2='Responsable du document']")[0])

    # Every section title and every table cell of the narrative, as written.
    headings = {text_of(h) for h in page.xpath("//main//h2 | //main//h3 | //main//h4 | //main//strong")}
    for section_title in cda.iterfind(".//h:section/h:title", NS):
        assert " ".join(section_title.text.split()) in headings
    for cell in cda.iterfind(".//h:section/h:text//h:td", NS):
        assert " ".join("".join(cell.itertext()).split()) in text


@pytest.mark.parametrize("path", _examples("*.xml"))
def test_every_file_of_the_kit_renders_inert_with_its_patient(path: Path) -> None:
    page = _rendered(path)
    assert_inert(page)
    assert "[INS-NIR de test]" in text_of(page.xpath("//section[h2='Patient']")[0])
    assert page.xpath("//main[contains(@class, 'body')]")


@pytest.mark.parametrize("path", _examples("BIO-CR-BIO_2024.01_*.xml"))
def test_the_2024_examples_show_the_ins_and_the_pdf_copy(path: Path) -> None:
    page = _rendered(path)
    ins = [text_of(p) for p in page.xpath("//section[h2='Patient']/p[@class='ins']")]
    assert ins == ["Matricule INS : 279035121518989 [INS-NIR de test]"]
    assert "1234567890121" in text_of(page.xpath("//section[h2='Patient']")[0])  # the IPP

    (copy,) = page.xpath("//section[contains(@class, 'pdf-copy')]//a")
    assert copy.text == "Copie PDF du document"
    assert copy.get("download").endswith(".pdf")
    prefix = "data:application/pdf;base64,"
    assert copy.get("href").startswith(prefix)
    assert base64.b64decode(copy.get("href")[len(prefix) :][:8]).startswith(b"%PDF")


def test_microbiology_isolates_and_antibiograms_are_shown_as_written() -> None:
    page = _rendered(_example("BIO-CR-BIO_2024.01_Microbiologie_V1.xml"))
    assert text_of(page.xpath("//main//h2")[0]) == "Examen cytobactériologique des urines (ECBU)"
    rows = [[text_of(cell) for cell in row.xpath("td")] for row in page.xpath("//main//tr")]
    assert ["Amoxicilline", ">=0,512 µg/ml", "R"] in rows
    assert ["Gentamicine", "<0,0032 µg/ml", "S"] in rows
    assert page.xpath("//th[@colspan='2'][contains(., 'Escherichia coli')]")
    assert page.xpath("//td[@rowspan='4'][contains(., 'Antibiogramme (CMI)')]")
    assert page.xpath("//p[@id='C_ECBU'][@class='sc-bold'][.='Traitement immédiat']")
    assert values(page, "Biologiste ayant validé", "Nom") == ["DR Jean DE SANTS"]
    assert values(page, "Biologiste ayant validé", "Date de validation") == ["04/01/2024 à 11:20"]
    assert values(page, "Prescripteur", "Nom") == ["DR Eva BLUE"]
    assert values(page, "Prescripteur", "Date de prescription") == ["31/12/2020 à 07:35"]
    assert values(page, "Préleveur", "Nom") == ["MME Roberta BLEEDER"]
    assert values(page, "Préleveur", "Date du prélèvement") == ["04/01/2024 à 07:35"]
    assert values(page, "Patient", "Prénoms de naissance") == ["DOMINIQUE MARIE-LOUISE"]
    assert values(page, "Patient", "Sexe") == ["Féminin"]
    assert values(page, "Patient", "Date de naissance") == ["28/03/1979"]
    assert values(page, "Patient", "Lieu de naissance") == ["DOMPREMY (code lieu de naissance 51215)"]
    assert values(page, "Patient", "Identifiant") == ["1234567890121 [1.2.3.4.567.8.9.10]"]
    assert "Courriel 279035121518989@patient.mssante.fr" in values(page, "Patient", "Télécom")
    assert values(page, "Examens", "Chapitres") == ["Microbiologie"]
    assert values(page, "Demande d'examens", "Identifiant de la demande") == [
        "2024123456780 [1.2.250.1.213.1.1.9]"
    ]


def test_a_replacing_version_says_which_document_it_replaces() -> None:
    page = _rendered(_example("BIO-CR-BIO_2024.01_Microbiologie_V2.xml"))
    notice = text_of(page.xpath("//p[@class='notice']")[0])
    assert notice == "Annule et remplace le document 1.2.250.1.213.1.1.1.55.12345.13"
    assert [
        text_of(dd) for dd in page.xpath("//dl[@class='meta']/dt[.='Version']/following-sibling::dd[1]")
    ] == ["2"]


def test_electrophoresis_shows_its_image_inline() -> None:
    page = _rendered(_example("BIO-CR-BIO_2024.01_Electrophorese.xml"))
    (image,) = page.xpath("//main//img")
    assert base64.b64decode(image.get("src").split(",", 1)[1][:12]).startswith(b"\x89PNG")
    assert "Bisalbuminémie" in text_of(page)


def test_a_second_line_report_pdf_is_a_download_link() -> None:
    page = _rendered(_example("BIO-CR-BIO_2024.01_CR-2nde-intention-PDF.xml"))
    links = page.xpath("//main//a[@class='pdf']")
    assert [a.text for a in links] == ["Document PDF joint (télécharger)", "Copie PDF du document"]
    assert all(a.get("href").startswith("data:application/pdf;base64,JVBER") for a in links)


def test_screening_report_links_recipients_and_attending_doctor() -> None:
    page = _rendered(_example("BIO-CR-BIO_2024.01_DEP-CCU-tout-structuré.xml"))
    assert page.xpath("//main//a[@href='https://www.e-cancer.fr'][.='e-cancer.fr']")
    assert values(page, "Destinataire", "Organisation") == [
        "Collecteur national des données de dépistage des cancers"
    ]
    assert "Courriel eva.blue@mssante.fr" in values(page, "Destinataire", "Télécom")
    tsh = _rendered(_example("BIO-CR-BIO_2024.01_TSH_1.xml"))
    assert values(tsh, "Médecin traitant", "Nom") == ["DR Paul MEDECIN5729"]
    assert ["Thyréostimuline (TSH) (ECL Modular)", "1.950 mUI/l", "(0.270 - 4.200)"] in [
        [text_of(td) for td in tr.xpath("td")] for tr in tsh.xpath("//main//tr")
    ]


@pytest.mark.parametrize("path", _examples("*CDA-R2-N*1.xml"))
def test_an_n1_document_offers_its_pdf(path: Path) -> None:
    page = _rendered(path)
    assert_inert(page)
    assert "[INS-NIR de test]" in text_of(page)
    (link,) = page.xpath("//main//a[@download]")
    assert link.get("download").endswith(".pdf")
    assert link.get("href").startswith("data:application/pdf;base64,JVBER")
    encoded = "".join(
        _clinical_document(path).findtext("h:component/h:nonXMLBody/h:text", namespaces=NS).split()
    )
    assert link.get("href") == "data:application/pdf;base64," + encoded


def test_render_time_on_the_official_examples(capsys: pytest.CaptureFixture[str]) -> None:
    paths = sorted(EXAMPLES.glob("BIO-CR-BIO_*.xml")) if EXAMPLES.is_dir() else []
    if not paths:
        pytest.skip(f"the ANS examples are not at {EXAMPLES}")
    documents = [path.read_bytes() for path in paths]
    render_html(documents[0])  # compiles the stylesheet
    timings = []
    for _ in range(3):
        for data in documents:
            start = time.perf_counter()
            render_html(data)
            timings.append((time.perf_counter() - start) * 1000)
    with capsys.disabled():
        print(
            f"\nrender_html: median {statistics.median(timings):.1f} ms, max {max(timings):.1f} ms "
            f"over {len(documents)} ANS examples x 3"
        )


# --------------------------------------------------------------------------- crbio's own documents


@pytest.fixture(scope="module")
def ecbu() -> crbio.Documents:
    context = BuildContext(
        FixedClock(datetime.fromisoformat("2026-01-04T18:00:00+01:00")), SequenceIds("1.2.250.1.999.9.9")
    )
    return crbio.build(crbio.load_report(ROOT / "samples" / "03-ecbu.json"), context=context, validate=False)


def test_crbio_documents_render_through_the_stylesheet_they_point_to(ecbu: crbio.Documents) -> None:
    assert b'href="crbio-cda.xsl"' in ecbu.n3
    n3 = lxml.html.document_fromstring(render_html(ecbu.n3))
    assert_inert(n3)
    text = text_of(n3)
    assert "Matricule INS : 262044410911219 [INS-NIR de test]" in text
    assert "Laboratoire Bio-Armor, site de Saint-Brieuc" in text
    assert [text_of(h) for h in n3.xpath("//main//h2")][0] == "Microbiologie"
    rows = {
        text_of(tr.xpath("td//span")[0]): [text_of(td) for td in tr.xpath("td")[1:]]
        for tr in n3.xpath("//main//tbody/tr")
    }
    assert rows["Leucocytes"] == ["85 000 /mL", "< 10 000 /mL", "Anormalement haut"]
    assert "85 000 /mL" in [text_of(span) for span in n3.xpath("//main//td/span[@class='sc-bold']")]
    n1 = lxml.html.document_fromstring(render_html(ecbu.n1))
    (link,) = n1.xpath("//main//a[@download]")
    assert base64.b64decode(link.get("href").split(",", 1)[1]) == ecbu.pdf


# --------------------------------------------------------------------------- hostile documents

HOSTILE = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <id root="1.2.3" extension="A&quot;/&gt;&lt;script&gt;"/>
  <title>Compte rendu</title>
  <recordTarget><patientRole><patient><name><family>DURAND</family><given>Léa</given></name>
    <administrativeGenderCode code="F"/><birthTime value="19620423"/></patient></patientRole></recordTarget>
  <component><structuredBody><component><section ID="s&quot; onclick=&quot;alert(1)">
    <title>Résultats &lt;img src=x onerror=alert(1)&gt;</title>
    <text>
      <content ID="c1">&lt;script&gt;alert(1)&lt;/script&gt;</content>
      <content styleCode="Bold&quot; onmouseover=&quot;alert(1)">styled</content>
      <linkHtml href="javascript:alert(1)">lien-js</linkHtml>
      <linkHtml href="  JaVaScRiPt:alert(2)">lien-js-2</linkHtml>
      <linkHtml href="java&#10;script:alert(3)">lien-js-3</linkHtml>
      <linkHtml href="data:text/html;base64,PHNjcmlwdD4=">lien-data</linkHtml>
      <linkHtml href="https://www.e-cancer.fr/?a=1&amp;b=2">lien-web</linkHtml>
      <table><tr><td onclick="alert(1)" colspan="2">cellule</td></tr></table>
      <renderMultiMedia referencedObject="html1 svg1 png1"/>
      <script>alert(4)</script>
    </text>
    <entry><observationMedia ID="html1">
      <value mediaType="text/html" representation="B64">PHNjcmlwdD4=</value></observationMedia></entry>
    <entry><observationMedia ID="svg1">
      <value mediaType="image/svg+xml" representation="B64">PHN2Zz4=</value></observationMedia></entry>
    <entry><observationMedia ID="png1">
      <value mediaType="image/png"><reference value="https://tracker.example/p.png"/></value></observationMedia></entry>
  </section></component></structuredBody></component>
</ClinicalDocument>
"""


@pytest.fixture(scope="module")
def hostile() -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(render_html(HOSTILE.encode()))


def test_markup_in_the_narrative_is_text(hostile: lxml.html.HtmlElement) -> None:
    assert_inert(hostile)
    assert hostile.xpath("//span[@id='c1']")[0].text == "<script>alert(1)</script>"
    assert "alert(4)" in text_of(hostile)  # an unknown element keeps its text, not its tag
    assert text_of(hostile.xpath("//main//h2")[0]) == "Résultats <img src=x onerror=alert(1)>"
    assert not hostile.xpath("//img")
    assert hostile.xpath("//td[@colspan='2']")[0].text == "cellule"
    assert not hostile.xpath("//span[text()='styled']/@class")  # an unknown style code adds nothing


def test_only_web_and_mail_links_become_links(hostile: lxml.html.HtmlElement) -> None:
    assert [(a.get("href"), a.text) for a in hostile.xpath("//main//a")] == [
        ("https://www.e-cancer.fr/?a=1&b=2", "lien-web")
    ]
    inactive = [span.text for span in hostile.xpath("//span[@class='inactive-link']")]
    assert inactive == ["lien-js", "lien-js-2", "lien-js-3", "lien-data"]


def test_only_pdf_png_jpeg_and_gif_media_are_embedded(hostile: lxml.html.HtmlElement) -> None:
    notes = [text_of(span) for span in hostile.xpath("//main//span[@class='note']")]
    assert notes == [
        "[Contenu non affiché : text/html]",
        "[Contenu non affiché : image/svg+xml]",
        "[Contenu non affiché : image/png]",  # a reference to an outside image is not fetched
    ]


def test_a_pdf_file_name_keeps_only_safe_characters(hostile: lxml.html.HtmlElement) -> None:
    html = render_html(HOSTILE.encode().replace(b'mediaType="text/html"', b'mediaType="application/pdf"'))
    (link,) = lxml.html.document_fromstring(html).xpath("//a[@download]")
    assert link.get("download") == "compte-rendu-Ascript-html1.pdf"


def test_an_external_entity_is_refused_unread(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("crbio-secret-7f3a", encoding="ascii")
    attack = (
        f'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument [<!ENTITY leak SYSTEM "{secret.as_uri()}">]>\n'
        '<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&leak;</title></ClinicalDocument>'
    )
    with pytest.raises(InputError) as caught:
        render_html(attack.encode())
    assert caught.value.code == "input.xml"
    assert "crbio-secret" not in caught.value.message


def test_malformed_xml_is_an_input_error_that_quotes_nothing() -> None:
    with pytest.raises(InputError) as caught:
        render_html(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>PAT-TROIS</ClinicalDocument>')
    assert caught.value.code == "input.xml"
    assert caught.value.message.startswith("document: not well-formed XML at line 1")
    assert "PAT-TROIS" not in caught.value.message


def test_a_document_is_read_from_bytes_a_path_or_with_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "cr.xml"
    path.write_bytes(codecs.BOM_UTF8 + HOSTILE.encode())
    assert render_html(path) == render_html(HOSTILE.encode())
    with pytest.raises(InputError) as caught:
        render_html(tmp_path / "missing.xml")
    assert caught.value.code == "input.unreadable"


def test_the_cached_stylesheet_serves_several_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    documents = [HOSTILE.encode(), HOSTILE.encode().replace(b"DURAND", b"MARTIN")] * 8
    expected = [render_html(data) for data in documents]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(render_html, documents)) == expected


def test_a_file_that_is_no_cda_says_so() -> None:
    page = lxml.html.document_fromstring(render_html(b"<report><patient>DURAND</patient></report>"))
    assert "ne contient pas d'élément ClinicalDocument" in text_of(page)
    assert "DURAND" not in text_of(page)


# --------------------------------------------------------------------------- header and narrative


def _page(header: str = "", text: str = "", patient: str = "") -> lxml.html.HtmlElement:
    document = f"""<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:lab="urn:oid:1.3.6.1.4.1.19376.1.3.2">
      <id root="1.2.3"/><title>CR</title>{header}
      <recordTarget><patientRole>{patient}</patientRole></recordTarget>
      <component><structuredBody><component><section><title>S</title><text>{text}</text></section></component>
      </structuredBody></component></ClinicalDocument>"""
    page = lxml.html.document_fromstring(render_html(document.encode()))
    assert_inert(page)
    return page


@pytest.mark.parametrize(
    ("oid", "label"),
    [
        ("1.2.250.1.213.1.4.8", "INS-NIR"),
        ("1.2.250.1.213.1.4.9", "INS-NIA"),
        ("1.2.250.1.213.1.4.10", "INS-NIR de test"),
        ("1.2.250.1.213.1.4.11", "INS-NIR de démonstration"),
    ],
)
def test_each_ins_authority_is_named(oid: str, label: str) -> None:
    page = _page(patient=f'<id root="{oid}" extension="279035121518989"/><id root="1.2.9" extension="IPP7"/>')
    ins = [text_of(p) for p in page.xpath("//p[@class='ins']")]
    assert ins == [f"Matricule INS : 279035121518989 [{label}]"]
    assert values(page, "Patient", "Identifiant") == ["IPP7 [1.2.9]"]


def test_a_name_without_qualifiers_is_the_used_name() -> None:
    page = _page(
        patient="""<addr use="H"><streetAddressLine>2 place X</streetAddressLine>
        <postalCode>22000</postalCode><city>Saint-Brieuc</city></addr>
        <telecom value="tel:+33600000000" use="MC"/><telecom nullFlavor="UNK"/>
        <patient><name><family>DURAND</family><given>Léa</given><given>Anne</given></name>
        <administrativeGenderCode nullFlavor="UNK"/><birthTime value="1962"/></patient>"""
    )
    assert values(page, "Patient", "Nom utilisé") == ["DURAND"]
    assert values(page, "Patient", "Prénom utilisé") == ["Léa Anne"]
    assert values(page, "Patient", "Nom de naissance") == []
    assert values(page, "Patient", "Sexe") == ["inconnu"]
    assert values(page, "Patient", "Date de naissance") == ["1962"]
    assert values(page, "Patient", "Adresse") == ["2 place X, 22000 Saint-Brieuc (domicile)"]
    assert values(page, "Patient", "Télécom") == ["Tél. +33600000000 (mobile)", "inconnu"]
    assert text_of(page.xpath("//p[@class='banner']")[0]) == "DURAND Léa — né(e) en 1962"


def test_restricted_partial_and_appended_documents_are_flagged() -> None:
    page = _page(
        header="""<effectiveTime value="20240104160527-0500"/><confidentialityCode code="V"/>
        <documentationOf><serviceEvent><code displayName="Hématologie"/><lab:statusCode code="active"/>
        </serviceEvent></documentationOf>
        <relatedDocument typeCode="APND"><parentDocument><id root="9.9" extension="A1"/></parentDocument>
        </relatedDocument>"""
    )
    assert [text_of(p) for p in page.xpath("//p[@class='notice']")] == [
        "Complète le document A1 [9.9]",
        "Confidentialité : très restreinte",
        "Compte rendu partiel : des examens sont en cours, les résultats ne sont pas tous rendus.",
    ]
    assert [text_of(dd) for dd in page.xpath("//dl[@class='meta']/dd[1]")] == [
        "04/01/2024 à 16:05 (UTC-05:00)"
    ]
    assert values(page, "Examens", "Statut") == ["en cours (compte rendu partiel)"]


def test_the_narrative_block_is_rendered_whole() -> None:
    page = _page(
        text="""<paragraph ID="p1" styleCode="Italics Underline"><caption>Note</caption>H<sub>2</sub>O,
          m<sup>2</sup><footnote ID="n1">première note</footnote> et<footnoteRef IDREF="n1"/></paragraph>
        <list listType="ordered" styleCode="BigRoman"><caption>Étapes</caption>
          <item>un</item><item>deux</item></list>
        <list><item><content styleCode="Emphasis">puce</content></item></list>
        <content revised="delete">retiré</content>
        <table><caption>Tableau</caption><colgroup span="2"><col width="30%" align="left"/></colgroup>
          <thead><tr><th scope="col" align="right">A</th><th>B</th></tr></thead>
          <tfoot><tr><td colspan="2">pied</td></tr></tfoot>
          <tbody><tr><td rowspan="1" valign="bottom" styleCode="Botrule">1</td><td>2</td></tr></tbody>
        </table>"""
    )
    narrative = page.xpath("//div[@class='narrative']")[0]
    (paragraph,) = narrative.xpath("p[@id='p1']")
    assert paragraph.get("class") == "sc-italics sc-underline"
    assert [e.tag for e in paragraph] == ["strong", "sub", "sup", "sup", "sup"]
    assert [text_of(a) for a in paragraph.xpath(".//a[@href='#n1']")] == ["1", "1"]
    assert narrative.xpath("ol[@class='footnotes']/li[@id='n1']")[0].text == "première note"
    assert narrative.xpath("p[@class='caption']")[0].text == "Étapes"
    assert [li.text for li in narrative.xpath("ol[@class='sc-bigroman']/li")] == ["un", "deux"]
    assert narrative.xpath("ul/li/span[@class='sc-emphasis']")[0].text == "puce"
    assert narrative.xpath("del")[0].text == "retiré"
    table = narrative.xpath("table")[0]
    assert [child.tag for child in table] == ["caption", "colgroup", "thead", "tfoot", "tbody"]
    assert table.xpath("colgroup[@span='2']/col[@width='30%'][@align='left']")
    assert table.xpath("thead/tr/th[@scope='col'][@align='right']")
    assert table.xpath("tfoot/tr/td[@colspan='2']")
    assert table.xpath("tbody/tr/td[@rowspan='1'][@valign='bottom'][@class='sc-botrule']")


# --------------------------------------------------------------------------- stylesheets


def test_crbio_stylesheet_is_boring_xslt_1() -> None:
    stylesheet = etree.parse(str(stylesheet_path()))
    root = stylesheet.getroot()
    assert root.tag == f"{{{XSL}}}stylesheet" and root.get("version") == "1.0"
    assert not root.xpath(
        "//xsl:import | //xsl:include | //@disable-output-escaping", namespaces={"xsl": XSL}
    )
    expressions = " ".join(
        root.xpath("//xsl:*/@select | //xsl:*/@test | //xsl:*/@match", namespaces={"xsl": XSL})
    )
    assert "document(" not in expressions and "system-property(" not in expressions
    assert not [
        e for e in root.iter() if isinstance(e.tag, str) and etree.QName(e).namespace not in (XSL, None)
    ]
    assert not root.xpath("//script | //iframe | //object | //embed | //link | //style[@src]")
    # Literal result elements point nowhere; the CSS loads nothing.
    assert not [
        value
        for value in root.xpath("//*[not(namespace-uri())]/@*")
        if "//" in value or ":" in value and not value.startswith(("data:", "default-src", "text/html"))
    ]
    css = "".join(root.xpath("//xsl:template[@name='css']//text()", namespaces={"xsl": XSL}))
    assert "url(" not in css and "@import" not in css


def _stylesheet(tmp_path: Path, body: str, name: str = "lab.xsl") -> Path:
    path = tmp_path / name
    path.write_text(
        f'<xsl:stylesheet version="1.0" xmlns:xsl="{XSL}">{body}</xsl:stylesheet>', encoding="utf-8"
    )
    return path


def test_a_laboratory_stylesheet_is_applied_with_its_local_includes(tmp_path: Path) -> None:
    _stylesheet(tmp_path, '<xsl:template name="part">inclus</xsl:template>', "part.xsl")
    lab = _stylesheet(
        tmp_path,
        '<xsl:include href="part.xsl"/><xsl:output method="html"/>'
        '<xsl:template match="/"><html><body><xsl:call-template name="part"/></body></html>'
        "</xsl:template>",
    )
    assert b"<body>inclus</body>" in render_html(HOSTILE.encode(), stylesheet=lab)


def test_a_stylesheet_is_compiled_once_and_again_when_it_changes(tmp_path: Path) -> None:
    from crbio.presentation import _compile

    lab = _stylesheet(tmp_path, '<xsl:output method="text"/><xsl:template match="/">v1</xsl:template>')
    assert render_html(HOSTILE.encode(), stylesheet=lab) == b"v1"
    misses = _compile.cache_info().misses
    assert render_html(HOSTILE.encode(), stylesheet=lab) == b"v1"
    assert _compile.cache_info().misses == misses
    time.sleep(0.01)
    _stylesheet(tmp_path, '<xsl:output method="text"/><xsl:template match="/">v2 changed</xsl:template>')
    assert render_html(HOSTILE.encode(), stylesheet=lab) == b"v2 changed"


def test_a_stylesheet_cannot_read_files_while_rendering(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_text("<s>crbio-secret-7f3a</s>", encoding="ascii")
    lab = _stylesheet(
        tmp_path,
        f'<xsl:template match="/"><p><xsl:value-of select="document(\'{secret.as_uri()}\')"/>'
        "</p></xsl:template>",
    )
    with pytest.raises(ConfigurationError) as caught:
        render_html(HOSTILE.encode(), stylesheet=lab)
    assert caught.value.code == "config.stylesheet"
    assert "crbio-secret" not in caught.value.message


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A local web server serving a stylesheet and a document; yields its address and the paths asked."""
    served = tmp_path / "served"
    served.mkdir()
    _stylesheet(served, '<xsl:template name="remote">distant</xsl:template>', "remote.xsl")
    (served / "remote.xml").write_text("<r>distant</r>", encoding="ascii")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_stylesheet_cannot_reach_the_network(tmp_path: Path, web_server: tuple[str, list[str]]) -> None:
    address, requests = web_server
    including = _stylesheet(
        tmp_path,
        f'<xsl:include href="{address}/remote.xsl"/>'
        '<xsl:template match="/"><xsl:call-template name="remote"/></xsl:template>',
        "inc.xsl",
    )
    with pytest.raises(ConfigurationError) as caught:
        render_html(HOSTILE.encode(), stylesheet=including)
    assert caught.value.code == "config.stylesheet"
    fetching = _stylesheet(
        tmp_path,
        f'<xsl:template match="/"><xsl:value-of select="document(\'{address}/remote.xml\')"/></xsl:template>',
        "fetch.xsl",
    )
    with pytest.raises(ConfigurationError):
        render_html(HOSTILE.encode(), stylesheet=fetching)
    assert requests == []


def test_stylesheet_errors_never_quote_the_document(tmp_path: Path) -> None:
    talking = _stylesheet(
        tmp_path,
        '<xsl:template match="/"><xsl:message terminate="yes">'
        "<xsl:value-of select=\"//*[local-name()='family']\"/></xsl:message></xsl:template>",
        "msg.xsl",
    )
    with pytest.raises(ConfigurationError) as caught:
        render_html(HOSTILE.encode(), stylesheet=talking)
    assert "DURAND" not in caught.value.message
    # lxml keeps a per-thread log: the patient's name must not turn up in the next error either.
    broken = _stylesheet(
        tmp_path, '<xsl:template match="/"><xsl:value-of select="(("/></xsl:template>', "bad.xsl"
    )
    with pytest.raises(ConfigurationError) as caught:
        render_html(HOSTILE.encode(), stylesheet=broken)
    assert "DURAND" not in caught.value.message
    assert "not a valid XSLT 1.0 stylesheet" in caught.value.message and "((" in caught.value.message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.xsl", None, "cannot be read"),
        ("text.xsl", "not xml at all", "not well-formed XML at line 1"),
        ("plain.xsl", "<html/>", "not a valid XSLT 1.0 stylesheet"),
    ],
)
def test_an_unusable_stylesheet_is_a_configuration_error(
    tmp_path: Path, name: str, content: str | None, expected: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        render_html(HOSTILE.encode(), stylesheet=path)
    assert caught.value.code == "config.stylesheet"
    assert caught.value.message.startswith(f"stylesheet {name}")
    assert expected in caught.value.message
