"""Insert a subcontractor's results into the laboratory's own report.

A laboratory that sends analyses to another one (sous-traitance, second intention) gets their
results back as a CR-BIO CDA and must report them in its own compte rendu, naming the
laboratory that performed them. :func:`merge_subcontracted` reads the incoming CDA
(:mod:`crbio.input.cda`) and inserts its chapters, batteries, isolates and results into the own
report unchanged (values, units, ranges, interpretations as the subcontractor wrote them), each
battery and isolate performed by the subcontractor: it becomes an executing laboratory
(FR-Laboratoire-executant) built from the incoming document's custodian (FINESS, name,
address, telecoms, practice setting), its validating biologist and its validation time.
Results the subcontractor itself had performed elsewhere keep that laboratory.

When the incoming CDA cannot be read structurally (an N1 wrapping a PDF, or results the report
model cannot hold), its PDF is attached to the report instead, in a
FR-Resultats-de-laboratoire-de-biologie-de-seconde-intention section, and the outcome says so
and why. Its header must still be readable: it says whose results they are.

Both documents must be about the same patient: the same qualified INS (and the same birth date
when both give one), or, when one of them has no INS, the same IPP, birth date, sex and birth
family name. Otherwise the merge is refused, with a message that quotes none of these data.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from crbio.errors import InputError
from crbio.input.cda import UNSTRUCTURED_ERROR, Omission, read_cda_document, read_cda_unstructured
from crbio.input.cda_common import BODY_ERROR
from crbio.model import (
    Attachment,
    Battery,
    Chapter,
    ExecutingLaboratory,
    Isolate,
    Laboratory,
    Patient,
    Professional,
    Report,
)

__all__ = ["MergeOutcome", "merge_subcontracted"]

# Reader errors after which the incoming PDF is attached instead of its results.
_FALLBACK_CODES = frozenset({UNSTRUCTURED_ERROR, BODY_ERROR})


@dataclass(frozen=True)
class MergeOutcome:
    """The own report with the subcontractor's results, and how they were inserted.

    Attributes:
        report: The merged report (the own report's document, patient and laboratory).
        laboratory: The subcontractor, as the executing laboratory of what was inserted.
        structured: True when the results were inserted as results; False when the incoming
            document's PDF was attached instead.
        reason: Why the PDF was attached (the reader's message, naming the element); None
            when ``structured``.
        results: How many results were inserted (0 when the PDF was attached).
        omissions: What the reader left out of the incoming document.
    """

    report: Report
    laboratory: ExecutingLaboratory
    structured: bool
    reason: str | None = None
    results: int = 0
    omissions: tuple[Omission, ...] = ()


def merge_subcontracted(own: Report, incoming: bytes | Report, *, label: str) -> MergeOutcome:
    """Insert a subcontractor's results into the laboratory's own report.

    Args:
        own: The laboratory's report.
        incoming: The subcontractor's CR-BIO CDA (bytes: N3 or N1), or its report already read.
        label: A name for the incoming document in messages (its file name).

    Returns:
        The merged report and how the results were inserted (:class:`MergeOutcome`).

    Raises:
        InputError: the incoming document is not a readable CR-BIO header, is about another
            patient, comes from the laboratory itself, holds results not yet validated, was
            validated after the own report, or carries neither readable results nor a PDF.
    """
    if isinstance(incoming, Report):
        return _merge_results(own, incoming, label=label, omissions=())
    try:
        reading = read_cda_document(incoming, label=label, ids="new")
    except InputError as error:
        if error.code not in _FALLBACK_CODES:
            raise
        reason = (
            "it is a CDA R2 N1: a PDF, without structured results"
            if error.code == UNSTRUCTURED_ERROR
            else error.message.removeprefix(f"{label}: ")
        )
        return _attach_pdf(own, incoming, label=label, reason=reason)
    return _merge_results(own, reading.report, label=label, omissions=reading.omissions)


def _merge_results(own: Report, sub: Report, *, label: str, omissions: tuple[Omission, ...]) -> MergeOutcome:
    _check(own, sub.patient, sub.laboratory, sub.validated_at, sub.document.before_validation, label=label)
    lab = _executing(own, sub.laboratory, sub.biologist, sub.validated_at)
    taken = {s.key for s in own.specimens} | {x.key for x in own.executing_laboratories} | {lab.key}
    labs = {
        x.key: dataclasses.replace(x, key=_unique(f"{lab.key}-{x.key}", taken))
        for x in sub.executing_laboratories
    }
    specimens = {
        s.key: dataclasses.replace(s, key=_unique(f"{lab.key}-{s.key}", taken)) for s in sub.specimens
    }

    def performer(key: str | None) -> str:
        # What the subcontractor had performed elsewhere keeps that laboratory.
        return labs[key].key if key is not None else lab.key

    def battery(b: Battery) -> Battery:
        return dataclasses.replace(
            b, specimens=tuple(specimens[k].key for k in b.specimens), performed_by=performer(b.performed_by)
        )

    def isolate(i: Isolate) -> Isolate:
        return dataclasses.replace(
            i, specimens=tuple(specimens[k].key for k in i.specimens), performed_by=performer(i.performed_by)
        )

    chapters = list(own.chapters)
    for chapter in sub.chapters:
        comment = _attributed(lab, chapter.comment)
        incoming = Chapter(
            chapter.code,
            chapter.title,
            tuple(battery(b) for b in chapter.batteries),
            tuple(isolate(i) for i in chapter.isolates),
            comment,
        )
        at = next((n for n, c in enumerate(chapters) if _same_code(c, chapter)), None)
        if at is None:
            chapters.append(incoming)
            continue
        # The same specialty in both reports: one chapter, the subcontractor's results after the own.
        mine = chapters[at]
        chapters[at] = dataclasses.replace(
            mine,
            batteries=mine.batteries + incoming.batteries,
            isolates=mine.isolates + incoming.isolates,
            comment="\n".join(c for c in (mine.comment, comment) if c) or None,
        )
    comments = [*own.comments, *(c for c in (_attributed(lab, c) for c in sub.comments) if c)]
    if sub.conclusion:
        comments.append(f"Conclusion ({lab.name})\u00a0: {sub.conclusion}")
    attachments = tuple(
        dataclasses.replace(a, performed_by=performer(a.performed_by)) for a in sub.attachments
    )
    report = dataclasses.replace(
        own,
        specimens=own.specimens + tuple(specimens.values()),
        executing_laboratories=(*own.executing_laboratories, lab, *labs.values()),
        chapters=tuple(chapters),
        comments=tuple(comments),
        attachments=own.attachments + attachments,
    )
    return MergeOutcome(
        report, lab, structured=True, results=sum(1 for _ in sub.observations()), omissions=omissions
    )


def _attach_pdf(own: Report, data: bytes, *, label: str, reason: str) -> MergeOutcome:
    unstructured = read_cda_unstructured(data, label=label)
    header = unstructured.header
    _check(own, header.patient, header.laboratory, header.validated_at, header.before_validation, label=label)
    if unstructured.pdf is None:
        raise InputError(
            f"{label}: its results cannot be read ({reason}) and it carries no PDF to attach",
            code="input.merge.no-pdf",
        )
    lab = _executing(own, header.laboratory, header.biologist, header.validated_at)
    attachment = Attachment(
        title=f"Compte rendu transmis par {lab.name}",
        data=unstructured.pdf,
        media_type="application/pdf",
        performed_by=lab.key,
    )
    report = dataclasses.replace(
        own,
        executing_laboratories=(*own.executing_laboratories, lab),
        attachments=(*own.attachments, attachment),
    )
    return MergeOutcome(report, lab, structured=False, reason=reason)


# -- checks -------------------------------------------------------------------------------------


def _check(
    own: Report,
    patient: Patient,
    laboratory: Laboratory,
    validated_at: datetime,
    before_validation: bool,
    *,
    label: str,
) -> None:
    """Refuse what must not be merged: another patient, the lab itself, unvalidated or later results."""
    reason = _patient_mismatch(own.patient, patient)
    if reason is not None:
        raise InputError(
            f"{label}: the incoming document is not about the patient of the report ({reason})",
            code="input.merge.patient",
        )
    if laboratory.finess == own.laboratory.finess:
        raise InputError(
            f"{label}: the incoming document comes from this laboratory (same FINESS), not from a "
            "subcontractor",
            code="input.merge.same-laboratory",
        )
    if before_validation:
        raise InputError(
            f"{label}: its results were sent before biological validation: only validated results "
            "are merged into a report",
            code="input.merge.not-validated",
        )
    if validated_at > own.validated_at:
        # The report's validation covers what it reports: it cannot come before the results.
        raise InputError(
            f"{label}: the subcontractor validated its results after the report's validation time: "
            "the report's validation (validated_at) must come after them",
            code="input.merge.chronology",
        )


def _patient_mismatch(a: Patient, b: Patient) -> str | None:
    """Why two patients cannot be taken as the same person, or None; never quotes their data."""
    if a.qualified_ins is not None and b.qualified_ins is not None:
        if (a.qualified_ins.matricule, a.qualified_ins.oid) != (
            b.qualified_ins.matricule,
            b.qualified_ins.oid,
        ):
            return "the INS differ"
        if a.birth_date is not None and b.birth_date is not None and a.birth_date != b.birth_date:
            return "same INS but the birth dates differ"
        return None
    # Without an INS on both sides, the local identifier and the birth data must all agree.
    if a.ipp != b.ipp:
        return "no INS on both sides, and the IPP differ"
    if a.birth_date is None or a.birth_date != b.birth_date:
        return "no INS on both sides, and the birth dates differ or are unknown"
    if a.sex != b.sex:
        return "no INS on both sides, and the sexes differ"
    if _folded(a.birth_family_name) != _folded(b.birth_family_name):
        return "no INS on both sides, and the birth family names differ"
    return None


def _folded(name: str) -> str:
    """A name compared without case, accents or punctuation (INSi spelling vs. everyday spelling)."""
    letters = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return "".join(c for c in letters.upper() if c.isalnum())


# -- building blocks ----------------------------------------------------------------------------


def _executing(
    own: Report, laboratory: Laboratory, biologist: Professional, validated_at: datetime
) -> ExecutingLaboratory:
    """The subcontractor as an executing laboratory of the own report, under a key of its own."""
    taken = {x.key for x in own.executing_laboratories} | {s.key for s in own.specimens}
    return ExecutingLaboratory(
        key=_unique(f"ST-{laboratory.finess}", taken),
        finess=laboratory.finess,
        name=laboratory.name,
        performed_at=validated_at,
        biologist=biologist,
        address=laboratory.address,
        telecoms=laboratory.telecoms,
        practice_setting=laboratory.practice_setting,
    )


def _unique(key: str, taken: set[str]) -> str:
    candidate, n = key, 1
    while candidate in taken:
        n += 1
        candidate = f"{key}-{n}"
    taken.add(candidate)
    return candidate


def _same_code(a: Chapter, b: Chapter) -> bool:
    return (a.code.code, a.code.system) == (b.code.code, b.code.system)


def _attributed(lab: ExecutingLaboratory, comment: str | None) -> str | None:
    """A comment of the subcontractor, saying whose it is once in the lab's report."""
    return f"{lab.name}\u00a0: {comment}" if comment else None
