# ruff: noqa: E501  (value lists of the generators are kept one per line of data)
"""Hypothesis strategies for the fuzz tests: crbio JSON reports, HL7 v2 ORU^R01 messages, CR-BIO CDAs.

Each family has a *valid-shaped* generator (built from the JSON Schema's shapes and the model's
rules: LOINC check digits, UCUM units, INS keys, RPPS/FINESS Luhn keys, the ANS value sets, a
coherent chronology) and *mutations* of it (missing, extra and wrong-typed fields, out-of-range
values, unicode junk, control characters, huge strings; segment/field/component damage, other
delimiters, other character sets, MLLP framing; removed/duplicated/altered elements and
attributes, garbage bytes). Every generated input comes with the patient data it holds
(:class:`Secrets`), which no error message or log line may quote.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from lxml import etree
from stdnum import luhn

from crbio.codes import check_ucum
from crbio.codes.terminology import value_set
from crbio.identifiers import INS_OIDS, ins_key
from crbio.input.hl7v2 import SECTION_CHAPTERS

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
HL7_FIXTURES = ROOT / "tests" / "fixtures" / "hl7"
ANS_EXAMPLES = ROOT.parent / "shared" / "ans-kit" / "ExemplesCDA"
HL7_NS = "urn:hl7-org:v3"

# --- patient data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """The patient data an input holds: names, INS matricule, birth date (in its written forms)."""

    values: tuple[str, ...]

    @staticmethod
    def of(*candidates: object) -> Secrets:
        """The candidates that are distinctive enough to be searched for in a message."""
        found: list[str] = []
        for value in candidates:
            if isinstance(value, date):
                found += [value.isoformat(), value.strftime("%Y%m%d")]
            elif isinstance(value, str):
                # Short or common strings (a one-letter given name, "PAT") would match by chance.
                for part in {value, *value.split(" ")}:
                    part = part.strip()
                    if len(part) >= 6 and not part.isdigit() or (part.isdigit() and len(part) >= 8):
                        found.append(part)
        return Secrets(tuple(sorted(set(found))))

    def leaked(self, text: str) -> list[str]:
        """The secrets quoted by ``text``, as written (a generated upper-case name is not a word)."""
        return [s for s in self.values if s in text]


# --- codes and identifiers ----------------------------------------------------------------------


def with_luhn(body: str) -> str:
    """``body`` followed by its Luhn check digit."""
    return body + luhn.calc_check_digit(body)


loinc_codes = st.integers(1, 9_999_999).map(lambda n: f"{n}-{luhn.calc_check_digit(str(n))}")
#: Real LOINC codes of the samples, for the ANS-kit sample (its schematrons know some codes).
REAL_LOINC = ("14749-6", "2951-2", "2823-3", "2075-0", "14682-9", "62238-1", "718-7", "6690-2", "777-3")
CHAPTER_CODES = tuple(sorted({c.code: c.title for c in SECTION_CHAPTERS.values()}.items()))
rpps_numbers = st.from_regex(r"[0-9]{10}", fullmatch=True).map(with_luhn)
finess_numbers = st.from_regex(r"(?:0[1-9]|[1-8][0-9]|9[0-5])[0-9]{6}", fullmatch=True).map(with_luhn)
oids = st.lists(st.integers(0, 10**6), min_size=1, max_size=6).map(
    lambda arcs: "1.2.250.1.999." + ".".join(map(str, arcs))
)

_UNIT_CANDIDATES = (
    "mmol/L", "g/L", "10*9/L", "10*12/L", "%", "[IU]/L", "umol/L", "mg/L", "fL", "pg", "s", "U/L",
    "g/dL", "mm/h", "[pH]", "mm[Hg]", "mL/min/{1.73_m2}", "mmol/mol", "nmol/L", "ng/mL", "mU/L", "kg",
)  # fmt: skip


@cache
def ucum_units() -> tuple[str, ...]:
    """Units crbio's own UCUM check accepts (checked, not assumed)."""
    return tuple(u for u in _UNIT_CANDIDATES if check_ucum(u) is None)


def concepts(name: str) -> st.SearchStrategy[str]:
    """A code of one of the ANS value sets crbio checks (``specimen_type``, ``interpretation``…)."""
    return st.sampled_from(sorted(value_set(name)["concepts"]))


@st.composite
def ins_matricules(draw: st.DrawFn, sex: str, born: date) -> str:
    """An INS matricule (NIR layout) with a valid key, consistent with sex and birth date."""
    department = draw(st.sampled_from(["75", "92", "69", "2A", "2B", "13", "99"]))
    body = f"{1 if sex == 'M' else 2}{born:%y%m}{department}{draw(st.integers(1, 999)):03d}{draw(st.integers(1, 999)):03d}"
    return f"{body}{ins_key(body):02d}"


# --- text -------------------------------------------------------------------------------------

_FRENCH = (
    "Glycémie à jeun", "Hémoglobine glyquée", "Contrôle à prévoir d'ici 3 mois.", "Œdème ; « résultat » — voir",
    "Sérologie VIH 1/2 (Ag p24)", "Taux < 5 & > 2", "Ÿ l'ß ÆØÅ µmol/L", "Résultat: négatif",
)  # fmt: skip

#: Names as INSi returns them (capitals, hyphen, apostrophe, space), built rather than filtered.
_LETTERS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=8)
insi_given = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=6, max_size=12)
insi_names = st.builds(
    lambda head, joint, tail: head + joint + tail,
    _LETTERS,
    st.sampled_from(["", "-", "'", " ", "-D'"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=8),
)

#: Any character, control characters and non-characters included (what a buggy SGL may send).
junk_text = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), min_size=1, max_size=40
) | st.sampled_from(
    [
        "\x00", "\x1b[31m", "a\x0cb", "\ud800", "\udfff", "\ufffe", "\uffff", "\u202e\u202d",
        "e\u0301" * 30, "\U0001f9ea\U0001f489", "\t\n\r", " ", "", "\u00a0", "\u2028", "\\", "<![CDATA[",
        "</section>", "&amp;", "]]>", "%PDF-1.4", "${jndi:x}", "\x7f\x80\x9f", "\u200b" * 5,
    ]
)  # fmt: skip
nice_text = st.sampled_from(_FRENCH) | st.builds(
    lambda letter, rest: letter + rest,
    st.sampled_from("AbÉç9"),
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x17F, exclude_categories=("Cs", "Cc")),
        max_size=59,
    ),
)
short_texts = nice_text | st.builds(lambda junk, letter: junk + letter, junk_text, st.sampled_from("aZ9é"))


