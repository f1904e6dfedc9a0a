"""HL7 v2.5 ``ORU^R01`` carrying a CR-BIO to a hospital PFI/DPI, and reading its acknowledgement.

The layout follows the CI-SIS volet "Transmission d'un document CDA-R2 en HL7v2" (ANS IG
``IG-hl7v2-volet-transmission-document-cda-r2``, ``profils-messages.md``): the ORU is only an
envelope around the CDA R2 N3 (embedded PDF), one ORDER_OBSERVATION whose first OBSERVATION
holds the document (``OBX-2=ED``) followed by the PRT segments naming the sender (``SB``) and
the MSSanté recipients (``RCT``), then one coded OBX per DMP/MSSanté metadata flag, in the
volet's order. ``ORC-1`` and the document's ``OBX-11`` say what to do with it (NW/F first
send, RO/C replacement, CA/D deletion); a PFI rejects a message where they disagree.

Patient facts (PID) come from the CDA header, never from elsewhere, so ``PID-3`` equals the
CDA ``recordTarget/patientRole/id`` values as the volet requires.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import hl7

from crbio._hl7 import hl7_ts
from crbio.dispatch.delivery import Action, Job
from crbio.dispatch.header import DocumentHeader, HeaderPerson
from crbio.dispatch.senders.base import SenderContext
from crbio.identifiers import NATIONAL_PS_OID

__all__ = [
    "EVENTS",
    "FLAG_LABELS",
    "FLAG_ORDER",
    "MESSAGE_PROFILE",
    "MESSAGE_TYPE",
    "AckError",
    "AckInfo",
    "build_oru",
    "escape",
    "parse_ack",
    "read_ack",
]

MESSAGE_TYPE: Final = "ORU^R01^ORU_R01"
VERSION: Final = "2.5"
MESSAGE_PROFILE: Final = "2.1^CISIS_CDA_HL7_V2"
CHARSET: Final = "UNICODE UTF-8"
PROCESSING_IDS: Final = frozenset({"P", "T", "D"})

EVENTS: Final[Mapping[Action, tuple[str, str]]] = {
    Action.SUBMIT: ("NW", "F"),
    Action.REPLACE: ("RO", "C"),
    Action.DELETE: ("CA", "D"),
}
"""``(ORC-1, OBX-11)`` for each action; the volet requires the two to agree."""

FLAG_LABELS: Final[Mapping[str, str]] = {
    "MASQUE_PS": "Masqué aux professionnels de Santé",
    "INVISIBLE_PATIENT": "Document Non Visible par le patient",
    "INVISIBLE_REP_LEGAUX": "Non visible par les représentants Légaux du patient",
    "CONNEXION_SECRETE": "Connexion Secrete",
    "MODIF_CONF_CODE": "Modification Confidentiality Code",
    "DESTDMP": "Destinataire DMP",
    "DESTMSSANTEPS": "Destinataire (Professionnel de Santé, organisation ou BAL applicative)",
    "DESTMSSANTEPAT": "Destinataire Patient",
    "ACK_RECEPTION": "Accusé de réception",
    "ACK_LECTURE_MSS": "Accusé de lecture",
}
"""The Y/N metadata of the volet's "MetaDMPMSS" table with their labels, in the required order."""

FLAG_ORDER: Final[tuple[str, ...]] = tuple(FLAG_LABELS)

FLAG_SYSTEM: Final = "MetaDMPMSS"
YES_NO_SYSTEM: Final = "expandedYes-NoIndicator"
NO_REPLY: Final = "FIN"

_INS_NAMESPACES: Final[Mapping[str, str]] = {
    "1.2.250.1.213.1.4.8": "ASIP-SANTE-INS-NIR",
    "1.2.250.1.213.1.4.9": "ASIP-SANTE-INS-NIA",
    # The test and demonstration NIR OIDs keep the NIR namespace (as in the ANS examples).
    "1.2.250.1.213.1.4.10": "ASIP-SANTE-INS-NIR",
    "1.2.250.1.213.1.4.11": "ASIP-SANTE-INS-NIR",
}
_FINESS_OID: Final = "1.2.250.1.71.4.2.2"
_LOINC_OID: Final = "2.16.840.1.113883.6.1"
_DOCUMENT_CODE: Final = ("11502-2", "CR d'examens biologiques")
_NS: Final = {"hl7": "urn:hl7-org:v3"}

# PV1-2 (patient class) from the CDA encounter code; the volet maps it to the XDS contentTypeCode.
_PATIENT_CLASS: Final[Mapping[str, str]] = {"IMP": "I", "EMER": "E", "AMB": "O"}

