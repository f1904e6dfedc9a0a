"""The schema the JSON gate compiles: rewritten for speed, valid on exactly the same documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from crbio.input.json_report import _gate_schema, _schema

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "samples").glob("*.json"))


def _valid(gate: Any, document: Any) -> bool:
    try:
        gate(document)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


@pytest.fixture(scope="module")
def gates() -> tuple[Any, Any]:
    return fastjsonschema.compile(_schema()), fastjsonschema.compile(_gate_schema(_schema()))


def test_the_rewrites_apply_where_expected_and_leave_the_schema_alone() -> None:
    before = json.dumps(_schema())
    rewritten = _gate_schema(_schema())
    assert json.dumps(_schema()) == before  # jsonschema keeps reading the original
    definitions = rewritten["definitions"]
    assert "anyOf" in definitions["decimal"] and "oneOf" not in definitions["decimal"]
    assert "anyOf" in definitions["telecom"] and "oneOf" not in definitions["telecom"]
    assert "allOf" not in definitions["value"] and "else" in definitions["value"]
    assert "not" not in definitions["address"] and "lines" in definitions["address"]["dependencies"]


def _variants(report: dict[str, Any]) -> list[Any]:
    """The sample with one value, decimal, telecom or address replaced, valid or not."""
    observation = report["chapters"][0]["batteries"][0]["observations"][0]
    values: list[Any] = [
        {"type": "quantity", "value": "3.50", "unit": "mmol/L"},
        {"type": "quantity", "value": True},
        {"type": "quantity", "value": "01"},
        {"type": "quantity", "text": "x"},
        {"type": "coded", "text": "Positif", "code": "10828004", "system": "2.16.840.1.113883.6.96"},
        {"type": "coded", "text": "Positif", "code": "10828004"},
        {"type": "text", "text": "Présence"},
        {"type": "text", "text": "Présence", "value": 1},
        {"type": "ratio", "numerator": 1, "denominator": "160"},
        {"type": "ratio", "numerator": 1},
        {"type": "interval", "low": {"value": 1}},
        {"type": "interval"},
        {"type": "Quantity", "value": 1},
        {"value": 1},
        "3.5",
    ]
    telecoms: list[Any] = [
        ["tel:+33123456789", {"value": "mailto:a@b.fr", "use": "WP"}],
        ["x"],
        [{"value": 1}],
    ]
    addresses: list[Any] = [
        {"lines": ["1 rue X"], "city": "Paris"},
        {"lines": ["1 rue X"], "street_name": "rue X"},
        {"house_number": "3", "street_name": "rue X"},
        "Paris",
    ]
    variants = []
    for value in values:
        variant = copy.deepcopy(report)
        variant["chapters"][0]["batteries"][0]["observations"][0] = {**observation, "value": value}
        variants.append(variant)
    for telecom in telecoms:
        variants.append(
            {**copy.deepcopy(report), "laboratory": {**report["laboratory"], "telecoms": telecom}}
        )
    for address in addresses:
        variants.append({**copy.deepcopy(report), "laboratory": {**report["laboratory"], "address": address}})
    return variants


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_the_gate_accepts_and_refuses_what_the_schema_does(path: Path, gates: tuple[Any, Any]) -> None:
    original, rewritten = gates
    report = json.loads(path.read_bytes())
    outcomes = set()
    for document in [report, *_variants(report)]:
        assert _valid(rewritten, document) == _valid(original, document)
        outcomes.add(_valid(original, document))
    assert outcomes == {True, False}
