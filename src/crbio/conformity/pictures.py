"""A picture of a PDF's first page, for the evidence bundle (PDFium through pypdfium2)."""

from __future__ import annotations

import io

from crbio.errors import ConfigurationError

__all__ = ["INSTALL_HINT", "first_page_png", "require_pdfium"]

INSTALL_HINT = "pip install 'crbio[conformity]'"


def require_pdfium() -> None:
    """Raise a :class:`ConfigurationError` saying what to install when pypdfium2 is missing."""
    try:
        import pypdfium2  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f"the conformity runs picture each PDF with pypdfium2, which is not installed: {INSTALL_HINT}",
            code="config.extra",
        ) from None


def first_page_png(pdf: bytes, *, width: int = 900) -> tuple[bytes, int]:
    """The first page of a PDF as a PNG about ``width`` pixels wide, and the PDF's page count.

    Raises:
        ConfigurationError: pypdfium2 is not installed.
        ValueError: PDFium cannot read the PDF.
    """
    require_pdfium()
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(pdf)
    except pypdfium2.PdfiumError as error:
        raise ValueError(f"PDFium cannot read the PDF ({error})") from None
    try:
        pages = len(document)
        page = document[0]
        try:
            scale = width / page.get_width()
            bitmap = page.render(scale=scale)
            try:
                image = bitmap.to_pil()
                out = io.BytesIO()
                image.save(out, format="PNG")
            finally:
                bitmap.close()
        finally:
            page.close()
    finally:
        document.close()
    return out.getvalue(), pages
