"""Return reports: parsing hand-written DSN (RFC 3464) and MDN (RFC 8098), recording them in the journal."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from crbio.cli import main
from crbio.dispatch import (
    Acknowledgement,
    Action,
    Channel,
    Delivery,
    Outbox,
    Recipient,
    RecipientKind,
    Transmission,
)
from crbio.dispatch.header import read_header
from crbio.dispatch.plan import Plan
from crbio.dispatch.returns import (
    ParsedReport,
    ReportKind,
    ReportStatus,
    parse_report,
    record_report,
)
from crbio.errors import OutboxError

OUTPUT = ROOT / "samples" / "output"
INS = "279035121518989"
PATIENT = f"{INS}@patient.mssante.fr"
DOCTOR = "dr.prescripteur@hopital.mssante.fr"
LAB = "laboratoire@labo-charmes.mssante.fr"
UNKNOWN = "0123456789abcdef0123456789abcdef"


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode("utf-8") + b"\r\n"


def dsn(
    *,
    action: str = "delivered",
    status: str = "2.0.0",
    envid: str | None = None,
    recipient: str = DOCTOR,
    diagnostic: str = "smtp; 250 2.0.0 Ok: delivered to mailbox",
    returned_id: str | None = None,
    extra_headers: str = "",
    report_type: str = "delivery-status",
    part_type: str = "message/delivery-status",
) -> bytes:
    envelope = f"Original-Envelope-Id: {envid}\n" if envid else ""
    returned = (
        f"""--BOUNDARY
Content-Type: text/rfc822-headers

From: {LAB}
To: {recipient}
Subject: =?utf-8?q?XDM/1=2E0/DDM+CR_DUPONT_Jean?=
Message-ID: <{returned_id}@labo-charmes.mssante.fr>
"""
        if returned_id
        else ""
    )
    return crlf(f"""
From: MAILER-DAEMON@mx.hopital.mssante.fr
To: {LAB}
Subject: Delivery Status Notification
Date: Mon, 23 Nov 2026 11:12:30 +0100
Message-ID: <report-{action}-{envid or returned_id or "x"}@mx.hopital.mssante.fr>
{extra_headers}MIME-Version: 1.0
Content-Type: multipart/report; report-type={report_type};
 boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.hopital.mssante.fr.

--BOUNDARY
Content-Type: {part_type}

Reporting-MTA: dns; mx.hopital.mssante.fr
{envelope}Arrival-Date: Mon, 23 Nov 2026 11:10:00 +0100

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic}
Last-Attempt-Date: Mon, 23 Nov 2026 11:12:00 +0100

{returned}--BOUNDARY--
""")


def mdn(
    *,
    disposition: str = "automatic-action/MDN-sent-automatically; displayed",
    original: str | None = None,
    recipient: str = DOCTOR,
    extra_headers: str = "",
    date: str = "Mon, 23 Nov 2026 12:40:00 +0100",
) -> bytes:
    original_field = f"Original-Message-ID: <{original}@labo-charmes.mssante.fr>\n" if original else ""
    return crlf(f"""
From: {recipient}
To: {LAB}
Subject: =?utf-8?q?Accus=C3=A9_de_lecture?=
Date: {date}
Message-ID: <mdn-{disposition[-9:].replace(" ", "")}-{original}@hopital.mssante.fr>
{extra_headers}MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="B2"

--B2
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: 8bit

Le message a été affiché.

--B2
Content-Type: message/disposition-notification

Reporting-UA: hopital.mssante.fr; Webmail
Original-Recipient: rfc822;{recipient}
Final-Recipient: rfc822;{recipient}
{original_field}Disposition: {disposition}

