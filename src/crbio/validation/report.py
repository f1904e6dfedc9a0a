"""Validation findings and reports, shared by every checker (XSD, crbio's rules, ANS kit)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Finding", "ValidationReport"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One failed check.

    Attributes:
        source: Which checker found it: ``xsd``, ``crbio``, ``pdfa``, ``ans:<schematron name>``.
        message: What is wrong, in the checker's words (ANS messages are kept verbatim).
        location: Where: an XPath, or a PDF object, when the checker gives one.
        line: The line in the XML document, when known.
        rule: The checker's rule id (schematron assert id, crbio rule code, veraPDF rule id).
        severity: ``error`` (the document does not conform) or ``warning`` (advice, such as
            the ART-DECOR profile's ``role="warning"`` asserts).
    """

    source: str
    message: str
    location: str | None = None
    line: int | None = None
    rule: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else (self.location or "")
        rule = f" [{self.rule}]" if self.rule else ""
        level = "warning: " if self.severity == "warning" else ""
        return f"{self.source}: {level}{where + ': ' if where else ''}{self.message}{rule}"


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """The outcome of validating one document.

    Attributes:
        document: An opaque label of the document (file name or document id), never patient data.
        checks: The checks that ran, in order (``xsd``, ``crbio``, ``ans:volet``…).
        findings: Every failed check; empty when the document conforms.
    """

    document: str
    checks: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether the document conforms: no finding of severity ``error``."""
        return not self.errors

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings that make the document non-conformant."""
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """The findings that are advice only."""
        return tuple(f for f in self.findings if f.severity == "warning")

    def merged(self, other: ValidationReport) -> ValidationReport:
        """This report with another one's checks and findings appended."""
        return ValidationReport(self.document, self.checks + other.checks, self.findings + other.findings)

    def summary(self) -> str:
        """One line per finding, headed by the verdict."""
        checks = ", ".join(self.checks) or "no check"
        warnings = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        head = (
            f"{self.document}: valid ({checks}){warnings}"
            if self.ok
            else f"{self.document}: {len(self.errors)} failed check(s){warnings} ({checks})"
        )
        return "\n".join([head, *(f"  - {f}" for f in self.findings)])
