"""Reading the lab's mailbox: sends over the SMTP simulator, reports collected over real IMAPS."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLES
from crbio.cli import main
from crbio.dispatch import (
    DispatchConfig,
    MailboxError,
    Outbox,
    Transmission,
    collect_returns,
    deliver,
    dispatch,
)
from crbio.dispatch.mailbox import KEYWORD_HANDLED, KEYWORD_SKIPPED
from crbio.documents.build import Documents, build
from crbio.errors import ConfigurationError
from crbio.input import load_report
from crbio.simulators.imap import ImapSimulator
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki
from crbio.simulators.run import Simulation
from crbio.simulators.smtp import SmtpSimulator

LAB = "laboratoire@labo-charmes.mssante.fr"
PASSWORD = "imap-pass-0rd"
DOCTOR = "pascal.charles@medecin.mssante.fr"  # the prescriber of 01-biochimie
INS = "279035121518989"
PROCESSED = "crbio-traites"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def documents() -> Documents:
    return build(load_report(SAMPLES / "01-biochimie.json"))


@pytest.fixture
def imap(pki: Pki) -> Iterator[ImapSimulator]:
    with ImapSimulator(pki, user=LAB, password=PASSWORD) as server:
        yield server


@pytest.fixture
def smtp(pki: Pki, imap: ImapSimulator) -> Iterator[SmtpSimulator]:
    with SmtpSimulator(pki, report_mailbox=imap) as server:
        yield server


def settings(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, smtp: SmtpSimulator | None = None, **mailbox: Any
) -> dict[str, Any]:
    tls = {"ca_file": str(pki.ca_cert), "client_cert": str(pki.auth_cert), "client_key": str(pki.auth_key)}
    secret = tmp_path / "imap-password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    section = {
        "host": imap.host,
        "port": imap.port,
        "user": LAB,
        "password_file": str(secret),
        "processed_folder": PROCESSED,
        "timeout": 5,
        **tls,
        **mailbox,
    }
    data: dict[str, Any] = {
        "laboratory": {"finess": "920000015", "name": "Laboratoire des Charmes", "oid": "1.2.250.1.999.77"},
        "software": {"nil": "NIL-0001"},
        "outbox": {"path": str(tmp_path / "outbox.sqlite")},
        "rules": {"request_dsn": True, "request_mdn": True},
        "mailbox": {k: v for k, v in section.items() if v is not None},
    }
    if smtp is not None:
        data["destinations"] = {
            "mssante": {"host": smtp.host, "port": smtp.port, "from": LAB, "timeout": 5, **tls},
        }
    return data


def configure(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, smtp: SmtpSimulator, **mailbox: Any
) -> DispatchConfig:
    return DispatchConfig.from_mapping(settings(pki, tmp_path, imap, smtp, **mailbox))


def send(config: DispatchConfig, documents: Documents) -> None:
    keys = dispatch(documents, config).keys
    assert len(keys) == 2  # the prescriber and the patient
    states, _ = deliver(config, keys, timeout=30)
    assert set(states.values()) == {"acknowledged"}


def journal(config: DispatchConfig) -> dict[str, Transmission]:
    with Outbox(config.outbox_path) as outbox:
        return {t.recipient_kind: t for t in outbox.transmissions()}


def report(imap: ImapSimulator, number: int) -> bytes:
    return imap.messages(PROCESSED)[number].data


# -- configuration ------------------------------------------------------------------------------


def test_the_mailbox_section_and_its_defaults(pki: Pki, tmp_path: Path, imap: ImapSimulator) -> None:
    config = DispatchConfig.from_mapping(settings(pki, tmp_path, imap, processed_folder=None))
    assert config.mailbox is not None
    assert (config.mailbox.folder, config.mailbox.processed_folder, config.mailbox.poll_seconds) == (
        "INBOX",
        None,
        300.0,
    )
    assert (
        DispatchConfig.from_mapping({"laboratory": settings(pki, tmp_path, imap)["laboratory"]}).mailbox
        is None
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"folders": "INBOX"}, "mailbox.folders: unknown setting"),
        ({"host": None}, "mailbox.host: required"),
        ({"password_file": None}, "mailbox: password_file or password_env is required"),
        ({"port": 0}, "mailbox.port: must be a TCP port number"),
        ({"poll_seconds": 0}, "mailbox.poll_seconds: must be a positive number"),
        ({"processed_folder": "inbox"}, "mailbox.processed_folder: must differ from mailbox.folder"),
        ({"folder": "Reçus"}, "mailbox.folder: must be a non-empty folder name in printable ASCII"),
    ],
)
def test_mailbox_settings_are_checked(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        DispatchConfig.from_mapping(settings(pki, tmp_path, imap, **change))
    assert str(caught.value) == message


def test_without_a_mailbox_section_there_is_nothing_to_collect(
    pki: Pki, tmp_path: Path, imap: ImapSimulator
) -> None:
    config = DispatchConfig.from_mapping({"laboratory": settings(pki, tmp_path, imap)["laboratory"]})
    with pytest.raises(ConfigurationError, match=r"mailbox: not configured"):
        collect_returns(config)


# -- collecting ---------------------------------------------------------------------------------


def test_delivery_and_read_reports_reach_the_journal(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, smtp: SmtpSimulator, documents: Documents
) -> None:
    config = configure(pki, tmp_path, imap, smtp)
    send(config, documents)
    assert len(imap.messages()) == 4  # a DSN and an MDN for each of the two messages
    summary = collect_returns(config)
    assert (summary.read, summary.matched, summary.recorded, summary.failures) == (4, 4, 4, 0)
    assert {r.route for r in summary.results} == {"envelope-id", "original-message-id"}
    lines = journal(config)
    for kind in ("professional", "patient"):
        line = lines[kind]
        assert line.state == "acknowledged" and line.outcome == "displayed"
        assert line.returns is not None and line.returns.startswith("delivered 20")
        assert "; displayed 20" in line.returns
        assert [r["kind"] for r in line.return_reports] == ["dsn", "mdn"]
    # Filed away: read, marked, moved to the processed folder (COPY, \Deleted, EXPUNGE here).
    assert imap.messages() == []
    moved = imap.messages(PROCESSED)
    assert len(moved) == 4 and all({"\\Seen", KEYWORD_HANDLED} <= m.flags for m in moved)
    assert {"UID COPY", "UID STORE", "EXPUNGE"} <= set(imap.commands) and "UID MOVE" not in imap.commands


def test_a_bounce_shows_as_a_failure(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, documents: Documents, capsys: pytest.CaptureFixture[str]
) -> None:
    with SmtpSimulator(pki, report_mailbox=imap, unknown_recipients={DOCTOR}) as smtp:
        config = configure(pki, tmp_path, imap, smtp)
        send(config, documents)
    config_file = tmp_path / "crbio.toml"
    config_file.write_text(toml(settings(pki, tmp_path, imap)), encoding="utf-8")
    assert main(["returns", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("returns: 3 messages read: 3 matched (3 recorded")  # no read receipt for a bounce
    assert (
        f"✗ dsn failed 5.1.1: document {documents.document_id} v1 (submit) → DR Pascal CHARLES <{DOCTOR}>"
        in out
    )
    assert "✓ mdn displayed" in out and "→ patient" in out and INS not in out
    lines = journal(config)
    assert lines["professional"].outcome == "bounced" and lines["professional"].state == "acknowledged"
    assert lines["professional"].returns is not None and lines["professional"].returns.startswith(
        "failed 5.1.1 "
    )
    assert lines["patient"].outcome == "displayed"
    (bounce,) = lines["professional"].return_reports
    assert DOCTOR not in bounce["diagnostic"]  # the server quoted the address: masked
    assert main(["journal", "--config", str(config_file)]) == 0
    table = capsys.readouterr().out
    assert "bounced" in table and "failed 5.1.1" in table


def toml(data: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        return json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)

    out = []
    for section, table in data.items():
        out.append(f"[{section}]")
        out += [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    return "\n".join(out) + "\n"


def test_collecting_twice_records_once(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, smtp: SmtpSimulator, documents: Documents
) -> None:
    config = configure(pki, tmp_path, imap, smtp)
    send(config, documents)
    assert collect_returns(config).recorded == 4
    again = collect_returns(config)
    assert (again.read, again.recorded) == (0, 0)
    # The same report delivered to the mailbox a second time: read, known, filed, not recorded.
    imap.append(report(imap, 0))
    third = collect_returns(config)
    assert (third.read, third.matched, third.recorded, third.already_known) == (1, 1, 0, 1)
    assert imap.messages() == [] and len(imap.messages(PROCESSED)) == 5
    assert sum(len(t.return_reports) for t in journal(config).values()) == 4


@pytest.mark.parametrize(("move", "uidplus"), [(True, False), (False, True)])
def test_filing_uses_move_or_uid_expunge_when_offered(
    pki: Pki, tmp_path: Path, documents: Documents, move: bool, uidplus: bool
) -> None:
    with (
        ImapSimulator(pki, user=LAB, password=PASSWORD, move=move, uidplus=uidplus) as imap,
        SmtpSimulator(pki, report_mailbox=imap) as smtp,
    ):
        config = configure(pki, tmp_path, imap, smtp)
        send(config, documents)
        imap.append(b"From: someone@x.fr\r\nSubject: hello\r\nMessage-ID: <o@x.fr>\r\n\r\nNot a report.\r\n")
        assert collect_returns(config).recorded == 4
        assert [m.flags for m in imap.messages()] == [{KEYWORD_SKIPPED}]  # the ordinary mail stays
        assert len(imap.messages(PROCESSED)) == 4
        assert ("UID MOVE" in imap.commands) is move
        assert ("UID EXPUNGE" in imap.commands) is (uidplus and not move)


def test_without_a_processed_folder_reports_are_flagged_and_other_mail_left_alone(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, smtp: SmtpSimulator, documents: Documents
) -> None:
    config = configure(pki, tmp_path, imap, smtp, processed_folder=None)
    send(config, documents)
    ordinary = (
        b"From: dr@x.fr\r\nTo: lab@x.fr\r\nSubject: Question\r\nMessage-ID: <q@x.fr>\r\n\r\nBonjour.\r\n"
    )
    imap.append(ordinary)
    # A delivery report for a message another system sent from this mailbox.
    imap.append(
        b"Message-ID: <r1@mx.x.fr>\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n"
        b"Original-Envelope-Id: 0123456789abcdef0123456789abcdef\r\n\r\n"
        b"Final-Recipient: rfc822; dr@x.fr\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n--B--\r\n"
    )
    imap.append(
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n--B--\r\n"
    )
    summary = collect_returns(config)
    assert (summary.read, summary.recorded, summary.not_reports, summary.unmatched, summary.malformed) == (
        7,
        4,
        1,
        1,
        1,
    )
    assert summary.malformed_uids == (7,)
    assert "malformed: UID 7" in str(summary)
    flags = {m.uid: m.flags for m in imap.messages()}
    assert all(flags[uid] == {"\\Seen", KEYWORD_HANDLED} for uid in (1, 2, 3, 4))
    assert flags[5] == flags[6] == flags[7] == {KEYWORD_SKIPPED}  # not marked read
    assert collect_returns(config).read == 0


def test_a_server_without_keywords_gets_the_reports_again_recognised(
    pki: Pki, tmp_path: Path, documents: Documents
) -> None:
    with (
        ImapSimulator(pki, user=LAB, password=PASSWORD, keywords=False) as imap,
        SmtpSimulator(pki, report_mailbox=imap) as smtp,
    ):
        config = configure(pki, tmp_path, imap, smtp, processed_folder=None)
        send(config, documents)
        assert collect_returns(config).recorded == 4
        again = collect_returns(config)
        assert (again.read, again.already_known, again.recorded) == (4, 4, 0)
        assert all(m.flags == {"\\Seen"} for m in imap.messages())


def test_an_oversized_message_is_reported_by_its_uid_and_not_fetched(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, smtp: SmtpSimulator
) -> None:
    config = configure(pki, tmp_path, imap, smtp, max_message_bytes=1000)
    imap.append(b"Subject: big\r\n\r\n" + b"x" * 2000)
    summary = collect_returns(config)
    assert (summary.read, summary.malformed, summary.malformed_uids) == (1, 1, (1,))
    assert imap.commands.count("UID FETCH") == 1  # the sizes only
    assert imap.messages()[0].flags == {KEYWORD_SKIPPED}


# -- failures -----------------------------------------------------------------------------------


def test_a_wrong_password_is_a_configuration_error_without_the_password(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    data = settings(pki, tmp_path, imap)
    (tmp_path / "imap-password").write_text("not-the-password", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="mailbox.password: the IMAP server .* refused the login"):
        collect_returns(DispatchConfig.from_mapping(data))
    config_file = tmp_path / "crbio.toml"
    config_file.write_text(toml(data), encoding="utf-8")
    assert main(["returns", "--config", str(config_file)]) == 3
    err = capsys.readouterr().err
    assert "mailbox.password" in err and "[AUTHENTICATIONFAILED]" in err
    assert "not-the-password" not in err and "Traceback" not in err


def test_an_unreachable_server_is_a_retryable_mailbox_error(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    data = settings(pki, tmp_path, imap, port=port)
    with pytest.raises(MailboxError, match="cannot reach the IMAP server") as caught:
        collect_returns(DispatchConfig.from_mapping(data))
    assert caught.value.retryable
    config_file = tmp_path / "crbio.toml"
    config_file.write_text(toml(data), encoding="utf-8")
    assert main(["returns", "--config", str(config_file)]) == 1
    assert "cannot reach the IMAP server" in capsys.readouterr().err


def test_an_untrusted_server_certificate_is_a_configuration_error(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stranger = make_test_pki(tmp_path_factory.mktemp("stranger"))
    data = settings(pki, tmp_path, imap, ca_file=str(stranger.ca_cert))
    with pytest.raises(ConfigurationError, match="mailbox.ca_file: the certificate of the IMAP server"):
        collect_returns(DispatchConfig.from_mapping(data))


def test_a_busy_server_is_retryable(pki: Pki, tmp_path: Path, imap: ImapSimulator) -> None:
    from crbio.simulators.base import Fault

    imap.faults.queue(Fault.BUSY)
    config = DispatchConfig.from_mapping(settings(pki, tmp_path, imap))
    with pytest.raises(MailboxError) as caught:
        collect_returns(config)
    assert caught.value.retryable
    assert collect_returns(config).read == 0


# -- the commands with the simulation -----------------------------------------------------------


def test_simulate_worker_and_returns_show_reports_in_the_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Simulation(tmp_path / "sim", retry_delay=0.05) as sim:
        config = str(sim.config_path)
        assert main(["send", "--config", config, "--queue-only", str(SAMPLES / "01-biochimie.json")]) == 0
        capsys.readouterr()
        assert main(["worker", "--config", config, "--drain"]) == 0
        out = capsys.readouterr().out
        assert "4 acknowledged" in out and "4 return reports recorded (0 bounces or refusals)" in out
        assert main(["returns", "--config", config, "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["read"] == 0  # the worker filed them already
        assert main(["journal", "--config", config, "--format", "json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        mail = [r for r in rows if r["channel"] == "mssante"]
        assert len(mail) == 2 and {r["outcome"] for r in mail} == {"displayed"}
        assert {r["outcome"] for r in rows if r["channel"] != "mssante"} == {"acknowledged"}
        assert sim.imap.messages() == [] and len(sim.imap.messages("crbio-traites")) == 4


def test_the_worker_poll_outlives_an_unreachable_mailbox(
    pki: Pki, tmp_path: Path, imap: ImapSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    from crbio.cli.dispatch import _poll_returns

    config = DispatchConfig.from_mapping(settings(pki, tmp_path, imap))
    assert config.mailbox is not None
    totals = {"recorded": 0, "failures": 0}
    _poll_returns(replace(config, mailbox=replace(config.mailbox, port=1)), totals)
    assert totals["recorded"] == 0
    assert "mailbox not read: mailbox 127.0.0.1:1: cannot reach the IMAP server" in caplog.text
    imap.append(b"Subject: hello\r\n\r\nNot a report.\r\n")
    _poll_returns(config, totals)  # the next poll works
    assert imap.messages()[0].flags == {KEYWORD_SKIPPED}
