"""The MSSanté operator-API sender against the operator-API simulator, over real HTTPS."""

from __future__ import annotations

import copy
import io
import json
import socket
import ssl
import time
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from crbio.dispatch.config import DispatchConfig
from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.mssante import body_text, pdf_file_name, subject
from crbio.dispatch.redaction import redact
from crbio.dispatch.senders.base import SenderContext, load_sender
from crbio.dispatch.senders.operator_api import (
    OperatorApiSender,
    _retry_after,
    build_request,
)
from crbio.errors import ConfigurationError, PermanentSendError, TransientSendError
from crbio.simulators.base import Fault, FaultPlan
from crbio.simulators.operator_api import OperatorApiSimulator
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki

OUTPUT = Path(__file__).resolve().parents[2] / "samples" / "output"
CONTEXT = SenderContext(
    laboratory_finess="920000015",
    laboratory_name="Laboratoire des Charmes",
    laboratory_oid="1.2.250.1.999.1",
    responsible_name="CAMPARINI Marcel",
    software_name="crbio",
    software_version="1.0",
    nil="NIL-0000",
)
LAB_ADDRESS = "laboratoire@labo-charmes.mssante.fr"
PRESCRIBER = Recipient(
    RecipientKind.PROFESSIONAL, "jean.martin@test.mssante.fr", "10100023455", "DR Jean MARTIN"
)
XDM_LAYOUT = {"README.TXT", "INDEX.HTM", "IHE_XDM/SUBSET01/METADATA.XML", "IHE_XDM/SUBSET01/DOC0001.XML"}


def make_job(
    sample: str = "01-biochimie",
    *,
    action: Action = Action.SUBMIT,
    recipient: Recipient = PRESCRIBER,
    replaces: str | None = None,
    attempt: int = 1,
    metadata: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
) -> Job:
    n3 = (OUTPUT / f"{sample}.n3.xml").read_bytes()
    header = read_header(n3)
    to_patient = recipient.kind is RecipientKind.PATIENT
    headers = {"X-MSS-CODECDA": "11502-2", "X-MSS-INS": "O" if header.ins else "N"}
    if to_patient:
        headers["X-MSS-MES"] = "FIN"
    data: dict[str, Any] = {
        "confidentiality": ["N"],
        "secret_connection": False,
        "headers": headers,
        "to_patient": to_patient,
        "request_dsn": True,
        "request_mdn": False,
    }
    data.update(metadata or {})
    delivery = Delivery(
        Channel.MSSANTE, action, recipient, header.document_id, header.version, replaces, data
    )
    return Job(delivery, attempt, n3, (OUTPUT / f"{sample}.pdf").read_bytes(), previous)


def patient_recipient(sample: str = "01-biochimie") -> Recipient:
    header = read_header((OUTPUT / f"{sample}.n3.xml").read_bytes())
    assert header.ins is not None
    return Recipient(RecipientKind.PATIENT, f"{header.ins[0]}@patient.mssante.fr")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def simulator(pki: Pki, tmp_path: Path) -> Iterator[OperatorApiSimulator]:
    with OperatorApiSimulator(
        pki, client_id="crbio-lab", client_secret="s3cret", store_dir=tmp_path / "store"
    ) as sim:
        yield sim


