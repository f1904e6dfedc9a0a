"""The dispatch commands: plan, send, delete, worker, returns, journal, simulate."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crbio.errors import ConfigurationError, CrbioError, InputError, ValidationFailed

if TYPE_CHECKING:
    from crbio.dispatch import DispatchConfig, Plan, ReturnsSummary
    from crbio.model import Report

__all__ = ["add_dispatch_commands"]

log = logging.getLogger("crbio.dispatch.cli")

EXIT_OK, EXIT_FAILED, EXIT_INPUT = 0, 1, 2


def add_dispatch_commands(commands: Any) -> None:
    """Register the dispatch sub-commands on the main parser's sub-parsers."""

    def config_option(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
        parser.add_argument(
            "-c",
            "--config",
            type=Path,
            metavar="FILE",
            default=os.environ.get("CRBIO_CONFIG"),
            required=required and not os.environ.get("CRBIO_CONFIG"),
            help="dispatch configuration (TOML); default: $CRBIO_CONFIG",
        )

    plan = commands.add_parser(
        "plan",
        help="show where reports would be sent, and why not elsewhere (dry run)",
        description="Build each report and print its routing plan: the deliveries (channel, "
        "recipient, action, metadata) and the destinations left out with their reason. Nothing "
        "is queued or sent. Without --config, every channel but HL7 v2 is assumed configured.",
    )
    plan.add_argument("inputs", nargs="+", type=Path, metavar="REPORT.json")
    config_option(plan, required=False)
    plan.add_argument("--format", choices=("text", "json"), default="text")
    plan.set_defaults(run=_plan)

    send = commands.add_parser(
        "send",
        help="build reports, queue their deliveries and deliver them",
        description="Build each report, queue its deliveries in the outbox, then deliver them "
        "now. Deliveries that fail for a temporary reason stay queued for `crbio worker`.",
    )
    send.add_argument("inputs", nargs="+", type=Path, metavar="REPORT.json")
    config_option(send)
    send.add_argument("--queue-only", action="store_true", help="queue without delivering")
    send.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="delivery time limit")
    send.set_defaults(run=_send)

    delete = commands.add_parser(
        "delete",
        help="withdraw a document from every channel that received it",
        description="Queue and deliver the deletion of a document version on every channel "
        "and recipient that acknowledged it (DMP ITI-57, MSSanté XDM action D, HL7 OBX-11 D).",
    )
    delete.add_argument("document_id", metavar="DOCUMENT_OID")
    config_option(delete)
    delete.add_argument("--queue-only", action="store_true", help="queue without delivering")
    delete.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    delete.set_defaults(run=_delete)

    worker = commands.add_parser(
        "worker",
        help="deliver what the outbox holds, until stopped",
        description="Drain the outbox: deliver queued deliveries and retry failed ones with "
        "backoff. Several workers may share one outbox. With a [mailbox] section, also reads the "
        "lab's MSSanté mailbox every poll_seconds for delivery and read reports (DSN/MDN). Stops "
        "on SIGINT/SIGTERM.",
    )
    config_option(worker)
    worker.add_argument("--threads", type=int, default=1, metavar="N", help="worker threads (default 1)")
    worker.add_argument("--drain", action="store_true", help="stop when nothing is left to deliver")
    worker.set_defaults(run=_worker)

    returns = commands.add_parser(
        "returns",
        help="read delivery and read reports (DSN/MDN) from the lab's MSSanté mailbox",
        description="Read the [mailbox] of the configuration once over IMAP: record each delivery "
        "status notification and read receipt in the journal of the delivery it concerns, then "
        "file it away. Other mail is left where it is. Prints what was read, and the bounces.",
    )
    config_option(returns)
    returns.add_argument("--format", choices=("text", "json"), default="text")
    returns.set_defaults(run=_returns)

    journal = commands.add_parser(
        "journal",
        help="who received what, when, with which acknowledgement, and who did not and why",
        description="Print the transmission journal: one line per delivery with its state, "
        "times and acknowledgement; with --suppressed, the destinations left out and why. With "
        "--verify, check the journal's hash chain instead: exit 0 and print the number of rows and "
        "the head (keep it: a later rewrite of the whole chain shows against it), or exit 1 naming "
        "the first row that was changed, removed, reordered or added outside crbio.",
    )
    config_option(journal)
    journal.add_argument("--document", metavar="OID", help="only this document version")
    journal.add_argument("--since", metavar="ISO-DATE", help="only deliveries queued since then")
    journal.add_argument("--state", choices=("queued", "sending", "retrying", "acknowledged", "dead"))
    journal.add_argument("--suppressed", action="store_true", help="list the suppressed destinations")
    journal.add_argument("--format", choices=("table", "csv", "json"), default="table")
    journal.add_argument("--verify", action="store_true", help="verify the journal's hash chain")
    journal.set_defaults(run=_journal)

    simulate = commands.add_parser(
        "simulate",
        help="run local DMP, MSSanté, operator-API and HL7 v2 simulators",
        description="Start an XDS.b registry/repository, an SMTP server with STARTTLS and "
        "client certificates, an operator REST API and an MLLP listener on 127.0.0.1, with a "
        "throw-away PKI, and write a ready-to-use configuration into DIR.",
    )
    simulate.add_argument("--dir", type=Path, default=Path("crbio-simulation"), metavar="DIR")
    simulate.add_argument(
        "--fault-rate", type=float, default=0.0, metavar="R", help="share of failed requests"
    )
    simulate.add_argument("--mssante", choices=("smtp", "operator-api"), default="smtp")
    simulate.set_defaults(run=_simulate)


