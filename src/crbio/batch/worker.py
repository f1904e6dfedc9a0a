"""What a batch worker process does with one input: skip it, or build, check and write it.

Each worker process is set up once by :func:`init_worker` (the ANS kit, when asked for, is
compiled there, once per process) and then runs :func:`process` on task after task. A task
carries the input's path and its manifest entry; the worker reads and hashes the input,
skips it when the manifest entry still matches the input and the outputs on disk, else
builds the documents and writes them atomically itself. It returns a small
:class:`Outcome`: no document bytes cross back to the parent, only names, hashes and, for
``--send``, the resolved report model (a few kilobytes) that the outbox needs to plan
deliveries — the parent reads the N3 and PDF back from the files just written, which also
makes sure what is queued is exactly what is on disk.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from crbio._files import read_input, write_atomically
from crbio.batch.discover import reader_for, reader_settings
from crbio.batch.manifest import ManifestEntry
from crbio.documents.build import Documents, build
from crbio.documents.cda import DEFAULT_STYLESHEET_HREF
from crbio.documents.context import BuildContext, FixedClock, resolve_document
from crbio.errors import ConfigurationError, CrbioError, InputError, InvalidReport, ValidationFailed
from crbio.model import Report

__all__ = ["OUTPUT_SUFFIXES", "ErrorInfo", "Outcome", "Settings", "Task", "init_worker", "process"]

#: The outputs of one input, by kind, as ``crbio build`` names them.
OUTPUT_SUFFIXES = {"n3": ".n3.xml", "n1": ".n1.xml", "pdf": ".pdf"}
#: How many problems or findings an error entry lists (the first ones, in document order).
MAX_DETAILS = 20


@dataclass(frozen=True, slots=True)
class Settings:
    """What every task of a batch shares; sent to each worker process once.

    Attributes:
        outdir: The output directory.
        validate: ``off`` (no check), ``own`` (official XSD and crbio's rules, as ``crbio
            build``), or ``full`` (those and the official ANS kit).
        options_key: The manifest's options key for this batch.
        stylesheet: The stylesheet href the documents point to (None: the lab's, else crbio's).
        ans_kit: The ANS kit folder, for ``full``.
        ans_cache: Where the kit's transpiled schematrons are cached, as the parent sees it
            (a forkserver's environment may be older than the parent's).
        debug: Put the traceback of an unexpected error in its entry.
    """

    outdir: str
    validate: str
    options_key: str
    stylesheet: str | None = None
    ans_kit: str | None = None
    ans_cache: str | None = None
    debug: bool = False


@dataclass(frozen=True, slots=True)
class Task:
    """One input to process.

    Attributes:
        index: The input's position in the batch.
        path: The input file.
        relative: Its path under the output directory (POSIX), suffix included.
        previous: Its manifest entry, if it has one.
        need_report: Return the resolved report even when skipping (``--send`` and the
            document was not queued into this outbox yet).
        want_report: Return the resolved report of a new build (``--send``).
    """

    index: int
    path: str
    relative: str
    previous: ManifestEntry | None = None
    need_report: bool = False
    want_report: bool = False


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why an input was not converted: a stable code, the field (JSON path or XPath), a message.

    ``details`` lists every problem (``field``, ``rule``, ``message``) when there are several.
    Messages never quote patient data.
    """

    code: str
    message: str
    field: str | None = None
    details: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The error as a report entry's ``error`` object."""
        data: dict[str, Any] = {"code": self.code, "field": self.field, "message": self.message}
        if self.details:
            data["details"] = list(self.details)
        return data

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        more = f" (and {len(self.details) - 1} more)" if len(self.details) > 1 else ""
        return f"{where}{self.message}{more} [{self.code}]"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one input; small, so it crosses the process boundary cheaply.

    Attributes:
        index: The task's index.
        outcome: ``built``, ``skipped``, ``invalid`` (a document does not conform),
            ``unusable`` (the input cannot be converted) or ``failed`` (an internal error).
        input_sha256: SHA-256 of the input, when it could be read.
        outputs: Each output's path under the output directory → its SHA-256.
        document_id: The N3 document's OID.
        created_at: The document's creation time (ISO 8601).
        stylesheet: The stylesheet href the documents point to.
        error: Why it was not converted.
        report: The resolved report, for ``--send``.
        removed: Outputs of an earlier build removed because the input no longer converts.
        fatal: A configuration problem that stops the whole batch (the ANS kit cannot be
            loaded, the output directory cannot be written).
        seconds: Time spent in the worker.
    """

    index: int
    outcome: str
    input_sha256: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    document_id: str | None = None
    created_at: str | None = None
    stylesheet: str | None = None
    error: ErrorInfo | None = None
    report: Report | None = None
    removed: tuple[str, ...] = ()
    fatal: str | None = None
    seconds: float = 0.0


# --- per-process state ----------------------------------------------------------------------

_settings: Settings | None = None
_kit: Any = None
_kit_error: str | None = None
_stylesheet_dirs: set[str] = set()


def init_worker(settings: Settings, parent_pid: int | None = None) -> None:
    """Set up a worker process: keep the settings, compile the ANS kit when asked for.

    With ``parent_pid``, a watchdog thread ends this process when the batch's parent is
    gone (killed outright, its pool never shut down), so no orphan outlives it.
    """
    global _settings, _kit, _kit_error
    _settings = settings
    _kit = None
    _kit_error = None
    _stylesheet_dirs.clear()
    # POSIX only: on Windows, os.kill(pid, 0) would send CTRL_C_EVENT.
    if parent_pid is not None and parent_pid != os.getpid() and os.name == "posix":
        threading.Thread(
            target=_watch_parent, args=(parent_pid,), name="crbio-batch-watchdog", daemon=True
        ).start()
    if settings.validate == "full":
        try:
            from crbio.validation.anskit import AnsKit

            cache = Path(settings.ans_cache) if settings.ans_cache else None
            kit = AnsKit(Path(settings.ans_kit or "."), cache_dir=cache)
            kit.transverse()  # compile the N1 profiles now too, not on the first N1
            _kit = kit
        except CrbioError as e:
            _kit_error = f"the ANS kit cannot be used: {e}"


def _watch_parent(parent_pid: int) -> None:
    # The process that forked this one (the batch, or the forkserver that exits with it)
    # changing means the batch is gone; the pid check covers a fork straight from the batch.
    forked_by = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != forked_by:
            os._exit(1)
        try:
            os.kill(parent_pid, 0)
        except (ProcessLookupError, PermissionError):  # gone, or its pid reused by another user
            os._exit(1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _error_info(error: CrbioError) -> ErrorInfo:
    """The report's view of an error: code, field and message, never patient data."""
    if isinstance(error, InvalidReport):
        problems = error.problems
        if not problems:
            return ErrorInfo(error.code, error.message)
        return ErrorInfo(
            error.code,
            problems[0].message,
            problems[0].field,
            tuple({"field": p.field, "rule": p.rule, "message": p.message} for p in problems[:MAX_DETAILS])
            if len(problems) > 1
            else (),
        )
    if isinstance(error, ValidationFailed):
        findings = error.report.errors
        if not findings:
            return ErrorInfo(error.code, error.message)
        first = findings[0]
        return ErrorInfo(
            error.code,
            f"{error.report.document}: {first.source}: {first.message}",
            first.location,
            tuple(
                {
                    "field": f.location,
                    "line": f.line,
                    "rule": f.rule,
                    "source": f.source,
                    "message": f.message,
                }
                for f in findings[:MAX_DETAILS]
            )
            if len(findings) > 1
            else (),
        )
    message = error.message
    # Some input errors lead with the JSON path they are about ("$.validated_at: …").
    if message.startswith("$") and ": " in message:
        where, _, rest = message.partition(": ")
        return ErrorInfo(error.code, rest, where)
    return ErrorInfo(error.code, message)


