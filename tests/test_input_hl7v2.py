"""HL7 v2.5 ORU^R01 input: the fixtures become conformant documents; bad messages are refused by place."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import hl7
import pytest
from lxml import etree

import crbio
from conftest import assert_kit_accepts
from crbio.documents.context import BuildContext, FixedClock, SequenceIds
from crbio.errors import ConfigurationError, InputError, InvalidReport
from crbio.input.hl7v2 import (
    CONFIG_ENV,
    SECTION_CHAPTERS,
    ChapterRef,
    OruDefaults,
    load_oru,
    oru_to_mapping,
    read_oru,
)
from crbio.input.loinc_mapping import LoincEntry, LoincMapping
from crbio.model import (
    CodedValue,
    IdentityStatus,
    IntervalValue,
    Quantity,
    RatioValue,
    Report,
    Sex,
    TextValue,
)
from crbio.validation.validate import validate_document

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hl7"
VALID = sorted(p.name for p in FIXTURES.glob("0*.hl7"))
DEFAULTS = OruDefaults.load(FIXTURES / "crbio-oru.toml")
NS = {"h": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
TEST_INS_OID = "1.2.250.1.213.1.4.10"
SNOMED = "2.16.840.1.113883.6.96"
PARIS_WINTER = timedelta(hours=1)
PARIS_SUMMER = timedelta(hours=2)

#: What identifies the fixtures' patients: never to be quoted by an error message.
PATIENT_DATA = [
    "PAT-TROIS",
    "DOMINIQUE",
    "MARIE-LOUISE",
    "279035121518989",
    "1234567890121",
    "19790328",
    "1979-03-28",
    "Breteuil",
    "Dompremy",
    "51215",
    "+33647151010",
    "06 47 15 10 10",
    "PAT-QUATRE",
    "CAMILLE",
    "PAT-SIX",
    "195076938302769",
    "PAT-QUATORZE",
    "ROMAIN",
]


def assert_no_patient_data(text: str) -> None:
    leaked = [s for s in PATIENT_DATA if s.lower() in text.lower()]
    assert not leaked, f"message quotes patient data {leaked}: {text}"


def context() -> BuildContext:
    return BuildContext(
        clock=FixedClock(datetime.fromisoformat("2024-12-31T18:00:00+01:00")),
        ids=SequenceIds("1.2.250.1.999.9.9"),
    )


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    """Every valid fixture read once for the module."""
    return {name: load_oru(FIXTURES / name) for name in VALID}


@pytest.fixture(scope="module")
def built(reports: dict[str, Report]) -> dict[str, crbio.Documents]:
    """Every valid fixture built once for the module, reproducibly."""
    return {name: crbio.build(report, context=context()) for name, report in reports.items()}


def parsed(name: str) -> Any:
    """A fixture parsed on its own by python-hl7: the reference the documents are checked against."""
    raw = (FIXTURES / name).read_bytes().replace(b"\x0b", b"").replace(b"\x1c", b"")
    encoding = "latin-1" if b"|8859/1" in raw.split(b"\r")[0] else "utf-8"
    return hl7.parse(raw.decode(encoding).replace("\r\n", "\r").replace("\n", "\r").strip())


def entries(n3: bytes) -> dict[str, Any]:
    """The result entries of a CDA N3 by LOINC code."""
    found = etree.fromstring(n3).xpath(
        "//h:observation[h:templateId/@root='1.3.6.1.4.1.19376.1.3.1.6'][h:code/@code]", namespaces=NS
    )
    return {o.find("h:code", NS).get("code"): o for o in found}


# --- the valid fixtures become conformant documents --------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_fixture_documents_pass_xsd_and_crbio_rules(built: dict[str, crbio.Documents], name: str) -> None:
    documents = built[name]
    for kind, data in (("n3", documents.n3), ("n1", documents.n1)):
        report = validate_document(data, label=f"{name} {kind}", pdfa=True)
        assert not report.findings, report.summary()


@pytest.mark.parametrize("name", VALID)
def test_fixture_documents_pass_the_official_ans_kit(
    built: dict[str, crbio.Documents], name: str, ans_kit_n3: object, ans_kit_n1: object
) -> None:
    documents = built[name]
    assert_kit_accepts(documents, f"{name}", ans_kit_n3, ans_kit_n1)


@pytest.mark.parametrize("name", VALID)
def test_every_numeric_result_is_written_as_the_message_says(
    built: dict[str, crbio.Documents], name: str
) -> None:
    """Each NM result: LOINC code (OBX-3, else the mapping), value, unit, flag and range as in the OBX."""
    from crbio.codes import check_ucum

    mapping = DEFAULTS.mapping
    assert mapping is not None
    by_code = entries(built[name].n3)
    checked = 0
    for obx in parsed(name).segments("OBX"):
        if str(obx(2)) != "NM":
            continue
        code, _, system, *_ = [*str(obx(3)).split("^"), "", ""]
        entry = mapping.get(code)
        loinc = code if system == "LN" else entry.loinc if entry else None
        assert loinc is not None, f"{name}: {code} has no LOINC code"
        written = by_code[loinc]
        value = written.find("h:value", NS)
        assert value.get(f"{{{NS['xsi']}}}type") == "PQ"
        assert Decimal(value.get("value")) == Decimal(str(obx(5)))
        unit = str(obx(6)).split("^")[0]
        expected = unit if unit and check_ucum(unit) is None else entry.unit if entry else unit
        assert value.get("unit") == expected
        if flag := str(obx(8)):
            assert written.find("h:interpretationCode", NS).get("code") == flag
        low, dash, high = str(obx(7)).partition("-")
        if dash:
            bounds = written.find("h:referenceRange/h:observationRange/h:value", NS)
            assert Decimal(bounds.find("h:low", NS).get("value")) == Decimal(low)
            assert Decimal(bounds.find("h:high", NS).get("value")) == Decimal(high)
        checked += 1
    assert checked


@pytest.mark.parametrize("name", VALID)
def test_every_result_of_the_message_is_in_the_report(reports: dict[str, Report], name: str) -> None:
    report = reports[name]
    message = parsed(name)
    assert len(list(report.observations())) == len(message.segments("OBX"))
    batteries = [b for chapter in report.chapters for b in chapter.batteries]
    assert sorted(b.label for b in batteries) == sorted(str(obr(4)(1)(2)) for obr in message.segments("OBR"))


def test_biochemistry_with_a_qualified_ins(
    reports: dict[str, Report], built: dict[str, crbio.Documents]
) -> None:
    report = reports["01-biochimie-ins.hl7"]
    winter = report.validated_at.utcoffset()
    assert winter == PARIS_WINTER and report.validated_at == datetime.fromisoformat(
        "2024-01-04T16:05:00+01:00"
    )
    # MSH-4 gives the FINESS and the OID root, the configuration the rest.
    assert (report.laboratory.finess, report.laboratory.oid) == ("920000015", "1.2.250.1.999.1")
    assert report.laboratory.name == "Laboratoire des Charmes"
    # PID: INS + PID-32 VALI = qualified; the IPP under its authority's OID; PAM.FR names.
    patient = report.patient
    assert patient.identity_status is IdentityStatus.QUALIFIED
    assert patient.ins is not None and (patient.ins.matricule, patient.ins.oid) == (
        "279035121518989",
        TEST_INS_OID,
    )
    assert (patient.ipp.root, patient.ipp.extension) == ("1.2.250.1.999.1.2", "1234567890121")
    assert (patient.birth_family_name, patient.first_birth_given_name) == ("PAT-TROIS", "DOMINIQUE")
    assert patient.birth_given_names == "DOMINIQUE MARIE-LOUISE"
    assert (patient.used_family_name, patient.used_given_name) == ("PAT-TROIS", "Dominique")
    assert (patient.sex, patient.birth_date) == (Sex.FEMALE, date(1979, 3, 28))
    assert (patient.birthplace_code, patient.birthplace_name) == ("51215", "Dompremy")
    assert patient.address is not None and patient.address.lines == ("28 avenue de Breteuil", "Escalier A")
    assert (patient.address.postal_code, patient.address.city, patient.address.country) == (
        "75007",
        "Paris",
        "France",
    )
    assert [(t.uri, t.use) for t in patient.telecoms] == [("tel:+33647151010", "MC")]
    assert report.comments == ("Hyperkaliémie modérée isolée, à contrôler.",)
    # PV1 and ORC.
    assert report.encounter.kind.code == "AMB"
    assert report.encounter.start == datetime.fromisoformat("2024-01-04T07:30:00+01:00")
    assert report.encounter.id is not None and report.encounter.id.extension == "2024-V-0042"
    assert report.order_id is not None
    assert (report.order_id.root, report.order_id.extension) == ("1.2.250.1.999.1.3", "2024-0001234")
    prescriber = report.prescriber
    assert (prescriber.rpps, prescriber.name.family, prescriber.name.suffix) == (
        "10100023455",
        "CHARLES",
        "DR",
    )
    assert prescriber.mssante == "pascal.charles@medecin.mssante.fr"
    assert [t.uri for t in prescriber.telecoms] == ["tel:+33142000001"]
    assert prescriber.address is not None and prescriber.address.city == "Boulogne-Billancourt"
    assert prescriber.specialty is not None and prescriber.specialty.code == "G15_10/SM26"
    # OBR-32: the validating biologist, with the configured specialty.
    assert (report.biologist.rpps, report.biologist.name.display()) == ("10100012342", "DR Marcel CAMPARINI")
    assert report.biologist.specialty is not None and report.biologist.specialty.code == "G15_10/SM03"
    # SPM: two specimens, the serum shared by two orders.
    assert [(s.key, s.type.code, s.label) for s in report.specimens] == [
        ("FLU-0001", "BLDV", "Sang veineux (fluorure)"),
        ("SER-0001", "SER", "Sérum"),
    ]
    assert report.specimens[0].collected_at == datetime.fromisoformat("2024-01-04T07:35:00+01:00")
    assert report.specimens[0].received_at == datetime.fromisoformat("2024-01-04T08:10:00+01:00")
    (chapter,) = report.chapters
    assert (chapter.code.code, chapter.title) == ("18719-5", "Biochimie")  # OBR-24 CH
    glycemia, ionogram, renal = chapter.batteries
    assert (glycemia.label, glycemia.code, glycemia.specimens) == ("Glycémie à jeun", None, ("FLU-0001",))
    assert ionogram.code is not None and ionogram.code.code == "24326-1"
    # Escapes: \T\ & \F\ | \S\ ^ \R\ ~ \E\ \ and a UTF-8 hexadecimal escape.
    assert renal.comment == (
        "Méthodes : créatinine enzymatique & CKD-EPI | CRP immunoturbidimétrique ^ seuil 5 mg/L ~ \\ "
        "voir références."
    )
    glucose = glycemia.observations[0]
    assert glucose.code is not None and glucose.code.code == "14749-6"
    assert glucose.local_code is not None and (glucose.local_code.code, glucose.local_code.system) == (
        "GLY",
        "1.2.250.1.999.4.5",
    )
    assert glucose.value == Quantity(Decimal("4.89"), "mmol/L")
    assert glucose.reference_range is not None
    assert (glucose.reference_range.low, glucose.reference_range.high) == (
        Quantity(Decimal("3.89"), "mmol/L"),
        Quantity(Decimal("6.00"), "mmol/L"),
    )
    assert glucose.interpretation is not None and glucose.interpretation.code == "N"
    assert glucose.time == datetime.fromisoformat("2024-01-04T10:12:00+01:00")
    assert glucose.method is not None and (glucose.method.code, glucose.method.system) == (
        "DEG",
        "1.2.250.1.213.2.3.5",
    )
    potassium = ionogram.observations[1]
    assert potassium.interpretation is not None and potassium.interpretation.code == "H"
    assert potassium.comment == "Absence d'hémolyse visible."
    creatinine, gfr, crp = renal.observations
    # A local code mapped to LOINC, its unit written the laboratory's way (µmol/l) given by the mapping.
    assert creatinine.code is not None and creatinine.code.code == "14682-9"
    assert creatinine.value == Quantity(Decimal("68"), "umol/L")
    assert gfr.reference_range is not None and gfr.reference_range.low == Quantity(
        Decimal("90"), "mL/min/{1.73_m2}"
    )
    # SN "<^0.5": a bound, not a number.
    assert crp.value == IntervalValue(high=Quantity(Decimal("0.5"), "mg/L"), high_inclusive=False)
    assert crp.reference_range is not None and crp.reference_range.high == Quantity(Decimal("5"), "mg/L")
    n3 = etree.fromstring(built["01-biochimie-ins.hl7"].n3)
    ids = {(i.get("root"), i.get("extension")) for i in n3.iterfind("h:recordTarget/h:patientRole/h:id", NS)}
    assert ids == {(TEST_INS_OID, "279035121518989"), ("1.2.250.1.999.1.2", "1234567890121")}


def test_haematology_with_local_times_and_a_validated_identity(reports: dict[str, Report]) -> None:
    report = reports["02-hemogramme.hl7"]
    patient = report.patient
    # VALI without an INS: validated, not qualified; the IPP authority has no OID: ipp_root.
    assert (patient.identity_status, patient.ins) == (IdentityStatus.VALIDATED, None)
    assert (patient.ipp.root, patient.ipp.extension) == ("1.2.250.1.999.1.2", "220000458812")
    # Times without UTC offset are Paris time (winter).
    assert report.validated_at == datetime.fromisoformat("2024-02-06T11:30:00+01:00")
    assert report.validated_at.utcoffset() == PARIS_WINTER
    # No ORC: the prescriber is OBR-16; OBR-28 a copy recipient; the order number under order_root.
    assert (report.prescriber.rpps, report.prescriber.name.family) == ("10100090124", "LE GOFF")
    assert [(r.rpps, r.name.family) for r in report.copy_recipients] == [("10100101236", "RIOU")]
    assert report.order_id is not None and report.order_id.root == "1.2.250.1.999.1.3"
    # No SPM: the specimen is OBR-15 collected at OBR-7, received at OBR-14.
    (specimen,) = report.specimens
    assert (specimen.type.code, specimen.label) == ("BLD", "Sang total (EDTA)")
    assert specimen.collected_at == datetime.fromisoformat("2024-02-06T08:05:00+01:00")
    assert specimen.received_at == datetime.fromisoformat("2024-02-06T08:40:00+01:00")
    (chapter,) = report.chapters
    assert (chapter.code.code, chapter.title) == ("18723-7", "Hématologie")  # OBR-24 HM
    (battery,) = chapter.batteries
    flags = {o.label: o.interpretation.code for o in battery.observations if o.interpretation}
    assert flags["Hémoglobine"] == "L"
    assert flags["Polynucléaires neutrophiles"] == "LL"
    assert flags["Plaquettes"] == "HH"
    smear = battery.observations[-1]
    # FT: \.br\ is a line break.
    assert smear.value == TextValue(
        "Anisocytose modérée, microcytose.\nPas de cellule blastique.\nPlaquettes : nombreux agrégats."
    )
    leukocytes = battery.observations[4]
    assert leukocytes.value == Quantity(Decimal("2.10"), "10*9/L")  # the written precision is kept


def test_serology_in_latin1_with_coded_results_a_titre_and_a_correction(reports: dict[str, Report]) -> None:
    report = reports["03-serologie-latin1.hl7"]
    patient = report.patient
    # An INS without VALI: retrieved, not qualified; the INS is not carried (RNIV).
    assert (patient.identity_status, patient.ins) == (IdentityStatus.RETRIEVED, None)
    # Summer: Paris is UTC+2.
    assert report.validated_at == datetime.fromisoformat("2024-06-19T15:50:00+02:00")
    assert report.validated_at.utcoffset() == PARIS_SUMMER
    serology, blood_bank = report.chapters
    assert (serology.code.code, serology.title) == ("18727-8", "Sérologie")
    assert (blood_bank.code.code, blood_bank.title) == ("18717-9", "Immuno-hématologie")
    syphilis, hiv, rubella = serology.batteries
    assert syphilis.label == "Sérologie de la syphilis"  # ISO 8859-1 decoded
    treponema, rpr = syphilis.observations
    assert treponema.value == CodedValue("Positif", treponema.value.code)  # type: ignore[union-attr]
    assert treponema.value.code is not None  # type: ignore[union-attr]
    assert (treponema.value.code.code, treponema.value.code.system) == ("10828004", SNOMED)  # type: ignore[union-attr]
    assert treponema.interpretation is not None and treponema.interpretation.code == "POS"
    assert treponema.reference_range is not None and treponema.reference_range.text == "Négatif"
    assert rpr.value == RatioValue(Decimal(1), Decimal(64))
    assert rpr.reference_range is not None and rpr.reference_range.text == "Négatif (< 1/1)"
    assert hiv.observations[0].interpretation is not None and hiv.observations[0].interpretation.code == "NEG"
    (igg,) = rubella.observations
    # OBX-11 C: accepted, and said to the reader (the model has no per-result status for it).
    assert igg.comment is not None and igg.comment.startswith("Résultat corrigé.\nValeur corrigée")
    assert igg.value == Quantity(Decimal("42"), "[IU]/mL")
    assert igg.reference_range is not None and igg.reference_range.low == Quantity(Decimal("10"), "[IU]/mL")
    abo, rh = blood_bank.batteries[0].observations
    assert isinstance(abo.value, CodedValue) and abo.value.text == "O"
    assert isinstance(rh.value, CodedValue) and rh.value.text == "RH:-1 (RhD négatif)"
    assert {s.key for s in report.specimens} == {"SEC-0107", "EDTA-0107"}


def test_subcontracting_local_codes_and_text_values(reports: dict[str, Report]) -> None:
    report = reports["04-sous-traitance-mllp.hl7"]  # MLLP framing kept by a gateway; HL7 2.5.1
    assert (report.patient.identity_status, report.patient.ins) == (IdentityStatus.PROVISIONAL, None)
    chemistry, urine, microbiology = report.chapters
    assert [c.code.code for c in report.chapters] == ["18719-5", "18729-4", "18725-2"]
    hba1c, vitamin_d = chemistry.batteries  # HBA1C placed by the configuration, VITD by OBR-24 CH
    ratio, ifcc = hba1c.observations
    # Local codes mapped; an empty OBX-6 takes the mapping's unit.
    assert ratio.code is not None and ratio.code.code == "4548-4"
    assert ratio.value == Quantity(Decimal("6.9"), "%")
    assert ifcc.value == Quantity(Decimal("52"), "mmol/mol")
    (lab,) = report.executing_laboratories
    assert (lab.finess, lab.name) == ("950004564", "Laboratoire Bio-Spécialités Île-de-France")
    assert lab.performed_at == datetime.fromisoformat("2024-01-23T14:30:00+01:00")  # OBX-19
    assert lab.address is not None and lab.address.city == "Argenteuil"  # OBX-24
    assert [t.uri for t in lab.telecoms] == ["tel:+33199001234"]  # the configuration
    assert lab.biologist is not None and lab.biologist.rpps == "10100089019"  # OBX-25
    assert vitamin_d.performed_by == lab.key and hba1c.performed_by is None
    (vitamin,) = vitamin_d.observations
    assert vitamin.value == Quantity(Decimal("48"), "nmol/l")  # UCUM already: as written
    aspect, leukocytes, protein = urine.batteries[0].observations
    assert aspect.value == TextValue("Trouble")
    assert leukocytes.value == IntervalValue(
        low=Quantity(Decimal("10"), "/[HPF]"), high=Quantity(Decimal("20"), "/[HPF]")
    )
    assert protein.value == TextValue("2+")
    (culture,) = microbiology.batteries[0].observations
    # TX: one line per repetition.
    assert culture.value == TextValue(
        "Flacon aérobie : pas de croissance à 5 jours.\nFlacon anaérobie : pas de croissance à 5 jours."
    )


# --- malformed messages -----------------------------------------------------------------------

MALFORMED = [
    ("bad-segment.hl7", ["EVN[1]", "segment 8"], "hl7.segment"),
    ("missing-pid.hl7", ["PID"], "hl7.required"),
    ("unknown-value-type.hl7", ["OBX[2]-2", "OBX[3]-2"], "hl7.value-type"),
    ("non-final-p.hl7", ["OBX[2]-11"], "hl7.result-status"),
    ("unmapped-local-codes.hl7", ["OBX[1]-3"], "loinc.unmapped"),
    ("two-messages.hl7", ["MSH[2]"], "hl7.one-message"),
    ("wrong-charset.hl7", ["MSH-18"], "hl7.charset"),
]


@pytest.mark.parametrize(("name", "fields", "rule"), MALFORMED)
def test_malformed_messages_are_refused_by_segment_and_field(name: str, fields: list[str], rule: str) -> None:
    with pytest.raises(InvalidReport) as caught:
        load_oru(FIXTURES / name)
    assert list(caught.value.fields) == fields
    assert {p.rule for p in caught.value.problems} == {rule}
    assert_no_patient_data(str(caught.value))


def test_every_unmapped_local_code_is_listed_in_one_message() -> None:
    with pytest.raises(InvalidReport) as caught:
        load_oru(FIXTURES / "unmapped-local-codes.hl7")
    (problem,) = caught.value.problems
    # CL has a LOINC code beside it (OBX-3 alternate): it is not listed.
    assert "'NA' (OBX[1])" in problem.message and "'KAL' (OBX[2])" in problem.message
    assert "'CL'" not in problem.message


@pytest.mark.parametrize(("name", "code"), [("garbage.hl7", "input.not-hl7"), ("empty.hl7", "input.empty")])
def test_what_is_no_hl7_message_is_refused(name: str, code: str) -> None:
    with pytest.raises(InputError) as caught:
        load_oru(FIXTURES / name)
    assert caught.value.code == code
    assert_no_patient_data(str(caught.value))


def test_an_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_oru(tmp_path / "missing.hl7", defaults=DEFAULTS)
    assert caught.value.code == "input.unreadable"


# --- messages built in the tests: one rule at a time ----------------------------------------------

CHARLES = "810100023455^CHARLES^Pascal^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
CAMPARINI = "810100012342&CAMPARINI&Marcel&&&DR&&&ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
INS = "279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
IPP = "1234567890121^^^LABO_CHARMES&1.2.250.1.999.1.2&ISO^PI"


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its fields by number (so that no test counts pipes)."""
    last = max(fields)
    return "|".join([name, *(fields.get(i, "") for i in range(1, last + 1))])


