"""The machine-readable batch report, ``OUTDIR/batch-report.json``, written as the batch goes.

Entries are appended to a temporary file one by one, so a report of 100 000 inputs never
sits in memory; the header (version, options, start) comes first, the counts and the end
time last, and the file is renamed into place only when complete::

    {"format": "crbio.batch-report/1", "crbio_version": "…", "options": {…},
     "started_at": "…", "inputs": [{"path": …, "relative": …, "outcome": …, "outputs": […],
     "document_id": …, "error": {"code": …, "field": …, "message": …}, "seconds": …,
     "sha256": …}, …],
     "ended_at": "…", "elapsed_seconds": …, "counts": {"built": …, …}, "complete": true,
     "exit_status": 0}
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from crbio import __version__

__all__ = ["REPORT_FORMAT", "REPORT_NAME", "ReportWriter"]

REPORT_NAME = "batch-report.json"
REPORT_FORMAT = "crbio.batch-report/1"


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


class ReportWriter:
    """Stream a batch report into ``directory``; :meth:`finish` publishes it atomically.

    Args:
        directory: The batch's output directory.
        options: The batch's options, as JSON-serialisable values.
    """

    def __init__(self, directory: Path, options: dict[str, Any]) -> None:
        self.path = directory / REPORT_NAME
        self._temporary = directory / f".{REPORT_NAME}.tmp"
        self.started_at = _now()
        self._file: IO[str] = self._temporary.open("w", encoding="utf-8")
        self._first = True
        head = {
            "format": REPORT_FORMAT,
            "crbio_version": __version__,
            "options": options,
            "started_at": self.started_at,
        }
        self._file.write(json.dumps(head, ensure_ascii=False, indent=1)[:-2] + ',\n "inputs": [')

    def add(self, entry: dict[str, Any]) -> None:
        """Append one input's entry."""
        self._file.write(("\n  " if self._first else ",\n  ") + json.dumps(entry, ensure_ascii=False))
        self._first = False

    def finish(
        self, *, counts: dict[str, int], elapsed: float, complete: bool, exit_status: int | None
    ) -> Path:
        """Close the entry list with the counts and the end time, and publish the report.

        An interrupted batch (``complete`` false) publishes what it did, without an exit status.
        """
        tail = {
            "ended_at": _now(),
            "elapsed_seconds": round(elapsed, 3),
            "counts": counts,
            "complete": complete,
            "exit_status": exit_status,
        }
        body = json.dumps(tail, ensure_ascii=False, indent=1)[1:]  # without the opening brace
        self._file.write(("\n ]," if not self._first else "],") + body + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temporary, self.path)
        return self.path

    def abandon(self) -> None:
        """Drop the unfinished report (the previous complete one, if any, stays)."""
        if not self._file.closed:
            self._file.close()
        self._temporary.unlink(missing_ok=True)
