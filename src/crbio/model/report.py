"""The validated report, root of the model, and its document metadata."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from crbio.model.actors import ExecutingLaboratory, Laboratory, Professional
from crbio.model.common import Code, InstanceIdentifier
from crbio.model.patient import Patient
from crbio.model.results import Chapter, Observation, Specimen

__all__ = [
    "Attachment",
    "Confidentiality",
    "DocumentInfo",
    "Encounter",
    "Masking",
    "Report",
]


class Confidentiality(StrEnum):
    """HL7 confidentiality of the document (Confidentiality code system 2.16.840.1.113883.5.25)."""

    NORMAL = "N"
    RESTRICTED = "R"
    VERY_RESTRICTED = "V"


@dataclass(frozen=True, slots=True)
class Masking:
    """DMP masking and visibility flags, carried for dispatch (codes of 1.2.250.1.213.1.1.4.13)."""

    masque_ps: bool = False  # MASQUE_PS: hidden from health professionals
    invisible_patient: bool = False  # INVISIBLE_PATIENT: not visible to the patient (yet)
    invisible_representants_legaux: bool = False  # INVISIBLE_REPRESENTANTS_LEGAUX

    def codes(self) -> tuple[str, ...]:
        """The active masking codes, in the DMP's spelling."""
        flags = (
            ("MASQUE_PS", self.masque_ps),
            ("INVISIBLE_PATIENT", self.invisible_patient),
            ("INVISIBLE_REPRESENTANTS_LEGAUX", self.invisible_representants_legaux),
        )
        return tuple(code for code, on in flags if on)


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """Identity and status of the document version being produced.

    ``id`` is the OID of this version (usable as DMP uniqueId); ``set_id`` is shared
    by all versions; ``replaces`` is the id of the version this one replaces.
    ``id`` and ``set_id`` may be None in the input: the builder then assigns them.
    """

    id: str | None = None
    set_id: str | None = None
    version: int = 1
    replaces: str | None = None
    created_at: datetime | None = None  # when None, the builder's clock gives it
    confidentiality: Confidentiality = Confidentiality.NORMAL
    masking: Masking = Masking()
    secret_connection: bool = False  # "connexion secrète" (minor's confidential care)
    before_validation: bool = False  # urgent results sent before biological validation

    @property
    def is_amendment(self) -> bool:
        """Whether this version replaces an earlier one ("annule et remplace")."""
        return self.replaces is not None


@dataclass(frozen=True, slots=True)
class Encounter:
    """The care context: kind of encounter (HL7 ActCode), when it started, its id."""

    kind: Code
    start: datetime
    id: InstanceIdentifier | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A document joined to the report as it was received, such as a subcontractor's PDF report.

    It is written in a CR-BIO section of its own (FR-Resultats-de-laboratoire-de-biologie-de-
    seconde-intention) and named in the PDF rendering. ``performed_by`` is the key of the
    executing laboratory that issued it, when known.
    """

    title: str
    data: bytes
    media_type: str = "application/pdf"
    performed_by: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """A biologically validated report, as handed over by the lab information system (SGL)."""

    document: DocumentInfo
    laboratory: Laboratory
    biologist: Professional
    validated_at: datetime
    patient: Patient
    prescriber: Professional
    encounter: Encounter
    specimens: tuple[Specimen, ...]
    chapters: tuple[Chapter, ...]
    copy_recipients: tuple[Professional, ...] = ()
    executing_laboratories: tuple[ExecutingLaboratory, ...] = ()
    order_id: InstanceIdentifier | None = None
    prescribed_at: datetime | None = None
    conclusion: str | None = None
    comments: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()

    def observations(self) -> Iterator[Observation]:
        """Every result of the report, in document order."""
        for chapter in self.chapters:
            for battery in chapter.batteries:
                yield from battery.observations
            for isolate in chapter.isolates:
                yield from isolate.observations
                yield from isolate.antibiogram

    def specimen(self, key: str) -> Specimen:
        """The specimen with a given local key."""
        return next(s for s in self.specimens if s.key == key)

    def executing_laboratory(self, key: str) -> ExecutingLaboratory:
        """The subcontracted laboratory with a given local key."""
        return next(lab for lab in self.executing_laboratories if lab.key == key)
