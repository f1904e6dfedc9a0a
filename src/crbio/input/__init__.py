"""Readers that turn what an SGL hands over into the report model."""

from crbio.input.json_report import load_report, report_from_mapping

__all__ = ["load_report", "report_from_mapping"]
