"""Readers that turn what an SGL hands over into the report model.

:func:`load_report` is the one place that picks a reader from a file's suffix: ``.json``
(crbio's JSON format), ``.xml`` (a CR-BIO CDA R2 N3, to re-emit it in the current volet) and
``.hl7`` (an HL7 v2 ORU^R01).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from crbio.errors import InputError
from crbio.input import json_report
from crbio.input.json_report import report_from_mapping
from crbio.model import Report

if TYPE_CHECKING:
    from crbio.input.cda import DocumentIds

__all__ = ["SUFFIXES", "load_report", "report_from_mapping"]

#: The file suffixes :func:`load_report` reads, and what it reads them as.
SUFFIXES = {".json": "crbio JSON report", ".xml": "CR-BIO CDA R2 N3", ".hl7": "HL7 v2 ORU^R01"}


def load_report(source: str | Path | bytes, *, ids: DocumentIds = "new") -> Report:
    """Read a report from a file, choosing the reader by its suffix; bytes are read as JSON.

    ``.json`` is crbio's JSON format; ``.xml`` a CR-BIO CDA R2 N3 (2021.01, 2023.01 or 2024.01
    volet), read with :func:`crbio.input.cda.read_cda` whose ``ids`` says which document ids
    the report keeps (by default none: built again, it is a new document); ``.hl7`` an HL7 v2
    ORU^R01 message (:func:`crbio.input.hl7v2.load_oru`).

    Raises:
        InputError: the file cannot be read, its suffix names no reader, or its reader refuses it.
        InvalidReport: a JSON or HL7 v2 report breaks a rule; ``problems`` lists them all.
    """
    if isinstance(source, bytes):
        return json_report.load_report(source)
    path = Path(source)
    if not path.is_file():
        # What cannot be read is said as such whatever its name (a folder, a missing file).
        reason = "is a directory" if path.is_dir() else "no such file"
        raise InputError(f"cannot be read ({reason})", code="input.unreadable")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return json_report.load_report(path)
    if suffix == ".xml":
        # Imported here, like the HL7 v2 reader: a JSON-only process does not load the CDA reader.
        from crbio.input.cda import load_cda

        return load_cda(path, ids=ids)
    if suffix == ".hl7":
        try:
            # The HL7 v2 reader is optional: its absence is an input error, not a crash.
            from crbio.input.hl7v2 import load_oru
        except ImportError as e:
            raise InputError(
                f"{path.name}: HL7 v2 input is not available in this installation of crbio ({e})",
                code="input.unsupported",
            ) from None
        return load_oru(path)
    known = ", ".join(f"{s} ({what})" for s, what in SUFFIXES.items())
    raise InputError(
        f"{path.name}: unsupported input type {path.suffix or '(no suffix)'!r}: crbio reads {known}",
        code="input.unsupported",
    )
