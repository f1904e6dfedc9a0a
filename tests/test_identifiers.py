"""National identifiers (INS, RPPS, FINESS, OIDs) and code systems (LOINC, UCUM, ANS value sets)."""

from __future__ import annotations

import pytest

from crbio.codes import LOINC_OID, check_loinc, check_ucum, lookup, value_set
from crbio.identifiers import (
    FINESS_OID,
    INS_OIDS,
    NATIONAL_PS_OID,
    check_finess,
    check_ins_matricule,
    check_oid,
    check_rpps,
    finess_identifier,
    ins_key,
    rpps_identifier,
)

# --- INS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matricule", "key"),
    [
        ("279035121518989", 89),  # ANS test patient PAT-TROIS Dominique (INS-NIR de test)
        ("277010115400329", 29),
        ("253072A07300443", 43),  # Corsica: 2A counts as 19 (python-stdnum doctest)
        ("253072B07300470", 70),  # Corsica: 2B counts as 18
    ],
)
def test_ins_key_of_documented_examples(matricule: str, key: int) -> None:
    assert ins_key(matricule[:13]) == key
    assert check_ins_matricule(matricule) is None


def test_ins_key_is_97_minus_the_number_mod_97() -> None:
    assert ins_key("1000000000000") == 97 - 1000000000000 % 97


def test_ins_key_reads_lowercase_corsica_codes_like_uppercase() -> None:
    # The key is a property of the number; only the matricule layout check insists on capitals.
    assert ins_key("253072a073004") == ins_key("253072A073004") == 43


@pytest.mark.parametrize(
    "matricule",
    [
        "279035121518988",  # key off by one
        "279035121518998",  # two digits swapped in the key
        "279035121581989",  # two digits swapped in the order number: the key no longer matches
        "253072A07300470",  # the 2B key on a 2A number
        "253072B07300443",  # and the other way round
    ],
)
def test_ins_wrong_key(matricule: str) -> None:
    reason = check_ins_matricule(matricule)
    assert reason is not None and "key" in reason


@pytest.mark.parametrize(
    "matricule",
    [
        "",
        "27903512151898",  # 14 characters
        "2790351215189890",  # 16 characters
        "27903512151898A",  # a letter in the key
        "253072a07300443",  # Corsica in lowercase
        "253072C07300443",  # neither 2A nor 2B
        "2530A2007300443",  # a letter outside the département
        "279 035 121 518 989",  # spaces are a display form, not the matricule
        "２７９０３５１２１５１８９８９",  # full-width digits
    ],
)
def test_ins_bad_layout(matricule: str) -> None:
    reason = check_ins_matricule(matricule)
    assert reason is not None and "15 characters" in reason


def test_ins_messages_do_not_quote_the_matricule() -> None:
    for matricule in ("279035121518988", "27903512151898"):
        reason = check_ins_matricule(matricule)
        assert reason is not None and matricule not in reason


def test_ins_assigning_authorities() -> None:
    assert INS_OIDS["1.2.250.1.213.1.4.8"] == "INS-NIR"
    assert INS_OIDS["1.2.250.1.213.1.4.9"] == "INS-NIA"
    assert INS_OIDS["1.2.250.1.213.1.4.10"] == "INS-NIR de test"
    assert INS_OIDS["1.2.250.1.213.1.4.11"] == "INS-NIR de démonstration"


# --- OIDs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "oid",
    [
        "1.2.250.1.213.1.4.10",
        "2.16.840.1.113883.6.1",
        "1.2.250.1.999.1.1.2024.1001.1",
        "0.0",
        "2.25.329800735698586629295641978511506172918",  # a UUID-derived OID, 43 characters
        "1." + "1" * 62,  # exactly 64 characters
    ],
)
def test_valid_oids(oid: str) -> None:
    assert check_oid(oid) is None


@pytest.mark.parametrize(
    "oid",
    [
        "",
        "1",  # a single arc
        "3.1",  # the first arc is 0, 1 or 2
        "1.02.3",  # leading zero
        "01.2.3",
        "1.2.250.1.0213",
        "1..2",
        "1.2.",
        ".1.2",
        "1.2.a",
        "1.2 .3",
        "urn:oid:1.2.3",
    ],
)
def test_malformed_oids(oid: str) -> None:
    reason = check_oid(oid)
    assert reason is not None and "not an OID" in reason


def test_oid_longer_than_64_characters() -> None:
    oid = "1." + "1" * 63
    assert len(oid) == 65
    reason = check_oid(oid)
    assert reason is not None and "64" in reason


# --- RPPS and FINESS ----------------------------------------------------------------------


@pytest.mark.parametrize("rpps", ["10100012342", "10100023455", "10003456786", "10999999997"])
def test_valid_rpps(rpps: str) -> None:
    assert check_rpps(rpps) is None


@pytest.mark.parametrize(
    ("rpps", "why"),
    [
        ("10100012343", "Luhn"),
        ("10100012324", "Luhn"),  # two digits swapped
        ("1010001234", "11 digits"),
        ("101000123420", "11 digits"),
        ("1010001234A", "11 digits"),
        ("810100012342", "11 digits"),  # the national identifier (8 + RPPS) is not an RPPS
        ("", "11 digits"),
    ],
)
def test_invalid_rpps(rpps: str, why: str) -> None:
    reason = check_rpps(rpps)
    assert reason is not None and why in reason


@pytest.mark.parametrize("finess", ["920000015", "750712184", "220001234", "2A0001234", "2B0009876"])
def test_valid_finess(finess: str) -> None:
    # Corsican numbers (2A/2B): the key rule is not published, only the layout is checked.
    assert check_finess(finess) is None