# --- times ------------------------------------------------------------------------------------

_OFFSETS = [
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(0),
    timedelta(hours=-5),
    timedelta(hours=5, minutes=30),
]


def rfc3339(moment: datetime, style: int = 0) -> str:
    """A date-time as crbio JSON writes it, in one of the accepted spellings."""
    text = moment.isoformat(timespec="seconds" if style != 2 else "milliseconds")
    if style == 1 and moment.utcoffset() == timedelta(0):
        text = text[:-6] + "Z"
    return text


moments = st.builds(
    lambda base, offset: base.replace(tzinfo=timezone(offset)),
    st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 12, 31)),
    st.sampled_from(_OFFSETS),
).map(lambda d: d.replace(microsecond=0))


# --- valid-shaped JSON reports -----------------------------------------------------------------


#: JDV_J246 (Titre-CISIS): the titles the ANS kit accepts in a professional's name suffix.
J246_TITLES = ("DR", "MC", "MG", "PC", "PG", "PR")


def _name(draw: st.DrawFn, texts: st.SearchStrategy[str], titles: Sequence[str]) -> dict[str, Any]:
    name: dict[str, Any] = {"family": draw(texts)}
    if draw(st.booleans()):
        name["given"] = [draw(texts)]  # one: the CI-SIS header templates hold one given name
    if draw(st.booleans()):
        name["suffix"] = draw(st.sampled_from(titles))
    return name


def _address(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> dict[str, Any]:
    if draw(st.booleans()):
        address: dict[str, Any] = {"lines": draw(st.lists(texts, min_size=1, max_size=3))}
    else:
        address = {"house_number": str(draw(st.integers(1, 999))), "street_name": draw(texts)}
    address["postal_code"] = draw(st.from_regex(r"[0-9]{5}", fullmatch=True))
    address["city"] = draw(texts)
    if draw(st.booleans()):
        address["country"] = "France"
    return address


def _telecoms(draw: st.DrawFn, min_size: int = 0) -> list[Any]:
    one = st.from_regex(r"tel:\+33[1-9][0-9]{8}", fullmatch=True) | st.builds(
        lambda v, u: {"value": v, "use": u},
        st.from_regex(r"(?:tel|fax):\+33[1-9][0-9]{8}", fullmatch=True)
        | st.just("mailto:secretariat@labo.example.fr"),
        st.sampled_from(["WP", "H", "MC", "EC"]),
    )
    return draw(st.lists(one, min_size=min_size, max_size=2))


def _professional(
    draw: st.DrawFn, texts: st.SearchStrategy[str], titles: Sequence[str], *, specialty: bool
) -> dict[str, Any]:
    person: dict[str, Any] = {"rpps": draw(rpps_numbers), "name": _name(draw, texts, titles)}
    if specialty or draw(st.booleans()):
        person["specialty"] = draw(concepts("specialty"))
    if draw(st.booleans()):
        person["address"] = _address(draw, texts)
    if draw(st.booleans()):
        person["telecom"] = _telecoms(draw)
    if draw(st.booleans()):
        person["mssante"] = "dr.example@medecin.mssante.fr"
    return person


def _decimal(draw: st.DrawFn) -> Any:
    number = draw(
        st.decimals(min_value=-(10**6), max_value=10**6, places=draw(st.integers(0, 4)), allow_nan=False)
    )
    return str(number) if draw(st.booleans()) else number


def _quantity(draw: st.DrawFn, unit: str) -> dict[str, Any]:
    q: dict[str, Any] = {"value": _decimal(draw)}
    if unit != "1" or draw(st.booleans()):
        q["unit"] = unit
    return q


def _value(draw: st.DrawFn, texts: st.SearchStrategy[str], unit: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["quantity", "quantity", "coded", "text", "ratio", "interval"]))
    if kind == "quantity":
        value = {"type": "quantity", **_quantity(draw, unit)}
        if draw(st.integers(0, 4)) == 0:
            value["comparator"] = draw(st.sampled_from(["<", "<=", ">", ">="]))
        return value
    if kind == "coded":
        value = {"type": "coded", "text": draw(texts)}
        if draw(st.booleans()):
            value |= {
                "code": draw(st.sampled_from(["10828004", "260385009", "POS"])),
                "system": "2.16.840.1.113883.6.96",
            }
        return value
    if kind == "text":
        return {"type": "text", "text": draw(texts)}
    if kind == "ratio":
        return {
            "type": "ratio",
            "numerator": draw(st.integers(1, 10)),
            "denominator": draw(st.integers(1, 1024)),
        }
    low = draw(st.decimals(min_value=0, max_value=100, places=1))
    high = low + draw(st.decimals(min_value=0, max_value=100, places=1))
    value = {"type": "interval"}
    if draw(st.booleans()):
        value["low"] = {"value": str(low), "unit": unit}
    if draw(st.booleans()) or "low" not in value:
        value["high"] = {"value": str(high), "unit": unit}
    return value


