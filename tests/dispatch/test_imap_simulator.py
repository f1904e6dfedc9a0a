"""The IMAP simulator speaks RFC 3501 to imaplib and on a raw socket; the SMTP simulator fills it."""

from __future__ import annotations

import email
import email.policy
import imaplib
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from crbio.dispatch.returns import ReportKind, ReportStatus, parse_report
from crbio.simulators.base import Fault, FaultPlan
from crbio.simulators.imap import ImapSimulator
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki
from crbio.simulators.smtp import SmtpSimulator

USER = "laboratoire@labo-charmes.mssante.fr"
PASSWORD = "s3cret pass"
DOCTOR = "dr.prescripteur@hopital.mssante.fr"
UNKNOWN_DOCTOR = "dr.parti@hopital.mssante.fr"
ENVID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("other-pki"))


def client_tls(pki: Pki, *, certificate: Pki | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if certificate is not None:
        context.load_cert_chain(certificate.auth_cert, certificate.auth_key)
    return context


@contextmanager
def connected(sim: ImapSimulator, pki: Pki, *, login: bool = True) -> Iterator[imaplib.IMAP4_SSL]:
    imap = imaplib.IMAP4_SSL(sim.host, sim.port, ssl_context=client_tls(pki, certificate=pki), timeout=5)
    try:
        if login:
            imap.login(f'"{USER}"', PASSWORD)
        yield imap
    finally:
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            imap.shutdown()


def message(number: int, body: bytes = b"Bonjour.\r\n") -> bytes:
    return (
        f"From: {DOCTOR}\r\nTo: {USER}\r\nSubject: Message {number}\r\n"
        f"Message-ID: <m{number}@hopital.mssante.fr>\r\n\r\n"
    ).encode() + body


@pytest.fixture
def sim(pki: Pki) -> Iterator[ImapSimulator]:
    with ImapSimulator(pki, user=USER, password=PASSWORD) as server:
        yield server


# -- sessions -----------------------------------------------------------------------------------


def test_greeting_login_and_select(sim: ImapSimulator, pki: Pki) -> None:
    for n in (1, 2, 3):
        sim.append(message(n), flags=["\\Seen"] if n == 1 else [])
    with connected(sim, pki, login=False) as imap:
        assert "IMAP4REV1" in imap.capabilities and "MOVE" not in imap.capabilities
        status, data = imap.login(f'"{USER}"', PASSWORD)
        assert status == "OK" and b"[CAPABILITY IMAP4rev1" in data[0]
        status, data = imap.select('"INBOX"')
        assert (status, data) == ("OK", [b"3"])
        assert imap.response("PERMANENTFLAGS")[1] == [b"(\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)"]
        assert imap.response("UNSEEN")[1] == [b"2"]
        assert imap.response("UIDNEXT")[1] == [b"4"]
        assert imap.response("READ-WRITE")[1] == [b""]
        assert imap.noop()[0] == "OK"


def test_refused_logins(sim: ImapSimulator, pki: Pki, other_pki: Pki) -> None:
    with (
        connected(sim, pki, login=False) as imap,
        pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\] Authentication failed"),
    ):
        imap.login(f'"{USER}"', "wrong")
    without = imaplib.IMAP4_SSL(sim.host, sim.port, ssl_context=client_tls(pki), timeout=5)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="client certificate is required"):
            without.login(f'"{USER}"', PASSWORD)
    finally:
        without.logout()
    assert sim.failed_logins == 2
    # A certificate from another CA does not get past the TLS handshake.
    with pytest.raises((ssl.SSLError, OSError, imaplib.IMAP4.abort)):
        stranger = imaplib.IMAP4_SSL(
            sim.host, sim.port, ssl_context=client_tls(pki, certificate=other_pki), timeout=5
        )
        stranger.shutdown()


