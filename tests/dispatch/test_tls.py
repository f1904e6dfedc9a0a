"""Client credentials are refused outside their validity period and announced before they expire."""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.tls import client_credential, tls_context
from crbio.errors import ConfigurationError
from crbio.simulators.pki import issue_certificate

CONTEXT = SenderContext("920000015", "Laboratoire des Charmes", "1.2.250.1.999.1", software_version="1.0")
WHERE = "destinations.mssante"


def pem_credential(directory: Path, *, not_before: datetime, not_after: datetime) -> dict[str, Any]:
    cert, key = issue_certificate(
        None,
        None,
        "LABORATOIRE TEST ORG AUTH_CLI",
        usage="client",
        not_before=not_before,
        not_after=not_after,
    )
    cert_path, key_path = directory / "client.crt", directory / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {"client_cert": str(cert_path), "client_key": str(key_path)}


def test_an_expired_certificate_is_refused_naming_the_setting(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    section = pem_credential(
        tmp_path, not_before=now - timedelta(days=400), not_after=now - timedelta(days=2)
    )
    with pytest.raises(
        ConfigurationError, match=rf"^{WHERE}\.client_cert: the certificate expired"
    ) as caught:
        tls_context(section, CONTEXT, where=WHERE)
    assert caught.value.code == "config.certificate"


def test_a_certificate_not_yet_valid_is_refused(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    section = pem_credential(
        tmp_path, not_before=now + timedelta(days=3), not_after=now + timedelta(days=400)
    )
    with pytest.raises(ConfigurationError, match="is not valid before"):
        client_credential(section, "client", CONTEXT, where=WHERE)


def test_a_certificate_expiring_soon_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(UTC)
    section = pem_credential(
        tmp_path, not_before=now - timedelta(days=300), not_after=now + timedelta(days=10)
    )
    with caplog.at_level(logging.WARNING, logger="crbio.dispatch.tls"):
        assert client_credential(section, "client", CONTEXT, where=WHERE) is not None
    assert [r.getMessage() for r in caplog.records] == [
        f"{WHERE}.client_cert: the certificate expires on {(now + timedelta(days=10)):%Y-%m-%d} UTC "
        "(in 9 days): renew it"
    ]


def test_a_valid_certificate_says_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = datetime.now(UTC)
    section = pem_credential(
        tmp_path, not_before=now - timedelta(days=1), not_after=now + timedelta(days=365)
    )
    with caplog.at_level(logging.WARNING, logger="crbio.dispatch.tls"):
        tls_context(section, CONTEXT, where=WHERE)
    assert not caplog.records


def test_an_expired_pkcs12_is_refused(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    cert, key = issue_certificate(
        None,
        None,
        "LABORATOIRE TEST ORG SIGN",
        usage="sign",
        not_before=now - timedelta(days=400),
        not_after=now - timedelta(hours=1),
    )
    bundle = tmp_path / "sign.p12"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(b"sign", key, cert, None, serialization.NoEncryption())
    )
    with pytest.raises(ConfigurationError, match=r"^destinations\.dmp\.sign_pkcs12: the certificate expired"):
        client_credential({"sign_pkcs12": str(bundle)}, "sign", CONTEXT, where="destinations.dmp")


def test_the_client_key_never_reaches_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker killed while loading its certificate must not leave the decrypted key behind.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    now = datetime.now(UTC)
    section = pem_credential(
        tmp_path, not_before=now - timedelta(days=1), not_after=now + timedelta(days=365)
    )
    tls_context(section, CONTEXT, where=WHERE)
    assert not list((tmp_path / "tmp").iterdir())