def _observation(draw: st.DrawFn, texts: st.SearchStrategy[str], validated: datetime) -> dict[str, Any]:
    unit = draw(st.sampled_from(ucum_units()))
    obs: dict[str, Any] = {"label": draw(texts)}
    obs["loinc"] = draw(loinc_codes | st.sampled_from(REAL_LOINC))
    if draw(st.integers(0, 5)) == 0:
        obs["local_code"] = {
            "code": draw(st.from_regex(r"[A-Z0-9]{2,8}", fullmatch=True)),
            "system": draw(oids),
        }
    if draw(st.integers(0, 8)) == 0:
        obs["status"] = "aborted"
    else:
        obs["value"] = _value(draw, texts, unit)
    if draw(st.booleans()):
        low = draw(st.decimals(min_value=0, max_value=1000, places=2))
        obs["reference_range"] = {
            "low": str(low),
            "high": str(low + draw(st.decimals(min_value=0, max_value=1000, places=2))),
        }
    if draw(st.booleans()):
        obs["interpretation"] = draw(concepts("interpretation"))
    if draw(st.integers(0, 3)) == 0:
        obs["comment"] = draw(texts)
    if draw(st.integers(0, 3)) == 0:
        obs["time"] = rfc3339(validated - timedelta(minutes=draw(st.integers(0, 600))))
    if draw(st.integers(0, 5)) == 0:
        obs["method"] = {"display": draw(texts)}
    if draw(st.integers(0, 5)) == 0 and obs.get("value", {}).get("type") == "quantity":
        obs["previous"] = [
            {
                "value": {"type": "quantity", "value": "1.5", "unit": unit},
                "time": rfc3339(validated - timedelta(days=30)),
            }
        ]
    return obs


@st.composite
def reports(
    draw: st.DrawFn, texts: st.SearchStrategy[str] | None = None, *, ans_subset: bool = False
) -> tuple[dict[str, Any], Secrets]:
    """A valid-shaped crbio JSON report built from scratch, and the patient data it holds.

    ``texts`` draws the free texts (labels, names of professionals, comments): by default French
    texts mixed with unicode junk (control characters, non-characters), which must be refused.
    ``ans_subset`` keeps to sex M or F for the ANS-kit sample (U is covered by its own test).
    """
    titles = J246_TITLES
    texts = texts if texts is not None else short_texts
    validated = draw(moments)
    status = draw(st.sampled_from(["QUAL", "QUAL", "VALI", "PROV", "RECUP"]))
    sex = draw(st.sampled_from(["M", "F"] if status == "QUAL" or ans_subset else ["M", "F", "U"]))
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=validated.date() - timedelta(days=1)))
    first = draw(insi_given)
    others = draw(st.lists(insi_given, max_size=2))
    family = draw(insi_names)
    patient: dict[str, Any] = {
        "identity_status": status,
        "birth_family_name": family,
        "first_birth_given_name": first,
        "birth_given_names": " ".join([first, *others]),
        "sex": sex,
        "ipp": {"root": draw(oids), "extension": draw(st.from_regex(r"[0-9]{6,12}", fullmatch=True))},
    }
    secret_values: list[object] = [family, first, *others, born]
    patient["birth_date"] = born.isoformat()  # required: an INS trait the volet wants even without an INS
    if status == "QUAL" or ans_subset or draw(st.booleans()):
        patient["birthplace_code"] = draw(st.from_regex(r"(?:[0-9]{2}|2A|2B)[0-9]{3}", fullmatch=True))
    if status == "QUAL":
        matricule = draw(ins_matricules(sex, born))
        patient["ins"] = {"matricule": matricule, "oid": draw(st.sampled_from(sorted(INS_OIDS)))}
        secret_values.append(matricule)
    if draw(st.booleans()):
        used = draw(insi_names)
        patient["used_family_name"] = used
        secret_values.append(used)
    if draw(st.booleans()):
        patient["address"] = _address(draw, texts)
    if draw(st.booleans()):
        patient["telecom"] = _telecoms(draw)
    if draw(st.integers(0, 4)) == 0:
        patient["oppositions"] = {"dmp": draw(st.booleans()), "mssante": draw(st.booleans())}

    specimens = []
    for i in range(draw(st.integers(1, 3))):
        collected = validated - timedelta(minutes=draw(st.integers(60, 10_000)))
        specimen = {
            "id": f"S{i + 1}",
            "type": draw(concepts("specimen_type")),
            "collected_at": rfc3339(collected, draw(st.integers(0, 2))),
        }
        if draw(st.booleans()):
            specimen["received_at"] = rfc3339(collected + timedelta(minutes=draw(st.integers(0, 59))))
        if draw(st.booleans()):
            specimen["label"] = draw(texts)
        specimens.append(specimen)
    chapters = []
    for _ in range(draw(st.integers(1, 3))):
        code, title = draw(st.sampled_from(CHAPTER_CODES))
        batteries = []
        for _ in range(draw(st.integers(1, 3))):
            battery: dict[str, Any] = {
                "label": draw(texts),
                "observations": [
                    _observation(draw, texts, validated) for _ in range(draw(st.integers(1, 4)))
                ],
                "specimens": [draw(st.sampled_from([s["id"] for s in specimens]))],
            }
            if draw(st.booleans()):
                battery["loinc"] = draw(loinc_codes)
            if draw(st.integers(0, 3)) == 0:
                battery["comment"] = draw(texts)
            batteries.append(battery)
        chapter = {"code": code, "title": draw(st.just(title) | texts), "batteries": batteries}
        if draw(st.integers(0, 3)) == 0:
            chapter["comment"] = draw(texts)
        chapters.append(chapter)

    document: dict[str, Any] = {"confidentiality": draw(st.sampled_from(["N", "N", "R", "V"]))}
    if draw(st.booleans()):
        document["created_at"] = rfc3339(
            validated + timedelta(minutes=draw(st.integers(0, 120))), draw(st.integers(0, 2))
        )
    if draw(st.booleans()):
        doc_id = draw(oids)
        document |= {"id": doc_id, "set_id": doc_id + ".0", "version": 1}
        if draw(st.integers(0, 3)) == 0:
            document |= {"id": doc_id + ".2", "version": 2, "replaces": doc_id + ".1"}
    if draw(st.integers(0, 3)) == 0:
        document["masking"] = {
            k: draw(st.booleans())
            for k in ("masque_ps", "invisible_patient", "invisible_representants_legaux")
        }
    if draw(st.integers(0, 5)) == 0:
        document["before_validation"] = True
    report: dict[str, Any] = {
        "format": "crbio.report/1",
        "document": document,
        "laboratory": {
            "finess": draw(finess_numbers),
            "name": draw(texts),
            "address": _address(draw, texts),
            "telecom": _telecoms(draw, min_size=1),
            "oid": draw(oids),
            "practice_setting": draw(concepts("practice_setting")),
            "facility_type": draw(concepts("facility_type")),
        },
        "biologist": _professional(draw, texts, titles, specialty=True),
        "validated_at": rfc3339(validated, draw(st.integers(0, 2))),
        "patient": patient,
        "prescriber": _professional(draw, texts, titles, specialty=False),
        "specimens": specimens,
        "chapters": chapters,
    }
    if draw(st.booleans()):
        # SS is in crbio's value set (JDV_EncompassingEncounterCode) but not in the kit's JDV_J142.
        kinds = concepts("encounter").filter(lambda k: k != "SS") if ans_subset else concepts("encounter")
        report["encounter"] = {"kind": draw(kinds), "start": specimens[0]["collected_at"]}
    if draw(st.booleans()):
        report["order_id"] = {"root": draw(oids), "extension": "CMD-" + str(draw(st.integers(1, 10**6)))}
    if draw(st.booleans()):
        report["conclusion"] = draw(texts)
    if draw(st.integers(0, 3)) == 0:
        report["copy_recipients"] = [_professional(draw, texts, titles, specialty=False)]
    return report, Secrets.of(*secret_values)


