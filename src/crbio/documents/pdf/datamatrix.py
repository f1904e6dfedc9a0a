"""The INS Datamatrix: its payload (ANS « Format datamatrix INS » v2.2) and its vector drawing.

The payload is a 26-character header, ``IS01`` and 22 reserved ``0``, then the INS
traits as blocks ``<id><value>``: S1 matricule, S2 OID of the assigning authority,
S3 birth given names, S4 birth family name, S5 sex, S6 birth date ``JJ-MM-AAAA``,
S7 birthplace (INSEE COG code, optional). A GS character (0x1D) ends a variable-length
field that is shorter than its maximum and is not the last one: a 19-character OID is
followed by GS, a 20-character one is not. The ANS validator rejects symbols whose
header is not C40-encoded, so the whole message is encoded in C40 (first codeword 230).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from ppf.datamatrix import DataMatrix  # importing it registers the "datamatrix.C40" codec

from crbio.documents.pdf.painter import WHITE, Painter
from crbio.errors import BuildError
from crbio.model import Patient

__all__ = [
    "CAPTION",
    "HEADER",
    "QUIET_ZONE",
    "Symbol",
    "ins_datamatrix_payload",
    "symbol",
]

#: The fixed header: marker ``IS``, version ``01``, 22 reserved zeros.
HEADER: Final = "IS01" + "0" * 22
#: The mention printed under the symbol, as the ANS stylesheets print it.
CAPTION: Final = "INS à scanner"
#: Light modules around the symbol; ISO/IEC 16022 asks for one, two leave room for print spread.
QUIET_ZONE: Final = 2

_GS: Final = "\x1d"
# (identifier, minimum length, maximum length, what the field is, for error messages)
_FIELDS: Final = (
    ("S1", 15, 15, "INS matricule"),
    ("S2", 19, 20, "INS assigning authority OID"),
    ("S3", 1, 100, "birth given names"),
    ("S4", 1, 100, "birth family name"),
    ("S5", 1, 1, "sex"),
    ("S6", 10, 10, "birth date"),
    ("S7", 5, 5, "birthplace code"),
)
# Every value must be printable ASCII: C40 has no other characters, and INSi traits
# (capitals, space, apostrophe, hyphen) never need more.
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


def ins_datamatrix_payload(patient: Patient) -> str | None:
    """The text the INS Datamatrix encodes, or None when the identity is not qualified.

    Only a qualified identity may carry the INS, hence the Datamatrix. The traits are
    written as INSi returns them (the input format enforces the INSi lexical profile).

    Raises:
        BuildError: A trait the Datamatrix needs is missing or cannot be encoded (the
            message names the field, never its value).
    """
    ins = patient.qualified_ins
    if ins is None:
        return None
    if patient.birth_date is None:
        raise BuildError("INS Datamatrix: the birth date (S6) is required", code="pdf.ins-datamatrix")
    if patient.sex.value not in ("M", "F"):
        raise BuildError("INS Datamatrix: the sex (S5) must be M or F", code="pdf.ins-datamatrix")
    born = patient.birth_date
    values = [
        ins.matricule,
        ins.oid,
        patient.birth_given_names,
        patient.birth_family_name,
        patient.sex.value,
        f"{born.day:02d}-{born.month:02d}-{born.year:04d}",
    ]
    if patient.birthplace_code:
        values.append(patient.birthplace_code)
    parts = [HEADER]
    last = len(values) - 1
    for index, ((ident, low, high, what), value) in enumerate(zip(_FIELDS, values, strict=False)):
        if not (low <= len(value) <= high) or not _PRINTABLE.fullmatch(value):
            raise BuildError(
                f"INS Datamatrix: the {what} ({ident}) must be {low} to {high} printable ASCII characters",
                code="pdf.ins-datamatrix",
            )
        parts.append(ident + value)
        if index != last and len(value) < high:
            parts.append(_GS)
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Symbol:
    """An ECC200 Data Matrix symbol as rows of dark (1) and light (0) modules, no quiet zone."""

    rows: tuple[tuple[int, ...], ...]

    @property
    def size(self) -> int:
        """The number of modules on a side (the symbol is square)."""
        return len(self.rows)

    def draw(self, painter: Painter, x: float, y_top: float, module: float) -> float:
        """Draw the symbol with its quiet zone, top-left corner at (x, y_top); return its side in points.

        The light modules and the quiet zone are painted white, so the symbol reads on
        any background; each run of dark modules in a row is one rectangle of one path.
        """
        side = (self.size + 2 * QUIET_ZONE) * module
        painter.rect(x, y_top - side, side, side, fill=WHITE)
        runs: list[tuple[int, int, int]] = []  # (row, first column, length) of each run of dark modules
        for r, row in enumerate(self.rows):
            c = 0
            width = len(row)
            while c < width:
                if row[c]:
                    start = c
                    while c < width and row[c]:
                        c += 1
                    runs.append((r, start, c - start))
                else:
                    c += 1
        painter.module_grid(x + QUIET_ZONE * module, y_top - QUIET_ZONE * module, module, runs)
        return side


@lru_cache(maxsize=256)  # a patient's later reports and amended versions reuse the symbol
def symbol(payload: str) -> Symbol:
    """Encode a payload as a square ECC200 symbol, in C40 throughout (ppf-datamatrix).

    Raises:
        BuildError: The payload cannot be encoded in C40 or is too long for the largest symbol.
    """
    try:
        payload.encode("datamatrix.C40")
        rows = DataMatrix(payload, codecs=["C40"]).matrix
    except ValueError:
        raise BuildError(
            "INS Datamatrix: the payload cannot be encoded in C40 or is too long for a symbol",
            code="pdf.ins-datamatrix",
        ) from None
    return Symbol(tuple(tuple(row) for row in rows))
