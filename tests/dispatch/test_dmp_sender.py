"""The DMP sender against a real HTTPS server written here (mutual TLS, MTOM parsed with ``email``).

The server checks what a registry/repository would look at first (endpoint, SOAP action, the
XOP include resolving to the exact document bytes, a VIHF that verifies against the test CA)
and answers canned RegistryResponses or AdhocQueryResponses scripted by each test.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from signxml import XMLVerifier

from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.redaction import redact
from crbio.dispatch.senders.base import SenderContext, load_sender
from crbio.dispatch.senders.dmp import DmpSender
from crbio.dispatch.xds.metadata import NS, entry_uuid, submission_ids
from crbio.dispatch.xds.response import RegistryResult, registry_result
from crbio.dispatch.xds.soap import parse_message
from crbio.errors import ConfigurationError, PermanentSendError, TransientSendError
from crbio.simulators.base import HttpHandler, LocalServer
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki

OUTPUT = Path(__file__).resolve().parents[2] / "samples" / "output"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
XDSB = "urn:ihe:iti:xds-b:2007"
XOP = "http://www.w3.org/2004/08/xop/include"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
ACTIONS = {
    "/si-dmp-server/v2/services/repository": {"urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"},
    "/si-dmp-server/v2/services/registry": {
        "urn:ihe:iti:2007:RegistryStoredQuery",
        "urn:ihe:iti:2010:UpdateDocumentSet",
    },
}


# -- the test server ----------------------------------------------------------------------


@dataclass
class Received:
    """One request as the server saw it, already checked and parsed."""

    path: str
    content_type: str
    body: bytes
    mime: EmailMessage
    envelope: etree._Element
    action: str
    parts: dict[str, bytes]  # MIME parts other than the root, by Content-ID
    client_subject: str

    @property
    def transaction(self) -> str:
        return {
            "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b": "ITI-41",
            "urn:ihe:iti:2007:RegistryStoredQuery": "ITI-18",
            "urn:ihe:iti:2010:UpdateDocumentSet": "ITI-57",
        }[self.action]

    def payload(self) -> etree._Element:
        body = self.envelope.find(f"{{{SOAP}}}Body")
        assert body is not None
        return body[0]


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


DROP = None
Responder = Callable[[Received], Answer | None]


def soap_answer(payload: str, status: int = 200) -> Answer:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{SOAP}"><s:Body>{payload}</s:Body></s:Envelope>'
    )
    return Answer(status, "application/soap+xml; charset=UTF-8", body.encode())


def registry_response(status: str = SUCCESS, errors: list[tuple[str, str]] | None = None) -> Answer:
    items = "".join(
        f'<rs:RegistryError errorCode="{code}" codeContext="{context}" location="" '
        f'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"/>'
        for code, context in errors or []
    )
    listing = f"<rs:RegistryErrorList>{items}</rs:RegistryErrorList>" if items else ""
    return soap_answer(
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="{status}">{listing}</rs:RegistryResponse>'
    )


def failure(code: str, context: str = "") -> Answer:
    return registry_response(FAILURE, [(code, context)])


def query_response(entries: list[tuple[str, str, str, str | None]]) -> Answer:
    """An AdhocQueryResponse listing (entryUUID, uniqueId, status, sha1) ExtrinsicObjects."""
    objects = []
    for uuid, unique_id, status, digest in entries:
        hash_slot = (
            f'<rim:Slot name="hash"><rim:ValueList><rim:Value>{digest}</rim:Value></rim:ValueList></rim:Slot>'
            if digest
            else ""
        )
        objects.append(
            f'<rim:ExtrinsicObject id="{uuid}" lid="{uuid}" status="{status}" mimeType="text/xml" '
            f'objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">{hash_slot}'
            f'<rim:ExternalIdentifier id="urn:uuid:00000000-0000-4000-8000-000000000001" '
            f'registryObject="{uuid}" '
            f'identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="{unique_id}"/>'
            f"</rim:ExtrinsicObject>"
        )
    return soap_answer(
        f'<query:AdhocQueryResponse xmlns:query="{QUERY}" xmlns:rim="{RIM}" status="{SUCCESS}">'
        f"<rim:RegistryObjectList>{''.join(objects)}</rim:RegistryObjectList></query:AdhocQueryResponse>"
    )


def fault(code: str, reason: str, status: int) -> Answer:
    return soap_answer(
        f"<s:Fault><s:Code><s:Value>s:{code}</s:Value></s:Code>"
        f'<s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>',
        status,
    )


def as_mtom(answer: Answer) -> Answer:
    """The same SOAP answer sent back as an MTOM multipart (as some registries do)."""
    boundary = "uuid:6b62cda1-8e2d-4b52-8b5d-cc8d2a1c2f11"
    body = (
        (
            f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
            f'type="application/soap+xml"\r\nContent-Transfer-Encoding: binary\r\n'
            f"Content-ID: <root.message@cxf.apache.org>\r\n\r\n"
        ).encode()
        + answer.body
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="<root.message@cxf.apache.org>"; start-info="application/soap+xml"'
    )
    return Answer(answer.status, content_type, body)


class FakeDmp:
    """A DMP-like HTTPS endpoint on 127.0.0.1 that requires a client certificate."""

    def __init__(self, pki: Pki) -> None:
        self.pki = pki
        self.script: list[Responder] = []
        self.requests: list[Received] = []
        self.problems: list[str] = []
        self.release = threading.Event()
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(pki.server_cert, pki.server_key)
        tls.load_verify_locations(cafile=str(pki.ca_cert))
        tls.verify_mode = ssl.CERT_REQUIRED
        owner = self

        class Handler(HttpHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    received = owner.check(self.path, self.headers["Content-Type"], body, self.request)
                except AssertionError as problem:
                    owner.problems.append(str(problem))
                    self.send_error(400)
                    return
                owner.requests.append(received)
                responder = owner.script.pop(0) if owner.script else (lambda r: registry_response())
                answer = responder(received)
                if answer is None:
                    self.drop()
                    return
                self.send_body(answer.status, answer.content_type, answer.body)

        # The handshake runs in each connection's thread, so a refused client cannot block.
        self.server = LocalServer.http(self, Handler, name="fake-dmp", tls=tls)
        self.server.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/si-dmp-server/v2/services"

    def close(self) -> None:
        self.release.set()
        self.server.stop()

    def check(self, path: str, content_type: str, body: bytes, connection: ssl.SSLSocket) -> Received:
        """Parse the request with the stdlib ``email`` package and check what every request must hold."""
        assert path in ACTIONS, f"unexpected endpoint {path}"
        peer = connection.getpeercert()
        assert peer, "no client certificate"
        subject = ",".join(f"{k}={v}" for rdn in peer["subject"] for k, v in rdn)
        mime = email.message_from_bytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.default
        )
        assert isinstance(mime, EmailMessage)
        parts: dict[str, bytes] = {}
        if mime.get_content_type() == "multipart/related":
            assert mime.get_param("type") == "application/xop+xml"
            assert mime.get_param("start-info") == "application/soap+xml"
            items = list(mime.iter_parts())
            root = items[0]
            assert root.get_content_type() == "application/xop+xml"
            assert root.get_param("type") == "application/soap+xml"
            assert (
                f"<{mime.get_param('start')}>" == root["Content-ID"]
                or mime.get_param("start") == root["Content-ID"]
            )
            xml = root.get_payload(decode=True)
            for item in items[1:]:
                assert item.get_content_type() == "application/octet-stream"
                parts[item["Content-ID"].strip("<>")] = item.get_payload(decode=True)
            action_param = mime.get_param("action")
        else:
            assert mime.get_content_type() == "application/soap+xml"
            xml = body
            action_param = mime.get_param("action")
        assert isinstance(xml, bytes)
        envelope = etree.fromstring(xml)
        assert envelope.tag == f"{{{SOAP}}}Envelope"
        action_el = envelope.find(f"{{{SOAP}}}Header/{{{WSA}}}Action")
        assert action_el is not None and action_el.get(f"{{{SOAP}}}mustUnderstand") == "true"
        action = action_el.text or ""
        assert action in ACTIONS[path], f"action {action} on {path}"
        assert action_param == action
        assert envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}To") == f"{self.url}/{path.rsplit('/', 1)[1]}"
        assert (envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}MessageID") or "").startswith("urn:uuid:")
        assertion = envelope.find(f"{{{SOAP}}}Header/{{{WSSE}}}Security/{{{SAML}}}Assertion")
        assert assertion is not None, "no VIHF"
        XMLVerifier().verify(etree.tostring(assertion), ca_pem_file=str(self.pki.ca_cert), id_attribute="ID")
        if action.endswith("ProvideAndRegisterDocumentSet-b"):
            assert mime.get_content_type() == "multipart/related", "ITI-41 must be MTOM"
            for document in envelope.iterfind(f".//{{{XDSB}}}Document"):
                include = document.find(f"{{{XOP}}}Include")
                assert include is not None and include.get("href", "").startswith("cid:")
                assert include.get("href", "")[4:] in parts, "xop:Include without its MIME part"
        return Received(path, content_type, body, mime, envelope, action, parts, subject)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def dmp(pki: Pki) -> Iterator[FakeDmp]:
    server = FakeDmp(pki)
    yield server
    server.close()
    assert not server.problems, server.problems


@pytest.fixture
def lab(tmp_path: Path) -> SenderContext:
    return SenderContext(
        laboratory_finess="920000015",
        laboratory_name="Laboratoire des Charmes",
        laboratory_oid="1.2.250.1.999.1",
        software_name="crbio",
        software_version="0.1.0",
        dmp_homologation="CRB-2024-0001",
        base_dir=tmp_path,
    )


def section(pki: Pki, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "ca_file": str(pki.ca_cert),
        "client_cert": str(pki.auth_cert),
        "client_key": str(pki.auth_key),
        "sign_cert": str(pki.sign_cert),
        "sign_key": str(pki.sign_key),
        "timeout": 5,
        **extra,
    }


@pytest.fixture
def sender(pki: Pki, dmp: FakeDmp, lab: SenderContext) -> Iterator[DmpSender]:
    built = DmpSender.from_config(section(pki, dmp.url), lab)
    yield built
    built.close()


def make_job(
    sample: str,
    action: Action = Action.SUBMIT,
    *,
    previous: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Job:
    n3 = (OUTPUT / f"{sample}.n3.xml").read_bytes()
    header = read_header(n3)
    delivery = Delivery(
        channel=Channel.DMP,
        action=action,
        recipient=Recipient(RecipientKind.DMP, "dmp"),
        document_id=header.document_id,
        version=header.version,
        replaces=header.replaces,
        metadata=dict(metadata or {"confidentiality": [header.confidentiality], "secret_connection": False}),
    )
    return Job(delivery, 1, n3, (OUTPUT / f"{sample}.pdf").read_bytes(), previous)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def association(request: Received, kind: str) -> list[etree._Element]:
    found: list[etree._Element] = request.payload().xpath(
        f".//rim:Association[@associationType='{kind}']", namespaces=NS
    )
    return found


def query_values(request: Received, name: str) -> list[str]:
    return [
        str(v)
        for v in request.payload().xpath(f".//rim:Slot[@name='{name}']//rim:Value/text()", namespaces=NS)
    ]


# -- submission -------------------------------------------------------------------------------


def test_submit_sends_mtom_with_document_signature_and_vihf(
    dmp: FakeDmp, sender: DmpSender, pki: Pki
) -> None:
    job = make_job("01-biochimie")
    ack = sender.send(job)
    assert len(dmp.requests) == 1
    request = dmp.requests[0]
    assert request.transaction == "ITI-41" and request.path.endswith("/repository")
    assert "AUTH_CLI" in request.client_subject
    ids = submission_ids(job)
    # Each xdsb:Document points at its own binary part; the CR-BIO travels byte for byte.
    documents = {
        d.get("id"): request.parts[d.find(f"{{{XOP}}}Include").get("href")[4:]]  # type: ignore[union-attr]
        for d in request.payload().iterfind(f"{{{XDSB}}}Document")
    }
    assert documents[ids.document] == job.n3
    signature = etree.fromstring(documents[ids.signature])
    assert signature.tag == "{http://www.w3.org/2000/09/xmldsig#}Signature"
    assert signature.get("Id") == f"_{ids.signature_unique_id}"
    # The metadata submitted is the one crbio derived for this job.
    entry = request.payload().find(f".//{{{RIM}}}ExtrinsicObject[@id='{entry_uuid(job)}']")
    assert entry is not None
    assert entry.xpath("rim:Slot[@name='hash']/rim:ValueList/rim:Value/text()", namespaces=NS) == [
        sha1(job.n3)
    ]
    # The VIHF names the patient and the structure.
    vihf = request.envelope.find(f".//{{{SAML}}}Assertion")
    assert vihf is not None
    values = {
        a.get("Name"): a.findtext(f"{{{SAML}}}AttributeValue") for a in vihf.iter(f"{{{SAML}}}Attribute")
    }
    assert (
        values["urn:oasis:names:tc:xacml:2.0:resource:resource-id"]
        == "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    )
    assert values["Identifiant_Structure"] == "1920000015"
    assert "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code" not in values
    assert ack.detail == {
        "transaction": "ITI-41",
        "registry_status": "Success",
        "entry_uuid": entry_uuid(job),
        "document_unique_id": "1.2.250.1.999.1.1.2024.1001.1",
        "submission_set_unique_id": job.submission_oid,
    }
    assert "Success" in ack.summary
    json.dumps(dict(ack.detail))


def test_secret_connection_goes_into_the_vihf(dmp: FakeDmp, sender: DmpSender) -> None:
    metadata = {"confidentiality": ["N", "INVISIBLE_REPRESENTANTS_LEGAUX"], "secret_connection": True}
    sender.send(make_job("07-mineure-beta-hcg", metadata=metadata))
    vihf = dmp.requests[0].envelope.find(f".//{{{SAML}}}Assertion")
    assert vihf is not None
    names = {
        a.get("Name"): a.findtext(f"{{{SAML}}}AttributeValue") for a in vihf.iter(f"{{{SAML}}}Attribute")
    }
    assert names["urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"] == (
        "INVISIBLE_REPRESENTANTS_LEGAUX^1.2.250.1.213.1.1.4.13"
    )


def test_a_multipart_answer_is_read(dmp: FakeDmp, sender: DmpSender) -> None:
    dmp.script = [lambda r: as_mtom(registry_response())]
    assert sender.send(make_job("01-biochimie")).detail["registry_status"] == "Success"


def test_registry_busy_is_transient(dmp: FakeDmp, sender: DmpSender) -> None:
    dmp.script = [lambda r: failure("XDSRegistryBusy", "try later")]
    with pytest.raises(TransientSendError) as caught:
        sender.send(make_job("01-biochimie"))
    assert caught.value.reason == "XDSRegistryBusy: try later"
    assert caught.value.detail["errors"] == [
        {"code": "XDSRegistryBusy", "severity": "Error", "context": "try later", "location": ""}
    ]


def test_unknown_patient_is_permanent_without_echoing_the_patient(dmp: FakeDmp, sender: DmpSender) -> None:
    echo = "Patient 279035121518989^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH inconnu (NIR 279035121518989)"
    dmp.script = [lambda r: failure("XDSUnknownPatientId", echo)]
    with pytest.raises(PermanentSendError) as caught:
        sender.send(make_job("01-biochimie"))
    error = caught.value
    assert error.reason.startswith("XDSUnknownPatientId")
    everything = str(error) + error.reason + json.dumps(error.detail)
    assert "279035121518989" not in everything
    assert "inconnu" in error.reason


@pytest.mark.parametrize(
    ("answer", "kind", "reason"),
    [
        (Answer(500, "text/plain", b"Internal Server Error"), TransientSendError, "HTTP 500"),
        (Answer(503, "text/html", b"<html>maintenance</html>"), TransientSendError, "HTTP 503"),
        (fault("Receiver", "database unavailable", 500), TransientSendError, "SOAP Receiver fault"),
        (fault("Sender", "VIHF invalide", 500), PermanentSendError, "SOAP Sender fault"),
        (Answer(404, "text/plain", b"not found"), PermanentSendError, "HTTP 404"),
        (failure("XDSRegistryMetadataError", "typeCode"), PermanentSendError, "XDSRegistryMetadataError"),
    ],
)
def test_http_and_fault_mapping(
    dmp: FakeDmp, sender: DmpSender, answer: Answer, kind: type[Exception], reason: str
) -> None:
    dmp.script = [lambda r: answer]
    with pytest.raises(kind) as caught:
        sender.send(make_job("01-biochimie"))
    assert str(getattr(caught.value, "reason", "")).startswith(reason)


def test_an_unexpected_soap_body_is_permanent(dmp: FakeDmp, sender: DmpSender) -> None:
    dmp.script = [lambda r: soap_answer("<other xmlns='urn:x'/>")]
    with pytest.raises(PermanentSendError) as caught:
        sender.send(make_job("01-biochimie"))
    assert caught.value.code == "dispatch.dmp.response"


def test_dropped_connection_is_transient(dmp: FakeDmp, sender: DmpSender) -> None:
    dmp.script = [lambda r: DROP]
    with pytest.raises(TransientSendError) as caught:
        sender.send(make_job("01-biochimie"))
    assert caught.value.code == "dispatch.dmp.connection"


def test_timeout_is_transient(pki: Pki, dmp: FakeDmp, lab: SenderContext) -> None:
    def slow(received: Received) -> Answer:
        dmp.release.wait(10)
        return registry_response()

    dmp.script = [slow]
    quick = DmpSender.from_config(section(pki, dmp.url, timeout=0.3), lab)
    try:
        with pytest.raises(TransientSendError) as caught:
            quick.send(make_job("01-biochimie"))
        assert caught.value.code == "dispatch.dmp.timeout"
    finally:
        quick.close()


def test_duplicate_is_confirmed_by_iti18_and_acknowledged(dmp: FakeDmp, sender: DmpSender) -> None:
    job = make_job("01-biochimie")
    stored = "urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    dmp.script = [
        lambda r: failure("XDSDuplicateUniqueIdInRegistry", job.delivery.document_id),
        lambda r: query_response([(stored, job.delivery.document_id, APPROVED, sha1(job.n3))]),
    ]
    ack = sender.send(job)
    assert [r.transaction for r in dmp.requests] == ["ITI-41", "ITI-18"]
    assert query_values(dmp.requests[1], "$XDSDocumentEntryUniqueId") == [f"('{job.delivery.document_id}')"]
    assert dmp.requests[1].payload().tag == f"{{{QUERY}}}AdhocQueryRequest"
    assert ack.detail["entry_uuid"] == stored and ack.detail["duplicate"] is True


def test_duplicate_with_other_content_is_permanent(dmp: FakeDmp, sender: DmpSender) -> None:
    job = make_job("01-biochimie")
    dmp.script = [
        lambda r: failure("XDSDuplicateUniqueIdInRegistry"),
        lambda r: query_response([("urn:uuid:1", job.delivery.document_id, APPROVED, sha1(b"other"))]),
    ]
    with pytest.raises(PermanentSendError) as caught:
        sender.send(job)
    assert caught.value.reason == "XDSDuplicateUniqueIdInRegistry"


# -- replacement and deletion ---------------------------------------------------------------------


def test_replacement_uses_the_journal_entry_uuid(dmp: FakeDmp, sender: DmpSender) -> None:
    old = "urn:uuid:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    job = make_job("08b-diabete-v2", Action.REPLACE, previous={"entry_uuid": old})
    ack = sender.send(job)
    assert [r.transaction for r in dmp.requests] == ["ITI-41"]
    (rplc,) = association(dmp.requests[0], "urn:ihe:iti:2007:AssociationType:RPLC")
    assert rplc.get("sourceObject") == entry_uuid(job) and rplc.get("targetObject") == old
    assert ack.detail["replaced_entry_uuid"] == old


def test_replacement_without_journal_looks_the_old_version_up(dmp: FakeDmp, sender: DmpSender) -> None:
    job = make_job("08b-diabete-v2", Action.REPLACE)
    old_uid = "1.2.250.1.999.5.1.2024.5002.1"
    old = "urn:uuid:12345678-1234-4234-8234-123456789abc"
    dmp.script = [lambda r: query_response([(old, old_uid, APPROVED, None)]), lambda r: registry_response()]
    ack = sender.send(job)
    assert [(r.transaction, r.path.rsplit("/", 1)[1]) for r in dmp.requests] == [
        ("ITI-18", "registry"),
        ("ITI-41", "repository"),
    ]
    assert query_values(dmp.requests[0], "$XDSDocumentEntryUniqueId") == [f"('{old_uid}')"]
    (rplc,) = association(dmp.requests[1], "urn:ihe:iti:2007:AssociationType:RPLC")
    assert rplc.get("targetObject") == old
    assert ack.detail["entry_uuid"] == entry_uuid(job)


@pytest.mark.parametrize(
    ("entries", "code"),
    [
        ([], "dispatch.dmp.target-unknown"),
        (
            [("urn:uuid:9", "1.2.250.1.999.5.1.2024.5002.1", DEPRECATED, None)],
            "dispatch.dmp.target-not-current",
        ),
    ],
)
def test_replacement_of_a_version_not_current_in_the_dmp(
    dmp: FakeDmp, sender: DmpSender, entries: list[tuple[str, str, str, str | None]], code: str
) -> None:
    dmp.script = [lambda r: query_response(entries)]
    with pytest.raises(PermanentSendError) as caught:
        sender.send(make_job("08b-diabete-v2", Action.REPLACE))
    assert caught.value.code == code
    assert [r.transaction for r in dmp.requests] == ["ITI-18"]


def test_deletion_with_journal_is_a_plain_soap_iti57(dmp: FakeDmp, sender: DmpSender) -> None:
    target = "urn:uuid:abcdefab-cdef-4abc-8def-abcdefabcdef"
    job = make_job("01-biochimie", Action.DELETE, previous={"entry_uuid": target})
    ack = sender.send(job)
    (request,) = dmp.requests
    assert request.transaction == "ITI-57" and request.path.endswith("/registry")
    assert request.mime.get_content_type() == "application/soap+xml"
    (update,) = association(request, "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus")
    assert update.get("targetObject") == target
    assert update.xpath("rim:Slot[@name='NewStatus']//rim:Value/text()", namespaces=NS) == [
        "urn:asip:ci-sis:2010:StatusType:Deleted"
    ]
    assert update.xpath("rim:Slot[@name='OriginalStatus']//rim:Value/text()", namespaces=NS) == [APPROVED]
    assert ack.detail["target"] == target and ack.detail["transaction"] == "ITI-57"
    assert ack.detail["registry_status"] == "Success"


def test_deletion_without_journal_looks_the_entry_up(dmp: FakeDmp, sender: DmpSender) -> None:
    job = make_job("01-biochimie", Action.DELETE)
    current = "urn:uuid:feedface-0000-4000-8000-000000000000"
    dmp.script = [
        lambda r: query_response([(current, job.delivery.document_id, APPROVED, sha1(job.n3))]),
        lambda r: registry_response(),
    ]
    ack = sender.send(job)
    assert [r.transaction for r in dmp.requests] == ["ITI-18", "ITI-57"]
    (update,) = association(dmp.requests[1], "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus")
    assert update.get("targetObject") == current == ack.detail["entry_uuid"]


def test_deletion_refused(dmp: FakeDmp, sender: DmpSender) -> None:
    dmp.script = [lambda r: failure("XDSMetadataUpdateError", "not the author")]
    with pytest.raises(PermanentSendError) as caught:
        sender.send(make_job("01-biochimie", Action.DELETE, previous={"entry_uuid": "urn:uuid:1"}))
    assert caught.value.reason == "XDSMetadataUpdateError: not the author"


# -- recovery after a crash -----------------------------------------------------------------------


def test_find_delivered(dmp: FakeDmp, sender: DmpSender) -> None:
    job = make_job("01-biochimie")
    dmp.script = [
        lambda r: query_response([(entry_uuid(job), job.delivery.document_id, APPROVED, sha1(job.n3))]),
        lambda r: query_response([]),
    ]
    found = sender.find_delivered(job)
    assert found is not None and found.detail["entry_uuid"] == entry_uuid(job)
    assert found.detail["found_by"] == "ITI-18"
    assert sender.find_delivered(job) is None
    assert [r.transaction for r in dmp.requests] == ["ITI-18", "ITI-18"]


def test_find_delivered_for_a_deletion(dmp: FakeDmp, sender: DmpSender) -> None:
    job = make_job("01-biochimie", Action.DELETE)
    deleted = "urn:asip:ci-sis:2010:StatusType:Deleted"
    dmp.script = [lambda r: query_response([("urn:uuid:5", job.delivery.document_id, deleted, None)])]
    found = sender.find_delivered(job)
    assert found is not None and found.detail["transaction"] == "ITI-57"


# -- refusals before any request, TLS, configuration -------------------------------------------------


def test_no_ins_is_refused_without_a_request(dmp: FakeDmp, sender: DmpSender) -> None:
    with pytest.raises(PermanentSendError) as caught:
        sender.send(make_job("13-identite-provisoire"))
    assert caught.value.code == "dispatch.dmp.no-ins"
    assert sender.find_delivered(make_job("13-identite-provisoire")) is None
    assert dmp.requests == []


def test_without_client_certificate_the_server_refuses(pki: Pki, dmp: FakeDmp, lab: SenderContext) -> None:
    config = section(pki, dmp.url)
    del config["client_cert"], config["client_key"]
    anonymous = DmpSender.from_config(config, lab)
    try:
        with pytest.raises(TransientSendError):
            anonymous.send(make_job("01-biochimie"))
    finally:
        anonymous.close()
    assert dmp.requests == []


def test_unknown_server_certificate_is_permanent(
    pki: Pki, dmp: FakeDmp, lab: SenderContext, tmp_path: Path
) -> None:
    other = make_test_pki(tmp_path / "other")
    strict = DmpSender.from_config(section(pki, dmp.url, ca_file=str(other.ca_cert)), lab)
    try:
        with pytest.raises(PermanentSendError) as caught:
            strict.send(make_job("01-biochimie"))
        assert caught.value.code == "dispatch.dmp.tls"
    finally:
        strict.close()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"url": None}, "destinations.dmp.url"),
        ({"url": "http://dmp.example/si-dmp-server/v2/services"}, "destinations.dmp.url"),
        ({"sign_cert": "missing/sign.crt"}, "destinations.dmp.sign_cert"),
        ({"sign_cert": None, "sign_key": None}, "destinations.dmp"),
        ({"client_key": "nowhere.key"}, "destinations.dmp.client_key"),
        ({"ca_file": "nowhere.pem"}, "destinations.dmp.ca_file"),
        ({"timeout": 0}, "destinations.dmp.timeout"),
        ({"colour": "blue"}, "destinations.dmp.colour"),
    ],
)
def test_bad_configuration_names_the_key(
    pki: Pki, lab: SenderContext, change: dict[str, Any], key: str
) -> None:
    config = section(pki, "https://127.0.0.1:9/si-dmp-server/v2/services")
    for name, value in change.items():
        if value is None:
            del config[name]
        else:
            config[name] = value
    with pytest.raises(ConfigurationError) as caught:
        DmpSender.from_config(config, lab)
    assert key in str(caught.value)


def test_unreadable_signing_key(pki: Pki, lab: SenderContext, tmp_path: Path) -> None:
    garbage = tmp_path / "sign.key"
    garbage.write_text("not a key")
    config = section(pki, "https://127.0.0.1:9/x", sign_key=str(garbage))
    with pytest.raises(ConfigurationError) as caught:
        DmpSender.from_config(config, lab)
    assert "destinations.dmp.sign" in str(caught.value)


def test_the_entry_point_names_this_sender() -> None:
    assert load_sender("dmp") is DmpSender
    assert DmpSender.channel is Channel.DMP


# -- response parsing and redaction (units) ---------------------------------------------------------


def test_registry_result_reads_status_errors_and_entries() -> None:
    answer = query_response(
        [("urn:uuid:1", "1.2.3", APPROVED, "abc"), ("urn:uuid:2", "1.2.3", DEPRECATED, None)]
    )
    result: RegistryResult = registry_result(parse_message(answer.content_type, answer.body))
    assert result.success and result.short_status == "Success"
    assert [(e.entry_uuid, e.unique_id, e.approved, e.hash) for e in result.entries] == [
        ("urn:uuid:1", "1.2.3", True, "abc"),
        ("urn:uuid:2", "1.2.3", False, None),
    ]
    warning = soap_answer(
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="urn:ihe:iti:2007:ResponseStatusType:PartialSuccess">'
        '<rs:RegistryErrorList><rs:RegistryError errorCode="XDSExtraMetadataNotSaved" codeContext="x" '
        'severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"/></rs:RegistryErrorList>'
        "</rs:RegistryResponse>"
    )
    partial = registry_result(parse_message(warning.content_type, warning.body))
    assert partial.success and partial.error_codes == ()


def test_redact_removes_identifiers_but_keeps_oids() -> None:
    text = (
        "uniqueId 1.2.250.1.999.1.1.2024.1001.1 patient 279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
        " ipp 1234567890121 mail 279035121518989@patient.mssante.fr"
    )
    cleaned = redact(text)
    assert "1.2.250.1.999.1.1.2024.1001.1" in cleaned
    assert "279035121518989" not in cleaned and "1234567890121" not in cleaned and "@" not in cleaned
    assert len(redact("x" * 1000)) == 300