@cache
def sample_reports() -> tuple[tuple[str, dict[str, Any]], ...]:
    """The bundled sample reports, decoded (decimals kept as written)."""
    return tuple(
        (p.name, json.loads(p.read_text("utf-8"), parse_float=Decimal))
        for p in sorted(SAMPLES.glob("*.json"))
    )


def _report_secrets(report: Any) -> Secrets:
    patient = report.get("patient") if isinstance(report, dict) else None
    if not isinstance(patient, dict):
        return Secrets(())
    values: list[object] = []
    for key in (
        "birth_family_name",
        "first_birth_given_name",
        "birth_given_names",
        "used_family_name",
        "used_given_name",
        "birth_date",
    ):
        value = patient.get(key)
        if isinstance(value, str):
            values.append(value)
            if key == "birth_date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                values.append(value.replace("-", ""))
    ins = patient.get("ins")
    if isinstance(ins, dict) and isinstance(ins.get("matricule"), str):
        values.append(ins["matricule"])
    return Secrets.of(*values)


samples = st.sampled_from(range(14)).map(
    lambda i: copy.deepcopy(sample_reports()[i % len(sample_reports())][1])
)
valid_shaped_reports = reports() | samples.map(lambda r: (r, _report_secrets(r)))


# --- JSON mutations --------------------------------------------------------------------------------


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _get(node: Any, path: Sequence[Any]) -> Any:
    for step in path:
        node = node[step]
    return node


wrong_values = st.sampled_from(
    [None, True, False, 0, -1, 1, 2**63, -(2**63), 10**40, 1.5, 1e308, -0.0, "", " ", "x", [], {}, [None], {"": ""},
     Decimal("1E+999"), Decimal("-1E-999"), "NaN", "Infinity", "-0", "00.10", "1e5", "0x1F", "1,5", "١٢٣"]
) | junk_text | st.integers() | st.floats(allow_nan=True, allow_infinity=True)  # fmt: skip
out_of_range = st.sampled_from(
    ["2024-02-30T10:00:00+01:00", "2024-13-01T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00",
     "2024-01-04T25:61:61+01:00", "2024-01-04T10:00:00+24:00", "2024-01-04T10:00:00", "2024-01-04",
     "1900-01-01", "2100-01-01", "2024-02-29", "2023-02-29", "1-1-1", "999999999999-01-01",
     "279035121518988", "279035121518989", "2A9035121518989", "1" * 15, "10100012341", "920000016", "2A0000015",
     "0-0", "1234567-0", "99999999-9", "mmol/l", "10^9/L", "[iU]/L", "{", "1/0", "°C", "Cel", "µmol/L", "   mmol/L",
     "0", "1.2.250", "1.02.3", "2.999." + "9" * 70, "QUAL", "AMB", "ZZZ", "N", "R", "V"]
)  # fmt: skip
huge_strings = st.sampled_from([501, 20_001, 100_000]).flatmap(
    lambda n: st.sampled_from(["A" * n, "é" * n, "\U0001f9ea" * n, ("ab " * n)[:n], "1" * n])
)


@st.composite
def mutated_reports(draw: st.DrawFn) -> tuple[Any, Secrets]:
    """A valid-shaped report with one to four mutations: fields removed, added, re-typed, out of range."""
    report, secrets = draw(valid_shaped_reports)
    report = copy.deepcopy(report)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(report))
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["delete", "extra", "wrong", "range", "junk", "huge", "empty", "dup"]))
        if not path:
            if kind in ("wrong", "junk"):
                report = draw(wrong_values)
            continue
        parent, key = _get(report, path[:-1]), path[-1]
        if kind == "delete":
            del parent[key]
        elif kind == "extra":
            target = parent[key] if isinstance(parent[key], dict) else parent
            if isinstance(target, dict):
                target[draw(st.sampled_from(["extra", "Label", "loinc ", "\x00", "é"]) | junk_text)] = draw(
                    wrong_values
                )
            elif isinstance(target, list):
                target.append(draw(wrong_values))
        elif kind == "wrong":
            parent[key] = draw(wrong_values)
        elif kind == "range":
            parent[key] = draw(out_of_range)
        elif kind == "junk":
            parent[key] = (
                draw(junk_text)
                if not isinstance(parent[key], str) or draw(st.booleans())
                else parent[key] + draw(junk_text)
            )
        elif kind == "huge":
            parent[key] = draw(huge_strings)
        elif kind == "empty":
            parent[key] = type(parent[key])() if isinstance(parent[key], (list, dict, str)) else None
        elif kind == "dup" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(copy.deepcopy(parent[key][0]))
    return report, secrets