def _output_paths(relative: str) -> dict[str, PurePosixPath]:
    rel = PurePosixPath(relative)
    stem = Path(rel.name).stem
    return {kind: rel.with_name(stem + suffix) for kind, suffix in OUTPUT_SUFFIXES.items()}


def _outputs_match(outdir: Path, outputs: dict[str, str]) -> bool:
    """Whether every output recorded exists with the recorded content."""
    if not outputs:
        return False
    for name, digest in outputs.items():
        try:
            if _sha256((outdir / name).read_bytes()) != digest:
                return False
        except OSError:
            return False
    return True


class _OutputError(Exception):
    """Writing the outputs failed: the output folder, not the input, is the problem."""


def _ensure_stylesheet(directory: Path, href: str, outdir: Path) -> None:
    """Put crbio's stylesheet beside the documents that point to it, once per folder and process."""
    if href != DEFAULT_STYLESHEET_HREF or str(directory) in _stylesheet_dirs:
        return
    from crbio.presentation import stylesheet_path

    content = stylesheet_path().read_bytes()
    target = directory / DEFAULT_STYLESHEET_HREF
    try:
        current = target.read_bytes()
    except OSError:
        current = None
    if current != content:
        try:
            write_atomically(directory, {DEFAULT_STYLESHEET_HREF: content}, root=outdir)
        except OSError as e:
            raise _OutputError(e.strerror or type(e).__name__) from e
    _stylesheet_dirs.add(str(directory))


def _resolved_as_built(report: Report, previous: ManifestEntry) -> Report:
    """The report resolved with the document id and creation time its outputs were built with."""

    class _Recorded:
        def new_oid(self) -> str:
            return previous.document_id

    context = BuildContext(clock=FixedClock(datetime.fromisoformat(previous.created_at)), ids=_Recorded())
    return resolve_document(report, context)


