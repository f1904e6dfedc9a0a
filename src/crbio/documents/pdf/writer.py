"""The PDF object graph: pages of content operators and the TrueType subsets they use.

A report's PDF is small and simple: A4 pages, two embedded TrueType fonts, DeviceRGB
colours. It is assembled directly as pikepdf objects, which the PDF/A step then
completes and qpdf writes (and compresses) in C. Going through reportlab's canvas
instead meant formatting every PDF object in Python, then parsing the result again
with pikepdf: twice the work for the same bytes.

Fonts are embedded the way reportlab embeds them: simple TrueType fonts of at most 256
codes each, symbolic, without /Encoding, with /Widths and a /ToUnicode map so that
text can be extracted and searched.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import pikepdf
from pikepdf import Array, Dictionary, Name

from crbio.documents.pdf.fonts import Font

__all__ = ["Document", "FontUse"]

_FF_SYMBOLIC = 4
_FF_NONSYMBOLIC = 32
_REPLACEMENT = "\ufffd"


class FontUse:
    """One font within one document: the codes given to its characters, 256 per subset.

    Characters get codes in order of first use, so the same report always gives the same
    codes. Code 0 of each subset is the font's .notdef glyph and is never drawn (PDF/A
    validators reject it): a character the font lacks is drawn as U+FFFD, the replacement
    character, visibly.
    """

    __slots__ = ("_font", "_index", "_known", "_other", "_subset0", "subsets")

    def __init__(self, font: Font, index: int) -> None:
        self._font = font
        self._index = index
        self.subsets: list[list[int]] = [[0]]  # code points, by code, of each subset
        self._known: set[str] = set()
        self._subset0: dict[int, int] = {}  # ord(character) -> code, for characters of subset 0
        self._other: dict[str, tuple[int, int]] = {}  # character -> (subset, code), subsets >= 1

    @property
    def font(self) -> Font:
        """The font."""
        return self._font

    def resource(self, subset: int) -> str:
        """The resource name of a subset in the pages' font dictionary."""
        return f"/F{self._index}S{subset}"

    def runs(self, text: str) -> list[tuple[str, bytes]]:
        """The text as (resource name, codes) runs, one per subset change."""
        if not self._known.issuperset(text):
            self._register(text)
        if not self._other or self._other.keys().isdisjoint(text):
            # The common case, one subset: a single translate, in C.
            return [(self.resource(0), text.translate(self._subset0).encode("latin-1"))]
        runs: list[tuple[int, bytearray]] = []
        for char in text:
            subset, code = self._other.get(char) or (0, self._subset0[ord(char)])
            if not runs or runs[-1][0] != subset:
                runs.append((subset, bytearray()))
            runs[-1][1].append(code)
        return [(self.resource(subset), bytes(codes)) for subset, codes in runs]

    def _register(self, text: str) -> None:
        for char in dict.fromkeys(text):  # in order of appearance: deterministic codes
            if char in self._known:
                continue
            self._known.add(char)
            if not self._font.has_glyph(char):
                self._substitute(char)
                continue
            self._assign(char)

    def _substitute(self, char: str) -> None:
        """Draw a character the font lacks with the replacement character's code."""
        replacement = _REPLACEMENT if self._font.has_glyph(_REPLACEMENT) else "?"
        if replacement not in self._known:
            self._known.add(replacement)
            self._assign(replacement)
        if replacement in self._other:
            self._other[char] = self._other[replacement]
        else:
            self._subset0[ord(char)] = self._subset0[ord(replacement)]

    def _assign(self, char: str) -> None:
        """Give a character the next free code, opening a new subset when the last one is full."""
        if len(self.subsets[-1]) == 256:
            self.subsets.append([0])
        subset = len(self.subsets) - 1
        code = len(self.subsets[-1])
        self.subsets[-1].append(ord(char))
        if subset == 0:
            self._subset0[ord(char)] = code
        else:
            self._other[char] = (subset, code)


