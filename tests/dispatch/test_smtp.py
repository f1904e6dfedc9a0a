"""The SMTP sender against the MSSanté SMTP simulator: real STARTTLS, real client certificates."""

from __future__ import annotations

import io
import smtplib
import socket
import ssl
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from conftest import ROOT
from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.mssante import pdf_file_name
from crbio.dispatch.senders.base import SenderContext, load_sender
from crbio.dispatch.senders.smtp import SmtpSender, _data, _dot_stuffed
from crbio.errors import ConfigurationError, PermanentSendError, TransientSendError
from crbio.simulators.base import Fault, FaultPlan
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import issue_certificate, make_test_pki
from crbio.simulators.smtp import SmtpSimulator, _may_hold_a_line_of

OUTPUT = ROOT / "samples" / "output"
SENDER = "laboratoire@labo-charmes.mssante.fr"
INS = "279035121518989"
PATIENT = f"{INS}@patient.mssante.fr"
DOCTOR = "dr.prescripteur@hopital.mssante.fr"
CONTEXT = SenderContext(
    laboratory_finess="920000015",
    laboratory_name="Laboratoire des Charmes",
    laboratory_oid="1.2.250.1.999.77",
    nil="NIL-0001",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture
def simulator(pki: Pki, tmp_path: Path) -> Iterator[SmtpSimulator]:
    with SmtpSimulator(pki, faults=FaultPlan(latency=1.0), store_dir=tmp_path / "received") as sim:
        yield sim


def settings(pki: Pki, sim: SmtpSimulator, **changes: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "host": sim.host,
        "port": sim.port,
        "starttls": True,
        "from": SENDER,
        "timeout": 5,
        "ca_file": str(pki.ca_cert),
        "client_cert": str(pki.auth_cert),
        "client_key": str(pki.auth_key),
    }
    section.update(changes)
    return {k: v for k, v in section.items() if v is not None}


@pytest.fixture
def sender(pki: Pki, simulator: SmtpSimulator) -> Iterator[SmtpSender]:
    smtp = SmtpSender.from_config(settings(pki, simulator), CONTEXT)
    yield smtp
    smtp.close()


def job(sample: str = "01-biochimie", *, to_patient: bool = True, attempt: int = 1, **metadata: Any) -> Job:
    n3 = (OUTPUT / f"{sample}.n3.xml").read_bytes()
    header = read_header(n3)
    headers = {"X-MSS-CODECDA": "11502-2", "X-MSS-INS": "O", **({"X-MSS-MES": "FIN"} if to_patient else {})}
    recipient = (
        Recipient(RecipientKind.PATIENT, PATIENT)
        if to_patient
        else Recipient(RecipientKind.PROFESSIONAL, DOCTOR, "810001234567")
    )
    delivery = Delivery(
        Channel.MSSANTE,
        Action.SUBMIT,
        recipient,
        header.document_id,
        header.version,
        None,
        {
            "confidentiality": [header.confidentiality],
            "headers": headers,
            "to_patient": to_patient,
            "request_dsn": True,
            "request_mdn": False,
            **metadata,
        },
    )
    return Job(delivery, attempt, n3, (OUTPUT / f"{sample}.pdf").read_bytes())


def no_patient_data(error: BaseException) -> None:
    assert INS not in str(error)
    assert INS not in str(getattr(error, "reason", ""))
    assert INS not in str(getattr(error, "detail", ""))


# -- delivery -------------------------------------------------------------------------------------


def test_a_delivery_is_stored_with_its_envelope_and_dsn_parameters(
    sender: SmtpSender, simulator: SmtpSimulator, pki: Pki, tmp_path: Path
) -> None:
    j = job(request_mdn=True)
    ack = sender.send(j)

    (received,) = simulator.messages
    assert received.mail_from == SENDER and received.rcpt_tos == (PATIENT,)
    assert received.dsn_parameters == {"RET": "HDRS", "ENVID": j.message_id, "NOTIFY": "SUCCESS,FAILURE"}
    assert any(o.startswith("SIZE=") for o in received.mail_options)
    assert received.client_certificate is not None and "ORG AUTH_CLI" in received.client_certificate
    assert not received.duplicate
    assert received.message_id == f"{j.message_id}@labo-charmes.mssante.fr"
    assert received.message["Disposition-Notification-To"] == SENDER
    files = {p.get_filename(): p.get_payload(decode=True) for p in received.message.iter_attachments()}
    assert files[pdf_file_name(j.header)] == j.pdf
    with zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])) as xdm:  # type: ignore[arg-type]
        assert xdm.read("IHE_XDM/SUBSET01/DOC0001.XML") == j.n3

    assert ack.summary == f"250 2.0.0 Ok: queued as {received.queue_id}"
    assert ack.detail == {
        "message_id": received.message_id,
        "smtp_reply": ack.summary,
        "queue_id": received.queue_id,
        "dsn_requested": True,
        "mdn_requested": True,
        "recipient": PATIENT,
    }
    stored = sorted(p.name for p in (tmp_path / "received").iterdir())
    assert [Path(n).suffix for n in stored] == [".eml", ".json"]
    assert (tmp_path / "received" / stored[0]).read_bytes() == received.raw


