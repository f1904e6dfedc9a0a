"""The vendored DejaVu Sans fonts: loaded once per process, measured fast, subset per document.

The fonts ship inside the package (``fonts/``, with their licence) so that a PDF renders
identically on every machine; each PDF embeds the subset of glyphs it uses, as PDF/A
requires. reportlab reads the TrueType files; :class:`_Subsetter` cuts the subsets, byte for
byte as reportlab's ``makeSubset`` does, from tables and checksums prepared once per font
instead of re-reading and re-summing the whole file for every document.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from reportlab.pdfbase.ttfonts import (
    GF_ARG_1_AND_2_ARE_WORDS,
    GF_MORE_COMPONENTS,
    GF_WE_HAVE_A_SCALE,
    GF_WE_HAVE_A_TWO_BY_TWO,
    GF_WE_HAVE_AN_X_AND_Y_SCALE,
    TTFontFace,
)

from crbio.errors import ConfigurationError

__all__ = ["Font", "Fonts", "fonts"]

FONT_DIR = Path(__file__).resolve().parent / "fonts"


@dataclass(frozen=True, eq=False)
class Font:
    """A TrueType font and its advance widths.

    Attributes:
        name: The PostScript name of the font (``DejaVuSans-Bold``).
        face: The parsed font file.
    """

    name: str
    face: TTFontFace = field(repr=False)
    _widths: dict[str, float] = field(repr=False)
    _default: float = field(repr=False)
    _subsetter: _Subsetter = field(repr=False)

    def width(self, text: str, size: float) -> float:
        """The advance width of ``text`` set in this font at ``size`` points."""
        # No memo of measured texts: they include patients' names, which a process-wide cache
        # would keep across a whole batch. dict.get over the characters runs in C anyway.
        return sum(map(self._widths.get, text, repeat(self._default))) * size / 1000.0

    def glyph_width(self, code_point: int) -> float:
        """The advance width of one character, in thousandths of an em."""
        return float(self.face.getCharWidth(code_point))

    def has_glyph(self, char: str) -> bool:
        """Whether the font draws this character."""
        return ord(char) in self.face.charToGlyph

    def subset(self, code_points: Sequence[int]) -> bytes:
        """A TrueType program with the glyphs of ``code_points``; code ``i`` draws ``code_points[i]``.

        The bytes are those of reportlab's ``TTFontFile.makeSubset`` (a test compares them).
        Safe to call from several threads: nothing shared is modified but a cache of
        immutable values.
        """
        return self._subsetter.subset(code_points)


@dataclass(frozen=True)
class Fonts:
    """The fonts a CR-Bio PDF uses."""

    regular: Font
    bold: Font


_lock = threading.Lock()
_fonts: Fonts | None = None


def fonts() -> Fonts:
    """The vendored fonts, read on first use (once per process).

    Raises:
        ConfigurationError: A font file is missing from the installation.
    """
    global _fonts
    if _fonts is None:
        with _lock:
            if _fonts is None:
                _fonts = Fonts(regular=_load("DejaVuSans.ttf"), bold=_load("DejaVuSans-Bold.ttf"))
    return _fonts


def _load(filename: str) -> Font:
    path = FONT_DIR / filename
    if not path.is_file():
        raise ConfigurationError(
            f"the font file {filename} is missing: the installation is incomplete",
            code="config.resource-missing",
        )
    face = TTFontFace(str(path))
    name = face.name.decode("ascii") if isinstance(face.name, bytes) else str(face.name)
    widths = {chr(code): float(w) for code, w in face.charWidths.items()}
    return Font(
        name=name, face=face, _widths=widths, _default=float(face.defaultWidth), _subsetter=_Subsetter(face)
    )


def _checksum(data: bytes) -> int:
    """The TrueType checksum of a table: its big-endian 32-bit words (zero-padded) summed modulo 2**32."""
    if len(data) & 3:
        data += bytes(4 - (len(data) & 3))
    words: tuple[int, ...] = struct.unpack(f">{len(data) >> 2}L", data)
    return sum(words) & 0xFFFFFFFF


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) & 3)


def _set_ushort(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(">H", value) + data[offset + 2 :]


class _Subsetter:
    """TrueType subsets of one font, written exactly as reportlab's ``makeSubset`` writes them.

    reportlab reads the glyph table through a file cursor and computes every checksum over
    the bytes it has just written (the whole file twice, in Python), for each document.
    Here the tables copied unchanged, each glyph's bytes and their checksums are kept after
    first use, and the file's checksum is the sum of its header's, its directory's and its
    tables' (every table starts on a 4-byte boundary, so they add up).
    """

    # Tables reportlab copies from the font unchanged (when present).
    _COPIED = ("name", "OS/2", "cvt ", "fpgm", "prep")

    def __init__(self, face: TTFontFace) -> None:
        self._char_to_glyph: dict[int, int] = face.charToGlyph
        self._glyph_pos: list[int] = face.glyphPos
        self._hmetrics: list[tuple[int, int]] = face.hmetrics
        self._glyf: bytes = bytes(face.get_table("glyf"))
        self._hhea: bytes = bytes(face.get_table("hhea"))
        self._maxp: bytes = bytes(face.get_table("maxp"))
        # The head table's checkSumAdjustment is zero while the checksums are computed.
        head = bytes(face.get_table("head"))
        self._head: bytes = head[:8] + bytes(4) + head[12:]
        fixed: dict[str, bytes] = {}
        for tag in self._COPIED:
            try:
                fixed[tag] = bytes(face.get_table(tag))
            except KeyError:
                continue  # cvt, fpgm and prep are optional
        fixed["post"] = b"\x00\x03\x00\x00" + bytes(face.get_table("post"))[4:16] + bytes(16)
        self._fixed = {tag: (data, _checksum(data)) for tag, data in fixed.items()}
        # Glyph index -> (padded bytes, checksum) of a simple glyph, or the offsets and glyph
        # indexes of a composite glyph's components (their indexes change in each subset).
        self._simple: dict[int, tuple[bytes, int]] = {}
        self._composite: dict[int, tuple[bytes, tuple[tuple[int, int], ...]]] = {}

    def _glyph(self, index: int) -> None:
        """Read a glyph into one of the two caches."""
        start = self._glyph_pos[index]
        data = self._glyf[start : self._glyph_pos[index + 1]]
        if len(data) > 2 and struct.unpack_from(">h", data)[0] < 0:
            components = []
            at = 10
            flags = GF_MORE_COMPONENTS
            while flags & GF_MORE_COMPONENTS:
                flags, component = struct.unpack_from(">HH", data, at)
                components.append((at + 2, component))
                at += 4
                at += 4 if flags & GF_ARG_1_AND_2_ARE_WORDS else 2
                if flags & GF_WE_HAVE_A_SCALE:
                    at += 2
                elif flags & GF_WE_HAVE_AN_X_AND_Y_SCALE:
                    at += 4
                elif flags & GF_WE_HAVE_A_TWO_BY_TWO:
                    at += 8
            self._composite[index] = (data, tuple(components))
        else:
            padded = _padded(data)
            self._simple[index] = (padded, _checksum(padded))

    def subset(self, subset: Sequence[int]) -> bytes:
        """The subset program: code ``i`` maps to the glyph of ``subset[i]``."""
        char_to_glyph = self._char_to_glyph
        glyph_map = [0]  # new glyph index -> original glyph index
        glyph_set = {0: 0}  # original glyph index -> new glyph index
        for code in subset:
            original = char_to_glyph.get(code, 0)
            if original not in glyph_set:
                glyph_set[original] = len(glyph_map)
                glyph_map.append(original)
        # Components of composite glyphs join the subset after the glyphs drawn, in the order
        # reportlab finds them (the list grows while it is walked).
        simple, composite = self._simple, self._composite
        n = 0
        while n < len(glyph_map):
            original = glyph_map[n]
            n += 1
            if original not in simple and original not in composite:
                self._glyph(original)
            if original in composite:
                for _, component in composite[original][1]:
                    if component not in glyph_set:
                        glyph_set[component] = len(glyph_map)
                        glyph_map.append(component)

        tables = {tag: entry for tag, entry in self._fixed.items()}
        count = len(glyph_map)

        hmetrics = self._hmetrics
        hmtx: list[int] = []
        for original in glyph_map:
            advance, lsb = hmetrics[original]
            hmtx.append(int(advance))
            hmtx.append(int(lsb))
        # A final run of equal advances is written once, then only the left side bearings.
        n = len(hmtx) - 2
        while n and hmtx[n] == hmtx[n - 2]:
            n -= 2
        n += 2
        h_metrics = n >> 1
        hmtx = hmtx[:n] + hmtx[n + 1 :: 2]
        tables["hmtx"] = self._entry(struct.pack(f">{len(hmtx)}H", *hmtx))
        tables["hhea"] = self._entry(_set_ushort(self._hhea, 34, h_metrics))
        tables["maxp"] = self._entry(_set_ushort(self._maxp, 4, count))
        # cmap format 6 over codes 0..n-1, as reportlab writes it.
        cmap = [0, 1, 1, 0, 0, 12, 6, 10 + len(subset) * 2, 0, 0, len(subset)]
        cmap += [glyph_set[char_to_glyph.get(code, 0)] for code in subset]
        tables["cmap"] = self._entry(struct.pack(f">{len(cmap)}H", *cmap))

        pieces: list[bytes] = []
        offsets: list[int] = []
        position = 0
        glyf_sum = 0
        for original in glyph_map:
            offsets.append(position)
            entry = simple.get(original)
            if entry is None:
                data, components = composite[original]
                patched = bytearray(data)
                for at, component in components:
                    struct.pack_into(">H", patched, at, glyph_set[component])
                padded = _padded(bytes(patched))
                entry = (padded, _checksum(padded))
            pieces.append(entry[0])
            glyf_sum += entry[1]
            position += len(entry[0])
        offsets.append(position)
        glyf = b"".join(pieces)
        tables["glyf"] = (glyf, glyf_sum & 0xFFFFFFFF)
        if (position + 1) >> 1 > 0xFFFF:
            loc_format = 1
            loca = struct.pack(f">{len(offsets)}L", *offsets)
        else:
            loc_format = 0
            loca = struct.pack(f">{len(offsets)}H", *[offset >> 1 for offset in offsets])
        tables["loca"] = self._entry(loca)
        tables["head"] = self._entry(_set_ushort(self._head, 50, loc_format))
        return self._write(tables)

    @staticmethod
    def _entry(data: bytes) -> tuple[bytes, int]:
        return data, _checksum(data)

    @staticmethod
    def _write(tables: dict[str, tuple[bytes, int]]) -> bytes:
        """The font file: header, table directory (tags sorted), padded tables, head adjusted."""
        count = len(tables)
        search_range, selector = 1, 0
        while search_range * 2 <= count:
            search_range *= 2
            selector += 1
        search_range *= 16
        header = struct.pack(">lHHHH", 0x00010000, count, search_range, selector, count * 16 - search_range)
        directory: list[bytes] = []
        body: list[bytes] = []
        offset = 12 + count * 16
        total = _checksum(header)
        head_at = 0
        for tag, (data, checksum) in sorted(tables.items()):
            if tag == "head":
                head_at = offset
            entry = tag.encode("latin-1") + struct.pack(">LLL", checksum, offset, len(data))
            directory.append(entry)
            total += _checksum(entry) + checksum
            padded = _padded(data)
            body.append(padded)
            offset += len(padded)
        program = bytearray(header + b"".join(directory) + b"".join(body))
        struct.pack_into(">L", program, head_at + 8, (0xB1B0AFBA - total) & 0xFFFFFFFF)
        return bytes(program)
