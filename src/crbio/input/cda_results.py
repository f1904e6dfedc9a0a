"""The body of a CR-BIO CDA N3 read into the report model: chapters, results, specimens, labs.

The entries are read, not the narrative: a rebuilt document writes its narrative again from the
model. What the model holds is read the same way in the 2021.01, 2023.01 and 2024.01 volets
(their entries share the IHE PaLM templates):

- FR-CR-BIO-Chapitre sections → chapters; their entries directly, or those of their
  FR-CR-BIO-Sous-Chapitre sections, → batteries and isolates; a sub-chapter with text only
  goes into the chapter's comment;
- in each FR-Resultats-examens-de-biologie-medicale act: FR-Laboratoire-executant performers
  (on the act or an organizer) → executing laboratories; FR-Prelevement procedures →
  specimens; FR-Batterie organizers → batteries; observations placed directly in the act →
  one battery; FR-Isolat-microbiologique organizers → isolates (their FR-Batterie of code
  18769-0 is the antibiogram); comment acts → the comment of the battery, isolate or chapter
  they belong to;
- results: code (LOINC, else the local translation), value (PQ, IVL_PQ, CD/CE/CV/CO/CS, ST,
  RTO, and REAL/INT, ED as text, which the model holds as a dimensionless PQ and as text),
  status, interpretation, method, reference range, comment, previous results (REFR);
- FR-Commentaire-non-code sections → the report's comments (crbio's own "Conclusion" and
  "Commentaire : <chapter>" sections go back to the conclusion and the chapter comment);
- FR-Resultats-de-laboratoire-de-biologie-de-seconde-intention sections → attachments;
  FR-Document-PDF-copie → the PDF copy (a rebuilt document renders its own).

A result the model cannot hold (an observation value of another type, a PDF value…) refuses
the document with an :class:`~crbio.errors.InputError` naming the element. What the model
does not hold around the results (illustrative images, a secondary unit given as a PQ
translation, other sections, observation participants…) is recorded as an omission.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree

from crbio.codes import LOINC_OID, SNOMED_OID, check_loinc, check_ucum, lookup
from crbio.input.cda_common import Reading, child, children, has_template, local_name, squeeze
from crbio.model import (
    Attachment,
    Battery,
    Chapter,
    Code,
    CodedValue,
    ExecutingLaboratory,
    InstanceIdentifier,
    IntervalValue,
    Isolate,
    Observation,
    ObservationStatus,
    PreviousResult,
    Professional,
    Quantity,
    RatioValue,
    ReferenceRange,
    Specimen,
    TextValue,
    Value,
)

__all__ = ["Body", "pdf_of", "read_body"]

CHAPTER = "1.3.6.1.4.1.19376.1.3.3.2.1"
SUB_CHAPTER = "1.3.6.1.4.1.19376.1.3.3.2.2"
COMMENT_SECTIONS = ("1.2.250.1.213.1.1.2.73", "1.3.6.1.4.1.19376.1.4.1.2.16")
PDF_COPY = "1.2.250.1.213.1.1.2.243"
SECOND_INTENTION = "1.2.250.1.213.1.1.2.60"
RESULTS_ACT = "1.3.6.1.4.1.19376.1.3.1"
SPECIMEN_COLLECTION = "1.3.6.1.4.1.19376.1.3.1.2"
SPECIMEN_RECEIVED = "1.3.6.1.4.1.19376.1.3.1.3"
BATTERY = "1.3.6.1.4.1.19376.1.3.1.4"
ISOLATE = "1.3.6.1.4.1.19376.1.3.1.5"
LAB_OBSERVATION = "1.3.6.1.4.1.19376.1.3.1.6"
EXECUTING_LAB = "1.3.6.1.4.1.19376.1.3.3.1.7"
COMMENT_ENTRY = "1.3.6.1.4.1.19376.1.5.3.1.4.2"
ATTACHED_DOCUMENT = "1.2.250.1.213.1.1.3.18"
ANTIBIOGRAM = "18769-0"
COMMENT_CODE = "48767-8"

_CODED_TYPES = frozenset({"CD", "CE", "CV", "CO", "CS"})
_RATIO_TYPES = frozenset({"RTO", "RTO_PQ_PQ", "RTO_INT_INT", "RTO_QTY_QTY", "RTO_MO_PQ"})
_STATUSES = {
    "completed": ObservationStatus.COMPLETED,
    "active": ObservationStatus.COMPLETED,  # results sent before validation: a document flag
    "aborted": ObservationStatus.ABORTED,
    "cancelled": ObservationStatus.ABORTED,
}
# crbio's own notices, regenerated from the document's flags: not read back as comments.
_CRBIO_NOTICES = (
    "Ce compte rendu annule et remplace la version",
    "Résultats transmis avant validation biologique",
)


@dataclass
class Body:
    """What the body of a CR-BIO holds, as the report model holds it."""

    chapters: list[Chapter] = field(default_factory=list)
    specimens: list[Specimen] = field(default_factory=list)
    executing_laboratories: list[ExecutingLaboratory] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    conclusion: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    pdf: bytes | None = None
    before_validation: bool = False


def read_body(reading: Reading, *, default_time: datetime) -> Body:
    """Read the structured body of the ClinicalDocument ``reading`` walks.

    ``default_time`` (the validation time) dates a result, isolate or specimen reception the
    document leaves undated.

    Raises:
        InputError: a result the model cannot hold, or a malformed entry (code
            ``input.cda.body``); the message names the element, never its content.
    """
    body = child(reading.root, "component", "structuredBody")
    if body is None:
        reading.fail(reading.root, "has no structuredBody")
    return _BodyReader(reading, default_time).read(body)


def pdf_of(reading: Reading) -> bytes | None:
    """The PDF a CR-BIO carries: the N1's body, else the N3's FR-Document-PDF-copie, else None."""
    text = child(reading.root, "component", "nonXMLBody", "text")
    if text is not None:
        return _decode(reading, text) if text.get("representation") == "B64" else None
    body = child(reading.root, "component", "structuredBody")
    for component in children(body, "component") if body is not None else []:
        section = child(component, "section")
        if section is not None and has_template(section, PDF_COPY):
            media = section.find(".//{*}observationMedia/{*}value")
            if media is not None and media.get("representation") == "B64":
                return _decode(reading, media)
    return None


def _decode(reading: Reading, node: etree._Element) -> bytes:
    try:
        return base64.b64decode("".join((node.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        reading.fail(node, "is not valid base64")


@dataclass
class _Act:
    """What one results act gives: batteries and isolates in order, and comments on the whole act."""

    items: list[Battery | Isolate] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


class _BodyReader:
    def __init__(self, reading: Reading, default_time: datetime) -> None:
        self.r = reading
        self.default_time = default_time
        self.result = Body()

    def read(self, body: etree._Element) -> Body:
        for component in children(body, "component"):
            section = child(component, "section")
            if section is None:
                self.r.omit(component, "a body component without a section")
                continue
            if has_template(section, CHAPTER):
                self.result.chapters.append(self.chapter(section))
            elif has_template(section, PDF_COPY):
                self.result.pdf = pdf_of(self.r)
            elif has_template(section, SECOND_INTENTION):
                self.result.attachments += self.attachments(section)
            elif has_template(section, *COMMENT_SECTIONS):
                self.comment_section(section)
            else:
                roots = ", ".join(t.get("root", "") for t in children(section, "templateId")) or "none"
                self.r.omit(section, f"a section the report model does not hold (templateId {roots})")
        return self.result

    # -- sections ---------------------------------------------------------------------------------

    def chapter(self, section: etree._Element) -> Chapter:
        code = self.r.code(child(section, "code"))
        if code is None:
            self.r.fail(section, "a chapter section needs a code")
        title = self.title(section) or code.display or code.code
        batteries: list[Battery] = []
        isolates: list[Isolate] = []
        notes: list[str] = []

        def take(act: _Act) -> None:
            for item in act.items:
                if isinstance(item, Battery):
                    batteries.append(item)
                else:
                    isolates.append(item)
            notes.extend(act.comments)

        for entry in children(section, "entry"):
            take(self.entry(entry, code, None))
        for component in children(section, "component"):
            sub = child(component, "section")
            if sub is None or not has_template(sub, SUB_CHAPTER):
                self.r.omit(component, "a sub-section that is not a FR-CR-BIO-Sous-Chapitre")
                continue
            entries = children(sub, "entry")
            if not entries:
                # A sub-chapter of narrative only: its text is kept as part of the chapter's comment.
                text = self.r.narrative(child(sub, "text"))
                if text:
                    heading = self.title(sub)
                    notes.append(f"{heading}\u00a0: {text}" if heading else text)
                continue
            # The sub-chapter's title names what its one entry holds (crbio writes a battery's label there).
            named = self.title(sub) if len(entries) == 1 else None
            for entry in entries:
                take(self.entry(entry, code, named))
        if not batteries and not isolates:
            self.r.fail(section, "a chapter section holds no result entry")
        return Chapter(
            code=code,
            title=title,
            batteries=tuple(batteries),
            isolates=tuple(isolates),
            comment="\n".join(notes) or None,
        )

    def title(self, section: etree._Element) -> str:
        node = child(section, "title")
        return squeeze("".join(node.itertext())) if node is not None else ""

    def comment_section(self, section: etree._Element) -> None:
        title = self.title(section)
        text = child(section, "text")
        paragraphs = (
            [squeeze("".join(p.itertext())) for p in children(text, "paragraph")] if text is not None else []
        )
        paragraphs = [p for p in paragraphs if p] or ([t] if (t := self.r.narrative(text)) else [])
        if not paragraphs:
            return
        result = self.result
        chapter = result.chapters[-1] if result.chapters else None
        if title == "Avertissement" and all(p.startswith(_CRBIO_NOTICES) for p in paragraphs):
            return  # crbio's notices: the rebuilt document writes them again from its flags
        if title == "Commentaires":
            result.comments += paragraphs
        elif title == "Conclusion" and result.conclusion is None:
            result.conclusion = "\n".join(paragraphs)
        elif chapter is not None and title == f"Commentaire : {chapter.title}" and chapter.comment is None:
            result.chapters[-1] = dataclasses.replace(chapter, comment="\n".join(paragraphs))
        else:
            text_of = " ".join(paragraphs)
            result.comments.append(f"{title}\u00a0: {text_of}" if title else text_of)

    def attachments(self, section: etree._Element) -> list[Attachment]:
        title = self.title(section) or "Document joint"
        found = []
        for organizer in section.iterfind(".//{*}organizer"):
            if not has_template(organizer, ATTACHED_DOCUMENT):
                continue
            for media in organizer.iterfind("{*}component/{*}observationMedia/{*}value"):
                if media.get("representation") != "B64" or not media.get("mediaType"):
                    self.r.fail(media, "an attached document must be B64 with a mediaType")
                found.append(Attachment(title, _decode(self.r, media), media.get("mediaType", "")))
        if not found:
            self.r.omit(section, "a second-intention results section without an attached document")
        return found

    # -- entries ----------------------------------------------------------------------------------

    def entry(self, entry: etree._Element, chapter_code: Code, section_title: str | None) -> _Act:
        act = child(entry, "act")
        if act is None or not (has_template(entry, RESULTS_ACT) or has_template(act, RESULTS_ACT)):
            self.r.omit(entry, "an entry that is not a FR-Resultats-examens-de-biologie-medicale act")
            return _Act()
        status = child(act, "statusCode")
        if status is not None and status.get("code") == "active":
            self.result.before_validation = True
        act_code = self.r.code(child(act, "code"))
        lab = self.performer(act)
        specimens: list[str] = []
        for relationship in children(act, "entryRelationship"):
            procedure = child(relationship, "procedure")
            if procedure is not None and has_template(procedure, SPECIMEN_COLLECTION):
                key = self.specimen(procedure)
                if key is not None and key not in specimens:
                    specimens.append(key)
        result = _Act()
        named: set[int] = set()  # the batteries whose organizer names them (code/originalText)
        loose: list[Observation] = []
        loose_at: int | None = None
        time = self.r.time(child(act, "effectiveTime")) or self.default_time
        for relationship in children(act, "entryRelationship"):
            target = next((n for n in relationship if local_name(n) not in ("", "sequenceNumber")), None)
            if target is None:
                continue
            kind = local_name(target)
            if kind == "procedure" and has_template(target, SPECIMEN_COLLECTION):
                continue
            if kind == "organizer" and has_template(target, ISOLATE):
                isolate = self.isolate(target, time, tuple(specimens), lab)
                if isolate is not None:
                    result.items.append(isolate)
            elif kind == "organizer" and (
                has_template(target, BATTERY) or target.get("classCode") == "BATTERY"
            ):
                battery, has_name = self.battery(target, chapter_code, time, tuple(specimens), lab)
                if has_name:
                    named.add(len(result.items))
                result.items.append(battery)
            elif kind == "observation" and has_template(target, LAB_OBSERVATION):
                if loose_at is None:
                    loose_at = len(result.items)
                loose.append(self.observation(target, time))
            elif kind == "act" and self.is_comment(target):
                result.comments.append(self.r.narrative(child(target, "text")))
            else:
                self.r.omit(target, f"an entry of kind {kind} the report model does not hold")
        if loose:
            battery_code = self.battery_code(child(act, "code"), chapter_code)
            label = (
                section_title
                or (act_code.display if act_code else None)
                or chapter_code.display
                or "Résultats"
            )
            if battery_code is not None and battery_code.display is None:
                battery_code = dataclasses.replace(battery_code, display=label)
            assert loose_at is not None
            result.items.insert(
                loose_at,
                Battery(
                    label=label,
                    observations=tuple(loose),
                    code=battery_code,
                    specimens=tuple(specimens),
                    performed_by=lab,
                ),
            )
        elif section_title and len(result.items) == 1 and isinstance(result.items[0], Battery) and not named:
            # The sub-chapter's title names its one battery (crbio writes the battery label there).
            result.items[0] = dataclasses.replace(result.items[0], label=section_title)
        comments = [c for c in result.comments if c]
        if comments and len(result.items) == 1:
            # A comment on an act of one battery or isolate is that battery's or isolate's comment.
            only_item = result.items[0]
            text = "\n".join([*([only_item.comment] if only_item.comment else []), *comments])
            result.items[0] = dataclasses.replace(only_item, comment=text)
            comments = []
        result.comments = comments
        return result

    @staticmethod
    def is_comment(node: etree._Element) -> bool:
        code = child(node, "code")
        return local_name(node) == "act" and (
            has_template(node, COMMENT_ENTRY) or (code is not None and code.get("code") == COMMENT_CODE)
        )

    def battery_code(self, node: etree._Element | None, chapter_code: Code) -> Code | None:
        """A battery's LOINC code; None when it is the chapter's own code or not LOINC."""
        code = self.r.code(node)
        if code is None or (code.code == chapter_code.code and code.system == chapter_code.system):
            return None
        if code.system != LOINC_OID:
            assert node is not None
            self.r.omit(node, "a battery code outside LOINC (the battery keeps its label)")
            return None
        reason = check_loinc(code.code)
        if reason:
            assert node is not None
            self.r.fail(node, f"LOINC code {reason}")
        return Code(code.code, LOINC_OID, code.display, "LOINC")

    def battery(
        self,
        organizer: etree._Element,
        chapter_code: Code,
        time: datetime,
        specimens: tuple[str, ...],
        lab: str | None,
    ) -> tuple[Battery, bool]:
        """A FR-Batterie organizer, and whether the organizer's code names it in the narrative."""
        code_node = child(organizer, "code")
        code = self.battery_code(code_node, chapter_code)
        label = self.r.narrative(child(code_node, "originalText")) if code_node is not None else ""
        has_name = bool(label)
        if not label and code_node is not None:
            label = code_node.get("displayName") or next(
                (
                    t.get("displayName", "")
                    for t in children(code_node, "translation")
                    if t.get("displayName")
                ),
                "",
            )
        lab = self.performer(organizer) or lab
        time = self.r.time(child(organizer, "effectiveTime")) or time
        observations: list[Observation] = []
        comments: list[str] = []
        for kind, target in _members(organizer):
            if kind == "observation" and has_template(target, LAB_OBSERVATION):
                observations.append(self.observation(target, time))
            elif kind == "act" and self.is_comment(target):
                comments.append(self.r.narrative(child(target, "text")))
            elif kind == "organizer" and has_template(target, BATTERY):
                self.r.omit(target, "a battery inside a battery: its results join the outer battery")
                observations += [
                    self.observation(o, time)
                    for o in target.iterfind("{*}component/{*}observation")
                    if has_template(o, LAB_OBSERVATION)
                ]
            elif kind == "observationMedia":
                self.r.omit(target, "an illustrative image (the report model holds no images)")
            else:
                self.r.omit(target, f"a battery component of kind {kind} the report model does not hold")
        if not observations:
            self.r.fail(organizer, "a battery holds no result")
        label = label or (code.display if code else None) or chapter_code.display or "Résultats"
        if code is not None and code.display is None:
            code = dataclasses.replace(code, display=label)  # a LOINC code is written with a display name
        battery = Battery(
            label=label,
            observations=tuple(observations),
            code=code,
            specimens=specimens,
            performed_by=lab,
            comment="\n".join(c for c in comments if c) or None,
        )
        return battery, has_name

    def isolate(
        self, organizer: etree._Element, time: datetime, specimens: tuple[str, ...], lab: str | None
    ) -> Isolate | None:
        organism_node = child(organizer, "specimen", "specimenRole", "specimenPlayingEntity", "code")
        organism = self.r.code(organism_node)
        if organism is None or organism_node is None:
            self.r.fail(organizer, "an isolate needs a coded organism (specimenPlayingEntity/code)")
        if organism.system != SNOMED_OID:
            self.r.fail(
                organism_node, f"an isolate's organism is coded in SNOMED CT ({SNOMED_OID}) in the model"
            )
        label = self.r.narrative(child(organism_node, "originalText")) or organism.display or organism.code
        if children(organism_node, "translation"):
            self.r.omit(organism_node, "the organism's translations (the model holds its main code)")
        lab = self.performer(organizer) or lab
        own_time = self.r.time(child(organizer, "effectiveTime"))
        observations: list[Observation] = []
        antibiogram: list[Observation] = []
        comments: list[str] = []
        for kind, target in _members(organizer):
            if kind == "observation" and has_template(target, LAB_OBSERVATION):
                observations.append(self.observation(target, own_time or time))
            elif kind == "organizer" and has_template(target, BATTERY):
                code = child(target, "code")
                into = antibiogram if code is not None and code.get("code") == ANTIBIOGRAM else observations
                if into is observations:
                    self.r.omit(target, "a battery of an isolate other than its antibiogram: results kept")
                into += [
                    self.observation(o, own_time or time)
                    for o in target.iterfind("{*}component/{*}observation")
                    if has_template(o, LAB_OBSERVATION)
                ]
            elif kind == "act" and self.is_comment(target):
                comments.append(self.r.narrative(child(target, "text")))
            elif kind == "observationMedia":
                self.r.omit(target, "an illustrative image (the report model holds no images)")
            else:
                self.r.omit(target, f"an isolate component of kind {kind} the report model does not hold")
        if not observations and not antibiogram:
            self.r.omit(organizer, "an isolate without results (the model needs results or an antibiogram)")
            return None
        first = (observations or antibiogram)[0]
        return Isolate(
            organism=organism,
            label=label,
            time=own_time or first.time,
            observations=tuple(observations),
            antibiogram=tuple(antibiogram),
            specimens=specimens,
            performed_by=lab,
            comment="\n".join(c for c in comments if c) or None,
        )

    # -- specimens and executing laboratories -----------------------------------------------------

    def specimen(self, procedure: etree._Element) -> str | None:
        """The key of the specimen a FR-Prelevement procedure describes, or None if the model cannot hold it.

        The same specimen, met in several acts, gets one key.
        """
        role = child(procedure, "participant", "participantRole")
        for participant in children(procedure, "participant"):
            if participant.get("typeCode") == "PRD":
                role = child(participant, "participantRole")
        type_node = child(role, "playingEntity", "code")
        id_node = child(role, "id")
        specimen_type = self.r.code(type_node)
        if specimen_type is not None and specimen_type.display is None:
            # The type is written with a display name: the HL7 table's, else the code itself.
            listed = lookup("specimen_type", specimen_type.code)
            shown = listed.display if listed is not None and listed.system == specimen_type.system else None
            specimen_type = dataclasses.replace(specimen_type, display=shown or specimen_type.code)
        collected = self.r.time(child(procedure, "effectiveTime"))
        if specimen_type is None or collected is None:
            self.r.omit(
                procedure, "a specimen without a coded type or a collection time (the model needs both)"
            )
            return None
        received = None
        for relationship in children(procedure, "entryRelationship"):
            act = child(relationship, "act")
            if act is not None and has_template(act, SPECIMEN_RECEIVED):
                received = self.r.time(child(act, "effectiveTime"))
        label = self.r.narrative(child(type_node, "originalText")) or None
        specimen = Specimen(
            key="",
            type=specimen_type,
            collected_at=collected,
            received_at=received,
            label=label if label != specimen_type.display else None,
            procedure=self.r.code(child(procedure, "code")),
            identifier=(
                InstanceIdentifier(self.r.uid(id_node, "root"), id_node.get("extension") or None)
                if id_node is not None and id_node.get("root")
                else None
            ),
        )
        for known in self.result.specimens:
            if _same(known, specimen):
                return known.key
        key = f"S{len(self.result.specimens) + 1}"
        self.result.specimens.append(dataclasses.replace(specimen, key=key))
        return key

    def performer(self, node: etree._Element) -> str | None:
        """The key of the executing laboratory a FR-Laboratoire-executant performer names, or None."""
        for performer in children(node, "performer"):
            if not has_template(performer, EXECUTING_LAB):
                continue
            entity = child(performer, "assignedEntity")
            organization = child(entity, "representedOrganization")
            if entity is None or organization is None:
                self.r.fail(performer, "an executing laboratory needs assignedEntity/representedOrganization")
            finess = self.r.finess(organization)
            name_node = child(organization, "name")
            name = squeeze("".join(name_node.itertext())) if name_node is not None else ""
            performed_at = self.r.time(child(performer, "time"))
            if finess is None or not name or performed_at is None:
                self.r.fail(performer, "an executing laboratory needs a FINESS identifier, a name and a time")
            rpps = self.r.rpps(entity)
            name_of_person = self.r.person_name(child(entity, "assignedPerson", "name"))
            biologist = (
                Professional(
                    rpps=rpps,
                    name=name_of_person,
                    specialty=self.r.code(child(entity, "code")),
                    address=self.r.address(child(entity, "addr")),
                    telecoms=self.r.telecoms(entity),
                )
                if rpps and name_of_person
                else None
            )
            lab = ExecutingLaboratory(
                key="",
                finess=finess,
                name=name,
                performed_at=performed_at,
                biologist=biologist,
                address=self.r.address(child(organization, "addr")) or self.r.address(child(entity, "addr")),
                telecoms=self.r.telecoms(organization) or self.r.telecoms(entity),
                practice_setting=self.r.code(child(organization, "standardIndustryClassCode")),
            )
            for known in self.result.executing_laboratories:
                if _same_lab(known, lab):
                    return known.key
            key = f"L{len(self.result.executing_laboratories) + 1}"
            self.result.executing_laboratories.append(dataclasses.replace(lab, key=key))
            return key
        return None

    # -- results ----------------------------------------------------------------------------------

    def observation(self, node: etree._Element, default_time: datetime) -> Observation:
        code_node = child(node, "code")
        if code_node is None:
            self.r.fail(node, "a result needs a code")
        code = self.r.code(code_node)
        translation = self.r.code(child(code_node, "translation"))
        loinc = None
        local = translation
        if code is not None and code.system == LOINC_OID:
            reason = check_loinc(code.code)
            if reason:
                self.r.fail(code_node, f"LOINC code {reason}")
            loinc = Code(code.code, LOINC_OID, code.display, "LOINC")
        elif code is not None:
            # A code of another system is the laboratory's code: the model holds it as the local code.
            local = code
            if translation is not None:
                self.r.omit(code_node, "a translation of a code outside LOINC")
        if loinc is None and local is None:
            self.r.fail(code_node, "a result needs a LOINC code or a local code (translation)")
        label = (
            self.r.narrative(child(code_node, "originalText"))
            or (loinc.display if loinc else None)
            or (local.display if local else None)
            or (loinc or local).code  # type: ignore[union-attr]
        )
        if loinc is not None and loinc.display is None:
            # A LOINC code is written with a display name: the result's label stands in for a missing one.
            loinc = dataclasses.replace(loinc, display=label)
        status_node = child(node, "statusCode")
        status_code = status_node.get("code", "completed") if status_node is not None else "completed"
        if status_code not in _STATUSES:
            assert status_node is not None
            self.r.fail(status_node, f"a result status {status_code!r} the report model does not hold")
        if status_code == "active":
            self.result.before_validation = True
        value_node = child(node, "value")
        value = self.value(value_node) if value_node is not None else None
        interpretations = children(node, "interpretationCode")
        for extra in interpretations[1:]:
            self.r.omit(extra, "a second interpretation (the model holds one)")
        method_node = child(node, "methodCode")
        method = None
        if method_node is not None:
            method_text = self.r.narrative(child(method_node, "originalText"))
            display = method_text or method_node.get("displayName") or method_node.get("code")
            if display:
                method = Code(method_node.get("code", ""), method_node.get("codeSystem", ""), display)
        comments: list[str] = []
        previous: list[PreviousResult] = []
        for relationship in children(node, "entryRelationship"):
            target = next((n for n in relationship if local_name(n) not in ("", "sequenceNumber")), None)
            if target is None:
                continue
            if self.is_comment(target):
                comments.append(self.r.narrative(child(target, "text")))
            elif local_name(target) == "observation" and relationship.get("typeCode") == "REFR":
                earlier = child(target, "value")
                # An earlier result is context, not this report's result: one badly dated is left out.
                when = self.r.time(child(target, "effectiveTime"), lenient=True)
                if earlier is None or when is None:
                    self.r.omit(target, "a previous result without a value or a valid time")
                    continue
                earlier_value = self.value(earlier)
                if earlier_value is None:
                    self.r.omit(target, "a previous result without a value")
                    continue
                previous.append(PreviousResult(earlier_value, when))
            else:
                self.r.omit(target, "an entryRelationship of a result the report model does not hold")
        for other in node:
            if local_name(other) in ("participant", "specimen", "performer", "author", "subject"):
                self.r.omit(other, f"a result's {local_name(other)} (the report model does not hold it)")
        return Observation(
            label=label,
            time=self.r.time(child(node, "effectiveTime")) or default_time,
            code=loinc,
            local_code=local,
            value=value,
            reference_range=self.reference_range(node),
            interpretation=self.r.code(interpretations[0]) if interpretations else None,
            method=method,
            status=_STATUSES[status_code],
            comment="\n".join(c for c in comments if c) or None,
            previous=tuple(previous),
        )

    def quantity(self, node: etree._Element) -> Quantity:
        unit = node.get("unit") or "1"
        reason = check_ucum(unit)
        if reason:
            self.r.fail(node, f"@unit {reason}")
        if children(node, "translation"):
            self.r.omit(node, "a value in a secondary unit (PQ translation): the main unit is kept")
        return Quantity(self.r.decimal(node), unit)

    def value(self, node: etree._Element) -> Value | None:
        """An observation value as the model holds it; refuses a type the model cannot hold."""
        if node.get("nullFlavor") and not len(node) and not node.get("value"):
            return None
        kind = self.r.xsi_type(node)
        if kind == "PQ":
            return self.quantity(node)
        if kind in ("REAL", "INT"):
            self.r.omit(node, f"a {kind} value, written again as a dimensionless PQ (same number)")
            return Quantity(self.r.decimal(node), "1")
        if kind == "IVL_PQ":
            low, high = child(node, "low"), child(node, "high")
            if child(node, "center") is not None or child(node, "width") is not None:
                self.r.fail(node, "an IVL_PQ value with center or width: the report model cannot hold it")
            low = low if low is not None and not low.get("nullFlavor") else None
            high = high if high is not None and not high.get("nullFlavor") else None
            if low is None and high is None:
                self.r.fail(node, "an IVL_PQ value without bounds")
            return IntervalValue(
                low=self.quantity(low) if low is not None else None,
                high=self.quantity(high) if high is not None else None,
                low_inclusive=low is None or low.get("inclusive", "true") != "false",
                high_inclusive=high is None or high.get("inclusive", "true") != "false",
            )
        if kind in _CODED_TYPES:
            code = self.r.code(node)
            text = self.r.narrative(child(node, "originalText")) or (
                code.display or code.code if code else ""
            )
            if not text:
                self.r.fail(node, "a coded value with neither a code nor a text")
            return CodedValue(text=text, code=Code(code.code, code.system, code.display) if code else None)
        if kind == "ST":
            return TextValue(squeeze("".join(node.itertext())))
        if kind == "ED":
            if node.get("representation") == "B64" or node.get("mediaType", "text/plain") != "text/plain":
                self.r.fail(node, "an ED value that is not plain text: the report model cannot hold it")
            self.r.omit(node, "an ED text value, written again as ST (same text)")
            return TextValue(squeeze("".join(node.itertext())))
        if kind in _RATIO_TYPES:
            numerator, denominator = child(node, "numerator"), child(node, "denominator")
            if numerator is None or denominator is None:
                self.r.fail(node, "a ratio needs a numerator and a denominator")
            for term in (numerator, denominator):
                if term.get("unit") not in (None, "1"):
                    self.r.fail(term, "a ratio of quantities with units: the report model cannot hold it")
            den = self.r.decimal(denominator)
            if den == 0:
                self.r.fail(denominator, "a ratio's denominator must not be zero")
            return RatioValue(self.r.decimal(numerator), den)
        self.r.fail(node, f"a value of type {kind or 'unknown'}: the report model cannot hold it")

    def reference_range(self, node: etree._Element) -> ReferenceRange | None:
        ranges = children(node, "referenceRange")
        if not ranges:
            return None
        for extra in ranges[1:]:
            self.r.omit(extra, "a second reference range (the model holds one)")
        observation_range = child(ranges[0], "observationRange")
        if observation_range is None:
            return None
        text = self.r.narrative(child(observation_range, "text")) or None
        value = child(observation_range, "value")
        low = high = None
        if value is not None and self.r.xsi_type(value) == "IVL_PQ":
            low_node, high_node = child(value, "low"), child(value, "high")
            if low_node is not None and low_node.get("value"):
                low = self.quantity(low_node)
            if high_node is not None and high_node.get("value"):
                high = self.quantity(high_node)
        elif value is not None:
            shown = squeeze("".join(value.itertext())) or value.get("displayName") or value.get("value")
            text = text or shown or None
            self.r.omit(value, "a reference range that is not an IVL_PQ, kept as its text")
        if low is None and high is None and text is None:
            return None
        return ReferenceRange(low=low, high=high, text=text)


def _same(a: Specimen, b: Specimen) -> bool:
    return dataclasses.replace(a, key="") == dataclasses.replace(b, key="")


def _same_lab(a: ExecutingLaboratory, b: ExecutingLaboratory) -> bool:
    return dataclasses.replace(a, key="") == dataclasses.replace(b, key="")


def _members(organizer: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """What an organizer's components hold, each with its local name (``observation``, ``act``…)."""
    for component in children(organizer, "component"):
        target = next((n for n in component if local_name(n) not in ("", "sequenceNumber")), None)
        if target is not None:
            yield local_name(target), target