def section(sim: OperatorApiSimulator, pki: Pki, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "base_url": sim.base_url,
        "token_url": sim.token_url,
        "client_id": "crbio-lab",
        "client_secret": "s3cret",
        "ca_file": str(pki.ca_cert),
        "sender_address": LAB_ADDRESS,
        "timeout": 5,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


@pytest.fixture
def sender(simulator: OperatorApiSimulator, pki: Pki) -> Iterator[OperatorApiSender]:
    sender = OperatorApiSender.from_config(section(simulator, pki), CONTEXT)
    yield sender
    sender.close()


def calls(sim: OperatorApiSimulator, path_end: str) -> list[int]:
    return [r.status for r in sim.requests if r.path.endswith(path_end)]


def parameters(resource: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in resource["parameter"] if p["name"] == name]


# -- OAuth 2.0 ----------------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused(simulator: OperatorApiSimulator, sender: OperatorApiSender) -> None:
    sender.send(make_job())
    sender.send(make_job("02-hemogramme"))
    assert simulator.tokens_issued == 1
    assert calls(simulator, "/oauth/token") == [200]
    assert calls(simulator, "$send-to-mss") == [201, 201]
    token_request = simulator.requests[0]
    assert "authorization" not in token_request.headers  # client_secret_post, as Lifen documents


def test_token_is_renewed_before_it_expires(pki: Pki, tmp_path: Path) -> None:
    with OperatorApiSimulator(pki, client_id="crbio-lab", client_secret="s3cret", token_lifetime=1) as sim:
        sender = OperatorApiSender.from_config(section(sim, pki), CONTEXT)
        try:
            first = sender.access_token()
            assert sender.access_token() == first  # still fresh
            sender.send(make_job())
            time.sleep(1.0)
            sender.send(make_job("02-hemogramme"))
        finally:
            sender.close()
        assert sim.tokens_issued == 2
        assert 401 not in calls(sim, "$send-to-mss")  # renewed ahead, never refused


def test_a_refused_token_is_renewed_once(simulator: OperatorApiSimulator, sender: OperatorApiSender) -> None:
    sender.send(make_job())
    simulator.revoke_tokens()  # e.g. the operator restarted and forgot its tokens
    ack = sender.send(make_job("02-hemogramme"))
    assert ack.detail["http_status"] == 201
    assert simulator.tokens_issued == 2
    assert calls(simulator, "$send-to-mss") == [201, 401, 201]


def test_401_after_renewal_is_permanent(simulator: OperatorApiSimulator, sender: OperatorApiSender) -> None:
    simulator.reject_tokens = True
    with pytest.raises(PermanentSendError) as caught:
        sender.send(make_job())
    assert caught.value.reason.startswith("HTTP 401 login")
    assert caught.value.detail["http_status"] == 401
    assert simulator.tokens_issued == 2  # the first token and one renewal, no more
    assert calls(simulator, "$send-to-mss") == [401, 401]
    assert simulator.messages == []


def test_bad_client_secret_is_a_permanent_auth_failure(simulator: OperatorApiSimulator, pki: Pki) -> None:
    sender = OperatorApiSender.from_config(section(simulator, pki, client_secret="wrong"), CONTEXT)
    try:
        with pytest.raises(PermanentSendError) as caught:
            sender.send(make_job())
    finally:
        sender.close()
    assert "OAuth token refused: HTTP 401 invalid_client" in caught.value.reason
    assert caught.value.detail["oauth_error"] == "invalid_client"
    assert "wrong" not in str(caught.value) and "s3cret" not in str(caught.value)
    assert calls(simulator, "$send-to-mss") == []


def test_client_secret_basic_and_secret_file(
    simulator: OperatorApiSimulator, pki: Pki, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = section(
        simulator, pki, client_secret=None, client_secret_file=str(secret), token_auth="client_secret_basic"
    )
    sender = OperatorApiSender.from_config(config, CONTEXT)
    try:
        sender.send(make_job())
    finally:
        sender.close()
    assert simulator.requests[0].headers["authorization"].startswith("Basic ")
    assert len(simulator.messages) == 1


def test_unreachable_token_endpoint_is_transient(simulator: OperatorApiSimulator, pki: Pki) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = OperatorApiSender.from_config(
        section(simulator, pki, token_url=f"https://127.0.0.1:{port}/oauth/token"), CONTEXT
    )
    try:
        with pytest.raises(TransientSendError) as caught:
            sender.send(make_job())
    finally:
        sender.close()
    assert caught.value.reason == "connection failed"


def test_untrusted_operator_certificate_is_permanent(simulator: OperatorApiSimulator, pki: Pki) -> None:
    sender = OperatorApiSender.from_config(section(simulator, pki, ca_file=None), CONTEXT)
    try:
        with pytest.raises(PermanentSendError) as caught:
            sender.send(make_job())
    finally:
        sender.close()
    assert caught.value.reason.startswith("TLS: the operator's certificate was not accepted")


def test_client_certificate_is_presented_when_configured(simulator: OperatorApiSimulator, pki: Pki) -> None:
    config = section(simulator, pki, client_cert=str(pki.auth_cert), client_key=str(pki.auth_key))
    sender = OperatorApiSender.from_config(config, CONTEXT)
    try:
        sender.send(make_job())
    finally:
        sender.close()
    assert {r.client_certificate for r in simulator.requests} == {"LABORATOIRE TEST ORG AUTH_CLI"}


# -- what is sent ---------------------------------------------------------------------------------


def test_send_is_stored_with_recipient_and_attachments(
    simulator: OperatorApiSimulator, sender: OperatorApiSender, tmp_path: Path
) -> None:
    job = make_job()
    ack = sender.send(job)
    (message,) = simulator.messages
    header = job.header
    assert ack.detail["transaction_id"] == message.transaction_id
    assert ack.detail["http_status"] == 201
    assert ack.detail["message_id"] == message.message_id == f"{job.message_id}@labo-charmes.mssante.fr"
    assert ack.detail["tracking_url"].endswith(f"$tracking?transaction-id={message.transaction_id}")
    assert message.transaction_id in ack.summary
    assert message.idempotency_key == job.key
    assert message.recipients == ("jean.martin@test.mssante.fr",)
    assert message.recipient_types == ("Practitioner",)
    (recipient,) = parameters(message.resource, "recipients")
    assert recipient["resource"]["identifier"] == [
        {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810100023455"}
    ]
    # The XDM and the PDF, decoded back.
    pdf_name = pdf_file_name(header)
    assert set(message.attachments) == {"IHE_XDM.ZIP", pdf_name}
    assert message.content_types == {"IHE_XDM.ZIP": "application/zip", pdf_name: "application/pdf"}
    assert message.attachments[pdf_name] == job.pdf
    with zipfile.ZipFile(io.BytesIO(message.attachments["IHE_XDM.ZIP"])) as xdm:
        assert set(xdm.namelist()) == XDM_LAYOUT
        assert xdm.read("IHE_XDM/SUBSET01/DOC0001.XML") == job.n3
    assert message.xdm_action is None
    # The mail's content, as on the SMTP path.
    assert message.mail_subject == subject(header)
    assert message.mail_body == body_text(job)
    assert message.sender_address == LAB_ADDRESS
    assert message.action == "submit"
    assert message.mss_headers == {"X-MSS-CODECDA": "11502-2", "X-MSS-INS": "O", "X-MSS-NIL": "NIL-0000"}
    assert parameters(message.resource, "request-dsn") == [{"name": "request-dsn", "valueBoolean": True}]
    # The patient, identified by the INS the document carries.
    (subject_parameter,) = parameters(message.resource, "detailed-subject")
    patient = subject_parameter["resource"]
    assert header.ins is not None
    assert patient["identifier"][0] == {
        "use": "official",
        "system": f"urn:oid:{header.ins[1]}",
        "value": header.ins[0],
    }
    assert patient["name"][0]["family"] == header.birth_family_name
    assert patient["birthDate"] == (header.birth_date.isoformat() if header.birth_date else None)
    (signer,) = parameters(message.resource, "sender-identifier")
    assert signer["valueString"] == (header.legal_authenticator or header.author).rpps[1:]
    (document,) = [p["part"][0]["resource"] for p in parameters(message.resource, "payload")][1:]
    assert document["masterIdentifier"]["value"] == f"urn:oid:{header.document_id}"
    assert document["type"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "11502-2",
        "display": header.code.display,
    }
    # Kept on disk too.
    stored = tmp_path / "store" / message.transaction_id
    assert (stored / "IHE_XDM.ZIP").read_bytes() == message.attachments["IHE_XDM.ZIP"]
    assert (stored / "request.json").is_file()


@pytest.mark.parametrize("title", ["..", ".", "...", "../../escape.pdf", "/etc/passwd"])
def test_an_attachment_title_never_names_a_path(
    simulator: OperatorApiSimulator, sender: OperatorApiSender, pki: Pki, tmp_path: Path, title: str
) -> None:
    # Another client's request, with a hostile PDF title: stored inside its transaction's folder.
    sender.send(make_job())
    resource = copy.deepcopy(simulator.messages[0].resource)
    (pdf,) = [
        part["resource"]["content"][0]["attachment"]
        for p in parameters(resource, "payload")
        for part in p["part"]
        if part["resource"]["content"][0]["attachment"]["contentType"] == "application/pdf"
    ]
    pdf["title"] = title
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca_cert))) as client:
        token = client.post(
            simulator.token_url,
            data={"grant_type": "client_credentials", "client_id": "crbio-lab", "client_secret": "s3cret"},
        ).json()["access_token"]
        answer = client.post(
            simulator.base_url + "/v3/CommunicationRequest/$send-to-mss",
            content=json.dumps(resource),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        )
    assert answer.status_code == 201, answer.text
    stored = tmp_path / "store" / answer.json()["id"]
    names = sorted(path.name for path in stored.iterdir())
    assert "IHE_XDM.ZIP" in names and "request.json" in names and len(names) == 3
    (pdf_file,) = [stored / name for name in names if name not in {"IHE_XDM.ZIP", "request.json"}]
    assert pdf_file.parent == stored and pdf_file.read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(
        m.transaction_id for m in simulator.messages
    )


