"""TLS contexts and secrets for the senders, from their configuration section.

Certificates are always verified; the CA bundle can be replaced (the IGC Santé chains are not
in the public stores). Client certificates come from PEM files or a PKCS#12 bundle. Secrets
are given by file (``<name>_file``) or environment variable (``<name>_env``), never inline in
a shared file, and are never logged.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import Certificate

from crbio.dispatch.senders._shared import shared
from crbio.dispatch.senders.base import SenderContext
from crbio.errors import ConfigurationError

log = logging.getLogger("crbio.dispatch.tls")

__all__ = [
    "CERTIFICATE_ALERTS",
    "ClientCredential",
    "check_credentials",
    "client_credential",
    "read_secret",
    "server_certificate_problem",
    "tls_context",
]

#: TLS failures (``ssl.SSLError.reason``) that are about certificates, ours or the server's:
#: fixing them takes a person, retrying will not.
CERTIFICATE_ALERTS = frozenset(
    {
        "CERTIFICATE_VERIFY_FAILED",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    }
)


def read_secret(
    section: Mapping[str, Any],
    name: str,
    *,
    where: str,
    required: bool = True,
    context: SenderContext | None = None,
) -> str | None:
    """The secret ``name`` of a section, read from ``<name>_file`` or ``<name>_env``.

    A relative ``<name>_file`` is resolved against the configuration file's directory when
    ``context`` is given. An inline ``<name>`` value is accepted too, for local tests; files and
    environment variables are what a deployment should use.

    Raises:
        ConfigurationError: the secret is required and not given, or its file or variable is missing.
    """
    if f"{name}_file" in section:
        given = str(section[f"{name}_file"])
        path = context.path(given) if context is not None else Path(given).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"{where}.{name}_file: cannot read the secret file ({exc.strerror})", code="config.secret"
            ) from None
    if f"{name}_env" in section:
        variable = str(section[f"{name}_env"])
        if variable not in os.environ:
            raise ConfigurationError(
                f"{where}.{name}_env: environment variable {variable} is not set", code="config.secret"
            )
        return os.environ[variable]
    if name in section:
        return str(section[name])
    if required:
        raise ConfigurationError(f"{where}: {name}_file or {name}_env is required", code="config.secret")
    return None


@dataclass(frozen=True)
class ClientCredential:
    """A certificate with its private key (ORG AUTH_CLI for TLS, ORG SIGN for signatures)."""

    certificate: Certificate
    chain: tuple[Certificate, ...]
    private_key: Any  # a cryptography private key

    def pem(self) -> tuple[bytes, bytes]:
        """The certificate chain and the unencrypted private key, as PEM."""
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.certificate, *self.chain))
        key = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return chain, key


#: A credential expiring within this many days is announced at start-up, in time to renew it.
EXPIRY_WARNING_DAYS = 30

# Certificates already announced as expiring (setting, fingerprint): the configuration is
# read at start-up and each sender reads its credentials again; one warning is enough.
_announced: set[tuple[str, bytes]] = set()


def _check_validity(certificate: Certificate, where: str) -> None:
    """Refuse a certificate outside its validity period; warn when it expires soon."""
    now = datetime.now(UTC)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if now < not_before:
        raise ConfigurationError(
            f"{where}: the certificate is not valid before {not_before:%Y-%m-%d %H:%M} UTC",
            code="config.certificate",
        )
    if now > not_after:
        raise ConfigurationError(
            f"{where}: the certificate expired on {not_after:%Y-%m-%d %H:%M} UTC: renew it",
            code="config.certificate",
        )
    left = not_after - now
    if left < timedelta(days=EXPIRY_WARNING_DAYS):
        announced = (where, certificate.fingerprint(hashes.SHA256()))
        if announced in _announced:
            return
        _announced.add(announced)
        log.warning(
            "%s: the certificate expires on %s UTC (in %d days): renew it",
            where,
            f"{not_after:%Y-%m-%d}",
            left.days,
        )


def client_credential(
    section: Mapping[str, Any], prefix: str, context: SenderContext, *, where: str, required: bool = False
) -> ClientCredential | None:
    """The credential named by ``<prefix>_pkcs12`` or ``<prefix>_cert`` + ``<prefix>_key``.

    Passwords come from ``<prefix>_password_file`` / ``<prefix>_password_env``. The files are
    read once per process for the same settings and files (loading an RSA key checks it, which
    takes tens of milliseconds, and the configuration, each sender and each worker thread ask
    for the same credentials); the validity period is checked on every call.

    Raises:
        ConfigurationError: files missing or unreadable, wrong password, outside its validity
            period, or required and absent.
    """
    if f"{prefix}_pkcs12" in section:
        setting = f"{where}.{prefix}_pkcs12"
    elif f"{prefix}_cert" in section:
        setting = f"{where}.{prefix}_cert"
    elif required:
        raise ConfigurationError(
            f"{where}: {prefix}_pkcs12 or {prefix}_cert is required", code="config.certificate"
        )
    else:
        return None
    settings = {key: value for key, value in section.items() if key.startswith(f"{prefix}_")}
    credential = shared(
        f"credential:{prefix}", settings, context, lambda: _read_credential(section, prefix, context, where)
    )
    _check_validity(credential.certificate, setting)
    return credential


def _read_credential(
    section: Mapping[str, Any], prefix: str, context: SenderContext, where: str
) -> ClientCredential:
    password = read_secret(section, f"{prefix}_password", where=where, required=False, context=context)
    secret = password.encode() if password else None
    try:
        if f"{prefix}_pkcs12" in section:
            data = context.path(section[f"{prefix}_pkcs12"]).read_bytes()
            key, cert, extra = pkcs12.load_key_and_certificates(data, secret)
            if key is None or cert is None:
                raise ConfigurationError(
                    f"{where}.{prefix}_pkcs12: no key or certificate", code="config.certificate"
                )
            return ClientCredential(cert, tuple(extra), key)
        from cryptography.x509 import load_pem_x509_certificates

        certs = load_pem_x509_certificates(context.path(section[f"{prefix}_cert"]).read_bytes())
        key_file = section.get(f"{prefix}_key")
        if key_file is None:
            raise ConfigurationError(
                f"{where}.{prefix}_key is required with {prefix}_cert", code="config.certificate"
            )
        key = serialization.load_pem_private_key(context.path(key_file).read_bytes(), secret)
        return ClientCredential(certs[0], tuple(certs[1:]), key)
    except OSError as exc:
        raise ConfigurationError(
            f"{where}.{prefix}: cannot read ({exc.strerror})", code="config.certificate"
        ) from None
    except ValueError:
        raise ConfigurationError(
            f"{where}.{prefix}: not a certificate and key, or wrong password", code="config.certificate"
        ) from None


#: The credentials a section may name: ``client_*`` (TLS, ORG AUTH_CLI) and ``sign_*`` (ORG SIGN).
CREDENTIAL_PREFIXES = ("client", "sign")


def check_credentials(section: Mapping[str, Any], context: SenderContext, *, where: str) -> None:
    """Load every credential a section names, so a bad one stops the program at start-up.

    Each ``client_*`` or ``sign_*`` credential (PEM or PKCS#12, with its password) is read and
    checked as :func:`client_credential` does: refused outside its validity period, announced
    (once per process) when it expires within :data:`EXPIRY_WARNING_DAYS` days.

    Raises:
        ConfigurationError: a certificate or key is unreadable, its password wrong or missing,
            or it is expired or not yet valid; the message names the setting.
    """
    for prefix in CREDENTIAL_PREFIXES:
        if f"{prefix}_pkcs12" in section or f"{prefix}_cert" in section:
            client_credential(section, prefix, context, where=where)


def server_certificate_problem(error: BaseException, *, where: str, address: str) -> str | None:
    """Why the server's certificate was refused, naming the setting to check; None for other failures.

    ``error`` is what the TLS connection raised (its causes and contexts are searched for an
    :class:`ssl.SSLCertVerificationError`); ``where`` is the section (``destinations.dmp``)
    and ``address`` its setting that names the server (``url``, ``host``). A certificate for
    another name points at ``address``; an expired one at the server; any other refusal at
    ``ca_file``, the trusted CAs.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            why = current.verify_message or str(current.reason or "verification failed")
            lowered = why.lower()
            if "mismatch" in lowered:
                return f"{where}.{address}: the server's certificate is not valid for this host ({why})"
            if "expired" in lowered or "not yet valid" in lowered:
                return f"{where}.{address}: the server's certificate is outside its validity period ({why})"
            return f"{where}.ca_file: the server's certificate is not issued by a trusted CA ({why})"
        current = current.__cause__ or current.__context__
    return None


def tls_context(
    section: Mapping[str, Any], context: SenderContext, *, where: str, client_prefix: str = "client"
) -> ssl.SSLContext:
    """A client TLS context: verification on, optional client cert, and the trusted CAs.

    The CAs are those of ``ca_file`` when it is given (and then only those), else the system's.

    Raises:
        ConfigurationError: a file is missing or unreadable.
    """
    # A ca_file replaces the system store: the DMP and MSSanté servers present IGC Santé
    # certificates, and a public CA has no business vouching for them.
    try:
        tls = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(context.path(section["ca_file"])) if "ca_file" in section else None,
        )
    except (OSError, ssl.SSLError):
        raise ConfigurationError(
            f"{where}.ca_file: cannot load the CA bundle", code="config.certificate"
        ) from None
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    credential = client_credential(section, client_prefix, context, where=where)
    if credential is not None:
        _load_cert_chain(tls, *credential.pem())
    return tls


def _load_cert_chain(tls: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    # OpenSSL reads a client certificate only from files. Where the system allows it they are
    # anonymous in-memory files, so the decrypted key never reaches a disk, even if the
    # process is killed at this very moment; elsewhere, a private temporary directory.
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create("crbio-tls-chain"), os.memfd_create("crbio-tls-key")]
        try:
            for fd, data in zip(fds, (chain, key), strict=True):
                with os.fdopen(os.dup(fd), "wb") as handle:
                    handle.write(data)
            tls.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="crbio-tls-") as tmp:
        paths = [Path(tmp) / "client.crt", Path(tmp) / "client.key"]
        for path, data in zip(paths, (chain, key), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        tls.load_cert_chain(paths[0], paths[1])
