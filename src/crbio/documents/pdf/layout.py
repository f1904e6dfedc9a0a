"""Blocks and pagination: a small flow layout tailored to reports.

The content is a list of blocks of known height, measured once. Pagination places them
top to bottom, frame after frame:

* a block that does not fit in the space left goes to the next page, whole; only a
  block taller than a whole frame is split (between lines of text);
* a block marked ``keep_with_next`` (a title, a column header) moves to the next page
  with the block that follows it rather than end a page alone;
* when a page break falls inside a table, the blocks the next block names in its
  ``continuation`` (chapter title « (suite) », column headers) are repeated first.

Drawing happens after pagination, so every page knows the page count (« Page x/y »).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from crbio.documents.pdf.painter import Color, Painter
from crbio.documents.pdf.text import Line
from crbio.errors import BuildError

__all__ = [
    "Band",
    "Block",
    "Cell",
    "Frame",
    "Page",
    "Row",
    "Spacer",
    "paginate",
]


class Block(Protocol):
    """Something placed in the flow: measured, drawn, possibly split."""

    @property
    def height(self) -> float:
        """The height the block takes in the flow."""
        ...

    @property
    def keep_with_next(self) -> bool:
        """Whether the block must not end a page (titles, column headers)."""
        ...

    @property
    def continuation(self) -> Sequence[Block]:
        """Blocks to repeat at the top of a page that begins with this block."""
        ...

    def draw(self, painter: Painter, x: float, top: float) -> None:
        """Draw the block with its top-left corner at (x, top)."""
        ...

    def split(self, available: float) -> tuple[Block, Block] | None:
        """Cut the block so that its first part fits in ``available``; None if it cannot be cut."""
        ...


@dataclass(frozen=True, slots=True)
class Spacer:
    """Vertical space; dropped at the top of a page."""

    height: float
    keep_with_next: bool = False
    continuation: Sequence[Block] = ()

    def draw(self, painter: Painter, x: float, top: float) -> None:
        """Draw nothing."""

    def split(self, available: float) -> tuple[Block, Block] | None:
        """Never split: a spacer that does not fit is dropped by the page break."""
        return None


# Cell, Band and Row are built by the hundred per report and never changed afterwards; they
# are not frozen because a frozen dataclass sets every field through object.__setattr__,
# which made their construction a visible share of the rendering time.
@dataclass(slots=True)
class Cell:
    """Lines of text in a column of a band: left edge offset, width, alignment."""

    x: float
    width: float
    lines: tuple[Line, ...]
    align: str = "left"  # "left", "right" or "center"
    height: float = field(init=False)

    def __post_init__(self) -> None:
        self.height = sum(line.height for line in self.lines)

    def draw(self, painter: Painter, x: float, top: float) -> None:
        """Draw the lines, top-aligned."""
        for line in self.lines:
            dx = self.x
            if self.align == "right":
                dx += self.width - line.width
            elif self.align == "center":
                dx += (self.width - line.width) / 2
            line.draw(painter, x + dx, top)
            top -= line.height

    def cut(self, available: float) -> tuple[Cell, Cell]:
        """The lines that fit in ``available`` points, and the rest."""
        used = 0.0
        count = 0
        for line in self.lines:
            if used + line.height > available:
                break
            used += line.height
            count += 1
        return (
            Cell(self.x, self.width, self.lines[:count], self.align),
            Cell(self.x, self.width, self.lines[count:], self.align),
        )


@dataclass(slots=True)
class Band:
    """Cells side by side, with vertical padding above and below."""

    cells: tuple[Cell, ...]
    pad_top: float = 0.0
    pad_bottom: float = 0.0
    height: float = field(init=False)

    def __post_init__(self) -> None:
        tallest = max((cell.height for cell in self.cells), default=0.0)
        self.height = tallest + self.pad_top + self.pad_bottom


@dataclass(slots=True)
class Row:
    """The general block: bands of cells stacked, with an optional background and frame.

    A table row is one band (plus a band for its comment), a paragraph is one band of
    one cell, a heading is a paragraph with ``keep_with_next``.

    Attributes:
        bands: The bands, top to bottom.
        width: The width of the background and rules.
        background: Fill colour behind the block, if any.
        border: Colour of a frame around the block, if any.
        rule_below: Colour of a thin rule under the block, if any.
        space_before / space_after: Margins outside the background.
        decorate: Extra drawing, called with (painter, x, top of the background, height).
    """

    bands: tuple[Band, ...]
    width: float
    background: Color | None = None
    border: Color | None = None
    rule_below: Color | None = None
    space_before: float = 0.0
    space_after: float = 0.0
    keep_with_next: bool = False
    continuation: Sequence[Block] = ()
    decorate: Callable[[Painter, float, float, float], None] | None = field(default=None, compare=False)
    min_height: float = 0.0
    inner_height: float = field(init=False)  # the height of the background
    height: float = field(init=False)  # the inner height plus the outer margins

    def __post_init__(self) -> None:
        inner = max(sum(band.height for band in self.bands), self.min_height)
        self.inner_height = inner
        self.height = self.space_before + inner + self.space_after

    def draw(self, painter: Painter, x: float, top: float) -> None:
        """Draw the background, the frame, the cells, then the rule and decorations."""
        top -= self.space_before
        inner = self.inner_height
        if self.background is not None or self.border is not None:
            painter.rect(
                x, top - inner, self.width, inner, fill=self.background, stroke=self.border, line_width=0.6
            )
        y = top
        for band in self.bands:
            for cell in band.cells:
                cell.draw(painter, x, y - band.pad_top)
            y -= band.height
        if self.rule_below is not None:
            painter.line(x, top - inner, x + self.width, top - inner, color=self.rule_below, width=0.3)
        if self.decorate is not None:
            self.decorate(painter, x, top, inner)

    def split(self, available: float) -> tuple[Block, Block] | None:
        """Cut between lines: whole bands first, then the lines of the band that overflows."""
        room = available - self.space_before
        head: list[Band] = []
        for index, band in enumerate(self.bands):
            if band.height <= room:
                head.append(band)
                room -= band.height
                continue
            cut = [cell.cut(room - band.pad_top - band.pad_bottom) for cell in band.cells]
            first = Band(tuple(c for c, _ in cut), band.pad_top, band.pad_bottom)
            if any(c.lines for c, _ in cut):
                head.append(first)
                remainder = Band(tuple(r for _, r in cut), band.pad_top, band.pad_bottom)
                rest = (remainder, *self.bands[index + 1 :])
            else:
                rest = self.bands[index:]
            if not head:
                return None
            return (
                # The decoration (the Datamatrix) belongs to the top of the block.
                Row(
                    tuple(head),
                    self.width,
                    self.background,
                    self.border,
                    None,
                    self.space_before,
                    0.0,
                    False,
                    self.continuation,
                    self.decorate,
                ),
                Row(
                    tuple(rest),
                    self.width,
                    self.background,
                    self.border,
                    self.rule_below,
                    0.0,
                    self.space_after,
                    self.keep_with_next,
                    self.continuation,
                    None,
                ),
            )
        return None


@dataclass(frozen=True, slots=True)
class Frame:
    """The area of a page the flow fills: left edge, top and bottom (PDF coordinates)."""

    x: float
    top: float
    bottom: float

    @property
    def height(self) -> float:
        """The usable height."""
        return self.top - self.bottom


@dataclass
class Page:
    """A paginated page: its frame and the blocks placed on it, with their tops."""

    frame: Frame
    placements: list[tuple[Block, float]] = field(default_factory=list)


def _chain_height(queue: deque[Block]) -> float:
    """The height of the first block and the blocks it must stay with."""
    total = 0.0
    for block in queue:
        total += block.height
        if not block.keep_with_next:
            break
    return total


def paginate(blocks: Sequence[Block], first: Frame, others: Frame) -> list[Page]:
    """Place blocks on pages; the first page uses ``first``, the others ``others``.

    Raises:
        BuildError: A block cannot be split and is taller than a whole page.
    """
    queue: deque[Block] = deque(blocks)
    pages = [Page(first)]
    y = first.top
    fresh = True  # nothing placed on the current page yet

    def new_page() -> None:
        nonlocal y, fresh
        pages.append(Page(others))
        y = others.top
        fresh = True
        upcoming = queue[0] if queue else None
        if upcoming is not None:
            for repeated in upcoming.continuation:
                place(repeated)
        # Repeated headings are not content: the page still counts as fresh.
        fresh = True

    def place(block: Block) -> None:
        nonlocal y, fresh
        pages[-1].placements.append((block, y))
        y -= block.height
        fresh = False

    while queue:
        block = queue[0]
        frame = pages[-1].frame
        room = y - frame.bottom
        if fresh and isinstance(block, Spacer):
            queue.popleft()
            continue
        if block.height <= room:
            if block.keep_with_next and not fresh:
                chain = _chain_height(queue)
                if chain > room and chain <= others.height - _continuation_height(block):
                    new_page()
                    continue
            place(queue.popleft())
            continue
        if isinstance(block, Spacer):
            queue.popleft()
            new_page()
            continue
        if not fresh and block.height <= others.height - _continuation_height(block):
            new_page()
            continue
        parts = block.split(room)
        if parts is None:
            if not fresh:
                new_page()
                continue
            raise BuildError(
                "a block of the report is taller than a page and cannot be split", code="pdf.layout"
            )
        queue.popleft()
        place(parts[0])
        queue.appendleft(parts[1])
        new_page()
    return pages


def _continuation_height(block: Block) -> float:
    return sum(b.height for b in block.continuation)