def _config(args: argparse.Namespace) -> DispatchConfig:
    from crbio.dispatch import DispatchConfig

    if args.config is None:
        raise ConfigurationError("--config: no configuration file given", code="config.missing")
    return DispatchConfig.load(args.config)


def _default_config(report: Report) -> DispatchConfig:
    from crbio.dispatch import DispatchConfig

    lab = report.laboratory
    return DispatchConfig.from_mapping(
        {
            "laboratory": {"finess": lab.finess, "name": lab.name, "oid": lab.oid},
            "destinations": {"dmp": {}, "mssante": {}},
        }
    )


def _print_plan(name: str, plan: Plan) -> None:
    print(f"{name}: document {plan.document_id} v{plan.version} ({plan.action.value})")
    for d in plan.deliveries:
        who = d.recipient.label or d.recipient.address
        extra = ""
        if "confidentiality" in d.metadata and d.metadata["confidentiality"] != ["N"]:
            extra = f"  [{' '.join(d.metadata['confidentiality'])}]"
        print(f"  → {d.channel.value:8} {d.action.value:8} {d.recipient.kind.value:12} {who}{extra}")
    for s in plan.suppressed:
        who = ""
        if s.recipient.kind.value != "dmp":
            who = f" {s.recipient.kind.value:12} {s.recipient.label or s.recipient.address}".rstrip()
        print(f"  ✗ {s.channel.value:8}{who}: {s.explanation} [{s.reason}]")


def _build_all(inputs: list[Path]) -> list[tuple[Path, Any]]:
    from crbio.documents.build import build
    from crbio.input import load_report

    built = []
    for path in inputs:
        try:
            built.append((path, build(load_report(path))))
        except (InputError, ValidationFailed) as e:
            print(f"crbio: {path.name}: {e}", file=sys.stderr)
    return built


def _plan(args: argparse.Namespace) -> int:
    from crbio.dispatch import plan_dispatch

    built = _build_all(args.inputs)
    plans = []
    for path, documents in built:
        config = _config(args) if args.config else _default_config(documents.report)
        plan = plan_dispatch(documents.report, config)
        plans.append((path, plan))
        if args.format == "text":
            _print_plan(path.name, plan)
    if args.format == "json":
        print(
            json.dumps(
                [{"input": p.name, **plan.to_dict()} for p, plan in plans], ensure_ascii=False, indent=1
            )
        )
    return EXIT_OK if len(built) == len(args.inputs) else EXIT_INPUT


