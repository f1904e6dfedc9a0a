"""The ANS value sets crbio checks codes against and takes display names from.

The tables in ``data/terminologies.json`` are generated from the ANS conformity
kit's ``jeuxDeValeurs`` by ``scripts/refresh_terminologies.py``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from crbio.model.common import Code

__all__ = ["lookup", "value_set"]


@cache
def _tables() -> dict[str, Any]:
    text = resources.files("crbio.codes").joinpath("data/terminologies.json").read_text("utf-8")
    tables: dict[str, Any] = json.loads(text)
    return tables


def value_set(name: str) -> dict[str, Any]:
    """One value set: its ``oid``, ``source`` file, ``version`` and ``concepts`` by code."""
    return dict(_tables()[name])


def lookup(name: str, code: str) -> Code | None:
    """The concept ``code`` of value set ``name`` with its system and display, or None."""
    concept = _tables()[name]["concepts"].get(code)
    if concept is None:
        return None
    return Code(code=code, system=concept["system"], display=concept["display"])
