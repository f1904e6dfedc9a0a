"""Transport security on every channel, against real local servers with certificates made by the test.

Each channel (DMP over HTTPS with httpx, MSSanté SMTP with STARTTLS and with implicit TLS, the
MSSanté operator API over HTTPS with OAuth 2.0, HL7 v2 over MLLP/TLS, the lab's mailbox over
IMAPS) is configured through a real ``crbio.toml`` read by :meth:`DispatchConfig.load`, then:

- works with the client credential as PEM files and as a PKCS#12 bundle (password from a
  file, and from an environment variable), and with a CA bundle holding only a root whose
  servers present an intermediate CA (root → intermediate → server, like the IGC Santé);
- refuses a server certificate from another CA, one for another host (``other.example`` while
  connecting to 127.0.0.1) and an expired one, with an error naming the setting to check,
  without a byte of the document reaching the server.

A server certificate refused is a :class:`PermanentSendError` for the senders (retrying cannot
fix it: the CA bundle, the host name or the server's certificate must change, which takes a
person, so the delivery goes to the dead letters with the reason instead of retrying for hours),
and a :class:`ConfigurationError` for the mailbox (as any mailbox problem a person must fix).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import ROOT
from crbio.dispatch.config import DispatchConfig
from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.mailbox import collect_returns
from crbio.dispatch.senders.base import load_sender
from crbio.errors import ConfigurationError, CrbioError, PermanentSendError
from crbio.simulators.imap import ImapSimulator
from crbio.simulators.mllp import MllpSimulator
from crbio.simulators.operator_api import OperatorApiSimulator
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import issue_certificate, make_test_pki
from crbio.simulators.smtp import SmtpSimulator
from crbio.simulators.xds import XdsSimulator

OUTPUT = ROOT / "samples" / "output"
SAMPLE = "01-biochimie"
MAILBOX_USER = "laboratoire@labo-charmes.mssante.fr"
MAILBOX_PASSWORD = "imap-password-7f3a"
OPERATOR_ID = "crbio-transport-test"
OPERATOR_SECRET = "operator-secret-91c2"
P12_PASSWORD = "p12-password-5d8e"
P12_ENV = "CRBIO_TEST_P12_PASSWORD"


# -- certificates ----------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load(pki: Pki) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()), key


def _write(directory: Path, name: str, *certs: x509.Certificate, key: rsa.RSAPrivateKey) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(b"".join(_pem(c) for c in certs))
    key_path.write_bytes(_key(key))
    return cert_path, key_path


@dataclass(frozen=True)
class Pkis:
    """The PKI the client trusts, and the server-side variants of the tests."""

    good: Pki  # CA, server certificate for localhost/127.0.0.1, AUTH_CLI, SIGN
    wrong_ca: Pki  # the server presents a certificate from another CA
    wrong_host: Pki  # the server presents a certificate for other.example
    expired: Pki  # the server presents an expired certificate
    chain: Pki  # root -> intermediate -> server (server and client certificates carry the intermediate)
    chain_root: Path  # the root alone: what the client trusts in the chain case


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> Pkis:
    base = tmp_path_factory.mktemp("pki")
    good = make_test_pki(base / "good")
    ca_cert, ca_key = _load(good)
    other = make_test_pki(base / "other")
    cert, key = issue_certificate(ca_cert, ca_key, "other.example", usage="server", hosts=("other.example",))
    host_cert, host_key = _write(base / "host", "s", cert, key=key)
    wrong_host = replace(good, server_cert=host_cert, server_key=host_key)
    now = datetime.now(UTC)
    cert, key = issue_certificate(
        ca_cert,
        ca_key,
        "localhost",
        usage="server",
        hosts=("localhost", "127.0.0.1"),
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(days=1),
    )
    expired_cert, expired_key = _write(base / "expired", "s", cert, key=key)
    expired = replace(good, server_cert=expired_cert, server_key=expired_key)
    wrong_ca = replace(good, server_cert=other.server_cert, server_key=other.server_key)
    # IGC Santé style: a root (path length 1), an intermediate CA, and the leaves under it.
    root, root_key = issue_certificate(None, None, "TEST RACINE IGC-SANTE", usage="ca", path_length=1)
    inter, inter_key = issue_certificate(root, root_key, "TEST AC IGC-SANTE ORGANISATIONS", usage="ca")
    leaves = {
        name: issue_certificate(inter, inter_key, cn, usage=usage, hosts=hosts)
        for name, cn, usage, hosts in (
            ("server", "localhost", "server", ("localhost", "127.0.0.1")),
            ("auth", "LABORATOIRE CHAINE ORG AUTH_CLI", "client", ()),
            ("sign", "LABORATOIRE CHAINE ORG SIGN", "sign", ()),
        )
    }
    folder = base / "chain"
    paths: dict[str, Path] = {}
    for name, (leaf, leaf_key) in leaves.items():
        paths[f"{name}_cert"], paths[f"{name}_key"] = _write(folder, name, leaf, inter, key=leaf_key)
    # What the simulators trust for client certificates and signatures: root and intermediate.
    paths["ca_cert"], paths["ca_key"] = _write(folder, "ca-bundle", root, inter, key=inter_key)
    chain_root, _ = _write(folder, "root", root, key=root_key)
    return Pkis(good, wrong_ca, wrong_host, expired, Pki(directory=folder, **paths), chain_root)


# -- jobs ------------------------------------------------------------------------------------


def make_job(channel: Channel) -> Job:
    n3 = (OUTPUT / f"{SAMPLE}.n3.xml").read_bytes()
    header = read_header(n3)
    metadata: dict[str, Any] = {"confidentiality": [header.confidentiality], "secret_connection": False}
    recipient = Recipient(RecipientKind.DMP, "dmp")
    if channel is Channel.MSSANTE:
        recipient = Recipient(
            RecipientKind.PROFESSIONAL, "dr.prescripteur@hopital.mssante.fr", "810001234567"
        )
        metadata |= {
            "headers": {"X-MSS-CODECDA": "11502-2", "X-MSS-INS": "O"},
            "to_patient": False,
            "request_dsn": False,
            "request_mdn": False,
        }
    elif channel is Channel.HL7V2:
        recipient = Recipient(RecipientKind.SYSTEM, "pfi")
        flags = ("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REP_LEGAUX", "CONNEXION_SECRETE")
        metadata |= {"flags": dict.fromkeys(flags, "N"), "mssante_recipients": [], "no_reply": True}
    delivery = Delivery(channel, Action.SUBMIT, recipient, header.document_id, header.version, None, metadata)
    return Job(delivery, 1, n3, (OUTPUT / f"{SAMPLE}.pdf").read_bytes())


# -- one channel: its server, its configuration section, what "it worked" means --------------


def _toml(value: str | Path | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Transport:
    """How to run one channel against its simulator."""

    name: str
    where: str  # the configuration section the errors name
    address: str  # its setting naming the server
    start: Callable[[Pki, Path], contextlib.AbstractContextManager[Any]]
    settings: Callable[[Any, Path], dict[str, Any]]  # server, secrets dir -> section without TLS keys
    received: Callable[[Any], int]
    signs: bool = False  # the DMP also needs the ORG SIGN credential
    channel: Channel | None = None  # None: the mailbox


def _dmp_settings(server: XdsSimulator, secrets: Path) -> dict[str, Any]:
    return {"sender": "dmp", "url": server.url, "timeout": 10}


def _smtp_settings(implicit: bool) -> Callable[[SmtpSimulator, Path], dict[str, Any]]:
    def settings(server: SmtpSimulator, secrets: Path) -> dict[str, Any]:
        mode = {"tls": True, "starttls": False} if implicit else {"starttls": True}
        return {
            "sender": "smtp",
            "host": server.host,
            "port": server.port,
            "from": MAILBOX_USER,
            "timeout": 10,
            **mode,
        }

    return settings


def _operator_settings(server: OperatorApiSimulator, secrets: Path) -> dict[str, Any]:
    secret = secrets / "operator-secret"
    secret.write_text(OPERATOR_SECRET, encoding="utf-8")
    return {
        "sender": "operator-api",
        "base_url": server.base_url,
        "token_url": server.token_url,
        "client_id": OPERATOR_ID,
        "client_secret_file": str(secret),
        "sender_address": MAILBOX_USER,
        "timeout": 10,
    }


def _mllp_settings(server: MllpSimulator, secrets: Path) -> dict[str, Any]:
    return {
        "sender": "mllp",
        "name": "pfi",
        "host": "127.0.0.1",
        "port": server.port,
        "tls": True,
        "timeout": 10,
        "receiving_application": "PFI",
        "receiving_facility": "CH-TEST",
    }


def _imap_settings(server: ImapSimulator, secrets: Path) -> dict[str, Any]:
    password = secrets / "imap-password"
    password.write_text(MAILBOX_PASSWORD, encoding="utf-8")
    return {
        "host": server.host,
        "port": server.port,
        "user": MAILBOX_USER,
        "password_file": str(password),
        "timeout": 10,
    }


TRANSPORTS = [
    Transport(
        "dmp-https",
        "destinations.dmp",
        "url",
        lambda pki, d: XdsSimulator(pki, store_dir=d),
        _dmp_settings,
        lambda s: len(s.entries),
        signs=True,
        channel=Channel.DMP,
    ),
    Transport(
        "smtp-starttls",
        "destinations.mssante",
        "host",
        lambda pki, d: SmtpSimulator(pki, store_dir=d),
        _smtp_settings(False),
        lambda s: len(s.messages),
        channel=Channel.MSSANTE,
    ),
    Transport(
        "smtp-implicit-tls",
        "destinations.mssante",
        "host",
        lambda pki, d: SmtpSimulator(pki, store_dir=d, implicit_tls=True),
        _smtp_settings(True),
        lambda s: len(s.messages),
        channel=Channel.MSSANTE,
    ),
    Transport(
        "operator-api-https",
        "destinations.mssante",
        "token_url",
        lambda pki, d: OperatorApiSimulator(
            pki, client_id=OPERATOR_ID, client_secret=OPERATOR_SECRET, store_dir=d
        ),
        _operator_settings,
        lambda s: len(s.messages),
        channel=Channel.MSSANTE,
    ),
    Transport(
        "mllp-tls",
        "destinations.hl7v2",
        "host",
        lambda pki, d: MllpSimulator(pki=pki, tls=True, require_client_cert=True, store_dir=d),
        _mllp_settings,
        lambda s: len(s.messages),
        channel=Channel.HL7V2,
    ),
    Transport(
        "imaps-mailbox",
        "mailbox",
        "host",
        lambda pki, d: ImapSimulator(pki, user=MAILBOX_USER, password=MAILBOX_PASSWORD),
        _imap_settings,
        lambda s: 0,  # nothing is sent to the mailbox: reading it without an error is the proof
    ),
]


def credential_settings(
    pki: Pki, form: str, directory: Path, *, ca_file: Path | None = None
) -> dict[str, Any]:
    """The TLS keys of a section: the CA bundle and the client (and signing) credential as ``form``."""
    settings: dict[str, Any] = {"ca_file": str(ca_file or pki.ca_cert)}
    for prefix, cert, key in (("client", pki.auth_cert, pki.auth_key), ("sign", pki.sign_cert, pki.sign_key)):
        if form == "pem":
            settings |= {f"{prefix}_cert": str(cert), f"{prefix}_key": str(key)}
            continue
        certs = x509.load_pem_x509_certificates(cert.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), None)
        bundle = directory / f"{prefix}.p12"
        bundle.write_bytes(
            pkcs12.serialize_key_and_certificates(
                prefix.encode(),
                private,  # type: ignore[arg-type]
                certs[0],
                certs[1:] or None,
                serialization.BestAvailableEncryption(P12_PASSWORD.encode()),
            )
        )
        settings[f"{prefix}_pkcs12"] = str(bundle)
        if form == "pkcs12-file":
            password = directory / f"{prefix}-p12-password"
            password.write_text(P12_PASSWORD + "\n", encoding="utf-8")
            settings[f"{prefix}_password_file"] = str(password)
        else:
            settings[f"{prefix}_password_env"] = P12_ENV
    return settings


def write_config(directory: Path, transport: Transport, section: dict[str, Any]) -> Path:
    """A whole ``crbio.toml`` with this one channel (or mailbox) section."""
    header = "[mailbox]" if transport.channel is None else f"[destinations.{transport.channel.value}]"
    if not transport.signs:
        section = {k: v for k, v in section.items() if not k.startswith("sign_")}
    lines = "\n".join(f"{key} = {_toml(value)}" for key, value in section.items())
    path = directory / "crbio.toml"
    path.write_text(
        f"""[laboratory]
