"""The ``crbio batch`` command: convert thousands of reports with a process pool, resumably."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from crbio.errors import ConfigurationError, InputError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["add_batch_command"]


def add_batch_command(commands: Any) -> None:
    """Register ``crbio batch`` on the main parser's sub-parsers."""
    batch = commands.add_parser(
        "batch",
        help="convert many reports at once, with a process pool; a re-run skips what is done",
        description="Build the documents of every report found in INPUT (files: crbio JSON, CR-BIO "
        "CDA .xml, HL7 v2 .hl7; folders searched recursively for *.json and *.hl7; or quoted glob "
        "patterns such as 'in/**/*.json' or 'cda/*.xml') into OUTDIR, "
        "mirroring the folders: in/a/r.json gives OUTDIR/a/r.n3.xml, r.n1.xml and r.pdf. A bad "
        "input is reported and the batch goes on; OUTDIR/batch-report.json lists every input "
        "with its outcome. A re-run skips the inputs whose content and outputs have not changed. "
        "Exit status: 0 all converted, 1 a document did not conform, 2 an input was unusable.",
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="report file, folder or glob pattern")
    batch.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    batch.add_argument(
        "-j",
        "--jobs",
        type=int,
        metavar="N",
        help="worker processes (default: one per core)",
    )
    batch.add_argument(
        "--validate",
        choices=("off", "own", "full"),
        default="own",
        help="checks before a document is written: none, the official XSD and crbio's rules "
        "(own, the default), or those and the official ANS kit (full, needs --ans-kit)",
    )
    batch.add_argument(
        "--ans-kit",
        type=Path,
        metavar="DIR",
        default=os.environ.get("CRBIO_ANS_KIT"),
        help="the ANS kit (TestContenuCDA) for --validate full; default: $CRBIO_ANS_KIT",
    )
    batch.add_argument(
        "--stylesheet",
        metavar="HREF",
        help="href of the XSL stylesheet the documents point to (default: the laboratory's, "
        "else crbio's own, written beside the documents)",
    )
    batch.add_argument(
        "--send",
        action="store_true",
        help="also queue each document into the outbox of --config (delivered by `crbio worker`)",
    )
    batch.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        default=os.environ.get("CRBIO_CONFIG"),
        help="dispatch configuration (TOML) for --send; default: $CRBIO_CONFIG",
    )
    batch.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="a progress bar on a terminal, log lines otherwise (auto, the default)",
    )
    batch.add_argument(
        "--log-every",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress log lines (default 10)",
    )
    batch.set_defaults(run=_batch)


def _batch(args: argparse.Namespace) -> int:
    from crbio.batch import BatchOptions, default_jobs, run_batch
    from crbio.dispatch.outbox_backends import outbox_identity

    if args.jobs is None:
        args.jobs = default_jobs()
    if args.jobs < 1:
        raise InputError("--jobs: at least 1", code="input.option")
    config = None
    if args.send:
        if args.config is None:
            raise ConfigurationError("--send needs --config FILE (or $CRBIO_CONFIG)", code="config.missing")
        from crbio.dispatch import DispatchConfig

        config = DispatchConfig.load(args.config)
    options = BatchOptions(
        outdir=args.output,
        jobs=args.jobs,
        validate=args.validate,
        stylesheet=args.stylesheet,
        ans_kit=args.ans_kit,
        send=config,
        debug=args.debug,
    )
    mode = args.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "log"
    # "none" keeps the problem lines, without progress lines.
    display: _Display = _Bar() if mode == "bar" else _Log(every=args.log_every if mode == "log" else None)
    # SIGTERM (a scheduler's time limit, systemd) stops the batch like Ctrl-C: what is done is
    # kept in the manifest and the report says the batch is incomplete.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with display:
            display.start(options.jobs, options.validate)
            result = run_batch(args.inputs, options, listener=display)
    except KeyboardInterrupt:
        print("crbio: batch interrupted; what was done is kept: run it again to go on", file=sys.stderr)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in result.counts.items() if n or outcome != "failed")
    rate = result.total / result.elapsed if result.elapsed > 0 else 0.0
    print(f"batch: {result.total} inputs in {result.elapsed:.1f} s ({rate:.1f}/s): {counts}")
    if config is not None:
        print(
            f"outbox: {result.queued} deliveries queued in {outbox_identity(config)}; "
            "`crbio worker` delivers them"
        )
    print(f"report: {result.report_path}")
    return result.exit_status


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _problem_line(entry: dict[str, Any]) -> str | None:
    """The stderr line of an input that did not convert (the file name, never patient data)."""
    error = entry.get("error")
    if not error:
        return None
    where = f"{error['field']}: " if error.get("field") else ""
    more = len(error.get("details", ())) - 1
    extra = f" (and {more} more)" if more > 0 else ""
    return f"crbio: {entry['path']}: {entry['outcome']}: {where}{error['message']}{extra} [{error['code']}]"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _Display:
    """Shows a batch's progress; a batch listener and a context manager."""

    def __enter__(self) -> _Display:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    def start(self, jobs: int, validate: str) -> None:
        """The batch starts."""

    def total(self, count: int) -> None:
        """The number of inputs is known."""

    def entry(self, entry: dict[str, Any], counts: dict[str, int]) -> None:
        """One input is done."""


