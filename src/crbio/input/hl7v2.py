r"""Read HL7 v2.5 ``ORU^R01`` results (the IHE LTW LAB-3 shape) into the report model.

python-hl7 splits the message with its own delimiters (``MSH-1``, ``MSH-2``). This module
walks the segments in ORU_R01 order, checks what a CR-Bio needs and the ORU does not enforce
(one patient, final results only, a LOINC code for every result, a specimen for every
battery), then writes the report in crbio's JSON format and hands it to
:func:`crbio.input.json_report.report_from_mapping`, so an ORU passes every rule a JSON report
passes: INS key and traits, RPPS and FINESS keys, LOINC check digits, UCUM units, value sets,
chronology. Every problem is named by its place in the message: ``OBX[3]-6`` is field 6 of
the third OBX segment of the message, ``PID-3`` field 3 of the PID. Messages never quote
patient data; they may quote codes (value types, local analysis codes, units).

What an ORU does not carry (the issuing laboratory's name, address, telephone and OID root,
the chapter of a battery whose ``OBR-24`` is empty, the OID of the laboratory's local codes)
comes from :class:`OruDefaults`, usually a ``crbio-oru.toml`` file beside the messages.

One file holds one message: a report is one patient, one prescriber and one validation, and
a batch writes one set of documents per input file. A file with several messages is refused
rather than split, so that a preliminary and a final message of the same order, or two
patients, never end up merged or half-converted.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import hl7

from crbio._files import read_input
from crbio._hl7 import parse_hl7_time
from crbio.codes import LOINC_OID, SNOMED_OID, check_loinc, check_ucum
from crbio.errors import ConfigurationError, InputError, InvalidReport, Problem
from crbio.identifiers import FINESS_OID, INS_OIDS, NATIONAL_PS_OID, check_oid
from crbio.input.json_report import FORMAT, MAX_BYTES, report_from_mapping
from crbio.input.loinc_mapping import LoincEntry, LoincMapping
from crbio.model import Report

__all__ = [
    "CONFIG_ENV",
    "CONFIG_FILE",
    "SECTION_CHAPTERS",
    "ChapterRef",
    "LoincMapping",
    "OruDefaults",
    "load_oru",
    "oru_to_mapping",
    "read_oru",
]

log = logging.getLogger("crbio.input.hl7v2")

#: The configuration file looked for beside a message when no :class:`OruDefaults` is given.
CONFIG_FILE: Final = "crbio-oru.toml"
#: An environment variable naming the configuration file, used when there is none beside the message.
CONFIG_ENV: Final = "CRBIO_ORU_CONFIG"


@dataclass(frozen=True, slots=True)
class ChapterRef:
    """A chapter of the report: the LOINC code of a laboratory specialty and its printed title."""

    code: str
    title: str


#: HL7 table 0074 diagnostic service sections (``OBR-24``) → the CR-Bio chapter (LOINC specialty).
SECTION_CHAPTERS: Final[Mapping[str, ChapterRef]] = {
    "CH": ChapterRef("18719-5", "Biochimie"),
    "HM": ChapterRef("18723-7", "Hématologie"),
    "BG": ChapterRef("18767-4", "Gaz du sang"),
    "BLB": ChapterRef("18717-9", "Immuno-hématologie"),
    "MB": ChapterRef("18725-2", "Microbiologie"),
    "MCB": ChapterRef("18725-2", "Microbiologie"),
    "MYC": ChapterRef("18725-2", "Microbiologie"),
    "VR": ChapterRef("18725-2", "Microbiologie"),
    "SR": ChapterRef("18727-8", "Sérologie"),
    "TX": ChapterRef("18728-6", "Toxicologie"),
    "URN": ChapterRef("18729-4", "Examens urinaires"),
}

#: HL7 table 0004 patient classes (``PV1-2``) → CR-Bio encounter kinds; the configuration may add more.
_PATIENT_CLASSES: Final[Mapping[str, str]] = {"O": "AMB", "I": "IMP", "E": "EMER"}

_CONFIG_KEYS: Final = frozenset(
    {
        "laboratory",
        "biologist",
        "biologist_specialty",
        "specialties",
        "executing_laboratories",
        "chapters",
        "default_chapter",
        "ipp_root",
        "order_root",
        "local_code_system",
        "encounter_kind",
        "patient_classes",
        "timezone",
        "loinc_mapping",
    }
)


@dataclass(frozen=True, eq=False)
class OruDefaults:
    """What a CR-Bio needs and an ORU^R01 does not carry, usually read from ``crbio-oru.toml``.

    Attributes:
        laboratory: The issuing laboratory, as the ``laboratory`` object of crbio's JSON format
            (name, address, telecom, oid, practice_setting…). ``finess`` may be left out when
            ``MSH-4`` carries it, ``oid`` when ``MSH-4`` gives it as an ISO universal id.
        biologist: The validating biologist (a ``professional`` object of the JSON format), used
            only when neither ``OBR-32`` nor ``OBX-16`` names one.
        biologist_specialty: The profession/specialty (TRE_R38, ``G15_10/SM03``…) of a biologist
            that ``specialties`` does not list; the CR-Bio volet requires one.
        specialties: Profession/specialty codes by RPPS, for biologists and prescribers.
        executing_laboratories: What ``OBX-23``/``OBX-24`` do not say about a subcontracted
            laboratory (telecom, practice_setting…), by FINESS, as the ``executing_laboratories``
            objects of the JSON format; the message's name and address take precedence.
        chapters: The chapter of a battery by its ``OBR-4`` code, or by ``OBR-24`` section; it
            overrides :data:`SECTION_CHAPTERS`.
        default_chapter: The chapter of a battery nothing else places.
        ipp_root: The OID of the patient identifiers (``PID-3`` of type PI) whose assigning
            authority gives none.
        order_root: The OID of the order numbers (``ORC-3``/``OBR-3``) whose EI gives none.
        local_code_system: The OID of the laboratory's own analysis codes; with it a result keeps
            its local code next to the LOINC code.
        encounter_kind: The encounter kind when ``PV1-2`` is empty (``AMB``).
        patient_classes: ``PV1-2`` patient classes → encounter kinds, added to O→AMB, I→IMP, E→EMER.
        timezone: The time zone of the message's times that carry no UTC offset.
        mapping: Local analysis codes → LOINC codes.
    """

    laboratory: Mapping[str, Any]
    biologist: Mapping[str, Any] | None = None
    biologist_specialty: str | None = None
    specialties: Mapping[str, str] = field(default_factory=dict)
    executing_laboratories: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    chapters: Mapping[str, ChapterRef] = field(default_factory=dict)
    default_chapter: ChapterRef | None = None
    ipp_root: str | None = None
    order_root: str | None = None
    local_code_system: str | None = None
    encounter_kind: str = "AMB"
    patient_classes: Mapping[str, str] = field(default_factory=dict)
    timezone: str = "Europe/Paris"
    mapping: LoincMapping | None = None

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ConfigurationError(f"unknown time zone {self.timezone!r}", code="config.oru") from e
        for name in ("ipp_root", "order_root", "local_code_system"):
            value = getattr(self, name)
            if value is not None and (reason := check_oid(value)):
                raise ConfigurationError(f"{name} {reason}", code="config.oru")
        for ref in (*self.chapters.values(), *([self.default_chapter] if self.default_chapter else [])):
            if reason := check_loinc(ref.code):
                raise ConfigurationError(f"chapter code {ref.code!r} {reason}", code="config.oru")

    @classmethod
    def load(cls, path: str | Path) -> OruDefaults:
        """Read a ``crbio-oru.toml`` file; ``loinc_mapping`` is a CSV path relative to it.

        Raises:
            ConfigurationError: the file cannot be read, is not TOML, or holds an unknown or
                malformed setting.
        """
        file = Path(path)
        try:
            data = tomllib.loads(file.read_bytes().decode("utf-8-sig"))
        except OSError as e:
            raise ConfigurationError(f"{file.name}: cannot be read ({e.strerror})", code="config.oru") from e
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigurationError(f"{file.name}: not a UTF-8 TOML file ({e})", code="config.oru") from e
        except RecursionError:  # tomllib recurses once per nested array or inline table
            raise ConfigurationError(
                f"{file.name}: not a UTF-8 TOML file (nested too deeply)", code="config.oru"
            ) from None
        unknown = sorted(set(data) - _CONFIG_KEYS)
        if unknown:
            raise ConfigurationError(
                f"{file.name}: unknown setting(s) {', '.join(unknown)}", code="config.oru"
            )

        def fail(message: str) -> ConfigurationError:
            return ConfigurationError(f"{file.name}: {message}", code="config.oru")

        def table(key: str, values: type | None = None) -> dict[str, Any] | None:
            value = data.get(key)
            if value is not None and not isinstance(value, dict):
                raise fail(f"[{key}] must be a table")
            if (
                value is not None
                and values is not None
                and not all(isinstance(v, values) for v in value.values())
            ):
                raise fail(f"the values of [{key}] must be {'strings' if values is str else 'tables'}")
            return value

        def text(key: str) -> str | None:
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise fail(f"{key} must be a string")
            return value

        def chapter(value: Any, key: str) -> ChapterRef:
            if (
                not isinstance(value, dict)
                or set(value) != {"code", "title"}
                or not all(isinstance(v, str) and v.strip() for v in value.values())
            ):
                raise fail(f'{key} must be {{ code = "<LOINC>", title = "<title>" }}')
            return ChapterRef(value["code"], value["title"])

        laboratory = table("laboratory")
        if laboratory is None:
            raise fail("[laboratory] is required")
        mapping_file = text("loinc_mapping")
        default = data.get("default_chapter")
        return cls(
            laboratory=laboratory,
            biologist=table("biologist"),
            biologist_specialty=text("biologist_specialty"),
            specialties=table("specialties", str) or {},
            executing_laboratories=table("executing_laboratories", dict) or {},
            chapters={k: chapter(v, f"chapters.{k}") for k, v in (table("chapters") or {}).items()},
            default_chapter=chapter(default, "default_chapter") if default is not None else None,
            ipp_root=text("ipp_root"),
            order_root=text("order_root"),
            local_code_system=text("local_code_system"),
            encounter_kind=text("encounter_kind") or "AMB",
            patient_classes=table("patient_classes", str) or {},
            timezone=text("timezone") or "Europe/Paris",
            mapping=LoincMapping.from_csv(file.parent / mapping_file) if mapping_file else None,
        )

    @staticmethod
    def config_file(path: str | Path | None = None) -> Path | None:
        """The configuration file of a message: ``crbio-oru.toml`` beside it, else ``$CRBIO_ORU_CONFIG``."""
        if path is not None:
            beside = Path(path).parent / CONFIG_FILE
            if beside.is_file():
                return beside
        named = os.environ.get(CONFIG_ENV)
        return Path(named) if named else None

    @classmethod
    def for_message(cls, path: str | Path | None = None) -> OruDefaults:
        """The configuration of a message (see :meth:`config_file`), read from its file.

        Raises:
            ConfigurationError: there is none, or the file found is invalid.
        """
        found = cls.config_file(path)
        if found is not None:
            return cls.load(found)
        raise ConfigurationError(
            "an ORU^R01 does not carry the laboratory's identity (name, address, telephone, OID): "
            f"put a {CONFIG_FILE} beside the message or name one in ${CONFIG_ENV}",
            code="config.oru-missing",
        )


def load_oru(
    path: str | Path, *, mapping: LoincMapping | None = None, defaults: OruDefaults | None = None
) -> Report:
    """Read an ``ORU^R01`` file into a report; the defaults come from :meth:`OruDefaults.for_message`.

    Raises:
        InputError: the file cannot be read or is not an HL7 v2 message.
        InvalidReport: the message breaks a rule; ``problems`` names every segment and field.
        ConfigurationError: no configuration was given or found, or it is invalid.
    """
    file = Path(path)
    data = read_input(file, max_bytes=MAX_BYTES)
    settings = defaults if defaults is not None else OruDefaults.for_message(file)
    return read_oru(data, label=file.name, mapping=mapping, defaults=settings)


def read_oru(
    data: bytes | str,
    *,
    label: str,
    mapping: LoincMapping | None = None,
    defaults: OruDefaults | None = None,
) -> Report:
    """Read one ``ORU^R01`` message (bytes in its ``MSH-18`` character set, or text) into a report.

    ``label`` names the input in logs (a file name); ``mapping`` defaults to the configuration's;
    ``defaults`` to the file named by ``$CRBIO_ORU_CONFIG``.

    Raises:
        InputError: the input is empty or not an HL7 v2 message.
        InvalidReport: the message breaks a rule; ``problems`` names every segment and field.
        ConfigurationError: no configuration was given or found, or it is invalid.
    """
    settings = defaults if defaults is not None else OruDefaults.for_message(None)
    converted, origins = _convert(data, settings, mapping)
    try:
        report = report_from_mapping(converted)
    except InvalidReport as e:
        raise InvalidReport(_translate(e.problems, origins)) from None
    log.debug("%s: ORU^R01 read, %d results", label, sum(1 for _ in report.observations()))
    return report


def oru_to_mapping(
    data: bytes | str, *, defaults: OruDefaults, mapping: LoincMapping | None = None
) -> dict[str, Any]:
    """The report of an ``ORU^R01`` in crbio's JSON format, before the format's own rules are checked.

    Useful to see what crbio made of a message (``json.dumps(..., default=str)``).

    Raises:
        InputError: the input is empty or not an HL7 v2 message.
        InvalidReport: the message breaks an HL7-level rule (``problems`` names segment and field).
    """
    return _convert(data, defaults, mapping)[0]


# --- the message's text ------------------------------------------------------------------

# MSH-18 character sets (HL7 table 0211) crbio reads, with their Python codecs. Without MSH-18
# HL7 means ASCII; UTF-8 is read instead, which ASCII is a subset of.
_CHARSETS: Final[Mapping[str, str]] = {
    "": "utf-8",
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "8859/1": "latin-1",
    "8859/15": "iso8859-15",
}
_ENVELOPE: Final = ("FHS", "BHS", "BTS", "FTS")
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9 /._^-]{1,20}")


def _quoted(value: str) -> str:
    """A code quoted for a message when it looks like one; anything else is not repeated."""
    return repr(value) if _SAFE_TOKEN.fullmatch(value) else "(not shown)"


def _invalid(where: str, rule: str, message: str) -> InvalidReport:
    return InvalidReport([Problem(where, rule, message)])


def _declared_charset(lines: Sequence[bytes]) -> str:
    line = next(x for x in lines if x.startswith(b"MSH"))
    if len(line) < 8:
        raise InputError("not an HL7 v2 message: its MSH segment is truncated", code="input.not-hl7")
    separator = line[3:4]
    fields = line.split(separator)
    value = fields[17] if len(fields) > 17 else b""
    encoding = fields[1]
    for delimiter in (encoding[1:2], encoding[0:1]):  # repetition, then component
        if delimiter:
            value = value.split(delimiter, 1)[0]
    return value.decode("ascii", "replace").strip()


def _message_text(data: bytes | str) -> tuple[str, str]:
    r"""The message's segments joined by ``\r``, and the codec of its character set."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise InputError(f"input too large ({len(data)} bytes)", code="input.too-large")
        # MLLP framing (VT … FS CR) is kept by some drop-folder gateways; it is not message content.
        raw = data.replace(b"\x0b", b"").replace(b"\x1c", b"").removeprefix(codecs.BOM_UTF8)
        lines = [x.strip() for x in re.split(rb"\r\n|\r|\n", raw) if x.strip()]
        if not lines:
            raise InputError("input is empty", code="input.empty")
        if lines[0][:3] not in (b"MSH", b"FHS", b"BHS") or not any(x.startswith(b"MSH") for x in lines):
            raise InputError(
                "not an HL7 v2 message: it does not begin with an MSH segment", code="input.not-hl7"
            )
        name = _declared_charset(lines)
        codec = _CHARSETS.get(name.upper())
        if codec is None:
            raise _invalid(
                "MSH-18",
                "hl7.charset",
                f"character set {_quoted(name)} is not read: UNICODE UTF-8, 8859/1, 8859/15 or ASCII",
            )
        try:
            text = b"\r".join(lines).decode(codec)
        except UnicodeDecodeError as e:
            declared = name or "UTF-8 (MSH-18 is empty)"
            raise _invalid(
                "MSH-18",
                "hl7.charset",
                f"the message is not in its declared character set {declared} (byte {e.start}): "
                "declare the right one in MSH-18",
            ) from None
    else:
        text = data.replace("\x0b", "").replace("\x1c", "").removeprefix("\ufeff")
        codec = ""
    segments = [x.strip() for x in re.split(r"\r\n|\r|\n", text) if x.strip()]
    if not segments:
        raise InputError("input is empty", code="input.empty")
    if segments[0][:3] not in ("MSH", *_ENVELOPE) or not any(x.startswith("MSH") for x in segments):
        raise InputError("not an HL7 v2 message: it does not begin with an MSH segment", code="input.not-hl7")
    # A batch or file envelope around one message is accepted; the envelope carries nothing we use.
    segments = [x for x in segments if x[:3] not in _ENVELOPE]
    if not segments[0].startswith("MSH"):
        raise InputError("not an HL7 v2 message: a segment comes before MSH", code="input.not-hl7")
    headers = sum(1 for x in segments if x.startswith("MSH"))
    if headers > 1:
        raise _invalid(
            "MSH[2]",
            "hl7.one-message",
            f"the file holds {headers} messages: crbio reads one ORU^R01 per file (one report); "
            "split the file, one message per file",
        )
    if not codec:
        codec = _CHARSETS.get(_declared_charset([segments[0].encode("ascii", "replace")]).upper(), "utf-8")
    return "\r".join(segments), codec


