"""The evidence bundle: every artefact as a file, ``summary.json`` and an offline ``index.html``.

Layout of ``EVIDENCE_DIR``::

    index.html                      one section per scenario, the summary table on top
    summary.json                    the same verdicts, for machines
    <scenario>/scenario.toml        the scenario as given
    <scenario>/checks.json          every comparison behind the verdicts
    <scenario>/reports/<key>.*      input JSON, N3, N1, PDF, rendered N3 (HTML), first page (PNG),
                                    validation reports (JSON and text)
    <scenario>/steps/<n>-<action>/  plan.json, journal.json/.csv, events.json, suppressions.json,
                                    acknowledgements.json, the DMP's SOAP requests, the mails'
                                    XDM listings, the HL7 messages the PFI refused
    <scenario>/received/            what the simulators stored (DMP entries and metadata, .eml
                                    mails, HL7 messages)

``index.html`` is rendered by Jinja2 with autoescaping from ``templates/index.html.j2``; its
CSS is inline and it loads nothing from the network: the rendered CDA and the PDF picture are
relative links into the bundle.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from lxml import etree

from crbio import __version__
from crbio._files import write_atomically
from crbio.conformity.checks import CHECK_TITLES, CHECKS, FAIL, PASS, ScenarioResult, destination
from crbio.conformity.runner import BuiltReport, StepRun
from crbio.conformity.scenario import report_json
from crbio.dispatch.xds.soap import parse_message
from crbio.errors import InputError
from crbio.validation.report import ValidationReport

__all__ = ["TEMPLATES", "write_bundle", "write_scenario"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
SUMMARY_FORMAT = "crbio.conformity/1"
_BASE64_FIELD = re.compile(r"(\^Base64\^)([A-Za-z0-9+/=]{80,})")
_SHOWN_TEXT = 60_000  # characters of a message shown inline; the file has all of it


def _json(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1, default=str) + "\n").encode("utf-8")


def _write(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write files given by paths relative to ``directory`` (sub-directories created).

    Plain writes: the bundle is rewritten whole by the next run, and ``index.html``, written
    last and atomically, is what tells a reader the bundle is complete.
    """
    for relative, data in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "_"


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_TEXT else text[:_SHOWN_TEXT] + "\n… (cut here: see the file)"


# --- per scenario ----------------------------------------------------------------------------------


def write_scenario(result: ScenarioResult, output: Path) -> dict[str, Any]:
    """Write a scenario's artefacts under ``output/<name>/`` and return its view for ``index.html``."""
    evidence = result.evidence
    scenario = result.scenario
    root = output / scenario.name
    files: dict[str, bytes] = {f"scenario{scenario.path.suffix}": scenario.text.encode("utf-8")}
    reports = [_report_files(key, built, files) for key, built in evidence.reports.items()]
    steps = [_step_files(run, files, evidence.received) for run in evidence.steps]
    for relative, data in evidence.received.items():
        files[f"received/{relative}"] = data
    files["checks.json"] = _json({name: check.to_dict() for name, check in result.checks.items()})
    _write(root, files)
    return {
        "name": scenario.name,
        "title": scenario.title,
        "description": scenario.description,
        "builtin": scenario.builtin,
        "source": scenario.path.name,
        "scenario_file": f"{scenario.name}/scenario{scenario.path.suffix}",
        "scenario_text": scenario.text,
        "verdict": result.verdict,
        "seconds": round(evidence.seconds, 2),
        "error": evidence.error,
        "simulation": dataclasses.asdict(scenario.simulation),
        "checks": [
            {
                "name": name,
                "title": CHECK_TITLES[name],
                "status": check.status,
                "skipped": check.skipped,
                "lines": [line.to_dict() for line in check.lines],
            }
            for name, check in result.checks.items()
        ],
        "reports": reports,
        "steps": steps,
    }


