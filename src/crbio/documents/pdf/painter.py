"""Low-level painting: PDF content operators, written page by page into a document.

A report draws hundreds of strings; they are written as PDF operators directly, with
text as hex strings of subset codes (no escaping to do). Colours are DeviceRGB (the
PDF/A output intent is sRGB) and nothing is transparent.
"""

from __future__ import annotations

from crbio.documents.pdf.fonts import Font
from crbio.documents.pdf.writer import Document

__all__ = ["BLACK", "WHITE", "Color", "Painter"]

Color = tuple[float, float, float]
BLACK: Color = (0.0, 0.0, 0.0)
WHITE: Color = (1.0, 1.0, 1.0)


def _rgb(color: Color) -> str:
    return f"{color[0]:.3f} {color[1]:.3f} {color[2]:.3f}"


class Painter:
    """Draws text, rectangles and rules on the pages of a document.

    Coordinates are PDF points from the bottom-left corner of the page. Operators are
    buffered and handed to the document when the page ends.
    """

    def __init__(self, document: Document) -> None:
        self._document = document
        self._ops: list[str] = []
        self._fill: Color | None = None

    def text(self, x: float, y: float, text: str, font: Font, size: float, color: Color = BLACK) -> None:
        """Draw one line of text with its baseline starting at (x, y)."""
        if not text:
            return
        if color != self._fill:
            self._set_fill(color)
        runs = self._document.font(font).runs(text)
        if len(runs) == 1:
            name, codes = runs[0]
            self._ops.append(f"BT {name} {size:g} Tf 1 0 0 1 {x:.2f} {y:.2f} Tm <{codes.hex()}> Tj ET")
        else:
            shown = " ".join(f"{name} {size:g} Tf <{codes.hex()}> Tj" for name, codes in runs)
            self._ops.append(f"BT 1 0 0 1 {x:.2f} {y:.2f} Tm {shown} ET")

    def rect(
        self,
        x: float,
        y: float,
        width: float,
        height: float,
        *,
        fill: Color | None = None,
        stroke: Color | None = None,
        line_width: float = 0.5,
    ) -> None:
        """Draw a rectangle whose bottom-left corner is (x, y), filled and/or stroked."""
        if fill is None and stroke is None:
            return
        shape = f"{x:.2f} {y:.2f} {width:.2f} {height:.2f} re"
        if fill is not None and fill != self._fill:
            self._set_fill(fill)
        if stroke is not None:
            paint = "B" if fill is not None else "S"
            self._ops.append(f"{line_width:.2f} w {_rgb(stroke)} RG {shape} {paint}")
        else:
            self._ops.append(f"{shape} f")

    def line(
        self, x1: float, y1: float, x2: float, y2: float, *, color: Color = BLACK, width: float = 0.5
    ) -> None:
        """Draw a straight rule from (x1, y1) to (x2, y2)."""
        self._ops.append(f"{width:.2f} w {_rgb(color)} RG {x1:.2f} {y1:.2f} m {x2:.2f} {y2:.2f} l S")

    def module_grid(
        self, x: float, y_top: float, module: float, runs: list[tuple[int, int, int]], color: Color = BLACK
    ) -> None:
        """Fill runs of square modules (row, first column, length) as one path, rows going down.

        The path is written in module units under a scaling matrix: whole numbers, so the
        module edges line up exactly.
        """
        if color != self._fill:
            self._set_fill(color)
        path = " ".join(f"{c} {-r - 1} {n} 1 re" for r, c, n in runs)
        self._ops.append(f"q {module:.4f} 0 0 {module:.4f} {x:.4f} {y_top:.4f} cm {path} f Q")

    def end_page(self) -> None:
        """Hand the page's operators to the document; the next drawing starts a new page."""
        self._document.add_page("\n".join(self._ops).encode("ascii"))
        self._ops = []
        self._fill = None

    def _set_fill(self, color: Color) -> None:
        self._ops.append(f"{_rgb(color)} rg")
        self._fill = color
