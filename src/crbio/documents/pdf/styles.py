"""Page geometry, colours and text styles of the printed report (A4, French)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Final

from reportlab.lib.pagesizes import A4

from crbio.documents.pdf.fonts import fonts
from crbio.documents.pdf.painter import Color
from crbio.documents.pdf.text import Style

__all__ = ["MM", "PAGE", "Colors", "PageGeometry", "Styles", "styles"]

MM: Final = 72 / 25.4


@dataclass(frozen=True)
class PageGeometry:
    """A4 portrait and its margins, in points."""

    width: float = A4[0]
    height: float = A4[1]
    margin_x: float = 14 * MM
    margin_top: float = 12 * MM
    margin_bottom: float = 17 * MM

    @property
    def content_width(self) -> float:
        """The width between the side margins."""
        return self.width - 2 * self.margin_x


PAGE: Final = PageGeometry()


class Colors:
    """The palette: dark blue for structure, red for what must not be missed."""

    TEXT: Final[Color] = (0.0, 0.0, 0.0)
    MUTED: Final[Color] = (0.32, 0.32, 0.32)
    BLUE: Final[Color] = (0.08, 0.22, 0.42)
    CHAPTER_BG: Final[Color] = (0.87, 0.91, 0.96)
    HEADER_BG: Final[Color] = (0.92, 0.92, 0.92)
    BOX_BG: Final[Color] = (0.965, 0.965, 0.965)
    RULE: Final[Color] = (0.72, 0.72, 0.72)
    ALERT: Final[Color] = (0.72, 0.0, 0.0)
    ALERT_BG: Final[Color] = (1.0, 0.93, 0.93)


@dataclass(frozen=True)
class Styles:
    """The text styles, built once per process."""

    body: Style
    body_bold: Style
    small: Style
    small_bold: Style
    label: Style
    tiny: Style
    title: Style
    lab_name: Style
    section: Style
    chapter: Style
    battery: Style
    column: Style
    flag: Style
    result_abnormal: Style
    alert: Style
    caption: Style


@cache
def styles() -> Styles:
    """The styles of the report (fonts are registered on first call)."""
    f = fonts()
    return Styles(
        body=Style(f.regular, 8.5),
        body_bold=Style(f.bold, 8.5),
        small=Style(f.regular, 7.0, Colors.MUTED),
        small_bold=Style(f.bold, 7.0, Colors.MUTED),
        label=Style(f.regular, 8.0, Colors.MUTED),
        tiny=Style(f.regular, 6.5, Colors.MUTED),
        title=Style(f.bold, 12.0, Colors.BLUE),
        lab_name=Style(f.bold, 12.0, Colors.BLUE),
        section=Style(f.bold, 9.0, Colors.BLUE),
        chapter=Style(f.bold, 10.0, Colors.BLUE),
        battery=Style(f.bold, 8.8),
        column=Style(f.bold, 7.0, Colors.MUTED),
        flag=Style(f.bold, 8.5, Colors.ALERT),
        result_abnormal=Style(f.bold, 8.5, Colors.ALERT),
        alert=Style(f.bold, 9.5, Colors.ALERT),
        caption=Style(f.regular, 6.0),
    )
