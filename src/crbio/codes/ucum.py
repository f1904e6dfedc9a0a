"""UCUM units: checked against the UCUM grammar and atom table (through ucumvert)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = ["check_ucum"]


@lru_cache(maxsize=1)
def _parser() -> Any:
    # Imported lazily: building the UCUM parser takes a few hundred milliseconds.
    from ucumvert import get_ucum_parser

    return get_ucum_parser()


@lru_cache(maxsize=4096)
def check_ucum(unit: str) -> str | None:
    """Check that a unit is valid case-sensitive UCUM (``mmol/L``, ``10*9/L``, ``[IU]/L``)."""
    if not unit or unit != unit.strip():
        return "is not a UCUM unit (empty or surrounded by spaces)"
    try:
        _parser().parse(unit)
    except Exception:  # lark raises several unrelated classes for a bad unit
        return "is not a valid UCUM unit (case-sensitive UCUM, e.g. mmol/L, 10*9/L, [IU]/L)"
    return None
