"""The PDF/A-1b rendering: conformance, INS Datamatrix, content, pagination, determinism.

The variant reports are derived from samples/01-biochimie.json with dataclasses.replace so
that these tests do not depend on the other samples.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pikepdf
import pikepdf.pdfa
import pypdfium2 as pdfium
import pytest
import zxingcpp

from conftest import sample_files
from crbio.documents.pdf import check_pdfa, ins_datamatrix_payload, render_pdf
from crbio.errors import BuildError
from crbio.model import (
    Address,
    Battery,
    Chapter,
    Code,
    CodedValue,
    ExecutingLaboratory,
    IdentityStatus,
    IntervalValue,
    Isolate,
    LegalRepresentative,
    Observation,
    ObservationStatus,
    PersonName,
    PreviousResult,
    Professional,
    Quantity,
    ReferenceRange,
    Report,
    Telecom,
)
from test_datamatrix import ANS_SAMPLE_PAYLOAD, PRODUCTION_OID_PAYLOAD, garcia_hammadi

LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
INTERPRETATION = "2.16.840.1.113883.5.83"


# -- variant reports ---------------------------------------------------------------------------


@pytest.fixture
def base(sample_report: Callable[[str], Report]) -> Report:
    return sample_report("01-biochimie.json")


def not_qualified(report: Report) -> Report:
    """A validated identity (ID document checked, no INSi): the INS is known but must not be shown."""
    return dataclasses.replace(
        report, patient=dataclasses.replace(report.patient, identity_status=IdentityStatus.VALIDATED)
    )


def amendment(report: Report) -> Report:
    document = dataclasses.replace(
        report.document, id=report.document.id + ".2", version=2, replaces=report.document.id
    )
    return dataclasses.replace(report, document=document)


def before_validation(report: Report) -> Report:
    return dataclasses.replace(report, document=dataclasses.replace(report.document, before_validation=True))


def long_report(report: Report, count: int = 300) -> Report:
    """``count`` results in batteries of 12, some with comments, methods and previous results."""
    template = report.chapters[0].batteries[1].observations[1]  # potassium, with a comment
    observations = []
    for n in range(1, count + 1):
        observations.append(
            dataclasses.replace(
                template,
                label=f"Analyse n°\u00a0{n:03d}",
                value=Quantity(Decimal(f"{n}.{n % 10}"), "mmol/L"),
                interpretation=template.interpretation if n % 7 == 0 else None,
                comment=f"Commentaire de l’analyse {n:03d} : contrôle à prévoir." if n % 25 == 0 else None,
                previous=(PreviousResult(Quantity(Decimal(n), "mmol/L"), template.time - timedelta(days=90)),)
                if n % 3 == 0
                else (),
            )
        )
    batteries = tuple(
        Battery(
            label=f"Bilan n°\u00a0{i // 12 + 1}",
            observations=tuple(observations[i : i + 12]),
            specimens=("S1",),
        )
        for i in range(0, count, 12)
    )
    chapters = (
        Chapter(report.chapters[0].code, "Biochimie", batteries[: len(batteries) // 2]),
        Chapter(
            Code("18723-7", LOINC, "Hématologie"),
            "Hématologie",
            batteries[len(batteries) // 2 :],
            comment="Chapitre d’hématologie : numération contrôlée sur lame.",
        ),
    )
    return dataclasses.replace(report, chapters=chapters)


def microbiology(report: Report) -> Report:
    when = report.chapters[0].batteries[0].observations[0].time

    def susceptibility(
        antibiotic: str, value: IntervalValue | Quantity, code: str, display: str
    ) -> Observation:
        return Observation(
            label=antibiotic, time=when, value=value, interpretation=Code(code, INTERPRETATION, display)
        )

    isolate = Isolate(
        organism=Code("112283007", SNOMED, "Escherichia coli (organism)"),
        label="Escherichia coli",
        time=when,
        specimens=("S1",),
        observations=(
            Observation(
                label="Numération",
                time=when,
                value=Quantity(Decimal("100000"), "/mL"),
                reference_range=ReferenceRange(high=Quantity(Decimal("1000"), "/mL")),
                interpretation=Code("H", INTERPRETATION, "Anormalement haut"),
            ),
        ),
        antibiogram=(
            susceptibility(
                "Amoxicilline", IntervalValue(low=Quantity(Decimal("32"), "mg/L")), "R", "Résistant"
            ),
            susceptibility("Céfotaxime", IntervalValue(high=Quantity(Decimal("1"), "mg/L")), "S", "Sensible"),
            susceptibility("Ciprofloxacine", Quantity(Decimal("0.5"), "mg/L"), "I", "Intermédiaire"),
        ),
        comment="Souche productrice de pénicillinase ; l’œdème n’est pas lié.",
    )
    chapter = Chapter(Code("18725-2", LOINC, "Microbiologie"), "Microbiologie", isolates=(isolate,))
    return dataclasses.replace(report, chapters=(*report.chapters, chapter))


def subcontracted(report: Report) -> Report:
    lab = ExecutingLaboratory(
        key="EXT",
        finess="950004564",
        name="Laboratoire Bio-Spécialités Île-de-France",
        performed_at=report.validated_at - timedelta(hours=2),
        biologist=Professional("10100089019", PersonName("MOREAU-DESCHAMPS", ("Hélène",), suffix="DR")),
    )
    chapter = report.chapters[0]
    battery = dataclasses.replace(chapter.batteries[2], performed_by="EXT")
    chapter = dataclasses.replace(chapter, batteries=(*chapter.batteries[:2], battery))
    return dataclasses.replace(report, chapters=(chapter,), executing_laboratories=(lab,))


def minor_with_representative(report: Report) -> Report:
    patient = dataclasses.replace(
        report.patient,
        birth_date=date(2010, 5, 17),
        legal_representatives=(
            LegalRepresentative(
                PersonName("NESSI", ("Jeanne",), prefix="MME"),
                address=Address(
                    house_number="28", street_name="avenue de Breteuil", postal_code="75007", city="Paris"
                ),
                telecoms=(Telecom("tel:+33147150000", "H"),),
            ),
        ),
    )
    return dataclasses.replace(report, patient=patient)


def aborted(report: Report) -> Report:
    chapter = report.chapters[0]
    battery = chapter.batteries[1]
    potassium = dataclasses.replace(
        battery.observations[1],
        status=ObservationStatus.ABORTED,
        value=None,
        interpretation=None,
        comment="Échantillon hémolysé.",
    )
    battery = dataclasses.replace(battery, observations=(battery.observations[0], potassium))
    chapter = dataclasses.replace(chapter, batteries=(battery,))
    return dataclasses.replace(report, chapters=(chapter,))


VARIANTS: dict[str, Callable[[Report], Report]] = {
    "sample": lambda r: r,
    "not-qualified": not_qualified,
    "amendment": amendment,
    "before-validation": before_validation,
    "long": long_report,
    "microbiology": microbiology,
    "subcontracted": subcontracted,
    "minor": minor_with_representative,
    "aborted": aborted,
}


# -- helpers -------------------------------------------------------------------------------------


def page_texts(pdf: bytes) -> list[str]:
    """The text of each page, flattened (see flat)."""
    document = pdfium.PdfDocument(pdf)
    try:
        return [flat(document[i].get_textpage().get_text_range()) for i in range(len(document))]
    finally:
        document.close()


def flat(text: str) -> str:
    """Text with line breaks and no-break spaces as plain spaces, for phrase matching."""
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\u00a0", " ").replace("\u202f", " ")
    return " ".join(text.split(" "))


def text_of(pdf: bytes) -> str:
    """The text of every page, flattened (see flat)."""
    return " ".join(page_texts(pdf))


def raw_page_texts(pdf: bytes) -> list[str]:
    """The text of each page as pdfium extracts it."""
    document = pdfium.PdfDocument(pdf)
    try:
        return [document[i].get_textpage().get_text_range() for i in range(len(document))]
    finally:
        document.close()


def datamatrices(pdf: bytes, page: int = 0) -> list[bytes]:
    """The Data Matrix symbols zxing-cpp finds on a page rendered at 300 dpi."""
    document = pdfium.PdfDocument(pdf)
    try:
        image = document[page].render(scale=300 / 72).to_pil().convert("L")
    finally:
        document.close()
    return [b.bytes for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.DataMatrix)]


# -- PDF/A ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_are_pdfa_1b(base: Report, variant: str) -> None:
    pdf = render_pdf(VARIANTS[variant](base))
    assert pdf.startswith(b"%PDF-1.4\n")
    report = pikepdf.pdfa.validate_written(io.BytesIO(pdf), "1b")
    assert report.verdict == "pass", report.summary()
    assert check_pdfa(pdf) == []


def test_check_pdfa_reports_violations_with_verapdf_rule_ids(base: Report) -> None:
    pdf = render_pdf(base)
    with pikepdf.open(io.BytesIO(pdf)) as broken:
        del broken.Root.OutputIntents  # DeviceRGB without an output intent
        out = io.BytesIO()
        broken.save(out, **pikepdf.pdfa.resolve_save_kwargs("1b"))
    findings = check_pdfa(out.getvalue())
    assert findings
    assert {f.source for f in findings} == {"pdfa"}
    assert all(f.rule for f in findings)
    assert "ISO_19005_1:6.2.3.3-1" in {f.rule for f in findings}  # veraPDF's id for DeviceRGB without intent


def test_fonts_are_the_embedded_dejavu_subsets(base: Report) -> None:
    with pikepdf.open(io.BytesIO(render_pdf(base))) as pdf:
        fonts = {str(f.BaseFont) for page in pdf.pages for f in page.Resources.Font.values()}
        for page in pdf.pages:
            for font in page.Resources.Font.values():
                assert "/FontFile2" in font.FontDescriptor
    assert fonts
    assert all("DejaVuSans" in name for name in fonts), fonts
    assert not any("Helvetica" in name for name in fonts)


# -- INS Datamatrix --------------------------------------------------------------------------------


def test_datamatrix_on_page_1_decodes_to_the_exact_payload(base: Report) -> None:
    assert datamatrices(render_pdf(base)) == [ANS_SAMPLE_PAYLOAD.encode("ascii")]


@pytest.mark.parametrize("sample", [p.name for p in sample_files()])
def test_every_sample_carries_its_datamatrix_only_when_qualified(
    sample_report: Callable[[str], Report], sample: str
) -> None:
    report = sample_report(sample)
    payload = ins_datamatrix_payload(report.patient)
    expected = [payload.encode("ascii")] if payload is not None else []
    assert datamatrices(render_pdf(report)) == expected


def test_datamatrix_of_a_production_ins(base: Report) -> None:
    report = dataclasses.replace(base, patient=garcia_hammadi())
    pdf = render_pdf(report)
    assert datamatrices(pdf) == [PRODUCTION_OID_PAYLOAD.encode("ascii")]
    assert "Matricule INS : 277010115400329 [INS-NIR]" in text_of(pdf)


def test_datamatrix_is_at_the_top_right_of_the_identity_block(base: Report) -> None:
    document = pdfium.PdfDocument(render_pdf(base))
    try:
        page = document[0]
        width, height = page.get_size()
        image = page.render(scale=300 / 72).to_pil().convert("L")
    finally:
        document.close()
    (barcode,) = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.DataMatrix)
    xs = [p.x for p in (barcode.position.top_left, barcode.position.bottom_right)]
    ys = [p.y for p in (barcode.position.top_left, barcode.position.bottom_right)]
    assert min(xs) > image.width * 0.75  # right side of the page
    assert max(ys) < image.height * 0.35  # upper part of page 1
    side_mm = (max(xs) - min(xs)) / 300 * 25.4
    assert 40 * 0.4 <= side_mm <= 40 * 0.5 + 1  # 40 modules of 0.4–0.5 mm


def test_ins_caption_and_matricule_line(base: Report) -> None:
    page1 = page_texts(render_pdf(base))[0]
    assert "INS à scanner" in page1
    assert "Matricule INS" in page1
    assert "279035121518989 [INS-NIR de test]" in page1


def provisional(report: Report) -> Report:
    """A provisional identity without INS: the IPP only."""
    return dataclasses.replace(
        report,
        patient=dataclasses.replace(report.patient, identity_status=IdentityStatus.PROVISIONAL, ins=None),
    )


@pytest.mark.parametrize("variant", [not_qualified, provisional])
def test_identity_not_qualified_has_no_ins_anywhere(
    base: Report, variant: Callable[[Report], Report]
) -> None:
    pdf = render_pdf(variant(base))
    assert datamatrices(pdf) == []
    text = text_of(pdf)
    assert "Matricule INS" not in text
    assert "INS à scanner" not in text
    assert "279035121518989" not in text
    assert "IPP" in text and "1234567890121" in text


# -- content -------------------------------------------------------------------------------------


def test_header_identity_request_results_and_signature(base: Report) -> None:
    text = text_of(render_pdf(base))
    for expected in (
        "Laboratoire des Charmes",
        "FINESS",
        "920000015",
        "8-1234",
        "01 74 58 96 07",
        "Compte rendu d’examens biologiques",
        "Édité le 04/01/2024 à 16:10",
        "Version 1",
        "1.2.250.1.999.1.1.2024.1001.1",
        "Nom de naissance",
        "PAT-TROIS",
        "Prénom(s) de naissance",
        "DOMINIQUE MARIE-LOUISE [DOMINIQUE]",
        "Nom utilisé",
        "Prénom utilisé",
        "Dominique",
        "Sexe",
        "Féminin",
        "Date de naissance",
        "28/03/1979",
        "Lieu de naissance",
        "Dompremy",
        "51215",
        "IPP",
        "1234567890121",
        "avenue de Breteuil",
        "DR Pascal CHARLES",
        "10100023455",
        "03/01/2024 à 10:00",
        "2024-0001234",
        "Ambulatoire",
        "04/01/2024 à 07:35",
        "Sérum",
        "08:10",
        "Biochimie",
        "Glycémie à jeun",
        "4,89 mmol/L",
        "3,89 – 6,00 mmol/L",
        "5,12 mmol/L",
        "12/06/2023",
        "Spectrophotométrie enzyme/vis",
        "Ionogramme sanguin",
        "Potassium",
        "5,6 mmol/L",
        "↑ H",
        "Absence d'hémolyse visible.",
        "Créatinine",
        "68 µmol/L",
        "1,73 m²",
        "Conclusion",
        "Hyperkaliémie modérée isolée, à contrôler.",
        "Validé par DR Marcel CAMPARINI",
        "le 04/01/2024 à 16:05",
        "Page 1/1",
    ):
        assert expected in text, expected


def test_french_typography_is_extractable(base: Report) -> None:
    text = text_of(render_pdf(microbiology(base)))
    assert "Compte rendu d’examens biologiques" in text
    assert "l’œdème n’est pas lié" in text
    assert "pénicillinase" in text
    # A no-break space before the colon, kept in the extracted text.
    assert "Date de naissance\u00a0:" in "\n".join(raw_page_texts(render_pdf(base)))


def test_amendment_mention(base: Report) -> None:
    text = text_of(render_pdf(amendment(base)))
    assert "Ce compte rendu annule et remplace la version précédente" in text
    assert "Version 2" in text
    assert "Version remplacée : 1, document 1.2.250.1.999.1.1.2024.1001.1" in text


def test_before_validation_mention(base: Report) -> None:
    text = text_of(render_pdf(before_validation(base)))
    assert "Résultats transmis avant validation biologique" in text
    assert "Validé par" not in text


def test_no_mention_on_a_validated_first_version(base: Report) -> None:
    text = text_of(render_pdf(base))
    assert "annule et remplace" not in text
    assert "avant validation" not in text


def test_microbiology_isolate_and_antibiogram(base: Report) -> None:
    text = text_of(render_pdf(microbiology(base)))
    for expected in (
        "Microbiologie",
        "Germe isolé",
        "Escherichia coli",
        "Numération",
        "100 000 /mL",
        "Antibiogramme",
        "Amoxicilline",
        "≥ 32 mg/L",
        "Résistant",
        "Céfotaxime",
        "≤ 1 mg/L",
        "Sensible",
        "Ciprofloxacine",
        "0,5 mg/L",
        "Intermédiaire",
    ):
        assert expected in text, expected


def test_subcontracted_battery_names_the_executing_laboratory(base: Report) -> None:
    text = text_of(render_pdf(subcontracted(base)))
    assert "Analyse réalisée par Laboratoire Bio-Spécialités Île-de-France (FINESS 950004564)" in text
    assert "DR Hélène MOREAU-DESCHAMPS" in text


def test_minor_shows_the_legal_representative(base: Report) -> None:
    lines = raw_page_texts(render_pdf(minor_with_representative(base)))[0].splitlines()
    assert "Représentant légal\u00a0: MME Jeanne NESSI" in lines  # the name alone on its line
    assert "28 avenue de Breteuil, 75007 Paris" in lines
    assert "Tél. (domicile)\u00a0: 01\u00a047\u00a015\u00a000\u00a000" in lines


def test_header_lines(base: Report) -> None:
    lines = raw_page_texts(render_pdf(base))[0].splitlines()
    assert "Compte rendu d’examens biologiques" in lines
    assert "Édité le 04/01/2024\u00a0à\u00a016:10" in lines
    assert "Version 1" in lines
    assert "Identifiant du document\u00a0: 1.2.250.1.999.1.1.2024.1001.1" in lines
    assert "Lot de versions\u00a0: 1.2.250.1.999.1.1.2024.1001" in lines


def test_aborted_result_is_not_done(base: Report) -> None:
    text = text_of(render_pdf(aborted(base)))
    assert "non réalisé" in text
    assert "Échantillon hémolysé." in text


def with_conclusion(report: Report, conclusion: str) -> Report:
    return dataclasses.replace(report, conclusion=conclusion)


def test_characters_beyond_one_font_subset(base: Report) -> None:
    """More than 255 distinct characters in one font: several subsets, all extractable."""
    greek = "".join(chr(c) for c in range(0x391, 0x3CA) if chr(c).isalpha())
    cyrillic = "".join(chr(c) for c in range(0x410, 0x450))
    latin = "".join(chr(c) for c in range(0x100, 0x17F))
    report = with_conclusion(base, f"{greek} {cyrillic} {latin}")
    pdf = render_pdf(report)
    assert check_pdfa(pdf) == []
    with pikepdf.open(io.BytesIO(pdf)) as document:
        names = {str(font.BaseFont) for font in document.pages[0].Resources.Font.values()}
    assert len(names) >= 3  # regular, bold and a second bold subset
    text = text_of(pdf)
    for word in (greek, cyrillic, latin):
        assert word in text.replace(" ", "").replace("\u00a0", "") or word[:40] in text


def test_characters_the_font_lacks_are_drawn_as_replacement_characters(base: Report) -> None:
    conclusion = "Résultat 漢字 transmis\tà 10 h \U0001f600 au prescripteur.\r\nFin."
    pdf = render_pdf(with_conclusion(base, conclusion))
    assert check_pdfa(pdf) == []  # no reference to the .notdef glyph
    # DejaVu has the emoticons but no CJK.
    assert "Résultat \ufffd\ufffd transmis à 10 h \U0001f600 au prescripteur. Fin." in text_of(pdf)


def test_a_text_taller_than_a_page_is_split_between_lines(base: Report) -> None:
    lines = [f"Ligne {n:03d} du commentaire de synthèse." for n in range(1, 181)]
    long_word = "1.2.250.1.213." + "4" * 400  # no space to break at: cut between characters
    report = dataclasses.replace(base, comments=("\n".join(lines), long_word))
    pdf = render_pdf(report)
    assert check_pdfa(pdf) == []
    pages = page_texts(pdf)
    assert len(pages) >= 3
    text = " ".join(pages)
    for line in lines:
        assert text.count(line) == 1, line
    assert text.replace(" ", "").count("4" * 50) >= 1
    assert "Validé par" in pages[-1]


# -- pagination ----------------------------------------------------------------------------------


def test_long_report_paginates_every_result_once(base: Report) -> None:
    pages = page_texts(render_pdf(long_report(base)))
    count = len(pages)
    assert count >= 6
    for number, text in enumerate(pages, start=1):
        assert f"Page {number}/{count}" in text
    everything = " ".join(pages)
    for n in range(1, 301):
        assert everything.count(f"Analyse n° {n:03d} ") == 1, n
    assert everything.count("Commentaire de l’analyse") == 12
    # Pages 2 and after remind who the report is about, and tables continue with their headings.
    for text in pages[1:]:
        assert "PAT-TROIS DOMINIQUE" in text and "28/03/1979" in text
        assert "Analyse" in text
    assert "(suite)" in everything
    # The identity block and the Datamatrix are on page 1 only.
    assert "INS à scanner" in pages[0] and all("INS à scanner" not in p for p in pages[1:])


def test_rows_are_not_cut_across_pages(base: Report) -> None:
    """Each result's label, value and previous result are on one page."""
    pages = page_texts(render_pdf(long_report(base)))
    for n in range(3, 301, 3):
        label = f"Analyse n° {n:03d}"
        (page,) = [text for text in pages if label in text]
        assert f"{n},{n % 10} mmol/L" in page


