"""Safe XML reading shared by crbio: no entity expansion, no DTD, no network, bounded size.

Every XML document crbio reads from outside (a CR-BIO to validate, a produced document
read back) goes through :func:`parse_xml` (lxml) or :func:`xml_text` (engines that take a
string, such as Saxon for the ANS kit). Both refuse what XML attacks need — entity
declarations, external DTDs — instead of trying to defuse them, since a CDA R2 document
never carries a DOCTYPE. Errors are :class:`~crbio.errors.InputError` with code ``input.xml``;
their messages give the document's label, a line and a column, never the document's content.
"""

from __future__ import annotations

import codecs
import re

from lxml import etree

from crbio.errors import InputError

__all__ = ["MAX_XML_BYTES", "parse_xml", "strip_bom", "xml_text"]

MAX_XML_BYTES = 64 * 1024 * 1024
"""Largest document accepted (64 MiB): a CR-BIO with a large embedded PDF stays well below it.

libxml2's own limit on one text node (10 MB without ``huge_tree``) applies as well, so an
embedded base64 PDF can be at most about 7.5 MB.
"""

_CODE = "input.xml"
_UTF8_BOM = codecs.BOM_UTF8

# The XML declaration's encoding pseudo-attribute; only read when there is no BOM.
_DECLARED_ENCODING = re.compile(rb"""\A<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z][A-Za-z0-9._-]*)["']""")
# XML 1.0 appendix F: the first bytes of a document in a 16- or 32-bit encoding, with or without
# a byte order mark (the 32-bit marks first: the UTF-32LE one starts with the UTF-16LE one).
_WIDE_SIGNATURES = (
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (b"\x00\x00\x00<", "utf-32-be"),
    (b"<\x00\x00\x00", "utf-32-le"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
)
_WIDE_NAMES = re.compile(rb"(?i)\A(?:utf-?(?:16|32)|ucs-?[24]|iso-10646-ucs-[24])")
_BARE_DOCTYPE = re.compile(r"<!DOCTYPE\s+[^\s\[>]+\s*>")
# libxml2 quotes undecodable bytes ("Bytes: 0xE9 0x20 …"): they are content, never shown.
_QUOTED_BYTES = re.compile(r"\s*Bytes:(?:\s*0x[0-9A-Fa-f]{2})+")
# lxml appends the position to libxml2's message; crbio's message gives it once, up front.
_POSITION_SUFFIX = re.compile(r",\s*line \d+, column \d+\s*\Z")


def strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte order mark.

    A BOM is legal XML but breaks some validation services (they answer "Error while executing
    validation"), so crbio removes it before anything reads the bytes.
    """
    return data[len(_UTF8_BOM) :] if data.startswith(_UTF8_BOM) else data


def _check_size(data: bytes, label: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise InputError(
            f"{label}: XML document too large ({len(data)} bytes, at most {max_bytes})", code=_CODE
        )


def _wide_encoding(data: bytes) -> str | None:
    """The 16- or 32-bit encoding the first bytes of ``data`` reveal, None for an ASCII-compatible one."""
    return next((codec for signature, codec in _WIDE_SIGNATURES if data.startswith(signature)), None)


def _check_declared_encoding(data: bytes, label: str) -> str | None:
    """The 16- or 32-bit encoding of ``data`` (BOM already stripped), refusing a declaration that lies.

    A declaration is only readable as ASCII when the bytes are ASCII-compatible, so one that
    names UTF-16 or UTF-32 there contradicts the bytes themselves: such a document is refused
    with a message saying so rather than read as garbage or failing somewhere further on.
    """
    wide = _wide_encoding(data)
    if wide is None:
        match = _DECLARED_ENCODING.match(data)
        if match is not None and _WIDE_NAMES.match(match.group(1)):
            name = match.group(1).decode("ascii")
            raise InputError(
                f"{label}: XML refused at line 1, column 1: it declares the encoding {name!r} but its bytes "
                "are not in that encoding",
                code=_CODE,
            )
    return wide


def _refuse_dtd_declaration(data: bytes, wide: str | None, label: str) -> None:
    """Refuse a DOCTYPE other than a bare one before any XML parser reads the document.

    libxml2 already neither loads DTDs nor substitutes entities here, and bounds entity
    amplification; finding the declaration first means no entity, DTD or parameter entity
    is ever handed to it, whatever its version, and the refusal reads the same for every attack.
    """
    if wide is None:
        if b"<!DOCTYPE" not in data:
            return
        text = data.decode("latin-1")
    else:
        text = data.decode(wide, errors="replace").removeprefix("\ufeff")
    at = _doctype_at(text)
    if at >= 0 and not _BARE_DOCTYPE.match(text, at):
        raise _dtd_refused(label, text.count("\n", 0, at) + 1)


def _dtd_refused(label: str, line: int) -> InputError:
    return InputError(
        f"{label}: XML refused at line {line}, column 1: the DOCTYPE has an internal subset or an "
        "external DTD (a CDA document has none)",
        code=_CODE,
    )


def _parser() -> etree.XMLParser:
    # A new parser per call: lxml parsers keep state and are not safe to share between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
    )


def _doctype_line(data: bytes) -> int:
    """The line of the DOCTYPE declaration in ASCII-compatible bytes (1 when not found)."""
    at = data.find(b"<!DOCTYPE")
    return data.count(b"\n", 0, at) + 1 if at >= 0 else 1


def parse_xml(data: bytes, *, label: str, max_bytes: int = MAX_XML_BYTES) -> etree._ElementTree:
    """Parse an XML document safely: no entities, no DTD, no network, bounded size.

    A UTF-8 BOM is stripped first. A DOCTYPE other than a bare ``<!DOCTYPE name>`` (entity or
    other declarations, an external DTD) is refused; comments and processing instructions are
    kept (the ``xml-stylesheet`` instruction matters to CR-BIO).

    Args:
        data: The document's bytes, in any encoding its declaration or BOM announces.
        label: An opaque name for the document in error messages (file name, document id).
        max_bytes: The largest document accepted.

    Returns:
        The parsed document.

    Raises:
        InputError: The document is too large, not well-formed or refused (code ``input.xml``).
    """
    _check_size(data, label, max_bytes)
    data = strip_bom(data)
    _refuse_dtd_declaration(data, _check_declared_encoding(data, label), label)
    try:
        tree: etree._ElementTree = etree.fromstring(data, _parser()).getroottree()
    except etree.XMLSyntaxError as error:
        line, column = error.position
        # libxml2 ends some messages with a newline: the error stays on one line.
        message = _POSITION_SUFFIX.sub("", _QUOTED_BYTES.sub("", error.msg or "syntax error")).strip()
        raise InputError(
            f"{label}: not well-formed XML at line {line}, column {column}: {message}", code=_CODE
        ) from None
    except ValueError as error:  # lxml refuses some inputs (e.g. a str with a declaration) this way
        raise InputError(f"{label}: unreadable XML: {error}", code=_CODE) from None
    if tree.docinfo.doctype and not _harmless_doctype(tree, data):
        raise _dtd_refused(label, _doctype_line(data))
    return tree


def _harmless_doctype(tree: etree._ElementTree, data: bytes) -> bool:
    """Whether a parsed document's DOCTYPE is a bare ``<!DOCTYPE name>``.

    libxml2 tells entity and element declarations and external DTDs apart but not an internal
    subset holding only ATTLIST declarations, which Saxon would apply as attribute defaults; so
    the prolog itself is read too, as latin-1 (a DOCTYPE is ASCII in any ASCII-compatible
    encoding, and a UTF-16 document just relies on libxml2's answer).
    """
    docinfo = tree.docinfo
    if docinfo.system_url or docinfo.public_id:
        return False
    dtd = docinfo.internalDTD
    if dtd is not None and (any(True for _ in dtd.iterentities()) or any(True for _ in dtd.iterelements())):
        return False
    text = data.decode("latin-1")
    at = _doctype_at(text)
    return at < 0 or _BARE_DOCTYPE.match(text, at) is not None


def _doctype_at(text: str) -> int:
    """Where the DOCTYPE declaration starts in the prolog, or -1.

    A plain scan rather than a regular expression: the prolog may only hold the XML
    declaration, blanks, comments and processing instructions, and a pattern with nested
    repetitions would backtrack through a whole document that has no DOCTYPE.
    """
    at, size = 0, len(text)
    while True:
        while at < size and text[at] in " \t\r\n":
            at += 1
        if text.startswith("<?", at):
            end = text.find("?>", at + 2)
            at = end + 2
        elif text.startswith("<!--", at):
            end = text.find("-->", at + 4)
            at = end + 3
        else:
            return at if text.startswith("<!DOCTYPE", at) else -1
        if end < 0:
            return -1


def _decode(data: bytes, label: str) -> str:
    wide = _check_declared_encoding(data, label)
    if wide is not None:
        encoding = wide
    else:
        match = _DECLARED_ENCODING.match(data)
        encoding = match.group(1).decode("ascii") if match else "utf-8"
    try:
        return data.decode(encoding)
    except LookupError:
        raise InputError(f"{label}: unknown XML encoding {encoding!r}", code=_CODE) from None
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise InputError(
            f"{label}: not well-formed XML at line {line}, column {column}: bytes invalid in {encoding}",
            code=_CODE,
        ) from None


def xml_text(data: bytes, *, label: str, max_bytes: int = MAX_XML_BYTES) -> str:
    """Decode a document for an XML engine that reads strings, refusing any DTD.

    Engines such as Saxon resolve external entities and DTDs while parsing, and they read a
    string as characters whatever its declaration says. So the bytes are decoded here (BOM,
    then the declared encoding, then UTF-8), a UTF-8 BOM is dropped, and a DOCTYPE other than
    a bare ``<!DOCTYPE name>`` is refused before the engine sees the text. Well-formedness is
    left to the engine.

    Raises:
        InputError: The document is too large, undecodable or refused (code ``input.xml``).
    """
    _check_size(data, label, max_bytes)
    text = _decode(strip_bom(data), label)
    text = text.removeprefix("\ufeff")  # a UTF-16 BOM decodes to U+FEFF
    doctype = _doctype_at(text)
    if doctype >= 0 and not _BARE_DOCTYPE.match(text, doctype):
        raise _dtd_refused(label, text.count("\n", 0, doctype) + 1)
    return text
