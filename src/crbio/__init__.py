"""crbio: Ségur-conformant CR-Bio documents from validated laboratory results.

    >>> import crbio
    >>> report = crbio.load_report("report.json")
    >>> documents = crbio.build(report)
    >>> documents.write("out/", stem="report")

The public names are listed in ``__all__``; they are imported on first use so that
the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from crbio.documents.build import Documents, build
    from crbio.documents.context import BuildContext, FixedClock, SequenceIds, SystemClock, UuidOids
    from crbio.errors import (
        BuildError,
        ConfigurationError,
        CrbioError,
        InputError,
        InvalidReport,
        Problem,
        ValidationFailed,
    )
    from crbio.input import load_report, report_from_mapping
    from crbio.model import Report
    from crbio.presentation import render_html
    from crbio.validation import Finding, ValidationReport
    from crbio.validation.validate import validate_document

_EXPORTS = {
    "build": "crbio.documents.build",
    "Documents": "crbio.documents.build",
    "BuildContext": "crbio.documents.context",
    "FixedClock": "crbio.documents.context",
    "SequenceIds": "crbio.documents.context",
    "SystemClock": "crbio.documents.context",
    "UuidOids": "crbio.documents.context",
    "load_report": "crbio.input",
    "report_from_mapping": "crbio.input",
    "Report": "crbio.model",
    "render_html": "crbio.presentation",
    "validate_document": "crbio.validation.validate",
    "Finding": "crbio.validation",
    "ValidationReport": "crbio.validation",
    "CrbioError": "crbio.errors",
    "InputError": "crbio.errors",
    "InvalidReport": "crbio.errors",
    "Problem": "crbio.errors",
    "ConfigurationError": "crbio.errors",
    "BuildError": "crbio.errors",
    "ValidationFailed": "crbio.errors",
}

__all__ = [
    "BuildContext",
    "BuildError",
    "ConfigurationError",
    "CrbioError",
    "Documents",
    "Finding",
    "FixedClock",
    "InputError",
    "InvalidReport",
    "Problem",
    "Report",
    "SequenceIds",
    "SystemClock",
    "UuidOids",
    "ValidationFailed",
    "ValidationReport",
    "build",
    "load_report",
    "render_html",
    "report_from_mapping",
    "validate_document",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'crbio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
