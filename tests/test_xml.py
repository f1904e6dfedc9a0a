"""Safe XML reading: crbio._xml refuses what XML attacks need and never leaks content."""

from __future__ import annotations

import codecs
import time
from pathlib import Path

import pytest
from lxml import etree

from crbio._xml import parse_xml, strip_bom, xml_text
from crbio.errors import InputError

DOCUMENT = b"""<?xml version="1.0" encoding="UTF-8"?>
<?xml-stylesheet type="text/xsl" href="CDA-FO.xsl"?>
<!-- produced by crbio -->
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Compte rendu</title></ClinicalDocument>
"""

SECRET = "crbio-secret-7f3a"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A local file an attack would like to read."""
    path = tmp_path / "secret.txt"
    path.write_text(SECRET, encoding="ascii")
    return path


def refused(data: bytes) -> InputError:
    with pytest.raises(InputError) as caught:
        parse_xml(data, label="doc.xml")
    assert caught.value.code == "input.xml"
    assert caught.value.message.startswith("doc.xml: ")
    return caught.value


def test_a_plain_document_keeps_comments_and_processing_instructions() -> None:
    tree = parse_xml(DOCUMENT, label="doc.xml")
    assert etree.QName(tree.getroot()).localname == "ClinicalDocument"
    before = tree.getroot().getprevious()
    assert isinstance(before, etree._Comment)
    stylesheet = before.getprevious()
    assert isinstance(stylesheet, etree._ProcessingInstruction) and stylesheet.target == "xml-stylesheet"


def test_a_utf8_bom_is_accepted_and_dropped() -> None:
    tree = parse_xml(codecs.BOM_UTF8 + DOCUMENT, label="doc.xml")
    assert tree.getroot().findtext("{urn:hl7-org:v3}title") == "Compte rendu"
    assert strip_bom(codecs.BOM_UTF8 + b"<a/>") == b"<a/>"
    assert strip_bom(b"<a/>") == b"<a/>"


def test_an_external_entity_is_refused_unread(secret_file: Path) -> None:
    attack = (
        f'<?xml version="1.0"?>\n<!DOCTYPE ClinicalDocument [\n'
        f'  <!ENTITY leak SYSTEM "{secret_file.as_uri()}">\n]>\n'
        f"<ClinicalDocument>&leak;</ClinicalDocument>"
    ).encode()
    error = refused(attack)
    assert SECRET not in str(error)
    assert "line 2" in str(error)


def test_etc_passwd_is_not_read() -> None:
    attack = b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    error = refused(attack)
    assert "root:" not in str(error)


def test_a_parameter_entity_is_refused(secret_file: Path) -> None:
    attack = f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{secret_file.as_uri()}"> %p;]><r/>'.encode()
    refused(attack)


def test_billion_laughs_is_refused_quickly() -> None:
    entities = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)]
    attack = f"<!DOCTYPE r [{''.join(entities)}]><r>&l9;</r>".encode()
    start = time.perf_counter()
    refused(attack)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE ClinicalDocument SYSTEM "file:///etc/passwd">',
        '<!DOCTYPE ClinicalDocument PUBLIC "-//evil//DTD" "http://127.0.0.1:9/evil.dtd">',
        "<!DOCTYPE ClinicalDocument [<!ELEMENT ClinicalDocument ANY>]>",
        # Harmless to lxml, but Saxon would add the default attribute to what it checks.
        "<!DOCTYPE ClinicalDocument [<!ATTLIST ClinicalDocument classCode CDATA 'DOCCLIN'>]>",
    ],
)
def test_an_external_or_internal_dtd_is_refused(doctype: str) -> None:
    error = refused(f"{doctype}\n<ClinicalDocument/>".encode())
    assert "DOCTYPE" in str(error)


def test_a_bare_doctype_is_harmless_and_accepted() -> None:
    assert parse_xml(b"<!DOCTYPE r>\n<r/>", label="doc.xml").getroot().tag == "r"


def test_not_well_formed_gives_line_and_column_but_no_content() -> None:
    broken = b'<?xml version="1.0"?>\n<ClinicalDocument>\n  <name>DUPONT Jeanne</nom>\n</ClinicalDocument>\n'
    error = refused(broken)
    assert "line 3" in str(error) and "column" in str(error)
    assert "DUPONT" not in str(error) and "Jeanne" not in str(error)


def test_undecodable_bytes_are_not_quoted() -> None:
    broken = b'<?xml version="1.0" encoding="UTF-8"?>\n<r>DUPONT \xe9\xe9\xe9</r>'
    error = refused(broken)
    assert "0xE9" not in str(error).upper()
    assert "DUPONT" not in str(error)


def test_an_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(InputError, match="too large") as caught:
        parse_xml(DOCUMENT, label="doc.xml", max_bytes=100)
    assert caught.value.code == "input.xml"


def test_a_declared_latin1_document_is_read_in_its_encoding() -> None:
    latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?><r>é</r>'.encode("latin-1")
    assert parse_xml(latin1, label="doc.xml").getroot().text == "é"
    assert xml_text(latin1, label="doc.xml").endswith("<r>é</r>")


class TestXmlText:
    """The text handed to Saxon: decoded, BOM-less, without DTD."""

    def test_bom_is_dropped(self) -> None:
        assert xml_text(codecs.BOM_UTF8 + DOCUMENT, label="doc.xml") == DOCUMENT.decode()

    def test_utf16_is_decoded(self) -> None:
        text = '<?xml version="1.0" encoding="UTF-16"?><r>é</r>'
        assert xml_text(text.encode("utf-16"), label="doc.xml") == text

    @pytest.mark.parametrize(
        "prolog",
        [
            '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
            '<!-- note --><?pi x?>\n<!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd">',
            "<!DOCTYPE r [<!ATTLIST r a CDATA 'injected'>]>",
        ],
    )
    def test_a_dtd_is_refused(self, prolog: str) -> None:
        with pytest.raises(InputError, match="DOCTYPE") as caught:
            xml_text(f'<?xml version="1.0"?>\n{prolog}<r>&x;</r>'.encode(), label="doc.xml")
        assert caught.value.code == "input.xml"

    def test_a_bare_doctype_and_a_doctype_later_in_text_are_left_alone(self) -> None:
        assert xml_text(b"<!DOCTYPE r><r/>", label="doc.xml") == "<!DOCTYPE r><r/>"
        # Not a declaration: the engine will find this document well-formed or not itself.
        assert xml_text(b"<r><![CDATA[<!DOCTYPE r [ ]>]]></r>", label="doc.xml")

    def test_a_large_document_is_scanned_in_linear_time(self) -> None:
        big = DOCUMENT.replace(b"Compte rendu", b"<?pi ?>" * 200_000)
        start = time.perf_counter()
        xml_text(big, label="doc.xml")
        assert time.perf_counter() - start < 2

    def test_bytes_invalid_in_their_encoding_give_the_line(self) -> None:
        with pytest.raises(InputError, match="line 2") as caught:
            xml_text(b"<r>\nDUPONT \xff</r>", label="doc.xml")
        assert "DUPONT" not in str(caught.value)

    def test_an_unknown_encoding_is_refused(self) -> None:
        with pytest.raises(InputError, match="unknown XML encoding"):
            xml_text(b'<?xml version="1.0" encoding="x-klingon"?><r/>', label="doc.xml")