def test_a_resend_of_the_same_job_is_marked_duplicate(sender: SmtpSender, simulator: SmtpSimulator) -> None:
    first = sender.send(job())
    again = sender.send(job(attempt=2))
    assert first.detail["message_id"] == again.detail["message_id"]
    assert first.detail["queue_id"] != again.detail["queue_id"]
    assert [m.duplicate for m in simulator.messages] == [False, True]
    assert len(simulator.by_message_id(f"<{first.detail['message_id']}>")) == 2
    sender.send(job(to_patient=False))  # another recipient: another message id
    assert [m.duplicate for m in simulator.messages] == [False, True, False]


def test_without_dsn_request_no_dsn_parameters(sender: SmtpSender, simulator: SmtpSimulator) -> None:
    ack = sender.send(job(to_patient=False, request_dsn=False))
    (received,) = simulator.messages
    assert received.dsn_parameters == {} and ack.detail["dsn_requested"] is False
    assert "dsn_unavailable" not in ack.detail


def test_a_server_without_dsn_gets_the_message_and_the_ack_says_so(pki: Pki) -> None:
    with SmtpSimulator(pki, advertise_dsn=False) as sim:
        smtp = SmtpSender.from_config(settings(pki, sim), CONTEXT)
        try:
            ack = smtp.send(job())
        finally:
            smtp.close()
        (received,) = sim.messages
    assert received.dsn_parameters == {}
    assert ack.detail["dsn_requested"] is False
    assert "does not advertise DSN" in ack.detail["dsn_unavailable"]


def test_the_connection_is_reused_and_reopened_after_a_close(
    sender: SmtpSender, simulator: SmtpSimulator
) -> None:
    sender.send(job())
    sender.send(job(to_patient=False))
    sender.close()
    sender.close()  # harmless twice
    sender.send(job("02-hemogramme"))
    assert len(simulator.messages) == 3


def test_implicit_tls_and_smtp_auth(pki: Pki) -> None:
    with SmtpSimulator(pki, implicit_tls=True, users={"labo": "s3cret"}) as sim:
        good = SmtpSender.from_config(
            settings(pki, sim, starttls=False, tls=True, username="labo", password="s3cret"), CONTEXT
        )
        bad = SmtpSender.from_config(
            settings(pki, sim, starttls=False, tls=True, username="labo", password="wrong"), CONTEXT
        )
        try:
            good.send(job())
            with pytest.raises(PermanentSendError) as refused:
                bad.send(job())
        finally:
            good.close()
            bad.close()
        (received,) = sim.messages
    assert received.authenticated_as == "labo"
    assert refused.value.reason.startswith("535 ")


# -- certificates ---------------------------------------------------------------------------------


