"""Validation of produced documents: official XSD, crbio's own rules, the ANS kit."""

from crbio.validation.report import Finding, ValidationReport

__all__ = ["Finding", "ValidationReport"]
