"""The HL7 v2.5 ORU^R01 of the CDA-in-HL7 volet, read back with python-hl7, and ACK reading."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hl7
import pytest
from hl7_fixtures import FLAGS, RECIPIENTS

from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.hl7v2 import FLAG_ORDER, build_oru, escape, parse_ack, read_ack
from crbio.dispatch.senders.base import SenderContext

OUTPUT = Path(__file__).resolve().parents[2] / "samples" / "output"
CONTEXT = SenderContext(
    laboratory_finess="920000015",
    laboratory_name="Laboratoire des Charmes",
    laboratory_oid="1.2.250.1.999.1",
    software_name="crbio",
    software_version="1.0",
)
SENT_AT = datetime(2024, 1, 4, 18, 30, 5, tzinfo=UTC)
DOCUMENT_CODE = "11502-2^CR d'examens biologiques^LN"


def n3(sample: str) -> bytes:
    return (OUTPUT / f"{sample}.n3.xml").read_bytes()


def make_job(
    cda: bytes,
    action: Action = Action.SUBMIT,
    *,
    metadata: Mapping[str, Any] | None = None,
    attempt: int = 1,
    document_id: str = "1.2.250.1.999.1.1.2024.1001.1",
) -> Job:
    data = (
        {"flags": FLAGS, "mssante_recipients": RECIPIENTS, "no_reply": False}
        if metadata is None
        else metadata
    )
    delivery = Delivery(
        Channel.HL7V2,
        action,
        Recipient(RecipientKind.SYSTEM, "pfi-chu"),
        document_id,
        1,
        None,
        {"confidentiality": ["N"], "secret_connection": False, **data},
    )
    return Job(delivery, attempt, cda, b"")


def build(job: Job, **kwargs: Any) -> str:
    options: dict[str, Any] = {
        "receiving_application": "PFI",
        "receiving_facility": "CHU_X",
        "sent_at": SENT_AT,
    }
    options.update(kwargs)
    return build_oru(job, CONTEXT, **options)


def field(segment: Any, number: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
    try:
        return str(segment.extract_field(1, number, repetition, component, subcomponent))
    except IndexError:
        return ""


def names(message: Any) -> list[str]:
    return [str(s[0][0]) for s in message]


def test_oru_of_a_report_with_an_ins() -> None:
    cda = n3("01-biochimie")
    job = make_job(cda, metadata={"flags": FLAGS, "mssante_recipients": RECIPIENTS, "no_reply": True})
    text = build(job, receiving_facility="CHU_X^1.2.250.1.999.42^ISO", processing_id="T")
    assert "\n" not in text and all(re.match(r"[A-Z][A-Z0-9]{2}\|", s) for s in text.split("\r"))
    message = hl7.parse(text)
    assert names(message) == [
        "MSH", "PID", "PV1", "ORC", "OBR", "OBX", "PRT", "PRT", "PRT",
        "OBX", "OBX", "OBX", "OBX", "OBX", "OBX", "OBX", "OBX", "NTE", "OBX", "OBX",
    ]  # fmt: skip

    msh = message.segment("MSH")
    assert str(msh[1]) == "|" and str(msh[2]) == "^~\\&"
    assert str(msh(3)) == "crbio"
    assert str(msh(4)) == "920000015^1.2.250.1.999.1^ISO"
    assert str(msh(5)) == "PFI" and str(msh(6)) == "CHU_X^1.2.250.1.999.42^ISO"
    assert str(msh(7)) == "20240104183005+0000"
    assert str(msh(9)) == "ORU^R01^ORU_R01"
    assert str(msh(10)) == job.control_id
    assert str(msh(11)) == "T" and str(msh(12)) == "2.5"
    assert str(msh(17)) == "FRA" and str(msh(18)) == "UNICODE UTF-8"
    assert str(msh(21)) == "2.1^CISIS_CDA_HL7_V2"

    pid = message.segment("PID")
    # PID-3 = the CDA patient ids: the IPP first, then the INS (test NIR OID here).
    assert str(pid(3)) == (
        "1234567890121^^^&1.2.250.1.999.1.2&ISO^PI"
        "~279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    )
    assert str(pid(5)) == "PAT-TROIS^DOMINIQUE^^^^^L"
    assert str(pid(7)) == "19790328" and str(pid(8)) == "F"
    assert str(pid(32)) == "VALI"

    pv1 = message.segment("PV1")
    assert str(pv1(2)) == "O"  # AMB
    assert str(pv1(44)) == "20240104073500+0100"
    assert str(message.segment("ORC")(1)) == "NW"
    obr = message.segment("OBR")
    assert str(obr(1)) == "1" and str(obr(4)) == DOCUMENT_CODE

    document = message.segments("OBX")[0]
    assert str(document(1)) == "1" and str(document(2)) == "ED" and str(document(3)) == DOCUMENT_CODE
    assert [field(document, 5, c) for c in (1, 2, 3, 4)] == ["", "TEXT", "XML", "Base64"]
    assert base64.b64decode(field(document, 5, 5), validate=True) == cda
    assert str(document(11)) == "F"

    sender, professional, patient = message.segments("PRT")
    assert str(sender(2)) == "UC" and str(sender(4)) == "SB^Send by^participation"
    assert (
        str(sender(5)) == "810100012342^CAMPARINI^Marcel^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    )
    assert str(sender(8)) == (
        "Laboratoire des Charmes^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^920000015"
    )
    assert str(professional(4)) == "RCT^Result Copies To^participation"
    assert field(professional, 5, 1) == "810100023455" and field(professional, 5, 13) == "IDNPS"
    assert field(professional, 5, 9, 2) == "1.2.250.1.71.4.2.1"
    assert str(professional(15)) == "^^X.400^jean.martin@test.mssante.fr"
    assert field(patient, 5, 1) == "279035121518989" and field(patient, 5, 13) == "INS"
    assert field(patient, 5, 9, 2) == "1.2.250.1.213.1.4.10"
    assert str(patient(15)) == "^^X.400^279035121518989@patient.mssante.fr"

    flags = message.segments("OBX")[1:]
    assert [field(s, 3, 1) for s in flags] == list(FLAG_ORDER)
    assert [str(s(1)) for s in flags] == [str(n) for n in range(2, 12)]
    for segment in flags:
        assert str(segment(2)) == "CE" and field(segment, 3, 3) == "MetaDMPMSS"
        assert str(segment(5)) == f"{FLAGS[field(segment, 3, 1)]}^^expandedYes-NoIndicator"
        assert str(segment(11)) == "F"
    raw_flag = text.split("\r")[9]
    expected = "OBX|2|CE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator"
    assert raw_flag == expected + "||||||F"
    # NTE-4 = FIN right after DESTMSSANTEPAT: the patient must not reply.
    segments = list(message)
    nte = names(message).index("NTE")
    assert field(segments[nte - 1], 3, 1) == "DESTMSSANTEPAT" and str(segments[nte](4)) == "FIN"


def test_oru_of_a_provisional_identity_has_no_ins() -> None:
    message = hl7.parse(build(make_job(n3("13-identite-provisoire"), metadata={"flags": FLAGS})))
    pid = message.segment("PID")
    assert str(pid(3)) == "800135501^^^&1.2.250.1.999.3.2&ISO^PI"
    assert "INS" not in str(pid(3)).split("^") and "1.2.250.1.213.1.4" not in str(pid(3))
    assert str(pid(5)) == "PAT-QUATORZE^ROMAIN^^^^^L"
    assert str(pid(7)) == "19680914" and str(pid(8)) == "M"
    assert field(pid, 32) == ""
    pv1 = message.segment("PV1")
    assert str(pv1(2)) == "I"  # IMP
    assert str(pv1(19)) == "SEJ-2024-021904^^^&1.2.250.1.999.3.4&ISO^VN"
    # No MSSanté recipient in the metadata: only the sender's PRT, and no NTE.
    assert [str(s(4)) for s in message.segments("PRT")] == ["SB^Send by^participation"]
    assert "NTE" not in names(message)
    assert str(message.segment("PRT")(5)).startswith("810100045672^LE GALL^Erwan^")


def test_emergency_encounter_is_patient_class_e() -> None:
    message = hl7.parse(build(make_job(n3("12-urgences-avant-validation"))))
    assert str(message.segment("PV1")(2)) == "E"


@pytest.mark.parametrize(
    ("sample", "action", "order_control", "status"),
    [
        ("08a-diabete-v1", Action.SUBMIT, "NW", "F"),
        ("08b-diabete-v2", Action.REPLACE, "RO", "C"),
        ("08b-diabete-v2", Action.DELETE, "CA", "D"),
    ],
)
def test_order_control_and_result_status_follow_the_action(
    sample: str, action: Action, order_control: str, status: str
) -> None:
    cda = n3(sample)
    message = hl7.parse(build(make_job(cda, action)))
    assert str(message.segment("ORC")(1)) == order_control
    document = message.segments("OBX")[0]
    assert str(document(11)) == status
    assert base64.b64decode(field(document, 5, 5)) == cda
    # The metadata OBX keep OBX-11 = F whatever the action.
    assert {str(s(11)) for s in message.segments("OBX")[1:]} == {"F"}


def test_control_id_is_the_same_on_every_attempt() -> None:
    cda = n3("01-biochimie")
    first = hl7.parse(build(make_job(cda, attempt=1)))
    second = hl7.parse(build(make_job(cda, attempt=3), sent_at=datetime(2024, 1, 5, tzinfo=UTC)))
    assert str(first.segment("MSH")(10)) == str(second.segment("MSH")(10)) == make_job(cda).control_id
    other = hl7.parse(build(make_job(cda, Action.DELETE)))
    assert str(other.segment("MSH")(10)) != str(first.segment("MSH")(10))


def test_delimiters_in_names_are_escaped() -> None:
    tricky = "A|B^C~D\\E&F"
    cda = n3("13-identite-provisoire").replace(
        b'<family qualifier="BR">PAT-QUATORZE</family>',
        b'<family qualifier="BR">A|B^C~D\\E&amp;F</family>',
    )
    assert cda != n3("13-identite-provisoire")
    context = SenderContext("920000015", "Labo A & B | C^D", "1.2.250.1.999.1")
    text = build_oru(
        make_job(cda), context, receiving_application="PFI", receiving_facility="CHU_X", sent_at=SENT_AT
    )
    pid_line = next(line for line in text.split("\r") if line.startswith("PID|"))
    assert "A\\F\\B\\S\\C\\R\\D\\E\\E\\T\\F" in pid_line
    message = hl7.parse(text)
    pid = message.segment("PID")
    assert field(pid, 5, 1) == tricky and field(pid, 5, 2) == "ROMAIN" and field(pid, 5, 7) == "L"
    assert str(pid(7)) == "19680914"  # the fields after PID-5 did not shift
    sender = message.segment("PRT")
    assert field(sender, 8, 1) == "Labo A & B | C^D" and field(sender, 8, 7) == "FINEG"
    assert escape("a\\b|c^d&e~f\rg") == "a\\E\\b\\F\\c\\S\\d\\T\\e\\R\\f\\X0D\\g"


def test_flags_come_out_in_the_volets_order_whatever_the_input_order() -> None:
    scrambled: dict[str, Any] = dict(reversed(list(FLAGS.items())))
    scrambled["DESTDMP"] = True  # booleans are read as Y/N too
    scrambled["ACK_RECEPTION"] = False
    message = hl7.parse(build(make_job(n3("01-biochimie"), metadata={"flags": scrambled})))
    flags = [(field(s, 3, 1), field(s, 5, 1)) for s in message.segments("OBX")[1:]]
    assert [code for code, _ in flags] == list(FLAG_ORDER)
    assert dict(flags)["DESTDMP"] == "Y" and dict(flags)["ACK_RECEPTION"] == "N"


@pytest.mark.parametrize(
    ("metadata", "options", "message"),
    [
        ({"flags": {"MASQUE_PS": "N", "SURPRISE": "Y"}}, {}, "unknown HL7 v2 metadata flag"),
        ({"flags": {"MASQUE_PS": "Oui"}}, {}, "must be Y or N"),
        ({"flags": FLAGS, "mssante_recipients": [{"kind": "professional", "address": ""}]}, {}, "no address"),
        ({"flags": FLAGS}, {"processing_id": "X"}, "processing id"),
    ],
)
def test_invalid_metadata_is_refused(metadata: dict[str, Any], options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(make_job(n3("01-biochimie"), metadata=metadata), **options)


ACK_HEAD = "MSH|^~\\&|PFI|CHU_X|crbio|LAB|20240104183006||ACK^R01^ACK|ACK0001|P|2.5|||||FRA|UNICODE UTF-8\r"


def test_parse_ack_accept() -> None:
    assert parse_ack(ACK_HEAD + "MSA|AA|abc123\r") == ("AA", "abc123", None)
    info = read_ack(ACK_HEAD.replace("\r", "\n") + "MSA|CA|abc123")
    assert (info.code, info.control_id, info.ack_control_id, info.errors) == ("CA", "abc123", "ACK0001", ())


def test_parse_ack_errors_keep_codes_and_locations_not_diagnostics() -> None:
    text = (
        ACK_HEAD
        + "MSA|AR|abc123\r"
        + "ERR||OBX^1^11|103^Table value not found^HL70357|E|||Patient DUPONT Jean 1790328|Call J. DUPONT\r"
        + "ERR||PID^1^3|101^Required field missing^HL70357|E\r"
    )
    code, control_id, error = parse_ack(text)
    assert (code, control_id) == ("AR", "abc123")
    assert error == "103 Table value not found at OBX^1^11 (E); 101 Required field missing at PID^1^3 (E)"
    assert "DUPONT" not in error
    assert [e.code for e in read_ack(text).errors] == ["103", "101"]


def test_parse_ack_older_err_and_msa_text() -> None:
    # HL7 v2.3 style ERR-1 (segment^sequence^field^code&text), and MSA-3 when there is no ERR.
    old = ACK_HEAD + "MSA|AE|x1\rERR|PID^1^3^101&Required field missing\r"
    assert parse_ack(old) == ("AE", "x1", "101 Required field missing at PID^1^3")
    assert parse_ack(ACK_HEAD + "MSA|AE|x1|Base occupée\r") == ("AE", "x1", "Base occupée")


@pytest.mark.parametrize("garbage", ["", "hello", "MSH|^~\\&|A|B\rPID|||1", "MSH|^~\\&|A\rMSA|"])
def test_parse_ack_refuses_what_is_not_an_ack(garbage: str) -> None:
    with pytest.raises(ValueError):
        parse_ack(garbage)