def test_without_a_client_certificate_the_server_refuses(pki: Pki, simulator: SmtpSimulator) -> None:
    smtp = SmtpSender.from_config(settings(pki, simulator, client_cert=None, client_key=None), CONTEXT)
    try:
        with pytest.raises(PermanentSendError) as refused:
            smtp.send(job())
    finally:
        smtp.close()
    assert refused.value.reason.startswith("530 5.7.0")
    assert refused.value.detail["smtp_step"] == "MAIL FROM"
    assert simulator.messages == []


def test_an_operator_certificate_from_another_ca_is_a_permanent_tls_error(
    pki: Pki, other_pki: Pki, simulator: SmtpSimulator
) -> None:
    smtp = SmtpSender.from_config(settings(pki, simulator, ca_file=str(other_pki.ca_cert)), CONTEXT)
    try:
        with pytest.raises(PermanentSendError) as refused:
            smtp.send(job())
    finally:
        smtp.close()
    assert refused.value.reason.startswith("TLS: the SMTP server's certificate was not accepted")
    assert simulator.messages == []


def test_a_host_name_the_certificate_does_not_cover_is_refused(pki: Pki, tmp_path: Path) -> None:
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    cert, key = issue_certificate(ca_cert, ca_key, "mss.example", usage="server", hosts=("mss.example",))  # type: ignore[arg-type]
    (tmp_path / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    elsewhere = replace(pki, server_cert=tmp_path / "server.crt", server_key=tmp_path / "server.key")
    with SmtpSimulator(elsewhere) as sim:
        smtp = SmtpSender.from_config(settings(pki, sim), CONTEXT)
        try:
            with pytest.raises(PermanentSendError) as refused:
                smtp.send(job())
        finally:
            smtp.close()
        assert sim.messages == []
    assert refused.value.reason.startswith("TLS: the SMTP server's certificate was not accepted")
    assert "mismatch" in refused.value.reason


def test_an_untrusted_client_certificate_is_refused_by_the_handshake(
    pki: Pki, other_pki: Pki, simulator: SmtpSimulator
) -> None:
    smtp = SmtpSender.from_config(
        settings(pki, simulator, client_cert=str(other_pki.auth_cert), client_key=str(other_pki.auth_key)),
        CONTEXT,
    )
    try:
        with pytest.raises((TransientSendError, PermanentSendError)) as refused:
            smtp.send(job())
    finally:
        smtp.close()
    # Python's asyncio server closes without a TLS alert: the sender sees the connection end
    # right after the handshake and says what to check (a server that sends the alert gets a
    # PermanentSendError naming it).
    assert "client certificate" in refused.value.reason or "certificate refused" in refused.value.reason
    assert simulator.messages == []


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "reason"),
    [
        (Fault.BUSY, TransientSendError, "451 4.3.0"),
        (Fault.SERVER_ERROR, TransientSendError, "421 4.3.2"),
        (Fault.DROP, TransientSendError, "closed the connection"),
        (Fault.REJECT, PermanentSendError, "550 5.1.1"),
    ],
)
def test_each_fault_maps_to_the_right_error(
    sender: SmtpSender, simulator: SmtpSimulator, fault: Fault, error: type[Exception], reason: str
) -> None:
    simulator.faults.queue(fault)
    with pytest.raises(error) as raised:
        sender.send(job())
    assert reason in raised.value.reason  # type: ignore[attr-defined]
    no_patient_data(raised.value)
    assert simulator.messages == []
    sender.send(job())  # the sender recovers on the next job
    assert len(simulator.messages) == 1


def test_the_rejection_reason_masks_the_patient_address(sender: SmtpSender, simulator: SmtpSimulator) -> None:
    simulator.faults.queue(Fault.REJECT)
    with pytest.raises(PermanentSendError) as raised:
        sender.send(job())
    assert raised.value.reason == "550 5.1.1 <[recipient]>: Recipient address rejected: User unknown"
    assert raised.value.detail["smtp_step"] == "RCPT TO"