def _json_default(value: Any) -> Any:
    # Decimals become JSON numbers (what an SGL writes); one too large for a float stays a string.
    if isinstance(value, Decimal):
        number = float(value)
        return number if value.is_finite() and number not in (float("inf"), float("-inf")) else str(value)
    return str(value)


def _dumps(report: Any, ensure_ascii: bool) -> str:
    return json.dumps(report, ensure_ascii=ensure_ascii, default=_json_default)


_BYTE_DAMAGE = ("truncate", "insert", "flip")


def _damaged(draw: st.DrawFn, data: bytes, damage: str) -> bytes:
    """``data`` cut short, with a few random bytes inserted, or with one bit flipped."""
    if damage == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if damage == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]


@st.composite
def report_bytes(draw: st.DrawFn) -> tuple[bytes, Secrets]:
    """A report as the bytes of a file: valid or mutated JSON, then possibly damaged as bytes."""
    report, secrets = draw(valid_shaped_reports | mutated_reports())
    text = _dumps(report, draw(st.booleans()))
    # A lone surrogate written raw (not as a \u escape) makes the file invalid UTF-8, as a buggy
    # encoder would write it.
    data = text.encode("utf-8", "surrogatepass")
    damage = draw(
        st.sampled_from(
            [
                "none",
                "none",
                "truncate",
                "insert",
                "flip",
                "bom",
                "latin1",
                "nest",
                "deep",
                "nul",
                "dupkey",
                "constant",
            ]
        )
    )
    if damage in _BYTE_DAMAGE:
        data = _damaged(draw, data, damage)
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "latin1":
        data = text.encode("latin-1", "replace")
    elif damage == "nest":
        depth = draw(st.sampled_from([100, 1_000, 100_000]))
        data = data.replace(b'"chapters": [', b'"chapters": ' + b"[" * depth + b"]" * (depth - 1) + b", [", 1)
    elif damage == "deep":
        depth = draw(st.sampled_from([1_000, 50_000]))
        data = b'{"format": "crbio.report/1", "x": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    elif damage == "nul":
        data = data.replace(b'"', b'"\\u0000', 1 + draw(st.integers(0, 5)))
    elif damage == "dupkey":
        data = data.replace(b"{", b'{"format": 1, ', 1)
    elif damage == "constant":
        data = data.replace(b'"value": "', b'"value": NaN, "x": "', 1).replace(b": 1,", b": Infinity,", 1)
    return data, secrets


# --- HL7 v2 ORU^R01 -----------------------------------------------------------------------------

#: A message as segments → fields → repetitions → components → subcomponents, as written
#: (escape sequences kept, written with ``\`` as escape character).
Message = list[list[list[list[list[str]]]]]
_HL7_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "&": "\\T\\", "\\": "\\E\\"}


def parse_hl7(data: bytes) -> tuple[Message, str]:
    """A fixture split with its own delimiters (``|^~\\&``), and its character set name."""
    charset = "latin-1" if b"8859/1" in data[:300] else "utf-8"
    text = data.decode(charset).replace("\x0b", "").replace("\x1c", "")
    message: Message = []
    for line in re.split(r"\r\n|\r|\n", text):
        if not line.strip():
            continue
        fields = line.split("|")
        if fields[0] == "MSH":
            # MSH-1 is the field separator itself, MSH-2 the encoding characters: kept verbatim.
            parsed = [[[[fields[0]]]], [[["|"]]], [[[fields[1]]]]]
            parsed += [[[c.split("&") for c in r.split("^")] for r in f.split("~")] for f in fields[2:]]
        else:
            parsed = [[[c.split("&") for c in r.split("^")] for r in f.split("~")] for f in fields]
        message.append(parsed)
    return message, charset


@cache
def oru_fixtures() -> tuple[tuple[str, bytes], ...]:
    """The valid ORU^R01 fixtures (``tests/fixtures/hl7/0*.hl7``)."""
    return tuple((p.name, p.read_bytes()) for p in sorted(HL7_FIXTURES.glob("0*.hl7")))


def hl7_escape(value: str) -> str:
    """A plain value written with the standard delimiters' escape sequences."""
    return "".join(_HL7_ESCAPES.get(c, c) for c in value)


@dataclass
class Oru:
    """A message being generated: its structure, character set and the patient data it holds."""

    message: Message
    charset: str
    secrets: list[object]


def _set(message: Message, segment: int, field: int, rep: int, comp: int, value: str) -> None:
    fields = message[segment]
    while len(fields) <= field:
        fields.append([[[""]]])
    reps = fields[field]
    while len(reps) <= rep:
        reps.append([[""]])
    comps = reps[rep]
    while len(comps) <= comp:
        comps.append([""])
    comps[comp] = [value]


def _segment_indexes(message: Message, name: str) -> list[int]:
    return [i for i, s in enumerate(message) if s[0][0][0][0] == name]