def test_patient_recipient_gets_only_an_address(
    simulator: OperatorApiSimulator, sender: OperatorApiSender
) -> None:
    recipient = patient_recipient()
    sender.send(make_job(recipient=recipient))
    (message,) = simulator.messages
    assert message.recipient_types == ("Patient",)
    (parameter,) = parameters(message.resource, "recipients")
    assert parameter["resource"] == {
        "resourceType": "Patient",
        "telecom": [{"system": "email", "value": recipient.address}],
    }
    assert message.mss_headers["X-MSS-MES"] == "FIN"


def test_without_ins_the_patient_is_identified_by_the_ipp(
    simulator: OperatorApiSimulator, sender: OperatorApiSender
) -> None:
    job = make_job("13-identite-provisoire")
    assert job.header.ins is None
    sender.send(job)
    (message,) = simulator.messages
    patient = parameters(message.resource, "detailed-subject")[0]["resource"]
    root, extension = job.header.local_ids[0]
    assert patient["identifier"][0]["system"] == f"urn:oid:{root}"
    assert patient["identifier"][0]["value"] == extension
    assert patient["identifier"][0]["type"]["coding"][0]["code"] == "PI"
    assert message.mss_headers["X-MSS-INS"] == "N"


def test_resend_is_recognised_and_not_stored_twice(
    simulator: OperatorApiSimulator, sender: OperatorApiSender
) -> None:
    first = sender.send(make_job())
    again = sender.send(make_job(attempt=2))  # e.g. the answer was lost and the outbox retried
    assert again.detail["transaction_id"] == first.detail["transaction_id"]
    assert again.detail["message_id"] == first.detail["message_id"]
    assert (first.detail["http_status"], again.detail["http_status"]) == (201, 200)
    assert len(simulator.messages) == 1