def test_latency_within_the_timeout_delivers_and_beyond_it_is_transient(
    pki: Pki, simulator: SmtpSimulator
) -> None:
    patient = SmtpSender.from_config(settings(pki, simulator, timeout=3), CONTEXT)
    hasty = SmtpSender.from_config(settings(pki, simulator, timeout=0.3), CONTEXT)
    try:
        simulator.faults.queue(Fault.LATENCY)
        patient.send(job())
        simulator.faults.queue(Fault.LATENCY)
        with pytest.raises(TransientSendError) as raised:
            hasty.send(job(to_patient=False))
    finally:
        patient.close()
        hasty.close()
    assert "no answer from the SMTP server within 0.3 s" in raised.value.reason
    assert simulator.faults.injected == [Fault.LATENCY, Fault.LATENCY]


def test_a_server_without_starttls_is_never_spoken_to_in_clear(pki: Pki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plain = Controller(Sink(), hostname="127.0.0.1", port=port)  # a third-party server without TLS
    plain.start()
    try:
        smtp = SmtpSender.from_config(settings(pki, SimpleNamespace(host="127.0.0.1", port=port)), CONTEXT)  # type: ignore[arg-type]
        with pytest.raises(PermanentSendError, match="does not offer STARTTLS"):
            smtp.send(job())
        smtp.close()
    finally:
        plain.stop()


def test_an_unreachable_server_is_transient(pki: Pki) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = SmtpSender.from_config(
        {"host": "127.0.0.1", "port": port, "from": SENDER, "ca_file": str(pki.ca_cert), "timeout": 2},
        CONTEXT,
    )
    with pytest.raises(TransientSendError, match="cannot reach the SMTP server"):
        smtp.send(job())
    smtp.close()


# -- the simulator's protocol rules ---------------------------------------------------------------


def test_the_simulator_refuses_mail_before_starttls_and_bad_dsn_parameters(
    pki: Pki, simulator: SmtpSimulator
) -> None:
    with smtplib.SMTP(simulator.host, simulator.port, timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.mail(SENDER)[0] == 530
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(pki.auth_cert, pki.auth_key)
        client.starttls(context=context)
        client.ehlo()
        assert client.has_extn("dsn")
        assert client.mail(SENDER, ["RET=EVERYTHING"])[0] == 501
        assert client.mail(SENDER, ["RET=FULL", "ENVID=abc+2Bdef"])[0] == 250
        assert client.rcpt(DOCTOR, ["NOTIFY=NEVER,SUCCESS"])[0] == 501
        assert client.rcpt(DOCTOR, ["NOTIFY=DELAY", "ORCPT=rfc822;" + DOCTOR])[0] == 250
        code, reply = client.data(b"Subject: test\r\nMessage-ID: <x@y>\r\n\r\nhello\r\n")
        assert code == 250 and reply.startswith(b"2.0.0 Ok: queued as ")
    (received,) = simulator.messages
    assert received.dsn_parameters == {
        "RET": "FULL",
        "ENVID": "abc+2Bdef",
        "NOTIFY": "DELAY",
        "ORCPT": "rfc822;" + DOCTOR,
    }
    assert simulator.by_message_id("x@y") == [received]


def _client(pki: Pki, sim: SmtpSimulator) -> smtplib.SMTP:
    client = smtplib.SMTP(sim.host, sim.port, timeout=5)
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(pki.auth_cert, pki.auth_key)
    client.starttls(context=context)
    client.ehlo()
    return client


def test_the_simulator_reads_data_as_rfc_5321_says(pki: Pki, tmp_path: Path) -> None:
    # The DATA path reads blocks, not lines: dot-stuffing, the end marker, the size and line
    # length limits must come out as aiosmtpd's line loop gives them.
    body = b"".join(b".line %d starts with a dot\r\n..two dots\r\nplain\r\n" % n for n in range(3000))
    message = b"Subject: dots\r\nMessage-ID: <dots@y>\r\n\r\n" + body + b"."
    with SmtpSimulator(pki, max_message_bytes=200_000) as sim:
        with _client(pki, sim) as client:
            assert client.mail(SENDER)[0] == 250 and client.rcpt(DOCTOR)[0] == 250
            assert client.data(message)[0] == 250  # smtplib stuffs the dots and ends with CRLF.CRLF
            # the next transaction on the same connection is read from where the last one ended
            assert client.mail(SENDER)[0] == 250 and client.rcpt(DOCTOR)[0] == 250
            assert client.data(b"Message-ID: <empty@y>\r\n")[0] == 250
            assert client.mail(SENDER)[0] == 250 and client.rcpt(DOCTOR)[0] == 250
            assert client.data(b"Message-ID: <big@y>\r\n\r\n" + b"x" * 76 * 3000)[0] == 500  # one line
            assert client.mail(SENDER)[0] == 250 and client.rcpt(DOCTOR)[0] == 250
            assert client.data(b"Message-ID: <big@y>\r\n\r\n" + (b"x" * 74 + b"\r\n") * 3000)[0] == 552
            assert client.mail(SENDER)[0] == 250 and client.rcpt(DOCTOR)[0] == 250
            assert client.data(b"Message-ID: <long@y>\r\n\r\n" + b"y" * 1000 + b"\r\n")[0] == 500
            assert client.mail(SENDER)[0] == 250 and client.rcpt(DOCTOR)[0] == 250
            assert client.data(b"Message-ID: <fits@y>\r\n\r\n" + b"z" * 999 + b"\r\n")[0] == 250
            assert client.noop()[0] == 250
        first, empty, fits = sim.messages
    assert first.raw == message + b"\r\n"
    assert first.message_id == "dots@y" and first.headers["Subject"] == "dots"
    assert empty.raw == b"Message-ID: <empty@y>\r\n" and empty.message_id == "empty@y"
    assert fits.raw.endswith(b"z" * 999 + b"\r\n")


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b".", b"\r", b"\n", b"\r\n", b"a", b".."]), max_size=12))
def test_the_sender_stuffs_dots_as_smtplib_does(pieces: list[bytes]) -> None:
    message = b"".join(pieces)
    # smtplib.SMTP.data, for bytes: _quote_periods, CRLF-terminated, then "." CRLF.
    expected = smtplib._quote_periods(message)  # type: ignore[attr-defined]
    expected += (b"" if expected[-2:] == b"\r\n" else b"\r\n") + b".\r\n"
    assert _dot_stuffed(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        b".\r\n" * 1500 + b"a.b\n.c",
        b"x.y\r\n" * 1500 + b".end",
        b"a" * 100_000 + b"\r\n.\r\n" + b"b" * 100_000,
        b"",
    ],
)
def test_the_sender_stuffs_dots_as_smtplib_does_in_long_messages(message: bytes) -> None:
    expected = smtplib._quote_periods(message)  # type: ignore[attr-defined]
    expected += (b"" if expected[-2:] == b"\r\n" else b"\r\n") + b".\r\n"
    assert _dot_stuffed(message) == expected


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"aaaaa"]), max_size=30),
    st.integers(min_value=0, max_value=14),
)
def test_the_simulator_never_misses_a_long_line(pieces: list[bytes], length: int) -> None:
    # The quick look may say "maybe" for nothing, never "no" for a line that is there.
    data = b"\r\n" + b"".join(pieces)
    if max(map(len, data.split(b"\r\n"))) >= length:
        assert _may_hold_a_line_of(data, length)