# --- segments and fields -------------------------------------------------------------------

_Repetition = list[list[str]]  # components → subcomponents, as written (escapes kept)
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_ORU_SEGMENTS: Final = frozenset(
    {"MSH", "SFT", "PID", "PD1", "NTE", "NK1", "PV1", "PV2", "ORC", "OBR", "TQ1", "TQ2", "CTD", "OBX"}
    | {"FT1", "CTI", "SPM", "DSC", "PRT"}  # PRT: pre-adopted by the CI-SIS HL7 v2 volets
)
_ONCE: Final = frozenset({"MSH", "PID", "PV1"})


@dataclass(slots=True)
class _Segment:
    """One segment: its name, its reference (``OBX[3]``), its line, and its fields as written."""

    name: str
    ref: str
    line: int
    fields: list[list[_Repetition]]

    def loc(self, number: int) -> str:
        """The HL7 location of one of its fields: ``OBX[3]-5``."""
        return f"{self.ref}-{number}"


def _raw_field(value: Any) -> list[_Repetition]:
    """A python-hl7 field as repetitions → components → subcomponents of plain strings."""
    if isinstance(value, str):
        return [[[value]]]
    repetitions: list[_Repetition] = []
    for repetition in value:
        if isinstance(repetition, str):
            repetitions.append([[repetition]])
            continue
        repetitions.append([[c] if isinstance(c, str) else [str(s) for s in c] for c in repetition])
    return repetitions