--B2--
""")


# -- parsing ------------------------------------------------------------------------------------


def test_a_delivered_dsn_is_read_with_its_envelope_id() -> None:
    report = parse_report(dsn(envid="0A1B2C3D4E5F60718293A4B5C6D7E8F9"))
    assert report.status is ReportStatus.UNMATCHED and report.kind is ReportKind.DSN
    (entry,) = report.entries
    assert (entry.recipient, entry.action, entry.status) == (DOCTOR, "delivered", "2.0.0")
    assert entry.diagnostic == "250 2.0.0 Ok: delivered to mailbox"
    assert entry.reported_at is not None and entry.reported_at.isoformat() == "2026-11-23T10:12:00+00:00"
    assert not entry.failure
    assert report.references == (("envelope-id", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),)


def test_a_delayed_dsn() -> None:
    report = parse_report(
        dsn(action="delayed (will retry)", status="4.4.1 (connection timed out)", envid=UNKNOWN)
    )
    (entry,) = report.entries
    assert (entry.action, entry.status, entry.failure) == ("delayed", "4.4.1", False)


def test_a_failed_dsn_keeps_its_unfolded_diagnostic() -> None:
    report = parse_report(
        dsn(
            action="failed",
            status="5.1.1",
            envid=UNKNOWN,
            recipient=PATIENT,
            diagnostic=f"smtp; 550 5.1.1 <{PATIENT}>:\n    Recipient address rejected: User unknown",
        )
    )
    (entry,) = report.entries
    assert (entry.action, entry.status, entry.failure) == ("failed", "5.1.1", True)
    assert entry.diagnostic == f"550 5.1.1 <{PATIENT}>: Recipient address rejected: User unknown"


def test_a_global_delivery_status_report_is_read_too() -> None:
    # RFC 6533: the same fields in message/global-delivery-status, which the email package
    # does not split into blocks.
    report = parse_report(
        dsn(
            action="failed",
            status="5.2.2",
            envid=UNKNOWN,
            report_type="global-delivery-status",
            part_type="message/global-delivery-status",
        )
    )
    (entry,) = report.entries
    assert (entry.action, entry.status) == ("failed", "5.2.2")
    assert report.references[0] == ("envelope-id", UNKNOWN)


def test_an_mdn_displayed_and_deleted() -> None:
    shown = parse_report(mdn(original=UNKNOWN))
    assert shown.kind is ReportKind.MDN
    (entry,) = shown.entries
    assert (entry.action, entry.status, entry.failure) == ("displayed", None, False)
    assert entry.reported_at is not None and entry.reported_at.isoformat() == "2026-11-23T11:40:00+00:00"
    assert shown.references == (("original-message-id", UNKNOWN),)
    deleted = parse_report(mdn(original=UNKNOWN, disposition="manual-action/MDN-sent-manually; deleted"))
    assert deleted.entries[0].action == "deleted"


def test_the_ans_error_mdn_is_a_refusal_with_its_code() -> None:
    # The ANS volet's form (struct-msg-mdn): no space after the colon, code^label after "Error:".
    report = parse_report(
        mdn(
            original=UNKNOWN,
            disposition="automatic-action/MDN-sent-automatically; processed/Error: "
            "902^Identifiant de patient inconnu^messageErrorCondition",
        )
    )
    (entry,) = report.entries
    assert (entry.action, entry.status, entry.failure) == ("processed/error", "902", True)
    assert entry.diagnostic is not None and entry.diagnostic.startswith("902^Identifiant de patient inconnu")


ROUTES = {
    "returned-headers": lambda mid: dsn(action="delivered", returned_id=mid),
    "in-reply-to": lambda mid: mdn(extra_headers=f"In-Reply-To: <{mid}@labo-charmes.mssante.fr>\n"),
    "references": lambda mid: mdn(
        extra_headers=f"References: <{UNKNOWN}@elsewhere.fr>\n <{mid}@labo-charmes.mssante.fr>\n"
    ),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_every_correlation_route_yields_the_message_id(route: str) -> None:
    mid = "fedcba9876543210fedcba9876543210"
    report = parse_report(ROUTES[route](mid))
    assert report.references[0] == (route, mid)


def test_ordinary_mail_and_other_reports_are_not_reports() -> None:
    ordinary = crlf(f"""
From: {DOCTOR}
To: {LAB}
Subject: Question
Message-ID: <q1@hopital.mssante.fr>
In-Reply-To: <{UNKNOWN}@labo-charmes.mssante.fr>