def msh(**fields: str) -> str:
    values = {
        3: "SGL_CHARMES",
        4: "920000015^1.2.250.1.999.1^ISO",
        7: "20240104161000+0100",
        9: "ORU^R01^ORU_R01",
        10: "MSG-TEST",
        11: "P",
        12: "2.5",
        17: "FRA",
        18: "UNICODE UTF-8",
    }
    values.update({int(k[1:]): v for k, v in fields.items()})
    return "MSH|^~\\&|" + "|".join(values.get(i, "") for i in range(3, max(values) + 1))


def pid(**fields: str) -> str:
    values = {
        1: "1",
        3: f"{IPP}~{INS}",
        5: "PAT-TROIS^DOMINIQUE^DOMINIQUE MARIE-LOUISE^^^^L",
        7: "19790328",
        8: "F",
        11: "28 avenue de Breteuil^^Paris^^75007^FRA^H~^^Dompremy^^^^BDL^^51215",
        32: "VALI",
    }
    values.update({int(k[1:]): v for k, v in fields.items()})
    return segment("PID", values)


def orc(**fields: str) -> str:
    return segment(
        "ORC", {1: "RE", 3: "2024-0001^LABO_CHARMES^1.2.250.1.999.1.3^ISO", 12: CHARLES} | _numbered(fields)
    )