def _report_files(key: str, built: BuiltReport, files: dict[str, bytes]) -> dict[str, Any]:
    base = f"reports/{key}"
    files[f"{base}.input.json"] = report_json(built.spec.data)
    view: dict[str, Any] = {
        "key": key,
        "source": built.spec.source,
        "modifications": list(built.spec.modifications),
        "input": f"{base}.input.json",
        "input_text": _shown(report_json(built.spec.data).decode("utf-8")),
        "error": built.error,
        "problems": list(built.problems),
        "pages": built.pages,
        "validation": [],
    }
    documents = built.documents
    if documents is None:
        return view
    files.update(
        {f"{base}.n3.xml": documents.n3, f"{base}.n1.xml": documents.n1, f"{base}.pdf": documents.pdf}
    )
    view.update(
        document_id=documents.document_id,
        version=documents.report.document.version,
        replaces=documents.report.document.replaces,
        n3=f"{base}.n3.xml",
        n1=f"{base}.n1.xml",
        pdf=f"{base}.pdf",
    )
    if built.html is not None:
        files[f"{base}.n3.html"] = built.html
        view["html"] = f"{base}.n3.html"
    if built.page_png is not None:
        files[f"{base}.page1.png"] = built.page_png
        view["png"] = f"{base}.page1.png"
    for kind, report in built.validation.items():
        files[f"{base}.{kind}.validation.json"] = _json(_validation_json(report))
        files[f"{base}.{kind}.validation.txt"] = (report.summary() + "\n").encode("utf-8")
        view["validation"].append(
            {
                "kind": kind.upper(),
                "ok": report.ok,
                "checks": list(report.checks),
                "errors": [str(f) for f in report.errors],
                "warnings": len(report.warnings),
                "json": f"{base}.{kind}.validation.json",
                "text": f"{base}.{kind}.validation.txt",
            }
        )
    return view


def _validation_json(report: ValidationReport) -> dict[str, Any]:
    return {**dataclasses.asdict(report), "ok": report.ok}


def _step_files(run: StepRun, files: dict[str, bytes], received: Mapping[str, bytes]) -> dict[str, Any]:
    base = f"steps/{run.step.label}"
    plan = run.plan.to_dict() if run.plan is not None else None
    journal = [t.to_dict() for t in run.transmissions]
    acks = [
        {
            "destination": destination(t.channel, t.recipient_kind),
            "state": t.state,
            "attempts": t.attempts,
            "summary": t.ack_summary,
            "detail": t.ack_detail,
            "last_error": t.last_error,
        }
        for t in run.transmissions
    ]
    files[f"{base}/plan.json"] = _json(plan)
    files[f"{base}/journal.json"] = _json(journal)
    files[f"{base}/journal.csv"] = _csv(journal)
    files[f"{base}/events.json"] = _json(run.events)
    files[f"{base}/suppressions.json"] = _json(run.suppressions)
    files[f"{base}/acknowledgements.json"] = _json(acks)
    files[f"{base}/faults.json"] = _json({"queued": run.faults_queued, "answered": run.faults_drawn})
    view: dict[str, Any] = {
        "label": run.step.label,
        "index": run.step.index,
        "action": run.step.action,
        "report": run.step.report,
        "document_id": run.document_id,
        "error": run.error,
        "seconds": round(run.seconds, 2),
        "files": {
            name: f"{base}/{name}"
            for name in (
                "plan.json",
                "journal.json",
                "journal.csv",
                "events.json",
                "suppressions.json",
                "acknowledgements.json",
                "faults.json",
            )
        },
        "faults_queued": {server: _counted(faults) for server, faults in run.faults_queued.items()},
        "faults_drawn": {server: _counted(faults) for server, faults in run.faults_drawn.items()},
        "deliveries": _plan_rows(run),
        "suppressed": [
            {
                "destination": destination(s.channel.value, s.recipient.kind.value),
                "recipient": s.recipient.label
                or _recipient_label(s.recipient.kind.value, s.recipient.address),
                "reason": s.reason,
                "explanation": s.explanation,
            }
            for s in (run.plan.suppressed if run.plan is not None else ())
        ],
        "journal": [
            {
                "destination": destination(t.channel, t.recipient_kind),
                "action": t.action,
                "state": t.state,
                "attempts": t.attempts,
                "queued_at": t.queued_at,
                "acknowledged_at": t.acknowledged_at,
                "dead_at": t.dead_at,
                "ack": t.ack_summary,
                "error": t.last_error,
                "events": [f"{e['event']} #{e['attempt']}" for e in run.events.get(t.key, [])],
            }
            for t in run.transmissions
        ],
        "acks": [{**a, "detail": json.dumps(a["detail"], ensure_ascii=False, indent=1)} for a in acks],
        "dmp": _dmp_requests(run, base, files),
        "mails": _mails(run, base, files, received),
        "hl7": _hl7(run, base, files, received),
    }
    return view


def _counted(faults: Sequence[str]) -> str:
    return ", ".join(f"{fault} ×{count}" for fault, count in Counter(faults).items())


