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
    """

    source: str
    message: str
    location: str | None = None
    line: int | None = None
    rule: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else (self.location or "")
        rule = f" [{self.rule}]" if self.rule else ""
        return f"{self.source}: {where + ': ' if where else ''}{self.message}{rule}"


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
        """Whether no check failed."""
        return not self.findings

    def merged(self, other: ValidationReport) -> ValidationReport:
        """This report with another one's checks and findings appended."""
        return ValidationReport(self.document, self.checks + other.checks, self.findings + other.findings)

    def summary(self) -> str:
        """One line per finding, headed by the verdict."""
        checks = ", ".join(self.checks) or "no check"
        if self.ok:
            return f"{self.document}: valid ({checks})"
        lines = [f"{self.document}: {len(self.findings)} failed check(s) ({checks})"]
        lines += [f"  - {f}" for f in self.findings]
        return "\n".join(lines)
