"""The people and organisations a CR-Bio names: laboratories and health professionals."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from crbio.model.common import Address, Code, PersonName, Telecom

__all__ = [
    "ExecutingLaboratory",
    "Laboratory",
    "Professional",
]


@dataclass(frozen=True, slots=True)
class Professional:
    """A health professional identified by RPPS: biologist, prescriber or copy recipient."""

    rpps: str
    name: PersonName
    specialty: Code | None = None  # TRE_R38 profession/specialty (1.2.250.1.213.1.1.4.5)
    address: Address | None = None
    telecoms: tuple[Telecom, ...] = ()
    mssante: str | None = None  # MSSanté mailbox address
    organization: str | None = None  # name of the structure the professional works in


@dataclass(frozen=True, slots=True)
class Laboratory:
    """The laboratory that issues the report (FINESS) and the OID root it assigns ids under."""

    finess: str
    name: str
    address: Address
    telecoms: tuple[Telecom, ...]
    oid: str  # OID root of the laboratory's own identifiers (documents, requests…)
    practice_setting: Code  # TRE_A01 cadre d'exercice: AMBULATOIRE / ETABLISSEMENT
    facility_type: Code  # TRE_R02 modalité d'exercice, SA25 for a medical biology laboratory
    accreditation: str | None = None  # COFRAC accreditation number
    stylesheet: str | None = None  # href of the lab's own XSL stylesheet, if any


@dataclass(frozen=True, slots=True)
class ExecutingLaboratory:
    """A subcontracted laboratory that performed part of the analyses.

    ``key`` is the local reference batteries and isolates use to point at it.
    """

    key: str
    finess: str
    name: str
    performed_at: datetime
    biologist: Professional | None = None
    address: Address | None = None
    telecoms: tuple[Telecom, ...] = ()
    practice_setting: Code | None = None
