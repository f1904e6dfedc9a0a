"""The patient: the INS, the identity traits and the local identifier (IPP)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from crbio.model.common import Address, InstanceIdentifier, PersonName, Telecom

__all__ = [
    "IdentityStatus",
    "Ins",
    "LegalRepresentative",
    "Oppositions",
    "Patient",
    "Sex",
]


class IdentityStatus(StrEnum):
    """Identity status under the RNIV (référentiel national d'identitovigilance)."""

    PROVISIONAL = "PROV"  # identité provisoire
    RETRIEVED = "RECUP"  # identité récupérée (INSi, no ID document check)
    VALIDATED = "VALI"  # identité validée (ID document, no INSi)
    QUALIFIED = "QUAL"  # identité qualifiée (INSi and ID document)


class Sex(StrEnum):
    """Administrative sex (HL7 AdministrativeGender); ``U`` is written as nullFlavor UNK."""

    MALE = "M"
    FEMALE = "F"
    UNKNOWN = "U"


@dataclass(frozen=True, slots=True)
class Ins:
    """The INS matricule (NIR or NIA) and the OID of the authority that assigned it."""

    matricule: str
    oid: str


@dataclass(frozen=True, slots=True)
class LegalRepresentative:
    """A legal representative of a minor or protected patient (CDA ``guardian``)."""

    name: PersonName
    address: Address | None = None
    telecoms: tuple[Telecom, ...] = ()


@dataclass(frozen=True, slots=True)
class Oppositions:
    """The patient's recorded oppositions, carried for dispatch."""

    dmp: bool = False  # opposition to feeding the DMP
    mssante: bool = False  # opposition to sending by MSSanté


@dataclass(frozen=True, slots=True)
class Patient:
    """The patient, identified by the INS when qualified and always by the local IPP.

    The INS traits (birth family name, first birth given name, birth given names, sex,
    birth date, birthplace code) are the ones returned by the INSi téléservice.
    """

    ipp: InstanceIdentifier
    identity_status: IdentityStatus
    birth_family_name: str
    first_birth_given_name: str
    birth_given_names: str
    sex: Sex
    birth_date: date | None
    ins: Ins | None = None
    birthplace_code: str | None = None  # INSEE COG code of the birth commune, 99xxx abroad
    birthplace_name: str | None = None
    used_family_name: str | None = None
    used_given_name: str | None = None
    address: Address | None = None
    telecoms: tuple[Telecom, ...] = ()
    legal_representatives: tuple[LegalRepresentative, ...] = ()
    oppositions: Oppositions = Oppositions()

    @property
    def qualified_ins(self) -> Ins | None:
        """The INS when it may be written (qualified identity), else None."""
        return self.ins if self.identity_status is IdentityStatus.QUALIFIED else None

    @property
    def display_family_name(self) -> str:
        """The family name used in everyday life, falling back to the birth name."""
        return self.used_family_name or self.birth_family_name

    @property
    def display_given_name(self) -> str:
        """The given name used in everyday life, falling back to the first birth given name."""
        return self.used_given_name or self.first_birth_given_name

    def age_at(self, when: datetime | date) -> int | None:
        """Age in whole years at a given time, or None if the birth date is unknown."""
        if self.birth_date is None:
            return None
        day = when.date() if isinstance(when, datetime) else when
        born = self.birth_date
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))

    def is_minor_at(self, when: datetime | date) -> bool:
        """Whether the patient is under 18 at a given time (False if the birth date is unknown)."""
        age = self.age_at(when)
        return age is not None and age < 18
