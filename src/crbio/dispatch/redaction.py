"""Keep patient data out of the reasons kept in the journal and the logs.

Servers echo what they were sent: a registry quotes the patient id, an SMTP server the
recipient (a patient's address is the INS), an operator the patient's name. Every sender
passes the texts it keeps through :func:`redact`, which masks what the delivery's document
says about the patient, then anything that looks like a patient identifier.
"""

from __future__ import annotations

import re
from typing import Final

from crbio.dispatch.delivery import Job, RecipientKind
from crbio.errors import InputError

__all__ = ["redact"]

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