@pytest.mark.parametrize(
    ("finess", "why"),
    [
        ("920000016", "Luhn"),
        ("920000051", "Luhn"),
        ("92000001", "9 characters"),
        ("9200000150", "9 characters"),
        ("2C0001234", "9 characters"),
        ("2a0001234", "9 characters"),
        ("92000001A", "9 characters"),
        ("", "9 characters"),
    ],
)
def test_invalid_finess(finess: str, why: str) -> None:
    reason = check_finess(finess)
    assert reason is not None and why in reason


def test_national_identifiers_carry_their_prefix() -> None:
    assert rpps_identifier("10100012342") == "810100012342"
    assert finess_identifier("920000015") == "1920000015"
    assert NATIONAL_PS_OID == "1.2.250.1.71.4.2.1"
    assert FINESS_OID == "1.2.250.1.71.4.2.2"


# --- LOINC --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "2345-7",  # Glucose [Masse/Volume] Sérum/Plasma
        "14749-6",  # Glucose [Moles/Volume] Sérum/Plasma
        "718-7",  # Hémoglobine
        "6690-2",  # Leucocytes
        "18725-2",  # Microbiologie (chapter)
        "11502-2",  # CR d'examens biologiques (document type)
        "18862-3",  # Amoxicilline+clavulanate [Sensibilité]
        "20-8",  # Amoxicilline+clavulanate [Sensibilité] CMI
        "28-1",  # Ampicilline [Sensibilité] CMI
        "101792-0",  # seven-digit code
    ],
)
def test_valid_loinc(code: str) -> None:
    assert check_loinc(code) is None


@pytest.mark.parametrize("code", ["2345-8", "14749-9", "718-1", "18725-3", "20-9", "101792-1"])
def test_loinc_bad_check_digit(code: str) -> None:
    reason = check_loinc(code)
    assert reason is not None and "check digit" in reason


@pytest.mark.parametrize(
    "code",
    [
        "",
        "2345",
        "2345-",
        "-7",
        "2345-77",
        "02345-7",
        "2345_7",
        "2345 -7",
        " 2345-7",
        "ABC-1",
        "LP14559-6",
        "12345678-9",
        "2345-7\n",
    ],
)
def test_loinc_bad_syntax(code: str) -> None:
    reason = check_loinc(code)
    assert reason is not None and "not a LOINC code" in reason


def test_loinc_oid() -> None:
    assert LOINC_OID == "2.16.840.1.113883.6.1"


# --- UCUM ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    [
        "mmol/L",
        "umol/L",
        "10*9/L",
        "10*12/L",
        "[IU]/L",
        "m[IU]/L",
        "mL/min/{1.73_m2}",
        "%",
        "/mL",
        "ug/mL",
        "g/dL",
        "fL",
        "pg",
        "mm[Hg]",
        "[pH]",
        "{UFC}/mL",
        "{index}",
        "/[HPF]",
        "s",
        "1",
        "ug/L{FEU}",
    ],
)
def test_valid_ucum(unit: str) -> None:
    assert check_ucum(unit) is None


@pytest.mark.parametrize(
    "unit",
    ["mmoll", "xyz", "", " mmol/L", "mmol/L ", "µmol/L", "mmol / L", "UI/L", "mg/l/", "10*9/LL"],
)
def test_invalid_ucum(unit: str) -> None:
    assert check_ucum(unit) is not None


# --- ANS value sets -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "system", "display"),
    [
        ("interpretation", "H", "2.16.840.1.113883.5.83", "Anormalement haut"),
        ("interpretation", "POS", "2.16.840.1.113883.5.83", "Positif"),
        ("interpretation", "S", "2.16.840.1.113883.5.83", "Sensible"),
        ("specimen_type", "UR", "2.16.840.1.113883.18.311", "Urine"),
        ("specimen_type", "SER", "2.16.840.1.113883.18.311", "Sérum"),
        ("specialty", "G15_10/SM26", "1.2.250.1.213.1.1.4.5", "Médecin - Qualifié en Médecine Générale (SM)"),
        ("specialty", "G15_10/SM03", "1.2.250.1.213.1.1.4.5", "Médecin - Biologie médicale (SM)"),
        ("specialty", "G15_50", "1.2.250.1.213.1.1.4.5", "Sage-Femme"),
        ("facility_type", "SA25", "1.2.250.1.71.4.2.4", "Laboratoire de biologie médicale"),
        ("practice_setting", "AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire"),
        ("encounter", "EMER", "2.16.840.1.113883.5.4", "Passage aux urgences (établissement)"),
    ],
)
def test_value_set_lookup(name: str, code: str, system: str, display: str) -> None:
    found = lookup(name, code)
    assert found is not None
    assert (found.code, found.system, found.display) == (code, system, display)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("interpretation", "ZZ"),
        ("interpretation", "h"),
        ("specimen_type", "URINE"),
        ("specialty", "SM26"),
        ("encounter", ""),
    ],
)
def test_value_set_unknown_code(name: str, code: str) -> None:
    assert lookup(name, code) is None


@pytest.mark.parametrize(
    ("name", "oid"),
    [
        ("interpretation", "2.16.840.1.113883.1.11.78"),
        ("specialty", "1.2.250.1.213.1.1.5.461"),
        ("encounter", "1.2.250.1.213.1.1.5.589"),
    ],
)
def test_value_set_metadata(name: str, oid: str) -> None:
    table = value_set(name)
    assert table["oid"] == oid
    assert table["concepts"]


def test_unknown_value_set() -> None:
    with pytest.raises(KeyError):
        lookup("no-such-value-set", "X")
