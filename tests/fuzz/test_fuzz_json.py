"""Fuzzing crbio JSON reports: every input builds conformant documents or is refused by field."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings

import crbio
from conftest import assert_kit_accepts

from .properties import check, check_cli_refuses, examples, new_context
from .strategies import (
    SAMPLES,
    Secrets,
    mutated_reports,
    nice_text,
    report_bytes,
    reports,
    valid_shaped_reports,
)


def _event(outcome: Any) -> None:
    if outcome.error is None:
        event("built")
    else:
        rules = sorted({p.rule for p in getattr(outcome.error, "problems", ())}) or [outcome.error.code]
        event(f"refused: {rules[0]}")


@examples(ci=30, long=20000)
@given(valid_shaped_reports)
def test_valid_shaped_reports(case: tuple[dict[str, Any], Secrets]) -> None:
    report, secrets = case
    _event(check(lambda: crbio.report_from_mapping(report), secrets))


@examples(ci=10, long=20000)
@given(reports(texts=nice_text))
def test_clean_reports_always_build(case: tuple[dict[str, Any], Secrets]) -> None:
    # Reports whose every field is right (texts without control characters) are never refused.
    report, secrets = case
    outcome = check(lambda: crbio.report_from_mapping(report), secrets)
    assert outcome.error is None, f"a valid report was refused: {outcome.error}"


@examples(ci=120, long=20000)
@given(mutated_reports())
def test_mutated_reports(case: tuple[Any, Secrets]) -> None:
    report, secrets = case
    _event(check(lambda: crbio.report_from_mapping(report), secrets))


@examples(ci=60, long=20000)
@given(report_bytes())
def test_report_files(case: tuple[bytes, Secrets]) -> None:
    data, secrets = case
    with tempfile.TemporaryDirectory(prefix="crbio-fuzz-") as tmp:
        path = Path(tmp, "report.json")
        path.write_bytes(data)
        outcome = check(lambda: crbio.load_report(path), secrets)
    _event(outcome)
    if outcome.error is not None:
        check_cli_refuses(data, ".json", secrets)


@examples(ci=4, long=40)
@given(case=reports(texts=nice_text, ans_subset=True))
def test_ans_kit_accepts_generated_reports(
    case: tuple[dict[str, Any], Secrets], ans_kit_n3: Any, ans_kit_n1: Any
) -> None:
    report, _ = case
    documents = crbio.build(crbio.report_from_mapping(report), context=new_context())
    assert_kit_accepts(documents, "generated", ans_kit_n3, ans_kit_n1)


def test_profile_is_selected() -> None:
    # The fuzz folder's conftest chose a profile: bounded and derandomized unless asked for more.
    assert settings.get_current_profile_name() in ("ci", "long")
    if settings.get_current_profile_name() == "ci":
        assert settings.default.derandomize


# Found by the fuzz tests: crbio accepted these reports and built documents that passed the XSD
# and crbio's rules but not the ANS kit (ASIP-STRUCT-MIN). An unknown sex is now written with
# code UN (JDV_J143); the others are refused at the field.
def test_an_unknown_sex_is_written_as_the_kit_wants(ans_kit_n3: Any, ans_kit_n1: Any) -> None:
    report = json.loads((SAMPLES / "13-identite-provisoire.json").read_text("utf-8"))
    report["patient"]["sex"] = "U"
    documents = crbio.build(crbio.report_from_mapping(report), context=new_context())
    assert b'<administrativeGenderCode code="UN"' in documents.n3
    assert_kit_accepts(documents, "sex-unknown", ans_kit_n3, ans_kit_n1)


_REFUSED_FOR_THE_KIT = {
    # CI-SISRecordTarget: birthTime/@value SHALL be present (an INS trait, even without an INS).
    "no-birth-date": (lambda r: r["patient"].pop("birth_date"), "$.patient.birth_date"),
    # CI-SISAuthor…: a name suffix must be a title of JDV_J246, a prefix a civility of JDV_J245.
    "title-outside-j246": (lambda r: r["biologist"]["name"].update(suffix="MME"), "$.biologist.name.suffix"),
    "civility-not-j245": (lambda r: r["biologist"]["name"].update(prefix="DR"), "$.biologist.name.prefix"),
    # CI-SISComponentOf: the encounter code comes from JDV_J142 (which has no SS).
    "encounter-kind-ss": (lambda r: r.setdefault("encounter", {}).update(kind="SS"), "$.encounter.kind"),
}


@pytest.mark.parametrize("finding", sorted(_REFUSED_FOR_THE_KIT))
def test_what_the_kit_would_refuse_is_refused_at_its_field(finding: str) -> None:
    report = json.loads((SAMPLES / "13-identite-provisoire.json").read_text("utf-8"))
    change, field = _REFUSED_FOR_THE_KIT[finding]
    change(report)
    with pytest.raises(crbio.InvalidReport) as refused:
        crbio.report_from_mapping(report)
    assert field in [problem.field for problem in refused.value.problems]


def _sample(name: str = "01-biochimie.json") -> Any:
    return json.loads((SAMPLES / name).read_text("utf-8"))


def _set_label(report: Any, value: str) -> Any:
    report["chapters"][0]["batteries"][0]["label"] = value
    return report


def _set_value(report: Any, value: str) -> Any:
    report["chapters"][0]["batteries"][0]["observations"][0]["value"]["value"] = value
    return report


def _two_lab_telecoms(report: Any) -> Any:
    report["laboratory"]["telecom"] = ["tel:+33100000000", "fax:+33100000001"]
    return report


# The bugs the fuzz tests found, kept as fixed examples (each once raised another exception type,
# or built a document the XSD refused).
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: True, id="not-a-mapping"),
        pytest.param(lambda: _set_label(_sample(), "a\ud800b"), id="lone-surrogate"),
        pytest.param(lambda: _set_label(_sample(), "a\x00b"), id="control-character"),
        pytest.param(lambda: _set_value(_sample(), "1" * 4301), id="too-many-digits"),
        pytest.param(lambda: _two_lab_telecoms(_sample()), id="two-laboratory-telecoms"),
    ],
)
def test_found_bugs_stay_fixed(make: Any) -> None:
    report = make()
    outcome = check(lambda: crbio.report_from_mapping(report), Secrets(("PAT-TROIS", "279035121518989")))
    if outcome.error is None:
        return  # built, written and valid: what check() asserted
    assert isinstance(outcome.error, crbio.InvalidReport)