def test_replacement_and_deletion_carry_the_xdm_action(
    simulator: OperatorApiSimulator, sender: OperatorApiSender
) -> None:
    old = read_header((OUTPUT / "08a-diabete-v1.n3.xml").read_bytes())
    first = sender.send(make_job("08a-diabete-v1"))
    previous = dict(first.detail)
    replace = make_job("08b-diabete-v2", action=Action.REPLACE, replaces=old.document_id, previous=previous)
    delete = make_job("08a-diabete-v1", action=Action.DELETE, previous=previous)
    sender.send(replace)
    sender.send(delete)
    original, replaced, deleted = simulator.messages
    assert original.xdm_action is None and original.action == "submit"
    for message in (replaced, deleted):
        assert parameters(message.resource, "in-reply-to") == [
            {"name": "in-reply-to", "valueString": first.detail["message_id"]}
        ]
    assert (replaced.xdm_action, replaced.action) == ("C", "replace")
    assert (deleted.xdm_action, deleted.action) == ("D", "delete")
    assert "ANNULE ET REMPLACE" in (replaced.mail_body or "")
    assert "RETIRÉ" in (deleted.mail_body or "")
    reference = parameters(replaced.resource, "payload")[0]["part"][0]["resource"]
    assert reference["relatesTo"][0]["target"]["identifier"]["value"] == f"urn:oid:{old.document_id}"