@dataclass
class Document:
    """A PDF being written: page contents in order and the fonts they use."""

    width: float
    height: float
    pages: list[bytes] = field(default_factory=list)
    _fonts: dict[str, FontUse] = field(default_factory=dict)

    def font(self, font: Font) -> FontUse:
        """The use of ``font`` in this document (created on first call)."""
        use = self._fonts.get(font.name)
        if use is None:
            use = self._fonts[font.name] = FontUse(font, len(self._fonts) + 1)
        return use

    def add_page(self, content: bytes) -> None:
        """Append a page with the given content stream."""
        self.pages.append(content)

    def build(self) -> pikepdf.Pdf:
        """The document as a pikepdf object graph (not yet PDF/A: no output intent, no metadata)."""
        pdf = pikepdf.new()
        font_dict = Dictionary()
        tag = 0
        for use in self._fonts.values():
            for number, subset in enumerate(use.subsets):
                base = f"{_subset_tag(tag)}+{use.font.name}"
                tag += 1
                font_dict[use.resource(number)] = _embed(pdf, use.font, base, subset)
        resources = pdf.make_indirect(Dictionary(Font=font_dict, ProcSet=Array([Name.PDF, Name.Text])))
        media_box = Array([0, 0, round(self.width, 4), round(self.height, 4)])
        for content in self.pages:
            page = Dictionary(
                Type=Name.Page, MediaBox=media_box, Resources=resources, Contents=pdf.make_stream(content)
            )
            pdf.pages.append(pikepdf.Page(page))
        return pdf


def _subset_tag(n: int) -> str:
    """Six capital letters naming a subset (PDF 1.4 §5.5.3): ``AAAAAA``, ``AAAAAB``, and so on."""
    letters = []
    for _ in range(6):
        n, r = divmod(n, 26)
        letters.append(chr(65 + r))
    return "".join(reversed(letters))


def _embed(pdf: pikepdf.Pdf, font: Font, base: str, subset: list[int]) -> pikepdf.Object:
    """The font dictionary of one subset, with its program, descriptor and ToUnicode map."""
    face = font.face
    program = font.subset(subset)
    font_file = pdf.make_stream(b"", Length1=len(program))
    # Compressed here, at zlib's fastest level: half the time of qpdf's default level for
    # 5 % more bytes. qpdf copies streams that are already Flate-encoded as they are.
    font_file.write(zlib.compress(program, 1), filter=Name.FlateDecode)
    descriptor = Dictionary(
        Type=Name.FontDescriptor,
        Ascent=face.ascent,
        CapHeight=face.capHeight,
        Descent=face.descent,
        # Simple TrueType fonts without /Encoding must be flagged symbolic (PDF/A-1 6.3.7).
        Flags=(face.flags & ~_FF_NONSYMBOLIC) | _FF_SYMBOLIC,
        FontBBox=Array(face.bbox),
        FontName=Name("/" + base),
        ItalicAngle=face.italicAngle,
        StemV=face.stemV,
        FontFile2=font_file,
        MissingWidth=face.defaultWidth,
    )
    to_unicode = pdf.make_stream(_to_unicode_cmap(base, subset))
    return pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.TrueType,
            BaseFont=Name("/" + base),
            FirstChar=0,
            LastChar=len(subset) - 1,
            Widths=Array([round(font.glyph_width(code_point), 3) for code_point in subset]),
            FontDescriptor=pdf.make_indirect(descriptor),
            ToUnicode=to_unicode,
        )
    )


def _to_unicode_cmap(name: str, subset: list[int]) -> bytes:
    """The ToUnicode CMap of a subset: code i is ``subset[i]``, in UTF-16 (surrogate pairs beyond U+FFFF).

    reportlab's own CMap writes code points beyond U+FFFF as five hex digits, which
    readers misread, and puts all the mappings in one block where the CMap format allows 100.
    """
    mappings = [
        f"<{code:02X}> <{chr(point).encode('utf-16-be').hex().upper()}>" for code, point in enumerate(subset)
    ]
    blocks = "".join(
        f"{len(chunk)} beginbfchar\n" + "\n".join(chunk) + "\nendbfchar\n"
        for chunk in (mappings[i : i + 100] for i in range(0, len(mappings), 100))
    )
    return (
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
        f"/CIDSystemInfo << /Registry ({name}) /Ordering ({name}) /Supplement 0 >> def\n"
        f"/CMapName /{name} def\n/CMapType 2 def\n"
        f"1 begincodespacerange\n<00> <{len(subset) - 1:02X}>\nendcodespacerange\n"
        f"{blocks}endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend"
    ).encode("ascii")
