"""The per-result CDA fragments written in Python: escaping as the templates', exact text, valid documents.

The byte-for-byte equality with the former Jinja macros is held by tests/test_sample_outputs.py
(every sample's N3 is compared with samples/output); these tests cover what the samples do
not: hostile text, and a result using every optional part at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import pytest
from markupsafe import Markup, escape

import crbio
from crbio.documents.cda.fragments import _x, code, observation_rows, observation_xml, value_xml
from crbio.model import (
    Code,
    CodedValue,
    IntervalValue,
    Observation,
    PreviousResult,
    Quantity,
    RatioValue,
    ReferenceRange,
    Report,
    TextValue,
)

LOINC = "2.16.840.1.113883.6.1"
T = datetime.fromisoformat("2024-01-04T10:12:00+01:00")


@pytest.mark.parametrize(
    "value",
    ["plain", "a & b < c > d \" e ' f", "&amp;", "<script>", Decimal("1.50"), None, 12, Markup("<b>x</b>")],
)
def test_escaping_is_jinjas(value: object) -> None:
    assert _x(value) == str(escape(value))


def test_values_by_type() -> None:
    assert (
        value_xml(Quantity(Decimal("4.89"), "mmol/L"))
        == '<value xsi:type="PQ" value="4.89" unit="mmol/L"/>\n'
    )
    assert value_xml(Quantity(Decimal("12"))) == '<value xsi:type="PQ" value="12"/>\n'
    assert value_xml(IntervalValue(high=Quantity(Decimal("0.5"), "g/L"), high_inclusive=False)) == (
        '<value xsi:type="IVL_PQ">\n  <high value="0.5" unit="g/L" inclusive="false"/>\n</value>\n'
    )
    coded = CodedValue("Positif <fort>", Code("10828004", "2.16.840.1.113883.6.96", "Positif"))
    assert value_xml(coded, "c1-b1-o1-v") == (
        '<value xsi:type="CD" code="10828004" displayName="Positif" codeSystem="2.16.840.1.113883.6.96">\n'
        '  <originalText><reference value="#c1-b1-o1-v"/></originalText>\n</value>\n'
    )
    assert value_xml(coded) == (
        '<value xsi:type="CD" code="10828004" displayName="Positif" codeSystem="2.16.840.1.113883.6.96">\n'
        "  <originalText>Positif &lt;fort&gt;</originalText>\n</value>\n"
    )
    assert value_xml(TextValue("A & B")) == '<value xsi:type="ST">A &amp; B</value>\n'
    assert value_xml(RatioValue(Decimal("1"), Decimal("2.5"))) == (
        '<value xsi:type="RTO">\n  <numerator xsi:type="INT" value="1"/>\n'
        '  <denominator xsi:type="REAL" value="2.5"/>\n</value>\n'
    )
    assert code(Code("H", "2.16.840.1.113883.5.83", "Haut"), "interpretationCode") == (
        '<interpretationCode code="H" displayName="Haut" codeSystem="2.16.840.1.113883.5.83"/>'
    )


def _everything() -> Observation:
    """A result with every optional part: LOINC and local codes, uncoded method, comment, history."""
    return Observation(
        label='Glucose "à jeun" & <contrôle>',
        time=T,
        code=Code("14749-6", LOINC, "Glucose [Moles/Volume] Sérum/Plasma ; Numérique"),
        local_code=Code("GLY", "1.2.250.1.999.1.1.1", None),
        value=Quantity(Decimal("7.10"), "mmol/L"),
        reference_range=ReferenceRange(
            Quantity(Decimal("3.89"), "mmol/L"), Quantity(Decimal("6.00"), "mmol/L"), "3,89 à 6,00 à jeun"
        ),
        interpretation=Code("H", "2.16.840.1.113883.5.83", "Haut"),
        method=Code("", "1.2.250.1.213.2.3.5", "Hexokinase & G6PDH"),
        comment="Contrôle à 'refaire' <urgent>",
        previous=(
            PreviousResult(
                Quantity(Decimal("6.80"), "mmol/L"), datetime.fromisoformat("2023-06-12T08:15:00+02:00")
            ),
            PreviousResult(CodedValue("élevé"), datetime.fromisoformat("2022-06-12T08:15:00+02:00")),
        ),
    )


def test_a_result_with_every_part_is_escaped_and_complete() -> None:
    entry = observation_xml(_everything(), "c1-b1-o1")
    assert '<translation code="GLY" displayName="Glucose &#34;à jeun&#34; &amp; &lt;contrôle&gt;"' in entry
    assert '<methodCode>\n    <originalText><reference value="#c1-b1-o1-m"/>' in entry
    assert '<text><reference value="#c1-b1-o1-c"/></text>' in entry
    assert entry.count('<entryRelationship typeCode="REFR">') == 2
    assert "<originalText>élevé</originalText>" in entry
    assert "<text>3,89 à 6,00 à jeun</text>" in entry
    assert entry.startswith('<observation classCode="OBS" moodCode="EVN">\n') and entry.endswith(
        "</observation>"
    )
    rows = observation_rows(_everything(), "c1-b1-o1", ["range", "interpretation", "previous"])
    assert '<content ID="c1-b1-o1-v" styleCode="Bold">7,10\u00a0mmol/L</content>' in rows
    assert "6,80\u00a0mmol/L (12/06/2023)<br/>élevé (12/06/2022)" in rows
    assert (
        '<td colspan="5"><content ID="c1-b1-o1-c" styleCode="Italics">'
        "Contrôle à &#39;refaire&#39; &lt;urgent&gt;" in rows
    )


def test_a_document_using_every_part_validates(sample_report: Callable[[str], Report]) -> None:
    report = sample_report("01-biochimie.json")
    chapter = report.chapters[0]
    battery = dataclasses.replace(
        chapter.batteries[0], observations=(_everything(), *chapter.batteries[0].observations)
    )
    report = dataclasses.replace(
        report,
        chapters=(
            dataclasses.replace(chapter, batteries=(battery, *chapter.batteries[1:])),
            *report.chapters[1:],
        ),
    )
    documents = crbio.build(report)  # the official XSD and crbio's rules, or ValidationFailed
    assert b"Hexokinase &amp; G6PDH" in documents.n3


def test_remembered_timestamps_keep_each_offset_and_type() -> None:
    from datetime import UTC, date, timedelta, timezone

    from crbio._hl7 import hl7_ts
    from crbio.documents.cda.fragments import timestamp

    paris = datetime(2024, 1, 4, 16, 5, tzinfo=timezone(timedelta(hours=1)))
    utc = paris.astimezone(UTC)
    assert paris == utc  # equal instants: a cache keyed on the value alone would mix them up
    for value in (paris, utc, paris, date(2024, 1, 4), datetime(2024, 1, 4), utc, None):
        assert timestamp(value) == hl7_ts(value)
    assert timestamp(paris) == "20240104160500+0100"
    assert timestamp(utc) == "20240104150500+0000"