def test_masking_codes_become_security_labels() -> None:
    job = make_job(metadata={"confidentiality": ["N", "INVISIBLE_PATIENT"]})
    body = build_request(
        job, CONTEXT, sender_address=LAB_ADDRESS, submission_time=datetime(2024, 1, 4, tzinfo=UTC)
    )
    reference = parameters(body, "payload")[1]["part"][0]["resource"]
    assert reference["securityLabel"] == [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]},
        {"coding": [{"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "INVISIBLE_PATIENT"}]},
    ]


def test_a_request_the_operator_finds_invalid_is_permanent(
    simulator: OperatorApiSimulator, sender: OperatorApiSender
) -> None:
    bad = Recipient(RecipientKind.PROFESSIONAL, "not-an-address")
    with pytest.raises(PermanentSendError) as caught:
        sender.send(make_job(recipient=bad))
    assert caught.value.reason.startswith("HTTP 422 invalid: each recipient needs exactly one email telecom")
    assert caught.value.detail["issues"] == ["invalid"]
    assert simulator.messages == []


def test_a_bad_plan_header_is_permanent_without_calling_the_operator(
    simulator: OperatorApiSimulator, sender: OperatorApiSender
) -> None:
    with pytest.raises(PermanentSendError, match="request cannot be built"):
        sender.send(make_job(metadata={"headers": {"X-MSS-CODECDA": "11502-2\r\nBcc: x@y.fr"}}))
    assert simulator.requests == []


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "reason"),
    [
        (Fault.BUSY, TransientSendError, "HTTP 429 throttled: too many requests (injected fault)"),
        (Fault.SERVER_ERROR, TransientSendError, "HTTP 503 transient: service unavailable (injected fault)"),
        (Fault.DROP, TransientSendError, "connection closed without an answer"),
        (
            Fault.REJECT,
            PermanentSendError,
            "HTTP 422 business-rule: refused by the operator (injected fault)",
        ),
    ],
)
def test_each_fault_gives_the_right_error(
    simulator: OperatorApiSimulator,
    sender: OperatorApiSender,
    fault: Fault,
    error: type[Exception],
    reason: str,
) -> None:
    simulator.retry_after = 7
    simulator.faults.queue(fault)
    with pytest.raises(error) as caught:
        sender.send(make_job())
    assert caught.value.reason == reason  # type: ignore[attr-defined]
    detail = caught.value.detail  # type: ignore[attr-defined]
    assert detail["message_id"].startswith(make_job().message_id)
    if fault is Fault.BUSY:
        assert detail["retry_after"] == 7
    else:
        assert "retry_after" not in detail
    assert simulator.messages == []
    # The next try goes through, with the same token.
    assert sender.send(make_job(attempt=2)).detail["http_status"] == 201
    assert simulator.tokens_issued == 1


def test_latency_beyond_the_timeout_is_transient(pki: Pki) -> None:
    with OperatorApiSimulator(
        pki, client_id="crbio-lab", client_secret="s3cret", faults=FaultPlan(latency=1.0)
    ) as sim:
        sender = OperatorApiSender.from_config(section(sim, pki, timeout=0.3), CONTEXT)
        try:
            sender.access_token()
            sim.faults.queue(Fault.LATENCY)
            with pytest.raises(TransientSendError) as caught:
                sender.send(make_job())
        finally:
            sender.close()
    assert caught.value.reason.startswith("timeout")


def test_retry_after_as_seconds_or_http_date() -> None:
    assert _retry_after("12") == 12
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = _retry_after(format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True))
    assert later is not None and 85 <= later <= 90
    assert _retry_after(format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)) == 0


def test_error_texts_are_redacted_of_patient_data() -> None:
    recipient = patient_recipient()
    job = make_job(recipient=recipient)
    header = job.header
    assert header.ins is not None and header.birth_date is not None
    text = (
        f"recipient {recipient.address} unknown; "
        f"patient {header.birth_family_name} {header.birth_given_name} "
        f"born {header.birth_date.strftime('%d/%m/%Y')} NIR {header.ins[0]} rejected"
    )
    redacted = redact(text, job)
    for secret in (recipient.address, header.birth_family_name, header.birth_given_name, header.ins[0]):
        assert secret.lower() not in redacted.lower()
    assert header.birth_date.strftime("%d/%m/%Y") not in redacted
    assert redacted.startswith("recipient <patient address> unknown; patient <masked> <masked> born <masked>")


# -- tracking -----------------------------------------------------------------------------------