def _recipient_label(kind: str, address: str) -> str:
    # A patient's MSSanté address is built from the INS: show the kind, not the address.
    if kind == "patient":
        return "the patient (Mon espace santé)"
    return address or "(no MSSanté address)"


def _plan_rows(run: StepRun) -> list[dict[str, Any]]:
    if run.plan is None:
        return []
    states = run.states
    rows = []
    for d in run.plan.deliveries:
        metadata = dict(d.metadata)
        facts = [f"confidentiality {', '.join(metadata.get('confidentiality', []))}"]
        if metadata.get("secret_connection"):
            facts.append("secret connection")
        if "headers" in metadata:
            facts.append(", ".join(f"{k}: {v}" for k, v in metadata["headers"].items()))
        if "flags" in metadata:
            facts.append(" ".join(f"{k}={v}" for k, v in metadata["flags"].items()))
        rows.append(
            {
                "destination": destination(d.channel.value, d.recipient.kind.value),
                "recipient": d.recipient.label
                or _recipient_label(d.recipient.kind.value, d.recipient.address),
                "action": d.action.value,
                "state": states.get(d.key, "?"),
                "facts": facts,
            }
        )
    return rows


def _csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    k: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v
                    for k, v in row.items()
                }
            )
    return out.getvalue().encode("utf-8")


def _dmp_requests(run: StepRun, base: str, files: dict[str, bytes]) -> list[dict[str, Any]]:
    rows = []
    for number, request in enumerate(run.dmp_requests, start=1):
        name = f"{base}/dmp/{number:02d}-{request.transaction}-{request.outcome}"
        envelope: bytes | None = None
        try:
            message = parse_message(request.content_type, request.raw, label="DMP request")
            envelope = etree.tostring(
                message.envelope, pretty_print=True, xml_declaration=True, encoding="UTF-8"
            )
        except InputError:
            envelope = None
        row: dict[str, Any] = {
            "number": number,
            "transaction": request.transaction,
            "outcome": request.outcome,
            "errors": list(request.errors),
            "fault": request.fault.value if request.fault is not None else None,
            "content_type": request.content_type.split(";", 1)[0],
            "bytes": len(request.raw),
            "received_at": request.received_at.isoformat(timespec="milliseconds"),
        }
        if envelope is not None:
            files[f"{name}.soap.xml"] = envelope
            row["file"] = f"{name}.soap.xml"
            row["envelope"] = _shown(envelope.decode("utf-8", errors="replace"))
        rows.append(row)
    return rows


def _mails(
    run: StepRun, base: str, files: dict[str, bytes], received: Mapping[str, bytes]
) -> list[dict[str, Any]]:
    rows = []
    for mail in run.mails:
        eml = next((p for p in received if p.endswith(f"-{mail.queue_id}.eml")), None)
        attachments = []
        listing: list[str] = []
        for part in mail.message.iter_attachments():
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            attachments.append(f"{part.get_content_type()} {part.get_filename() or ''} ({len(data)} bytes)")
            if (part.get_filename() or "").upper() == "IHE_XDM.ZIP":
                listing = _zip_listing(data)
        name = f"{base}/mssante/{_safe(mail.queue_id)}.xdm.txt"
        files[name] = ("\n".join(listing) + "\n").encode("utf-8")
        rows.append(
            {
                "kind": "smtp",
                "queue_id": mail.queue_id,
                "message_id": mail.message_id,
                "envelope": f"MAIL FROM:<{mail.mail_from}> {' '.join(mail.mail_options)}",
                "rcpt_options": " ".join(mail.rcpt_options),
                "headers": [(k, str(v)) for k, v in mail.message.items()],
                "attachments": attachments,
                "xdm": listing,
                "xdm_file": name,
                "raw": f"received/{eml}" if eml else None,
                "raw_label": ".eml",
                "duplicate": mail.duplicate,
                "patient": any(t.endswith("@patient.mssante.fr") for t in mail.rcpt_tos),
            }
        )
    for number, stored in enumerate(run.api_messages, start=1):
        name = f"{base}/mssante/{number:02d}-{_safe(stored.transaction_id)}.json"
        summary = {
            "transaction_id": stored.transaction_id,
            "message_id": stored.message_id,
            "recipients": list(stored.recipients),
            "recipient_types": list(stored.recipient_types),
            "action": stored.action,
            "xdm_action": stored.xdm_action,
            "xdm_files": list(stored.xdm_files),
            "mss_headers": stored.mss_headers,
            "mail_subject": stored.mail_subject,
            "attachments": {title: len(data) for title, data in stored.attachments.items()},
        }
        files[name] = _json(summary)
        listing = _zip_listing(stored.attachments.get("IHE_XDM.ZIP", b""))
        request = f"mssante-api/{stored.transaction_id}/request.json"
        rows.append(
            {
                "kind": "operator-api",
                "queue_id": stored.transaction_id,
                "message_id": stored.message_id,
                "envelope": f"POST $send-to-mss (sender {stored.sender_address})",
                "rcpt_options": "",
                "headers": [("Subject", stored.mail_subject or ""), *sorted(stored.mss_headers.items())],
                "attachments": [f"{t} ({len(d)} bytes)" for t, d in stored.attachments.items()],
                "xdm": listing,
                "xdm_file": name,
                "raw": f"received/{request}" if request in received else None,
                "raw_label": "request.json",
                "duplicate": False,
                "patient": "Patient" in stored.recipient_types,
            }
        )
    return rows