def _segments(text: str) -> tuple[list[_Segment], str, str]:
    """The message's segments, its escape character and its separators (segment, field, rep, comp, sub)."""
    try:
        parsed = hl7.parse(text)
    except Exception as e:  # python-hl7 raises assorted errors on a broken header
        raise InputError(f"not an HL7 v2 message ({type(e).__name__})", code="input.not-hl7") from None
    counts: dict[str, int] = {}
    segments: list[_Segment] = []
    for line, segment in enumerate(parsed, start=1):
        name = str(segment[0]) if len(segment) else ""
        counts[name] = counts.get(name, 0) + 1
        ref = name if name in _ONCE and counts[name] == 1 else f"{name}[{counts[name]}]"
        if not _SEGMENT_ID.fullmatch(name):
            ref = f"segment {line}"
        fields = [_raw_field(segment[i]) for i in range(len(segment))]
        if name == "MSH":
            # MSH-1 and MSH-2 are the delimiters themselves, not content to split or unescape.
            fields[1:3] = [[[[str(segment[1])]]], [[[str(segment[2])]]]]
        segments.append(_Segment(name, ref, line, fields))
    return segments, str(parsed.esc), str(parsed.separators)


class _EscapeError(ValueError):
    pass


_INDENT = re.compile(r"\.(?:in|ti)[+-]?\d+")
_SKIP = re.compile(r"\.sk[+]?(\d+)")
_LINES = re.compile(r"\.sp[+]?(\d*)")


def _unescape(text: str, esc: str, separators: str, codec: str) -> str:
    r"""A value with its escape sequences replaced (HL7 v2.5 §2.7).

    python-hl7's own unescape is not used: it logs the whole field when a sequence is unknown
    (patient data in logs), and turns ``\Xhh..\`` into one character per byte whatever the
    message's character set.
    """
    if esc not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != esc:
            out.append(char)
            i += 1
            continue
        end = text.find(esc, i + 1)
        if end < 0:
            raise _EscapeError("an escape sequence is not closed")
        sequence = text[i + 1 : end]
        i = end + 1
        simple = {"F": separators[1], "R": separators[2], "S": separators[3], "T": separators[4], "E": esc}
        if sequence in simple:
            out.append(simple[sequence])
        elif sequence in ("H", "N", ".fi", ".nf") or _INDENT.fullmatch(sequence):
            pass  # highlighting, fill mode and indentation: the text itself is kept
        elif sequence in (".br", ".ce"):
            out.append("\n")
        elif match := _LINES.fullmatch(sequence):
            out.append("\n" * int(match.group(1) or 1))
        elif match := _SKIP.fullmatch(sequence):
            out.append(" " * int(match.group(1)))
        elif sequence[:1] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", sequence[1:]):
            try:
                out.append(bytes.fromhex(sequence[1:]).decode(codec))
            except UnicodeDecodeError:
                raise _EscapeError(
                    "a hexadecimal escape is not text in the message's character set"
                ) from None
        else:
            raise _EscapeError("holds an escape sequence crbio does not read (character set switch or local)")
    return "".join(out)


# --- conversion ---------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_RANGE_NUMBER = r"[+-]?\d+(?:[.,]\d+)?"
_RANGE = re.compile(rf"\s*(?P<low>{_RANGE_NUMBER})\s*(?:-|–|\bà\b)\s*(?P<high>{_RANGE_NUMBER})\s*")
_BOUND = re.compile(rf"\s*(?P<op><=|>=|<|>|≤|≥)\s*(?P<value>{_RANGE_NUMBER})\s*")
_TS = re.compile(r"(\d{8})(\d{4}(?:\d{2}(?:\.\d{1,4})?)?)?([+-]\d{4})?")
_VERSION = re.compile(r"2\.[5-9](?:\.\d+)?")
_FINESS_SHAPE = re.compile(r"(?:[0-9]{2}|2A|2B)[0-9]{7}")
_SPECIMEN_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOINC_SYSTEMS: Final = frozenset({"LN", "LOINC", LOINC_OID})
_SNOMED_SYSTEMS: Final = frozenset({"SCT", "SNOMED-CT", "SNOMEDCT", SNOMED_OID})
_TITLES: Final = frozenset({"DR", "PR", "PROF"})
_INS_NAMESPACES: Final = frozenset({"ASIP-SANTE-INS-NIR", "ASIP-SANTE-INS-NIA"})
_COUNTRIES: Final[Mapping[str, str]] = {"FRA": "France"}
_TELECOM_USES: Final[Mapping[str, str]] = {
    "PRN": "H",
    "ORN": "H",
    "WPN": "WP",
    "VHN": "HV",
    "EMR": "EC",
    "ASN": "AS",
    "BPN": "PG",
}


@dataclass(slots=True)
class _Result:
    """An OBX and the comments (NTE) that follow it."""

    segment: _Segment
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Order:
    """An ORDER_OBSERVATION group: [ORC] OBR [NTE…] {OBX [NTE…]} [SPM [OBX…]]."""

    obr: _Segment
    orc: _Segment | None
    notes: list[str] = field(default_factory=list)
    results: list[_Result] = field(default_factory=list)
    specimens: list[_Segment] = field(default_factory=list)


Origins = dict[str, tuple[str, tuple[int, int], str | None]]
"""JSON path → (HL7 location, sort key, what it is when the location holds several things)."""


def _convert(
    data: bytes | str, defaults: OruDefaults, mapping: LoincMapping | None
) -> tuple[dict[str, Any], Origins]:
    text, codec = _message_text(data)
    segments, esc, separators = _segments(text)
    if mapping is None:
        mapping = defaults.mapping if defaults.mapping is not None else LoincMapping()
    reader = _Reader(segments, esc, separators, codec, defaults, mapping)
    converted = reader.read()
    if reader.problems:
        # A field read twice (OBR-22 for the validation and for the biologist) is told once.
        ordered = sorted(reader.problems, key=lambda item: item[0])
        raise InvalidReport(dict.fromkeys(p for _, p in ordered))
    return converted, reader.origins