def test_tracking_reports_the_status(simulator: OperatorApiSimulator, sender: OperatorApiSender) -> None:
    transaction = sender.send(make_job()).detail["transaction_id"]
    status = sender.tracking(transaction)
    assert (status.status, status.recipients) == ("delivered", {"jean.martin@test.mssante.fr": "delivered"})
    simulator.set_status(transaction, "failed")
    assert sender.tracking(transaction).status == "failed"
    with pytest.raises(PermanentSendError) as caught:
        sender.tracking("no-such-transaction")
    assert caught.value.reason == "HTTP 404 not-found: unknown transaction-id"


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("base_url", "destinations.mssante.base_url: required"),
        ("token_url", "destinations.mssante.token_url: required"),
        ("client_id", "destinations.mssante.client_id: required"),
        ("client_secret", "destinations.mssante: client_secret_file or client_secret_env is required"),
        ("sender_address", "destinations.mssante.sender_address: required"),
    ],
)
def test_missing_setting_is_named(
    simulator: OperatorApiSimulator, pki: Pki, missing: str, message: str
) -> None:
    config = section(simulator, pki)
    del config[missing]
    with pytest.raises(ConfigurationError) as caught:
        OperatorApiSender.from_config(config, CONTEXT)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"base_url": "http://api.example.fr/fhir"},
            "destinations.mssante.base_url: must be an https:// URL",
        ),
        ({"colour": "blue"}, "destinations.mssante.colour: unknown setting"),
        ({"timeout": 0}, "destinations.mssante.timeout: must be a positive number"),
        ({"token_auth": "private_key_jwt"}, "destinations.mssante.token_auth: must be one of"),
        ({"sender_address": "laboratoire"}, "destinations.mssante.sender_address: must be the laboratory's"),
        (
            {"token_params": {"client_secret": "x"}},
            "destinations.mssante.token_params.client_secret: set by crbio",
        ),
        (
            {"client_secret": None, "client_secret_env": "CRBIO_TEST_UNSET_SECRET"},
            "client_secret_env: environment",
        ),
    ],
)
def test_wrong_setting_is_named(
    simulator: OperatorApiSimulator, pki: Pki, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        OperatorApiSender.from_config(section(simulator, pki, **override), CONTEXT)


def test_token_params_and_audience_reach_the_token_endpoint(
    simulator: OperatorApiSimulator, pki: Pki
) -> None:
    config = section(
        simulator,
        pki,
        audience="https://post-prod.platform-apis/",
        scope="SEND_TO_MSS",
        token_params={"database_reference": "KA5hEDzf73"},
    )
    sender = OperatorApiSender.from_config(config, CONTEXT)
    try:
        sender.send(make_job())
    finally:
        sender.close()
    assert simulator.token_forms == [
        {
            "grant_type": "client_credentials",
            "client_id": "crbio-lab",
            "scope": "SEND_TO_MSS",
            "audience": "https://post-prod.platform-apis/",
            "database_reference": "KA5hEDzf73",
        }
    ]
    assert len(simulator.messages) == 1


def test_registered_under_the_operator_api_entry_point() -> None:
    assert load_sender("operator-api") is OperatorApiSender


def test_selected_and_configured_from_the_dispatch_configuration(
    simulator: OperatorApiSimulator, pki: Pki, tmp_path: Path
) -> None:
    secret = tmp_path / "operator-secret"
    secret.write_text("s3cret", encoding="utf-8")
    toml = f"""
[laboratory]
finess = "920000015"
name = "Laboratoire des Charmes"
oid = "1.2.250.1.999.1"

[software]
nil = "NIL-0000"

[destinations.mssante]
sender = "operator-api"
base_url = "{simulator.base_url}"
token_url = "{simulator.token_url}"
client_id = "crbio-lab"
client_secret_file = "operator-secret"
ca_file = "{pki.ca_cert}"
sender_address = "{LAB_ADDRESS}"
timeout = 10
"""
    path = tmp_path / "crbio.toml"
    path.write_text(toml, encoding="utf-8")
    config = DispatchConfig.load(path)
    destination = config.destination(Channel.MSSANTE)
    assert destination is not None and destination.sender == "operator-api"
    sender = load_sender(destination.sender).from_config(destination.settings, config.context)
    try:
        ack = sender.send(make_job())
    finally:
        sender.close()
    assert ack.detail["transaction_id"] == simulator.messages[0].transaction_id
    assert simulator.messages[0].mss_headers["X-MSS-NIL"] == "NIL-0000"


def test_a_simulator_keeping_few_messages_still_tracks_and_recognises_older_ones(
    pki: Pki, tmp_path: Path
) -> None:
    with OperatorApiSimulator(
        pki, client_id="crbio-lab", client_secret="s3cret", store_dir=tmp_path / "store", retain=1
    ) as sim:
        sender = OperatorApiSender.from_config(section(sim, pki), CONTEXT)
        try:
            first = sender.send(make_job()).detail["transaction_id"]
            sender.send(make_job("02-hemogramme"))
            assert [m.transaction_id for m in sim.messages] != [first] and len(sim.messages) == 1
            assert sim.message(first).attachments == {} and len(sim.requests) == 1
            sim.set_status(first, "failed")
            assert sender.tracking(first).status == "failed"
            assert sender.send(make_job(attempt=2)).detail["transaction_id"] == first  # a replay
        finally:
            sender.close()
    assert (tmp_path / "store" / first / "IHE_XDM.ZIP").is_file()
