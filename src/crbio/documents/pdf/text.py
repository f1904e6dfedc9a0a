"""Styled text and line breaking.

A paragraph is a sequence of spans, each in one style. Lines break at ordinary spaces
only: no-break spaces (U+00A0, U+202F) keep a value with its unit and a word with the
French punctuation that follows it. A word wider than the line (an OID, a long
identifier) is cut between characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from crbio.documents.pdf.fonts import Font
from crbio.documents.pdf.painter import BLACK, Color, Painter

__all__ = ["Line", "Span", "Style", "wrap"]


@dataclass(frozen=True, slots=True)
class Style:
    """A font, a size, a colour and the line height."""

    font: Font
    size: float
    color: Color = BLACK
    leading_ratio: float = 1.22

    @property
    def leading(self) -> float:
        """The height of a line set in this style."""
        return self.size * self.leading_ratio

    def width(self, text: str) -> float:
        """The width of ``text`` in this style."""
        return self.font.width(text, self.size)


# Span and Line are built by the thousand per report and never changed afterwards; they are
# not frozen because a frozen dataclass sets every field through object.__setattr__, which
# made their construction a visible share of the rendering time.
@dataclass(slots=True)
class Span:
    """A piece of text in one style."""

    text: str
    style: Style


@dataclass(slots=True)
class Line:
    """One line of text, ready to draw: fragments placed from the line's left edge.

    Attributes:
        fragments: (x offset, text, style) of each run of one style.
        width: The width of the line's ink.
        height: The line height (the largest leading of its fragments).
        baseline: The distance from the top of the line to its baseline.
    """

    fragments: tuple[tuple[float, str, Style], ...]
    width: float
    height: float
    baseline: float = field(init=False)

    def __post_init__(self) -> None:
        # Centre the largest size in the line height; 0.8 em puts DejaVu's capitals and
        # ascenders inside the line, its descenders above the next one.
        fragments = self.fragments
        if len(fragments) == 1:
            size = fragments[0][2].size
        else:
            size = max((style.size for _, _, style in fragments), default=0.0)
        self.baseline = (self.height - size) / 2 + size * 0.8

    def draw(self, painter: Painter, x: float, top: float) -> None:
        """Draw the line with its top edge at ``top`` (PDF coordinates)."""
        baseline = top - self.baseline
        for dx, text, style in self.fragments:
            painter.text(x + dx, baseline, text, style.font, style.size, style.color)

    @property
    def text(self) -> str:
        """The line's text, for tests and debugging."""
        return "".join(text for _, text, _ in self.fragments)


# A word is one or more (text, style) pieces with no breakable space between them.
_Word = list[tuple[str, Style]]


def _words(spans: Iterable[Span]) -> list[list[_Word]]:
    """Split spans into paragraphs (at newlines) of words (at ordinary spaces)."""
    paragraphs: list[list[_Word]] = [[]]
    glue = False  # whether the next piece continues the current word
    for span in spans:
        for p, para_text in enumerate(span.text.split("\n")):
            if p:
                paragraphs.append([])
                glue = False
            words = paragraphs[-1]
            for w, piece in enumerate(para_text.split(" ")):
                if w:
                    glue = False
                if not piece:
                    continue
                if glue and words:
                    words[-1].append((piece, span.style))
                else:
                    words.append([(piece, span.style)])
                glue = True
            if para_text.endswith(" "):
                glue = False
    return paragraphs


def _cut(word: _Word, width: float) -> list[_Word]:
    """Cut a word wider than ``width`` into pieces that fit, between characters."""
    pieces: list[_Word] = [[]]
    used = 0.0
    for text, style in word:
        start = 0
        for i, char in enumerate(text):
            w = style.width(char)
            if used + w > width and (i > start or pieces[-1]):
                if i > start:
                    pieces[-1].append((text[start:i], style))
                pieces.append([])
                start, used = i, 0.0
            used += w
        if start < len(text):
            pieces[-1].append((text[start:], style))
    return [p for p in pieces if p]


def _space_after(word: _Word) -> float:
    """The width of the space that follows a word: a space in the style of its last piece."""
    return word[-1][1].width(" ")


def _word_width(word: _Word) -> float:
    return sum(style.width(text) for text, style in word)


def _line(words: Sequence[tuple[_Word, float]], default_height: float) -> Line:
    """Place the words of one line; consecutive pieces in one style become one fragment."""
    fragments: list[tuple[float, str, Style]] = []
    x = 0.0
    for index, (word, word_width) in enumerate(words):
        if index:
            x += _space_after(words[index - 1][0])
        cursor = x
        for position, (text, style) in enumerate(word):
            if fragments and fragments[-1][2] is style:
                # The space between two words of one style is written out, and drawn with its own width.
                separator = " " if position == 0 else ""
                last_x, last_text, _ = fragments[-1]
                fragments[-1] = (last_x, last_text + separator + text, style)
            else:
                fragments.append((cursor, text, style))
            cursor += style.width(text)
        x += word_width
    height = max((style.leading for _, _, style in fragments), default=default_height)
    return Line(tuple(fragments), x, height)


def _clean(span: Span) -> Span:
    """Tabs as spaces, CR LF and CR as LF: the fonts have no glyph for control characters."""
    text = span.text
    if "\r" in text or "\t" in text:
        return Span(text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "), span.style)
    return span


def _one_line(spans: Sequence[Span], width: float) -> Line | None:
    """The spans as a single line when they fit as written (most table cells), else None."""
    fragments: list[tuple[float, str, Style]] = []
    x = 0.0
    height = 0.0
    for span in spans:
        text, style = span.text, span.style
        if "\n" in text or "  " in text:
            return None
        if not fragments:
            text = text.lstrip(" ")
        fragments.append((x, text, style))
        x += style.width(text)
        if x > width:
            return None
        height = max(height, style.leading)
    last_x, last_text, last_style = fragments[-1]
    if last_text.endswith(" "):
        last_text = last_text.rstrip(" ")
        fragments[-1] = (last_x, last_text, last_style)
        x = last_x + last_style.width(last_text)
    return Line(tuple(fragments), x, height)


def wrap(spans: Iterable[Span], width: float) -> list[Line]:
    """Break styled text into lines no wider than ``width`` points.

    Empty text gives no line; each newline starts a new line (an empty paragraph gives
    an empty line).
    """
    lines: list[Line] = []
    spans = [_clean(span) for span in spans if span.text]
    if not spans:
        return lines
    leading = spans[0].style.leading
    fast = _one_line(spans, width)
    if fast is not None:
        return [fast]
    for paragraph in _words(spans):
        if not paragraph:
            lines.append(Line((), 0.0, leading))
            continue
        current: list[tuple[_Word, float]] = []
        used = 0.0
        for word in paragraph:
            word_width = _word_width(word)
            if word_width > width:
                if current:
                    lines.append(_line(current, leading))
                    current, used = [], 0.0
                *full, word = _cut(word, width)
                lines.extend(_line([(piece, _word_width(piece))], leading) for piece in full)
                word_width = _word_width(word)
            needed = word_width + (_space_after(current[-1][0]) if current else 0.0)
            if current and used + needed > width:
                lines.append(_line(current, leading))
                current, used, needed = [], 0.0, word_width
            current.append((word, word_width))
            used += needed
        if current:
            lines.append(_line(current, leading))
    return lines