# -- determinism and metadata --------------------------------------------------------------------


def test_rendering_is_deterministic(base: Report) -> None:
    assert render_pdf(base) == render_pdf(base)
    long = long_report(base)
    assert render_pdf(long) == render_pdf(long)


def test_rendering_is_deterministic_across_processes(base: Report, tmp_path: Path) -> None:
    """Another interpreter, with another string hash seed, writes the same bytes."""
    script = (
        "import sys\n"
        "from datetime import datetime\n"
        "from crbio.documents.context import BuildContext, FixedClock, SequenceIds, resolve_document\n"
        "from crbio.input import load_report\n"
        "from crbio.documents.pdf import render_pdf\n"
        "ctx = BuildContext(clock=FixedClock(datetime.fromisoformat('2024-01-04T18:00:00+01:00')),\n"
        "                   ids=SequenceIds('1.2.250.1.999.9.9'))\n"
        "report = resolve_document(load_report(sys.argv[1]), ctx)\n"
        "sys.stdout.buffer.write(render_pdf(report))\n"
    )
    sample = Path(__file__).resolve().parents[1] / "samples" / "01-biochimie.json"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(sample)], capture_output=True, check=True, env=env
    )
    assert out.stdout == render_pdf(base)


def test_metadata_has_no_patient_data(base: Report) -> None:
    report = minor_with_representative(base)
    with pikepdf.open(io.BytesIO(render_pdf(report))) as pdf:
        info = {str(k): str(v) for k, v in pdf.docinfo.items()}
        xmp = bytes(pdf.Root.Metadata.read_bytes()).decode("utf-8")
    assert info["/Title"] == "Compte rendu d'examens biologiques"
    assert info["/Author"] == "Laboratoire des Charmes"
    assert info["/Creator"].startswith("crbio ")
    assert info["/CreationDate"] == info["/ModDate"] == "D:20240104161000+01'00'"
    patient = report.patient
    secrets = [
        "PAT-TROIS",
        "DOMINIQUE",
        "Dominique",
        "MARIE-LOUISE",
        "279035121518989",
        "1234567890121",
        "1979",
        "51215",
        "Breteuil",
        "NESSI",
        "CHARLES",
        "CAMPARINI",
    ]
    assert patient.ins is not None
    for secret in secrets:
        assert secret not in xmp, secret
        assert all(secret not in value for value in info.values()), secret