def _report_states(states: dict[str, str], plan_keys: dict[str, str]) -> int:
    status = EXIT_OK
    for key, label in plan_keys.items():
        state = states.get(key, "queued")
        print(f"  {label}: {state}")
        if state == "dead":
            status = EXIT_FAILED
    pending = sum(1 for k in plan_keys if states.get(k) not in {"acknowledged", "dead"})
    if pending:
        print(f"  {pending} deliver{'ies' if pending > 1 else 'y'} left in the outbox for `crbio worker`")
    return status


def _labels(plan: Plan) -> dict[str, str]:
    return {
        d.key: f"{d.channel.value} {d.action.value} → {d.recipient.label or d.recipient.address}"
        for d in plan.deliveries
    }


def _send(args: argparse.Namespace) -> int:
    from crbio.dispatch import deliver, dispatch

    config = _config(args)
    built = _build_all(args.inputs)
    status = EXIT_OK if len(built) == len(args.inputs) else EXIT_INPUT
    labels: dict[str, str] = {}
    for path, documents in built:
        result = dispatch(documents, config)
        _print_plan(path.name, result.plan)
        labels.update(_labels(result.plan))
    if args.queue_only or not labels:
        return status
    states, _ = deliver(config, labels, timeout=args.timeout)
    print("deliveries:")
    return max(status, _report_states(states, labels))


def _delete(args: argparse.Namespace) -> int:
    from crbio.dispatch import delete, deliver

    config = _config(args)
    result = delete(args.document_id, config)
    _print_plan(args.document_id, result.plan)
    labels = _labels(result.plan)
    if args.queue_only or not labels:
        return EXIT_OK
    states, _ = deliver(config, labels, timeout=args.timeout)
    print("deliveries:")
    return _report_states(states, labels)


def _poll_returns(config: DispatchConfig, totals: dict[str, int]) -> None:
    """Read the mailbox once for the worker; a failure is logged, and the next poll tries again."""
    from crbio.dispatch import collect_returns

    try:
        summary = collect_returns(config)
    except CrbioError as error:
        log.warning("mailbox not read: %s", error)
        return
    except Exception as error:  # noqa: BLE001 - the poller must outlive a bug; details may quote mail
        log.error("mailbox not read: internal error (%s)", type(error).__name__)
        return
    totals["recorded"] += summary.recorded
    totals["failures"] += summary.failures


def _worker(args: argparse.Namespace) -> int:
    from crbio.dispatch import run_workers

    config = _config(args)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    mailbox = config.mailbox
    returns = {"recorded": 0, "failures": 0}
    poller: threading.Thread | None = None
    polling = threading.Event()
    if mailbox is not None:

        def poll() -> None:
            while True:
                _poll_returns(config, returns)
                if polling.wait(mailbox.poll_seconds) or stop.is_set():
                    return

        poller = threading.Thread(target=poll, name="crbio-mailbox", daemon=True)
        poller.start()
    stats = run_workers(config, threads=max(1, args.threads), stop=stop, drain=args.drain)
    if poller is not None:
        polling.set()
        poller.join()
        if args.drain and not stop.is_set():
            _poll_returns(config, returns)  # what came back while the last deliveries were made
    print(
        f"worker: {stats.acknowledged} acknowledged, {stats.retried} retries scheduled, "
        f"{stats.dead} dead-lettered, {stats.recovered} recovered after a crash"
        + (
            f"; {returns['recorded']} return reports recorded ({returns['failures']} bounces or refusals)"
            if mailbox is not None
            else ""
        )
    )
    return EXIT_OK


def _print_returns(summary: ReturnsSummary) -> None:
    print(f"returns: {summary}")
    for result in summary.results:
        delivery = result.delivery
        if delivery is None:
            continue
        # The patient's address is the INS: a person reading this needs only who it was.
        recipient = delivery.recipient
        if recipient.kind.value == "patient":
            who = "patient"
        else:
            who = f"{recipient.label} <{recipient.address}>" if recipient.label else recipient.address
        for entry in result.recorded:
            status = f" {entry.status}" if entry.status and not entry.status.startswith("2.") else ""
            mark = "✗" if entry.failure else "✓"
            print(
                f"  {mark} {entry.kind.value} {entry.action}{status}: document {delivery.document_id} "
                f"v{delivery.version} ({delivery.action.value}) → {who}"
            )


