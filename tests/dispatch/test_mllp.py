"""MllpSender against the MLLP simulator (plain TCP and TLS with client certificates) and raw servers."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import hl7
import pytest
from hl7_fixtures import FLAGS, RECIPIENTS

from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.hl7v2 import build_oru, parse_ack
from crbio.dispatch.senders.base import SenderContext, load_sender
from crbio.dispatch.senders.mllp import MllpSender, frame, read_frame
from crbio.errors import ConfigurationError, PermanentSendError, TransientSendError
from crbio.simulators.base import Fault, FaultPlan
from crbio.simulators.mllp import MllpSimulator
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki

OUTPUT = Path(__file__).resolve().parents[2] / "samples" / "output"
CONTEXT = SenderContext("920000015", "Laboratoire des Charmes", "1.2.250.1.999.1", software_version="1.0")


def make_job(
    sample: str = "01-biochimie", action: Action = Action.SUBMIT, *, attempt: int = 1, no_reply: bool = True
) -> Job:
    delivery = Delivery(
        Channel.HL7V2,
        action,
        Recipient(RecipientKind.SYSTEM, "pfi-simulation"),
        f"doc-{sample}",
        1,
        None,
        {"flags": FLAGS, "mssante_recipients": RECIPIENTS, "no_reply": no_reply, "confidentiality": ["N"]},
    )
    return Job(delivery, attempt, (OUTPUT / f"{sample}.n3.xml").read_bytes(), b"")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[MllpSimulator]:
    with MllpSimulator(faults=FaultPlan(latency=0.05), store_dir=tmp_path / "received") as sim:
        yield sim


_senders: list[MllpSender] = []


@pytest.fixture(autouse=True)
def _close_senders() -> Iterator[None]:
    yield  # senders keep their connection for the next message: close them after each test
    while _senders:
        _senders.pop().close()


def sender_for(host: str, port: int, **settings: Any) -> MllpSender:
    section = {
        "name": "pfi-simulation",
        "host": host,
        "port": port,
        "timeout": 5,
        "receiving_application": "PFI",
        "receiving_facility": "CH-SIMULATION",
        **settings,
    }
    sender = MllpSender.from_config(section, CONTEXT)
    _senders.append(sender)
    return sender


def tls_settings(pki: Pki, *, client: bool = True) -> dict[str, Any]:
    settings: dict[str, Any] = {"tls": True, "ca_file": str(pki.ca_cert)}
    if client:
        settings.update(client_cert=str(pki.auth_cert), client_key=str(pki.auth_key))
    return settings


def exchange(host: str, port: int, *messages: str) -> list[str]:
    """Send raw messages on one plain connection and return the replies."""
    replies = []
    with socket.create_connection((host, port), timeout=5) as sock:
        for message in messages:
            sock.sendall(frame(message.encode("utf-8")))
            replies.append(read_frame(sock, deadline=time.monotonic() + 5).decode("utf-8"))
    return replies


class RawServer:
    """A bare TCP listener answering each MLLP frame with ``respond(message)``; None: close, no reply.

    It closes each connection after ``per_connection`` messages.
    """

    def __init__(self, respond: Callable[[str], bytes | None], *, per_connection: int = 1) -> None:
        self.respond = respond
        self.per_connection = per_connection
        self.received: list[str] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with connection:
                connection.settimeout(5)
                for _ in range(self.per_connection):
                    try:
                        message = read_frame(connection).decode("utf-8")
                    except (OSError, ValueError):
                        break
                    self.received.append(message)
                    reply = self.respond(message)
                    if reply is None:
                        self._stop.wait(1.0)  # hold the connection open without answering
                        break
                    connection.sendall(reply)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._listener.close()


def ack(code: str, control_id: str, *extra: str) -> bytes:
    head = "MSH|^~\\&|PFI|CHU|crbio|LAB|20240104183006||ACK^R01^ACK|ACK42|P|2.5|||||FRA|UNICODE UTF-8"
    return frame("\r".join([head, f"MSA|{code}|{control_id}", *extra]).encode() + b"\r")


def control_id_of(message: str) -> str:
    return str(hl7.parse(message).segment("MSH")(10))


# --- the sender and the simulator ------------------------------------------------------------


def test_sender_is_registered_under_mllp() -> None:
    assert load_sender("mllp") is MllpSender


def test_plain_tcp_message_is_accepted_and_stored(simulator: MllpSimulator, tmp_path: Path) -> None:
    job = make_job()
    sender = sender_for(simulator.host, simulator.port)
    acknowledgement = sender.send(job)
    assert acknowledgement.summary == "MSA AA"
    assert acknowledgement.detail["msa"] == "AA"
    assert (
        acknowledgement.detail["control_id"] == acknowledgement.detail["message_control_id"] == job.control_id
    )
    assert acknowledgement.detail["ack_control_id"]
    json.dumps(dict(acknowledgement.detail))  # journal-ready

    (message,) = simulator.messages
    assert message.control_id == job.control_id and not message.duplicate
    assert (message.event, message.order_control) == ("F", "NW")
    assert message.cda == job.n3
    assert message.flags == FLAGS and list(message.flags) == list(FLAGS)
    assert message.recipients == ("jean.martin@test.mssante.fr", "279035121518989@patient.mssante.fr")
    assert message.no_reply and message.sender_id == "810100012342"
    assert message.client_certificate is None
    assert str(message.parsed.segment("MSH")(5)) == "PFI"
    stored = tmp_path / "received"
    assert (stored / f"{job.control_id}.cda.xml").read_bytes() == job.n3
    assert json.loads((stored / f"{job.control_id}.json").read_text())["event"] == "F"
    assert (stored / f"{job.control_id}.hl7").read_text().startswith("MSH|^~\\&|crbio|")


def test_a_resend_is_acknowledged_and_flagged_duplicate(simulator: MllpSimulator, tmp_path: Path) -> None:
    sender = sender_for(simulator.host, simulator.port)
    first = sender.send(make_job(attempt=1))
    again = sender.send(make_job(attempt=2))
    assert first.detail["control_id"] == again.detail["control_id"]
    assert [m.duplicate for m in simulator.messages] == [False, True]
    assert len(simulator.accepted) == 1
    assert len(list((tmp_path / "received").glob("*.cda.xml"))) == 1


@pytest.mark.parametrize(
    ("sample", "action", "event", "order_control"),
    [("08b-diabete-v2", Action.REPLACE, "C", "RO"), ("08b-diabete-v2", Action.DELETE, "D", "CA")],
)
def test_replacement_and_deletion_events(
    simulator: MllpSimulator, sample: str, action: Action, event: str, order_control: str
) -> None:
    sender_for(simulator.host, simulator.port).send(make_job(sample, action))
    (message,) = simulator.messages
    assert (message.event, message.order_control) == (event, order_control)


def test_tls_with_a_required_client_certificate(pki: Pki, tmp_path: Path) -> None:
    with MllpSimulator(pki=pki, tls=True, require_client_cert=True, store_dir=tmp_path) as sim:
        acknowledgement = sender_for("127.0.0.1", sim.port, **tls_settings(pki)).send(make_job())
        assert acknowledgement.detail["msa"] == "AA"
        (message,) = sim.messages
        assert message.client_certificate == "LABORATOIRE TEST ORG AUTH_CLI"
        # Without a client certificate the handshake is refused: retryable, nothing stored.
        with pytest.raises(TransientSendError):
            sender_for("localhost", sim.port, **tls_settings(pki, client=False)).send(
                make_job("08a-diabete-v1")
            )
        assert len(sim.messages) == 1


def test_tls_with_an_optional_client_certificate(pki: Pki) -> None:
    with MllpSimulator(pki=pki, tls=True) as sim:
        sender_for("localhost", sim.port, **tls_settings(pki, client=False)).send(make_job())
        sender_for("localhost", sim.port, **tls_settings(pki)).send(make_job("08a-diabete-v1"))
        assert [m.client_certificate for m in sim.messages] == [None, "LABORATOIRE TEST ORG AUTH_CLI"]


def test_tls_server_not_trusted_is_permanent(pki: Pki) -> None:
    # Like the other senders: retrying cannot fix a CA bundle, a person must.
    with MllpSimulator(pki=pki, tls=True) as sim:
        sender = sender_for("localhost", sim.port, tls=True)  # public CA store only
        with pytest.raises(PermanentSendError) as caught:
            sender.send(make_job())
        assert caught.value.reason.startswith("TLS: destinations.hl7v2.ca_file:")
        assert not sim.messages


def test_plain_sender_against_a_tls_listener_fails_cleanly(pki: Pki) -> None:
    with MllpSimulator(pki=pki, tls=True) as sim, pytest.raises(TransientSendError):
        sender_for("127.0.0.1", sim.port, timeout=1).send(make_job())


@pytest.mark.parametrize(
    ("fault", "error", "reason"),
    [
        (Fault.BUSY, TransientSendError, "MSA AE: 206 Application record locked"),
        (Fault.SERVER_ERROR, TransientSendError, "connection closed without acknowledgement"),
        (Fault.DROP, TransientSendError, "connection"),
        (Fault.REJECT, PermanentSendError, "MSA AR: 204 Unknown key identifier"),
    ],
)
def test_faults_are_mapped(
    simulator: MllpSimulator, fault: Fault, error: type[Exception], reason: str
) -> None:
    sender = sender_for(simulator.host, simulator.port)
    simulator.faults.queue(fault)
    with pytest.raises(error) as caught:
        sender.send(make_job())
    assert reason in caught.value.reason  # type: ignore[attr-defined]
    assert caught.value.detail["message_control_id"] == make_job().control_id  # type: ignore[attr-defined]
    assert not simulator.messages
    # The fault is spent: the next attempt goes through.
    assert sender.send(make_job(attempt=2)).detail["msa"] == "AA"
    assert len(simulator.messages) == 1 and not simulator.messages[0].duplicate


def test_refusals_are_recorded(simulator: MllpSimulator) -> None:
    simulator.faults.queue(Fault.BUSY)
    simulator.faults.queue(Fault.REJECT)
    sender = sender_for(simulator.host, simulator.port)
    for _ in range(2):
        with pytest.raises((TransientSendError, PermanentSendError)):
            sender.send(make_job())
    assert [(r.ack_code, r.error_code) for r in simulator.refused] == [("AE", "206"), ("AR", "204")]
    assert {r.control_id for r in simulator.refused} == {make_job().control_id}


def test_latency_only_delays(simulator: MllpSimulator) -> None:
    simulator.faults.queue(Fault.LATENCY)
    started = time.monotonic()
    assert sender_for(simulator.host, simulator.port).send(make_job()).detail["msa"] == "AA"
    assert time.monotonic() - started >= 0.05


def test_random_faults_then_everything_arrives_once(simulator: MllpSimulator) -> None:
    simulator.faults.set_rate(0.5)
    simulator.faults._random.seed(7)
    sender = sender_for(simulator.host, simulator.port)
    samples = ["01-biochimie", "02-hemogramme", "03-ecbu", "04-serologie", "05-immuno-hematologie"]
    for sample in samples:
        for attempt in range(1, 30):
            try:
                sender.send(make_job(sample, attempt=attempt))
                break
            except TransientSendError:
                continue
    assert sorted(m.cda for m in simulator.accepted) == sorted(
        (OUTPUT / f"{s}.n3.xml").read_bytes() for s in samples
    )
    assert simulator.faults.injected


# --- what the simulator refuses ---------------------------------------------------------------


def oru(job: Job | None = None) -> str:
    return build_oru(
        job or make_job(),
        CONTEXT,
        receiving_application="PFI",
        receiving_facility="CH",
        sent_at=datetime(2024, 1, 4, 18, 0),
    )


def tamper(message: str, old: str, new: str) -> str:
    assert old in message
    return message.replace(old, new, 1)


def drop_segment(message: str, prefix: str) -> str:
    lines = message.split("\r")
    index = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    return "\r".join(lines[:index] + lines[index + 1 :])


@pytest.mark.parametrize(
    ("change", "code", "location"),
    [
        (lambda m: tamper(m, "ORC|NW", "ORC|RO"), "103", "OBX^1^11"),  # ORC-1 disagrees with OBX-11
        (lambda m: tamper(m, "||||||F\rPRT", "||||||D\rPRT"), "103", "OBX^1^11"),
        (lambda m: tamper(m, "|ORU^R01^ORU_R01|", "|MDM^T02^MDM_T02|"), "200", "MSH^1^9"),
        (lambda m: tamper(m, "|2.5|", "|2.6|"), "203", "MSH^1^12"),
        (lambda m: tamper(m, "|2.1^CISIS_CDA_HL7_V2", "|1.0^CISIS_TLR_HL7_V2"), "103", "MSH^1^21"),
        (lambda m: drop_segment(m, "PID|"), "100", "PID"),
        (lambda m: tamper(m, "|ED|", "|TX|"), "102", "OBX^1^2"),
        (lambda m: tamper(m, "^Base64^", "^Base64^!!"), "102", "OBX^1^5"),
        (lambda m: m, None, None),  # untouched: accepted
        (lambda m: drop_segment(m, "PRT||UC||SB"), "101", "PRT"),
        (
            lambda m: tamper(
                m, "MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N", "MASQUE_PS^x^MetaDMPMSS||P"
            ),
            "103",
            "OBX^2^5",
        ),
    ],
)
def test_simulator_rejects_what_breaks_the_volet(
    simulator: MllpSimulator, change: Callable[[str], str], code: str | None, location: str | None
) -> None:
    message = oru()
    (reply,) = exchange(simulator.host, simulator.port, change(message))
    msa, control_id, error = parse_ack(reply)
    assert control_id == make_job().control_id
    if code is None:
        assert msa == "AA"
        return
    assert msa == "AR" and error is not None
    assert error.startswith(code) and f"at {location}" in error
    assert not simulator.messages
    assert simulator.refused[-1].error_code == code


def test_simulator_rejects_a_document_that_is_not_a_cda(simulator: MllpSimulator) -> None:
    not_cda = base64.b64encode(b"<note>not a CDA</note>").decode()
    message = re.sub(r"\^Base64\^[A-Za-z0-9+/=]+", f"^Base64^{not_cda}", oru(), count=1)
    (reply,) = exchange(simulator.host, simulator.port, message)
    assert parse_ack(reply)[0] == "AR" and "102" in (parse_ack(reply)[2] or "")


def test_simulator_answers_garbage_with_ar(simulator: MllpSimulator) -> None:
    (reply,) = exchange(simulator.host, simulator.port, "this is not HL7")
    msa, control_id, error = parse_ack(reply)
    assert (msa, control_id) == ("AR", None) and error is not None and error.startswith("100")


def test_simulator_ack_mirrors_the_message_header(simulator: MllpSimulator) -> None:
    first, second = exchange(
        simulator.host, simulator.port, oru(), oru(make_job("03-ecbu"))
    )  # one connection
    ack_message = hl7.parse(first)
    msh = ack_message.segment("MSH")
    assert str(msh(9)) == "ACK^R01^ACK" and str(msh(12)) == "2.5"
    assert (str(msh(3)), str(msh(4)), str(msh(5))) == ("PFI", "CH", "crbio")
    assert str(msh(6)) == "920000015^1.2.250.1.999.1^ISO" and str(msh(11)) == "P"
    assert parse_ack(second)[0] == "AA" and len(simulator.messages) == 2


def _shape(node: Any) -> Any:
    """A python-hl7 tree as nested (container class, children): equal trees, equal shapes."""
    if isinstance(node, str):
        return node
    return (type(node).__name__, [_shape(child) for child in node])


@pytest.mark.parametrize("sample", ["01-biochimie", "09-reanimation-long", "13-identite-provisoire"])
def test_the_simulator_keeps_the_tree_python_hl7_gives(simulator: MllpSimulator, sample: str) -> None:
    job = make_job(sample)
    (reply,) = exchange(simulator.host, simulator.port, oru(job))
    assert parse_ack(reply)[0] == "AA"
    (message,) = simulator.messages
    assert message.cda == job.n3
    assert _shape(message.parsed) == _shape(hl7.parse(message.raw))
    assert str(message.parsed) == str(hl7.parse(message.raw))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m,
        lambda m: tamper(m, "^Base64^", "^Base64^QUJD&"),  # a subcomponent in the document
        lambda m: tamper(m, "|^TEXT^XML^Base64^", "|x~^TEXT^XML^Base64^"),  # OBX-5 repeats
        lambda m: re.sub(r"\^Base64\^[A-Za-z0-9+/=]+", "^Base64^PD94bWw/Pg==", m, count=1),  # small
        lambda m: m.replace("|", "#").replace("^", "$"),  # the message's own separators
        lambda m: drop_segment(drop_segment(m, "OBX|1|"), "PRT||UC||SB"),  # no document OBX
        lambda m: m + "\r\n  ",  # trailing blanks, as python-hl7 strips them
    ],
)
def test_reading_a_message_gives_python_hl7s_tree(change: Callable[[str], str]) -> None:
    from crbio.simulators.mllp import _parse

    text = change(oru(make_job("09-reanimation-long")))
    assert _shape(_parse(text)) == _shape(hl7.parse(text))


def test_a_resend_after_clearing_is_not_a_duplicate(simulator: MllpSimulator) -> None:
    sender = sender_for(simulator.host, simulator.port)
    sender.send(make_job())
    simulator.clear()
    sender.send(make_job(attempt=2))
    simulator.messages.clear()  # changed from outside: the index of control ids follows
    sender.send(make_job(attempt=3))
    sender.send(make_job(attempt=4))
    assert [m.duplicate for m in simulator.messages] == [False, True]


def test_messages_in_pieces_and_in_a_row_are_each_answered(simulator: MllpSimulator) -> None:
    first, second = make_job(), make_job("03-ecbu")
    framed = frame(oru(first).encode())
    data = framed + frame(oru(second).encode())
    cut = len(framed) - 1  # between the two bytes of the first end block
    with socket.create_connection((simulator.host, simulator.port), timeout=5) as sock:
        for piece in (data[:1000], data[1000:cut], data[cut : cut + 1], data[cut + 1 :]):
            sock.sendall(piece)
            time.sleep(0.05)  # separate reads on the other side
        received = b""
        while received.count(b"\x1c\r") < 2:  # both acknowledgements, maybe in one read
            chunk = sock.recv(65536)
            assert chunk, "connection closed before both acknowledgements"
            received += chunk
    replies = [block.strip(b"\x0b\r").decode() for block in received.split(b"\x1c\r")[:2]]
    assert [parse_ack(r)[:2] for r in replies] == [("AA", first.control_id), ("AA", second.control_id)]
    assert [m.cda for m in simulator.messages] == [first.n3, second.n3]


def test_simulator_needs_the_pki_for_tls() -> None:
    with pytest.raises(ValueError, match="PKI"):
        MllpSimulator(tls=True)


# --- the sender against raw servers -----------------------------------------------------------


def test_an_ack_for_another_message_is_transient() -> None:
    with RawServer(lambda message: ack("AA", "SOMEONE-ELSE")) as server:
        with pytest.raises(TransientSendError) as caught:
            sender_for("127.0.0.1", server.port).send(make_job())
        assert caught.value.reason == "acknowledgement control id mismatch"
        assert caught.value.detail["acknowledged_control_id"] == "SOMEONE-ELSE"
        assert len(server.received) == 1


@pytest.mark.parametrize(
    ("code", "extra", "outcome"),
    [
        ("CA", (), None),
        ("AE", (), TransientSendError),
        ("CE", (), TransientSendError),
        ("AR", (), PermanentSendError),
        ("CR", (), PermanentSendError),
        # ERR-3 decides before MSA-1: a content error is final, an internal error is not.
        ("AE", ("ERR||PID^1^3|101^Required field missing^HL70357|E",), PermanentSendError),
        ("AR", ("ERR||MSH|207^Application internal error^HL70357|E",), TransientSendError),
    ],
)
def test_ack_codes_are_classified(code: str, extra: tuple[str, ...], outcome: type[Exception] | None) -> None:
    with RawServer(lambda message: ack(code, control_id_of(message), *extra)) as server:
        sender = sender_for("127.0.0.1", server.port)
        if outcome is None:
            assert sender.send(make_job()).detail["msa"] == code
        else:
            with pytest.raises(outcome) as caught:
                sender.send(make_job())
            assert caught.value.reason.startswith(f"MSA {code}")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "reply",
    [b"\x0bnot an ack\x1c\r", b"\x0bMSH|^~\\&|PFI|CHU|a|b|2024||ACK^R01^ACK|1|P|2.5\x1c\r", b"\x0bMSH|^~\\&"],
)
def test_unreadable_or_truncated_acks_are_transient(reply: bytes) -> None:
    with RawServer(lambda message: reply) as server, pytest.raises(TransientSendError):
        sender_for("127.0.0.1", server.port).send(make_job())


def test_messages_in_a_row_share_one_connection() -> None:
    with RawServer(lambda message: ack("AA", control_id_of(message)), per_connection=10) as server:
        sender = sender_for("127.0.0.1", server.port)
        for sample in ("01-biochimie", "03-ecbu", "04-serologie"):
            assert sender.send(make_job(sample)).detail["msa"] == "AA"
        assert (len(server.received), server.connections) == (3, 1)


def test_a_connection_the_server_closed_is_not_reused() -> None:
    # This server closes each connection after one message, as some interface engines do.
    with RawServer(lambda message: ack("AA", control_id_of(message))) as server:
        sender = sender_for("127.0.0.1", server.port)
        assert sender.send(make_job("01-biochimie")).detail["msa"] == "AA"
        time.sleep(0.1)  # the server's FIN arrives
        assert sender.send(make_job("03-ecbu")).detail["msa"] == "AA"
        assert (len(server.received), server.connections) == (2, 2)


def test_keep_alive_zero_opens_one_connection_per_message() -> None:
    with RawServer(lambda message: ack("AA", control_id_of(message)), per_connection=10) as server:
        sender = sender_for("127.0.0.1", server.port, keep_alive=0)
        sender.send(make_job("01-biochimie"))
        sender.send(make_job("03-ecbu"))
        assert server.connections == 2


def test_no_ack_before_the_timeout_is_transient() -> None:
    with RawServer(lambda message: None) as server:
        started = time.monotonic()
        with pytest.raises(TransientSendError) as caught:
            sender_for("127.0.0.1", server.port, timeout=0.3).send(make_job())
        assert caught.value.reason == "timeout" and time.monotonic() - started < 2


def test_connection_refused_is_transient() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(TransientSendError) as caught:
        sender_for("127.0.0.1", port).send(make_job())
    assert caught.value.reason == "connection refused"


def test_a_message_that_cannot_be_built_is_permanent() -> None:
    job = make_job()
    bad = Job(
        Delivery(
            job.delivery.channel,
            job.delivery.action,
            job.delivery.recipient,
            job.delivery.document_id,
            1,
            None,
            {"flags": {"NOT_A_FLAG": "Y"}},
        ),
        1,
        job.n3,
        b"",
    )
    with pytest.raises(PermanentSendError, match="cannot be built"):
        sender_for("127.0.0.1", 9).send(bad)
    with pytest.raises(PermanentSendError):
        sender_for("127.0.0.1", 9).send(Job(job.delivery, 1, b"<not-cda/>", b""))


# --- configuration ----------------------------------------------------------------------------


BASE: Mapping[str, Any] = {
    "host": "pfi.chu.fr",
    "port": 2575,
    "receiving_application": "PFI",
    "receiving_facility": "CHU",
}


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"host": ""}, "destinations.hl7v2.host"),
        ({"port": "2575"}, "destinations.hl7v2.port"),
        ({"port": 70000}, "destinations.hl7v2.port"),
        ({"tls": "yes"}, "destinations.hl7v2.tls"),
        ({"timeout": 0}, "destinations.hl7v2.timeout"),
        ({"keep_alive": -1}, "destinations.hl7v2.keep_alive"),
        ({"processing_id": "X"}, "destinations.hl7v2.processing_id"),
        ({"receiving_facility": None}, "destinations.hl7v2.receiving_facility"),
        ({"ca_file": "ca.pem"}, "destinations.hl7v2.ca_file"),  # TLS settings without tls = true
        ({"hots": "typo"}, "destinations.hl7v2.hots"),
    ],
)
def test_configuration_errors_name_the_setting(change: dict[str, Any], setting: str) -> None:
    section = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(ConfigurationError) as caught:
        MllpSender.from_config(section, CONTEXT)
    assert caught.value.message.startswith(setting + ":")


def test_configuration_defaults(pki: Pki) -> None:
    sender = MllpSender.from_config(BASE, CONTEXT)
    assert (sender.processing_id, sender.timeout, sender.tls) == ("P", 30.0, None)
    secured = MllpSender.from_config({**BASE, **tls_settings(pki), "processing_id": "T"}, CONTEXT)
    assert secured.tls is not None and secured.processing_id == "T"
    with pytest.raises(ConfigurationError, match="client_key"):
        MllpSender.from_config({**BASE, "tls": True, "client_cert": str(pki.auth_cert)}, CONTEXT)


def test_a_simulator_keeping_few_messages_still_knows_every_resend(tmp_path: Path) -> None:
    with MllpSimulator(store_dir=tmp_path / "received", retain=1) as sim:
        sender = sender_for(sim.host, sim.port)
        sender.send(make_job())
        sender.send(make_job("03-ecbu"))
        sender.send(make_job(attempt=2))  # the first one again: the simulator forgot it, not its id
        (kept,) = sim.messages
    assert kept.duplicate and kept.control_id == make_job().control_id
    assert len(list((tmp_path / "received").glob("*.hl7"))) == 2
