"""The INS Datamatrix payload (ANS « Format datamatrix INS » v2.2) and its C40 symbol."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date

import ppf.datamatrix  # noqa: F401  (registers the datamatrix.* codecs)
import pytest
import zxingcpp
from PIL import Image

from crbio.documents.pdf import ins_datamatrix_payload
from crbio.documents.pdf.datamatrix import HEADER, QUIET_ZONE, symbol
from crbio.errors import BuildError
from crbio.model import IdentityStatus, Ins, InstanceIdentifier, Patient, Report, Sex

GS = "\x1d"
# The two payloads of the domain notes (§2.2), built by two independent implementations.
ANS_SAMPLE_PAYLOAD = (
    "IS010000000000000000000000S1279035121518989S21.2.250.1.213.1.4.10S3DOMINIQUE MARIE-LOUISE\x1dS4PAT-TROIS"
    "\x1dS5FS628-03-1979S751215"
)
PRODUCTION_OID_PAYLOAD = (
    "IS010000000000000000000000S1277010115400329S21.2.250.1.213.1.4.8\x1dS3SARAH-LOU ANNA\x1dS4GARCIA-HAMMADI"
    "\x1dS5FS621-01-1977"
)


def garcia_hammadi() -> Patient:
    """The second reference patient: production INS-NIR OID (19 characters), no birthplace."""
    return Patient(
        ipp=InstanceIdentifier("1.2.250.1.999.1.2", "42"),
        identity_status=IdentityStatus.QUALIFIED,
        birth_family_name="GARCIA-HAMMADI",
        first_birth_given_name="SARAH-LOU",
        birth_given_names="SARAH-LOU ANNA",
        sex=Sex.FEMALE,
        birth_date=date(1977, 1, 21),
        ins=Ins("277010115400329", "1.2.250.1.213.1.4.8"),
    )


@pytest.fixture
def sample_patient(sample_report: Callable[[str], Report]) -> Patient:
    return sample_report("01-biochimie.json").patient


def test_ans_sample_patient_payload(sample_patient: Patient) -> None:
    payload = ins_datamatrix_payload(sample_patient)
    assert payload == ANS_SAMPLE_PAYLOAD
    assert len(payload) == 124


def test_production_oid_payload() -> None:
    payload = ins_datamatrix_payload(garcia_hammadi())
    assert payload == PRODUCTION_OID_PAYLOAD
    assert len(payload) == 114


def test_header_is_is01_and_22_zeros(sample_patient: Patient) -> None:
    payload = ins_datamatrix_payload(sample_patient)
    assert payload is not None
    assert HEADER == "IS010000000000000000000000"
    assert payload.startswith(HEADER + "S1")


@pytest.mark.parametrize(
    ("oid", "separated"),
    [
        ("1.2.250.1.213.1.4.8", True),  # INS-NIR, 19 characters: below the maximum
        ("1.2.250.1.213.1.4.9", True),  # INS-NIA
        ("1.2.250.1.213.1.4.10", False),  # INS-NIR de test, 20 characters: at the maximum
        ("1.2.250.1.213.1.4.11", False),  # INS-NIR de démonstration
    ],
)
def test_gs_after_the_oid_only_when_shorter_than_20(
    sample_patient: Patient, oid: str, separated: bool
) -> None:
    patient = dataclasses.replace(sample_patient, ins=Ins("279035121518989", oid))
    payload = ins_datamatrix_payload(patient)
    assert payload is not None
    assert (f"S2{oid}{GS}S3" in payload) is separated
    assert (f"S2{oid}S3" in payload) is not separated


def test_no_gs_after_fixed_length_fields(sample_patient: Patient) -> None:
    payload = ins_datamatrix_payload(sample_patient)
    assert payload is not None
    assert "S1279035121518989S2" in payload  # S1: fixed 15
    assert "S5FS6" in payload  # S5: fixed 1
    assert "S628-03-1979S7" in payload  # S6: fixed 10


def test_names_at_their_maximum_length_take_no_gs(sample_patient: Patient) -> None:
    given = "A" * 100
    family = "B" * 100
    patient = dataclasses.replace(sample_patient, birth_given_names=given, birth_family_name=family)
    payload = ins_datamatrix_payload(patient)
    assert payload is not None
    assert f"S3{given}S4{family}S5F" in payload
    assert GS not in payload  # the test OID is 20 characters: no separator at all


def test_last_field_takes_no_gs(sample_patient: Patient) -> None:
    with_place = ins_datamatrix_payload(sample_patient)
    assert with_place is not None and with_place.endswith("S751215")
    without_place = ins_datamatrix_payload(dataclasses.replace(sample_patient, birthplace_code=None))
    assert without_place is not None and without_place.endswith("S628-03-1979")


def test_birth_date_is_zero_padded_with_hyphens(sample_patient: Patient) -> None:
    patient = dataclasses.replace(sample_patient, birth_date=date(2001, 2, 3))
    payload = ins_datamatrix_payload(patient)
    assert payload is not None
    assert "S603-02-2001" in payload


@pytest.mark.parametrize(
    "status", [IdentityStatus.PROVISIONAL, IdentityStatus.RETRIEVED, IdentityStatus.VALIDATED]
)
def test_no_payload_unless_the_identity_is_qualified(sample_patient: Patient, status: IdentityStatus) -> None:
    # Even with an INS at hand, only a qualified identity may carry it.
    assert ins_datamatrix_payload(dataclasses.replace(sample_patient, identity_status=status)) is None


def test_no_payload_without_ins(sample_patient: Patient) -> None:
    patient = dataclasses.replace(sample_patient, identity_status=IdentityStatus.PROVISIONAL, ins=None)
    assert ins_datamatrix_payload(patient) is None


@pytest.mark.parametrize(
    "change",
    [
        {"birth_date": None},
        {"sex": Sex.UNKNOWN},
        {"birth_family_name": "DUPONT-LEFÈVRE"},
        {"birth_given_names": "X" * 101},
        {"birthplace_code": "5121"},
    ],
)
def test_untransmissible_traits_raise_without_quoting_them(
    sample_patient: Patient, change: dict[str, object]
) -> None:
    patient = dataclasses.replace(sample_patient, **change)
    with pytest.raises(BuildError) as info:
        ins_datamatrix_payload(patient)
    assert info.value.code == "pdf.ins-datamatrix"
    assert "LEF" not in str(info.value) and "XXX" not in str(info.value)


@pytest.mark.parametrize("payload", [ANS_SAMPLE_PAYLOAD, PRODUCTION_OID_PAYLOAD])
def test_payload_is_c40_encoded_from_the_first_codeword(payload: str) -> None:
    # 230 latches to C40: the ANS validator rejects a header that is not C40-encoded.
    assert payload.encode("datamatrix.C40")[0] == 230


@pytest.mark.parametrize("payload", [ANS_SAMPLE_PAYLOAD, PRODUCTION_OID_PAYLOAD])
def test_symbol_is_square_and_decodes_to_the_payload(payload: str) -> None:
    sym = symbol(payload)
    assert sym.size == 40  # both reference payloads fit in 40 x 40 modules
    assert all(len(row) == sym.size for row in sym.rows)
    scale = 6
    side = (sym.size + 2 * QUIET_ZONE) * scale
    image = Image.new("L", (side, side), 255)
    for r, row in enumerate(sym.rows):
        for c, dark in enumerate(row):
            if dark:
                x, y = (c + QUIET_ZONE) * scale, (r + QUIET_ZONE) * scale
                image.paste(0, (x, y, x + scale, y + scale))
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.DataMatrix)
    assert [b.bytes.decode("ascii") for b in found] == [payload]


def test_oversized_payload_is_a_build_error() -> None:
    with pytest.raises(BuildError):
        symbol("A" * 3000)
