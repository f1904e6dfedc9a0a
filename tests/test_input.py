"""Reading reports: the bundled samples, the model they give, and bad inputs named by field and rule."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from crbio.codes import check_loinc, check_ucum
from crbio.errors import InputError, InvalidReport
from crbio.identifiers import check_finess, check_ins_matricule, check_rpps
from crbio.input import json_report, load_report, report_from_mapping
from crbio.model import (
    CodedValue,
    IdentityStatus,
    IntervalValue,
    Observation,
    ObservationStatus,
    Quantity,
    RatioValue,
    Report,
    TextValue,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SAMPLE_FILES = sorted(SAMPLES.glob("*.json"))
TEST_INS_OID = "1.2.250.1.213.1.4.10"
SNOMED = "2.16.840.1.113883.6.96"

Data = dict[str, Any]


def sample(name: str) -> Data:
    """A sample as decoded JSON, ready to be mutated."""
    data: Data = json.loads((SAMPLES / name).read_text("utf-8"))
    return data


def observation_dicts(data: Data) -> Iterator[Data]:
    """Every observation of a decoded report, antibiograms included."""
    for chapter in data["chapters"]:
        for battery in chapter.get("batteries", ()):
            yield from battery["observations"]
        for isolate in chapter.get("isolates", ()):
            yield from isolate.get("observations", ())
            yield from isolate.get("antibiogram", ())


# --- patient data must never appear in a message ------------------------------------------


def patient_data(data: Data) -> set[str]:
    """The strings of a report that identify its patient: names, INS, birth date, address, IPP."""
    patient = data.get("patient", {})
    found: set[str] = set()
    for key in (
        "birth_family_name",
        "first_birth_given_name",
        "birth_given_names",
        "used_family_name",
        "used_given_name",
        "birthplace_name",
    ):
        if key in patient:
            found.add(patient[key])
            found.update(patient[key].split())
    if "ins" in patient:
        found.add(patient["ins"]["matricule"])
    if "birth_date" in patient:
        born = patient["birth_date"]
        found |= {born, born.replace("-", ""), "/".join(reversed(born.split("-")))}
    if "ipp" in patient and "extension" in patient["ipp"]:
        found.add(patient["ipp"]["extension"])
    addresses = [patient.get("address", {})]
    addresses += [r.get("address", {}) for r in patient.get("legal_representatives", ())]
    for address in addresses:
        for key in ("street_name", "unit_id", "additional_locator", "post_box", "postal_code"):
            if key in address:
                found.add(address[key])
        found.update(address.get("lines", ()))
    for telecom in patient.get("telecom", ()):
        uri = telecom if isinstance(telecom, str) else telecom["value"]
        found.add(uri.split(":", 1)[1])
    # Short tokens ("A", "DE") would match innocent words; they identify nobody on their own.
    return {s for s in found if len(s) >= 4}


def assert_no_patient_data(message: str, data: Data) -> None:
    leaked = sorted(s for s in patient_data(data) if s.lower() in message.lower())
    assert not leaked, f"message quotes patient data {leaked}: {message}"


@pytest.mark.parametrize(
    "leak",
    [
        "PAT-TROIS",
        "DOMINIQUE",
        "279035121518989",
        "1979-03-28",
        "28/03/1979",
        "avenue de Breteuil",
        "1234567890121",
        "+33647151010",
    ],
)
def test_the_patient_data_check_catches_a_leak(leak: str) -> None:
    with pytest.raises(AssertionError):
        assert_no_patient_data(f"$.patient: {leak} is wrong", sample("01-biochimie.json"))


def invalid(data: Data) -> InvalidReport:
    """The InvalidReport the data raises; its message is checked for patient data."""
    with pytest.raises(InvalidReport) as caught:
        report_from_mapping(data)
    error = caught.value
    assert error.code == "input.invalid"
    assert_no_patient_data(str(error), data)
    for problem in error.problems:
        assert_no_patient_data(problem.message, data)
    return error


def assert_problem(data: Data, field: str, rule: str) -> InvalidReport:
    error = invalid(data)
    found = [(p.field, p.rule) for p in error.problems]
    assert (field, rule) in found, f"expected {(field, rule)} among {found}"
    return error


# --- every sample loads ---------------------------------------------------------------------


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_loads(path: Path) -> None:
    report = load_report(path)
    assert report.chapters
    assert all(o.value is not None or o.status is ObservationStatus.ABORTED for o in report.observations())


def test_there_are_enough_samples() -> None:
    assert len(SAMPLE_FILES) >= 12


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_loads_from_bytes_and_mapping_alike(path: Path) -> None:
    raw = path.read_bytes()
    assert load_report(raw) == load_report(path)
    # The mapping path reads JSON floats as floats; the samples write decimals as strings, so both agree.
    assert report_from_mapping(json.loads(raw)) == load_report(path)


# --- the samples are realistic and consistent ------------------------------------------------


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    return {path.name: load_report(path) for path in SAMPLE_FILES}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_identities_are_fictitious_and_consistent(path: Path) -> None:
    report = load_report(path)
    patient = report.patient
    assert report.laboratory.oid.startswith("1.2.250.1.999.")
    if patient.ins is None:
        assert patient.identity_status is not IdentityStatus.QUALIFIED
        return
    ins = patient.ins.matricule
    assert patient.ins.oid == TEST_INS_OID, "samples use the INS-NIR de test authority only"
    assert check_ins_matricule(ins) is None
    assert patient.birth_date is not None and patient.birthplace_code is not None
    # The matricule repeats the traits: sex, year and month of birth, place of birth.
    assert ins[0] == {"M": "1", "F": "2"}[patient.sex.value]
    assert ins[1:5] == patient.birth_date.strftime("%y%m")
    assert ins[5:10] == patient.birthplace_code


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_professionals_and_codes_are_well_formed(path: Path) -> None:
    data = sample(path.name)
    report = load_report(path)
    professionals = [report.biologist, report.prescriber, *report.copy_recipients]
    professionals += [lab.biologist for lab in report.executing_laboratories if lab.biologist]
    for professional in professionals:
        assert check_rpps(professional.rpps) is None
        assert professional.specialty is not None, "every sample gives the specialty"
        if professional.mssante:
            assert professional.mssante.endswith(".mssante.fr")
    for lab_finess in [report.laboratory.finess, *(lab.finess for lab in report.executing_laboratories)]:
        assert check_finess(lab_finess) is None
    for observation in observation_dicts(data):
        if "loinc" in observation:
            assert check_loinc(observation["loinc"]) is None
            assert observation.get("loinc_display"), "a LOINC code comes with its French display name"
        unit = observation.get("value", {}).get("unit")
        if unit:
            assert check_ucum(unit) is None


def test_sample_document_ids_are_distinct(reports: dict[str, Report]) -> None:
    ids = [r.document.id for r in reports.values()]
    assert None not in ids
    assert len(set(ids)) == len(ids)
    # Only versions of one report share a set id.
    by_set: dict[str | None, list[Report]] = {}
    for report in reports.values():
        by_set.setdefault(report.document.set_id, []).append(report)
    for versions in by_set.values():
        assert sorted(r.document.version for r in versions) == list(range(1, len(versions) + 1))


def _observations_with_specimens(report: Report) -> Iterator[tuple[Observation, tuple[str, ...]]]:
    for chapter in report.chapters:
        for battery in chapter.batteries:
            for observation in battery.observations:
                yield observation, battery.specimens
        for isolate in chapter.isolates:
            for observation in (*isolate.observations, *isolate.antibiogram):
                yield observation, isolate.specimens


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_chronology(path: Path) -> None:
    report = load_report(path)
    created = report.document.created_at
    assert created is not None and created >= report.validated_at
    collected = {s.key: s.collected_at for s in report.specimens}
    for specimen in report.specimens:
        assert specimen.received_at is not None and specimen.received_at >= specimen.collected_at
        assert report.encounter.start <= specimen.collected_at
        if report.prescribed_at:
            assert report.prescribed_at <= specimen.collected_at
    for observation, specimens in _observations_with_specimens(report):
        assert observation.time <= report.validated_at, observation.label
        assert specimens, f"{observation.label}: every result names its specimen"
        assert all(observation.time >= collected[key] for key in specimens), observation.label
        assert all(p.time < min(collected.values()) for p in observation.previous)
    for lab in report.executing_laboratories:
        assert min(collected.values()) <= lab.performed_at <= report.validated_at


_ABOVE = {"H", "HH", "HU", "A", "AA", "POS"}
_BELOW = {"L", "LL", "LU", "A", "AA"}
_WITHIN = {"N", "NEG", "NR"}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_interpretations_agree_with_reference_ranges(path: Path) -> None:
    for observation in load_report(path).observations():
        value, ranges = observation.value, observation.reference_range
        if not isinstance(value, Quantity) or ranges is None or observation.interpretation is None:
            continue
        flag = observation.interpretation.code
        if ranges.low is not None and value.value < ranges.low.value:
            assert flag in _BELOW, observation.label
        elif ranges.high is not None and value.value > ranges.high.value:
            assert flag in _ABOVE, observation.label
        elif ranges.low is not None or ranges.high is not None:
            assert flag in _WITHIN, observation.label


def test_the_samples_cover_the_format(reports: dict[str, Report]) -> None:
    """Each feature of the format is shown by at least one sample."""
    every = [o for r in reports.values() for o in r.observations()]
    values = [o.value for o in every]
    chapters = [c for r in reports.values() for c in r.chapters]
    documents = [r.document for r in reports.values()]
    features: dict[str, Callable[[], bool]] = {
        "ratio": lambda: any(isinstance(v, RatioValue) for v in values),
        "interval with both bounds": lambda: any(
            isinstance(v, IntervalValue) and v.low and v.high for v in values
        ),
        "comparator": lambda: any(isinstance(v, IntervalValue) and not (v.low and v.high) for v in values),
        "coded": lambda: any(isinstance(v, CodedValue) and v.code for v in values),
        "text": lambda: any(isinstance(v, TextValue) for v in values),
        "aborted": lambda: any(o.status is ObservationStatus.ABORTED for o in every),
        "previous": lambda: any(o.previous for o in every),
        "observation comment": lambda: any(o.comment for o in every),
        "chapter comment": lambda: any(c.comment for c in chapters),
        "conclusion": lambda: any(r.conclusion for r in reports.values()),
        "antibiogram": lambda: any(i.antibiogram for c in chapters for i in c.isolates),
        "subcontracting": lambda: any(b.performed_by for c in chapters for b in c.batteries),
        "copy recipient with MSSanté": lambda: any(
            p.mssante for r in reports.values() for p in r.copy_recipients
        ),
        "secret connection": lambda: any(d.secret_connection for d in documents),
        "invisible to legal representatives": lambda: any(
            d.masking.invisible_representants_legaux for d in documents
        ),
        "invisible to the patient": lambda: any(d.masking.invisible_patient for d in documents),
        "before validation": lambda: any(
            r.document.before_validation and r.encounter.kind.code == "EMER" for r in reports.values()
        ),
        "amendment": lambda: any(d.is_amendment for d in documents),
        "non-qualified identity": lambda: any(r.patient.ins is None for r in reports.values()),
        "minor": lambda: any(
            r.patient.is_minor_at(r.validated_at) and r.patient.legal_representatives
            for r in reports.values()
        ),
        "long report": lambda: any(
            len(list(r.observations())) >= 150 and len(r.chapters) >= 3 for r in reports.values()
        ),
    }
    missing = [name for name, shown in features.items() if not shown()]
    assert not missing


# --- model spot checks -------------------------------------------------------------------


def _find(report: Report, label: str) -> Observation:
    return next(o for o in report.observations() if o.label == label)


def test_values_keep_their_written_precision() -> None:
    report = load_report(SAMPLES / "02-hemogramme.json")
    leukocytes = _find(report, "Leucocytes")
    assert leukocytes.value == Quantity(Decimal("6.80"), "10*9/L")
    assert isinstance(leukocytes.value, Quantity) and str(leukocytes.value.value) == "6.80"
    assert leukocytes.reference_range is not None and leukocytes.reference_range.low is not None
    assert str(leukocytes.reference_range.low.value) == "4.00"
    assert leukocytes.reference_range.low.unit == "10*9/L"  # bounds take the value's unit


def test_json_numbers_are_read_as_exact_decimals() -> None:
    data = sample("01-biochimie.json")
    data["chapters"][0]["batteries"][0]["observations"][0]["value"]["value"] = 3.50
    report = load_report(json.dumps(data).encode())
    value = report.chapters[0].batteries[0].observations[0].value
    assert isinstance(value, Quantity) and value.value == Decimal("3.5")


def test_a_string_value_keeps_trailing_zeros() -> None:
    data = sample("01-biochimie.json")
    data["chapters"][0]["batteries"][0]["observations"][0]["value"]["value"] = "3.50"
    value = report_from_mapping(data).chapters[0].batteries[0].observations[0].value
    assert isinstance(value, Quantity) and str(value.value) == "3.50"


@pytest.mark.parametrize(
    ("label", "low", "high", "low_inclusive", "high_inclusive"),
    [
        ("Amoxicilline", "32", None, True, True),  # ">=32"
        ("Céfotaxime", None, "1", True, True),  # "<=1"
    ],
)
def test_a_comparator_becomes_an_interval(
    label: str, low: str | None, high: str | None, low_inclusive: bool, high_inclusive: bool
) -> None:
    value = _find(load_report(SAMPLES / "03-ecbu.json"), label).value
    assert value == IntervalValue(
        low=Quantity(Decimal(low), "mg/L") if low else None,
        high=Quantity(Decimal(high), "mg/L") if high else None,
        low_inclusive=low_inclusive,
        high_inclusive=high_inclusive,
    )


def test_a_strict_comparator_is_an_open_bound() -> None:
    value = _find(load_report(SAMPLES / "13-identite-provisoire.json"), "Paracétamol").value
    assert value == IntervalValue(high=Quantity(Decimal("5"), "mg/L"), high_inclusive=False)
    assert value.display() == "<\u00a05\u00a0mg/L"


def test_interval_value() -> None:
    value = _find(load_report(SAMPLES / "09-reanimation-long.json"), "Leucocytes (sédiment)").value
    per_field = "/[HPF]"  # per high-power field
    assert value == IntervalValue(
        low=Quantity(Decimal("5"), per_field), high=Quantity(Decimal("10"), per_field)
    )


def test_ratio_value() -> None:
    observation = _find(load_report(SAMPLES / "04-serologie.json"), "RPR (test non tréponémique), titre")
    assert observation.value == RatioValue(Decimal("1"), Decimal("32"))
    assert observation.value.display() == "1/32"
    assert observation.interpretation is not None and observation.interpretation.code == "POS"


def test_coded_value() -> None:
    report = load_report(SAMPLES / "04-serologie.json")
    observation = _find(report, "Anticorps anti-Treponema pallidum (IgG + IgM)")
    assert isinstance(observation.value, CodedValue)
    assert observation.value.text == "Positif"
    assert observation.value.code is not None
    assert (observation.value.code.code, observation.value.code.system) == ("10828004", SNOMED)
    assert observation.interpretation is not None
    assert (observation.interpretation.code, observation.interpretation.display) == ("POS", "Positif")
    assert observation.code is not None and observation.code.code == "47236-5"


def test_coded_value_without_code() -> None:
    value = _find(load_report(SAMPLES / "03-ecbu.json"), "Aspect").value
    assert value == CodedValue(text="Trouble")


def test_isolate_and_antibiogram() -> None:
    report = load_report(SAMPLES / "03-ecbu.json")
    isolate = report.chapters[0].isolates[0]
    assert (isolate.organism.code, isolate.organism.system) == ("112283007", SNOMED)
    assert isolate.specimens == ("URI1",)
    assert len(isolate.antibiogram) == 11
    assert {o.interpretation.code for o in isolate.antibiogram if o.interpretation} == {"S", "I", "R"}
    assert isolate.antibiogram[0].time == isolate.time  # results default to the isolate's time


def test_subcontracted_battery() -> None:
    report = load_report(SAMPLES / "06-sous-traitance.json")
    subcontracted = [b for c in report.chapters for b in c.batteries if b.performed_by]
    assert {b.performed_by for b in subcontracted} == {"BIOSPE-IDF"}
    lab = report.executing_laboratory("BIOSPE-IDF")
    assert lab.finess == "950004564"
    assert lab.biologist is not None and lab.biologist.specialty is not None
    assert lab.practice_setting is not None and lab.practice_setting.code == "AMBULATOIRE"


def test_aborted_result_has_no_value() -> None:
    observation = _find(load_report(SAMPLES / "13-identite-provisoire.json"), "Potassium")
    assert observation.status is ObservationStatus.ABORTED
    assert observation.value is None
    assert observation.comment


def test_provisional_identity() -> None:
    patient = load_report(SAMPLES / "13-identite-provisoire.json").patient
    assert patient.identity_status is IdentityStatus.PROVISIONAL
    assert patient.ins is None and patient.qualified_ins is None
    assert patient.ipp.extension == "800135501"


def test_minor_with_secret_connection() -> None:
    report = load_report(SAMPLES / "07-mineure-beta-hcg.json")
    assert report.patient.age_at(report.validated_at) == 15
    assert len(report.patient.legal_representatives) == 2
    assert report.document.secret_connection
    assert report.document.masking.codes() == ("INVISIBLE_REPRESENTANTS_LEGAUX",)


def test_masking_invisible_patient() -> None:
    document = load_report(SAMPLES / "11-invisible-patient-vih.json").document
    assert document.masking.codes() == ("INVISIBLE_PATIENT",)


def test_amended_report_replaces_the_first_version() -> None:
    v1 = load_report(SAMPLES / "08a-diabete-v1.json")
    v2 = load_report(SAMPLES / "08b-diabete-v2.json")
    assert v2.document.set_id == v1.document.set_id
    assert (v1.document.version, v2.document.version) == (1, 2)
    assert v2.document.replaces == v1.document.id and v2.document.is_amendment
    assert not v1.document.is_amendment
    label = "Hémoglobine glyquée (HbA1c)"
    assert _find(v1, label).value == Quantity(Decimal("8.9"), "%")
    assert _find(v2, label).value == Quantity(Decimal("6.9"), "%")
    assert v2.comments and "annule et remplace" in v2.comments[0]


def test_insi_traits_and_accented_used_names() -> None:
    patient = load_report(SAMPLES / "10-accents-apostrophes.json").patient
    assert patient.birth_family_name == "D'ALMEIDA-LEFEVRE"
    assert (patient.first_birth_given_name, patient.birth_given_names) == ("ZOE", "ZOE LAETITIA")
    assert (patient.display_family_name, patient.display_given_name) == ("D'Almeida-Lefèvre", "Zoé")
    assert patient.birthplace_code == "99139"  # born abroad: 99 + country code


def test_corsican_birthplace() -> None:
    patient = load_report(SAMPLES / "09-reanimation-long.json").patient
    assert patient.birthplace_code == "2B033"
    assert patient.ins is not None and patient.ins.matricule[5:7] == "2B"


def test_document_defaults_when_the_document_block_is_absent() -> None:
    data = sample("01-biochimie.json")
    del data["document"]
    document = report_from_mapping(data).document
    assert (document.id, document.set_id, document.version, document.replaces) == (None, None, 1, None)
    assert document.confidentiality.value == "N" and document.masking.codes() == ()


def test_encounter_start_defaults_to_the_first_collection() -> None:
    data = sample("02-hemogramme.json")
    del data["encounter"]
    report = report_from_mapping(data)
    assert report.encounter.kind.code == "AMB"
    assert report.encounter.start == datetime.fromisoformat("2024-02-06T08:05:00+01:00")


# --- bad inputs: every problem is named by its JSON path and rule ------------------------------

OBS = "$.chapters[0].batteries[0].observations[0]"
Mutation = Callable[[Data], object]


def _obs(data: Data) -> Data:
    observation: Data = data["chapters"][0]["batteries"][0]["observations"][0]
    return observation


BAD_INPUTS: list[tuple[str, str, Mutation, str, str]] = [
    # (id, sample, mutation, field, rule)
    (
        "ins-wrong-key",
        "01-biochimie.json",
        lambda d: d["patient"]["ins"].update(matricule="279035121518988"),
        "$.patient.ins.matricule",
        "ins.matricule",
    ),
    (
        "ins-bad-layout",
        "01-biochimie.json",
        lambda d: d["patient"]["ins"].update(matricule="2790351215189"),
        "$.patient.ins.matricule",
        "ins.matricule",
    ),
    (
        "ins-on-validated-identity",
        "01-biochimie.json",
        lambda d: d["patient"].update(identity_status="VALI"),
        "$.patient.ins",
        "ins.not-qualified",
    ),
    (
        "ins-on-provisional-identity",
        "01-biochimie.json",
        lambda d: d["patient"].update(identity_status="PROV"),
        "$.patient.ins",
        "ins.not-qualified",
    ),
    (
        "qualified-without-ins",
        "01-biochimie.json",
        lambda d: d["patient"].pop("ins"),
        "$.patient.ins",
        "ins.required",
    ),
    (
        "qualified-without-birthplace",
        "01-biochimie.json",
        lambda d: d["patient"].pop("birthplace_code"),
        "$.patient.birthplace_code",
        "ins.trait",
    ),
    (
        "qualified-without-birth-date",
        "01-biochimie.json",
        lambda d: d["patient"].pop("birth_date"),
        "$.patient.birth_date",
        "required",
    ),
    (
        "qualified-with-unknown-sex",
        "01-biochimie.json",
        lambda d: d["patient"].update(sex="U"),
        "$.patient.sex",
        "ins.trait",
    ),
    (
        "trait-lowercase",
        "01-biochimie.json",
        lambda d: d["patient"].update(birth_family_name="Pat-Trois"),
        "$.patient.birth_family_name",
        "ins.trait",
    ),
    (
        "trait-accent",
        "01-biochimie.json",
        lambda d: d["patient"].update(birth_given_names="DOMINIQUE MARIE-LOUÏSE"),
        "$.patient.birth_given_names",
        "ins.trait",
    ),
    (
        "trait-accent-first-given-name",
        "10-accents-apostrophes.json",
        lambda d: d["patient"].update(first_birth_given_name="ZOÉ", birth_given_names="ZOÉ LAETITIA"),
        "$.patient.first_birth_given_name",
        "ins.trait",
    ),
    (
        "trait-leading-space",
        "10-accents-apostrophes.json",
        lambda d: d["patient"].update(birth_family_name=" D'ALMEIDA-LEFEVRE"),
        "$.patient.birth_family_name",
        "ins.trait",
    ),
    (
        "first-given-name-not-first",
        "01-biochimie.json",
        lambda d: d["patient"].update(first_birth_given_name="MARIE-LOUISE"),
        "$.patient.first_birth_given_name",
        "ins.trait",
    ),
    (
        "birthplace-malformed",
        "01-biochimie.json",
        lambda d: d["patient"].update(birthplace_code="5121"),
        "$.patient.birthplace_code",
        "birthplace",
    ),
    (
        "birth-date-in-the-future",
        "01-biochimie.json",
        lambda d: d["patient"].update(birth_date="2025-01-01"),
        "$.patient.birth_date",
        "birth-date.future",
    ),
    (
        "loinc-malformed",
        "01-biochimie.json",
        lambda d: _obs(d).update(loinc="14749"),
        f"{OBS}.loinc",
        "loinc",
    ),
    (
        "loinc-check-digit",
        "01-biochimie.json",
        lambda d: _obs(d).update(loinc="14749-5"),
        f"{OBS}.loinc",
        "loinc",
    ),
    (
        "chapter-loinc-check-digit",
        "01-biochimie.json",
        lambda d: d["chapters"][0].update(code="18719-4"),
        "$.chapters[0].code",
        "loinc",
    ),
    ("missing-biologist", "01-biochimie.json", lambda d: d.pop("biologist"), "$.biologist", "required"),
    (
        "ucum-unknown-unit",
        "01-biochimie.json",
        lambda d: _obs(d)["value"].update(unit="mmoll"),
        f"{OBS}.value.unit",
        "ucum",
    ),
    (
        "ucum-french-unit",
        "01-biochimie.json",
        lambda d: _obs(d)["value"].update(unit="µmol/l"),
        f"{OBS}.value.unit",
        "ucum",
    ),
    (
        "ucum-reference-range-unit",
        "01-biochimie.json",
        lambda d: _obs(d)["reference_range"].update(unit="xyz"),
        f"{OBS}.reference_range.unit",
        "ucum",
    ),
    ("chapters-empty", "01-biochimie.json", lambda d: d.update(chapters=[]), "$.chapters", "minItems"),
    (
        "chapter-without-batteries",
        "01-biochimie.json",
        lambda d: d["chapters"][0].pop("batteries"),
        "$.chapters[0]",
        "anyOf",
    ),
    (
        "chapter-with-empty-batteries",
        "01-biochimie.json",
        lambda d: d["chapters"][0].update(batteries=[]),
        "$.chapters[0]",
        "chapter.empty",
    ),
    (
        "isolate-without-results",
        "03-ecbu.json",
        lambda d: (
            d["chapters"][0]["isolates"][0].pop("observations"),
            d["chapters"][0]["isolates"][0].pop("antibiogram"),
        ),
        "$.chapters[0].isolates[0]",
        "isolate.empty",
    ),
    (
        "organism-not-snomed",
        "03-ecbu.json",
        lambda d: d["chapters"][0]["isolates"][0]["organism"].update(system="2.16.840.1.113883.3.9471"),
        "$.chapters[0].isolates[0].organism.system",
        "snomed",
    ),
    (
        "completed-without-value",
        "01-biochimie.json",
        lambda d: _obs(d).pop("value"),
        f"{OBS}.value",
        "required",
    ),
    (
        "unknown-interpretation",
        "01-biochimie.json",
        lambda d: _obs(d).update(interpretation="ZZ"),
        f"{OBS}.interpretation",
        "value-set.interpretation",
    ),
    (
        "unknown-specialty",
        "01-biochimie.json",
        lambda d: d["prescriber"].update(specialty="SM26"),
        "$.prescriber.specialty",
        "value-set.specialty",
    ),
    (
        "unknown-specimen-type",
        "01-biochimie.json",
        lambda d: d["specimens"][0].update(type="SERUM"),
        "$.specimens[0].type",
        "value-set.specimen_type",
    ),
    (
        "rpps-bad-key",
        "01-biochimie.json",
        lambda d: d["biologist"].update(rpps="10100012343"),
        "$.biologist.rpps",
        "rpps",
    ),
    (
        "rpps-copy-recipient",
        "02-hemogramme.json",
        lambda d: d["copy_recipients"][0].update(rpps="1010001234"),
        "$.copy_recipients[0].rpps",
        "rpps",
    ),
    (
        "finess-bad-key",
        "01-biochimie.json",
        lambda d: d["laboratory"].update(finess="920000016"),
        "$.laboratory.finess",
        "finess",
    ),
    (
        "finess-executing-lab",
        "06-sous-traitance.json",
        lambda d: d["executing_laboratories"][0].update(finess="950004565"),
        "$.executing_laboratories[0].finess",
        "finess",
    ),
    (
        "unknown-specimen",
        "01-biochimie.json",
        lambda d: d["chapters"][0]["batteries"][0].update(specimens=["S9"]),
        "$.chapters[0].batteries[0].specimens[0]",
        "reference",
    ),
    (
        "unknown-performed-by",
        "06-sous-traitance.json",
        lambda d: d["chapters"][1]["batteries"][0].update(performed_by="BIOSPE-PARIS"),
        "$.chapters[1].batteries[0].performed_by",
        "reference",
    ),
    (
        "performed-by-without-executing-labs",
        "06-sous-traitance.json",
        lambda d: d.pop("executing_laboratories"),
        "$.chapters[1].batteries[0].performed_by",
        "reference",
    ),
    (
        "duplicate-specimen-id",
        "01-biochimie.json",
        lambda d: d["specimens"][1].update(id="S1"),
        "$.specimens[1].id",
        "duplicate",
    ),
    (
        "version-2-without-replaces",
        "01-biochimie.json",
        lambda d: d["document"].update(version=2),
        "$.document.replaces",
        "amendment",
    ),
    (
        "version-2-without-set-id",
        "08b-diabete-v2.json",
        lambda d: d["document"].pop("set_id"),
        "$.document.set_id",
        "amendment",
    ),
    (
        "replaces-on-version-1",
        "08b-diabete-v2.json",
        lambda d: d["document"].update(version=1),
        "$.document.version",
        "amendment",
    ),
    (
        "replaces-itself",
        "08b-diabete-v2.json",
        lambda d: d["document"].update(replaces=d["document"]["id"]),
        "$.document.replaces",
        "amendment",
    ),
    (
        "version-0",
        "01-biochimie.json",
        lambda d: d["document"].update(version=0),
        "$.document.version",
        "minimum",
    ),
    (
        "datetime-without-offset",
        "01-biochimie.json",
        lambda d: d.update(validated_at="2024-01-04T16:05:00"),
        "$.validated_at",
        "format",
    ),
    (
        "datetime-date-only",
        "01-biochimie.json",
        lambda d: d["specimens"][0].update(collected_at="2024-01-04"),
        "$.specimens[0].collected_at",
        "format",
    ),
    (
        "datetime-impossible",
        "01-biochimie.json",
        lambda d: d.update(validated_at="2024-02-30T16:05:00+01:00"),
        "$.validated_at",
        "datetime",
    ),
    (
        "invalid-date",
        "01-biochimie.json",
        lambda d: d["patient"].update(birth_date="1979-02-30"),
        "$.patient.birth_date",
        "format",
    ),
    (
        "date-in-french-order",
        "01-biochimie.json",
        lambda d: d["patient"].update(birth_date="28/03/1979"),
        "$.patient.birth_date",
        "format",
    ),
    (
        "created-before-validated",
        "01-biochimie.json",
        lambda d: d["document"].update(created_at="2024-01-04T16:00:00+01:00"),
        "$.document.created_at",
        "chronology",
    ),
    (
        "received-before-collected",
        "01-biochimie.json",
        lambda d: d["specimens"][0].update(received_at="2024-01-04T07:00:00+01:00"),
        "$.specimens[0].received_at",
        "chronology",
    ),
    (
        "secret-connection-for-an-adult",
        "01-biochimie.json",
        lambda d: d["document"].update(secret_connection=True),
        "$.document.secret_connection",
        "secret-connection",
    ),
    ("wrong-format", "01-biochimie.json", lambda d: d.update(format="crbio.report/2"), "$.format", "format"),
    ("missing-format", "01-biochimie.json", lambda d: d.pop("format"), "$.format", "format"),
    (
        "unknown-field",
        "01-biochimie.json",
        lambda d: d.update(validated_on=d.pop("validated_at")),
        "$.validated_on",
        "unknown-field",
    ),
    (
        "unknown-field-in-patient",
        "01-biochimie.json",
        lambda d: d["patient"].update(birth_familly_name="PAT-TROIS"),
        "$.patient.birth_familly_name",
        "unknown-field",
    ),
    (
        "unknown-field-in-value",
        "01-biochimie.json",
        lambda d: _obs(d)["value"].update(unti="mmol/L"),
        f"{OBS}.value.unti",
        "unknown-field",
    ),
    (
        "unknown-value-type",
        "01-biochimie.json",
        lambda d: _obs(d)["value"].update(type="number"),
        f"{OBS}.value.type",
        "enum",
    ),
    (
        "decimal-with-comma",
        "01-biochimie.json",
        lambda d: _obs(d)["value"].update(value="4,89"),
        f"{OBS}.value.value",
        "oneOf",
    ),
    (
        "interval-without-bounds",
        "09-reanimation-long.json",
        lambda d: d["chapters"][4]["batteries"][0]["observations"][0].update(value={"type": "interval"}),
        "$.chapters[4].batteries[0].observations[0].value",
        "anyOf",
    ),
    (
        "ratio-over-zero",
        "04-serologie.json",
        lambda d: d["chapters"][0]["batteries"][0]["observations"][2]["value"].update(denominator="0"),
        "$.chapters[0].batteries[0].observations[2].value.denominator",
        "ratio",
    ),
    (
        "coded-value-code-without-system",
        "04-serologie.json",
        lambda d: d["chapters"][0]["batteries"][0]["observations"][0]["value"].pop("system"),
        "$.chapters[0].batteries[0].observations[0].value",
        "dependentRequired",
    ),
    ("observation-without-code", "01-biochimie.json", lambda d: _obs(d).pop("loinc"), OBS, "anyOf"),
    (
        "oid-leading-zero",
        "01-biochimie.json",
        lambda d: d["laboratory"].update(oid="1.2.250.01.999"),
        "$.laboratory.oid",
        "pattern",
    ),
    (
        "telecom-not-a-uri",
        "01-biochimie.json",
        lambda d: d["laboratory"].update(telecom=["01 74 58 96 07"]),
        "$.laboratory.telecom[0]",
        "oneOf",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "field", "rule"),
    [(b[1], b[2], b[3], b[4]) for b in BAD_INPUTS],
    ids=[b[0] for b in BAD_INPUTS],
)
def test_bad_input(name: str, mutate: Mutation, field: str, rule: str) -> None:
    data = sample(name)
    mutate(data)
    assert_problem(data, field, rule)


def test_a_single_mistake_gives_a_single_problem() -> None:
    data = sample("01-biochimie.json")
    data["patient"]["ins"]["matricule"] = "279035121518988"
    error = invalid(data)
    assert [(p.field, p.rule) for p in error.problems] == [("$.patient.ins.matricule", "ins.matricule")]


def test_every_rule_problem_is_reported_at_once() -> None:
    data = sample("01-biochimie.json")
    data["patient"]["ins"]["matricule"] = "279035121518988"
    data["biologist"]["rpps"] = "10100012343"
    _obs(data)["loinc"] = "14749-5"
    error = invalid(data)
    fields = {p.field for p in error.problems}
    assert fields == {"$.patient.ins.matricule", "$.biologist.rpps", f"{OBS}.loinc"}
    assert error.fields == [p.field for p in error.problems]
    assert error.document_id == data["document"]["id"]


def test_schema_problems_come_in_document_order() -> None:
    data = sample("01-biochimie.json")
    data["chapters"][0]["batteries"][2]["observations"][1]["value"]["unit"] = 7
    data["chapters"][0]["batteries"][0]["observations"][0]["value"]["unit"] = 7
    data["laboratory"]["name"] = ""
    fields = [p.field for p in invalid(data).problems]
    assert fields == [
        "$.laboratory.name",
        f"{OBS}.value.unit",
        "$.chapters[0].batteries[2].observations[1].value.unit",
    ]


def test_the_matricule_in_error_is_not_quoted() -> None:
    data = sample("01-biochimie.json")
    data["patient"]["ins"]["matricule"] = "279035121518988"
    error = invalid(data)
    assert "279035121518988" not in str(error)
    assert "[ins.matricule]" in str(error)


def test_a_report_that_is_not_an_object() -> None:
    with pytest.raises(InvalidReport) as caught:
        load_report(b"[1, 2, 3]")
    assert [(p.field, p.rule) for p in caught.value.problems] == [("$", "type")]


# --- bad bytes and files ------------------------------------------------------------------


def test_not_json() -> None:
    raw = (SAMPLES / "01-biochimie.json").read_bytes()[:-40]  # a truncated file
    with pytest.raises(InputError) as caught:
        load_report(raw)
    assert caught.value.code == "input.not-json"
    assert not isinstance(caught.value, InvalidReport)
    assert_no_patient_data(str(caught.value), sample("01-biochimie.json"))


@pytest.mark.parametrize("raw", [b"", b"<ClinicalDocument/>", b"{'format': 'crbio.report/1'}", b'{"a": }'])
def test_other_non_json_bytes(raw: bytes) -> None:
    with pytest.raises(InputError) as caught:
        load_report(raw)
    assert caught.value.code == "input.not-json"
    assert_no_patient_data(str(caught.value), sample("01-biochimie.json"))


def test_not_utf8() -> None:
    # The sample written in Latin-1, as an old SGL export would be.
    raw = (SAMPLES / "01-biochimie.json").read_text("utf-8").encode("latin-1")
    with pytest.raises(InputError) as caught:
        load_report(raw)
    assert caught.value.code == "input.encoding"
    assert_no_patient_data(str(caught.value), sample("01-biochimie.json"))


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "with-bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + (SAMPLES / "10-accents-apostrophes.json").read_bytes())
    report = load_report(path)
    assert report.patient.used_given_name == "Zoé"
    assert report == load_report(SAMPLES / "10-accents-apostrophes.json")


def test_utf16_is_refused() -> None:
    raw = (SAMPLES / "01-biochimie.json").read_text("utf-8").encode("utf-16")
    with pytest.raises(InputError) as caught:
        load_report(raw)
    assert caught.value.code == "input.encoding"


def test_file_too_large(tmp_path: Path) -> None:
    # A sparse file: its size is above the limit without writing 64 MiB to disk.
    path = tmp_path / "huge.json"
    with path.open("wb") as f:
        f.truncate(json_report.MAX_BYTES + 1)
    with pytest.raises(InputError) as caught:
        load_report(path)
    assert caught.value.code == "input.too-large"
    assert_no_patient_data(str(caught.value), sample("01-biochimie.json"))


def test_bytes_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = (SAMPLES / "01-biochimie.json").read_bytes()
    monkeypatch.setattr(json_report, "MAX_BYTES", len(raw) - 1)
    with pytest.raises(InputError) as caught:
        load_report(raw)
    assert caught.value.code == "input.too-large"
    assert_no_patient_data(str(caught.value), sample("01-biochimie.json"))


def test_a_file_at_the_limit_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    path = SAMPLES / "01-biochimie.json"
    monkeypatch.setattr(json_report, "MAX_BYTES", path.stat().st_size)
    assert load_report(path).patient.birth_family_name == "PAT-TROIS"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_report(tmp_path / "absent.json")
    assert caught.value.code == "input.unreadable"


def test_a_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_report(tmp_path)
    assert caught.value.code == "input.unreadable"


def test_path_may_be_a_string() -> None:
    assert load_report(os.fspath(SAMPLES / "01-biochimie.json")).patient.birth_date == date(1979, 3, 28)


@pytest.mark.parametrize(
    ("field", "mutate"),
    [
        ("$.validated_at", lambda d: d.update(validated_at="2024-02-30T16:05:00+01:00")),
        ("$.document.created_at", lambda d: d["document"].update(created_at="2024-01-04T25:10:00+01:00")),
        (
            "$.specimens[0].collected_at",
            lambda d: d["specimens"][0].update(collected_at="2024-01-32T07:35:00+01:00"),
        ),
    ],
)
def test_an_impossible_date_time_gives_one_problem(field: str, mutate: Mutation) -> None:
    # The reader goes on with a stand-in time; that must not raise chronology or birth-date problems too.
    data = sample("01-biochimie.json")
    mutate(data)
    assert [(p.field, p.rule) for p in invalid(data).problems] == [(field, "datetime")]


def test_what_the_volet_requires_of_the_biologist_and_a_subcontractor_is_required() -> None:
    # Without them the documents pass the XSD but not the CI-SIS schematrons.
    data = sample("06-sous-traitance.json")
    del data["biologist"]["specialty"]
    assert_problem(data, "$.biologist.specialty", "required")
    data = sample("06-sous-traitance.json")
    del data["executing_laboratories"][0]["practice_setting"]
    assert_problem(data, "$.executing_laboratories[0].practice_setting", "required")