def test_a_message_whose_lines_start_with_dots_arrives_intact(pki: Pki) -> None:
    body = b"".join(b".line %d starts with a dot\r\n..two dots\r\n.\r\nplain\r\n" % n for n in range(500))
    message = b"Subject: dots\r\nMessage-ID: <dots@y>\r\n\r\n" + body + b"."
    with SmtpSimulator(pki) as sim:
        with _client(pki, sim) as client:
            assert client.mail(SENDER, ["SIZE=10"])[0] == 250
            assert client.rcpt(DOCTOR, ["NOTIFY=SUCCESS"])[0] == 250
            assert _data(client, message)[0] == 250
            assert client.mail(SENDER, [])[0] == 250 and client.rcpt(DOCTOR, [])[0] == 250
            assert _data(client, b".\r\n")[0] == 250  # a message that is one dot
        first, dot = sim.messages
    assert first.raw == message + b"\r\n" and dot.raw == b".\r\n"
    assert first.mail_options == ("SIZE=10",) and first.rcpt_options == ("NOTIFY=SUCCESS",)


# -- configuration --------------------------------------------------------------------------------


def test_the_entry_point_names_this_sender() -> None:
    assert load_sender("smtp") is SmtpSender
    assert SmtpSender.channel is Channel.MSSANTE


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"host": None}, "destinations.mssante.host"),
        ({"from": None}, "destinations.mssante.from"),
        ({"from": "laboratoire"}, "destinations.mssante.from"),
        ({"starttls": False}, "destinations.mssante.starttls"),
        ({"starttls": True, "tls": True}, "destinations.mssante.starttls"),
        ({"starttls": "yes"}, "destinations.mssante.starttls"),
        ({"port": "587"}, "destinations.mssante.port"),
        ({"timeout": 0}, "destinations.mssante.timeout"),
        ({"hostname": "x"}, "destinations.mssante.hostname"),
        ({"username": "labo"}, "destinations.mssante: password_file or password_env"),
        (
            {"username": "labo", "password_env": "CRBIO_TEST_UNSET_VARIABLE"},
            "destinations.mssante.password_env",
        ),
        ({"ca_file": "/nonexistent/ca.pem"}, "destinations.mssante.ca_file"),
        ({"client_key": None}, "destinations.mssante.client_key"),
    ],
)
def test_configuration_errors_name_the_setting(
    pki: Pki, simulator: SmtpSimulator, changes: dict[str, Any], setting: str
) -> None:
    section = settings(pki, simulator, **{k: v for k, v in changes.items() if v is not None})
    for key, value in changes.items():
        if value is None:
            section.pop(key, None)
    with pytest.raises(ConfigurationError) as raised:
        SmtpSender.from_config(section, CONTEXT)
    assert str(raised.value).startswith(setting)


