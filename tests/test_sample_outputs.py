"""The committed sample outputs are what crbio produces today (scripts/refresh_sample_outputs.py)."""

from __future__ import annotations

import re

import pytest

import crbio
from conftest import SAMPLES, sample_files

OUTPUT = SAMPLES / "output"
# The PDF bytes depend on zlib and qpdf versions; the documents are compared without them.
_BASE64 = re.compile(rb'(representation="B64">)[A-Za-z0-9+/=\s]+(<)')


def without_pdf(document: bytes) -> bytes:
    return _BASE64.sub(rb"\1...\2", document)


@pytest.mark.parametrize("sample", sample_files(), ids=lambda p: p.stem)
def test_committed_outputs_match(sample: object) -> None:
    documents = crbio.build(crbio.load_report(sample))  # type: ignore[arg-type]
    stem = sample.stem  # type: ignore[attr-defined]
    for name, data in documents.files(stem).items():
        committed = OUTPUT / name
        assert committed.is_file(), f"{name} missing: run scripts/refresh_sample_outputs.py"
        if name.endswith(".xml"):
            assert without_pdf(committed.read_bytes()) == without_pdf(data), (
                f"{name} differs from what crbio builds: review, then run scripts/refresh_sample_outputs.py"
            )
