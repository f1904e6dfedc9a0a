"""The vendored DejaVu Sans fonts: loaded once per process, measured fast, subset per document.

The fonts ship inside the package (``fonts/``, with their licence) so that a PDF renders
identically on every machine; each PDF embeds the subset of glyphs it uses, as PDF/A
requires. reportlab reads the TrueType files and cuts the subsets.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from reportlab.pdfbase.ttfonts import TTFontFace

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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def width(self, text: str, size: float) -> float:
        """The advance width of ``text`` set in this font at ``size`` points."""
        # dict.get over the characters runs in C: this is the hot loop of line breaking.
        return sum(map(self._widths.get, text, repeat(self._default))) * size / 1000.0

    def glyph_width(self, code_point: int) -> float:
        """The advance width of one character, in thousandths of an em."""
        return float(self.face.getCharWidth(code_point))

    def has_glyph(self, char: str) -> bool:
        """Whether the font draws this character."""
        return ord(char) in self.face.charToGlyph

    def subset(self, code_points: Sequence[int]) -> bytes:
        """A TrueType program with the glyphs of ``code_points``; code ``i`` draws ``code_points[i]``."""
        # The face reads its file through a shared cursor: one subset at a time.
        with self._lock:
            return bytes(self.face.makeSubset(list(code_points)))


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
    return Font(name=name, face=face, _widths=widths, _default=float(face.defaultWidth))
