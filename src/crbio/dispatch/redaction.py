"""Keep patient data out of the reasons kept in the journal and the logs.

Servers echo what they were sent: a registry quotes the patient id, an SMTP server the
recipient (a patient's address is the INS), an operator the patient's name. Every sender
passes the texts it keeps through :func:`redact`, which masks what the delivery's document
says about the patient, then anything that looks like a patient identifier.

Libraries log what passes through them, too: aiosmtpd (the simulators' SMTP server) every
command line and message line, so a patient's ``RCPT TO`` (the address is the INS) and the
normative subject (name, birth date); signxml the canonical XML it signs (the VIHF carries
the INS); httpcore the response headers. :func:`quiet_third_party_loggers` keeps them at
WARNING, and runs when this module is imported, i.e. whenever dispatch is used.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from crbio.dispatch.delivery import Job, RecipientKind
from crbio.errors import InputError

__all__ = ["THIRD_PARTY_LOGGERS", "quiet_third_party_loggers", "redact"]

#: Loggers of libraries crbio drives that write message content at INFO or DEBUG.
THIRD_PARTY_LOGGERS: Final = ("mail.log", "mail.debug", "signxml", "httpcore", "hpack", "h2")


def quiet_third_party_loggers() -> None:
    """Set the loggers of :data:`THIRD_PARTY_LOGGERS` to WARNING, unless the application set them.

    A logger whose level is already set (not ``NOTSET``) is left alone: an application that
    wants aiosmtpd's or httpcore's wire traces asks for them explicitly, knowing they hold
    patient data. ``crbio --debug`` does not: it is about crbio's own loggers.
    """
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


quiet_third_party_loggers()

_PATIENT_ADDRESS: Final = re.compile(r"[^\s@<>\"']+@patient\.mssante\.fr", re.IGNORECASE)
_PATIENT_LIKE: Final = (
    re.compile(r"[^\s'\"<>,;()\[\]]*\^\^\^[^\s'\"<>,;()\[\]]*"),  # HL7 CX values (INS, IPP)
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # other e-mail addresses
    re.compile(r"(?<![\w.])[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{6,8}(?![\w.])", re.IGNORECASE),  # NIR-like
    re.compile(r"(?<![\w.])[0-9]{7,}(?![\w.])"),  # long digit runs outside OIDs (IPP, phone…)
)
MAX_LENGTH: Final = 300


def _patient_facts(job: Job) -> list[str]:
    facts: set[str] = set()
    recipient = job.delivery.recipient
    if recipient.kind is RecipientKind.PATIENT:
        facts |= {recipient.address, recipient.address.partition("@")[0]}
    try:
        header = job.header
    except InputError:
        header = None
    if header is not None:
        facts |= {header.birth_family_name, header.birth_given_name, header.used_family_name or ""}
        facts |= {extension for _, extension in header.local_ids}
        if header.ins is not None:
            facts.add(header.ins[0])
        if header.birth_date is not None:
            day = header.birth_date
            facts |= {day.isoformat(), day.strftime("%d/%m/%Y"), day.strftime("%Y%m%d")}
    # Longest first, so "DUPONT-MARTIN" is masked whole before "DUPONT".
    return sorted((f for f in facts if len(f) >= 3), key=len, reverse=True)


def redact(text: str | None, job: Job | None = None) -> str:
    """``text`` on one line, without patient data, at most 300 characters.

    With ``job``, the patient's names, INS, local ids, birth date and patient address from
    its document are masked wherever they appear; then anything shaped like a patient
    identifier (patient addresses, CX values, e-mail addresses, NIR-like numbers, long digit
    runs outside OIDs) is masked too.
    """
    if not text:
        return ""
    out = " ".join(text.split())
    out = _PATIENT_ADDRESS.sub("<patient address>", out)
    for fact in _patient_facts(job) if job is not None else ():
        out = re.sub(re.escape(fact), "<masked>", out, flags=re.IGNORECASE)
    for pattern in _PATIENT_LIKE:
        out = pattern.sub("<masked>", out)
    return out if len(out) <= MAX_LENGTH else out[: MAX_LENGTH - 1] + "…"