_ESCAPES: Final = {
    "\\": "\\E\\",
    "|": "\\F\\",
    "^": "\\S\\",
    "&": "\\T\\",
    "~": "\\R\\",
    "\r": "\\X0D\\",
    "\n": "\\X0A\\",
}
_ESCAPE_RE: Final = re.compile(r"[\\|^&~\r\n]")


def escape(text: str) -> str:
    r"""``text`` made safe as HL7 v2 field content: every delimiter becomes its escape sequence.

    ``\`` → ``\E\``, ``|`` → ``\F\``, ``^`` → ``\S\``, ``&`` → ``\T\``, ``~`` → ``\R\``;
    line breaks become hexadecimal escapes so they cannot end a segment.
    """
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], text)


def _segment(name: str, fields: Mapping[int, str]) -> str:
    """A segment from its non-empty fields, keyed by field number (values already encoded)."""
    used = {k: v for k, v in fields.items() if v}
    last = max(used, default=0)
    return "|".join([name, *(used.get(i, "") for i in range(1, last + 1))])


def _components(*parts: str) -> str:
    """Components joined with ``^``, trailing empty ones dropped (values already encoded)."""
    values = list(parts)
    while values and not values[-1]:
        values.pop()
    return "^".join(values)


def _hd(value: str) -> str:
    """A configured HD value (``namespace^universal id^type``): components kept, the rest escaped."""
    return "^".join(escape(part) for part in value.split("^"))


def _authority(namespace: str, oid: str) -> str:
    """An HD assigning authority inside a component: ``namespace&oid&ISO``."""
    return f"{escape(namespace)}&{escape(oid)}&ISO"


def _patient_ids(header: DocumentHeader) -> str:
    ids = [
        _components(escape(extension), "", "", _authority("", root), "PI")
        for root, extension in header.local_ids
        if extension
    ]
    if header.ins is not None:
        matricule, oid = header.ins
        ids.append(
            _components(
                escape(matricule),
                "",
                "",
                _authority(_INS_NAMESPACES.get(oid, "ASIP-SANTE-INS-NIR"), oid),
                "INS",
            )
        )
    return "~".join(ids)


def _patient_names(header: DocumentHeader) -> str:
    # PAM.FR: L is the birth (legal) name; D the used name, sent only when it differs.
    names = [
        _components(escape(header.birth_family_name), escape(header.birth_given_name), "", "", "", "", "L")
    ]
    used = header.used_family_name
    if used and used != header.birth_family_name:
        names.append(_components(escape(used), escape(header.birth_given_name), "", "", "", "", "D"))
    return "~".join(names)


def _pv1(header: DocumentHeader) -> str:
    visit = ""
    if header.encounter_id is not None:
        root, extension = header.encounter_id
        visit = _components(escape(extension), "", "", _authority("", root), "VN")
    return _segment(
        "PV1",
        {
            2: _PATIENT_CLASS.get(header.encounter_code or "", "O"),
            19: visit,
            44: hl7_ts(header.encounter_start) if header.encounter_start else "",
            45: hl7_ts(header.encounter_end) if header.encounter_end else "",
        },
    )


def _person(identifier: str, family: str, given: str, authority: str, name_type: str, id_type: str) -> str:
    """An XCN: id, family, given, assigning authority (component 9), name type, identifier type."""
    return _components(
        escape(identifier),
        escape(family),
        escape(given),
        "",
        "",
        "",
        "",
        "",
        authority,
        name_type,
        "",
        "",
        id_type,
    )


def _sender_prt(header: DocumentHeader, context: SenderContext) -> str:
    person: HeaderPerson | None = next(
        (p for p in (header.legal_authenticator, header.author) if p is not None and p.rpps), None
    )
    organization = _components(
        escape(context.laboratory_name),
        "",
        "",
        "",
        "",
        _authority("ASIP-SANTE-ST", _FINESS_OID),
        "FINEG",
        "",
        "",
        escape(context.laboratory_finess),
    )
    fields = {2: "UC", 4: "SB^Send by^participation", 8: organization}
    if person is not None:
        fields[5] = _person(
            person.rpps,
            person.family,
            person.given,
            _authority("ASIP-SANTE-PS", NATIONAL_PS_OID),
            "D",
            "IDNPS",
        )
    else:
        # No professional signed the document: the sender is the software (PRT-10, a device).
        fields[10] = _components(escape(context.software_name), "", escape(context.laboratory_oid), "ISO")
    return _segment("PRT", fields)