@st.composite
def orus(draw: st.DrawFn) -> Oru:
    """A valid-shaped ORU^R01: a fixture with a generated patient identity, values, flags and texts."""
    name, data = draw(st.sampled_from(oru_fixtures()))
    message, charset = parse_hl7(data)
    secrets: list[object] = []
    pid = _segment_indexes(message, "PID")[0]
    family, first = draw(insi_names), draw(insi_given)
    others = draw(st.lists(insi_given, max_size=2))
    sex = draw(st.sampled_from(["M", "F"]))
    # The validation time of the fixtures is 2024; a birth before it keeps the chronology.
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2023, 12, 31)))
    for rep_index, rep in enumerate(message[pid][5]):
        if len(rep) >= 7 and rep[6] == ["L"]:
            _set(message, pid, 5, rep_index, 0, family)
            _set(message, pid, 5, rep_index, 1, first)
            _set(message, pid, 5, rep_index, 2, " ".join([first, *others]))
        elif len(rep) >= 7 and rep[6] == ["D"]:
            _set(message, pid, 5, rep_index, 0, family)
            _set(message, pid, 5, rep_index, 1, first.capitalize())
    _set(message, pid, 7, 0, 0, born.strftime("%Y%m%d"))
    _set(message, pid, 8, 0, 0, sex)
    secrets += [family, first, *others, born]
    for rep_index, rep in enumerate(message[pid][3]):
        if len(rep) >= 5 and rep[4] == ["INS"]:
            matricule = draw(ins_matricules(sex, born))
            _set(message, pid, 3, rep_index, 0, matricule)
            secrets.append(matricule)
    for obx in _segment_indexes(message, "OBX"):
        fields = message[obx]
        if fields[2][0][0][0] == "NM" and draw(st.booleans()):
            number = draw(
                st.decimals(min_value=-1000, max_value=10**5, places=draw(st.integers(0, 3)), allow_nan=False)
            )
            _set(message, obx, 5, 0, 0, str(number))
        if len(fields) > 8 and draw(st.integers(0, 3)) == 0:
            _set(message, obx, 8, 0, 0, draw(st.sampled_from(["N", "H", "L", "HH", "LL", "A", ""])))
        if draw(st.integers(0, 3)) == 0:
            _set(message, obx, 3, 0, 1, hl7_escape(draw(nice_text)))
    for nte in _segment_indexes(message, "NTE"):
        if draw(st.booleans()):
            _set(message, nte, 3, 0, 0, hl7_escape(draw(nice_text)))
    if draw(st.integers(0, 3)) == 0:
        # The fixtures' own charset, or the other one the reader supports.
        charset = draw(st.sampled_from(["utf-8", "latin-1"]))
    msh = message[0]
    declared = {"utf-8": "UNICODE UTF-8", "latin-1": "8859/1"}[charset]
    if len(msh) > 18 or charset != "utf-8" or draw(st.booleans()):
        _set(message, 0, 18, 0, 0, declared)
    return Oru(message, charset, secrets)


hl7_junk = st.sampled_from(
    ["", "\\", "\\X00\\", "\\Xzz\\", "\\XC3\\", "\\Z01\\", "\\C2842\\", "\\M2442\\", "\\.sp5\\", "\\.sk3\\", "\\.in+4\\",
     "\\.sp99999\\", "\\.sk99999\\", "\\H\\bold\\N\\", "|", "^", "~", "&", "\r", "\n", "MSH|^~\\&|", "OBX|1|NM",
     "20241399", "2024", "99999999999999+9999", "20240229", "19000101", "20240104250000+0100", "-", "NaN", "1e5", ".",
     "1,5", "--1", "<^", "^1^:^0", "^1^/^0", "1-", "-1-2", ">", "F", "P", "X", "NM", "SN", "CWE", "ED", "QQ", "TS",
     "LN", "L", "UCUM", "ISO", "QUAL", "VALI", "FICT"]
) | junk_text  # fmt: skip


@st.composite
def mutated_orus(draw: st.DrawFn) -> Oru:
    """A valid-shaped ORU^R01 with one to four damages of its segments, fields and components."""
    oru = draw(orus())
    message = copy.deepcopy(oru.message)
    for _ in range(draw(st.integers(1, 4))):
        if not message:
            break
        s = draw(st.integers(0, len(message) - 1))
        kind = draw(
            st.sampled_from(
                [
                    "drop-seg",
                    "dup-seg",
                    "swap-seg",
                    "new-seg",
                    "drop-field",
                    "shift-field",
                    "junk-field",
                    "junk-comp",
                    "cut-comps",
                    "more-reps",
                    "obx",
                ]
            )
        )
        segment = message[s]
        if kind == "drop-seg":
            del message[s]
        elif kind == "dup-seg":
            message.insert(s, copy.deepcopy(segment))
        elif kind == "swap-seg":
            t = draw(st.integers(0, len(message) - 1))
            message[s], message[t] = message[t], message[s]
        elif kind == "new-seg":
            name = draw(
                st.sampled_from(
                    ["ZZZ", "EVN", "PID", "OBX", "NTE", "SPM", "OBR", "ORC", "MSH", "XX", "obx", ""]
                )
            )
            message.insert(s, [[[[name]]], *[[[[draw(hl7_junk)]]] for _ in range(draw(st.integers(0, 6)))]])
        elif len(segment) < 2:
            continue
        else:
            f = draw(st.integers(1, len(segment) - 1))
            if segment[0][0][0][0] == "MSH" and f <= 2 and kind != "junk-field":
                continue
            if kind == "drop-field":
                del segment[f]
            elif kind == "shift-field":
                segment.insert(f, [[[""]]])
            elif kind == "junk-field":
                segment[f] = [[[draw(hl7_junk)]]]
            elif kind == "junk-comp":
                reps = segment[f]
                comps = reps[draw(st.integers(0, len(reps) - 1))]
                comps[draw(st.integers(0, len(comps) - 1))] = [draw(hl7_junk)]
            elif kind == "cut-comps":
                reps = segment[f]
                r = draw(st.integers(0, len(reps) - 1))
                reps[r] = reps[r][: draw(st.integers(0, len(reps[r])))] or [[""]]
            elif kind == "more-reps":
                segment[f] = segment[f] * draw(st.integers(2, 50))
            elif kind == "obx":
                obxs = _segment_indexes(message, "OBX")
                if obxs:
                    o = draw(st.sampled_from(obxs))
                    field, value = draw(
                        st.sampled_from(
                            [
                                (
                                    2,
                                    [
                                        "NM",
                                        "SN",
                                        "ST",
                                        "TX",
                                        "FT",
                                        "CWE",
                                        "CE",
                                        "ED",
                                        "QQ",
                                        "",
                                        "DT",
                                        "TS",
                                        "NA",
                                    ],
                                ),
                                (11, ["F", "C", "P", "", "X", "D", "f"]),
                                (
                                    5,
                                    [
                                        "",
                                        "abc",
                                        "1e5",
                                        "NaN",
                                        ".",
                                        "<",
                                        "^",
                                        "1.2.3",
                                        "١٢",
                                        "--1",
                                        "+",
                                        "1" * 400,
                                    ],
                                ),
                                (6, ["", "mmol/l", "{", "°C", "10^9/L", "x" * 300]),
                                (7, ["", "1-", "-", "a-b", "5-1", "<", "> ", "1.2.3-4"]),
                            ]
                        )
                    )
                    _set(message, o, field, 0, 0, draw(st.sampled_from(value)))
    return Oru(message, oru.charset, oru.secrets)