def _returns(args: argparse.Namespace) -> int:
    from crbio.dispatch import MailboxError, collect_returns

    config = _config(args)
    try:
        summary = collect_returns(config)
    except MailboxError as error:
        print(f"crbio: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.format == "json":
        print(json.dumps(summary.to_dict(), ensure_ascii=False, indent=1))
    else:
        _print_returns(summary)
    return EXIT_OK


_JOURNAL_COLUMNS = (
    "document_id",
    "version",
    "channel",
    "action",
    "recipient_kind",
    "recipient",
    "recipient_id",
    "state",
    "outcome",
    "attempts",
    "queued_at",
    "sent_at",
    "acknowledged_at",
    "dead_at",
    "ack_summary",
    "returns",
    "last_error",
)


def _verify_journal(args: argparse.Namespace) -> int:
    from crbio.dispatch.outbox_backends import open_outbox

    if args.document or args.since or args.state or args.suppressed:
        raise InputError(
            "--verify: checks the whole journal, not with --document, --since, --state or --suppressed",
            code="input.option",
        )
    with open_outbox(_config(args)) as outbox:
        result = outbox.verify_journal()
    if args.format == "json":
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
    elif result.ok:
        print(result.summary())
        if result.migrated_rows:
            print(
                f"  the chain starts at {result.started_at}, when this outbox was upgraded: the "
                f"{result.migrated_rows} rows already there are vouched for from then on"
            )
    else:
        print(f"crbio: {result.summary()}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def _journal(args: argparse.Namespace) -> int:
    from crbio.dispatch.outbox_backends import open_outbox

    if args.verify:
        return _verify_journal(args)
    config = _config(args)
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            raise InputError(
                f"--since: not an ISO date or date-time: {args.since!r}", code="input.option"
            ) from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    with open_outbox(config) as outbox:
        if args.suppressed:
            rows: list[dict[str, Any]] = outbox.suppressions(args.document)
            columns: tuple[str, ...] = (
                "document_id",
                "version",
                "channel",
                "recipient",
                "reason",
                "explanation",
                "at",
            )
        else:
            rows = [
                t.to_dict()
                for t in outbox.transmissions(document_id=args.document, since=since, state=args.state)
            ]
            columns = _JOURNAL_COLUMNS
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    elif args.format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(
            out,
            fieldnames=[*columns, *(["ack_detail", "key"] if not args.suppressed else [])],
            extrasaction="ignore",
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {**row, "ack_detail": json.dumps(row.get("ack_detail"), ensure_ascii=False)}
                if "ack_detail" in row
                else row
            )
        sys.stdout.write(out.getvalue())
    else:
        _table(
            rows,
            (
                "document_id",
                "version",
                "channel",
                "action",
                "recipient",
                "state",
                "outcome",
                "attempts",
                "acknowledged_at",
                "ack_summary",
                "returns",
                "last_error",
            )
            if not args.suppressed
            else columns,
        )
    return EXIT_OK


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    cells = [[("" if r.get(c) is None else str(r.get(c)))[:60] for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    if not rows:
        print("(no entries)")


#: Messages each simulator of ``crbio simulate`` keeps in memory.
SIMULATE_RETAIN = 100


def _simulate(args: argparse.Namespace) -> int:
    from crbio.simulators.run import Simulation

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # What the servers receive is written under DIR/received; in memory, the last few suffice
    # (a vendor's long test run must not grow the process by hundreds of kilobytes a message).
    with Simulation(
        args.dir, fault_rate=args.fault_rate, mssante=args.mssante, retain=SIMULATE_RETAIN
    ) as simulation:
        print(simulation.describe())
        print("Press Ctrl-C to stop.")
        stop.wait()
    return EXIT_OK