def _recipient_prt(recipient: Mapping[str, Any], header: DocumentHeader) -> str:
    address = str(recipient.get("address") or "")
    if not address:
        raise ValueError("an MSSanté recipient of the HL7 v2 metadata has no address")
    fields = {
        2: "UC",
        4: "RCT^Result Copies To^participation",
        15: _components("", "", "X.400", escape(address)),
    }
    kind = recipient.get("kind")
    identifier = str(recipient.get("identifier") or "")
    if kind == "professional" and identifier:
        # The national PS id is "8" + RPPS; the recipient list holds the bare 11-digit RPPS.
        national = "8" + identifier if len(identifier) == 11 and identifier.isdigit() else identifier
        fields[5] = _person(national, "", "", _authority("ASIP-SANTE-PS", NATIONAL_PS_OID), "", "IDNPS")
    elif kind == "patient" and header.ins is not None:
        matricule, oid = header.ins
        fields[5] = _person(
            matricule,
            header.birth_family_name,
            header.birth_given_name,
            _authority(_INS_NAMESPACES.get(oid, "ASIP-SANTE-INS-NIR"), oid),
            "L",
            "INS",
        )
    return _segment("PRT", fields)


def _flags(flags: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The flags as (code, Y|N) in the volet's order; unknown codes or values are refused."""
    unknown = [code for code in flags if code not in FLAG_LABELS]
    if unknown:
        raise ValueError(f"unknown HL7 v2 metadata flag(s): {', '.join(sorted(unknown))}")
    out = []
    for code in FLAG_ORDER:
        if code in flags:
            raw = flags[code]
            value = ("Y" if raw else "N") if isinstance(raw, bool) else raw
            if value not in ("Y", "N"):
                raise ValueError(f"HL7 v2 metadata flag {code} must be Y or N")
            out.append((code, str(value)))
    return out


def build_oru(
    job: Job,
    context: SenderContext,
    *,
    receiving_application: str,
    receiving_facility: str,
    processing_id: str = "P",
    sent_at: datetime,
) -> str:
    r"""The ``ORU^R01^ORU_R01`` (HL7 v2.5) of a job, segments joined by ``\r``.

    ``MSH-10`` is ``job.control_id``, so a resend after a crash carries the same control id and
    the PFI can de-duplicate it. ``receiving_application`` and ``receiving_facility`` are HD
    values (``^`` separates their components). The document is ``job.n3``, base64-encoded in
    the first OBX; ``delivery.metadata`` gives the flags (``flags``), the MSSanté recipients
    (``mssante_recipients``) and whether the patient may reply (``no_reply``).

    Raises:
        ValueError: the processing id is not P/T/D, or the metadata holds an unknown flag, a
            value other than Y/N, or a recipient without an address.
        InputError: ``job.n3`` is not a readable CDA header.
    """
    if processing_id not in PROCESSING_IDS:
        raise ValueError(f"processing id must be one of P, T, D (got {processing_id!r})")
    delivery = job.delivery
    header = job.header
    metadata = delivery.metadata
    order_control, status = EVENTS[delivery.action]
    code = header.code if header.code.system == _LOINC_OID else None
    document_code = _components(
        escape(code.code if code else _DOCUMENT_CODE[0]),
        escape(code.display if code else _DOCUMENT_CODE[1]),
        "LN",
    )
    segments = [
        "MSH|^~\\&|"
        + "|".join(
            [
                escape(context.software_name),
                _components(escape(context.laboratory_finess), escape(context.laboratory_oid), "ISO"),
                _hd(receiving_application),
                _hd(receiving_facility),
                hl7_ts(sent_at),
                "",
                MESSAGE_TYPE,
                escape(job.control_id),
                processing_id,
                VERSION,
                "",
                "",
                "",
                "",
                "FRA",
                CHARSET,
                "",
                "",
                MESSAGE_PROFILE,
            ]
        ),
        _segment(
            "PID",
            {
                3: _patient_ids(header),
                5: _patient_names(header),
                7: hl7_ts(header.birth_date) if header.birth_date else "",
                8: header.sex if header.sex in ("M", "F") else "U",
                # The CI-SIS INS annex: an INS is only sent for a qualified identity ("VALI").
                32: "VALI" if header.ins is not None else "",
            },
        ),
        _pv1(header),
        _segment("ORC", {1: order_control}),
        _segment("OBR", {1: "1", 4: document_code}),
        _segment(
            "OBX",
            {
                1: "1",
                2: "ED",
                3: document_code,
                5: _components("", "TEXT", "XML", "Base64", base64.b64encode(job.n3).decode("ascii")),
                11: status,
            },
        ),
        _sender_prt(header, context),
    ]
    recipients: Iterable[Mapping[str, Any]] = metadata.get("mssante_recipients") or ()
    segments.extend(_recipient_prt(r, header) for r in recipients)
    no_reply = bool(metadata.get("no_reply"))
    for index, (flag, value) in enumerate(_flags(metadata.get("flags") or {}), start=2):
        segments.append(
            _segment(
                "OBX",
                {
                    1: str(index),
                    2: "CE",
                    3: _components(flag, escape(FLAG_LABELS[flag]), FLAG_SYSTEM),
                    5: _components(value, "", YES_NO_SYSTEM),
                    11: "F",
                },
            )
        )
        if flag == "DESTMSSANTEPAT" and no_reply:
            segments.append(_segment("NTE", {1: "1", 4: NO_REPLY}))
    return "\r".join(segments)


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment of an acknowledgement: HL7 table 0357 code and text, severity, location."""

    code: str
    text: str
    severity: str
    location: str
    application_code: str

    def describe(self) -> str:
        """A short line: ``207 Application internal error at OBX^1^11 (E)``."""
        out = " ".join(p for p in (self.code, self.text) if p) or "error"
        if self.application_code:
            out += f" [{self.application_code}]"
        if self.location:
            out += f" at {self.location}"
        if self.severity:
            out += f" ({self.severity})"
        return out


@dataclass(frozen=True, slots=True)
class AckInfo:
    """What an HL7 v2 acknowledgement says.

    Attributes:
        code: ``MSA-1`` (AA, AE, AR, or the enhanced-mode CA, CE, CR).
        control_id: ``MSA-2``, the ``MSH-10`` of the message acknowledged.
        ack_control_id: The acknowledgement's own ``MSH-10``.
        errors: Its ERR segments.
        text: ``MSA-3`` (deprecated in v2.5 but still sent by some systems).
    """

    code: str
    control_id: str | None
    ack_control_id: str | None
    errors: tuple[AckError, ...]
    text: str | None

    @property
    def error_text(self) -> str | None:
        """The errors as one short line, from ERR or else ``MSA-3``; None when there are none."""
        text = "; ".join(e.describe() for e in self.errors) or self.text
        return text[:300] if text else None


def _get(segment: Any, field: int, component: int = 1, subcomponent: int = 1) -> str:
    """A field value, unescaped, or "" when the message stops before it."""
    try:
        return str(segment.extract_field(1, field, 1, component, subcomponent))
    except IndexError:
        return ""


def _raw(segment: Any, field: int) -> str:
    """A field as written (components and escapes kept), or "" when absent."""
    return str(segment(field)) if field < len(segment) else ""


def _ack_error(segment: Any) -> AckError:
    code, text = _get(segment, 3, 1), _get(segment, 3, 2)
    location = _raw(segment, 2)
    if not code and _raw(segment, 1):
        # HL7 v2.3/2.4 style: ERR-1 = segment^sequence^field^code&text.
        location = "^".join(p for p in (_get(segment, 1, c) for c in (1, 2, 3)) if p)
        code, text = _get(segment, 1, 4, 1), _get(segment, 1, 4, 2)
    application = _components(_get(segment, 5, 1), _get(segment, 5, 2))
    return AckError(code, text, _get(segment, 4), location, application)


def read_ack(message: str) -> AckInfo:
    """Read an HL7 v2 acknowledgement (``ACK``) with python-hl7.

    The error texts kept are the server's codes and the HL7 table texts, locations and
    severities; free-text diagnostics (``ERR-7``, ``ERR-8``) may quote the patient and are left out.

    Raises:
        ValueError: the text is not an HL7 v2 message, or has no MSA segment.
    """
    text = message.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        parsed = hl7.parse(text)
    except Exception as exc:  # python-hl7 raises assorted errors on garbage
        raise ValueError(f"not an HL7 v2 message ({type(exc).__name__})") from None
    if not isinstance(parsed, hl7.Message):
        raise ValueError("not an HL7 v2 message")
    try:
        msa = parsed.segment("MSA")
    except KeyError:
        raise ValueError("the acknowledgement has no MSA segment") from None
    code = _get(msa, 1).strip().upper()
    if not code:
        raise ValueError("the acknowledgement has no MSA-1 code")
    try:
        msh_id = _get(parsed.segment("MSH"), 10) or None
    except KeyError:
        msh_id = None
    try:
        err_segments: Sequence[Any] = parsed.segments("ERR")
    except KeyError:
        err_segments = ()
    return AckInfo(
        code=code,
        control_id=_get(msa, 2) or None,
        ack_control_id=msh_id,
        errors=tuple(_ack_error(s) for s in err_segments),
        text=_get(msa, 3) or None,
    )


def parse_ack(message: str) -> tuple[str, str | None, str | None]:
    """``(MSA-1, MSA-2, error text)`` of an HL7 v2 acknowledgement.

    The error text comes from the ERR segments (HL7 table 0357 code and text, location,
    severity) or, without ERR, from ``MSA-3``; it carries no free-text diagnostics.

    Raises:
        ValueError: the text is not an HL7 v2 acknowledgement.
    """
    info = read_ack(message)
    return info.code, info.control_id, info.error_text