class Raw:
    """A TLS connection to the simulator spoken to byte by byte."""

    def __init__(self, conn: ssl.SSLSocket) -> None:
        self.conn = conn
        self.reader = conn.makefile("rb")

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def line(self) -> bytes:
        return self.reader.readline()

    def command(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Send a tagged command; the untagged lines and the tagged answer."""
        tag = data.split(b" ", 1)[0]
        self.send(data + b"\r\n")
        lines = []
        while not (line := self.line()).startswith(tag + b" "):
            lines.append(line)
        return lines, line


@contextmanager
def raw_session(sim: ImapSimulator, pki: Pki) -> Iterator[Raw]:
    tls = client_tls(pki, certificate=pki)
    with (
        socket.create_connection((sim.host, sim.port), timeout=5) as plain,
        tls.wrap_socket(plain, server_hostname="localhost") as conn,
    ):
        raw = Raw(conn)
        try:
            assert raw.line().startswith(b"* OK [CAPABILITY IMAP4rev1")
            yield raw
        finally:
            raw.reader.close()


def test_commands_out_of_place_are_bad(sim: ImapSimulator, pki: Pki) -> None:
    with raw_session(sim, pki) as raw:
        assert raw.command(b"a1 SELECT INBOX")[1] == b"a1 BAD SELECT needs LOGIN first\r\n"
        assert raw.command(f'a2 LOGIN "{USER}" "{PASSWORD}"'.encode())[1].startswith(b"a2 OK")
        assert raw.command(b"a3 LOGIN x y")[1] == b"a3 BAD LOGIN is not valid once logged in\r\n"
        assert raw.command(b"a4 FETCH 1 (FLAGS)")[1] == b"a4 BAD FETCH needs a selected folder\r\n"
        assert raw.command(b"a5 FROBNICATE")[1] == b"a5 BAD unknown command FROBNICATE\r\n"
        assert raw.command(b"a6 UID NOOP")[1] == b"a6 BAD UID NOOP is not a command\r\n"
        assert raw.command(b'a7 SELECT "Nowhere"')[1] == b"a7 NO [NONEXISTENT] No such folder\r\n"
        assert raw.command(b"a8 FETCH (unbalanced")[1] == b"a8 BAD unbalanced parentheses\r\n"
        assert raw.command(b'a9 SELECT "unterminated')[1] == b"a9 BAD unterminated quoted string\r\n"


# -- search, fetch, store -----------------------------------------------------------------------


def test_search_keys(sim: ImapSimulator, pki: Pki) -> None:
    sim.append(message(1), flags=["\\Seen", "$CrbioReturn"])
    sim.append(message(2, b"x" * 5000), flags=["\\Deleted"])
    sim.append(message(3), flags=["$CrbioSkipped"])
    sim.append(message(4))
    with connected(sim, pki) as imap:
        imap.select()

        def uids(*criteria: str) -> list[int]:
            status, data = imap.uid("SEARCH", *criteria)
            assert status == "OK"
            return [int(x) for x in data[0].split()]

        assert uids("ALL") == [1, 2, 3, 4]
        assert uids("UNSEEN") == [2, 3, 4]
        assert uids("UNDELETED", "UNKEYWORD", "$CrbioReturn", "UNKEYWORD", "$CrbioSkipped") == [4]
        assert uids("KEYWORD", "$crbioreturn") == [1]  # keywords compare without case
        assert uids("UID", "2:*") == [2, 3, 4]
        assert uids("UID", "9:*") == [4]  # "n:*" always names the last message (RFC 3501)
        assert uids("NOT", "DELETED", "SEEN") == [1]
        assert uids("OR", "DELETED", "(KEYWORD $CrbioSkipped)") == [2, 3]
        assert uids("LARGER", "1000") == [2]
        assert uids("2,4") == [2, 4]
        assert imap.search(None, "UNSEEN")[1] == [b"2 3 4"]
        with pytest.raises(imaplib.IMAP4.error, match="unsupported search key"):
            imap.uid("SEARCH", "SUBJECT", "x")


def test_fetch_sends_exact_literals_and_peek_keeps_unseen(sim: ImapSimulator, pki: Pki) -> None:
    tricky = b"A line with ) and {12}\r\nand \x00 \xff bytes\r\n.\r\n"
    data = message(1, tricky)
    sim.append(data)
    with connected(sim, pki) as imap:
        imap.select()
        status, answer = imap.uid("FETCH", "1", "(RFC822.SIZE BODY.PEEK[])")
        assert status == "OK" and answer[0][1] == data  # type: ignore[index]
        assert f"RFC822.SIZE {len(data)}".encode() in answer[0][0]  # type: ignore[index]
        assert sim.messages()[0].flags == set()
        status, answer = imap.uid("FETCH", "1", "(BODY[HEADER])")
        assert answer[0][1] == data.split(b"\r\n\r\n")[0] + b"\r\n\r\n"  # type: ignore[index]
        assert b"FLAGS (\\Seen)" in answer[1]  # type: ignore[operator]
        assert sim.messages()[0].flags == {"\\Seen"}
        status, answer = imap.fetch("1", "(BODY.PEEK[TEXT] INTERNALDATE)")
        assert answer[0][1] == tricky  # type: ignore[index]
        assert b"INTERNALDATE" in answer[1]  # type: ignore[operator]
        with pytest.raises(imaplib.IMAP4.error, match="unsupported fetch item"):
            imap.fetch("1", "(ENVELOPE)")
        with pytest.raises(imaplib.IMAP4.error, match="no such message"):
            imap.fetch("7", "(FLAGS)")


def test_store_flags_and_keywords(sim: ImapSimulator, pki: Pki) -> None:
    sim.append(message(1))
    sim.append(message(2))
    with connected(sim, pki) as imap:
        imap.select()
        status, data = imap.uid("STORE", "1", "+FLAGS", "(\\Seen $CrbioReturn)")
        assert status == "OK" and data == [b"1 (FLAGS ($CrbioReturn \\Seen) UID 1)"]
        assert imap.uid("STORE", "2", "+FLAGS.SILENT", "(\\Flagged)") == ("OK", [None])
        imap.uid("STORE", "1", "-FLAGS.SILENT", "($crbioreturn)")
        imap.store("2", "FLAGS.SILENT", "(\\Answered)")
        assert [m.flags for m in sim.messages()] == [{"\\Seen"}, {"\\Answered"}]
        with pytest.raises(imaplib.IMAP4.error, match="not a flag that can be stored"):
            imap.uid("STORE", "1", "+FLAGS", "(\\Recent)")


def test_keywords_can_be_refused(pki: Pki) -> None:
    with ImapSimulator(pki, user=USER, password=PASSWORD, keywords=False) as sim:
        sim.append(message(1))
        with connected(sim, pki) as imap:
            imap.select()
            assert b"\\*" not in imap.response("PERMANENTFLAGS")[1][0]
            imap.uid("STORE", "1", "+FLAGS.SILENT", "(\\Seen $CrbioReturn)")
        assert sim.messages()[0].flags == {"\\Seen"}


# -- copy, move, expunge ------------------------------------------------------------------------


def test_copy_asks_to_create_the_folder_then_expunge_removes_deleted(sim: ImapSimulator, pki: Pki) -> None:
    for n in (1, 2, 3):
        sim.append(message(n))
    with connected(sim, pki) as imap:
        imap.select()
        status, data = imap.uid("COPY", "1:2", '"Traites crbio"')
        assert status == "NO" and data[0].startswith(b"[TRYCREATE]")
        assert imap.create('"Traites crbio"')[0] == "OK"
        assert imap.create('"Traites crbio"')[0] == "NO"
        assert imap.uid("COPY", "1:2", '"Traites crbio"')[0] == "OK"
        imap.uid("STORE", "1,3", "+FLAGS.SILENT", "(\\Deleted)")
        status, data = imap.expunge()
        assert (status, data) == ("OK", [b"3", b"1"])  # highest first: each number valid when sent
        with pytest.raises(imaplib.IMAP4.error, match="UIDPLUS"):
            imap.uid("EXPUNGE", "2")
        with pytest.raises(imaplib.IMAP4.error, match="unknown command MOVE"):
            imap.uid("MOVE", "2", "INBOX")
    assert [m.uid for m in sim.messages()] == [2]
    assert [m.uid for m in sim.messages("Traites crbio")] == [1, 2]


def test_move_and_uid_expunge_when_offered(pki: Pki) -> None:
    with ImapSimulator(pki, user=USER, password=PASSWORD, move=True, uidplus=True) as sim:
        for n in (1, 2, 3, 4):
            sim.append(message(n))
        sim.create("done")
        with connected(sim, pki) as imap:
            assert {"MOVE", "UIDPLUS"} <= set(imap.capabilities)
            imap.select()
            assert imap.uid("MOVE", "2:3", "done")[0] == "OK"
            assert imap.untagged_responses["COPYUID"][-1].split()[1:] == [
                b"2:3",
                b"1:2",
            ] or imap.untagged_responses["COPYUID"][-1].split()[1:] == [b"2,3", b"1,2"]
            imap.uid("STORE", "1,4", "+FLAGS.SILENT", "(\\Deleted)")
            assert imap.uid("EXPUNGE", "4")[0] == "OK"
        assert [m.uid for m in sim.messages()] == [1]
        assert [m.uid for m in sim.messages("done")] == [1, 2]


# -- wire details -------------------------------------------------------------------------------


def test_client_literals_over_a_raw_connection(sim: ImapSimulator, pki: Pki) -> None:
    with raw_session(sim, pki) as raw:
        user, secret = USER.encode(), PASSWORD.encode()
        raw.send(b"a1 LOGIN {%d}\r\n" % len(user))
        assert raw.line().startswith(b"+ ")  # a synchronising literal waits for the go-ahead
        raw.send(user + b" {%d+}\r\n" % len(secret) + secret + b"\r\n")  # LITERAL+: no wait
        assert raw.line().startswith(b"a1 OK")
        lines, done = raw.command(b"a2 SELECT INBOX")
        assert b"* 0 EXISTS\r\n" in lines and done.startswith(b"a2 OK [READ-WRITE]")
        lines, done = raw.command(b"a3 LOGOUT")
        assert lines[0].startswith(b"* BYE") and done == b"a3 OK LOGOUT completed\r\n"


def test_delayed_messages_arrive_later_with_the_next_uid(sim: ImapSimulator, pki: Pki) -> None:
    assert sim.append(message(1)) == 1
    assert sim.append(message(2), delay=0.3) is None
    assert sim.append(message(3)) == 2
    assert sim.pending == 1 and [m.uid for m in sim.messages()] == [1, 2]
    with connected(sim, pki) as imap:
        assert imap.select() == ("OK", [b"2"])
        time.sleep(0.35)
        imap.noop()
        assert imap.untagged_responses["EXISTS"][-1] == b"3"
    assert sim.pending == 0 and [m.uid for m in sim.messages()] == [1, 2, 3]


@pytest.mark.parametrize("fault", [Fault.BUSY, Fault.SERVER_ERROR, Fault.DROP])
def test_faults_end_the_connection_at_the_greeting(pki: Pki, fault: Fault) -> None:
    with ImapSimulator(pki, user=USER, password=PASSWORD, faults=FaultPlan()) as sim:
        sim.faults.queue(fault)
        with pytest.raises((imaplib.IMAP4.error, OSError)):
            imap = imaplib.IMAP4_SSL(
                sim.host, sim.port, ssl_context=client_tls(pki, certificate=pki), timeout=5
            )
            imap.shutdown()
        with connected(sim, pki) as imap:  # the next connection is served
            assert imap.select()[0] == "OK"


# -- the SMTP simulator's reports ---------------------------------------------------------------


def submit(
    smtp_sim: SmtpSimulator,
    pki: Pki,
    recipient: str,
    *,
    mail_options: tuple[str, ...] = (),
    rcpt_options: tuple[str, ...] = (),
    read_receipt: bool = False,
) -> str:
    message_id = f"{ENVID}@labo-charmes.mssante.fr"
    headers = f"From: {USER}\r\nTo: {recipient}\r\nSubject: =?utf-8?q?XDM/1=2E0/DDM+CR_=C3=89TIENNE?=\r\n"
    headers += f"Message-ID: <{message_id}>\r\n"
    if read_receipt:
        headers += f"Disposition-Notification-To: {USER}\r\n"
    body = (headers + "\r\nLe compte rendu.\r\n").encode()
    with smtplib.SMTP(smtp_sim.host, smtp_sim.port, timeout=5) as smtp:
        smtp.starttls(context=client_tls(pki, certificate=pki))
        smtp.sendmail(
            USER, [recipient], body, mail_options=list(mail_options), rcpt_options=list(rcpt_options)
        )
    return message_id


@pytest.fixture
def smtp_sim(pki: Pki, sim: ImapSimulator, tmp_path: Path) -> Iterator[SmtpSimulator]:
    with SmtpSimulator(pki, report_mailbox=sim, unknown_recipients={UNKNOWN_DOCTOR}, seed=1) as server:
        yield server


DSN_OPTIONS = {"mail_options": ("RET=HDRS", f"ENVID={ENVID}"), "rcpt_options": ("NOTIFY=SUCCESS,FAILURE",)}


def test_a_delivered_dsn_lands_in_the_mailbox(smtp_sim: SmtpSimulator, sim: ImapSimulator, pki: Pki) -> None:
    submit(smtp_sim, pki, DOCTOR, **DSN_OPTIONS)  # type: ignore[arg-type]
    (stored,) = sim.messages()
    parsed = email.message_from_bytes(stored.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report" and parsed["To"].addresses[0].addr_spec == USER
    assert [p.get_content_type() for p in parsed.iter_parts()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    report = parse_report(stored.data)
    assert report.kind is ReportKind.DSN and report.references[0] == ("envelope-id", ENVID)
    assert [(e.action, e.status, e.recipient) for e in report.entries] == [("delivered", "2.0.0", DOCTOR)]
    assert b"Le compte rendu" not in stored.data  # RET=HDRS: the headers only


def test_an_unknown_recipient_bounces_with_the_whole_message_on_ret_full(
    smtp_sim: SmtpSimulator, sim: ImapSimulator, pki: Pki
) -> None:
    submit(smtp_sim, pki, UNKNOWN_DOCTOR, mail_options=("RET=FULL",), rcpt_options=("NOTIFY=FAILURE",))
    assert len(smtp_sim.messages) == 1  # accepted at RCPT, bounced afterwards
    (stored,) = sim.messages()
    report = parse_report(stored.data)
    (entry,) = report.entries
    assert (entry.action, entry.status) == ("failed", "5.1.1")
    assert report.references[0] == ("returned-headers", ENVID)  # no ENVID given: the returned message
    assert b"Content-Type: message/rfc822" in stored.data and b"Le compte rendu" in stored.data


@pytest.mark.parametrize(
    ("recipient", "rcpt_options", "expected"),
    [
        (DOCTOR, (), []),  # no NOTIFY: failures only (RFC 3461 §4.1)
        (UNKNOWN_DOCTOR, (), ["failed"]),
        (UNKNOWN_DOCTOR, ("NOTIFY=NEVER",), []),
        (DOCTOR, ("NOTIFY=FAILURE",), []),
    ],
)
def test_notify_decides_which_reports_are_sent(
    smtp_sim: SmtpSimulator,
    sim: ImapSimulator,
    pki: Pki,
    recipient: str,
    rcpt_options: tuple[str, ...],
    expected: list[str],
) -> None:
    submit(smtp_sim, pki, recipient, rcpt_options=rcpt_options)
    assert [parse_report(m.data).entries[0].action for m in sim.messages()] == expected


def test_a_read_receipt_follows_when_asked(smtp_sim: SmtpSimulator, sim: ImapSimulator, pki: Pki) -> None:
    message_id = submit(smtp_sim, pki, DOCTOR, read_receipt=True, **DSN_OPTIONS)  # type: ignore[arg-type]
    reports = [parse_report(m.data) for m in sim.messages()]
    assert [r.kind for r in reports] == [ReportKind.DSN, ReportKind.MDN]
    mdn = reports[1]
    assert mdn.status is ReportStatus.UNMATCHED and mdn.entries[0].action == "displayed"
    assert mdn.references[0] == ("original-message-id", message_id.partition("@")[0])
    # No receipt for a message that never reached its recipient.
    submit(smtp_sim, pki, UNKNOWN_DOCTOR, read_receipt=True, **DSN_OPTIONS)  # type: ignore[arg-type]
    assert [r.entries[0].action for r in map(parse_report, (m.data for m in sim.messages()))][2:] == [
        "failed"
    ]


def test_read_receipts_can_be_late_or_missing(pki: Pki, sim: ImapSimulator) -> None:
    with SmtpSimulator(pki, report_mailbox=sim, mdn_delay=0.3) as late:
        submit(late, pki, DOCTOR, read_receipt=True)
        assert sim.messages() == [] and sim.pending == 1
        time.sleep(0.35)
        assert [parse_report(m.data).kind for m in sim.messages()] == [ReportKind.MDN]
    with SmtpSimulator(pki, report_mailbox=sim, mdn_rate=0.0) as silent:
        submit(silent, pki, DOCTOR, read_receipt=True)
        assert len(sim.messages()) == 1 and sim.pending == 0