def obr(**fields: str) -> str:
    values = {
        1: "1",
        4: "24326-1^Ionogramme sanguin^LN",
        7: "20240104073500+0100",
        22: "20240104160500+0100",
        24: "CH",
        25: "F",
        32: CAMPARINI,
    }
    return segment("OBR", values | _numbered(fields))


def obx(**fields: str) -> str:
    values = {
        1: "1",
        2: "NM",
        3: "2951-2^Sodium^LN",
        5: "141",
        6: "mmol/L^^UCUM",
        7: "136-145",
        8: "N",
        11: "F",
        14: "20240104101200+0100",
    }
    return segment("OBX", values | _numbered(fields))


def spm(**fields: str) -> str:
    values = {
        1: "1",
        2: "^SER-1",
        4: "SER^Sérum^HL70487",
        17: "20240104073500+0100",
        18: "20240104081000+0100",
    }
    return segment("SPM", values | _numbered(fields))


def _numbered(fields: dict[str, str]) -> dict[int, str]:
    return {int(k[1:]): v for k, v in fields.items()}


def message(*segments: str) -> str:
    """A whole message: the segments given, completed with the defaults above where they lack one."""
    given = {s[:3]: s for s in segments if s[:3] in ("MSH", "PID", "PV1")}
    body = [s for s in segments if s[:3] not in given]
    if not any(s.startswith("OBR") for s in body):
        body = [orc(), obr(), *body]
    if not any(s.startswith("OBX") for s in body):
        body.append(obx())
    if not any(s.startswith("SPM") for s in body):
        body.append(spm())
    head = [given.get("MSH", msh()), given.get("PID", pid())] + ([given["PV1"]] if "PV1" in given else [])
    return "\r".join(head + body)


