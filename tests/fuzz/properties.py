"""The property every fuzzed input must have, checked the way a caller and the command line meet it.

An input is read and built through the public API (``crbio.load_report``/``report_from_mapping``,
``crbio.build``, ``Documents.write``). Either the documents are built, written, and both the N3
and the N1 pass the official CDA XSD and crbio's rules (:func:`crbio.validate_document`), or a
:class:`~crbio.errors.CrbioError` refuses the input naming the field, segment or element, and
``crbio build`` on the same file exits with 1 or 2 leaving no file behind. Any other exception
type fails the test (hypothesis then shrinks the input). Neither the error message, the command
line's output nor crbio's log lines may quote the patient's names, INS or birth date.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hypothesis import settings

import crbio
from crbio.cli import main as cli_main
from crbio.documents.build import Documents
from crbio.documents.context import BuildContext, FixedClock, SequenceIds
from crbio.errors import CrbioError, InputError, InvalidReport
from crbio.model import Report
from crbio.validation.validate import validate_document

from .strategies import HL7_FIXTURES, Secrets

#: Where a refusal names its place, by error code: the message must match (a field, a segment,
#: an element path, a line and column); the codes that concern the whole input say so.
_LOCATIONS: dict[str, re.Pattern[str]] = {
    "input.not-json": re.compile(r"at line \d+, column \d+|nested too deeply"),
    "input.encoding": re.compile(r"\(byte \d+\)"),
    "input.too-large": re.compile(r"too large"),
    "input.empty": re.compile(r"input is empty"),
    "input.not-hl7": re.compile(r"MSH|segment"),
    "input.xml": re.compile(r"line \d+|XML document too large|DOCTYPE|encoding|XML"),
    "input.cda.type": re.compile(r"ClinicalDocument|\w+: not a CDA document"),
    "input.cda.unstructured": re.compile(r"ClinicalDocument/"),
    "input.cda.header": re.compile(r"ClinicalDocument"),
    "input.cda.body": re.compile(r"ClinicalDocument"),
    "input.cda": re.compile(r"ClinicalDocument"),
}


def new_context() -> BuildContext:
    """A reproducible build context (fixed clock, sequential ids): a fresh one per input."""
    return BuildContext(
        clock=FixedClock(datetime.fromisoformat("2036-01-04T18:00:00+01:00")),
        ids=SequenceIds("1.2.250.1.999.9.9"),
    )


def location(error: CrbioError) -> str:
    """Where a refusal says the problem is: every problem's field, or the located part of the message."""
    if isinstance(error, InvalidReport):
        fields = [p.field for p in error.problems]
        return ", ".join(fields) if fields and all(f.strip() for f in fields) else ""
    pattern = _LOCATIONS.get(error.code)
    if pattern is None:
        return ""
    found = pattern.search(error.message)
    return found.group(0) if found else ""


def examples(ci: int, long: int | None = None) -> settings:
    """The settings of one property: ``ci`` examples in the ``ci`` profile, else its long budget.

    ``long`` is the property's number of examples in a long run (the ``long`` profile's 20 000 by
    default). ``CRBIO_FUZZ_EXAMPLES`` replaces it for every bulk property (1 000 examples or more),
    so a long run can be bounded in time; the ANS-kit properties (half a second per document)
    keep their small budget.
    """
    if settings.get_current_profile_name() == "ci":
        return settings(max_examples=ci)
    budget = long if long is not None else settings.default.max_examples
    override = os.environ.get("CRBIO_FUZZ_EXAMPLES")
    if override and budget >= 1000:
        budget = int(override)
    return settings(max_examples=budget)


@dataclass
class Outcome:
    """What became of one input: its documents, or the error that refused it."""

    documents: Documents | None = None
    error: CrbioError | None = None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def crbio_logs() -> Iterator[list[str]]:
    """The messages of crbio's log records emitted inside the block."""
    handler = _Collect()
    logger = logging.getLogger("crbio")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def assert_no_leak(text: str, secrets: Secrets, what: str) -> None:
    """``text`` quotes none of the patient data."""
    leaked = secrets.leaked(text)
    assert not leaked, f"{what} quotes patient data {leaked}: {text[:2000]!r}"


def _refused(error: CrbioError, secrets: Secrets, logs: list[str]) -> Outcome:
    assert isinstance(error, InputError), (
        f"refused with {type(error).__name__} ({error.code}), not an InputError"
    )
    assert location(error), f"refusal names no field/segment/element [{error.code}]: {error}"
    assert_no_leak(str(error), secrets, "error message")
    assert_no_leak("\n".join(logs), secrets, "log lines")
    return Outcome(error=error)


def check(read: Callable[[], Report], secrets: Secrets) -> Outcome:
    """Read and build one input; assert the property; return what became of it.

    Exceptions other than :class:`CrbioError` are not caught: they fail the test as they are.
    """
    with crbio_logs() as logs:
        try:
            report = read()
        except CrbioError as e:
            return _refused(e, secrets, logs)
        try:
            documents = crbio.build(report, context=new_context())
        except InputError as e:
            # The build refuses what only the whole report shows (its times), naming the field.
            if not e.message.startswith("$."):
                raise AssertionError(f"accepted input, then refused by the build without a field: {e}") from e
            return _refused(e, secrets, logs)
        except CrbioError as e:
            # The input was accepted, then crbio could not make conformant documents of it.
            raise AssertionError(f"accepted input, but the build failed: {type(e).__name__}: {e}") from e
        assert_no_leak("\n".join(logs), secrets, "log lines")
    with tempfile.TemporaryDirectory(prefix="crbio-fuzz-") as tmp:
        written = documents.write(tmp, stem="fuzz")
        assert sorted(p.name for p in written) == sorted(
            ["fuzz.n3.xml", "fuzz.n1.xml", "fuzz.pdf", *(["crbio-cda.xsl"] if len(written) == 4 else [])]
        )
        for kind in ("n3", "n1"):
            data = Path(tmp, f"fuzz.{kind}.xml").read_bytes()
            outcome = validate_document(data, label=f"fuzz {kind}")
            assert outcome.ok, outcome.summary()
    return Outcome(documents=documents)


def check_cli_refuses(data: bytes, suffix: str, secrets: Secrets) -> None:
    """``crbio build`` on the input, as a file, exits with 1 or 2 and leaves OUTDIR empty.

    ``--debug`` makes any exception other than a :class:`CrbioError` propagate instead of
    becoming exit status 70, so a failure shows its traceback.
    """
    with tempfile.TemporaryDirectory(prefix="crbio-fuzz-") as tmp:
        source = Path(tmp, "in", f"input{suffix}")
        source.parent.mkdir()
        source.write_bytes(data)
        if suffix == ".hl7":
            # What the ORU does not carry comes from the configuration beside the message.
            for name in ("crbio-oru.toml", "local-loinc.csv"):
                shutil.copy(HL7_FIXTURES / name, source.parent / name)
        out = Path(tmp, "out")
        stdout, stderr = io.StringIO(), io.StringIO()
        with crbio_logs() as logs, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = cli_main(["--debug", "build", str(source), "-o", str(out)])
        assert status in (1, 2), f"crbio build exited with {status}: {stderr.getvalue()}"
        left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
        assert not left, f"a refused input left files in OUTDIR: {left}"
        assert_no_leak(stdout.getvalue() + stderr.getvalue(), secrets, "crbio build output")
        assert_no_leak("\n".join(logs), secrets, "log lines")