def test_defaults_and_password_from_the_environment(
    pki: Pki, simulator: SmtpSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRBIO_TEST_SMTP_PASSWORD", "s3cret")
    starttls = SmtpSender.from_config({"host": "mss.example", "from": SENDER}, CONTEXT)
    implicit = SmtpSender.from_config({"host": "mss.example", "from": SENDER, "tls": True}, CONTEXT)
    authed = SmtpSender.from_config(
        {
            "host": "mss.example",
            "from": SENDER,
            "username": "labo",
            "password_env": "CRBIO_TEST_SMTP_PASSWORD",
        },
        CONTEXT,
    )
    assert (starttls.port, starttls.implicit_tls, starttls.timeout) == (587, False, 30.0)
    assert (implicit.port, implicit.implicit_tls) == (465, True)
    assert authed.username == "labo" and "s3cret" not in repr(vars(authed).get("username"))
    assert starttls.tls.verify_mode is ssl.CERT_REQUIRED and starttls.tls.check_hostname


def test_a_simulator_keeping_few_messages_still_knows_every_resend(pki: Pki) -> None:
    def mail(message_id: str) -> bytes:
        return f"Subject: x\r\nMessage-ID: <{message_id}@y>\r\n\r\nbody\r\n".encode()

    with SmtpSimulator(pki, retain=2) as sim:
        with _client(pki, sim) as client:
            for message_id in ("a", "b", "c", "a"):
                client.sendmail(SENDER, [DOCTOR], mail(message_id))
        kept = sim.messages
    assert [(m.message_id, m.duplicate) for m in kept] == [("c@y", False), ("a@y", True)]
    assert sim.by_message_id("a@y") == [kept[1]] and sim.by_message_id("b@y") == []
