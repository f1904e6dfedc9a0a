"""Shared test fixtures: the bundled samples, loaded and resolved reproducibly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crbio.documents.context import BuildContext, FixedClock, SequenceIds, resolve_document
from crbio.input import load_report
from crbio.model import Report

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SHARED = ROOT.parent / "shared"
ANS_KIT = SHARED / "ans-kit"


def sample_files() -> list[Path]:
    """Every bundled sample input."""
    return sorted(SAMPLES.glob("*.json"))


@pytest.fixture
def context() -> BuildContext:
    """A reproducible build context: fixed clock, sequential ids."""
    return BuildContext(
        clock=FixedClock(datetime.fromisoformat("2024-01-04T18:00:00+01:00")),
        ids=SequenceIds("1.2.250.1.999.9.9"),
    )


@pytest.fixture
def sample_report(context: BuildContext) -> Callable[[str], Report]:
    """Load a sample by file name (``01-biochimie.json``) and resolve its document ids."""

    def load(name: str) -> Report:
        return resolve_document(load_report(SAMPLES / name), context)

    return load


def _kit_or_skip(volet: str | None) -> object:
    if not (ANS_KIT / "schematrons").is_dir():
        pytest.skip(f"the ANS kit is not at {ANS_KIT}: official schematron checks skipped")
    try:
        import saxonche  # noqa: F401
    except ImportError:
        pytest.skip(
            "saxonche is not installed (pip install 'crbio[ans]'): official schematron checks skipped"
        )
    from crbio.validation.anskit import AnsKit

    return AnsKit(ANS_KIT, volet=volet)


@pytest.fixture(scope="session")
def ans_kit_n3() -> object:
    """The official ANS kit with the CR-BIO 2024.01 volet (compiled once per session)."""
    return _kit_or_skip("CI-SIS_BIO-CR-BIO_2024.01")


@pytest.fixture(scope="session")
def ans_kit_n1() -> object:
    """The official ANS kit's transverse profiles, for CDA R2 N1 documents."""
    return _kit_or_skip(None)


def assert_kit_accepts(documents: Any, label: str, ans_kit_n3: Any, ans_kit_n1: Any) -> None:
    """The N3 and the N1 have zero findings from the official ANS kit, warnings included."""
    n3 = ans_kit_n3.check(documents.n3, label=f"{label} n3")
    assert not n3.findings, n3.summary()
    n1 = ans_kit_n1.check(documents.n1, label=f"{label} n1")
    assert not n1.findings, n1.summary()