def read(text: str | bytes, defaults: OruDefaults = DEFAULTS, mapping: LoincMapping | None = None) -> Report:
    return read_oru(text, label="test", defaults=defaults, mapping=mapping)


def refused(
    text: str | bytes, defaults: OruDefaults = DEFAULTS, mapping: LoincMapping | None = None
) -> InvalidReport:
    with pytest.raises(InvalidReport) as caught:
        read(text, defaults, mapping)
    assert_no_patient_data(str(caught.value))
    return caught.value


def observation(report: Report, index: int = 0) -> Any:
    return list(report.observations())[index]


def test_the_message_builder_makes_a_valid_message() -> None:
    report = read(message())
    assert observation(report).value == Quantity(Decimal("141"), "mmol/L")
    assert report.patient.identity_status is IdentityStatus.QUALIFIED


def test_text_input_and_crlf_line_ends_are_read() -> None:
    assert read(message().replace("\r", "\r\n")).patient.birth_family_name == "PAT-TROIS"


def test_a_batch_envelope_around_one_message_is_read() -> None:
    text = "FHS|^~\\&\rBHS|^~\\&\r" + message() + "\rBTS|1\rFTS|1"
    assert len(list(read(text).observations())) == 1


def test_8859_15_is_read() -> None:
    text = message(msh(f18="8859/15"), obx(), "NTE|1|L|Coût : 12 €")
    report = read(text.encode("iso8859-15"))
    assert observation(report).comment == "Coût : 12 €"