class _Reader:
    """Walks the segments of one ORU^R01 and writes its report in crbio's JSON format."""

    def __init__(
        self,
        segments: list[_Segment],
        esc: str,
        separators: str,
        codec: str,
        defaults: OruDefaults,
        mapping: LoincMapping,
    ) -> None:
        self.segments = segments
        self.esc = esc
        self.separators = separators
        self.codec = codec
        self.defaults = defaults
        self.mapping = mapping
        self.zone = ZoneInfo(defaults.timezone)
        self.problems: list[tuple[tuple[int, int], Problem]] = []
        self.origins: Origins = {"$": ("message", (0, 0), None)}
        self.unmapped: list[tuple[str, _Segment]] = []
        self.specimen_keys: dict[str, tuple[Any, ...]] = {}
        self.specimens: list[dict[str, Any]] = []
        self.executing: dict[str, dict[str, Any]] = {}
        self.performed: dict[str, datetime] = {}
        self.laboratory_finess: str | None = None

    # problems and origins

    def problem(self, segment: _Segment | None, number: int, rule: str, message: str) -> None:
        if segment is None:
            where, key = ("message", (0, 0))
        else:
            where, key = (segment.loc(number) if number else segment.ref), (segment.line, number)
        self.problems.append((key, Problem(where, rule, message)))

    def origin(self, path: str, segment: _Segment | None, number: int = 0, what: str | None = None) -> None:
        if segment is None:
            self.origins[path] = ("configuration", (0, 0), what)
        else:
            where = segment.loc(number) if number else segment.ref
            self.origins[path] = (where, (segment.line, number), what)

    # fields

    def reps(self, segment: _Segment, number: int) -> list[_Repetition]:
        """The repetitions of a field that hold something."""
        if number >= len(segment.fields):
            return []
        return [r for r in segment.fields[number] if any(s and s != '""' for c in r for s in c)]

    def part(
        self, segment: _Segment, number: int, rep: _Repetition | None, comp: int = 1, sub: int = 1
    ) -> str:
        """One component (or subcomponent) of a repetition, unescaped and stripped; "" when absent."""
        if rep is None:
            found = self.reps(segment, number)
            if not found:
                return ""
            rep = found[0]
        try:
            raw = rep[comp - 1][sub - 1]
        except IndexError:
            return ""
        if raw == '""':  # the HL7 "null": the value is known to be absent
            return ""
        try:
            return _unescape(raw, self.esc, self.separators, self.codec).strip()
        except _EscapeError as e:
            self.problem(segment, number, "hl7.escape", str(e))
            return ""

    def text(self, segment: _Segment, number: int, comp: int = 1, sub: int = 1) -> str:
        return self.part(segment, number, None, comp, sub)

    def time(self, segment: _Segment, number: int, comp: int = 1, sub: int = 1) -> datetime | None:
        """A date-time field (TS), with the configured time zone when it carries no UTC offset."""
        value = self.text(segment, number, comp, sub)
        if not value:
            return None
        match = _TS.fullmatch(value)
        if match is None or match.group(2) is None:
            self.problem(
                segment,
                number,
                "hl7.datetime",
                "must be a date-time YYYYMMDDHHMM[SS][+ZZZZ] (minutes at least)",
            )
            return None
        try:
            parsed = parse_hl7_time(value)
        except ValueError:
            self.problem(segment, number, "hl7.datetime", "is not a valid date-time")
            return None
        assert isinstance(parsed, datetime)
        return parsed if match.group(3) else parsed.replace(tzinfo=self.zone)

    def date(self, segment: _Segment, number: int) -> date | None:
        value = self.text(segment, number)
        if not value:
            return None
        match = _TS.fullmatch(value)
        try:
            if match is None:
                raise ValueError
            day = parse_hl7_time(match.group(1))
        except ValueError:
            self.problem(segment, number, "hl7.date", "must be a full date YYYYMMDD")
            return None
        assert isinstance(day, date)
        return day

    # the message

    def read(self) -> dict[str, Any]:
        msh = self.segments[0]
        self.header(msh)
        patient, visit, orders, notes = self.structure()
        out: dict[str, Any] = {"format": FORMAT, "laboratory": self.laboratory(msh)}
        if patient is not None:
            out["patient"] = self.patient(patient)
        out["encounter"] = self.encounter(visit)
        if not orders:
            return out
        chapters: dict[ChapterRef, list[tuple[_Order, dict[str, Any]]]] = {}
        for order in orders:
            chapter = self.chapter(order)
            battery = self.battery(order)
            if chapter is not None and battery is not None:
                chapters.setdefault(chapter, []).append((order, battery))
        self.report_unmapped()
        out["chapters"] = []
        for c, (chapter, batteries) in enumerate(chapters.items()):
            path = f"$.chapters[{c}]"
            first = batteries[0][0].obr
            self.origin(path, first, 24, "chapter")
            self.origin(f"{path}.code", first, 24, "chapter")
            out["chapters"].append({"code": chapter.code, "title": chapter.title, "batteries": []})
            for b, (order, battery) in enumerate(batteries):
                self.move_origins(order.obr.ref, f"{path}.batteries[{b}]")
                out["chapters"][c]["batteries"].append(battery)
        out["specimens"] = self.specimens
        if self.executing:
            out["executing_laboratories"] = list(self.executing.values())
        validated, validating = self.validation(orders, msh)
        if validated is not None:
            out["validated_at"] = validated.isoformat()
            self.origin("$.validated_at", validating, 22 if validating is not msh else 7)
        biologist = self.biologist(orders)
        if biologist is not None:
            out["biologist"] = biologist
        prescriber = self.prescriber(orders)
        if prescriber is not None:
            out["prescriber"] = prescriber
        recipients = self.copy_recipients(orders)
        if recipients:
            out["copy_recipients"] = recipients
        order_id = self.order_id(orders[0])
        if order_id is not None:
            out["order_id"] = order_id
        if notes:
            out["comments"] = notes
            self.origin("$.comments", patient, 0, "comments")
        return out

    def header(self, msh: _Segment) -> None:
        kind, event = self.text(msh, 9, 1), self.text(msh, 9, 2)
        if (kind, event) != ("ORU", "R01"):
            self.problem(
                msh,
                9,
                "hl7.message-type",
                f"the message is {_quoted(kind + '^' + event)}: crbio reads ORU^R01 result messages",
            )
        version = self.text(msh, 12)
        if not _VERSION.fullmatch(version):
            shown = _quoted(version) if version else "missing"
            self.problem(
                msh, 12, "hl7.version", f"HL7 version {shown}: crbio reads ORU^R01 of v2.5 and later 2.x"
            )

    def structure(self) -> tuple[_Segment | None, _Segment | None, list[_Order], list[str]]:
        """The PID, the PV1, the orders and the patient's comments, in ORU_R01 order."""
        patient: _Segment | None = None
        visit: _Segment | None = None
        orders: list[_Order] = []
        notes: list[str] = []
        pending: _Segment | None = None  # an ORC waiting for its OBR
        owner: list[str] | None = None  # where an NTE goes: the report, an order or a result
        after_specimen = False
        for segment in self.segments[1:]:
            name = segment.name
            if not _SEGMENT_ID.fullmatch(name):
                self.problem(
                    segment, 0, "hl7.segment", "is not an HL7 segment (a line break inside a field?)"
                )
                continue
            if name == "PID":
                if patient is not None:
                    self.problem(
                        segment, 0, "hl7.one-patient", "a second patient: crbio reads one patient per message"
                    )
                elif orders or pending:
                    self.problem(segment, 0, "hl7.order", "must come before the orders (ORC, OBR)")
                else:
                    patient = segment
                owner = notes
            elif name == "PV1":
                visit = segment
            elif name == "ORC":
                pending = segment
                owner = None
            elif name == "OBR":
                orders.append(_Order(segment, pending))
                pending = None
                after_specimen = False
                owner = orders[-1].notes
            elif name == "OBX":
                if not orders:
                    self.problem(segment, 0, "hl7.order", "comes before any OBR")
                    continue
                # OBX after SPM describe the specimen; they are results of the battery all the same.
                result = _Result(segment)
                orders[-1].results.append(result)
                owner = result.notes
            elif name == "SPM":
                if not orders:
                    self.problem(segment, 0, "hl7.order", "comes before any OBR")
                    continue
                orders[-1].specimens.append(segment)
                after_specimen = True
                owner = None
            elif name == "NTE":
                if owner is None:
                    where = "SPM" if after_specimen else "ORC"
                    self.problem(
                        segment, 0, "hl7.order", f"follows {where}: a comment must follow PID, OBR or OBX"
                    )
                    continue
                comment = "\n".join(self.part(segment, 3, r) for r in self.reps(segment, 3)).strip()
                if comment:
                    owner.append(comment)
            elif name in _ORU_SEGMENTS or name.startswith("Z"):
                continue  # SFT, PD1, NK1, PV2, TQ1, CTD, PRT…: nothing a CR-Bio takes from them
            else:
                self.problem(segment, 0, "hl7.segment", f"{name} is not a segment of an ORU^R01 message")
        if patient is None:
            missing = Problem("PID", "hl7.required", "is missing: the patient of the results")
            self.problems.append(((1, 0), missing))
        if not orders:
            missing = Problem("OBR", "hl7.required", "is missing: the message has no results")
            self.problems.append(((len(self.segments) + 1, 0), missing))
        for order in orders:
            if not order.results:
                self.problem(order.obr, 0, "hl7.required", "has no OBX: a battery needs results")
        return patient, visit, orders, notes

    # laboratory and people

    def laboratory(self, msh: _Segment) -> dict[str, Any]:
        out = dict(self.defaults.laboratory)
        self.origin("$.laboratory", None, 0, "laboratory (configuration)")
        namespace, universal, kind = (self.text(msh, 4, c) for c in (1, 2, 3))
        finess = namespace[1:] if len(namespace) == 10 and namespace[0] == "1" else namespace
        if _FINESS_SHAPE.fullmatch(finess):
            configured = out.get("finess")
            if configured is not None and configured != finess:
                self.problem(
                    msh, 4, "finess.conflict", "differs from the FINESS of the configured laboratory"
                )
            out["finess"] = finess
            self.origin("$.laboratory.finess", msh, 4)
        elif "finess" not in out:
            self.problem(
                msh, 4, "hl7.required", "the laboratory's FINESS is needed (MSH-4.1, or its configuration)"
            )
        if kind == "ISO" and universal:
            if out.get("oid", universal) != universal:
                self.problem(msh, 4, "oid.conflict", "differs from the OID root of the configured laboratory")
            out["oid"] = universal
            self.origin("$.laboratory.oid", msh, 4)
        self.laboratory_finess = out.get("finess")
        return out

    def rpps(self, identifier: str, namespace: str, oid: str, id_type: str) -> str | None:
        """The RPPS of an XCN/CNN identifier: 8+RPPS under the national PS OID, or a bare RPPS."""
        national = oid == NATIONAL_PS_OID or namespace == "ASIP-SANTE-PS" or id_type == "IDNPS"
        if national and len(identifier) == 12 and identifier[0] == "8":
            return identifier[1:]
        if (national or "RPPS" in (namespace, id_type)) and len(identifier) == 11:
            return identifier
        return None

    def name(self, family: str, given: str, further: str, prefix: str) -> dict[str, Any]:
        name: dict[str, Any] = {"family": family}
        names = [n for n in (given, further) if n]
        if names:
            name["given"] = names
        if prefix.upper().rstrip(".") in _TITLES:
            name["suffix"] = prefix.upper().rstrip(".")  # the CI-SIS writes the title as suffix
        elif prefix:
            name["prefix"] = prefix
        return name

    def xcn(
        self, segment: _Segment, number: int, rep: _Repetition, path: str, *, biologist: bool = False
    ) -> dict[str, Any] | None:
        """A professional from an XCN (ORC-12, OBR-16, OBR-28, OBX-16, OBX-25)."""
        p = self.part
        identifier = p(segment, number, rep, 1)
        rpps = self.rpps(
            identifier,
            p(segment, number, rep, 9, 1),
            p(segment, number, rep, 9, 2),
            p(segment, number, rep, 13),
        )
        if rpps is None:
            self.problem(
                segment,
                number,
                "hl7.rpps",
                "the professional is not identified by RPPS: 8+RPPS with authority 1.2.250.1.71.4.2.1 "
                "(component 9), or an RPPS with identifier type RPPS (component 13)",
            )
            return None
        self.origin(path, segment, number)
        person = {
            "rpps": rpps,
            "name": self.name(
                p(segment, number, rep, 2, 1),
                p(segment, number, rep, 3),
                p(segment, number, rep, 4),
                p(segment, number, rep, 6),
            ),
        }
        self.specialty(person, path, segment, number, biologist=biologist, required=False)
        return person

    def cnn(self, segment: _Segment, number: int, path: str, *, required: bool) -> dict[str, Any] | None:
        """A professional from an NDL/CNN (OBR-32 principal result interpreter)."""
        sub = [self.text(segment, number, 1, s) for s in range(1, 12)]
        rpps = self.rpps(sub[0], sub[8], sub[9], "")
        if rpps is None:
            self.problem(
                segment,
                number,
                "hl7.rpps",
                "the biologist is not identified by RPPS: 8+RPPS with authority 1.2.250.1.71.4.2.1 "
                "(subcomponents 9 and 10)",
            )
            return None
        self.origin(path, segment, number)
        person = {"rpps": rpps, "name": self.name(sub[1], sub[2], sub[3], sub[5])}
        self.specialty(person, path, segment, number, biologist=True, required=required)
        return person

    def specialty(
        self,
        person: dict[str, Any],
        path: str,
        segment: _Segment,
        number: int,
        *,
        biologist: bool,
        required: bool,
    ) -> None:
        """Give a professional the profession/specialty configured for them (an ORU carries none)."""
        code = self.defaults.specialties.get(person["rpps"])
        if code is None and biologist:
            code = self.defaults.biologist_specialty
        if code is not None:
            person["specialty"] = code
            self.origin(f"{path}.specialty", None)
        elif required:
            self.problem(
                segment,
                number,
                "specialty",
                "the CR-Bio volet needs the biologist's profession/specialty (TRE_R38), which an ORU "
                "does not carry: set biologist_specialty or [specialties] in the configuration",
            )

    def xad(self, segment: _Segment, number: int, rep: _Repetition) -> dict[str, Any] | None:
        p = self.part
        lines = [x for x in (p(segment, number, rep, 1, 1), p(segment, number, rep, 2)) if x]
        address: dict[str, Any] = {}
        if lines:
            address["lines"] = lines
        for key, comp in (("city", 3), ("postal_code", 5)):
            if value := p(segment, number, rep, comp):
                address[key] = value
        if country := p(segment, number, rep, 6):
            address["country"] = _COUNTRIES.get(country, country)
        use = p(segment, number, rep, 7)
        if use in ("H", "O", "B"):
            address["use"] = "H" if use == "H" else "WP"
        return address or None

    def telecoms(self, segment: _Segment, number: int) -> tuple[list[dict[str, Any]], str | None]:
        """The XTN of a field as telecom URIs, and an MSSanté address when one is among them."""
        telecoms: list[dict[str, Any]] = []
        mssante = None
        for rep in self.reps(segment, number):
            use, equipment = self.part(segment, number, rep, 2), self.part(segment, number, rep, 3)
            email = self.part(segment, number, rep, 4)
            if equipment in ("Internet", "X.400") or use == "NET":
                if equipment == "X.400" or email.lower().endswith(".mssante.fr"):
                    mssante = mssante or email
                elif email:
                    telecoms.append({"value": f"mailto:{email}"})
                continue
            number_text = self.part(segment, number, rep, 12) or self.part(segment, number, rep, 1)
            if not number_text:
                number_text = self.part(segment, number, rep, 6) + self.part(segment, number, rep, 7)
            if not number_text:
                continue
            telecom: dict[str, Any] = {"value": ("fax:" if equipment == "FX" else "tel:") + number_text}
            kind = "MC" if equipment == "CP" else _TELECOM_USES.get(use)
            if kind:
                telecom["use"] = kind
            telecoms.append(telecom)
        return telecoms, mssante

    # patient

    def patient(self, pid: _Segment) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self.origin("$.patient", pid, 0)
        ins, ipp = self.patient_ids(pid)
        codes = {self.part(pid, 32, r) for r in self.reps(pid, 32)}
        # PAM.FR: VALI says the identity was checked against an ID document; with an INS
        # retrieved from INSi it is qualified. FICT and DOUT make any identity provisional.
        doubtful = bool(codes & {"FICT", "DOUT"})
        if "VALI" in codes and not doubtful:
            status = "QUAL" if ins else "VALI"
        else:
            status = "RECUP" if ins and not doubtful else "PROV"
        out["identity_status"] = status
        self.origin("$.patient.identity_status", pid, 32)
        if ins is not None and status == "QUAL":
            # The INS is written only for a qualified identity; otherwise the IPP alone identifies.
            out["ins"] = ins
            self.origin("$.patient.ins", pid, 3, "INS")
        if ipp is not None:
            out["ipp"] = ipp
            self.origin("$.patient.ipp", pid, 3, "IPP")
        names = self.reps(pid, 5)
        birth = next((r for r in names if self.part(pid, 5, r, 7) == "L"), None)
        birth = birth or next((r for r in names if not self.part(pid, 5, r, 7)), None)
        if birth is None:
            self.problem(pid, 5, "hl7.required", "the birth name (name type L) is missing")
        else:
            first = self.part(pid, 5, birth, 2)
            listed = self.part(pid, 5, birth, 3)
            # PAM.FR puts the list of birth given names in XPN-3; some systems put only the others.
            given = listed if listed.split(" ")[0] == first else " ".join(x for x in (first, listed) if x)
            out["birth_family_name"] = self.part(pid, 5, birth, 1, 1)
            out["first_birth_given_name"] = first
            out["birth_given_names"] = given
            for key, what in (
                ("birth_family_name", "birth family name"),
                ("first_birth_given_name", "first birth given name"),
                ("birth_given_names", "birth given names"),
            ):
                self.origin(f"$.patient.{key}", pid, 5, what)
        used = next((r for r in names if self.part(pid, 5, r, 7) == "D"), None)
        if used is not None:
            for key, comp in (("used_family_name", 1), ("used_given_name", 2)):
                if value := self.part(pid, 5, used, comp, 1):
                    out[key] = value
                    self.origin(f"$.patient.{key}", pid, 5, key.replace("_", " "))
        sex = self.text(pid, 8)
        out["sex"] = sex if sex in ("M", "F") else "U"
        self.origin("$.patient.sex", pid, 8)
        born = self.date(pid, 7)
        if born is not None:
            out["birth_date"] = born.isoformat()
            self.origin("$.patient.birth_date", pid, 7)
        for rep in self.reps(pid, 11):
            if self.part(pid, 11, rep, 7) == "BDL":
                if code := self.part(pid, 11, rep, 9):
                    out["birthplace_code"] = code
                if city := self.part(pid, 11, rep, 3):
                    out["birthplace_name"] = city
            elif "address" not in out and (address := self.xad(pid, 11, rep)) is not None:
                out["address"] = address
                self.origin("$.patient.address", pid, 11, "address")
        self.origin("$.patient.birthplace_code", pid, 11, "birthplace (BDL address, component 9)")
        if "birthplace_name" not in out and (place := self.text(pid, 23)):
            out["birthplace_name"] = place
        telecoms = []
        for number in (13, 14):
            found, mssante = self.telecoms(pid, number)
            # A patient's MSSanté mailbox (<INS>@patient.mssante.fr) is one of their telecoms.
            telecoms += found + ([{"value": f"mailto:{mssante}"}] if mssante else [])
        if telecoms:
            out["telecom"] = telecoms
            self.origin("$.patient.telecom", pid, 13, "telecom")
        return out

    def patient_ids(self, pid: _Segment) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The INS (matricule and authority OID) and the IPP of PID-3."""
        ins: dict[str, Any] | None = None
        ipp: dict[str, Any] | None = None
        for rep in self.reps(pid, 3):
            value = self.part(pid, 3, rep, 1)
            namespace, oid, kind = (self.part(pid, 3, rep, 4, s) for s in (1, 2, 3))
            id_type = self.part(pid, 3, rep, 5)
            if id_type == "INS" or oid in INS_OIDS or namespace in _INS_NAMESPACES:
                if oid not in INS_OIDS:
                    self.problem(
                        pid,
                        3,
                        "ins.authority",
                        "the INS needs the OID of its authority (1.2.250.1.213.1.4.8 INS-NIR, .9 INS-NIA, "
                        ".10 test, .11 demonstration) in CX-4.2",
                    )
                elif ins is not None and ins["oid"] != oid:
                    self.problem(pid, 3, "ins.several", "holds two INS of different authorities")
                else:
                    ins = {"matricule": value, "oid": oid}
            elif id_type in ("PI", "") and ipp is None:
                root = oid if kind == "ISO" and oid else self.defaults.ipp_root
                if root is None:
                    self.problem(
                        pid,
                        3,
                        "ipp.authority",
                        "the patient identifier (PI) has no ISO assigning authority (CX-4.2, CX-4.3 ISO) "
                        "and no ipp_root is configured",
                    )
                    continue
                ipp = {"root": root, "extension": value}
        if ipp is None and not any(p.field == pid.loc(3) for _, p in self.problems):
            self.problem(pid, 3, "hl7.required", "the patient's local identifier (IPP, type PI) is missing")
        return ins, ipp

    def encounter(self, pv1: _Segment | None) -> dict[str, Any]:
        kind = self.text(pv1, 2) if pv1 is not None else ""
        classes = {**_PATIENT_CLASSES, **self.defaults.patient_classes}
        out: dict[str, Any] = {"kind": self.defaults.encounter_kind}
        self.origin("$.encounter", pv1, 0, "encounter")
        if kind:
            if kind not in classes:
                self.problem(
                    pv1,
                    2,
                    "hl7.patient-class",
                    f"patient class {_quoted(kind)} has no CR-Bio encounter kind (add it to patient_classes)",
                )
            out["kind"] = classes.get(kind, self.defaults.encounter_kind)
            self.origin("$.encounter.kind", pv1, 2)
        if pv1 is None:
            return out
        if (start := self.time(pv1, 44)) is not None:
            out["start"] = start.isoformat()
            self.origin("$.encounter.start", pv1, 44)
        visit, oid, universal_type = self.text(pv1, 19), self.text(pv1, 19, 4, 2), self.text(pv1, 19, 4, 3)
        if visit and oid and universal_type == "ISO":
            out["id"] = {"root": oid, "extension": visit}
            self.origin("$.encounter.id", pv1, 19)
        return out

    # orders and results

    def chapter(self, order: _Order) -> ChapterRef | None:
        obr = order.obr
        chapters = self.defaults.chapters
        for key in (self.text(obr, 4, 1), self.text(obr, 4, 4), self.text(obr, 24)):
            if key and key in chapters:
                return chapters[key]
        section = self.text(obr, 24)
        if section in SECTION_CHAPTERS:
            return SECTION_CHAPTERS[section]
        if self.defaults.default_chapter is not None:
            return self.defaults.default_chapter
        self.problem(
            obr,
            24,
            "chapter",
            "no chapter for this battery: give the diagnostic section (HL7 table 0074: CH, HM, SR, MB…) "
            "or configure chapters / default_chapter",
        )
        return None

    def coded_name(
        self, segment: _Segment, number: int
    ) -> tuple[str, str | None, str | None, tuple[str, str] | None]:
        """(label, LOINC code, LOINC display, local (code, text)) of a CWE naming an analysis."""
        c = [self.text(segment, number, i) for i in range(1, 7)]
        loinc = display = None
        local: tuple[str, str] | None = None
        for code, text, system in ((c[0], c[1], c[2]), (c[3], c[4], c[5])):
            if not code:
                continue
            if system.upper() in _LOINC_SYSTEMS:
                if loinc is None:
                    loinc, display = code, text or None
            elif local is None:
                local = (code, text)
        return c[1] or c[4], loinc, display, local

    def battery(self, order: _Order) -> dict[str, Any] | None:
        obr = order.obr
        base = obr.ref  # the paths are moved under their chapter once it is known
        status = self.text(obr, 25)
        if status and status not in ("F", "C"):
            self.problem(
                obr,
                25,
                "hl7.result-status",
                f"order status {_quoted(status)} is not final: "
                "crbio reports final (F) or corrected (C) results only",
            )
        label, loinc, display, local = self.coded_name(obr, 4)
        if not label:
            self.problem(obr, 4, "hl7.required", "the battery needs its name (component 2)")
        out: dict[str, Any] = {"label": label}
        self.origin(base, obr, 0)
        self.origin(f"{base}.label", obr, 4)
        if loinc is None and local is not None and (entry := self.mapping.get(local[0])) is not None:
            loinc = entry.loinc
        if loinc is not None:
            out["loinc"] = loinc
            self.origin(f"{base}.loinc", obr, 4)
            if display and display != label:
                out["loinc_display"] = display
        out["specimens"] = self.order_specimens(order)
        self.origin(f"{base}.specimens", obr, 0, "specimens")
        if order.notes:
            out["comment"] = "\n".join(order.notes)
            self.origin(f"{base}.comment", obr, 0, "comment (NTE)")
        observations = []
        laboratories: set[str | None] = set()
        for o, result in enumerate(order.results):
            observation, lab = self.observation(result, f"{base}.observations[{o}]")
            if observation is not None:
                observations.append(observation)
                laboratories.add(lab)
        out["observations"] = observations
        if len(laboratories) > 1:
            self.problem(
                obr,
                0,
                "performer",
                "its results come from different laboratories (OBX-23): send each laboratory's results "
                "in an OBR of its own",
            )
        elif laboratories and (lab := laboratories.pop()) is not None:
            out["performed_by"] = lab
        return out

    def observation(self, result: _Result, path: str) -> tuple[dict[str, Any] | None, str | None]:
        obx = result.segment
        self.origin(path, obx, 0)
        status = self.text(obx, 11)
        if status not in ("F", "C"):
            shown = f"status {_quoted(status)}" if status else "an empty status"
            self.problem(
                obx,
                11,
                "hl7.result-status",
                f"{shown} is not final: crbio builds a report from final (F) or corrected (C) results only",
            )
        label, loinc, display, local = self.coded_name(obx, 3)
        if not label and not loinc and not local:
            self.problem(obx, 3, "hl7.required", "the observation identifier is missing")
            return None, None
        if loinc is None and local is None:
            # A name without a code (components 1 and 4 empty) cannot be coded in LOINC.
            self.problem(obx, 3, "hl7.required", "the analysis needs its code (component 1 or 4)")
            return None, None
        if not label:
            self.problem(obx, 3, "hl7.required", "the analysis needs its name (component 2)")
        entry = self.mapping.get(local[0]) if local is not None else None
        if entry is not None:
            if loinc is None:
                loinc = entry.loinc
            elif loinc != entry.loinc:
                self.problem(
                    obx, 3, "loinc.conflict", "its LOINC code differs from the mapping's for its local code"
                )
        if loinc is None:
            assert local is not None
            self.unmapped.append((local[0], obx))
        out: dict[str, Any] = {"label": label}
        self.origin(f"{path}.label", obx, 3)
        if loinc is not None:
            out["loinc"] = loinc
            self.origin(f"{path}.loinc", obx, 3)
            if display and display != label:
                out["loinc_display"] = display
        if local is not None and self.defaults.local_code_system:
            out["local_code"] = {
                "code": local[0],
                "system": self.defaults.local_code_system,
                "display": local[1] or label,
            }
            self.origin(f"{path}.local_code", obx, 3)
        value = self.value(obx, entry)
        if value is not None:
            out["value"] = value
        self.origin(f"{path}.value", obx, 5)
        self.origin(f"{path}.value.unit", obx, 6)
        for bound in ("low", "high"):
            self.origin(f"{path}.value.{bound}.unit", obx, 6)
        if (reference := self.reference_range(obx)) is not None:
            out["reference_range"] = reference
            self.origin(f"{path}.reference_range", obx, 7)
            self.origin(f"{path}.reference_range.unit", obx, 6)
        flags = [self.part(obx, 8, r) for r in self.reps(obx, 8)]
        if len(flags) > 1:
            self.problem(
                obx, 8, "hl7.repetition", "holds several flags: a CR-Bio result has one interpretation"
            )
        elif flags:
            out["interpretation"] = flags[0]
            self.origin(f"{path}.interpretation", obx, 8)
        when = self.time(obx, 14)
        if when is not None:
            out["time"] = when.isoformat()
            self.origin(f"{path}.time", obx, 14)
        method, method_code, method_system = (
            self.text(obx, 17, 2),
            self.text(obx, 17, 1),
            self.text(obx, 17, 3),
        )
        if method:
            out["method"] = {"display": method}
            if method_code and check_oid(method_system) is None:
                out["method"].update(code=method_code, system=method_system)
            self.origin(f"{path}.method", obx, 17)
        comments = list(result.notes)
        if status == "C":
            # The model has no per-result "corrected" status (a CDA entry is "completed"); the
            # correction is said where the reader of the report sees it.
            comments.insert(0, "Résultat corrigé.")
        if comments:
            out["comment"] = "\n".join(comments)
            self.origin(f"{path}.comment", obx, 0, "comment (NTE)")
        return out, self.performer(obx)

    def unit(self, obx: _Segment, entry: LoincEntry | None) -> str | None:
        """The UCUM unit of a result: OBX-6, or the mapping's unit when OBX-6 is not UCUM."""
        unit, system = self.text(obx, 6, 1), self.text(obx, 6, 3)
        if system != "UCUM" and self.text(obx, 6, 6) == "UCUM":
            unit = self.text(obx, 6, 4)
        mapped = entry.unit if entry is not None else None
        if not unit:
            return mapped
        if check_ucum(unit) is None:
            # UCUM spells the litre l or L: "nmol/l" and "nmol/L" are one unit.
            if mapped is not None and mapped.replace("l", "L") != unit.replace("l", "L"):
                self.problem(
                    obx, 6, "unit.conflict", "differs from the unit the LOINC mapping gives its local code"
                )
            return unit
        # The laboratory's own spelling (µmol/l): the mapping says which UCUM unit it is.
        return mapped or unit

    def number(self, obx: _Segment, value: str, what: str) -> str | None:
        if not _NUMBER.fullmatch(value):
            self.problem(obx, 5, "hl7.number", f"{what} is not a number")
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            self.problem(obx, 5, "hl7.number", f"{what} is not a number")
            return None
        return format(number, "f")

    def value(self, obx: _Segment, entry: LoincEntry | None) -> dict[str, Any] | None:
        kind = self.text(obx, 2)
        reps = self.reps(obx, 5)
        if not reps:
            return None
        if kind in ("NM", "SN", "CWE", "CE") and len(reps) > 1:
            self.problem(obx, 5, "hl7.repetition", "holds several values: this value type has one")
            return None
        if kind == "NM":
            number = self.number(obx, self.text(obx, 5), "the NM value")
            if number is None:
                return None
            out: dict[str, Any] = {"type": "quantity", "value": number}
            if (unit := self.unit(obx, entry)) is not None:
                out["unit"] = unit
            return out
        if kind == "SN":
            return self.structured_numeric(obx, entry)
        if kind in ("CWE", "CE"):
            return self.coded_value(obx)
        if kind in ("ST", "TX", "FT"):
            text = "\n".join(self.part(obx, 5, r) for r in reps).strip()
            return {"type": "text", "text": text} if text else None
        if not kind:
            self.problem(obx, 2, "hl7.required", "the value type is missing (OBX-5 holds a value)")
        else:
            self.problem(
                obx,
                2,
                "hl7.value-type",
                f"value type {_quoted(kind)} is not read: NM, SN, ST, TX, FT, CWE or CE",
            )
        return None

    def structured_numeric(self, obx: _Segment, entry: LoincEntry | None) -> dict[str, Any] | None:
        comparator, first, separator, second = (self.text(obx, 5, c) for c in (1, 2, 3, 4))
        if comparator not in ("", "=", "<", ">", "<=", ">="):
            self.problem(obx, 5, "hl7.sn", "the SN comparator must be one of = < > <= >=")
            return None
        one = self.number(obx, first, "the SN number") if first else None
        two = self.number(obx, second, "the second SN number") if second else None
        if one is None or (second and two is None):
            if not first:
                self.problem(obx, 5, "hl7.sn", "the SN value has no number (component 2)")
            return None
        unit = self.unit(obx, entry)
        if not separator and not second:
            out: dict[str, Any] = {"type": "quantity", "value": one}
            if unit is not None:
                out["unit"] = unit
            if comparator not in ("", "="):
                out["comparator"] = comparator
            return out
        if separator in (":", "/") and two is not None:
            if comparator in ("", "="):
                return {"type": "ratio", "numerator": one, "denominator": two}
            # The model's ratio has no comparator: the titre bound is kept as written.
            return {"type": "text", "text": f"{comparator} {one}/{two}"}
        if separator == "-" and two is not None and comparator in ("", "="):
            bounds = [{"value": v, **({"unit": unit} if unit else {})} for v in (one, two)]
            return {"type": "interval", "low": bounds[0], "high": bounds[1]}
        if separator == "+" and two is None and comparator in ("", "="):
            return {"type": "text", "text": f"{one}+"}
        self.problem(
            obx, 5, "hl7.sn", "this SN form is not read (a number, <number, number-number, n:n or n+)"
        )
        return None

    def coded_value(self, obx: _Segment) -> dict[str, Any] | None:
        c = [self.text(obx, 5, i) for i in range(1, 7)]
        text = c[1] or c[4]
        if not text:
            self.problem(obx, 5, "hl7.required", "a coded result needs its text (component 2)")
            return None
        out: dict[str, Any] = {"type": "coded", "text": text}
        standard = local = None
        for code, display, system in ((c[0], c[1], c[2]), (c[3], c[4], c[5])):
            if not code:
                continue
            oid = (
                SNOMED_OID
                if system.upper() in _SNOMED_SYSTEMS
                else LOINC_OID
                if system.upper() in _LOINC_SYSTEMS
                else system
                if check_oid(system) is None
                else None
            )
            if oid is not None and standard is None:
                standard = (code, oid, display)
            elif oid is None and local is None:
                local = (code, display)
        if standard is not None:
            out.update(code=standard[0], system=standard[1])
            if standard[2]:
                out["display"] = standard[2]
        elif local is not None and self.defaults.local_code_system:
            out.update(code=local[0], system=self.defaults.local_code_system)
            if local[1]:
                out["display"] = local[1]
        return out

    def reference_range(self, obx: _Segment) -> dict[str, Any] | None:
        text = self.text(obx, 7)
        if not text:
            return None
        if match := _RANGE.fullmatch(text):
            return {"low": self.decimal(match["low"]), "high": self.decimal(match["high"])}
        if match := _BOUND.fullmatch(text):
            side = "high" if match["op"] in ("<", "<=", "≤") else "low"
            return {side: self.decimal(match["value"])}
        return {"text": text}

    @staticmethod
    def decimal(value: str) -> str:
        # OBX-7 is free text (ST): French systems write "3,5"; the format wants "3.5".
        return format(Decimal(value.replace(",", ".").lstrip("+")), "f")

    def performer(self, obx: _Segment) -> str | None:
        """The key of the subcontracted laboratory that performed a result, None when in house."""
        name, finess, label = self.text(obx, 23, 1), "", "OBX-23"
        if name or self.reps(obx, 23):
            identifier = self.text(obx, 23, 10) or self.text(obx, 23, 3)
            oid, id_type = self.text(obx, 23, 6, 2), self.text(obx, 23, 7)
            if len(identifier) == 10 and identifier[0] == "1" and oid == FINESS_OID:
                identifier = identifier[1:]  # the national structure id: 1 + FINESS
            if oid == FINESS_OID or id_type in ("FINEG", "FINEJ", "FINESS"):
                finess = identifier
            number = 23
        elif self.text(obx, 15, 3) in ("FINESS", "FINEG", FINESS_OID):
            finess, name, label, number = self.text(obx, 15, 1), self.text(obx, 15, 2), "OBX-15", 15
        else:
            return None
        in_house = (finess and finess == self.laboratory_finess) or (
            not finess and name == self.defaults.laboratory.get("name")
        )
        if in_house:
            return None
        if not finess:
            self.problem(
                obx,
                number,
                "hl7.finess",
                f"the performing laboratory ({label}) needs its FINESS (XON-10 with authority "
                "1.2.250.1.71.4.2.2 or type FINEG)",
            )
            return None
        if finess not in self.executing:
            key = f"L{len(self.executing) + 1}"
            path = f"$.executing_laboratories[{len(self.executing)}]"
            # The message says who and where; the configuration what it cannot (telephone, setting).
            lab: dict[str, Any] = {
                **self.defaults.executing_laboratories.get(finess, {}),
                "id": key,
                "finess": finess,
            }
            if name or "name" not in lab:
                lab["name"] = name or finess
            self.origin(path, obx, number)
            addresses = self.reps(obx, 24)
            if addresses and (address := self.xad(obx, 24, addresses[0])) is not None:
                lab["address"] = address
                self.origin(f"{path}.address", obx, 24)
            director = self.reps(obx, 25)
            biologist = (
                self.xcn(obx, 25, director[0], f"{path}.biologist", biologist=True) if director else None
            )
            if biologist is not None:
                lab["biologist"] = biologist
            missing = [k for k in ("telecom", "practice_setting", "address") if k not in lab]
            if missing:
                self.problem(
                    obx,
                    number,
                    "executing-laboratory",
                    f"the CR-Bio volet needs the subcontracted laboratory's {', '.join(missing)} "
                    f"(not in an ORU): set [executing_laboratories.{finess}] in the configuration",
                )
            self.executing[finess] = lab
        lab = self.executing[finess]
        performed = self.time(obx, 19) or self.time(obx, 14)
        latest = self.performed.get(finess)
        if performed is not None and (latest is None or performed > latest):
            # One date for the laboratory's part of the report: when its last analysis was done.
            self.performed[finess] = performed
            lab["performed_at"] = performed.isoformat()
            index = list(self.executing).index(finess)
            self.origin(f"$.executing_laboratories[{index}].performed_at", obx, 19)
        elif latest is None:
            self.problem(obx, 19, "hl7.required", "the time the subcontracted analysis was done is needed")
        return str(lab["id"])

    def order_specimens(self, order: _Order) -> list[str]:
        """The keys of an order's specimens: its SPM segments, else OBR-15 with OBR-7 and OBR-14."""
        obr = order.obr
        keys = []
        for spm in order.specimens:
            identifier = self.text(spm, 2, 2) or self.text(spm, 2, 1)
            collected = self.time(spm, 17, 1, 1) or self.time(obr, 7)
            received = self.time(spm, 18)
            key = self.specimen(
                spm,
                identifier,
                self.text(spm, 4, 1),
                self.text(spm, 4, 2),
                collected,
                received,
                (spm, 4),
                (spm, 17) if self.text(spm, 17) else (obr, 7),
                (spm, 18),
            )
            if key is not None:
                keys.append(key)
        if order.specimens:
            return keys
        kind = self.text(obr, 15, 1, 1)
        if not kind:
            self.problem(
                obr, 15, "hl7.required", "the specimen is needed: an SPM segment, or OBR-15 with OBR-7"
            )
            return []
        key = self.specimen(
            obr,
            "",
            kind,
            self.text(obr, 15, 1, 2),
            self.time(obr, 7),
            self.time(obr, 14),
            (obr, 15),
            (obr, 7),
            (obr, 14),
        )
        return [key] if key is not None else []

    def specimen(
        self,
        segment: _Segment,
        identifier: str,
        kind: str,
        label: str,
        collected: datetime | None,
        received: datetime | None,
        kind_at: tuple[_Segment, int],
        collected_at: tuple[_Segment, int],
        received_at: tuple[_Segment, int],
    ) -> str | None:
        if collected is None:
            self.problem(*collected_at, "hl7.required", "the specimen's collection time is needed")
            return None
        facts = (kind, label, collected, received)
        key = identifier if _SPECIMEN_ID.fullmatch(identifier) else ""
        if not key:
            key = next((k for k, f in self.specimen_keys.items() if f == facts), "")
            if key:
                return key
            key = f"S{len(self.specimen_keys) + 1}"
        if key in self.specimen_keys:
            if self.specimen_keys[key] != facts:
                self.problem(
                    segment, 2, "specimen.conflict", "the same specimen id with another type or time"
                )
            return key
        self.specimen_keys[key] = facts
        path = f"$.specimens[{len(self.specimens)}]"
        out: dict[str, Any] = {"id": key, "type": kind, "collected_at": collected.isoformat()}
        if label:
            out["label"] = label
        if received is not None:
            out["received_at"] = received.isoformat()
        self.specimens.append(out)
        self.origin(path, segment, 0)
        self.origin(f"{path}.type", *kind_at)
        self.origin(f"{path}.label", *kind_at)
        self.origin(f"{path}.collected_at", *collected_at)
        self.origin(f"{path}.received_at", *received_at)
        return key

    def report_unmapped(self) -> None:
        """Every result whose code is local and has no LOINC code, in one problem."""
        if not self.unmapped:
            return
        listed = ", ".join(f"{code!r} ({segment.ref})" for code, segment in self.unmapped)
        self.problem(
            self.unmapped[0][1],
            3,
            "loinc.unmapped",
            f"local codes without a LOINC code: {listed}; add them to the LOINC mapping (local,loinc[,unit])",
        )

    def move_origins(self, base: str, path: str) -> None:
        """Re-file the origins written under an OBR's reference under its place in the report."""
        for key in [k for k in self.origins if k == base or k.startswith(base + ".")]:
            self.origins[path + key[len(base) :]] = self.origins.pop(key)

    # validation, people of the orders

    def validation(self, orders: list[_Order], msh: _Segment) -> tuple[datetime | None, _Segment]:
        """The validation time: the latest OBR-22 (results reported), else the message time MSH-7."""
        latest: tuple[datetime, _Segment] | None = None
        for order in orders:
            when = self.time(order.obr, 22)
            if when is not None and (latest is None or when > latest[0]):
                latest = (when, order.obr)
        if latest is not None:
            return latest
        when = self.time(msh, 7)
        if when is None:
            self.problem(msh, 7, "hl7.required", "the validation time is needed (OBR-22, else MSH-7)")
        return when, msh

    def biologist(self, orders: list[_Order]) -> dict[str, Any] | None:
        """The legal authenticator: OBR-32 of the last validated order, else OBX-16, else configured."""
        best: tuple[datetime | None, _Order] | None = None
        for order in orders:
            if self.reps(order.obr, 32):
                when = self.time(order.obr, 22)
                if best is None or (when is not None and (best[0] is None or when >= best[0])):
                    best = (when, order)
        if best is not None:
            return self.cnn(best[1].obr, 32, "$.biologist", required=True)
        for order in orders:
            for result in order.results:
                if observers := self.reps(result.segment, 16):
                    person = self.xcn(result.segment, 16, observers[0], "$.biologist", biologist=True)
                    if person is not None and "specialty" not in person:
                        self.specialty(
                            person, "$.biologist", result.segment, 16, biologist=True, required=True
                        )
                    return person
        if self.defaults.biologist is not None:
            self.origin("$.biologist", None, 0, "biologist (configuration)")
            return dict(self.defaults.biologist)
        self.problem(
            orders[0].obr,
            32,
            "hl7.required",
            "the biologist who validated the results is needed (OBR-32 or OBX-16)",
        )
        return None

    def prescriber(self, orders: list[_Order]) -> dict[str, Any] | None:
        found: tuple[str, dict[str, Any]] | None = None
        named = False  # a prescriber was named, even if not usable (its problem is already told)
        for order in orders:
            for segment, number in ((order.orc, 12), (order.obr, 16)):
                if segment is None or not (reps := self.reps(segment, number)):
                    continue
                named = True
                if found is None:
                    person = self.xcn(segment, number, reps[0], "$.prescriber")
                    if person is None:
                        break
                    if segment is order.orc:
                        self.prescriber_contact(segment, person)
                    found = (person["rpps"], person)
                elif self.rpps_of(segment, number, reps[0]) != found[0]:
                    self.problem(
                        segment,
                        number,
                        "prescriber.several",
                        "names another prescriber than the first order: "
                        "crbio makes one report per prescriber",
                    )
                break
        if found is None:
            if not named:
                self.problem(orders[0].obr, 16, "hl7.required", "the prescriber is needed (ORC-12 or OBR-16)")
            return None
        return found[1]

    def rpps_of(self, segment: _Segment, number: int, rep: _Repetition) -> str | None:
        p = self.part
        return self.rpps(
            p(segment, number, rep, 1),
            p(segment, number, rep, 9, 1),
            p(segment, number, rep, 9, 2),
            p(segment, number, rep, 13),
        )

    def prescriber_contact(self, orc: _Segment, person: dict[str, Any]) -> None:
        """The prescriber's telephone and MSSanté address (ORC-14) and address (ORC-24)."""
        telecoms, mssante = self.telecoms(orc, 14)
        if telecoms:
            person["telecom"] = telecoms
            self.origin("$.prescriber.telecom", orc, 14)
        if mssante:
            person["mssante"] = mssante
            self.origin("$.prescriber.mssante", orc, 14)
        if (reps := self.reps(orc, 24)) and (address := self.xad(orc, 24, reps[0])) is not None:
            person["address"] = address
            self.origin("$.prescriber.address", orc, 24)

    def copy_recipients(self, orders: list[_Order]) -> list[dict[str, Any]]:
        recipients: dict[str, dict[str, Any]] = {}
        for order in orders:
            for rep in self.reps(order.obr, 28):
                path = f"$.copy_recipients[{len(recipients)}]"
                person = self.xcn(order.obr, 28, rep, path)
                if person is not None and person["rpps"] not in recipients:
                    recipients[person["rpps"]] = person
        return list(recipients.values())

    def order_id(self, order: _Order) -> dict[str, Any] | None:
        """The order number: the filler's (ORC-3, OBR-3), else the placer's (ORC-2, OBR-2)."""
        for segment, number in ((order.orc, 3), (order.obr, 3), (order.orc, 2), (order.obr, 2)):
            if segment is None or not (value := self.text(segment, number, 1)):
                continue
            oid, kind = self.text(segment, number, 3), self.text(segment, number, 4)
            root = oid if kind == "ISO" and oid else self.defaults.order_root
            if root is None:
                return None
            self.origin("$.order_id", segment, number)
            return {"root": root, "extension": value}
        return None


# --- problems of the JSON rules, back at their place in the message -------------------------

_LAST_STEP = re.compile(r"(?:\.[^.\[\]]+|\[[^\]]*\])$")


def _translate(problems: Sequence[Problem], origins: Origins) -> list[Problem]:
    """The JSON reader's problems, each named by the segment and field its value came from."""
    placed: list[tuple[tuple[int, int], Problem]] = []
    for problem in problems:
        path = problem.field
        while path not in origins:
            parent = _LAST_STEP.sub("", path)
            if parent == path:
                break
            path = parent
        where, key, what = origins.get(path, origins["$"])
        if where == "configuration":
            where = f"configuration {problem.field.removeprefix('$.')}"
            what = None
        message = f"{what}: {problem.message}" if what else problem.message
        placed.append((key, Problem(where, problem.rule, message)))
    return list(dict.fromkeys(p for _, p in sorted(placed, key=lambda item: item[0])))
