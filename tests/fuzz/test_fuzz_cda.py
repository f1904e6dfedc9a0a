"""Fuzzing CR-BIO CDA input: every document builds conformant documents or is refused by element."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given

from conftest import assert_kit_accepts
from crbio.input.cda import read_cda

from .properties import Outcome, check, check_cli_refuses, examples
from .strategies import SAMPLES, Secrets, cda_garbage, cda_secrets, mutated_cdas


def _event(outcome: Outcome) -> None:
    event("built" if outcome.error is None else f"refused: {outcome.error.code}")


def _read(data: bytes) -> Any:
    return lambda: read_cda(data, label="fuzz.xml")


@examples(ci=70, long=20000)
@given(mutated_cdas())
def test_mutated_documents(case: tuple[bytes, Secrets]) -> None:
    data, secrets = case
    outcome = check(_read(data), secrets)
    _event(outcome)
    if outcome.error is not None:
        check_cli_refuses(data, ".xml", secrets)


@examples(ci=40, long=20000)
@given(cda_garbage())
def test_garbage(case: tuple[bytes, Secrets]) -> None:
    data, secrets = case
    outcome = check(_read(data), secrets)
    assert outcome.error is not None, "garbage was read as a report"
    _event(outcome)
    check_cli_refuses(data, ".xml", secrets)


@examples(ci=2, long=20)
@given(case=mutated_cdas())
def test_ans_kit_accepts_rebuilt_documents(
    case: tuple[bytes, Secrets], ans_kit_n3: Any, ans_kit_n1: Any
) -> None:
    data, secrets = case
    outcome = check(_read(data), secrets)
    if outcome.documents is not None:
        assert_kit_accepts(outcome.documents, "cda", ans_kit_n3, ans_kit_n1)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"Normal" codeSystem="2.16.840.1.113883.5.83"', b'"Normal" codeSystem="1..2"'),
        (b'"Normal" codeSystem="2.16.840.1.113883.5.83"', b'"Normal"'),
        (b'root="1.2.250.1.999.1.2"', b'root="not an oid"'),
        (b'use="H"', b'use="XYZ"'),
    ],
    ids=["bad-code-system", "no-code-system", "bad-root", "bad-address-use"],
)
def test_found_bugs_stay_fixed(old: bytes, new: bytes) -> None:
    # Found by fuzzing: each was accepted, then the rebuilt N3 failed the CDA XSD.
    data = (SAMPLES / "output" / "01-biochimie.n3.xml").read_bytes()
    assert old in data
    outcome = check(_read(data.replace(old, new, 1)), cda_secrets(data))
    assert outcome.error is not None and "ClinicalDocument" in outcome.error.message
