"""The font subsets crbio cuts itself are reportlab's, byte for byte, and valid TrueType files."""

from __future__ import annotations

import random
import struct

import pytest

from crbio.documents.pdf.fonts import Font, fonts


def _fonts() -> list[Font]:
    return [fonts().regular, fonts().bold]


def _file_checksum(program: bytes) -> int:
    padded = program + bytes(-len(program) & 3)
    return sum(struct.unpack(f">{len(padded) // 4}L", padded)) & 0xFFFFFFFF


@pytest.mark.parametrize("font", _fonts(), ids=lambda font: font.name)
def test_subsets_are_reportlabs(font: Font) -> None:
    rng = random.Random(20240104)
    code_points = sorted(font.face.charToGlyph)
    accented = [c for c in code_points if 0xC0 <= c <= 0x17F]  # composite glyphs in DejaVu
    cases = [
        [0, *map(ord, "Compte rendu d’examens biologiques 4,89\u00a0mmol/L")],
        [0, *accented],
        [0, 0x10FFFF, 0x0378, *map(ord, "ABC")],  # code points the font lacks map to .notdef
        [0, *code_points[:255]],
    ]
    cases += [[0, *rng.sample(code_points, rng.choice((1, 20, 120, 255)))] for _ in range(40)]
    for subset in cases:
        assert font.subset(subset) == bytes(font.face.makeSubset(list(subset)))


@pytest.mark.parametrize("font", _fonts(), ids=lambda font: font.name)
def test_subset_checksums_hold(font: Font) -> None:
    program = font.subset([0, *map(ord, "Résultat éèàç")])
    # The head table's checkSumAdjustment makes the whole file sum to the TrueType magic number.
    assert _file_checksum(program) == 0xB1B0AFBA
    tables = struct.unpack(">H", program[4:6])[0]
    for i in range(tables):
        tag, checksum, offset, length = struct.unpack(">4sLLL", program[12 + 16 * i : 28 + 16 * i])
        data = program[offset : offset + length]
        if tag == b"head":
            data = data[:8] + bytes(4) + data[12:]
        assert _file_checksum(data) == checksum, tag
