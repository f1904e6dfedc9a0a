"""The Jinja2 environment that renders the CDA templates of ``templates/cda``.

Templates stay declarative: everything that computes (HL7 timestamps, derived ids,
value types, French display) is a filter or a global defined here.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup, escape

from crbio import __version__
from crbio._resources import data_path
from crbio.documents.cda import fragments
from crbio.documents.cda.fragments import hl7_number, number_type
from crbio.identifiers import INS_OIDS, NATIONAL_PS_OID, finess_identifier, rpps_identifier
from crbio.model import CodedValue, IntervalValue, Observation, Quantity, RatioValue, TextValue
from crbio.model.common import format_date, format_datetime

__all__ = ["derived_oid", "derived_uuid", "environment"]

# Namespace of the UUIDs crbio derives from document ids (section ids, specimen ids…),
# so that the same input always yields the same document.
_NAMESPACE = uuid.UUID("5d1f2b8e-0c1a-4a8e-9f3e-6a2b7c9d1e40")


def derived_uuid(*parts: str) -> str:
    """A UUID (upper case, as the ANS examples write them) derived from the given strings."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts))).upper()


def derived_oid(base: str, purpose: str) -> str:
    """An OID under the UUID arc ``2.25``, derived from another OID and a purpose (``n1``…)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'{base}/{purpose}').int}"


def b64(data: bytes) -> str:
    """Bytes as base64 text, for a B64 observationMedia value."""
    return base64.b64encode(data).decode("ascii")


def value_type(value: object) -> str:
    """The xsi:type of an observation value."""
    if isinstance(value, Quantity):
        return "PQ"
    if isinstance(value, IntervalValue):
        return "IVL_PQ"
    if isinstance(value, CodedValue):
        return "CD"
    if isinstance(value, TextValue):
        return "ST"
    if isinstance(value, RatioValue):
        return "RTO"
    raise TypeError(f"unknown value type {type(value).__name__}")


def display(value: Any) -> str:
    """The French display of any model value (quantity, interval, coded, text, ratio, range)."""
    return "" if value is None else str(value.display())


def result_columns(observations: Sequence[Observation]) -> list[str]:
    """The optional columns a results table needs: those at least one result fills."""
    wanted = (("range", "reference_range"), ("interpretation", "interpretation"), ("previous", "previous"))
    return [column for column, attr in wanted if any(getattr(o, attr) for o in observations)]


def indent(value: object, width: int = 4) -> Markup:
    """Indent every line but the first of a macro's output (Jinja's own filter re-escapes each line).

    Macro output is already escaped markup; anything else is escaped first, so the
    filter can never let unescaped text through.
    """
    text = str(escape(value))
    return Markup(text.replace("\n", "\n" + " " * width))


@cache
def environment() -> jinja2.Environment:
    """The template environment, built once per process (templates are compiled on first use)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates", "cda"))),
        autoescape=True,  # every value is XML-escaped; the templates are the only markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # The templates are part of the installed package: a long batch must not pick up an
        # edit made halfway through, and checking every file's mtime per render costs time.
        auto_reload=False,
    )
    env.filters.update(
        indent=indent,
        ts=fragments.timestamp,
        b64=b64,
        fr_datetime=format_datetime,
        fr_date=format_date,
        hl7_number=hl7_number,
        value_type=value_type,
        number_type=number_type,
        display=display,
        rpps_id=rpps_identifier,
        finess_id=finess_identifier,
    )
    env.globals.update(
        uuid=derived_uuid,
        INS_OIDS=INS_OIDS,
        PS_OID=NATIONAL_PS_OID,
        crbio_version=__version__,
        result_columns=result_columns,
        # Written once per result: Python functions, not macros (see fragments).
        code=fragments.code,
        comment_act=fragments.comment_act,
        value_xml=fragments.value_xml,
        observation_xml=fragments.observation_xml,
        observation_rows=fragments.observation_rows,
    )
    return env