def _zip_listing(data: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [
                f"{info.file_size:>9}  {datetime(*info.date_time).isoformat(sep=' ')}"
                f"  {info.CRC:08x}  {info.filename}"
                for info in archive.infolist()
            ]
    except zipfile.BadZipFile:
        return ["(not a ZIP archive)"]


def _hl7_text(raw: str) -> str:
    text = raw.replace("\r", "\n")
    return _BASE64_FIELD.sub(lambda m: f"{m.group(1)}[{len(m.group(2))} base64 characters: the CDA]", text)


def _hl7(
    run: StepRun, base: str, files: dict[str, bytes], received: Mapping[str, bytes]
) -> list[dict[str, Any]]:
    rows = []
    for message in run.hl7:
        stored = f"hl7v2/{_safe(message.control_id)}.hl7"
        rows.append(
            {
                "control_id": message.control_id,
                "accepted": True,
                "ack": "AA",
                "event": message.event,
                "order_control": message.order_control,
                "flags": message.flags,
                "duplicate": message.duplicate,
                "text": _shown(_hl7_text(message.raw)),
                "file": f"received/{stored}" if stored in received else None,
            }
        )
    for number, refused in enumerate(run.hl7_refused, start=1):
        name = f"{base}/hl7v2/{number:02d}-refused-{refused.ack_code}.hl7"
        files[name] = refused.raw.replace("\r", "\n").encode("utf-8")
        rows.append(
            {
                "control_id": refused.control_id,
                "accepted": False,
                "ack": f"{refused.ack_code} {refused.error}",
                "event": "",
                "order_control": "",
                "flags": {},
                "duplicate": False,
                "text": _shown(_hl7_text(refused.raw)),
                "file": name,
            }
        )
    return rows


# --- the whole bundle --------------------------------------------------------------------------------


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def summary_data(
    views: Iterable[Mapping[str, Any]], *, ans_kit: str | None, started: datetime, seconds: float
) -> dict[str, Any]:
    """``summary.json``'s content: the verdict of every scenario and check."""
    scenarios = [
        {
            "name": view["name"],
            "title": view["title"],
            "verdict": view["verdict"],
            "builtin": view["builtin"],
            "source": view["source"],
            "seconds": view["seconds"],
            "error": view["error"],
            "directory": f"{view['name']}/",
            "checks": {
                check["name"]: {
                    "status": check["status"],
                    "failed": [line["text"] for line in check["lines"] if not line["ok"]],
                }
                for check in view["checks"]
            },
        }
        for view in views
    ]
    return {
        "format": SUMMARY_FORMAT,
        "crbio": __version__,
        "generated_at": started.astimezone(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "ans_kit": ans_kit,
        "checks": list(CHECKS),
        "passed": all(s["verdict"] == PASS for s in scenarios),
        "scenarios": scenarios,
    }


def write_bundle(
    output: Path,
    views: Sequence[Mapping[str, Any]],
    *,
    ans_kit: str | None,
    started: datetime,
    seconds: float,
) -> Path:
    """Write ``summary.json`` and ``index.html`` for scenarios already written; returns index.html's path."""
    summary = summary_data(views, ans_kit=ans_kit, started=started, seconds=seconds)
    page = (
        _environment()
        .get_template("index.html.j2")
        .render(
            summary=summary,
            scenarios=views,
            titles=CHECK_TITLES,
            checks=CHECKS,
            failed=sum(1 for v in views if v["verdict"] == FAIL),
        )
    )
    write_atomically(output, {"summary.json": _json(summary), "index.html": page.encode("utf-8")})
    return output / "index.html"