Bonjour, une question sur le compte rendu.
""")
    assert parse_report(ordinary).status is ReportStatus.NOT_A_REPORT
    feedback = dsn(envid=UNKNOWN, report_type="feedback-report")
    assert parse_report(feedback).status is ReportStatus.NOT_A_REPORT


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            crlf("""
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Only words.
--B--
"""),
            "no message/delivery-status part",
        ),
        (dsn(action="vanished", envid=UNKNOWN), "no recipient block"),
        (mdn(original=UNKNOWN, disposition="displayed"), "no valid Disposition"),
        (
            mdn(original=UNKNOWN, disposition="manual-action/MDN-sent-manually; read-it"),
            "no valid Disposition",
        ),
    ],
)
def test_malformed_reports_say_what_is_wrong_without_quoting_them(raw: bytes, problem: str) -> None:
    report = parse_report(raw)
    assert report.status is ReportStatus.MALFORMED
    assert report.problem is not None and report.problem.startswith(problem)
    assert DOCTOR not in report.problem


def test_an_oversized_message_is_not_parsed() -> None:
    raw = dsn(envid=UNKNOWN)
    report = parse_report(raw, max_bytes=len(raw) - 1)
    assert report.status is ReportStatus.MALFORMED and report.problem == f"larger than {len(raw) - 1} bytes"
    assert parse_report(raw, max_bytes=len(raw)).status is ReportStatus.UNMATCHED


def test_garbage_never_raises() -> None:
    samples = [
        b"",
        b"\x00\xff" * 100,
        b"\r\n\r\n",
        b"Content-Type: multipart/report\r\n\r\n--",
        bytes(range(256)),
    ]
    rng = random.Random(20261123)
    valid = [dsn(envid=UNKNOWN, returned_id=UNKNOWN), mdn(original=UNKNOWN)]
    for _ in range(300):
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        samples.append(bytes(data[: rng.randint(0, len(data))]))
    for raw in samples:
        report = parse_report(raw)
        assert isinstance(report, ParsedReport) and len(report.report_id) == 64


def test_the_report_id_is_stable_and_follows_the_message_id() -> None:
    raw = mdn(original=UNKNOWN)
    assert parse_report(raw).report_id == parse_report(raw).report_id
    other = raw.replace(b"Message-ID: <mdn-", b"Message-ID: <other-")
    assert parse_report(other).report_id != parse_report(raw).report_id


# -- recording in the journal -------------------------------------------------------------------


def delivery(recipient: Recipient) -> Delivery:
    header = read_header((OUTPUT / "01-biochimie.n3.xml").read_bytes())
    to_patient = recipient.kind is RecipientKind.PATIENT
    return Delivery(
        Channel.MSSANTE,
        Action.SUBMIT,
        recipient,
        header.document_id,
        header.version,
        None,
        {"to_patient": to_patient, "request_dsn": True, "request_mdn": True, "headers": {}},
    )


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    n3 = (OUTPUT / "01-biochimie.n3.xml").read_bytes()
    header = read_header(n3)
    box = Outbox(tmp_path / "outbox.sqlite")
    box.store_document(
        document_id=header.document_id,
        set_id=header.set_id,
        version=header.version,
        replaces=None,
        confidentiality=["N"],
        n3=n3,
        pdf=(OUTPUT / "01-biochimie.pdf").read_bytes(),
    )
    deliveries = (
        delivery(Recipient(RecipientKind.PROFESSIONAL, DOCTOR, "810001234567")),
        delivery(Recipient(RecipientKind.PATIENT, PATIENT)),
    )
    box.enqueue(
        Plan(header.document_id, header.version, Action.SUBMIT, deliveries), {Channel.MSSANTE: "smtp"}
    )
    for claim in box.claim("test-worker", limit=10):
        assert box.acknowledge(claim, Acknowledgement("250 2.0.0 Ok: queued as 1", {"queue_id": "1"}))
    yield box
    box.close()


def line(box: Outbox, recipient: str) -> Transmission:
    return next(t for t in box.transmissions() if t.recipient == recipient)


def test_a_delivery_and_a_read_receipt_show_in_the_journal(outbox: Outbox) -> None:
    professional = line(outbox, DOCTOR)
    mid = professional.key[:32]
    first = record_report(outbox, parse_report(dsn(envid=mid)))
    assert first.status is ReportStatus.RECORDED and first.route == "envelope-id"
    assert first.key == professional.key
    second = record_report(outbox, parse_report(mdn(original=mid)))
    assert second.status is ReportStatus.RECORDED and second.route == "original-message-id"
    professional = line(outbox, DOCTOR)
    assert professional.state == "acknowledged"
    assert professional.outcome == "displayed"
    assert professional.returns == "delivered 2026-11-23T10:12Z; displayed 2026-11-23T11:40Z"
    events = [e["event"] for e in outbox.events(professional.key)]
    assert events[-2:] == ["delivery-status", "disposition"]
    patient = line(outbox, PATIENT)
    assert patient.outcome == "acknowledged" and patient.returns is None


def test_the_same_report_read_twice_is_recorded_once(outbox: Outbox) -> None:
    mid = line(outbox, DOCTOR).key[:32]
    raw = dsn(envid=mid)
    assert record_report(outbox, parse_report(raw)).status is ReportStatus.RECORDED
    again = record_report(outbox, parse_report(raw))
    assert again.status is ReportStatus.ALREADY_KNOWN and again.recorded == ()
    assert len(outbox.returns(again.key or "")) == 1
    assert sum(e["event"] == "delivery-status" for e in outbox.events(again.key or "")) == 1


def test_a_bounce_is_a_failure_in_the_journal_without_patient_data(outbox: Outbox) -> None:
    patient = line(outbox, PATIENT)
    raw = dsn(
        action="failed",
        status="5.1.1",
        returned_id=patient.key[:32],
        recipient=PATIENT,
        diagnostic=f"smtp; 550 5.1.1 <{PATIENT}>: Recipient address rejected: {INS} unknown",
    )
    result = record_report(outbox, parse_report(raw))
    assert result.status is ReportStatus.RECORDED and len(result.failures) == 1
    patient = line(outbox, PATIENT)
    # Still acknowledged (the operator took it): nothing is resent; the outcome says bounced.
    assert patient.state == "acknowledged" and patient.outcome == "bounced"
    assert patient.returns == "failed 5.1.1 2026-11-23T10:12Z"
    (stored,) = outbox.returns(patient.key)
    assert INS not in stored["diagnostic"] and "Recipient address rejected" in stored["diagnostic"]
    bounced = outbox.events(patient.key)[-1]
    assert bounced["event"] == "bounced" and bounced["detail"]["status"] == "5.1.1"
    assert INS not in json.dumps(bounced)
    assert outbox.counts() == {"acknowledged": 2}


def test_an_error_mdn_makes_the_delivery_rejected(outbox: Outbox) -> None:
    mid = line(outbox, DOCTOR).key[:32]
    raw = mdn(
        original=mid,
        disposition="automatic-action/MDN-sent-automatically; processed/Error: 903^INS absent",
    )
    record_report(outbox, parse_report(raw))
    doctor = line(outbox, DOCTOR)
    assert doctor.outcome == "rejected" and doctor.returns == "processed/error 903 2026-11-23T11:40Z"
    assert outbox.events(doctor.key)[-1]["event"] == "rejected"


def test_reports_for_unknown_messages_are_unmatched(outbox: Outbox) -> None:
    assert record_report(outbox, parse_report(dsn(envid=UNKNOWN))).status is ReportStatus.UNMATCHED
    assert record_report(outbox, parse_report(mdn())).status is ReportStatus.UNMATCHED  # no reference at all
    assert outbox.returns(line(outbox, DOCTOR).key) == []


def test_the_first_reference_naming_a_delivery_wins(outbox: Outbox) -> None:
    mid = line(outbox, PATIENT).key[:32]
    # The ENVID names nothing here; the returned headers name the patient's message.
    result = record_report(outbox, parse_report(dsn(envid=UNKNOWN, returned_id=mid)))
    assert result.route == "returned-headers" and result.key == line(outbox, PATIENT).key


def test_the_journal_commands_show_outcome_and_returns(
    outbox: Outbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mid = line(outbox, DOCTOR).key[:32]
    record_report(outbox, parse_report(dsn(envid=mid)))
    record_report(
        outbox, parse_report(dsn(action="failed", status="5.1.1", envid=line(outbox, PATIENT).key[:32]))
    )
    config = tmp_path / "crbio.toml"
    config.write_text(
        '[laboratory]\nfiness = "920000015"\nname = "Labo"\noid = "1.2.250.1.999.1"\n'
        '[outbox]\npath = "outbox.sqlite"\n',
        encoding="utf-8",
    )
    assert main(["journal", "--config", str(config), "--format", "json"]) == 0
    rows = {r["recipient"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[DOCTOR]["outcome"] == "delivered" and rows[DOCTOR]["returns"].startswith(
        "delivered 2026-11-23"
    )
    assert rows[DOCTOR]["return_reports"][0]["kind"] == "dsn"
    assert rows[PATIENT]["outcome"] == "bounced"
    assert main(["journal", "--config", str(config), "--format", "csv"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert "outcome" in header.split(",") and "returns" in header.split(",")
    assert any("bounced" in row and "failed 5.1.1" in row for row in lines)
    assert main(["journal", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "outcome" in table.splitlines()[0] and "bounced" in table and "failed 5.1.1" in table


# -- the schema upgrade -------------------------------------------------------------------------


def test_an_outbox_of_schema_1_is_upgraded_in_place_with_its_rows(outbox: Outbox, tmp_path: Path) -> None:
    before = outbox.transmissions()
    events = {t.key: outbox.events(t.key) for t in before}
    outbox.close()
    # What crbio before return reports wrote: the same tables without return_reports, schema "1".
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        db.execute("DROP TABLE return_reports")
        # ... nor what schema 3 added, the journal's hash chain (tests/dispatch/test_journal_verify.py).
        db.execute("DROP TABLE journal_head")
        for table in ("documents", "events", "suppressions"):
            for column in ("chain_seq", "chain_hash", *(("delivery_state",) if table == "events" else ())):
                db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    with Outbox(tmp_path / "outbox.sqlite") as upgraded:
        after = upgraded.transmissions()
        assert [t.to_dict() for t in after] == [t.to_dict() for t in before]
        assert {t.key: upgraded.events(t.key) for t in after} == events
        mid = after[0].key[:32]
        assert record_report(upgraded, parse_report(dsn(envid=mid))).status is ReportStatus.RECORDED
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
    with Outbox(tmp_path / "outbox.sqlite") as reopened:  # opening again changes nothing
        assert len(reopened.returns(after[0].key)) == 1


def test_an_unknown_schema_version_is_still_refused(outbox: Outbox, tmp_path: Path) -> None:
    outbox.close()
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(OutboxError, match="unknown outbox schema version"):
        Outbox(tmp_path / "outbox.sqlite")