class _Log(_Display):
    """Plain lines on stderr for logs (cron, CI): problems at once, progress every few seconds."""

    def __init__(self, every: float | None) -> None:
        self.every = every
        self.count: int | None = None
        self.started = time.monotonic()
        self.last = self.started
        self.first: float | None = None
        self.done = 0

    def start(self, jobs: int, validate: str) -> None:
        """Say the batch started."""
        if self.every is not None:
            self._print(f"crbio batch: started with {jobs} worker(s), validation {validate}")

    def total(self, count: int) -> None:
        """Keep the number of inputs, for the percentage and the ETA."""
        self.count = count

    def entry(self, entry: dict[str, Any], counts: dict[str, int]) -> None:
        """Print the problem of a failed input; a progress line when it is time."""
        self.done += 1
        if self.first is None:
            self.first = time.monotonic()
        line = _problem_line(entry)
        if line:
            self._print(line)
        now = time.monotonic()
        if self.every is not None and now - self.last >= self.every:
            self.last = now
            self._print(self._progress(now, counts))

    def _progress(self, now: float, counts: dict[str, int]) -> str:
        # The rate from the first outcome on: the pool's start-up says nothing of what is left.
        first = self.first if self.first is not None else self.started
        rate = (self.done - 1) / (now - first) if self.done > 1 and now > first else 0.0
        done = ", ".join(f"{n} {outcome}" for outcome, n in counts.items() if n)
        if self.count:
            share = f"{self.done}/{self.count} inputs ({100 * self.done / self.count:.0f}%)"
            eta = f", ETA {_duration((self.count - self.done) / rate)}" if rate > 0 else ""
        else:
            share, eta = f"{self.done} inputs", ""
        return f"crbio batch: {share}: {done}; {rate:.1f}/s{eta}"

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stderr, flush=True)


class _Bar(_Display):
    """A rich progress bar on the terminal: count/total, outcomes so far, rate, elapsed, ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            Task,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.1f}/s" if speed else "-/s", style="progress.data.speed")

        self.progress: Progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> _Bar:
        self.progress.start()
        self.task = self.progress.add_task("crbio batch", total=None, counts="")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def total(self, count: int) -> None:
        """Turn the open-ended bar into a bounded one."""
        if self.task is not None:
            self.progress.update(self.task, total=count)

    def entry(self, entry: dict[str, Any], counts: dict[str, int]) -> None:
        """Advance the bar; print a failed input's problem above it."""
        from rich.text import Text

        line = _problem_line(entry)
        if line:
            self.progress.console.print(
                Text(line, style="red" if entry["outcome"] != "invalid" else "yellow")
            )
        if self.task is not None:
            summary = " ".join(f"{outcome} {n}" for outcome, n in counts.items() if n)
            self.progress.update(self.task, advance=1, counts=summary)