def test_info_and_xmp_agree(base: Report) -> None:
    with pikepdf.open(io.BytesIO(render_pdf(base))) as pdf:
        meta = pdf.open_metadata()
        info = pdf.docinfo
        assert meta["dc:title"] == str(info.Title)
        assert meta["dc:creator"] == [str(info.Author)]
        assert meta["xmp:CreatorTool"] == str(info.Creator)
        assert meta["pdf:Producer"] == str(info.Producer)
        assert meta["xmp:CreateDate"] == "2024-01-04T16:10:00+01:00"
        assert meta["pdfaid:part"] == "1"
        assert meta["pdfaid:conformance"] == "B"


def test_unresolved_document_is_refused(base: Report) -> None:
    report = dataclasses.replace(base, document=dataclasses.replace(base.document, created_at=None))
    with pytest.raises(BuildError) as info:
        render_pdf(report)
    assert info.value.code == "pdf.unresolved"


def test_a_report_built_on_a_naive_clock_still_renders(base: Report) -> None:
    created = datetime(2024, 1, 4, 16, 10)
    report = dataclasses.replace(base, document=dataclasses.replace(base.document, created_at=created))
    assert check_pdfa(render_pdf(report)) == []


def test_printed_values_are_the_model_display(base: Report) -> None:
    """The PDF prints every result as Quantity.display (and the other values' display) does."""
    report = microbiology(long_report(base, 60))
    units = (
        ("120000", "10*9/L"),
        ("-0.5", "1"),
        ("7.40", "[pH]"),
        ("12", "ug/L"),
        ("3", "{ratio}"),
        ("0.003", "[IU]/mL"),
    )
    battery = report.chapters[0].batteries[0]
    extra = tuple(
        dataclasses.replace(
            battery.observations[0],
            label=f"Unité {i}",
            value=Quantity(Decimal(v), u),
            reference_range=None,
            previous=(),
        )
        for i, (v, u) in enumerate(units)
    )
    chapter = dataclasses.replace(
        report.chapters[0],
        batteries=(
            dataclasses.replace(battery, observations=battery.observations + extra),
            *report.chapters[0].batteries[1:],
        ),
    )
    report = dataclasses.replace(report, chapters=(chapter, *report.chapters[1:]))
    text = text_of(render_pdf(report)).replace(" ", "")
    values = [o.value for o in report.observations() if o.value is not None]
    assert len(values) > 60
    for value in values:
        assert flat(value.display()).replace(" ", "") in text, value


def test_coded_and_text_values(base: Report) -> None:
    chapter = base.chapters[0]
    battery = chapter.batteries[0]
    coded = dataclasses.replace(
        battery.observations[0],
        label="Recherche d’antigène",
        value=CodedValue("Positif"),
        reference_range=ReferenceRange(text="Négatif"),
        interpretation=Code("POS", INTERPRETATION, "Positif"),
    )
    report = dataclasses.replace(
        base,
        chapters=(
            dataclasses.replace(chapter, batteries=(dataclasses.replace(battery, observations=(coded,)),)),
        ),
    )
    text = text_of(render_pdf(report))
    assert "Recherche d’antigène" in text and "Positif" in text and "Négatif" in text
    assert "POS" in text