finess = "920000015"
name = "Laboratoire des Charmes"
oid = "1.2.250.1.999.77"
responsible_rpps = "10100012342"
responsible_name = "CAMPARINI Marcel"

[software]
nil = "NIL-0001"
dmp_homologation = "HOMOLOGATION-TEST"

[outbox]
path = {_toml(directory / "outbox.sqlite")}

{header}
{lines}
""",
        encoding="utf-8",
    )
    return path


def run_channel(transport: Transport, config: DispatchConfig) -> None:
    """Send the sample document (or read the mailbox) once; let any error through."""
    if transport.channel is None:
        collect_returns(config)
        return
    destination = config.destinations[transport.channel]
    sender = load_sender(destination.sender).from_config(destination.settings, config.context)
    try:
        sender.send(make_job(transport.channel))
    finally:
        sender.close()


@contextlib.contextmanager
def served(transport: Transport, server_pki: Pki, directory: Path) -> Iterator[Any]:
    with transport.start(server_pki, directory / "received") as server:
        yield server


def _received(transport: Transport, server: Any) -> int:
    return transport.received(server)


@pytest.fixture
def p12_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P12_ENV, P12_PASSWORD)


# -- it works: PEM and PKCS#12, and an intermediate chain ------------------------------------


@pytest.mark.parametrize("form", ["pem", "pkcs12-file", "pkcs12-env"])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=[t.name for t in TRANSPORTS])
def test_client_credentials_from_pem_and_pkcs12_work_end_to_end(
    transport: Transport, form: str, pkis: Pkis, tmp_path: Path, p12_env: None
) -> None:
    with served(transport, pkis.good, tmp_path) as server:
        section = transport.settings(server, tmp_path) | credential_settings(pkis.good, form, tmp_path)
        config = DispatchConfig.load(write_config(tmp_path, transport, section))
        run_channel(transport, config)
        if transport.channel is not None:
            assert _received(transport, server) == 1


@pytest.mark.parametrize("transport", TRANSPORTS, ids=[t.name for t in TRANSPORTS])
def test_a_ca_bundle_with_the_root_alone_accepts_an_intermediate_chain(
    transport: Transport, pkis: Pkis, tmp_path: Path
) -> None:
    with served(transport, pkis.chain, tmp_path) as server:
        section = transport.settings(server, tmp_path) | credential_settings(
            pkis.chain, "pem", tmp_path, ca_file=pkis.chain_root
        )
        config = DispatchConfig.load(write_config(tmp_path, transport, section))
        run_channel(transport, config)
        if transport.channel is not None:
            assert _received(transport, server) == 1


# -- it refuses: wrong CA, wrong host, expired -----------------------------------------------

REFUSALS = {
    # server PKI variant -> (the setting named, a fragment of OpenSSL's reason)
    # Both test CAs are named "crbio test CA": OpenSSL finds "the" issuer, whose signature fails.
    "wrong_ca": ("ca_file", "certificate signature failure"),
    "wrong_host": (None, "mismatch"),  # None: the transport's address setting
    "expired": (None, "certificate has expired"),
}


@pytest.mark.parametrize("variant", list(REFUSALS))
@pytest.mark.parametrize("transport", TRANSPORTS, ids=[t.name for t in TRANSPORTS])
def test_a_server_certificate_that_does_not_verify_is_refused(
    transport: Transport, variant: str, pkis: Pkis, tmp_path: Path
) -> None:
    setting, reason = REFUSALS[variant]
    with served(transport, getattr(pkis, variant), tmp_path) as server:
        section = transport.settings(server, tmp_path) | credential_settings(pkis.good, "pem", tmp_path)
        config = DispatchConfig.load(write_config(tmp_path, transport, section))
        expected: type[CrbioError] = (
            PermanentSendError if transport.channel is not None else ConfigurationError
        )
        with pytest.raises(expected) as caught:
            run_channel(transport, config)
        assert _received(transport, server) == 0
    message = str(caught.value)
    if transport.channel is None:
        # The mailbox names its CA bundle, with OpenSSL's reason (host or date) in parentheses.
        assert "mailbox.ca_file: the certificate of the IMAP server" in message, message
    else:
        assert f"{transport.where}.{setting or transport.address}:" in message, message
        assert f"{transport.where}.{setting or transport.address}:" in caught.value.reason  # type: ignore[attr-defined]
    assert reason in message, message


# -- client credentials at start-up ----------------------------------------------------------

SECTIONS = [t for t in TRANSPORTS if t.name != "smtp-implicit-tls"]


def _client_cert(pki: Pki, directory: Path, *, not_before: datetime, not_after: datetime) -> dict[str, Any]:
    ca_cert, ca_key = _load(pki)
    cert, key = issue_certificate(
        ca_cert,
        ca_key,
        "LABORATOIRE TEST ORG AUTH_CLI",
        usage="client",
        not_before=not_before,
        not_after=not_after,
    )
    cert_path, key_path = _write(directory / "client", "auth", cert, key=key)
    return {"client_cert": str(cert_path), "client_key": str(key_path)}


def _offline_section(transport: Transport, directory: Path) -> dict[str, Any]:
    # No server needed: the configuration is refused before anything connects.
    unstarted = SimpleNamespace(
        url="https://127.0.0.1:9/si-dmp-server/v2/services",
        host="127.0.0.1",
        port=9,
        base_url="https://127.0.0.1:9/fhir",
        token_url="https://127.0.0.1:9/oauth/token",
    )
    return transport.settings(unstarted, directory)


@pytest.mark.parametrize(
    ("shift", "message"),
    [((-400, -1), "the certificate expired on"), ((2, 400), "the certificate is not valid before")],
    ids=["expired", "not-yet-valid"],
)
@pytest.mark.parametrize("transport", SECTIONS, ids=[t.name for t in SECTIONS])
def test_a_client_certificate_outside_its_validity_stops_the_configuration_load(
    transport: Transport, shift: tuple[int, int], message: str, pkis: Pkis, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    section = (
        _offline_section(transport, tmp_path)
        | credential_settings(pkis.good, "pem", tmp_path)
        | _client_cert(
            pkis.good,
            tmp_path,
            not_before=now + timedelta(days=shift[0]),
            not_after=now + timedelta(days=shift[1]),
        )
    )
    with pytest.raises(ConfigurationError) as caught:
        DispatchConfig.load(write_config(tmp_path, transport, section))
    assert str(caught.value).startswith(f"{transport.where}.client_cert: {message}")
    assert caught.value.code == "config.certificate"


@pytest.mark.parametrize("transport", SECTIONS, ids=[t.name for t in SECTIONS])
def test_a_client_certificate_expiring_within_30_days_is_announced_at_load_without_secrets(
    transport: Transport, pkis: Pkis, tmp_path: Path, caplog: pytest.LogCaptureFixture, p12_env: None
) -> None:
    now = datetime.now(UTC)
    soon = _client_cert(
        pkis.good, tmp_path, not_before=now - timedelta(days=300), not_after=now + timedelta(days=12)
    )
    # As a password-protected PKCS#12, so the record can be checked for the password too.
    p12 = credential_settings(
        replace(pkis.good, auth_cert=Path(soon["client_cert"]), auth_key=Path(soon["client_key"])),
        "pkcs12-env",
        tmp_path,
    )
    section = _offline_section(transport, tmp_path) | p12
    with caplog.at_level(logging.DEBUG):
        DispatchConfig.load(write_config(tmp_path, transport, section))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    (record,) = warnings
    assert record.name == "crbio.dispatch.tls"
    day = f"{now + timedelta(days=12):%Y-%m-%d}"
    assert record.getMessage() == (
        f"{transport.where}.client_pkcs12: the certificate expires on {day} UTC (in 11 days): renew it"
    )
    key_text = Path(soon["client_key"]).read_text().splitlines()[1]
    everything = " ".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    for secret in (P12_PASSWORD, OPERATOR_SECRET, MAILBOX_PASSWORD, key_text):
        assert secret not in everything


# -- no way to switch verification off, no credentials in URLs ------------------------------


@pytest.mark.parametrize(
    "key", ["verify", "insecure", "check_hostname", "tls_verify", "ssl_verify", "verify_mode"]
)
@pytest.mark.parametrize("transport", SECTIONS, ids=[t.name for t in SECTIONS])
def test_there_is_no_setting_to_turn_verification_off(
    transport: Transport, key: str, pkis: Pkis, tmp_path: Path
) -> None:
    # Each section refuses unknown keys, so a "verify = false" copied from another tool fails
    # loudly, at load for the mailbox and when the sender is built for the destinations.
    section = (
        _offline_section(transport, tmp_path) | credential_settings(pkis.good, "pem", tmp_path) | {key: False}
    )
    with pytest.raises(ConfigurationError, match=rf"^{transport.where}\.{key}: unknown setting"):
        config = DispatchConfig.load(write_config(tmp_path, transport, section))
        if transport.channel is not None:
            destination = config.destinations[transport.channel]
            load_sender(destination.sender).from_config(destination.settings, config.context)


@pytest.mark.parametrize(
    ("transport_name", "key", "value"),
    [
        ("dmp-https", "url", "https://lab:Pa55-in-url@127.0.0.1:9/si-dmp-server/v2/services"),
        ("dmp-https", "url", "https://lab@127.0.0.1:9/si-dmp-server/v2/services?access_token=Pa55-in-url"),
        ("operator-api-https", "token_url", "https://crbio:Pa55-in-url@127.0.0.1:9/oauth/token"),
        ("operator-api-https", "base_url", "https://127.0.0.1:9/fhir?api_key=Pa55-in-url"),
        ("smtp-starttls", "host", "lab:Pa55-in-url@smtp.example"),
        ("imaps-mailbox", "host", "lab:Pa55-in-url@imap.example"),
    ],
)
def test_credentials_in_a_url_are_refused_at_load_without_echoing_them(
    transport_name: str, key: str, value: str, pkis: Pkis, tmp_path: Path
) -> None:
    transport = next(t for t in TRANSPORTS if t.name == transport_name)
    section = (
        _offline_section(transport, tmp_path) | credential_settings(pkis.good, "pem", tmp_path) | {key: value}
    )
    with pytest.raises(ConfigurationError) as caught:
        DispatchConfig.load(write_config(tmp_path, transport, section))
    assert str(caught.value).startswith(f"{transport.where}.{key}: ")
    assert "credentials" in str(caught.value)
    assert "Pa55-in-url" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_the_repr_of_a_configuration_holds_no_secret(pkis: Pkis, tmp_path: Path) -> None:
    transport = next(t for t in TRANSPORTS if t.name == "operator-api-https")
    section = _offline_section(transport, tmp_path) | {"client_secret": OPERATOR_SECRET}
    del section["client_secret_file"]
    config = DispatchConfig.load(write_config(tmp_path, transport, section))
    imap = next(t for t in TRANSPORTS if t.name == "imaps-mailbox")
    mailbox = _offline_section(imap, tmp_path) | {"password": MAILBOX_PASSWORD}
    del mailbox["password_file"]
    config_with_mailbox = DispatchConfig.load(write_config(tmp_path, imap, mailbox))
    for text in (repr(config), repr(config_with_mailbox), repr(config.destinations), str(config)):
        assert OPERATOR_SECRET not in text and MAILBOX_PASSWORD not in text
    sender_config = config.destinations[Channel.MSSANTE]
    sender = load_sender(sender_config.sender).from_config(sender_config.settings, config.context)
    try:
        assert OPERATOR_SECRET not in repr(sender)
    finally:
        sender.close()


# -- secrets never in logs, exceptions, the journal ------------------------------------------


def test_secrets_stay_out_of_logs_errors_and_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole flow at DEBUG, httpx's and httpcore's wire logs included, then error paths.

    Scanned for the OAuth client secret, every access token the operator issued, the mailbox
    password and the private keys: every log record (message, arguments, exception text), the
    commands' stdout and stderr, ``crbio journal`` in every format, and every text column of
    every outbox table.
    """
    import sqlite3

    from crbio.cli import main
    from crbio.simulators.run import Simulation

    samples = [ROOT / "samples" / f"{name}.json" for name in ("01-biochimie", "02-hemogramme")]
    wire = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    levels = [logger.level for logger in wire]
    try:
        for logger in wire:  # as an application debugging its HTTP traffic would
            logger.setLevel(logging.DEBUG)
        with caplog.at_level(logging.DEBUG), Simulation(tmp_path / "sim", mssante="operator-api") as sim:
            config = str(sim.config_path)
            assert main(["--debug", "send", "--config", config, *map(str, samples)]) == 0
            assert main(["--debug", "returns", "--config", config]) == 0
            for form in ("table", "csv", "json"):
                assert main(["--debug", "journal", "--config", config, "--format", form]) == 0
            tokens = list(sim.operator._tokens)  # what the operator issued: the bearer tokens
            secrets = {sim.operator_secret, sim.imap_password, *tokens}
            key_lines = {
                line
                for path in (sim.pki.auth_key, sim.pki.sign_key)
                for line in path.read_text().splitlines()[1:-1]
            }
            # Error paths: a wrong client secret (the token endpoint refuses it), a wrong
            # mailbox password (the IMAP server refuses the login).
            (sim.directory / "pki" / "operator-secret").write_text("wrong-" + sim.operator_secret)
            (sim.directory / "pki" / "mailbox-password").write_text("wrong-" + sim.imap_password)
            secrets |= {"wrong-" + sim.operator_secret, "wrong-" + sim.imap_password}
            sim.operator.revoke_tokens()
            main(["--debug", "send", "--config", config, str(ROOT / "samples" / "03-ecbu.json")])
            assert main(["--debug", "returns", "--config", config]) == 3
            main(["--debug", "journal", "--config", config, "--format", "json"])
            database = sim.directory / "outbox.sqlite"
            loaded = DispatchConfig.load(sim.config_path)
    finally:
        for logger, level in zip(wire, levels, strict=True):
            logger.setLevel(level)
    assert tokens, "the operator API was not used"
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # the wire logs were on
    texts = [f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records]
    output = capsys.readouterr()
    texts += [output.out, output.err, repr(loaded)]
    assert "refused" in output.err  # the failures were reported
    with contextlib.closing(sqlite3.connect(database)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - names from sqlite_master
                texts += [value for value in row if isinstance(value, str)]
    everything = "\n".join(texts)
    for secret in sorted(secrets | key_lines):
        assert secret not in everything, f"a secret ({len(secret)} characters) was found"
    assert "authorization" not in everything.lower() or "bearer " not in everything.lower()
