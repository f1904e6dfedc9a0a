"""Present a CDA document as HTML through an XSLT 1.0 stylesheet, crbio's own by default.

A CR-BIO is self-presenting: its ``xml-stylesheet`` instruction names a stylesheet that a
browser applies. :func:`render_html` applies one the way a careful consumer would: the document
is read by :func:`crbio._xml.parse_xml` (no DTD, no entity, no network), and the transformation
runs with :attr:`lxml.etree.XSLTAccessControl.DENY_ALL`, so a stylesheet cannot read a file or
open a connection while it runs. Compiled stylesheets are cached per file and per version of
that file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lxml import etree

from crbio._resources import data_path
from crbio._xml import parse_xml
from crbio.errors import ConfigurationError, InputError

__all__ = ["render_html", "stylesheet_path"]

_CODE = "config.stylesheet"
# Enough of libxslt's complaints to fix a stylesheet; they quote the stylesheet, never a document.
_SHOWN_ERRORS = 5


def stylesheet_path() -> Path:
    """The path of crbio's default stylesheet, ``crbio-cda.xsl``, in a checkout or an installed wheel."""
    return data_path("stylesheets", "crbio-cda.xsl")


def render_html(cda: bytes | Path, *, stylesheet: Path | None = None) -> bytes:
    """Render a CDA document (N3 or N1) as an HTML page through an XSLT 1.0 stylesheet.

    Args:
        cda: The document's bytes, or the path of its file. A UTF-8 BOM is accepted.
        stylesheet: The stylesheet to apply, such as a laboratory's own; crbio's by default.

    Returns:
        The HTML page, serialised as the stylesheet's ``xsl:output`` says (UTF-8 for crbio's).

    Raises:
        InputError: The document cannot be read (code ``input.unreadable``), is not well-formed
            XML or declares a DTD or entities (code ``input.xml``).
        ConfigurationError: The stylesheet is missing, is not a valid XSLT 1.0 stylesheet, or
            fails while it runs, for instance by trying to read a file (code ``config.stylesheet``).
    """
    transform = _stylesheet(stylesheet if stylesheet is not None else stylesheet_path())
    label, data = _read_document(cda)
    tree = parse_xml(data, label=label)
    try:
        result = transform(tree)
    except etree.XSLTApplyError:
        # libxslt's messages here may quote the document (an xsl:message, a value): none is shown,
        # and none is left in lxml's per-thread log, where a later error would list it.
        etree.clear_error_log()
        raise ConfigurationError(
            f"stylesheet {_name(stylesheet)} failed while rendering {label}", code=_CODE
        ) from None
    return bytes(result)


def _read_document(cda: bytes | Path) -> tuple[str, bytes]:
    if isinstance(cda, bytes | bytearray | memoryview):
        return "document", bytes(cda)
    if not isinstance(cda, Path):
        raise TypeError(f"cda must be bytes or a pathlib.Path, not {type(cda).__name__}")
    try:
        return cda.name, cda.read_bytes()
    except OSError as error:
        raise InputError(f"{cda.name}: cannot be read ({error.strerror})", code="input.unreadable") from None


def _name(stylesheet: Path | None) -> str:
    return stylesheet.name if stylesheet is not None else "crbio-cda.xsl"


def _stylesheet(path: Path) -> etree.XSLT:
    """The compiled stylesheet at ``path``, compiled again only when the file changes."""
    try:
        resolved = path.resolve(strict=True)
        status = resolved.stat()
    except OSError as error:
        raise ConfigurationError(
            f"stylesheet {path.name} cannot be read ({error.strerror})", code=_CODE
        ) from None
    return _compile(resolved, status.st_mtime_ns, status.st_size)


@lru_cache(maxsize=16)
def _compile(path: Path, mtime_ns: int, size: int) -> etree.XSLT:
    # mtime_ns and size only key the cache: an edited stylesheet is compiled again.
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(
            f"stylesheet {path.name} cannot be read ({error.strerror})", code=_CODE
        ) from None
    # Internal entities are allowed (some stylesheets declare &nbsp;), external ones are not;
    # no_network also covers an xsl:import or xsl:include of a remote stylesheet.
    parser = etree.XMLParser(resolve_entities="internal", no_network=True, load_dtd=False, huge_tree=False)
    try:
        document = etree.fromstring(data, parser, base_url=path.as_uri())
    except etree.XMLSyntaxError as error:
        line, column = error.position
        raise ConfigurationError(
            f"stylesheet {path.name}: not well-formed XML at line {line}, column {column}", code=_CODE
        ) from None
    # lxml's per-thread log may still hold messages of an earlier transformation (document data);
    # cleared, it holds only what compiling this stylesheet reports.
    etree.clear_error_log()
    try:
        return etree.XSLT(document, access_control=etree.XSLTAccessControl.DENY_ALL)
    except etree.XSLTParseError as error:
        messages = dict.fromkeys(
            f"line {entry.line}: {entry.message}" if entry.line else entry.message
            for entry in error.error_log
        )
        details = "; ".join(list(messages)[:_SHOWN_ERRORS])
        raise ConfigurationError(
            f"stylesheet {path.name} is not a valid XSLT 1.0 stylesheet"
            + (f" ({details})" if details else ""),
            code=_CODE,
        ) from None
