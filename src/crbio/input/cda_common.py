"""What the CDA reader's header and body parts share: names, locations, times, codes, narrative.

A :class:`Reading` walks one ClinicalDocument. It names elements by an XPath-like location
(``ClinicalDocument/component/structuredBody/component[2]/section/…/observation[3]/value``),
never by their content, so its errors and omissions can be logged and shown without quoting
patient data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lxml import etree

from crbio.errors import InputError
from crbio.identifiers import FINESS_OID, NATIONAL_PS_OID
from crbio.model import Address, Code, PersonName, Telecom

__all__ = [
    "BODY_ERROR",
    "HEADER_ERROR",
    "HL7",
    "LAB",
    "XSI_TYPE",
    "Omission",
    "Reading",
    "child",
    "children",
    "has_template",
    "local_name",
    "squeeze",
]

HL7 = "urn:hl7-org:v3"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
LAB = "urn:oid:1.3.6.1.4.1.19376.1.3.2"

# Code of the errors in the header (the patient, the laboratory… cannot be read) and in the body
# (a result the model cannot hold). Merging tells them apart: a body error falls back on the PDF.
HEADER_ERROR = "input.cda.header"
BODY_ERROR = "input.cda.body"

_TS = re.compile(
    r"([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?(?:\.[0-9]+)?([+-][0-9]{4})?"
)
_SPACES = re.compile(r"\s+")
# The codes of the CDA XSD's set_PostalAddressUse and set_TelecommunicationAddressUse (voc.xsd).
_ADDRESS_USES = frozenset({"BAD", "CONF", "DIR", "H", "HP", "HV", "PHYS", "PST", "PUB", "TMP", "WP"})
_TELECOM_USES = frozenset({"AS", "BAD", "CONF", "DIR", "EC", "H", "HP", "HV", "MC", "PG", "PUB", "TMP", "WP"})
# The CDA XSD's uid: the union of oid, uuid and ruid (datatypes-base.xsd).
_UID = re.compile(
    r"[0-2](?:\.(?:0|[1-9][0-9]*))*"
    r"|[0-9a-zA-Z]{8}-[0-9a-zA-Z]{4}-[0-9a-zA-Z]{4}-[0-9a-zA-Z]{4}-[0-9a-zA-Z]{12}"
    r"|[A-Za-z][A-Za-z0-9\-]*"
)


@cache
def _local_zone() -> tzinfo:
    """The time zone of a CDA time written without an offset: French documents mean French time."""
    try:
        return ZoneInfo("Europe/Paris")
    except ZoneInfoNotFoundError:  # no time zone database (some Windows installs)
        return timezone(timedelta(hours=1))


def local_name(node: etree._Element) -> str:
    """The element's name without its namespace ('' for comments and processing instructions)."""
    return etree.QName(node).localname if isinstance(node.tag, str) else ""


def children(node: etree._Element, name: str) -> list[etree._Element]:
    """The HL7 child elements of ``node`` with a given local name."""
    found: list[etree._Element] = node.findall(f"{{{HL7}}}{name}")
    return found


def child(node: etree._Element | None, *names: str) -> etree._Element | None:
    """The first HL7 element down a path of local names, or None."""
    for name in names:
        if node is None:
            return None
        node = node.find(f"{{{HL7}}}{name}")
    return node


def has_template(node: etree._Element, *roots: str) -> bool:
    """Whether the element declares one of the given templateId roots."""
    return any(t.get("root") in roots for t in children(node, "templateId"))


def squeeze(text: str | None) -> str:
    """Text with its runs of white space made single spaces, trimmed."""
    return _SPACES.sub(" ", text or "").strip()


def _error_code(node: etree._Element) -> str:
    """The error code of a refusal at ``node``: a body error inside the structuredBody, else a header one."""
    inside_body = any(local_name(a) == "structuredBody" for a in node.iterancestors())
    return BODY_ERROR if inside_body else HEADER_ERROR


def _national_id(node: etree._Element | None, root: str, prefix: str, length: int) -> str | None:
    """A national identifier (RPPS, FINESS) from an ``id`` whose extension is ``prefix`` + the number."""
    for found in children(node, "id") if node is not None else []:
        extension = str(found.get("extension") or "")
        if found.get("root") == root and extension.startswith(prefix) and len(extension) == length:
            return extension[len(prefix) :]
    return None


@dataclass(frozen=True, slots=True)
class Omission:
    """Something of the CDA the report model does not hold, left out of the reading.

    Attributes:
        location: The element, as an XPath-like location from ``ClinicalDocument``.
        what: What was left out and why, in words that never quote the document's content.
    """

    location: str
    what: str

    def __str__(self) -> str:
        return f"{self.location}: {self.what}"


