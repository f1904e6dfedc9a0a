"""A laboratory's local analysis codes mapped to LOINC, read from a CSV file ``local,loinc[,unit]``.

An HL7 v2 result (``OBX-3``) often carries only the laboratory's own code; a CR-Bio entry needs
the LOINC code. The mapping is the laboratory's to maintain: one row per local code, the LOINC
code with its check digit and, optionally, the UCUM unit of the result, used when ``OBX-6``
holds a unit written the laboratory's way (``µmol/l``) rather than in UCUM (``umol/L``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from crbio.codes import check_loinc, check_ucum
from crbio.errors import ConfigurationError

__all__ = ["LoincEntry", "LoincMapping"]

_HEADER = ("local", "loinc", "unit")


@dataclass(frozen=True, slots=True)
class LoincEntry:
    """The LOINC code of one local code and, when given, the UCUM unit of its results."""

    loinc: str
    unit: str | None = None


class LoincMapping(Mapping[str, LoincEntry]):
    """Local code → :class:`LoincEntry`, read-only; codes are case-sensitive, as HL7 codes are."""

    __slots__ = ("_entries", "source")

    def __init__(self, entries: Mapping[str, LoincEntry] | None = None, *, source: str = "") -> None:
        self._entries: dict[str, LoincEntry] = dict(entries or {})
        self.source = source

    def __getitem__(self, code: str) -> LoincEntry:
        return self._entries[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"LoincMapping({len(self)} codes{', from ' + self.source if self.source else ''})"

    @classmethod
    def from_csv(cls, path: str | Path) -> LoincMapping:
        """Read a mapping file (UTF-8, ``,`` or ``;`` separated, optional header, ``#`` comments).

        Raises:
            ConfigurationError: the file cannot be read, or a row is malformed (its line is named).
        """
        file = Path(path)
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except OSError as e:
            raise ConfigurationError(
                f"LOINC mapping {file.name}: cannot be read ({e.strerror})", code="config.loinc-mapping"
            ) from e
        except UnicodeDecodeError as e:
            raise ConfigurationError(
                f"LOINC mapping {file.name}: not UTF-8 (byte {e.start})", code="config.loinc-mapping"
            ) from e
        return cls.parse(text, source=file.name)

    @classmethod
    def parse(cls, text: str, *, source: str = "mapping") -> LoincMapping:
        """Read a mapping from the text of a CSV file; every malformed row is listed at once.

        Raises:
            ConfigurationError: a row has the wrong number of columns, an invalid LOINC code or
                UCUM unit, or maps a local code already mapped differently.
        """
        lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)]
        rows = [(n, line) for n, line in lines if line.strip() and not line.lstrip().startswith("#")]
        # French spreadsheets write ";"-separated CSV; decide on the first row, as they do.
        delimiter = ";" if rows and ";" in rows[0][1] and "," not in rows[0][1] else ","
        entries: dict[str, LoincEntry] = {}
        errors: list[str] = []
        for number, line in rows:
            try:
                cells = [c.strip() for c in next(csv.reader(io.StringIO(line), delimiter=delimiter))]
            except csv.Error as e:  # e.g. a cell above the csv module's field size limit
                errors.append(f"line {number}: not CSV ({e})")
                continue
            if tuple(c.lower() for c in cells[:3]) in (_HEADER, _HEADER[:2]):
                continue
            if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
                errors.append(f"line {number}: expected local,loinc[,unit]")
                continue
            local, loinc = cells[0], cells[1]
            unit = cells[2] if len(cells) == 3 and cells[2] else None
            reason = check_loinc(loinc)
            if reason:
                errors.append(f"line {number}: LOINC {loinc!r} {reason}")
            if unit is not None and (reason := check_ucum(unit)):
                errors.append(f"line {number}: unit {unit!r} {reason}")
            entry = LoincEntry(loinc, unit)
            if entries.get(local, entry) != entry:
                errors.append(f"line {number}: local code {local!r} is already mapped differently")
            entries[local] = entry
        if errors:
            shown = "; ".join(errors[:20]) + (f"; … and {len(errors) - 20} more" if len(errors) > 20 else "")
            raise ConfigurationError(f"LOINC mapping {source}: {shown}", code="config.loinc-mapping")
        return cls(entries, source=source)
