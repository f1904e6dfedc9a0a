"""The content of the printed report, as blocks: header, identity, request, results, signature.

The ANS asks the PDF to show every element of the CDA header and all the text of its
sections; this module decides what is printed and in which words. Line breaking and
pagination live in :mod:`~crbio.documents.pdf.text` and :mod:`~crbio.documents.pdf.layout`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from crbio.documents.pdf import french
from crbio.documents.pdf.datamatrix import CAPTION, QUIET_ZONE, Symbol
from crbio.documents.pdf.french import COLON
from crbio.documents.pdf.layout import Band, Block, Cell, Row, Spacer
from crbio.documents.pdf.painter import Color, Painter
from crbio.documents.pdf.styles import MM, PAGE, Colors, Styles, styles
from crbio.documents.pdf.text import Span, Style, wrap
from crbio.identifiers import INS_OIDS
from crbio.model import (
    Battery,
    Chapter,
    Code,
    ExecutingLaboratory,
    Isolate,
    Observation,
    ObservationStatus,
    Professional,
    Report,
)
from crbio.model.common import format_date, format_datetime

__all__ = ["DOCUMENT_TITLE", "MODULE", "report_blocks"]

#: The title printed at the top of the report.
DOCUMENT_TITLE = "Compte rendu d\u2019examens biologiques"
#: Side of a Datamatrix module: 0.45 mm, within the 0.4–0.5 mm that scanners read reliably.
MODULE = 0.45 * MM

_WIDTH = PAGE.content_width
_PAD = 3.0  # horizontal padding inside a table cell
_INSET = 6.0  # padding inside a framed box
_LABELS = 128.0  # width of the label column of a framed box
# Results table: (left edge, width) of the analysis, result, flag, reference and previous columns.
_RESULT_COLUMNS = ((0.0, 164.0), (164.0, 96.0), (260.0, 44.0), (304.0, 110.0), (414.0, _WIDTH - 414.0))
_RESULT_HEADINGS = ("Analyse", "Résultat", "", "Valeurs de référence", "Antériorité")
# Antibiogram: antibiotic, value (MIC…), interpretation.
_AB_COLUMNS = ((12.0, 152.0), (164.0, 96.0), (260.0, 154.0))
_AB_HEADINGS = ("Antibiotique", "CMI / résultat", "Interprétation")

_ATTACHED = "Joint au compte rendu électronique (CDA) sous sa forme d\u2019origine."

_Field = tuple[str, Sequence[Span]]
_Decoration = Callable[[Painter, float, float, float], None]


def report_blocks(report: Report, symbol: Symbol | None) -> list[Block]:
    """The report as a flow of blocks, in reading order.

    Args:
        report: The report, with its document resolved.
        symbol: The INS Datamatrix, when the identity is qualified; it is drawn at the
            top right of the identity block, on page 1.
    """
    return _Content(report, styles(), symbol).blocks()


def _paragraph(
    spans: Sequence[Span],
    *,
    x: float = 0.0,
    pad: float = 0.0,
    space_before: float = 0.0,
    space_after: float = 0.0,
    keep: bool = False,
    background: Color | None = None,
    border: Color | None = None,
    continuation: Sequence[Block] = (),
) -> Row:
    """Wrapped text across the page, optionally in a box."""
    width = _WIDTH - x - 2 * pad
    cell = Cell(x + pad, width, tuple(wrap(spans, width)))
    return Row(
        (Band((cell,), pad, pad),),
        _WIDTH,
        background=background,
        border=border,
        space_before=space_before,
        space_after=space_after,
        keep_with_next=keep,
        continuation=continuation,
    )


def _line_band(spans: Sequence[Span], pad_top: float = 0.0, pad_bottom: float = 0.0) -> Band:
    """A band of one full-width cell, indented like table cells."""
    width = _WIDTH - 2 * _PAD
    return Band((Cell(_PAD, width, tuple(wrap(spans, width))),), pad_top, pad_bottom)


def _cell(column: tuple[float, float], spans: Sequence[Span]) -> Cell:
    x, width = column
    inner = width - 2 * _PAD
    return Cell(x + _PAD, inner, tuple(wrap(spans, inner)))


def _lines(style: Style, *texts: str | None, below: bool = False) -> list[Span]:
    """One span with a line for each text given (None and empty texts are skipped).

    With ``below``, the first line starts on a new line (after the spans before it).
    """
    shown = [t for t in texts if t]
    return [Span(("\n" if below else "") + "\n".join(shown), style)] if shown else []


def _professional(professional: Professional) -> str:
    text = f"{professional.name.display()} (RPPS\u00a0{professional.rpps})"
    if professional.organization:
        text += f", {professional.organization}"
    return text


def _executing(lab: ExecutingLaboratory, style: Style) -> list[Span]:
    text = (
        f"Analyse réalisée par {lab.name} (FINESS\u00a0{lab.finess}), le {format_datetime(lab.performed_at)}"
    )
    if lab.biologist is not None:
        text += f"{COLON} biologiste {lab.biologist.name.display()}"
    return [Span(text, style)]


@dataclass
class _Content:
    report: Report
    s: Styles
    symbol: Symbol | None
    flags_used: dict[str, Code] = field(default_factory=dict)

    def blocks(self) -> list[Block]:
        blocks: list[Block] = [
            self.header(),
            *self.mentions(),
            self.identity(),
            *self.representatives(),
            self.request(),
        ]
        for chapter in self.report.chapters:
            blocks += self.chapter(chapter)
        blocks += self.closing()
        return blocks

    # -- page 1: header, mentions, identity, request ---------------------------------------------

    def header(self) -> Block:
        """The laboratory on the left, the document on the right."""
        s, lab, doc = self.s, self.report.laboratory, self.report.document
        details = [
            lab.address.one_line(),
            *(french.telecom_text(t) for t in lab.telecoms),
            f"FINESS{COLON} {lab.finess}",
        ]
        if lab.accreditation:
            details.append(
                f"Accréditation COFRAC n°\u00a0{lab.accreditation}, portée disponible sur www.cofrac.fr"
            )
        left = [Span(lab.name + "\n", s.lab_name), *_lines(s.small, *details)]
        created = f"Édité le {format_datetime(doc.created_at)}" if doc.created_at else None
        versions = f"Lot de versions{COLON} {doc.set_id}" if doc.set_id != doc.id else None
        right = [
            Span(DOCUMENT_TITLE + "\n", s.title),
            *_lines(s.body, created, f"Version {doc.version}"),
            *_lines(s.tiny, f"Identifiant du document{COLON} {doc.id}", versions, below=True),
        ]
        split = _WIDTH * 0.48
        band = Band(
            (
                Cell(0.0, split - 6.0, tuple(wrap(left, split - 6.0))),
                Cell(split, _WIDTH - split, tuple(wrap(right, _WIDTH - split)), "right"),
            ),
            0.0,
            4.0,
        )
        return Row((band,), _WIDTH, rule_below=Colors.BLUE, space_after=6.0)

    def mentions(self) -> list[Block]:
        """What the reader must not miss: an amended report, results not yet validated."""
        s, doc = self.s, self.report.document
        mentions: list[list[Span]] = []
        if doc.replaces:
            mentions.append(
                [
                    Span(
                        f"Version {doc.version} \u2014 Ce compte rendu annule et remplace la version "
                        "précédente.\n",
                        s.alert,
                    ),
                    Span(f"Version remplacée{COLON} {doc.version - 1}, document {doc.replaces}", s.small),
                ]
            )
        if doc.before_validation:
            mentions.append(
                [
                    Span("Résultats transmis avant validation biologique\n", s.alert),
                    Span(f"En raison de l\u2019urgence{COLON} un compte rendu validé suivra.", s.small),
                ]
            )
        return [
            _paragraph(spans, pad=5.0, space_after=6.0, background=Colors.ALERT_BG, border=Colors.ALERT)
            for spans in mentions
        ]

    def box(self, title: str, fields: Iterable[_Field], *, reserved: float = 0.0) -> list[Band]:
        """The bands of a framed box: its title, then a label and a value per field.

        Fields without text are left out. ``reserved`` keeps room on the right (the Datamatrix).
        """
        s = self.s
        value_width = _WIDTH - _INSET - _LABELS - reserved
        title_width = _WIDTH - 2 * _INSET - reserved
        title_cell = Cell(_INSET, title_width, tuple(wrap([Span(title, s.section)], title_width)))
        bands = [Band((title_cell,), 4.0, 1.0)]
        for label, value in fields:
            if not any(span.text for span in value):
                continue
            label_lines = tuple(wrap([Span(label + COLON, s.label)], _LABELS - 8.0))
            label_cell = Cell(_INSET, _LABELS - 8.0, label_lines)
            value_cell = Cell(_INSET + _LABELS, value_width, tuple(wrap(value, value_width)))
            bands.append(Band((label_cell, value_cell), 0.6, 0.6))
        bands.append(Band((), 0.0, 4.0))
        return bands

    def identity(self) -> Block:
        """The patient's identity traits; the INS and its Datamatrix for a qualified identity only."""
        s, patient = self.s, self.report.patient
        body, bold = s.body, s.body_bold
        fields: list[_Field] = [
            ("Nom de naissance", [Span(patient.birth_family_name, bold)]),
            # The list of birth given names, then the first one, as the ANS prints them.
            (
                "Prénom(s) de naissance",
                [
                    Span(patient.birth_given_names + " [", body),
                    Span(patient.first_birth_given_name, bold),
                    Span("]", body),
                ],
            ),
            ("Nom utilisé", [Span(patient.used_family_name or "", body)]),
            ("Prénom utilisé", [Span(patient.used_given_name or "", body)]),
            ("Sexe", [Span(french.sex_label(patient.sex), body)]),
        ]
        if patient.birth_date is not None:
            age = french.age_text(patient, self.age_reference())
            born = format_date(patient.birth_date) + (f" ({age})" if age else "")
            fields.append(("Date de naissance", [Span(born, body)]))
        if patient.birthplace_code:
            code = f"code INSEE {patient.birthplace_code}"
            place = f"{patient.birthplace_name} ({code})" if patient.birthplace_name else code
            fields.append(("Lieu de naissance", [Span(place, body)]))
        ins = patient.qualified_ins
        if ins is not None:
            authority = INS_OIDS.get(ins.oid, ins.oid)
            fields.append(("Matricule INS", [Span(ins.matricule, bold), Span(f" [{authority}]", body)]))
        fields.append(("IPP", [Span(patient.ipp.extension or patient.ipp.root, body)]))
        if patient.address is not None:
            fields.append(("Adresse", [Span(patient.address.one_line(), body)]))
        fields.append(("Contact", _lines(body, *(french.telecom_text(t) for t in patient.telecoms))))

        if self.symbol is None:
            return Row(
                tuple(self.box("Patient", fields)),
                _WIDTH,
                background=Colors.BOX_BG,
                border=Colors.RULE,
                space_after=6.0,
            )
        side = (self.symbol.size + 2 * QUIET_ZONE) * MODULE
        caption = s.caption
        return Row(
            tuple(self.box("Patient", fields, reserved=side + 2 * _INSET)),
            _WIDTH,
            background=Colors.BOX_BG,
            border=Colors.RULE,
            space_after=6.0,
            decorate=self.datamatrix_painter(self.symbol, side),
            min_height=_INSET + side + caption.leading + _INSET,
        )

    def datamatrix_painter(self, symbol: Symbol, side: float) -> _Decoration:
        """Draws the symbol and its caption in the identity block."""
        caption = self.s.caption
        caption_width = caption.width(CAPTION)

        def paint(painter: Painter, x: float, top: float, height: float) -> None:
            # Top right of the identity block, on page 1, as the ANS stylesheets place it.
            left = x + _WIDTH - _INSET - side
            symbol.draw(painter, left, top - _INSET, MODULE)
            baseline = top - _INSET - side - caption.size * 1.1
            painter.text(
                left + (side - caption_width) / 2,
                baseline,
                CAPTION,
                caption.font,
                caption.size,
                caption.color,
            )

        return paint

    def representatives(self) -> list[Block]:
        """The legal representatives (of a minor, of a protected adult)."""
        s, patient = self.s, self.report.patient
        if not patient.legal_representatives:
            return []
        fields: list[_Field] = []
        for representative in patient.legal_representatives:
            name = representative.name
            shown = " ".join(p for p in (name.prefix, name.display()) if p)
            details = [
                representative.address.one_line() if representative.address else None,
                *(french.telecom_text(t) for t in representative.telecoms),
            ]
            value = [Span(shown, s.body_bold), *_lines(s.body, *details, below=True)]
            fields.append(("Représentant légal", value))
        return [
            Row(
                tuple(self.box("Représentant(s) légal(aux)", fields)),
                _WIDTH,
                border=Colors.RULE,
                space_after=6.0,
            )
        ]

    def request(self) -> Block:
        """Prescriber, copies, prescription, encounter and specimens."""
        s, r = self.s, self.report
        body = s.body
        fields: list[_Field] = [
            ("Prescripteur", [Span(_professional(r.prescriber), body)]),
            ("Copie à", _lines(body, *(_professional(p) for p in r.copy_recipients))),
        ]
        prescription = []
        if r.prescribed_at is not None:
            prescription.append(f"le {format_datetime(r.prescribed_at)}")
        if r.order_id is not None:
            prescription.append(f"demande n°\u00a0{r.order_id.extension or r.order_id.root}")
        fields.append(("Prescription", [Span(", ".join(prescription), body)]))
        encounter = r.encounter
        kind = encounter.kind.display or encounter.kind.code
        stay = f"{kind}, le {format_datetime(encounter.start)}"
        if encounter.id is not None:
            stay += f" (n°\u00a0{encounter.id.extension or encounter.id.root})"
        fields.append(("Prise en charge", [Span(stay, body)]))
        specimens = []
        for specimen in r.specimens:
            collected = format_datetime(specimen.collected_at)
            text = f"{self.specimen_name(specimen.key)}{COLON} prélevé le {collected}"
            if specimen.received_at is not None:
                text += f", reçu le {format_datetime(specimen.received_at)}"
            specimens.append(text)
        fields.append(("Échantillon(s)", _lines(body, *specimens)))
        return Row(tuple(self.box("Demande", fields)), _WIDTH, border=Colors.RULE, space_after=4.0)

    # -- results -----------------------------------------------------------------------------------

    def chapter(self, chapter: Chapter) -> list[Block]:
        """A chapter: its title, its batteries and isolates, its comment."""
        s = self.s
        title = _paragraph(
            [Span(chapter.title, s.chapter)],
            pad=3.0,
            space_before=8.0,
            keep=True,
            background=Colors.CHAPTER_BG,
        )
        suite = _paragraph(
            [Span(f"{chapter.title} (suite)", s.chapter)], pad=3.0, keep=True, background=Colors.CHAPTER_BG
        )
        blocks: list[Block] = [title]
        if chapter.batteries:
            header = self.column_header(_RESULT_COLUMNS, _RESULT_HEADINGS)
            blocks.append(header)
            for battery in chapter.batteries:
                blocks += self.battery(battery, (suite, header))
        for isolate in chapter.isolates:
            blocks += self.isolate(isolate, (suite,))
        if chapter.comment:
            blocks.append(self.comment(chapter.comment, space_before=3.0))
        return blocks

    def column_header(self, columns: Sequence[tuple[float, float]], headings: Sequence[str]) -> Row:
        cells = tuple(
            _cell(column, [Span(heading, self.s.column)])
            for column, heading in zip(columns, headings, strict=True)
        )
        return Row((Band(cells, 1.5, 1.5),), _WIDTH, background=Colors.HEADER_BG, keep_with_next=True)

    def battery(self, battery: Battery, continuation: tuple[Block, ...]) -> list[Block]:
        """A battery: its title (specimens, executing laboratory), a row per result, its comment."""
        title = self.group_title(
            [Span(battery.label, self.s.battery)], battery.specimens, battery.performed_by, continuation
        )
        suite = Row(
            (_line_band([Span(f"{battery.label} (suite)", self.s.battery)], 4.0, 1.0),),
            _WIDTH,
            rule_below=Colors.RULE,
            keep_with_next=True,
        )
        rows_continuation = (*continuation, suite)
        blocks: list[Block] = [title]
        blocks += [self.result_row(observation, rows_continuation) for observation in battery.observations]
        if battery.comment:
            blocks.append(self.comment(battery.comment, continuation=rows_continuation))
        return blocks

    def group_title(
        self,
        spans: list[Span],
        specimens: Sequence[str],
        performed_by: str | None,
        continuation: Sequence[Block],
    ) -> Row:
        """The title of a battery or an isolate, with its specimens and executing laboratory."""
        names = [self.specimen_name(key) for key in specimens]
        if names:
            spans = [*spans, Span(" \u2014 " + ", ".join(names), self.s.small)]
        bands = [_line_band(spans, 4.0, 1.0)]
        if performed_by is not None:
            lab = self.report.executing_laboratory(performed_by)
            bands.append(_line_band(_executing(lab, self.s.small), 0.0, 1.0))
        return Row(
            tuple(bands),
            _WIDTH,
            rule_below=Colors.RULE,
            space_before=2.0,
            keep_with_next=True,
            continuation=continuation,
        )

    def specimen_name(self, key: str) -> str:
        specimen = self.report.specimen(key)
        return specimen.label or specimen.type.display or specimen.type.code

    def result_row(self, obs: Observation, continuation: Sequence[Block]) -> Row:
        """One result: analysis and method, value, flag, reference interval, previous results, comment."""
        s = self.s
        label = [Span(obs.label, s.body)]
        if obs.method is not None and obs.method.display:
            label.append(Span(f"\nMéthode{COLON} {obs.method.display}", s.small))
        abnormal = french.is_abnormal(obs.interpretation)
        result: list[Span] = []
        if obs.status is ObservationStatus.ABORTED:
            result = [Span("non réalisé", s.body_bold)]
        elif obs.value is not None:
            result = [Span(obs.value.display(), s.result_abnormal if abnormal else s.body)]
        flag = self.flag(obs.interpretation)
        flag_spans = [Span(flag, s.flag if abnormal else s.body)] if flag else []
        reference = [Span(obs.reference_range.display(), s.body)] if obs.reference_range else []
        previous: list[Span] = []
        for index, earlier in enumerate(obs.previous):
            previous.append(Span(("\n" if index else "") + earlier.value.display(), s.body))
            previous.append(Span(f"\nle {format_date(earlier.time.date())}", s.small))
        columns = _RESULT_COLUMNS
        cells = (
            _cell(columns[0], label),
            _cell(columns[1], result),
            _cell(columns[2], flag_spans),
            _cell(columns[3], reference),
            _cell(columns[4], previous),
        )
        bands = [Band(cells, 1.8, 1.8)]
        if obs.comment:
            bands.append(self.comment_band(obs.comment))
        return Row(tuple(bands), _WIDTH, rule_below=Colors.RULE, continuation=continuation)

    def comment_band(self, text: str) -> Band:
        s = self.s
        x = _PAD + 8.0
        spans = [Span(f"Commentaire{COLON} ", s.small_bold), Span(text, s.small)]
        return Band((Cell(x, _WIDTH - x - _PAD, tuple(wrap(spans, _WIDTH - x - _PAD))),), 0.0, 2.0)

    def comment(self, text: str, *, space_before: float = 1.0, continuation: Sequence[Block] = ()) -> Row:
        return Row((self.comment_band(text),), _WIDTH, space_before=space_before, continuation=continuation)

    def flag(self, interpretation: Code | None) -> str | None:
        """The flag of an interpretation, remembered for the legend."""
        flag = french.interpretation_flag(interpretation)
        if flag is not None and interpretation is not None:
            self.flags_used.setdefault(flag, interpretation)
        return flag

    def isolate(self, isolate: Isolate, continuation: tuple[Block, ...]) -> list[Block]:
        """An isolated organism: its results, then its antibiogram."""
        s = self.s
        title = self.group_title(
            [Span(f"Germe isolé{COLON} {isolate.label}", s.battery)],
            isolate.specimens,
            isolate.performed_by,
            continuation,
        )
        suite = Row(
            (_line_band([Span(f"Germe isolé{COLON} {isolate.label} (suite)", s.battery)], 4.0, 1.0),),
            _WIDTH,
            keep_with_next=True,
        )
        blocks: list[Block] = [title]
        if isolate.observations:
            header = self.column_header(_RESULT_COLUMNS, _RESULT_HEADINGS)
            blocks.append(header)
            blocks += [self.result_row(o, (*continuation, suite, header)) for o in isolate.observations]
        if isolate.antibiogram:
            header = self.column_header(_AB_COLUMNS, _AB_HEADINGS)
            heading = _paragraph([Span("Antibiogramme", s.battery)], x=_PAD, space_before=3.0, keep=True)
            blocks += [heading, header]
            blocks += [self.antibiogram_row(o, (*continuation, suite, header)) for o in isolate.antibiogram]
        if isolate.comment:
            blocks.append(self.comment(isolate.comment, continuation=(*continuation, suite)))
        return blocks

    def antibiogram_row(self, obs: Observation, continuation: Sequence[Block]) -> Row:
        """One antibiotic: its value (MIC, diameter…) and category (Sensible, Intermédiaire, Résistant)."""
        s = self.s
        value: list[Span] = []
        if obs.status is ObservationStatus.ABORTED:
            value = [Span("non réalisé", s.body_bold)]
        elif obs.value is not None:
            value = [Span(obs.value.display(), s.body)]
        interpretation = obs.interpretation
        # The category's display name is the French word (Sensible, Intermédiaire, Résistant…).
        category = (interpretation.display or interpretation.code) if interpretation is not None else ""
        style = s.result_abnormal if french.is_abnormal(interpretation) else s.body
        columns = _AB_COLUMNS
        bands = [
            Band(
                (
                    _cell(columns[0], [Span(obs.label, s.body)]),
                    _cell(columns[1], value),
                    _cell(columns[2], [Span(category, style)]),
                ),
                1.5,
                1.5,
            )
        ]
        if obs.comment:
            bands.append(self.comment_band(obs.comment))
        return Row(tuple(bands), _WIDTH, rule_below=Colors.RULE, continuation=continuation)

    # -- end of the report -------------------------------------------------------------------------

    def closing(self) -> list[Block]:
        """The legend of the flags, the comments, the conclusion and the signature."""
        s, r = self.s, self.report
        blocks: list[Block] = []
        if self.flags_used:
            legend = " \u00b7 ".join(
                f"{flag}{COLON} {code.display or code.code}" for flag, code in self.flags_used.items()
            )
            blocks.append(
                _paragraph(
                    [Span(f"Signalement des résultats{COLON} ", s.small_bold), Span(legend, s.small)],
                    space_before=4.0,
                )
            )
        if r.attachments:
            # The attached documents travel in the CDA only: the PDF says what they are and where.
            blocks.append(self.heading("Documents joints"))
            for attachment in r.attachments:
                text = attachment.title
                if attachment.performed_by is not None:
                    lab = r.executing_laboratory(attachment.performed_by)
                    text += f" \u2014 émis par {lab.name} (FINESS\u00a0{lab.finess})"
                blocks.append(
                    _paragraph(
                        [
                            Span(text + "\n", s.body),
                            Span(_ATTACHED, s.small),
                        ],
                        x=_PAD,
                        space_after=2.0,
                    )
                )
        if r.comments:
            blocks.append(self.heading("Commentaires"))
            blocks += [_paragraph([Span(text, s.body)], x=_PAD, space_after=2.0) for text in r.comments]
        if r.conclusion:
            blocks.append(self.heading("Conclusion"))
            blocks.append(_paragraph([Span(r.conclusion, s.body_bold)], x=_PAD, space_after=2.0))
        blocks += [Spacer(8.0), self.signature()]
        return blocks

    def signature(self) -> Block:
        """Who validated the report and when; results sent before validation say so instead."""
        r = self.report
        biologist = _professional(r.biologist)
        when = format_datetime(r.validated_at)
        if r.document.before_validation:
            text = (
                f"Résultats transmis avant validation biologique, sous la responsabilité de {biologist}, "
                f"le {when}."
            )
        else:
            text = f"Validé par {biologist}, le {when}."
        return _paragraph(
            [Span(text, self.s.body_bold)], pad=5.0, background=Colors.BOX_BG, border=Colors.RULE
        )

    def heading(self, text: str) -> Block:
        return _paragraph([Span(text, self.s.section)], space_before=8.0, space_after=1.0, keep=True)

    def age_reference(self) -> datetime:
        """When the patient's age is given: at the first collection, else at validation."""
        times = [specimen.collected_at for specimen in self.report.specimens]
        return min(times) if times else self.report.validated_at