def test_an_unread_character_set_is_refused() -> None:
    problem = refused(message(msh(f18="UNICODE UTF-16")).encode()).problems[0]
    assert (problem.field, problem.rule) == ("MSH-18", "hl7.charset")


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("f9", "ADT^A01^ADT_A01", "hl7.message-type"),
        ("f12", "2.3", "hl7.version"),
        ("f12", "", "hl7.version"),
    ],
)
def test_other_messages_and_versions_are_refused(field: str, value: str, rule: str) -> None:
    problem = refused(message(msh(**{field: value}))).problems[0]
    assert (problem.field, problem.rule) == (f"MSH-{field[1:]}", rule)


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("a\\H\\b\\N\\c", "abc"),
        ("un\\.br\\deux", "un\ndeux"),
        ("\\X41\\BC", "ABC"),
        ("\\XC3A9\\t\\XC3A9\\", "été"),
        ("x\\.sk2\\y", "x  y"),
    ],
)
def test_escape_sequences(escaped: str, text: str) -> None:
    report = read(message(obx(), f"NTE|1|L|{escaped}"))
    assert observation(report).comment == text


@pytest.mark.parametrize("escaped", ["\\Zlocal\\", "\\C2842\\x", "open\\F", "\\XC3\\"])
def test_unread_escape_sequences_are_refused(escaped: str) -> None:
    problem = refused(message(obx(), f"NTE|1|L|{escaped}")).problems[0]
    assert (problem.field, problem.rule) == ("NTE[1]-3", "hl7.escape")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (">=^1000", IntervalValue(low=Quantity(Decimal("1000"), "mmol/L"))),
        (">^7", IntervalValue(low=Quantity(Decimal("7"), "mmol/L"), low_inclusive=False)),
        ("<=^0.5", IntervalValue(high=Quantity(Decimal("0.5"), "mmol/L"))),
        ("=^12", Quantity(Decimal("12"), "mmol/L")),
        (
            "^3.5^-^5.0",
            IntervalValue(low=Quantity(Decimal("3.5"), "mmol/L"), high=Quantity(Decimal("5.0"), "mmol/L")),
        ),
        ("^1^/^80", RatioValue(Decimal(1), Decimal(80))),
        ("<^1^:^10", TextValue("< 1/10")),
    ],
)
def test_structured_numeric_values(value: str, expected: object) -> None:
    report = read(message(obx(f2="SN", f5=value, f7="")))
    assert observation(report).value == expected


@pytest.mark.parametrize("value", ["<>^5", "^1^.^5", "<^3^-^5", "^abc", "^"])
def test_unread_structured_numeric_forms_are_refused(value: str) -> None:
    problem = refused(message(obx(f2="SN", f5=value, f7=""))).problems[0]
    assert problem.field == "OBX[1]-5"