_DELIMITER_CHARS = "|^~\\&#!$%*@?"


@st.composite
def hl7_bytes(draw: st.DrawFn, source: st.SearchStrategy[Oru] | None = None) -> tuple[bytes, Secrets]:
    """An ORU^R01 written out: delimiters, segment ends, character set, MLLP framing; maybe byte-damaged."""
    oru = draw(source if source is not None else (orus() | mutated_orus()))
    standard = draw(st.booleans())
    if standard:
        field, comp, rep, esc, sub = "|^~\\&"
    else:
        field, comp, rep, esc, sub = draw(st.permutations(_DELIMITER_CHARS).map(lambda p: p[:5]))
    escapes = {field: "\\F\\", comp: "\\S\\", rep: "\\R\\", sub: "\\T\\"}
    if esc != "\\":
        escapes[esc] = "\\E\\"

    def write(value: str) -> str:
        # The structure's values use "\" as escape character: literal delimiters of the new set
        # are escaped, then the escape character is switched.
        escaped = "".join(escapes.get(c, c) for c in value)
        return escaped.replace("\\", esc) if esc != "\\" else escaped

    lines = []
    for segment in oru.message:
        name = segment[0][0][0][0]
        if name == "MSH" and len(segment) >= 3:
            rest = segment[3:]
            head = f"MSH{field}{comp}{rep}{esc}{sub}"
        else:
            rest = segment[1:]
            head = write(name)
        parts = [head]
        for f in rest:
            parts.append(rep.join(comp.join(sub.join(write(x) for x in c) for c in r) for r in f))
        lines.append(field.join(parts))
    ending = draw(st.sampled_from(["\r", "\r", "\n", "\r\n"]))
    text = ending.join(lines) + (ending if draw(st.booleans()) else "")
    charset = oru.charset
    if draw(st.integers(0, 7)) == 0:
        charset = draw(st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]))  # not what MSH-18 says
    data = text.encode(charset, "replace")
    if draw(st.integers(0, 3)) == 0:
        data = b"\x0b" + data + b"\x1c\r"
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "insert", "flip", "nul", "prefix", "repeat"]))
    if damage in _BYTE_DAMAGE:
        data = _damaged(draw, data, damage)
    elif damage == "nul":
        data = data.replace(field.encode(), field.encode() + b"\x00", 3)
    elif damage == "prefix":
        data = (
            draw(
                st.sampled_from(
                    [b"\xef\xbb\xbf", b"\xff\xfe", b" ", b"\r\n", b"FHS|^~\\&\r", b"BHS|^~\\&\r", b"x"]
                )
            )
            + data
        )
    elif damage == "repeat":
        data = data + data[: draw(st.integers(0, len(data)))]
    return data, Secrets.of(*oru.secrets)


# --- CDA documents --------------------------------------------------------------------------------


@cache
def cda_seeds() -> tuple[tuple[str, bytes], ...]:
    """The CDA documents mutated: crbio's sample N3s and the ANS's official CR-BIO examples."""
    files = sorted(SAMPLES.joinpath("output").glob("*.n3.xml"))
    if ANS_EXAMPLES.is_dir():
        files += sorted(ANS_EXAMPLES.glob("BIO-CR-BIO_*.xml"))
    seeds = []
    for path in files:
        data = path.read_bytes()
        if path.name.startswith("09-"):
            continue  # the long report: five times the others, it adds time, not shapes
        seeds.append((path.name, data))
    return tuple(seeds)


def cda_secrets(data: bytes) -> Secrets:
    """The patient data of a CDA: recordTarget names, INS-like ids, birth time."""
    try:
        root = etree.fromstring(
            data, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
        )
    except etree.XMLSyntaxError:
        return Secrets(())
    ns = {"h": HL7_NS}
    values: list[object] = []
    for target in root.iterfind(".//h:recordTarget/h:patientRole", ns):
        for ident in target.iterfind("h:id", ns):
            if ident.get("root") in INS_OIDS:
                values.append(ident.get("extension", ""))
        for part in target.iterfind("h:patient/h:name/*", ns):
            values.append("".join(part.itertext()))
        birth = target.find("h:patient/h:birthTime", ns)
        if birth is not None and len(birth.get("value", "")) >= 8:
            raw = birth.get("value", "")[:8]
            values += [raw, f"{raw[:4]}-{raw[4:6]}-{raw[6:8]}"]
    return Secrets.of(*values)


xml_junk = st.sampled_from(
    ["", " ", "x", "0", "-1", "NaN", "1e400", "UNK", "NI", "20241399", "2024", "20240104250000+0100", "19000101",
     "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.1.1.55", "2.16.840.1.113883.6.1", "11502-2", "2.0", "..", "1..2",
     "mmol/L", "{", "PQ", "ST", "CD", "ED", "INT", "REAL", "IVL_PQ", "RTO", "BL", "true", "RPLC", "APND", "REF",
     "a" * 5000, "\u00e9" * 300, "&#0;", "\u202e"]
) | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)  # fmt: skip
_XSI_TYPES = [
    "PQ",
    "ST",
    "CD",
    "CE",
    "CWE",
    "ED",
    "INT",
    "REAL",
    "IVL_PQ",
    "RTO",
    "RTO_PQ_PQ",
    "BL",
    "TS",
    "IVL_TS",
    "SC",
    "CO",
    "XX",
    "hl7:PQ",
    "foo:PQ",
]
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}type"


