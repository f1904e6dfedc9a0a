"""Validation against the official CDA R2 schema as extended by the ANS (``CDA_extended.xsd``).

The schema files are vendored unmodified under ``schemas/cda/`` (see ``PROVENANCE.md``
there). The schema is compiled once per process; validating a CR-BIO then takes about a
millisecond.
"""

from __future__ import annotations

import re
from functools import cache

from lxml import etree

from crbio._resources import data_path
from crbio._xml import parse_xml
from crbio.errors import ConfigurationError
from crbio.validation.report import Finding, ValidationReport

__all__ = ["validate_xsd"]

_CHECK = "xsd"
_SCHEMA = ("cda", "CDA_extended.xsd")

# libxml2 quotes the offending value in some messages ("The value '19x7' is not accepted by
# the pattern …", "Element 'x': '12,5' is not a valid value of …"). A value may be patient
# data (a birth date, a result) and findings end up in exception messages and logs, so the
# value is withheld; the line and the location point to it.
_WITHHELD = "[value withheld]"
_QUOTED_VALUES = (
    re.compile(r"(The value )'.*?'(?= is not | has a length | does not | is less | is greater )", re.DOTALL),
    re.compile(r"(: )'.*?'(?= is not a valid value of )", re.DOTALL),
)
_ATTRIBUTE = re.compile(r"^Element '[^']*', attribute '([^']*)'")


@cache
def _schema() -> etree.XMLSchema:
    """The compiled schema, built on first use and kept for the life of the process."""
    path = data_path("schemas", *_SCHEMA)
    # The vendored files are trusted, but the reader still refuses the network: every
    # include and import must resolve inside schemas/cda/.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.XMLSchema(etree.parse(str(path), parser))
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as error:
        raise ConfigurationError(
            f"the vendored CDA schema {path} cannot be compiled: {error}", code="config.schema"
        ) from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _element_path(element: etree._Element) -> str:
    """A readable path of local names with 1-based positions among same-named siblings."""
    steps = []
    node: etree._Element | None = element
    while node is not None:
        parent = node.getparent()
        step = _local(node.tag)
        if parent is not None:
            same = [child for child in parent if child.tag == node.tag]
            if len(same) > 1:
                step += f"[{same.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))


def _location(tree: etree._ElementTree, libxml2_path: str | None, message: str) -> str | None:
    """The element path of an error, ``/@name`` appended when the error is on an attribute."""
    if not libxml2_path:
        return None
    try:
        found = tree.xpath(libxml2_path)
    except etree.XPathError:
        return libxml2_path
    if not isinstance(found, list) or not found or not isinstance(found[0], etree._Element):
        return libxml2_path
    path = _element_path(found[0])
    attribute = _ATTRIBUTE.match(message)
    if attribute:
        path += f"/@{_local(attribute.group(1))}"
    return path


def _withhold_values(message: str) -> str:
    for pattern in _QUOTED_VALUES:
        message = pattern.sub(rf"\g<1>{_WITHHELD}", message)
    return message


def validate_xsd(document: bytes | etree._ElementTree, *, label: str) -> ValidationReport:
    """Validate a document against the official ``CDA_extended.xsd``.

    Args:
        document: The document as bytes (parsed safely with :func:`crbio._xml.parse_xml`) or
            an already parsed tree.
        label: An opaque name for the document in the report (file name, document id).

    Returns:
        A report with the check ``xsd``: one finding per schema error, with its line, the
        element path (``/ClinicalDocument/component/structuredBody/component[2]/section``)
        and libxml2's message, offending values withheld.

    Raises:
        InputError: ``document`` is bytes that are not well-formed, safe XML.
        ConfigurationError: The vendored schema is missing or broken.
    """
    tree = parse_xml(document, label=label) if isinstance(document, bytes) else document
    schema = _schema()
    if schema.validate(tree):
        return ValidationReport(label, (_CHECK,))
    findings = tuple(
        Finding(
            source=_CHECK,
            message=_withhold_values(entry.message),
            location=_location(tree, entry.path, entry.message),
            line=entry.line or None,
            rule=entry.type_name,
        )
        for entry in schema.error_log
    )
    return ValidationReport(label, (_CHECK,), findings)
