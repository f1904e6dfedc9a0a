"""What an MSSanté message carrying a CR-BIO is, whatever carries it (SMTP or an operator API).

The *Référentiel socle MSSanté #2* (requirements quoted from secondary material, see the
domain note §2.2) fixes the message: one patient per message; an ``IHE_XDM.ZIP`` plus the
PDF/A of each CDA, named ``<date de l'acte>_<type de document>_<NOM>_<prénom>.pdf``
(ECO.2.1.1, ECO.2.1.6); the subject ``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de
naissance>`` that receiving systems route on (ECO.2.1.3); UTF-8 text parts (ECO.2.2.3);
RFC 5322 ``Message-ID`` (ECO.2.2.1); and the ``X-MSS-*`` headers the routing plan computed
(ECO.2.4.x, ECO.2.2.8). A replacement ("annule et remplace") or a deletion is a new message
to the same recipients whose XDM metadata carries the action and whose body says so.

The patient's name appears in the subject and in the PDF's file name because the
specification puts it there: that is message content. None of it is ever logged.
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from email import quoprimime
from email.message import Message, MIMEPart
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache
from typing import Any

from crbio.dispatch.delivery import Action, Job
from crbio.dispatch.header import DocumentHeader
from crbio.dispatch.senders.base import SenderContext
from crbio.dispatch.xdm import ARCHIVE_NAME, build_xdm
from crbio.errors import PermanentSendError

__all__ = [
    "SUBJECT_PREFIX",
    "body_text",
    "compose",
    "message_id",
    "pdf_file_name",
    "subject",
]

SUBJECT_PREFIX = "XDM/1.0/DDM+"

# Letters NFKD does not decompose into ASCII, and the typographic apostrophes that must become
# a plain one before being turned into "_".
_TRANSLITERATION = str.maketrans(
    {
        "Œ": "OE",
        "œ": "oe",
        "Æ": "AE",
        "æ": "ae",
        "ß": "ss",
        "Ø": "O",
        "ø": "o",
        "Ð": "D",
        "ð": "d",
        "Þ": "TH",
        "þ": "th",
        "Ł": "L",
        "ł": "l",
        "’": "'",
        "‘": "'",
        "ʼ": "'",
        "´": "'",
    }
)
# Headers are written unfolded (up to RFC 5322's 998 octets) so that the subject always starts
# on the "Subject:" line: receiving systems route on its "XDM/1.0/DDM+" prefix. Bodies are
# encoded before this policy is set, with the usual 76-character lines.
_OUTPUT_POLICY = SMTP.clone(max_line_length=998)
_ASK = "Pour toute question sur ces résultats, adressez-vous à votre médecin ou à votre laboratoire."
_NOT_FILE_SAFE = re.compile(r"[^A-Za-z0-9-]+")
_HEADER_NAME = re.compile(r"X-MSS-[A-Za-z0-9-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATION))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).encode("ascii", "ignore").decode()


def _file_part(text: str) -> str:
    return _NOT_FILE_SAFE.sub("_", _ascii(text)).strip("_")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _family(header: DocumentHeader) -> str:
    return _one_line(header.birth_family_name).upper()


def _given(header: DocumentHeader) -> str:
    return _one_line(header.birth_given_name)


def pdf_file_name(header: DocumentHeader) -> str:
    """The PDF/A attachment's normative name (ECO.2.1.6), ASCII and file-name safe.

    ``<date of the act YYYYMMDD>_<document type>_<NOM>_<prénom>.pdf``: the act is the
    documented service event (the sampling), falling back to the document's date; the type
    is the display name of the document's LOINC code; the names are the birth family name
    (upper case) and the first birth given name, the INS identity traits. Accents are
    dropped, anything but letters, digits and hyphens (spaces, apostrophes) becomes ``_``,
    e.g. ``20240104_CR_d_examens_biologiques_PAT-TROIS_DOMINIQUE.pdf``.
    """
    act = header.service_start or header.effective_time
    parts = [
        act.strftime("%Y%m%d"),
        _file_part(header.code.display or header.title),
        _file_part(_family(header)),
        _file_part(_given(header)),
    ]
    return "_".join(p for p in parts if p) + ".pdf"


def subject(header: DocumentHeader) -> str:
    """The message subject (ECO.2.1.3): ``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>``.

    The label is the document's title; the birth date, optional in the requirement, is
    written ``DD/MM/YYYY`` as in the ANS examples and left out when the document has none.
    """
    words = [_one_line(header.title or header.code.display), _family(header), _given(header)]
    if header.birth_date is not None:
        words.append(header.birth_date.strftime("%d/%m/%Y"))
    return SUBJECT_PREFIX + " ".join(w for w in words if w)


def _to_patient(job: Job) -> bool:
    return bool(job.delivery.metadata.get("to_patient", False))


def _headers(job: Job) -> Mapping[str, Any]:
    headers = job.delivery.metadata.get("headers") or {}
    return headers if isinstance(headers, Mapping) else {}


def _no_reply(job: Job) -> bool:
    return str(_headers(job).get("X-MSS-MES", "")).upper() == "FIN"


def body_text(job: Job) -> str:
    """The message's text part (sent as UTF-8), worded for the action and the recipient.

    A first send presents the report; a replacement says it "annule et remplace" the version
    sent before; a deletion says the report is withdrawn and must no longer be used. A
    professional gets the document identifiers their software needs; the patient gets plain
    words, and, when the laboratory asked for no reply (``X-MSS-MES: FIN``), a line saying so.
    """
    header = job.header
    action = job.delivery.action
    lab = _one_line(header.custodian_name) or "le laboratoire"
    day = header.effective_time.strftime("%d/%m/%Y")
    replaced = job.delivery.replaces or header.replaces
    if _to_patient(job):
        if action is Action.SUBMIT:
            text = [
                f"Votre laboratoire ({lab}) vous transmet le compte rendu de vos examens biologiques "
                f"du {day}. Vous le trouverez en pièce jointe, au format PDF.",
                _ASK,
            ]
        elif action is Action.REPLACE:
            text = [
                f"Votre laboratoire ({lab}) vous transmet une nouvelle version du compte rendu de vos "
                f"examens biologiques, datée du {day}. Vous la trouverez en pièce jointe, au format PDF.",
                "Cette version annule et remplace celle que vous avez reçue précédemment : "
                "merci de ne plus tenir compte de l'ancienne version.",
                _ASK,
            ]
        else:
            text = [
                f"Le compte rendu de vos examens biologiques du {day} que vous a transmis votre "
                f"laboratoire ({lab}) a été retiré : merci de ne plus en tenir compte.",
                "Pour toute question, adressez-vous à votre laboratoire.",
            ]
        if _no_reply(job):
            text.append("Ce message ne permet pas de répondre : merci de ne pas y répondre.")
    else:
        ident = f"Identifiant du document : {header.document_id} (version {header.version})."
        if action is Action.SUBMIT:
            text = [
                f"Veuillez trouver ci-joint le compte rendu d'examens biologiques du {day} établi par {lab}.",
                "Le fichier IHE_XDM.ZIP contient le document structuré (CDA R2 niveau 3, PDF intégré) et "
                "ses métadonnées, pour intégration dans votre logiciel ; le fichier PDF joint en est la "
                "version lisible.",
                ident,
            ]
        elif action is Action.REPLACE:
            text = [
                f"Veuillez trouver ci-joint une nouvelle version (version {header.version}) du compte "
                f"rendu d'examens biologiques établi par {lab}, datée du {day}.",
                "Ce compte rendu ANNULE ET REMPLACE la version transmise précédemment"
                + (f" (identifiant {replaced})" if replaced else "")
                + " : merci de ne plus utiliser l'ancienne version.",
                "Le fichier IHE_XDM.ZIP contient le document structuré (CDA R2 niveau 3, PDF intégré) et "
                "ses métadonnées ; le fichier PDF joint en est la version lisible.",
                ident,
            ]
        else:
            text = [
                f"Le compte rendu d'examens biologiques du {day} transmis par {lab} est RETIRÉ "
                "(supprimé) : il ne doit plus être utilisé.",
                "Le document retiré est joint (IHE_XDM.ZIP et PDF) pour que votre logiciel puisse "
                "l'identifier et le retirer.",
                ident,
            ]
    footer = (
        "Message envoyé automatiquement par le laboratoire par la messagerie sécurisée de santé (MSSanté)."
    )
    return "Bonjour,\n\n" + "\n\n".join(text) + "\n\n" + footer + "\n"


def _domain(address: str) -> str:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address):
        raise PermanentSendError(
            "the sender address is not an e-mail address", reason="invalid sender address"
        )
    return domain


def message_id(job: Job, sender_address: str) -> str:
    """The message's RFC 5322 id without angle brackets: ``<job.message_id>@<sender's domain>``.

    It is the same on every retry, which is what lets a receiver recognise a resend.
    """
    return f"{job.message_id}@{_domain(sender_address)}"


def previous_message_id(job: Job) -> str | None:
    """The Message-ID of the earlier message a replacement or deletion follows, if the journal has it."""
    value = (job.previous or {}).get("message_id")
    if not isinstance(value, str) or "@" not in value or not _HEADER_VALUE.fullmatch(value):
        return None
    return value.strip("<>") or None


def mss_headers(job: Job, context: SenderContext) -> dict[str, str]:
    """The ``X-MSS-*`` headers of a message: the plan's, with the sending software's ``X-MSS-NIL``.

    The NIL is the software's at sending time (ECO.2.4.3: on every message), so a delivery
    planned before it was configured still carries it.

    Raises:
        ValueError: a header of the plan is not a valid ``X-MSS-*`` header.
    """
    result = {str(k): str(v) for k, v in _headers(job).items()}
    if context.nil and "X-MSS-NIL" not in result:
        result["X-MSS-NIL"] = context.nil
    for name, value in result.items():
        if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"the plan's mail header {name[:40]!r} is not a valid X-MSS header")
    return result


def compose(job: Job, context: SenderContext, *, sender_address: str, submission_time: datetime) -> bytes:
    """The complete MSSanté message of a job, as sent by SMTP (CRLF, 7-bit, UTF-8 text).

    From the lab's mailbox to the delivery's recipient (one patient per message), with the
    normative subject, the date of ``submission_time``, a ``Message-ID`` stable across
    retries, the ``X-MSS-*`` headers of ``metadata["headers"]`` (``X-MSS-NIL`` from the
    context when the plan left it out), ``Disposition-Notification-To`` when
    ``metadata["request_mdn"]`` asks for a read receipt, ``In-Reply-To``/``References`` to
    the earlier message of a replacement or deletion when the journal knows it, the text
    body, then ``IHE_XDM.ZIP`` (application/zip) and the PDF/A under its normative name.

    Raises:
        PermanentSendError: the sender address or a header of the plan is unusable.
    """
    header = job.header
    key = job.key[:16]
    when = submission_time if submission_time.tzinfo is not None else submission_time.replace(tzinfo=UTC)
    mid = message_id(job, sender_address)
    try:
        headers = mss_headers(job, context)
    except ValueError as error:
        raise PermanentSendError(f"delivery {key}: {error}", reason="invalid X-MSS header") from None
    # Headers whose values recur (the lab's address, a document's subject, a recipient, the
    # X-MSS values) are folded once by the email package and remembered; the ones unique to
    # each message are ASCII of our own making, written as the email package would write them
    # (tests/dispatch/test_mssante.py compares the two).
    lines = [
        _fold("From", sender_address),
        _fold("To", job.delivery.recipient.address),
        _fold("Subject", subject(header)),
        f"Date: {format_datetime(when)}\r\n".encode("ascii"),
        f"Message-ID: <{mid}>\r\n".encode("ascii"),
    ]
    previous = previous_message_id(job)
    if previous is not None and job.delivery.action is not Action.SUBMIT:
        lines += [f"In-Reply-To: <{previous}>\r\n".encode(), f"References: <{previous}>\r\n".encode()]
    lines += [_fold(name, headers[name]) for name in sorted(headers)]
    if job.delivery.metadata.get("request_mdn"):
        lines.append(_fold("Disposition-Notification-To", sender_address))
    # "=_" never occurs in base64 nor in quoted-printable text, so this boundary cannot clash
    # with the content and the generator's search of the whole message for one is not needed.
    boundary = f"=_crbio.{job.message_id}"
    lines += [
        b"MIME-Version: 1.0\r\n",
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode("ascii"),
    ]
    parts = [
        _text_part(body_text(job)),
        _ZIP_HEADERS + _base64_lines(build_xdm(job, context, submission_time=when)),
        _pdf_part(pdf_file_name(header), job.pdf),
    ]
    delimiter = f"--{boundary}".encode()
    return (
        b"".join(lines)
        + b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
        + delimiter
        + b"--\r\n"
    )


@lru_cache(maxsize=4096)
def _fold(name: str, value: str) -> bytes:
    """One header line as the email package folds it (a pure function: kept for recurring values)."""
    part = Message(policy=_OUTPUT_POLICY)
    part[name] = value
    return _header_block(part)[:-2]


def _header_block(part: Message) -> bytes:
    return b"".join(_OUTPUT_POLICY.fold_binary(name, value) for name, value in part.items()) + b"\r\n"


def _attachment_headers(content_type: str, filename: str) -> Message:
    part = MIMEPart(policy=SMTP)
    part["Content-Type"] = content_type
    part.add_header("Content-Disposition", "attachment", filename=filename)
    part["Content-Transfer-Encoding"] = "base64"
    return part


_ZIP_HEADERS = _header_block(_attachment_headers("application/zip", ARCHIVE_NAME))
_TEXT_HEADERS = (
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)


def _text_part(text: str) -> bytes:
    """The text part as ``MIMEPart.set_content(text, charset="utf-8", cte="quoted-printable")`` writes it."""
    normal = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    encoded = quoprimime.body_encode(normal.decode("latin-1"), SMTP.max_line_length or 78)
    return _TEXT_HEADERS + encoded.replace("\n", "\r\n").encode("ascii")


@lru_cache(maxsize=16)
def _pdf_part(filename: str, pdf: bytes) -> bytes:
    # The same for every recipient of a document (one bytes object per document in a worker).
    return _header_block(_attachment_headers("application/pdf", filename)) + _base64_lines(pdf)


def _base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines ending in CRLF, as ``base64.encodebytes`` but without its loop."""
    # The email package's generator re-reads base64 bodies line by line in Python, which
    # costs more than the rest of a delivery: the headers are its work, the body is encoded here.
    text = memoryview(binascii.b2a_base64(data, newline=False))
    return b"".join([bytes(text[i : i + 76]) + b"\r\n" for i in range(0, len(text), 76)])
