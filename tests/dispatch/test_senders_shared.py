"""Credentials and TLS contexts read once per process for senders built from identical settings."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from crbio.dispatch.senders._shared import shared
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.senders.dmp import DmpSender
from crbio.dispatch.senders.mllp import MllpSender
from crbio.dispatch.tls import client_credential, tls_context
from crbio.errors import ConfigurationError
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def lab(tmp_path: Path) -> SenderContext:
    return SenderContext("920000015", "Laboratoire des Charmes", "1.2.250.1.999.1", base_dir=tmp_path)


def dmp_section(pki: Pki, directory: Path, **extra: Any) -> dict[str, Any]:
    """DMP settings whose SIGN files are copies in ``directory`` (the tests rewrite them)."""
    for name in ("sign.crt", "sign.key"):
        if not (directory / name).exists():
            shutil.copy(pki.directory / name, directory / name)
    return {
        "url": "https://127.0.0.1:9/si-dmp-server/v2/services",
        "ca_file": str(pki.ca_cert),
        "client_cert": str(pki.auth_cert),
        "client_key": str(pki.auth_key),
        "sign_cert": str(directory / "sign.crt"),
        "sign_key": str(directory / "sign.key"),
        **extra,
    }


def test_dmp_senders_of_the_same_settings_share_what_they_read(
    pki: Pki, lab: SenderContext, tmp_path: Path
) -> None:
    first = DmpSender.from_config(dmp_section(pki, tmp_path), lab)
    second = DmpSender.from_config(dmp_section(pki, tmp_path), lab)
    other = DmpSender.from_config(dmp_section(pki, tmp_path, timeout=5), lab)
    try:
        assert first._identity.credential is second._identity.credential
        # A credential depends only on its own settings and files, not on the section's others.
        assert other._identity.credential is first._identity.credential
        # A renewed certificate (the files rewritten) is read by the next sender built.
        renewed = make_test_pki(tmp_path / "renewed")
        shutil.copy(renewed.sign_cert, tmp_path / "sign.crt")
        shutil.copy(renewed.sign_key, tmp_path / "sign.key")
        third = DmpSender.from_config(dmp_section(pki, tmp_path), lab)
        assert third._identity.credential is not first._identity.credential
        renewed_cert = x509.load_pem_x509_certificate(renewed.sign_cert.read_bytes())
        assert third._identity.credential.certificate == renewed_cert
        third.close()
    finally:
        for sender in (first, second, other):
            sender.close()


def test_a_setting_refused_is_refused_every_time(pki: Pki, lab: SenderContext, tmp_path: Path) -> None:
    section = dmp_section(pki, tmp_path)
    (tmp_path / "sign.key").write_bytes(b"not a key")
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="destinations.dmp.sign"):
            DmpSender.from_config(section, lab)
    shutil.copy(pki.sign_key, tmp_path / "sign.key")
    DmpSender.from_config(section, lab).close()


def test_mllp_senders_share_their_tls_context(pki: Pki, lab: SenderContext) -> None:
    section = {
        "host": "127.0.0.1",
        "port": 2575,
        "receiving_application": "PFI",
        "receiving_facility": "CH",
        "tls": True,
        "ca_file": str(pki.ca_cert),
        "client_cert": str(pki.auth_cert),
        "client_key": str(pki.auth_key),
    }
    first, second = MllpSender.from_config(section, lab), MllpSender.from_config(section, lab)
    assert first.tls is not None and first.tls is second.tls
    plain = {k: v for k, v in section.items() if k in {"host", "port", "receiving_application"}}
    assert MllpSender.from_config({**plain, "receiving_facility": "CH"}, lab).tls is None


def test_what_a_reading_depends_on(
    lab: SenderContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def read() -> int:
        calls.append(1)
        return len(calls)

    key = tmp_path / "some.key"
    key.write_bytes(b"one")
    section = {"sign_key": str(key), "sign_password_env": "CRBIO_TEST_SHARED_PASSWORD"}
    monkeypatch.setenv("CRBIO_TEST_SHARED_PASSWORD", "first")
    assert shared("test-a", section, lab, read) == shared("test-a", section, lab, read) == 1
    assert shared("test-b", section, lab, read) == 2  # another kind of reading
    monkeypatch.setenv("CRBIO_TEST_SHARED_PASSWORD", "second")  # the password changed
    assert shared("test-a", section, lab, read) == 3
    key.write_bytes(b"other content")  # the file changed
    assert shared("test-a", section, lab, read) == 4
    os.utime(key, ns=(1, 1))  # only its date
    assert shared("test-a", section, lab, read) == 5
    assert shared("test-a", section, lab, read) == 5

    def broken() -> int:
        calls.append(1)
        raise ValueError("unreadable")

    for _ in range(2):
        with pytest.raises(ValueError, match="unreadable"):
            shared("test-c", section, lab, broken)
    assert len(calls) == 7  # never kept


def test_threads_asking_at_once_wait_for_one_reading(lab: SenderContext) -> None:
    calls: list[int] = []
    start = threading.Barrier(6)

    def read() -> int:
        calls.append(1)
        time.sleep(0.2)  # long enough for every thread to arrive while it reads
        return 42

    results: list[int] = []

    def ask() -> None:
        start.wait()
        results.append(shared("test-gate", {"x": 1}, lab, read))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [42] * 6
    assert len(calls) == 1


def test_sections_naming_the_same_files_share_one_credential(pki: Pki, lab: SenderContext) -> None:
    files = {"client_cert": str(pki.auth_cert), "client_key": str(pki.auth_key)}
    dmp = client_credential({"url": "https://a", **files}, "client", lab, where="destinations.dmp")
    mllp = client_credential({"host": "b", **files}, "client", lab, where="destinations.hl7v2")
    assert dmp is not None and dmp is mllp
    assert client_credential({"host": "b"}, "client", lab, where="destinations.hl7v2") is None
    with pytest.raises(ConfigurationError, match="destinations.dmp: sign_pkcs12 or sign_cert is required"):
        client_credential({"url": "https://a"}, "sign", lab, where="destinations.dmp", required=True)


def test_a_ca_file_is_the_only_trust(pki: Pki, lab: SenderContext) -> None:
    # The IGC Santé chain of ca_file replaces the system store: no public CA vouches for the DMP.
    trusted = tls_context({"ca_file": str(pki.ca_cert)}, lab, where="destinations.dmp").get_ca_certs()
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    assert [int(str(entry["serialNumber"]), 16) for entry in trusted] == [ca.serial_number]
