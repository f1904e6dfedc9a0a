"""Validation of produced documents: official XSD, crbio's own rules, the ANS kit."""

from crbio.validation.anskit import AnsKit
from crbio.validation.report import Finding, ValidationReport
from crbio.validation.xsd import validate_xsd

__all__ = ["AnsKit", "Finding", "ValidationReport", "validate_xsd"]
