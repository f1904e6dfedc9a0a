"""Run a batch: discover inputs, keep a bounded window of them in a process pool, record outcomes.

The parent process is the only one to touch the manifest, the report and the outbox; the
workers build and write documents. Inputs are discovered lazily and at most
``window`` of them are in flight, so memory stays flat whatever the number of inputs.
Outcomes are taken in input order, which keeps the report in the order of the inputs
and independent of ``--jobs``: a slow input holds back the recording of the ones after it,
not the work on them, as long as the window (eight inputs per worker) holds them.

With ``--send``, a built document's manifest entry is committed before it is queued, and
marked queued after: a batch killed in between queues it again on the next run, with the
document id and creation time recorded in the manifest, and the outbox ignores a delivery
it already holds (its key is document, version, destination and action), so nothing is
ever queued twice.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crbio import __version__
from crbio.batch.discover import Input, count_inputs, discover
from crbio.batch.manifest import Manifest, ManifestEntry
from crbio.batch.report import ReportWriter
from crbio.batch.worker import OUTPUT_SUFFIXES, ErrorInfo, Outcome, Settings, Task, init_worker, process
from crbio.errors import ConfigurationError, CrbioError, InputError

if TYPE_CHECKING:
    from crbio.dispatch import DispatchConfig, Outbox

__all__ = [
    "OUTCOMES",
    "BatchListener",
    "BatchOptions",
    "BatchResult",
    "default_jobs",
    "run_batch",
]

log = logging.getLogger("crbio.batch.run")

#: Every outcome an input can have, in the order the counts list them.
OUTCOMES = ("built", "skipped", "invalid", "unusable", "failed")
VALIDATE_LEVELS = ("off", "own", "full")
#: A worker process dying on the same input this many times gives up on that input.
_MAX_ATTEMPTS = 2
# The temporary names write_atomically() gives, left behind when a batch is killed mid-write.
_STALE_TEMPORARY = re.compile(r"\A\..+\.(?:n3\.xml|n1\.xml|pdf|xsl)\.[^.]+\.tmp\Z")


def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch.

    Attributes:
        outdir: Where the documents, the manifest and the report go.
        jobs: Worker processes (default: every core).
        validate: ``off``, ``own`` (XSD and crbio's rules, the default) or ``full`` (and the
            official ANS kit, compiled once per worker).
        stylesheet: The stylesheet href the documents point to (default: the lab's, else crbio's).
        ans_kit: The ANS kit folder, for ``full``.
        send: Queue every converted document into this configuration's outbox.
        window: Inputs in flight at once (default: eight per worker).
        debug: Put the traceback of internal errors in their entries.
    """

    outdir: Path
    jobs: int = field(default_factory=default_jobs)
    validate: str = "own"
    stylesheet: str | None = None
    ans_kit: Path | None = None
    send: DispatchConfig | None = None
    window: int | None = None
    debug: bool = False

    @property
    def key(self) -> str:
        """What the outputs depend on besides the input: crbio's version and the output options.

        A manifest entry with another key is built again.
        """
        return f"crbio={__version__}|validate={self.validate}|stylesheet={self.stylesheet or ''}"

    def to_dict(self) -> dict[str, Any]:
        """The options as the report lists them."""
        from crbio.dispatch.outbox_backends import outbox_identity

        return {
            "outdir": str(self.outdir),
            "jobs": self.jobs,
            "validate": self.validate,
            "stylesheet": self.stylesheet,
            "ans_kit": str(self.ans_kit) if self.ans_kit else None,
            "send": self.send is not None,
            "outbox": outbox_identity(self.send) if self.send is not None else None,
        }


@dataclass
class BatchResult:
    """What a batch did.

    Attributes:
        counts: Inputs per outcome (every outcome of :data:`OUTCOMES` is present).
        report_path: The report written.
        elapsed: Seconds from start to end.
        queued: Deliveries newly queued into the outbox (``--send``).
    """

    counts: dict[str, int]
    report_path: Path
    elapsed: float
    queued: int = 0

    @property
    def total(self) -> int:
        """How many inputs the batch saw."""
        return sum(self.counts.values())

    @property
    def exit_status(self) -> int:
        """The command's exit status: the worst outcome wins.

        0 when every input converted, 1 when a document did not conform, 2 when an input was
        unusable, 70 when crbio failed on one.
        """
        return _exit_status(self.counts)


def _exit_status(counts: dict[str, int]) -> int:
    if counts.get("failed"):
        return 70
    if counts.get("unusable"):
        return 2
    if counts.get("invalid"):
        return 1
    return 0


