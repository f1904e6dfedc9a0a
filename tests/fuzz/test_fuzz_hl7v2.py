"""Fuzzing HL7 v2 ORU^R01 input: every message builds conformant documents or is refused by segment."""

from __future__ import annotations

from typing import Any

from hypothesis import event, given

from conftest import assert_kit_accepts
from crbio.errors import InvalidReport
from crbio.input.hl7v2 import OruDefaults, read_oru

from .properties import Outcome, check, check_cli_refuses, examples
from .strategies import HL7_FIXTURES, Secrets, hl7_bytes, mutated_orus, orus

DEFAULTS = OruDefaults.load(HL7_FIXTURES / "crbio-oru.toml")


def _event(outcome: Outcome) -> None:
    error = outcome.error
    if error is None:
        event("built")
    elif isinstance(error, InvalidReport):
        event(f"refused: {error.problems[0].rule}")
    else:
        event(f"refused: {error.code}")


def _read(data: bytes) -> Any:
    return lambda: read_oru(data, label="fuzz.hl7", defaults=DEFAULTS)


@examples(ci=25, long=20000)
@given(hl7_bytes(orus()))
def test_valid_shaped_messages(case: tuple[bytes, Secrets]) -> None:
    data, secrets = case
    outcome = check(_read(data), secrets)
    _event(outcome)
    if outcome.error is not None:
        check_cli_refuses(data, ".hl7", secrets)


@examples(ci=100, long=20000)
@given(hl7_bytes(mutated_orus()))
def test_mutated_messages(case: tuple[bytes, Secrets]) -> None:
    data, secrets = case
    outcome = check(_read(data), secrets)
    _event(outcome)
    if outcome.error is not None:
        check_cli_refuses(data, ".hl7", secrets)


@examples(ci=2, long=20)
@given(case=hl7_bytes(orus()))
def test_ans_kit_accepts_messages(case: tuple[bytes, Secrets], ans_kit_n3: Any, ans_kit_n1: Any) -> None:
    data, secrets = case
    outcome = check(_read(data), secrets)
    if outcome.documents is not None:
        assert_kit_accepts(outcome.documents, "oru", ans_kit_n3, ans_kit_n1)


def test_a_result_named_without_a_code_is_refused_by_place() -> None:
    # Found by fuzzing: OBX-3 with a name but no code raised an AssertionError.
    data = (HL7_FIXTURES / "02-hemogramme.hl7").read_bytes().replace(b"OBX|1|NM|789-8^", b"OBX|1|NM|^")
    outcome = check(_read(data), Secrets(("PAT-QUATRE",)))
    assert isinstance(outcome.error, InvalidReport)
    assert [p.field for p in outcome.error.problems] == ["OBX[1]-3"]
