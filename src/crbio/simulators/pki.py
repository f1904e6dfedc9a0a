"""A throw-away PKI for the simulators and the tests: one CA, a server and two client certificates.

It mimics the IGC Santé layout a lab deploys with (an ORG AUTH_CLI certificate for TLS client
authentication, an ORG SIGN certificate for the VIHF and XAdES signatures) so the senders run
the same code against the simulators as against the national services. Nothing here is ever
committed: certificates are generated when a test run or ``crbio simulate`` starts.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TestPki", "issue_certificate", "make_test_pki"]


@dataclass(frozen=True)
class TestPki:
    """Paths of the generated PEM files.

    ``server_*`` is valid for ``localhost`` and ``127.0.0.1``; ``auth_*`` is the client
    (AUTH_CLI) certificate; ``sign_*`` the signing (SIGN) certificate; all are issued by ``ca``.
    """

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    auth_cert: Path
    auth_key: Path
    sign_cert: Path
    sign_key: Path


def _name(common_name: str, organization: str = "crbio test PKI") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue_certificate(
    issuer_cert: x509.Certificate | None,
    issuer_key: rsa.RSAPrivateKey | None,
    common_name: str,
    *,
    usage: str,
    hosts: tuple[str, ...] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    path_length: int = 0,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Issue an RSA certificate (``usage``: ``ca``, ``server``, ``client`` or ``sign``).

    Without an issuer the certificate is self-signed. Dates can be set to make expired or
    not-yet-valid certificates for the tests. A CA with ``path_length`` 1 can issue an
    intermediate CA, as the IGC Santé root does.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    subject = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
    )
    if usage == "ca":
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length), critical=True
        ).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        eku = {
            "server": [ExtendedKeyUsageOID.SERVER_AUTH],
            "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
            "sign": [ExtendedKeyUsageOID.EMAIL_PROTECTION],
        }[usage]
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if usage == "sign":
            builder = builder.add_extension(
                x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True
            )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    signer = issuer_key if issuer_key is not None else key
    return builder.sign(signer, hashes.SHA256()), key


def make_test_pki(directory: str | Path) -> TestPki:
    """Generate a CA and its server, AUTH_CLI and SIGN certificates as PEM files in ``directory``."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = issue_certificate(None, None, "crbio test CA", usage="ca")
    server_cert, server_key = issue_certificate(
        ca_cert, ca_key, "localhost", usage="server", hosts=("localhost", "127.0.0.1")
    )
    auth_cert, auth_key = issue_certificate(ca_cert, ca_key, "LABORATOIRE TEST ORG AUTH_CLI", usage="client")
    sign_cert, sign_key = issue_certificate(ca_cert, ca_key, "LABORATOIRE TEST ORG SIGN", usage="sign")
    paths = {}
    for name, cert, key in (
        ("ca", ca_cert, ca_key),
        ("server", server_cert, server_key),
        ("auth", auth_cert, auth_key),
        ("sign", sign_cert, sign_key),
    ):
        _write(target / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(target / f"{name}.key", _key_pem(key))
        paths[f"{name}_cert"] = target / f"{name}.crt"
        paths[f"{name}_key"] = target / f"{name}.key"
    return TestPki(directory=target, **paths)