class Reading:
    """The state of reading one ClinicalDocument: its label, narrative ids and what was left out."""

    def __init__(self, root: etree._Element, label: str) -> None:
        self.root = root
        self.label = label
        self.omissions: list[Omission] = []
        self._ids: dict[str, etree._Element] | None = None

    # -- locations, errors, omissions -------------------------------------------------------------

    def where(self, node: etree._Element) -> str:
        """The XPath-like location of an element from ClinicalDocument.

        A step carries its position among siblings of the same name when there are several.
        """
        steps: list[str] = []
        current: etree._Element | None = node
        while current is not None:
            name = local_name(current)
            parent = current.getparent()
            if current is self.root or parent is None:
                steps.append(name)
                break
            same = [s for s in parent if isinstance(s.tag, str) and s.tag == current.tag]
            steps.append(f"{name}[{same.index(current) + 1}]" if len(same) > 1 else name)
            current = parent
        return "/".join(reversed(steps))

    def fail(self, node: etree._Element, message: str, *, code: str = BODY_ERROR) -> NoReturn:
        """Refuse the document because of one element: an InputError naming it, never its content."""
        raise InputError(f"{self.label}: {self.where(node)}: {message}", code=code)

    def omit(self, node: etree._Element, what: str) -> None:
        """Record something the model does not hold (it is logged and returned, never silent)."""
        self.omissions.append(Omission(self.where(node), what))

    # -- narrative --------------------------------------------------------------------------------

    def narrative(self, node: etree._Element | None) -> str:
        """The text an element holds or points to: a ``reference`` is followed into the narrative."""
        if node is None:
            return ""
        reference = child(node, "reference")
        if reference is not None and reference.get("value"):
            target = self.by_id(reference.get("value", ""))
            return squeeze("".join(target.itertext())) if target is not None else ""
        return squeeze("".join(node.itertext()))

    def by_id(self, reference: str) -> etree._Element | None:
        """The narrative element with a given ID (``#id`` or ``id``)."""
        if self._ids is None:
            self._ids = {n.get("ID", ""): n for n in self.root.iterfind(".//*[@ID]")}
        return self._ids.get(reference.removeprefix("#"))

    # -- data types -------------------------------------------------------------------------------

    def time(self, node: etree._Element | None, *, lenient: bool = False) -> datetime | None:
        """An IVL_TS or TS as a date-time: its @value, else its high, else its low; None if absent.

        A time without a UTC offset is French time; a date alone is midnight. An invalid time
        refuses the document, or gives None when ``lenient`` (the caller then leaves out what it
        dates, saying so).
        """
        if node is None or node.get("nullFlavor"):
            return None
        value = node.get("value")
        if value is None:
            for bound in ("high", "low", "center"):
                found = child(node, bound)
                if found is not None and found.get("value"):
                    return self.time(found, lenient=lenient)
            return None
        parsed = self._parse_ts(value)
        if parsed is None and not lenient:
            self.fail(node, "is not a valid HL7 time (YYYYMMDD[HHMM[SS]][+ZZZZ])")
        return parsed

    def date(self, node: etree._Element | None) -> date | None:
        """A TS reduced to its date (a birth date); None if absent."""
        if node is None or node.get("nullFlavor") or not node.get("value"):
            return None
        match = _TS.fullmatch(node.get("value", ""))
        if match is None or match.group(3) is None:
            self.fail(node, "is not an HL7 date (YYYYMMDD)", code=HEADER_ERROR)
        try:
            return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        except ValueError:
            self.fail(node, "is not a valid date", code=HEADER_ERROR)

    @staticmethod
    def _parse_ts(value: str) -> datetime | None:
        match = _TS.fullmatch(value)
        if match is None:
            return None
        year, month, day, hour, minute, second, offset = match.groups()
        if offset is None:
            zone: tzinfo = _local_zone()
        else:
            minutes = int(offset[1:3]) * 60 + int(offset[3:5])
            zone = timezone(timedelta(minutes=minutes if offset[0] == "+" else -minutes))
        try:
            return datetime(
                int(year),
                int(month or 1),
                int(day or 1),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                tzinfo=zone,
            )
        except ValueError:
            return None

    def decimal(self, node: etree._Element, attribute: str = "value") -> Decimal:
        """A decimal attribute, its written precision kept (``3.50`` stays ``3.50``)."""
        raw = node.get(attribute)
        if raw is None:
            self.fail(node, f"has no @{attribute}")
        try:
            number = Decimal(raw.strip())
        except InvalidOperation:
            self.fail(node, f"@{attribute} is not a decimal number")
        if not number.is_finite():
            self.fail(node, f"@{attribute} is not a finite number")
        if len(number.as_tuple().digits) > 30 or abs(number.adjusted()) > 30:
            # As in crbio JSON: no measurement has that many digits, and the PDF cannot print them.
            self.fail(node, f"@{attribute} has too many digits (at most 30, and a magnitude below 1E30)")
        return number

    def uid(self, node: etree._Element, attribute: str) -> str:
        """An attribute of the CDA ``uid`` type (an ``@root``, a ``@codeSystem``), refused when malformed.

        Written again in the rebuilt document, a malformed one would make it invalid against the
        CDA XSD: the input is refused here, naming the element, rather than the build failing later.
        """
        value = str(node.get(attribute, ""))
        if not _UID.fullmatch(value):
            self.fail(
                node,
                f"@{attribute} is not of the CDA uid type (an OID, a UUID or an HL7 reserved id)",
                code=_error_code(node),
            )
        return value

    def code(self, node: etree._Element | None) -> Code | None:
        """A coded element (code, codeSystem, displayName, codeSystemName), or None without @code.

        Raises:
            InputError: ``@codeSystem`` is missing or not a uid: a code is written again with its system.
        """
        if node is None or not node.get("code"):
            return None
        return Code(
            code=node.get("code", ""),
            system=self.uid(node, "codeSystem"),
            display=node.get("displayName") or None,
            system_name=node.get("codeSystemName") or None,
        )

    def xsi_type(self, node: etree._Element) -> str:
        """The local name of an element's xsi:type (``PQ`` for ``xsi:type="c:PQ"``), '' if none."""
        value = str(node.get(XSI_TYPE, ""))
        prefix, _, name = value.rpartition(":")
        if prefix and node.nsmap.get(prefix) not in (HL7, None):
            self.fail(node, "has an xsi:type outside the HL7 v3 namespace")
        return name

    # -- people, places ---------------------------------------------------------------------------

    @staticmethod
    def finess(organization: etree._Element | None) -> str | None:
        """The FINESS of an organisation, from its national structure identifier ``1`` + FINESS."""
        return _national_id(organization, FINESS_OID, "1", 10)

    @staticmethod
    def rpps(entity: etree._Element | None) -> str | None:
        """The RPPS of a professional, from its national PS identifier ``8`` + RPPS."""
        return _national_id(entity, NATIONAL_PS_OID, "8", 12)

    def use(self, node: etree._Element, allowed: frozenset[str]) -> str | None:
        """An ``@use`` (a space-separated set of codes), refused when a code is not one the XSD allows."""
        value = str(node.get("use") or "")
        if not value:
            return None
        if not set(value.split()) <= allowed:
            self.fail(
                node,
                f"@use is not a set of {local_name(node)} uses of the CDA ({', '.join(sorted(allowed))})",
                code=_error_code(node),
            )
        return value

    def address(self, node: etree._Element | None) -> Address | None:
        """A CDA ``addr`` as the model's Address (free lines or structured parts); None if absent.

        Raises:
            InputError: its ``@use`` is not a set of postal address uses.
        """
        if node is None or node.get("nullFlavor"):
            return None
        use = self.use(node, _ADDRESS_USES)

        def part(name: str) -> str | None:
            return (
                squeeze("".join(found.itertext())) or None
                if (found := child(node, name)) is not None
                else None
            )

        lines = tuple(squeeze("".join(line.itertext())) for line in children(node, "streetAddressLine"))
        lines = tuple(line for line in lines if line)
        structured = {
            "house_number": part("houseNumber"),
            "street_name": part("streetName"),
            "unit_id": part("unitID"),
            "additional_locator": part("additionalLocator"),
            "post_box": part("postBox"),
            "postal_code": part("postalCode"),
            "city": part("city"),
            "country": part("country"),
        }
        if not lines and not any(structured.values()):
            return None
        if lines:
            # The CI-SIS model does not mix the two forms: free lines keep the rest as lines too.
            extra = tuple(
                v for k, v in structured.items() if v and k not in ("postal_code", "city", "country")
            )
            return Address(
                lines=lines + extra,
                postal_code=structured["postal_code"],
                city=structured["city"],
                country=structured["country"],
                use=use,
            )
        return Address(
            house_number=structured["house_number"],
            street_name=structured["street_name"],
            unit_id=structured["unit_id"],
            additional_locator=structured["additional_locator"],
            post_box=structured["post_box"],
            postal_code=structured["postal_code"],
            city=structured["city"],
            country=structured["country"],
            use=use,
        )

    def telecoms(self, node: etree._Element) -> tuple[Telecom, ...]:
        """The ``telecom`` children of an element that have a value.

        Raises:
            InputError: a telecom's ``@use`` is not a set of telecommunication address uses.
        """
        return tuple(
            Telecom(t.get("value", "").strip(), self.use(t, _TELECOM_USES))
            for t in children(node, "telecom")
            if t.get("value") and ":" in t.get("value", "")
        )

    @staticmethod
    def person_name(node: etree._Element | None) -> PersonName | None:
        """A professional's ``name`` (prefix, given names, family, suffix); None without a family name."""
        if node is None:
            return None

        def texts(name: str) -> list[str]:
            return [t for n in children(node, name) if (t := squeeze("".join(n.itertext())))]

        family = " ".join(texts("family"))
        if not family:
            return None
        prefix = texts("prefix")
        suffix = texts("suffix")
        return PersonName(
            family=family,
            given=tuple(texts("given")),
            prefix=prefix[0] if prefix else None,
            suffix=suffix[0] if suffix else None,
        )