@pytest.mark.parametrize("value", ["<0.5", "4,89", "1e3", "N/A"])
def test_an_nm_value_must_be_a_number(value: str) -> None:
    problem = refused(message(obx(f5=value))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-5", "hl7.number")


def test_nm_numbers_keep_their_precision_and_drop_a_plus_sign() -> None:
    assert observation(read(message(obx(f5="+0140.50")))).value == Quantity(Decimal("140.50"), "mmol/L")


@pytest.mark.parametrize(
    ("text", "low", "high", "shown"),
    [
        ("3.5-5.1", "3.5", "5.1", None),
        ("3,5 - 5,1", "3.5", "5.1", None),
        ("-2.0-2.0", "-2.0", "2.0", None),
        ("<5", None, "5", None),
        ("<= 5", None, "5", None),
        ("≥ 90", "90", None, None),
        ("> 1.2", "1.2", None, None),
        ("Négatif", None, None, "Négatif"),
    ],
)
def test_reference_ranges(text: str, low: str | None, high: str | None, shown: str | None) -> None:
    reference = observation(read(message(obx(f7=text)))).reference_range
    assert reference.low == (Quantity(Decimal(low), "mmol/L") if low else None)
    assert reference.high == (Quantity(Decimal(high), "mmol/L") if high else None)
    assert reference.text == shown


@pytest.mark.parametrize("flag", ["L", "H", "LL", "HH", "N", "A", "AA", "<", ">", "POS", "NEG"])
def test_abnormal_flags_become_interpretation_codes(flag: str) -> None:
    interpretation = observation(read(message(obx(f8=flag)))).interpretation
    assert interpretation is not None and interpretation.code == flag
    assert interpretation.system == "2.16.840.1.113883.5.83"


def test_an_unknown_flag_is_refused_at_obx_8() -> None:
    problem = refused(message(obx(f8="ZZ"))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-8", "value-set.interpretation")


def test_several_flags_are_refused() -> None:
    assert refused(message(obx(f8="H~A"))).problems[0].field == "OBX[1]-8"


@pytest.mark.parametrize("status", ["P", "I", "R", "X", "D", "W", "S", "U", ""])
def test_non_final_results_are_refused(status: str) -> None:
    problem = refused(message(obx(f11=status))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-11", "hl7.result-status")


def test_a_non_final_order_is_refused() -> None:
    problem = refused(message(orc(), obr(f25="P"), obx())).problems[0]
    assert (problem.field, problem.rule) == ("OBR[1]-25", "hl7.result-status")


def test_a_non_ucum_unit_without_mapping_is_refused_at_obx_6() -> None:
    problem = refused(message(obx(f6="mmol/l?"))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-6", "ucum")


def test_a_unit_that_contradicts_the_mapping_is_refused() -> None:
    local = obx(f3="GLY^Glycémie^L", f6="g/L^^UCUM", f7="")
    assert refused(message(local)).problems[0].rule == "unit.conflict"


def test_a_loinc_code_that_contradicts_the_mapping_is_refused() -> None:
    mapping = LoincMapping({"NA": LoincEntry("2947-0")})
    problem = refused(message(obx(f3="2951-2^Sodium^LN^NA^Sodium^L")), mapping=mapping).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-3", "loinc.conflict")


def test_an_explicit_mapping_replaces_the_configured_one() -> None:
    mapping = LoincMapping({"SOD": LoincEntry("2951-2", "mmol/L")})
    report = read(message(obx(f3="SOD^Sodium^99LAB", f6="")), mapping=mapping)
    assert observation(report).code.code == "2951-2"
    assert observation(report).value == Quantity(Decimal("141"), "mmol/L")


def test_a_coded_result_keeps_its_code_and_text() -> None:
    value = observation(read(message(obx(f2="CWE", f5="260385009^Négatif^SCT", f6="", f7="")))).value
    assert isinstance(value, CodedValue) and value.text == "Négatif"
    assert value.code is not None and (value.code.code, value.code.system) == ("260385009", SNOMED)


def test_a_local_coded_result_is_coded_under_the_local_code_system() -> None:
    value = observation(read(message(obx(f2="CE", f5="NEG^Négatif^L", f6="", f7="")))).value
    assert value.code is not None and value.code.system == DEFAULTS.local_code_system


def test_a_coded_result_needs_its_text() -> None:
    problem = refused(message(obx(f2="CWE", f5="260385009^^SCT", f6="", f7=""))).problems[0]
    assert problem.field == "OBX[1]-5"


def test_several_values_for_one_number_are_refused() -> None:
    problem = refused(message(obx(f5="141~142"))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-5", "hl7.repetition")


def test_a_completed_result_needs_a_value() -> None:
    problem = refused(message(obx(f5=""))).problems[0]
    assert problem.field == "OBX[1]-5"


def test_a_result_needs_a_name() -> None:
    problem = refused(message(obx(f3="2951-2^^LN"))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-3", "hl7.required")


def test_an_observation_time_needs_hours_and_minutes() -> None:
    problem = refused(message(obx(f14="20240104"))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-14", "hl7.datetime")


@pytest.mark.parametrize(
    ("codes", "ins", "status"),
    [
        ("VALI", True, IdentityStatus.QUALIFIED),
        ("VALI", False, IdentityStatus.VALIDATED),
        ("", True, IdentityStatus.RETRIEVED),
        ("PROV", True, IdentityStatus.RETRIEVED),
        ("PROV", False, IdentityStatus.PROVISIONAL),
        ("VALI~DOUT", True, IdentityStatus.PROVISIONAL),
        ("FICT", False, IdentityStatus.PROVISIONAL),
    ],
)
def test_identity_status_from_pid_32_and_the_ins(codes: str, ins: bool, status: IdentityStatus) -> None:
    report = read(message(pid(f32=codes, f3=f"{IPP}~{INS}" if ins else IPP)))
    assert report.patient.identity_status is status
    # The INS is kept only for a qualified identity.
    assert (report.patient.ins is not None) is (status is IdentityStatus.QUALIFIED)


def test_an_ins_with_a_wrong_key_is_refused_at_pid_3() -> None:
    wrong = INS.replace("279035121518989", "279035121518988")
    problem = refused(message(pid(f3=f"{IPP}~{wrong}"))).problems[0]
    assert (problem.field, problem.rule) == ("PID-3", "ins.matricule")


def test_an_ins_without_its_authority_oid_is_refused() -> None:
    problem = refused(message(pid(f3=f"{IPP}~279035121518989^^^ASIP-SANTE-INS-NIR^INS"))).problems[0]
    assert (problem.field, problem.rule) == ("PID-3", "ins.authority")


def test_a_qualified_identity_needs_every_ins_trait() -> None:
    problems = refused(message(pid(f11="28 avenue de Breteuil^^Paris^^75007^FRA^H", f8="U"))).problems
    assert [(p.field, p.rule) for p in problems] == [("PID-8", "ins.trait"), ("PID-11", "ins.trait")]


def test_a_patient_needs_a_local_identifier() -> None:
    problem = refused(message(pid(f3=INS))).problems[0]
    assert (problem.field, problem.rule) == ("PID-3", "hl7.required")


def test_a_second_patient_is_refused() -> None:
    text = message() + "\r" + pid()
    problem = refused(text).problems[0]
    assert (problem.field, problem.rule) == ("PID[2]", "hl7.one-patient")


def test_a_comment_after_orc_is_refused() -> None:
    text = message(orc(), "NTE|1|L|Commentaire", obr(), obx())
    assert refused(text).problems[0].field == "NTE[1]"


def test_a_prescriber_needs_an_rpps() -> None:
    problem = refused(message(orc(f12="123456^DOE^JOHN"), obr(), obx())).problems[0]
    assert (problem.field, problem.rule) == ("ORC[1]-12", "hl7.rpps")


def test_a_prescriber_is_required() -> None:
    problem = refused(message(orc(f12=""), obr(), obx())).problems[0]
    assert (problem.field, problem.rule) == ("OBR[1]-16", "hl7.required")


def test_two_prescribers_are_refused() -> None:
    other = "810100090124^LE GOFF^Yann^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    text = message(orc(), obr(), obx(), spm(), orc(f12=other), obr(f1="2"), obx())
    problem = refused(text).problems[0]
    assert (problem.field, problem.rule) == ("ORC[2]-12", "prescriber.several")


def test_the_biologist_of_the_last_validated_order_signs() -> None:
    later = "810100056786&ESTRADE&Marion&&&DR&&&ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO"
    text = message(
        orc(), obr(), obx(), spm(), orc(), obr(f1="2", f22="20240104170000+0100", f32=later), obx(), spm()
    )
    report = read(text)
    assert report.biologist.rpps == "10100056786"
    assert report.validated_at == datetime.fromisoformat("2024-01-04T17:00:00+01:00")


def test_the_responsible_observer_signs_when_obr_32_is_empty() -> None:
    observer = "810100056786^ESTRADE^Marion^^^DR^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    report = read(message(orc(), obr(f32=""), obx(f16=observer)))
    assert report.biologist.rpps == "10100056786"
    assert report.biologist.specialty is not None


def test_the_biologist_needs_a_specialty() -> None:
    defaults = OruDefaults(laboratory=DEFAULTS.laboratory, mapping=DEFAULTS.mapping)
    problem = refused(message(), defaults).problems[0]
    assert (problem.field, problem.rule) == ("OBR[1]-32", "specialty")


def test_a_subcontracted_laboratory_the_configuration_does_not_know_is_refused() -> None:
    performer = "Laboratoire Inconnu^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^750000042"
    problem = refused(message(obx(f19="20240104120000+0100", f23=performer))).problems[0]
    assert (problem.field, problem.rule) == ("OBX[1]-23", "executing-laboratory")
    assert "750000042" in problem.message and "telecom" in problem.message


def test_a_battery_from_two_laboratories_is_refused() -> None:
    performer = "Bio-Spécialités^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^950004564"
    text = message(orc(), obr(), obx(f19="20240104120000+0100", f23=performer), obx(f1="2"))
    problem = refused(text).problems[0]
    assert (problem.field, problem.rule) == ("OBR[1]", "performer")


def test_the_performer_naming_the_issuing_laboratory_is_in_house() -> None:
    own = "Laboratoire des Charmes^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^920000015"
    report = read(message(obx(f23=own)))
    assert report.executing_laboratories == ()


def test_obx_15_may_name_the_subcontracted_laboratory() -> None:
    known = {
        "950004564": {
            "telecom": ["tel:+33199001234"],
            "practice_setting": "AMBULATOIRE",
            "address": {"lines": ["2 rue des Frères-Lumière"], "postal_code": "95100", "city": "Argenteuil"},
        }
    }
    defaults = OruDefaults(
        laboratory=DEFAULTS.laboratory, biologist_specialty="G15_10/SM03", executing_laboratories=known
    )
    report = read(message(obx(f15="950004564^Bio-Spécialités^FINESS", f19="20240104120000+0100")), defaults)
    (lab,) = report.executing_laboratories
    assert (lab.finess, lab.name, lab.address.city) == ("950004564", "Bio-Spécialités", "Argenteuil")
    assert list(report.chapters[0].batteries)[0].performed_by == lab.key


def test_observations_after_spm_are_results_of_the_battery_and_comments_after_spm_are_refused() -> None:
    text = message(orc(), obr(), obx(), spm(), obx(f1="2", f3="2823-3^Potassium^LN", f5="4.2", f7="3.5-5.1"))
    assert [o.label for o in read(text).observations()] == ["Sodium", "Potassium"]
    problem = refused(message(orc(), obr(), obx(), spm(), "NTE|1|L|Hémolysé")).problems[0]
    assert (problem.field, problem.rule) == ("NTE[1]", "hl7.order")


def test_a_battery_without_chapter_is_refused_unless_a_default_is_configured() -> None:
    text = message(orc(), obr(f24=""), obx())
    problem = refused(text).problems[0]
    assert (problem.field, problem.rule) == ("OBR[1]-24", "chapter")
    defaults = OruDefaults(
        laboratory=DEFAULTS.laboratory,
        biologist_specialty="G15_10/SM03",
        default_chapter=ChapterRef("26436-6", "Examens de laboratoire"),
    )
    assert read(text, defaults).chapters[0].code.code == "26436-6"


def test_every_section_chapter_is_a_valid_loinc_code() -> None:
    from crbio.codes import check_loinc

    assert all(check_loinc(ref.code) is None for ref in SECTION_CHAPTERS.values())


def test_patient_classes() -> None:
    assert read(message(msh(), pid(), "PV1|1|E", orc(), obr(), obx())).encounter.kind.code == "EMER"
    problem = refused(message(msh(), pid(), "PV1|1|Z", orc(), obr(), obx())).problems[0]
    assert (problem.field, problem.rule) == ("PV1-2", "hl7.patient-class")
    defaults = OruDefaults(
        laboratory=DEFAULTS.laboratory, biologist_specialty="G15_10/SM03", patient_classes={"O": "EXTERNE"}
    )
    assert (
        read(message(msh(), pid(), "PV1|1|O", orc(), obr(), obx()), defaults).encounter.kind.code == "EXTERNE"
    )


def test_a_specimen_is_required() -> None:
    text = "\r".join([msh(), pid(), orc(), obr(), obx()])
    problem = refused(text).problems[0]
    assert (problem.field, problem.rule) == ("OBR[1]-15", "hl7.required")


def test_an_unknown_specimen_type_is_refused_at_spm_4() -> None:
    problem = refused(message(obx(), spm(f4="XYZ^Inconnu^HL70487"))).problems[0]
    assert (problem.field, problem.rule) == ("SPM[1]-4", "value-set.specimen_type")


def test_the_laboratory_finess_must_agree_with_the_configuration() -> None:
    defaults = OruDefaults(
        laboratory={**DEFAULTS.laboratory, "finess": "750000042"}, biologist_specialty="G15_10/SM03"
    )
    problem = refused(message(), defaults).problems[0]
    assert (problem.field, problem.rule) == ("MSH-4", "finess.conflict")


def test_problems_of_the_configuration_are_named_as_such() -> None:
    defaults = OruDefaults(
        laboratory={**DEFAULTS.laboratory, "practice_setting": "NOPE"}, biologist_specialty="X"
    )
    fields = [p.field for p in refused(message(), defaults).problems]
    assert fields == ["configuration laboratory.practice_setting", "configuration biologist.specialty"]


def test_oru_to_mapping_shows_the_json_report() -> None:
    data = oru_to_mapping(message(), defaults=DEFAULTS)
    assert data["format"] == "crbio.report/1"
    assert data["chapters"][0]["batteries"][0]["observations"][0]["loinc"] == "2951-2"


# --- configuration and mapping ---------------------------------------------------------------------


def test_the_configuration_beside_the_message_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    alone = tmp_path / "message.hl7"
    alone.write_text(message())
    with pytest.raises(ConfigurationError) as caught:
        load_oru(alone)
    assert caught.value.code == "config.oru-missing"
    monkeypatch.setenv(CONFIG_ENV, str(FIXTURES / "crbio-oru.toml"))
    assert load_oru(alone).laboratory.name == "Laboratoire des Charmes"
    assert read_oru(message(), label="from the environment").laboratory.finess == "920000015"
    monkeypatch.delenv(CONFIG_ENV)
    with pytest.raises(ConfigurationError):
        read_oru(message(), label="no configuration")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[laboratory]\nname = 'x'\nnope = 1\n[chapters]\n", None),
        ("nope = 1\n[laboratory]\n", "unknown setting"),
        ("ipp_root = '1.02'\n[laboratory]\n", "ipp_root"),
        ("timezone = 'Mars/Olympus'\n[laboratory]\n", "time zone"),
        ("default_chapter = { code = '18719-4', title = 'x' }\n[laboratory]\n", "chapter code"),
        ("default_chapter = 'x'\n[laboratory]\n", "default_chapter"),
        ("[specialties]\nx = 1\n[laboratory]\n", "specialties"),
        ("laboratory = 'x'\n", "[laboratory] must be a table"),
        ("timezone = 3\n[laboratory]\n", "timezone must be a string"),
        ("biologist_specialty = 'G15_10/SM03'\n", "[laboratory] is required"),
        ("[laboratory\n", "TOML"),
    ],
)
def test_configuration_files(tmp_path: Path, text: str, error: str | None) -> None:
    file = tmp_path / "crbio-oru.toml"
    file.write_text(text)
    if error is None:
        assert (
            OruDefaults.load(file).laboratory["nope"] == 1
        )  # the laboratory object is checked with the report
        return
    with pytest.raises(ConfigurationError) as caught:
        OruDefaults.load(file)
    assert error in str(caught.value)


def test_loinc_mapping_files(tmp_path: Path) -> None:
    file = tmp_path / "map.csv"
    file.write_text('\ufefflocal;loinc;unit\n# commentaire\nGLY;14749-6;mmol/L\n\n"NA K";2951-2\n', "utf-8")
    mapping = LoincMapping.from_csv(file)
    assert dict(mapping) == {"GLY": LoincEntry("14749-6", "mmol/L"), "NA K": LoincEntry("2951-2")}
    assert "2 codes" in repr(mapping)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("GLY,14749-5\n", "line 1: LOINC '14749-5'"),
        ("GLY,14749-6,µmol/l\n", "unit 'µmol/l'"),
        ("GLY\n", "line 1: expected local,loinc[,unit]"),
        ("GLY,14749-6\nGLY,2951-2\n", "line 2: local code 'GLY' is already mapped differently"),
    ],
)
def test_loinc_mapping_errors_name_their_line(text: str, error: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LoincMapping.parse(text, source="map.csv")
    assert error in str(caught.value)


def test_a_missing_mapping_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        LoincMapping.from_csv(tmp_path / "none.csv")


# --- the command line ----------------------------------------------------------------------------


def _load_report_reads_hl7() -> bool:
    from crbio.input import load_report

    try:
        load_report(FIXTURES / "01-biochimie-ins.hl7")
    except InputError as e:
        if e.code == "input.not-json":
            return False
        raise
    return True


def test_crbio_build_reads_an_oru(tmp_path: Path) -> None:
    if not _load_report_reads_hl7():
        pytest.skip("crbio.input.load_report does not dispatch .hl7 files to crbio.input.hl7v2.load_oru yet")
    from crbio.cli import main

    assert main(["build", str(FIXTURES / "01-biochimie-ins.hl7"), "-o", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {
        "01-biochimie-ins.n3.xml",
        "01-biochimie-ins.n1.xml",
        "01-biochimie-ins.pdf",
    }


def test_crbio_build_refuses_a_non_final_oru_by_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not _load_report_reads_hl7():
        pytest.skip("crbio.input.load_report does not dispatch .hl7 files to crbio.input.hl7v2.load_oru yet")
    from crbio.cli import main

    assert main(["build", str(FIXTURES / "non-final-p.hl7"), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "OBX[2]-11" in err
    assert_no_patient_data(err)
    assert not list(tmp_path.iterdir())


def test_crbio_batch_reads_orus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from crbio.batch import READERS

    if ".hl7" not in READERS:
        pytest.skip("crbio batch does not read .hl7 files yet (crbio.batch.discover.READERS)")
    from crbio.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in (*VALID, "crbio-oru.toml", "local-loinc.csv", "non-final-p.hl7"):
        (inputs / name).write_bytes((FIXTURES / name).read_bytes())
    status = main(["batch", str(inputs), "-o", str(tmp_path / "out"), "--progress", "log"])
    capsys.readouterr()
    assert status == 2  # every valid message built; the non-final one refused
    for name in VALID:
        assert (tmp_path / "out" / name.replace(".hl7", ".n3.xml")).is_file()
    assert not (tmp_path / "out" / "non-final-p.n3.xml").exists()


def test_escapes_never_log_the_field(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        refused(message(obx(), "NTE|1|L|DOMINIQUE PAT-TROIS \\Zx\\"))
    assert_no_patient_data(caplog.text)


def test_dates_and_sexes() -> None:
    report = read(message(pid(f7="19790328120000", f8="F")))
    assert report.patient.birth_date == date(1979, 3, 28)
    problem = refused(message(pid(f7="197903"))).problems[0]
    assert (problem.field, problem.rule) == ("PID-7", "hl7.date")
    assert re.search("full date", problem.message)