@st.composite
def mutated_cdas(draw: st.DrawFn) -> tuple[bytes, Secrets]:
    """A CR-BIO CDA with one to four element/attribute/value mutations, then maybe byte damage."""
    name, data = draw(st.sampled_from(cda_seeds()))
    secrets = cda_secrets(data)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=False)
    root = etree.fromstring(data, parser)
    elements = [e for e in root.iter() if isinstance(e.tag, str)]
    # Bias towards the header and the entries: most of a sample's elements are the narrative.
    structured = [
        e
        for e in elements
        if etree.QName(e).localname not in ("td", "tr", "th", "content", "br", "paragraph", "list", "item")
    ]
    for _ in range(draw(st.integers(1, 4))):
        element = draw(st.sampled_from(structured))
        kind = draw(
            st.sampled_from(
                [
                    "remove",
                    "duplicate",
                    "attr-value",
                    "attr-remove",
                    "attr-add",
                    "text",
                    "child",
                    "xsi-type",
                    "null",
                    "move",
                    "rename",
                ]
            )
        )
        parent = element.getparent()
        attributes = list(element.attrib)
        if kind == "remove" and parent is not None:
            parent.remove(element)
        elif kind == "duplicate" and parent is not None:
            parent.insert(parent.index(element), copy.deepcopy(element))
        elif kind == "attr-value" and attributes:
            element.set(draw(st.sampled_from(attributes)), draw(xml_junk))
        elif kind == "attr-remove" and attributes:
            del element.attrib[draw(st.sampled_from(attributes))]
        elif kind == "attr-add":
            element.set(
                draw(
                    st.sampled_from(
                        [
                            "nullFlavor",
                            "value",
                            "unit",
                            "code",
                            "codeSystem",
                            "root",
                            "extension",
                            "typeCode",
                            "classCode",
                            "moodCode",
                            "negationInd",
                            "inversionInd",
                            "ID",
                        ]
                    )
                ),
                draw(xml_junk),
            )
        elif kind == "text":
            element.text = draw(xml_junk)
        elif kind == "child":
            element.append(
                etree.Element(
                    f"{{{HL7_NS}}}{draw(st.sampled_from(['value', 'code', 'id', 'entry', 'component', 'section', 'observation', 'organizer', 'effectiveTime', 'foo']))}"
                )
            )
        elif kind == "xsi-type":
            element.set(_XSI, draw(st.sampled_from(_XSI_TYPES)))
        elif kind == "null":
            for attribute in attributes:
                del element.attrib[attribute]
            element.set("nullFlavor", draw(st.sampled_from(["NI", "UNK", "NA", "MSK", "OTH"])))
        elif kind == "move" and parent is not None:
            target = draw(st.sampled_from(structured))
            if element not in target.iterancestors() and element is not target:
                parent.remove(element)
                target.append(element)
        elif kind == "rename":
            element.tag = f"{{{HL7_NS}}}{draw(st.sampled_from(['value', 'code', 'id', 'entry', 'component', 'observation', 'Foo']))}"
    data = etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")
    return _damage_xml(draw, data), secrets


def _damage_xml(draw: st.DrawFn, data: bytes) -> bytes:
    damage = draw(
        st.sampled_from(
            ["none"] * 8 + ["truncate", "insert", "flip", "doctype", "entity", "encoding", "bom", "nul", "pi"]
        )
    )
    if damage in _BYTE_DAMAGE:
        return _damaged(draw, data, damage)
    body = data.split(b"?>", 1)[1] if data.startswith(b"<?xml") else data
    if damage == "doctype":
        return b'<?xml version="1.0"?><!DOCTYPE ClinicalDocument SYSTEM "http://127.0.0.1:9/x.dtd">' + body
    if damage == "entity":
        bomb = b'<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY x SYSTEM "file:///etc/passwd">]>'
        return b'<?xml version="1.0"?>' + bomb + body.replace(b"<title>", b"<title>&c;&x;", 1)
    if damage == "encoding":
        name = draw(st.sampled_from([b"ISO-8859-1", b"UTF-16", b"EBCDIC", b"x-unknown", b"US-ASCII"]))
        return b'<?xml version="1.0" encoding="' + name + b'"?>' + body
    if damage == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b" \n"])) + data
    if damage == "nul":
        return data.replace(b"<title>", b"<title>\x00", 1)
    if damage == "pi":
        return data.replace(b"?>", b'?><?xml-stylesheet href="javascript:x"?><!-- \x01 -->', 1)
    return data


def cda_garbage() -> st.SearchStrategy[tuple[bytes, Secrets]]:
    """Inputs that are not a CDA: random bytes, other XML, an XSL without CDA, text."""
    other_xml = st.sampled_from(
        [b"", b"<", b"<a/>", b'<?xml version="1.0"?><ClinicalDocument/>', b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>',
         b'<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"/>',
         b'<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody/></component></ClinicalDocument>',
         b"\x00" * 64, b"%PDF-1.4\n", b"MSH|^~\\&|", b'{"format": "crbio.report/1"}', b"<" * 100_000,
         b"<a>" * 10_000 + b"</a>" * 10_000]
    )  # fmt: skip
    return st.tuples(st.binary(max_size=300) | other_xml, st.just(Secrets(())))


def dump_json(report: Any) -> bytes:
    """A report's JSON bytes (decimals written as numbers or strings as they were)."""
    return _dumps(report, False).encode("utf-8")


__all__ = [
    "Oru",
    "Secrets",
    "cda_garbage",
    "cda_secrets",
    "cda_seeds",
    "dump_json",
    "hl7_bytes",
    "mutated_cdas",
    "mutated_orus",
    "mutated_reports",
    "orus",
    "report_bytes",
    "reports",
    "valid_shaped_reports",
]