class BatchListener(Protocol):
    """Follows a batch: a progress bar, log lines."""

    def total(self, count: int) -> None:
        """The number of inputs, once counted (called from another thread)."""

    def entry(self, entry: dict[str, Any], counts: dict[str, int]) -> None:
        """One input is done: its report entry, and the counts so far."""


class _Quiet:
    def total(self, count: int) -> None:
        pass

    def entry(self, entry: dict[str, Any], counts: dict[str, int]) -> None:
        pass


@dataclass
class _Slot:
    """One input in the window: known outcome already (discovery error) or a future."""

    input: Input
    task: Task | None
    future: Future[Outcome]
    attempts: int = 1


def _resolved(outcome: Outcome) -> Future[Outcome]:
    future: Future[Outcome] = Future()
    future.set_result(outcome)
    return future


def _pool_context() -> Any:
    # Not fork: the parent runs threads (progress, counting) and holds SQLite connections.
    # The forkserver preloads crbio once, so each worker starts in milliseconds.
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["crbio.batch.worker"])
        return context
    return multiprocessing.get_context("spawn")


def _lock(outdir: Path) -> int:
    """Hold an exclusive lock on the output directory for the batch's life (POSIX only)."""
    fd = os.open(outdir / ".crbio-batch.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one batch per directory is up to the operator
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CrbioError(f"{outdir}: another crbio batch is writing into it", code="batch.busy") from None
    return fd


def _remove_stale_temporaries(outdir: Path) -> int:
    """Remove the half-written files a killed batch left (never seen as outputs: hidden names)."""
    removed = 0
    for folder, dirs, files in os.walk(outdir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if _STALE_TEMPORARY.match(name):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed


class _Batch:
    def __init__(self, inputs: Sequence[str | Path], options: BatchOptions, listener: BatchListener) -> None:
        self.inputs = inputs
        self.options = options
        self.listener = listener
        self.outdir = options.outdir
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.queued = 0
        self.worker_deaths = 0
        self.window = options.window or max(4, 8 * options.jobs)
        self.settings = Settings(
            outdir=str(self.outdir),
            validate=options.validate,
            options_key=options.key,
            stylesheet=options.stylesheet,
            ans_kit=str(options.ans_kit) if options.ans_kit else None,
            ans_cache=_ans_cache() if options.validate == "full" else None,
            debug=options.debug,
        )
        self.outbox: Outbox | None = None
        self.outbox_key: str | None = None
        self.pool: ProcessPoolExecutor | None = None
        self.manifest: Manifest
        self.report: ReportWriter

    # -- the pool ------------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=max(1, self.options.jobs),
            mp_context=_pool_context(),
            initializer=init_worker,
            initargs=(self.settings, os.getpid()),
        )

    def _submit(self, task: Task) -> Future[Outcome]:
        assert self.pool is not None
        try:
            return self.pool.submit(process, task)
        except BrokenProcessPool as e:  # noticed, and the pool renewed, when this slot is reached
            future: Future[Outcome] = Future()
            future.set_exception(e)
            return future

    # -- discovery -----------------------------------------------------------------------

    def _slot(self, item: Input, index: int) -> _Slot:
        """The window slot of an input: a task for the pool, or an outcome known already."""
        if item.error is not None:
            return _Slot(item, None, _resolved(self._error_outcome(index, item.error)))
        # Case-folded: macOS and Windows file systems are not case-sensitive.
        first = self.manifest.claim(item.output_stem.as_posix().casefold(), str(item.path))
        if first != str(item.path):
            error = InputError(f"its outputs would overwrite those of {first}", code="batch.clash")
            return _Slot(item, None, _resolved(self._error_outcome(index, error)))
        relative = item.relative.as_posix()
        previous = self.manifest.get(relative)
        send = self.outbox is not None
        task = Task(
            index=index,
            path=str(item.path),
            relative=relative,
            previous=previous,
            need_report=send and (previous is None or previous.queued_outbox != self.outbox_key),
            want_report=send,
        )
        return _Slot(item, task, self._submit(task))

    @staticmethod
    def _error_outcome(index: int, error: CrbioError) -> Outcome:
        return Outcome(index, "unusable", error=ErrorInfo(error.code, error.message))

    def _count_in_background(self, stop: threading.Event) -> threading.Thread:
        def count() -> None:
            try:
                total = count_inputs(self.inputs, exclude=self.outdir)
            except Exception:  # counting is only for the progress bar
                return
            if not stop.is_set():
                self.listener.total(total)

        thread = threading.Thread(target=count, name="crbio-batch-count", daemon=True)
        thread.start()
        return thread

    # -- recording -----------------------------------------------------------------------

    def _record(self, slot: _Slot, outcome: Outcome) -> None:
        item = slot.input
        relative = item.relative.as_posix()
        entry: dict[str, Any] = {
            "path": str(item.path),
            "relative": relative,
            "outcome": outcome.outcome,
            "outputs": sorted(outcome.outputs),
            "document_id": outcome.document_id,
            "error": outcome.error.to_dict() if outcome.error else None,
            "seconds": round(outcome.seconds, 3),
        }
        if outcome.input_sha256:
            entry["sha256"] = outcome.input_sha256
        if outcome.removed:
            entry["removed_outputs"] = list(outcome.removed)
        if outcome.outcome in ("built", "skipped"):
            assert outcome.input_sha256 and outcome.document_id and outcome.created_at
            previous = slot.task.previous if slot.task else None
            queued_into = None
            if outcome.outcome == "skipped":
                # The entry is unchanged: the outputs are those it records.
                queued_into = previous.queued_outbox if previous is not None else None
            else:
                self.manifest.record(
                    ManifestEntry(
                        relative,
                        outcome.input_sha256,
                        self.options.key,
                        outcome.outputs,
                        outcome.document_id,
                        outcome.created_at,
                        outcome.stylesheet or "",
                    )
                )
            if self.outbox is not None and queued_into != self.outbox_key:
                entry.update(self._queue(outcome, relative))
        elif slot.task is not None and slot.task.previous is not None:
            self.manifest.forget(relative)
        self.counts[entry["outcome"]] += 1
        self.report.add(entry)
        self.listener.entry(entry, self.counts)

    def _queue(self, outcome: Outcome, relative: str) -> dict[str, Any]:
        """Queue a converted document into the outbox; the entry's dispatch fields."""
        from crbio.dispatch import dispatch
        from crbio.documents.build import Documents

        assert self.outbox is not None and self.options.send is not None and self.outbox_key is not None
        assert outcome.report is not None, "the worker returns the report when sending"
        contents: dict[str, bytes] = {}
        for name, digest in outcome.outputs.items():
            try:
                data = (self.outdir / name).read_bytes()
            except OSError:
                data = b""
            if _sha256(data) != digest:
                error = ErrorInfo("batch.changed", "an output changed on disk before it was queued", name)
                return {"outcome": "unusable", "error": error.to_dict()}
            kind = next(k for k, suffix in OUTPUT_SUFFIXES.items() if name.endswith(suffix))
            contents[kind] = data
        documents = Documents(
            report=outcome.report,
            n3=contents["n3"],
            n1=contents["n1"],
            pdf=contents["pdf"],
            stylesheet_href=outcome.stylesheet or "",
        )
        # The outbox keeps the first bytes queued under a document id and would send those:
        # a changed report must come as a new document (version), never under the same id.
        if self.outbox.document_version(documents.document_id) is not None:
            stored_n3, _ = self.outbox.document(documents.document_id)
            if stored_n3 != documents.n3:
                error = ErrorInfo(
                    "batch.already-queued",
                    f"document {documents.document_id} was queued earlier with other content: give the "
                    "changed report a new document id (a new version) to send it",
                    "$.document.id",
                )
                return {"outcome": "unusable", "error": error.to_dict()}
        # Committed first: once queued, the document id must never be built anew.
        self.manifest.commit()
        result = dispatch(documents, self.options.send, outbox=self.outbox)
        fields: dict[str, Any] = {"queued": len(result.queued), "already_queued": len(result.already_queued)}
        self.manifest.mark_queued(relative, self.outbox_key)
        self.queued += len(result.queued)
        return fields

    # -- the loop ------------------------------------------------------------------------

    def _take(self, slot: _Slot) -> Outcome | None:
        """The slot's outcome; None when its worker process died (the pool is then renewed)."""
        try:
            return slot.future.result()
        except BrokenProcessPool:
            return None

    def _renew_pool(self, window: deque[_Slot]) -> None:
        """A worker process died: start a new pool and resubmit every input in flight.

        The input that killed it is not known; each in-flight input gets one more attempt,
        and one that was in flight at two deaths is given up as failed.
        """
        log.warning("a worker process died; starting new ones")
        self.worker_deaths += 1
        assert self.pool is not None
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()
        for slot in window:
            if slot.task is None:
                continue
            if slot.future.done() and slot.future.exception() is None:
                continue
            if slot.attempts >= _MAX_ATTEMPTS:
                error = ErrorInfo("batch.worker-died", "a worker process died while converting this input")
                slot.future = _resolved(Outcome(slot.task.index, "failed", error=error))
            else:
                slot.attempts += 1
                slot.future = self._submit(slot.task)

    def run(self) -> BatchResult:
        start = time.monotonic()
        options = self.options
        if options.validate not in VALIDATE_LEVELS:
            raise InputError(f"--validate: one of {', '.join(VALIDATE_LEVELS)}", code="input.option")
        if options.validate == "full":
            _check_kit(options.ans_kit)
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            lock = _lock(self.outdir)
        except OSError as e:  # a read-only folder, a missing permission, a full disk
            raise _cannot_write(self.outdir, e) from None
        try:
            removed = _remove_stale_temporaries(self.outdir)
            if removed:
                log.info("removed %d half-written file(s) left by an interrupted batch", removed)
            self.manifest = Manifest(self.outdir)
            try:
                if options.send is not None:
                    from crbio.dispatch.outbox_backends import open_outbox, outbox_identity

                    self.outbox = open_outbox(options.send)
                    self.outbox_key = outbox_identity(options.send)
                self.report = ReportWriter(self.outdir, options.to_dict())
                return self._loop(start)
            finally:
                if self.outbox is not None:
                    self.outbox.close()
                self.manifest.close()
        except OSError as e:  # the report or the manifest on a full disk
            raise _cannot_write(self.outdir, e) from None
        except sqlite3.OperationalError as e:  # the manifest on a full disk
            raise ConfigurationError(f"{self.outdir}: cannot write ({e})", code="config.output") from None
        finally:
            os.close(lock)

    def _loop(self, start: float) -> BatchResult:
        stop = threading.Event()
        counter = self._count_in_background(stop)
        self.pool = self._new_pool()
        window: deque[_Slot] = deque()
        items: Iterator[tuple[int, Input]] = enumerate(discover(self.inputs, exclude=self.outdir))
        complete = False
        try:
            for index, item in items:
                window.append(self._slot(item, index))
                if len(window) >= self.window:
                    break
            while window:
                slot = window[0]
                outcome = self._take(slot)
                if outcome is None:
                    self._renew_pool(window)
                    continue
                if outcome.fatal:
                    raise ConfigurationError(outcome.fatal, code="batch.fatal")
                window.popleft()
                self._record(slot, outcome)
                for index, item in items:
                    window.append(self._slot(item, index))
                    break
            complete = True
        finally:
            stop.set()
            self.pool.shutdown(wait=True, cancel_futures=True)
            if self.worker_deaths:  # a worker killed while writing left its temporary files
                _remove_stale_temporaries(self.outdir)
            counter.join(timeout=5)
            elapsed = time.monotonic() - start
            status = _exit_status(self.counts)
            try:
                report_path = self.report.finish(
                    counts=dict(self.counts),
                    elapsed=elapsed,
                    complete=complete,
                    exit_status=status if complete else None,
                )
            except OSError:
                self.report.abandon()  # no half-written report left behind
                raise
        return BatchResult(dict(self.counts), report_path, elapsed, self.queued)


def _cannot_write(outdir: Path, error: OSError) -> ConfigurationError:
    where = error.filename if isinstance(error.filename, str) else outdir
    reason = error.strerror or type(error).__name__
    return ConfigurationError(f"{where}: cannot write ({reason})", code="config.output")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _ans_cache() -> str:
    from crbio.validation.anskit import default_cache_root

    return str(default_cache_root())


def _check_kit(kit: Path | None) -> None:
    """Refuse ``--validate full`` early, in the parent, when the kit cannot possibly work."""
    import importlib.util

    if kit is None:
        raise ConfigurationError(
            "--validate full needs --ans-kit DIR (the ANS TestContenuCDA kit)", code="config.ans-kit"
        )
    if not (kit / "schematrons").is_dir():
        raise ConfigurationError(
            f"--ans-kit: {kit} is not the ANS conformity kit (no schematrons/ folder)", code="config.ans-kit"
        )
    if importlib.util.find_spec("saxonche") is None:
        raise ConfigurationError(
            "the ANS kit needs SaxonC-HE (XSLT 2.0), which is not installed: pip install 'crbio[ans]'",
            code="config.ans-kit",
        )


def run_batch(
    inputs: Sequence[str | Path],
    options: BatchOptions,
    *,
    listener: BatchListener | None = None,
) -> BatchResult:
    """Convert every input into OUTDIR with a process pool, skipping what is up to date.

    ``inputs`` are files, directories (searched recursively for ``*.json``) or glob
    patterns. One bad input never stops the batch: it gets an entry with its error in
    ``OUTDIR/batch-report.json``. A re-run skips the inputs whose content, options and
    outputs are unchanged since they were converted (``OUTDIR/.crbio-batch-manifest.sqlite``).

    Raises:
        ConfigurationError: the ANS kit or the output directory cannot be used; the batch stops.
        CrbioError: another batch holds OUTDIR, or its manifest is unusable.
        OutboxError: the outbox cannot be used (``send``).
    """
    return _Batch(inputs, options, listener or _Quiet()).run()