def _read_input(path: Path) -> bytes:
    from crbio.input.cda import MAX_CDA_BYTES
    from crbio.input.json_report import MAX_BYTES

    return read_input(path, max_bytes=max(MAX_BYTES, MAX_CDA_BYTES))


def process(task: Task) -> Outcome:
    """Skip, or build, check and write, one input; never raises for a bad input."""
    settings = _settings
    assert settings is not None, "init_worker() first"
    start = time.perf_counter()
    if _kit_error is not None:
        return Outcome(task.index, "failed", fatal=_kit_error)
    outdir = Path(settings.outdir)
    path = Path(task.path)
    previous = task.previous
    digest: str | None = None
    try:
        raw = _read_input(path)
        digest = _sha256(raw + reader_settings(path))
        reader = reader_for(path)
        if reader is None:
            raise InputError(f"unsupported input type {path.suffix!r}", code="input.unsupported")
        if (
            previous is not None
            and previous.input_sha256 == digest
            and previous.options == settings.options_key
            and _outputs_match(outdir, previous.outputs)
        ):
            _ensure_stylesheet((outdir / task.relative).parent, previous.stylesheet, outdir)
            report = _resolved_as_built(reader(path, raw), previous) if task.need_report else None
            return Outcome(
                task.index,
                "skipped",
                digest,
                dict(previous.outputs),
                previous.document_id,
                previous.created_at,
                previous.stylesheet,
                report=report,
                seconds=time.perf_counter() - start,
            )
        documents = _build(reader(path, raw), task.relative, settings)
        outputs = _write(documents, outdir, task.relative)
        created = documents.report.document.created_at
        assert created is not None
        return Outcome(
            task.index,
            "built",
            digest,
            outputs,
            documents.document_id,
            created.isoformat(),
            documents.stylesheet_href,
            report=documents.report if task.want_report else None,
            seconds=time.perf_counter() - start,
        )
    except _OutputError as e:
        return Outcome(task.index, "failed", digest, fatal=f"-o: cannot write into {outdir} ({e})")
    except ConfigurationError as e:
        return Outcome(task.index, "failed", digest, fatal=str(e))
    except CrbioError as e:
        return Outcome(
            task.index,
            "invalid" if isinstance(e, ValidationFailed) else "unusable",
            digest,
            error=_error_info(e),
            removed=_remove_stale(outdir, previous),
            seconds=time.perf_counter() - start,
        )
    except Exception as e:  # a crbio defect: one input must not stop the batch
        # Only the exception's type: library messages may quote document content.
        message = f"internal error ({type(e).__name__}); run `crbio --debug build` on this file and report it"
        if settings.debug:
            message += "\n" + traceback.format_exc()
        return Outcome(
            task.index,
            "failed",
            digest,
            error=ErrorInfo("internal", message),
            removed=_remove_stale(outdir, previous),
            seconds=time.perf_counter() - start,
        )


def _build(report: Report, relative: str, settings: Settings) -> Documents:
    full = settings.validate == "full"
    # With the kit, the full validation below replaces build's own XSD + rules check.
    documents = build(report, stylesheet_href=settings.stylesheet, validate=settings.validate == "own")
    if full:
        from crbio.validation.validate import validate_document

        for kind, data in (("n3", documents.n3), ("n1", documents.n1)):
            outcome = validate_document(data, label=f"{relative} {kind}", ans_kit=_kit)
            if not outcome.ok:
                raise ValidationFailed(outcome)
    return documents


def _write(documents: Documents, outdir: Path, relative: str) -> dict[str, str]:
    """Write the three documents atomically; their paths under ``outdir`` → SHA-256."""
    paths = _output_paths(relative)
    directory = outdir / PurePosixPath(relative).parent
    contents = {"n3": documents.n3, "n1": documents.n1, "pdf": documents.pdf}
    try:
        # root: a symlink planted in the output folder cannot lead the mirrored folders out of it.
        write_atomically(
            directory, {paths[kind].name: contents[kind] for kind in OUTPUT_SUFFIXES}, root=outdir
        )
    except OSError as e:
        raise _OutputError(e.strerror or type(e).__name__) from e
    _ensure_stylesheet(directory, documents.stylesheet_href, outdir)
    return {paths[kind].as_posix(): _sha256(contents[kind]) for kind in OUTPUT_SUFFIXES}


def _remove_stale(outdir: Path, previous: ManifestEntry | None) -> tuple[str, ...]:
    """Remove an earlier build's outputs of an input that no longer converts."""
    if previous is None:
        return ()
    removed = []
    inside = outdir.resolve()
    for name in previous.outputs:
        target = outdir / name
        # The manifest lives in the output folder: a name it lists is only removed inside it.
        if ".." in PurePosixPath(name).parts or not target.parent.resolve().is_relative_to(inside):
            continue
        try:
            target.unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # left in place; the entry is forgotten, so the next run rebuilds or retries
    return tuple(removed)
