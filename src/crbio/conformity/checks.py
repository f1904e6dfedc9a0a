"""The verdicts of a conformity run: one per scenario and check, computed from what happened.

Every line of every check compares the scenario's expectation, or a fact the CDA fixes, with
what the outbox journal and the simulators actually recorded: the routing plan queued, the
final state and attempts of each delivery, the DMP entries, the mails, the HL7 messages. A
check passes when all its lines hold, fails when one does not, and is "not run" when there
was nothing to run (the ANS kit without ``--ans-kit``).

Lines never quote patient data: destinations are named ``mssante:patient``, not by address.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from crbio._xml import parse_xml
from crbio.conformity.runner import BuiltReport, Evidence, StepRun
from crbio.conformity.scenario import Scenario
from crbio.dispatch.delivery import Delivery
from crbio.dispatch.header import DocumentHeader, read_header
from crbio.dispatch.hl7v2 import FLAG_ORDER
from crbio.dispatch.outbox import Transmission
from crbio.errors import InputError

__all__ = [
    "CHECKS",
    "CHECK_TITLES",
    "FAIL",
    "NOT_RUN",
    "PASS",
    "Check",
    "Line",
    "ScenarioResult",
    "destination",
    "evaluate",
    "xdm_action",
]

PASS, FAIL, NOT_RUN = "pass", "fail", "not run"

CHECK_TITLES: Mapping[str, str] = {
    "build": "Build",
    "xsd_rules": "XSD + crbio rules",
    "ans_kit": "ANS kit",
    "pdfa": "PDF/A",
    "plan": "Routing plan",
    "deliveries": "Deliveries",
    "messages": "Messages",
    "lifecycle": "Lifecycle",
}
CHECKS: tuple[str, ...] = tuple(CHECK_TITLES)

XDM_LAYOUT = frozenset(
    {"README.TXT", "INDEX.HTM", "IHE_XDM/SUBSET01/METADATA.XML", "IHE_XDM/SUBSET01/DOC0001.XML"}
)
_OBX11 = {"submit": "F", "replace": "C", "delete": "D"}
_XDM_ACTION = {"submit": "none", "replace": "C", "delete": "D"}
_VIHF_CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
_RIM = {"rim": "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"}
# A reference the browser would fetch from the network: an attribute or a CSS url() to http(s).
_EXTERNAL = re.compile(
    rb"""(?:\b(?:src|href|srcset|poster|data)\s*=\s*["']?|\burl\(\s*["']?|@import\s+["'])\s*(?:https?:)?//""",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Line:
    """One comparison: whether it held, what it compared, and the step it belongs to."""

    ok: bool
    text: str
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The line as JSON-serialisable data."""
        return {"ok": self.ok, "text": self.text, "step": self.step}


@dataclass
class Check:
    """The verdict of one check on one scenario, with the comparisons behind it."""

    name: str
    lines: list[Line] = field(default_factory=list)
    skipped: str | None = None  # why the check did not run

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``not run``."""
        if any(not line.ok for line in self.lines):
            return FAIL
        if self.skipped is not None or not self.lines:
            return NOT_RUN
        return PASS

    @property
    def title(self) -> str:
        """The column title."""
        return CHECK_TITLES[self.name]

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON-serialisable data."""
        return {
            "status": self.status,
            "skipped": self.skipped,
            "lines": [line.to_dict() for line in self.lines],
        }

    def add(self, ok: bool, text: str, step: int | None = None) -> bool:
        """Record one comparison; returns ``ok``."""
        self.lines.append(Line(bool(ok), text, step))
        return bool(ok)

    def same(self, what: str, actual: Any, expected: Any, step: int | None = None) -> bool:
        """Record whether ``actual`` equals ``expected``, showing both when they differ."""
        if actual == expected:
            return self.add(True, f"{what}: {_show(expected)}", step)
        return self.add(False, f"{what}: expected {_show(expected)}, got {_show(actual)}", step)


@dataclass
class ScenarioResult:
    """A scenario's evidence and the verdict of each check."""

    evidence: Evidence
    checks: dict[str, Check]

    @property
    def scenario(self) -> Scenario:
        """The scenario."""
        return self.evidence.scenario

    @property
    def verdict(self) -> str:
        """``fail`` when a check failed, else ``pass`` ("not run" checks do not fail a scenario)."""
        return FAIL if any(check.status == FAIL for check in self.checks.values()) else PASS


def _show(value: Any) -> str:
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(map(str, value))) + "}" if value else "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_show(v)}" for k, v in sorted(value.items())) or "none"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return "none" if value is None else str(value)


def destination(channel: str, recipient_kind: str) -> str:
    """The destination name of a delivery: its channel, and for MSSanté the kind of recipient."""
    return f"mssante:{recipient_kind}" if channel == "mssante" else channel


def evaluate(evidence: Evidence) -> dict[str, Check]:
    """Every check of a scenario, computed from its evidence, in :data:`CHECKS` order."""
    checks = {name: Check(name) for name in CHECKS}
    _documents(evidence, checks)
    for run in evidence.steps:
        _plan(run, checks["plan"])
        _deliveries(run, checks["deliveries"])
        _messages(evidence, run, checks["messages"])
        _lifecycle(evidence, run, checks["lifecycle"])
    ran = {run.step.index for run in evidence.steps}
    for step in evidence.scenario.steps:
        if step.index not in ran:
            for name in ("plan", "deliveries", "messages", "lifecycle"):
                checks[name].add(False, f"step {step.label} did not run", step.index)
    if evidence.error is not None:
        checks["lifecycle"].add(False, f"the scenario stopped: {evidence.error}")
    return checks


# --- documents -----------------------------------------------------------------------------------


def _documents(evidence: Evidence, checks: Mapping[str, Check]) -> None:
    validations = ["xsd_rules", "pdfa"]
    if evidence.ans_kit is None:
        checks["ans_kit"].skipped = "no ANS kit given (--ans-kit DIR)"
    else:
        validations.append("ans_kit")
    for key, built in evidence.reports.items():
        _build(key, built, checks["build"])
        for kind in ("n3", "n1"):
            report = built.validation.get(kind)
            label = f"{key} {kind.upper()}"
            if report is None:
                why = "not built" if built.documents is None else "could not be validated"
                for name in validations:
                    checks[name].add(False, f"{label}: {why}")
                continue
            _findings(checks["xsd_rules"], label, report.checks, report.findings, ("xsd", "crbio"))
            _findings(checks["pdfa"], label, report.checks, report.findings, ("pdfa",))
            if evidence.ans_kit is not None:
                kit = tuple(c for c in report.checks if c.startswith("ans:"))
                if kit:
                    _findings(checks["ans_kit"], label, kit, report.findings, kit)
                else:
                    checks["ans_kit"].add(False, f"{label}: the ANS kit did not run")


def _build(key: str, built: BuiltReport, check: Check) -> None:
    if built.documents is None:
        check.add(False, f"{key}: the build failed: {built.error}")
        return
    documents = built.documents
    check.add(True, f"{key}: built N3, N1 and PDF (document {documents.document_id})")
    for problem in built.problems:
        check.add(False, f"{key}: {problem}")
    if built.pages is not None:
        minimum = built.spec.min_pages
        if minimum is not None:
            check.add(
                built.pages >= minimum,
                f"{key}: the PDF has {built.pages} page(s), at least {minimum} expected",
            )
        else:
            check.add(True, f"{key}: the PDF has {built.pages} page(s)")
    if built.html is not None:
        pulled = _EXTERNAL.findall(built.html)
        check.add(not pulled, f"{key}: the rendered CDA loads no external resource ({len(pulled)} found)")
    header = _header(built)
    if header is None:
        check.add(False, f"{key}: the N3's header cannot be read")
    else:
        check.same(f"{key}: N3 document id", header.document_id, documents.document_id)
        check.same(f"{key}: N3 version", header.version, built.spec.report.document.version)
        check.same(f"{key}: N3 replaces", header.replaces, built.spec.report.document.replaces)


def _findings(
    check: Check, label: str, ran: Iterable[str], findings: Iterable[Any], sources: Iterable[str]
) -> None:
    wanted = tuple(sources)
    ran = tuple(ran)
    missing = [source for source in wanted if source not in ran]
    if missing:
        check.add(False, f"{label}: {', '.join(missing)} did not run")
        return
    errors = [f for f in findings if f.source in wanted and f.severity == "error"]
    warnings = [f for f in findings if f.source in wanted and f.severity != "error"]
    advice = f", {len(warnings)} warning(s)" if warnings else ""
    if not errors:
        check.add(True, f"{label}: {', '.join(wanted)}: no error{advice}")
    for finding in errors[:10]:
        check.add(False, f"{label}: {finding}")
    if len(errors) > 10:
        check.add(False, f"{label}: … and {len(errors) - 10} more error(s)")


def _header(built: BuiltReport) -> DocumentHeader | None:
    if built.documents is None:
        return None
    try:
        return read_header(built.documents.n3, label=built.spec.key)
    except InputError:
        return None


# --- routing plan ----------------------------------------------------------------------------------


def _plan(run: StepRun, check: Check) -> None:
    step, expect = run.step, run.step.expect
    n = step.index
    if run.plan is None:
        check.add(False, f"step {step.label}: no plan ({run.error})", n)
        return
    planned: dict[str, set[str]] = {}
    for d in run.plan.deliveries:
        planned.setdefault(destination(d.channel.value, d.recipient.kind.value), set()).add(d.action.value)
    expected = {dest: {action} for dest, action in expect.deliveries.items()}
    for dest in sorted(set(planned) | set(expected)):
        check.same(f"step {step.label}: {dest} delivery", planned.get(dest), expected.get(dest), n)
    left_out: dict[str, set[str]] = {}
    for s in run.plan.suppressed:
        left_out.setdefault(destination(s.channel.value, s.recipient.kind.value), set()).add(s.reason)
    wanted = {dest: set(reasons) for dest, reasons in expect.suppressed.items()}
    for dest in sorted(set(left_out) | set(wanted)):
        check.same(f"step {step.label}: {dest} left out because", left_out.get(dest), wanted.get(dest), n)
    if expect.mssante_professionals is not None:
        addresses = {
            d.recipient.address for d in run.plan.deliveries if d.recipient.kind.value == "professional"
        }
        check.same(
            f"step {step.label}: MSSanté professionals", addresses, set(expect.mssante_professionals), n
        )
    journal = {(s["channel"], s["recipient"], s["reason"]) for s in run.suppressions}
    plan_reasons = {(s.channel.value, s.recipient.address, s.reason) for s in run.plan.suppressed}
    check.add(
        plan_reasons <= journal,
        f"step {step.label}: the journal records why each destination was left out"
        f" ({len(plan_reasons)} reason(s))",
        n,
    )


# --- deliveries ------------------------------------------------------------------------------------


def _deliveries(run: StepRun, check: Check) -> None:
    step, expect = run.step, run.step.expect
    n = step.index
    if run.plan is None:
        check.add(False, f"step {step.label}: nothing was queued ({run.error})", n)
        return
    lines = {t.key: t for t in run.transmissions}
    attempts: Counter[str] = Counter()
    for d in run.plan.deliveries:
        dest = destination(d.channel.value, d.recipient.kind.value)
        t = lines.get(d.key)
        if t is None:
            check.add(False, f"step {step.label}: {dest}: no journal line", n)
            continue
        attempts[dest] += t.attempts
        wanted = expect.outcome(dest)
        state, _, reason = wanted.partition(":")
        if t.state != state:
            error = f" ({_redacted(t.last_error)})" if t.last_error else ""
            check.add(False, f"step {step.label}: {dest}: expected {state}, got {t.state}{error}", n)
            continue
        if state == "acknowledged":
            check.add(bool(t.ack_summary), f"step {step.label}: {dest}: acknowledged ({t.ack_summary})", n)
        elif reason:
            check.add(
                reason in (t.last_error or ""),
                f"step {step.label}: {dest}: dead with {reason!r} in the reason ({_redacted(t.last_error)})",
                n,
            )
        else:
            check.add(True, f"step {step.label}: {dest}: dead ({_redacted(t.last_error)})", n)
    for dest, count in expect.attempts.items():
        check.same(f"step {step.label}: {dest} attempts", attempts.get(dest, 0), count, n)
    for server in sorted(set(run.faults_queued) | set(run.faults_drawn)):
        check.same(
            f"step {step.label}: faults the {server} simulator answered with",
            dict(Counter(run.faults_drawn.get(server, []))),
            dict(Counter(run.faults_queued.get(server, []))),
            n,
        )


def _redacted(text: str | None) -> str:
    # The senders' reasons are already free of patient data; keep them short in a table.
    return (text or "")[:160]


# --- messages --------------------------------------------------------------------------------------


def _messages(evidence: Evidence, run: StepRun, check: Check) -> None:
    n = run.step.index
    if run.plan is None:
        check.add(False, f"step {run.step.label}: nothing was sent ({run.error})", n)
        return
    deliveries = {d.key: d for d in run.plan.deliveries}
    accounted: dict[str, set[str]] = {"dmp": set(), "mail": set(), "hl7": set()}
    for t in run.transmissions:
        delivery = deliveries.get(t.key)
        if delivery is None or t.state != "acknowledged":
            continue
        built = evidence.report_of(t.document_id)
        if built is None or built.documents is None:
            check.add(
                False, f"step {run.step.label}: document {t.document_id} is not one of the scenario's", n
            )
            continue
        dest = destination(t.channel, t.recipient_kind)
        where = f"step {run.step.label}: {dest}"
        if t.channel == "dmp":
            _dmp_message(evidence, run, t, delivery, built, check, where)
            accounted["dmp"].add(f"{'ITI-57' if delivery.action.value == 'delete' else 'ITI-41'} {t.key}")
        elif t.channel == "mssante":
            found = _mail_message(evidence, run, t, delivery, built, check, where)
            if found:
                accounted["mail"].add(found)
        else:
            found = _hl7_message(run, t, delivery, built, check, where)
            if found:
                accounted["hl7"].add(found)
    _nothing_else(run, accounted, check)


def _dmp_message(
    evidence: Evidence,
    run: StepRun,
    t: Transmission,
    delivery: Delivery,
    built: BuiltReport,
    check: Check,
    where: str,
) -> None:
    n = run.step.index
    expect = run.step.expect
    transactions = [(r.transaction, r.outcome) for r in run.dmp_requests]
    if delivery.action.value == "delete":
        check.add(
            ("ITI-57", "success") in transactions, f"{where}: the DMP answered an ITI-57 with Success", n
        )
        return
    check.add(("ITI-41", "success") in transactions, f"{where}: the DMP answered an ITI-41 with Success", n)
    entry = run.dmp_entries.get(built.spec.key)
    if entry is None:
        check.add(False, f"{where}: the DMP holds no entry for document {t.document_id}", n)
        return
    assert built.documents is not None
    header = read_header(built.documents.n3, label=built.spec.key)
    detail = t.ack_detail or {}
    check.add(
        entry.content == built.documents.n3, f"{where}: the stored document is the N3 built, byte for byte", n
    )
    check.same(f"{where}: entryUUID acknowledged", detail.get("entry_uuid"), entry.entry_uuid, n)
    metadata = entry.metadata
    check.same(f"{where}: uniqueId", metadata.get("uniqueId"), header.document_id, n)
    check.same(f"{where}: typeCode", metadata.get("typeCode"), header.code.code, n)
    check.same(f"{where}: title", metadata.get("title"), header.title, n)
    ins = header.ins
    check.add(
        ins is not None and entry.patient_id.startswith(f"{ins[0]}^^^&{ins[1]}&ISO^NH"),
        f"{where}: patientId is the INS of the CDA",
        n,
    )
    _dmp_header_slots(entry.metadata, entry.content, header, check, where, n)
    confidentiality = list(metadata.get("confidentialityCode") or [])
    check.same(
        f"{where}: confidentialityCode as planned",
        confidentiality,
        list(delivery.metadata["confidentiality"]),
        n,
    )
    check.same(
        f"{where}: first confidentialityCode is the CDA's", confidentiality[:1], [header.confidentiality], n
    )
    if expect.dmp_confidentiality is not None:
        check.same(f"{where}: confidentialityCode", confidentiality, list(expect.dmp_confidentiality), n)
    vihf = [value.split("^", 1)[0] for value in entry.vihf.get(_VIHF_CONFIDENTIALITY, ())]
    secret = bool(delivery.metadata.get("secret_connection"))
    check.same(
        f"{where}: VIHF confidentiality-code (secret connection {'on' if secret else 'off'})",
        vihf,
        ["INVISIBLE_REPRESENTANTS_LEGAUX"] if secret else [],
        n,
    )
    if expect.vihf_confidentiality is not None:
        check.same(f"{where}: VIHF confidentiality-code", vihf, list(expect.vihf_confidentiality), n)
    if delivery.action.value == "replace":
        replaced = evidence.report_of(delivery.replaces or "")
        old = run.dmp_entries.get(replaced.spec.key) if replaced is not None else None
        check.add(
            old is not None and entry.replaced_entry_uuid == old.entry_uuid,
            f"{where}: the new entry replaces (RPLC) the entry of {delivery.replaces}",
            n,
        )


def _dmp_header_slots(
    metadata: Mapping[str, Any], content: bytes, header: DocumentHeader, check: Check, where: str, n: int
) -> None:
    """The DocumentEntry's codes and slots against the CDA header they are taken from."""
    slots: Mapping[str, list[str]] = metadata.get("slots") or {}

    def slot(name: str) -> str | None:
        values = slots.get(name) or []
        return values[0] if values else None

    def utc(moment: datetime | None) -> str | None:
        return None if moment is None else moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")

    check.same(f"{where}: creationTime", slot("creationTime"), utc(header.effective_time), n)
    check.same(f"{where}: serviceStartTime", slot("serviceStartTime"), utc(header.service_start), n)
    check.same(f"{where}: serviceStopTime", slot("serviceStopTime"), utc(header.service_stop), n)
    facility = header.facility_type.code if header.facility_type is not None else None
    check.same(
        f"{where}: healthcareFacilityTypeCode", metadata.get("healthcareFacilityTypeCode"), facility, n
    )
    setting = header.practice_setting.code if header.practice_setting is not None else None
    check.same(f"{where}: practiceSettingCode", metadata.get("practiceSettingCode"), setting, n)
    authenticator = header.legal_authenticator
    check.add(
        authenticator is not None and (slot("legalAuthenticator") or "").startswith(f"{authenticator.rpps}^"),
        f"{where}: legalAuthenticator is the CDA's",
        n,
    )
    source = slot("sourcePatientId") or ""
    check.add(
        any(source == f"{extension}^^^&{root}&ISO^PI" for root, extension in header.local_ids),
        f"{where}: sourcePatientId is the CDA's local patient id (IPP)",
        n,
    )
    check.same(f"{where}: hash (SHA-1)", slot("hash"), hashlib.sha1(content).hexdigest(), n)
    check.same(f"{where}: size", slot("size"), str(len(content)), n)


def _mail_message(
    evidence: Evidence,
    run: StepRun,
    t: Transmission,
    delivery: Delivery,
    built: BuiltReport,
    check: Check,
    where: str,
) -> str | None:
    n = run.step.index
    expect = run.step.expect
    assert built.documents is not None
    message_id = str((t.ack_detail or {}).get("message_id", "")).strip("<>")
    wanted_headers = dict(delivery.metadata.get("headers") or {})
    action = delivery.action.value
    if evidence.scenario.simulation.mssante == "operator-api":
        stored = next((m for m in run.api_messages if m.message_id == message_id), None)
        if stored is None:
            check.add(False, f"{where}: the operator API holds no message {message_id}", n)
            return None
        check.add(t.recipient in stored.recipients, f"{where}: addressed to the planned recipient", n)
        headers = {k: v for k, v in stored.mss_headers.items() if k.startswith("X-MSS-")}
        check.same(f"{where}: X-MSS headers as planned", headers, wanted_headers, n)
        _expected_headers(headers, expect.mss_headers, check, where, n)
        zipped = stored.attachments.get("IHE_XDM.ZIP")
        pdf = next((data for name, data in stored.attachments.items() if name.lower().endswith(".pdf")), None)
    else:
        mail = next((m for m in run.mails if m.message_id == message_id), None)
        if mail is None:
            check.add(False, f"{where}: the SMTP server holds no mail {message_id}", n)
            return None
        message = mail.message
        check.add(
            t.recipient in mail.rcpt_tos and message["To"] == t.recipient,
            f"{where}: addressed (envelope and To) to the planned recipient",
            n,
        )
        headers = {name: str(value) for name, value in message.items() if name.upper().startswith("X-MSS-")}
        check.same(f"{where}: X-MSS headers as planned", headers, wanted_headers, n)
        _expected_headers(headers, expect.mss_headers, check, where, n)
        check.add(
            str(message["Subject"] or "").startswith("XDM/1.0/DDM"), f"{where}: subject XDM/1.0/DDM+…", n
        )
        if delivery.metadata.get("request_dsn"):
            check.add(
                "NOTIFY" in mail.dsn_parameters, f"{where}: a delivery status notification is requested", n
            )
        files: dict[str, bytes] = {}
        for part in message.iter_attachments():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                files[part.get_filename() or ""] = payload
        zipped = files.get("IHE_XDM.ZIP")
        pdf = next((data for name, data in files.items() if name.lower().endswith(".pdf")), None)
    check.add(pdf == built.documents.pdf, f"{where}: the PDF attached is the one built", n)
    if not isinstance(zipped, bytes):
        check.add(False, f"{where}: no IHE_XDM.ZIP attached", n)
        return message_id
    try:
        with zipfile.ZipFile(io.BytesIO(zipped)) as xdm:
            names = set(xdm.namelist())
            check.add(names >= XDM_LAYOUT, f"{where}: IHE_XDM.ZIP has the IHE XDM layout", n)
            document = (
                xdm.read("IHE_XDM/SUBSET01/DOC0001.XML") if "IHE_XDM/SUBSET01/DOC0001.XML" in names else b""
            )
            metadata = (
                xdm.read("IHE_XDM/SUBSET01/METADATA.XML") if "IHE_XDM/SUBSET01/METADATA.XML" in names else b""
            )
    except zipfile.BadZipFile:
        check.add(False, f"{where}: IHE_XDM.ZIP is not a ZIP archive", n)
        return message_id
    check.add(document == built.documents.n3, f"{where}: DOC0001.XML is the N3 built, byte for byte", n)
    found = xdm_action(metadata)
    check.same(f"{where}: XDM action ({action})", found, _XDM_ACTION[action], n)
    if expect.xdm_action is not None:
        check.same(f"{where}: XDM action", found, expect.xdm_action, n)
    return message_id


def _expected_headers(
    headers: Mapping[str, str], wanted: Mapping[str, str], check: Check, where: str, n: int
) -> None:
    for name, value in wanted.items():
        check.same(f"{where}: {name}", headers.get(name, ""), value, n)


def xdm_action(metadata: bytes) -> str:
    """The ``action`` slot of an XDM ``METADATA.XML`` (``C``, ``D``), or ``none``."""
    if not metadata:
        return "missing METADATA.XML"
    try:
        tree = parse_xml(metadata, label="METADATA.XML")
    except InputError:
        return "unreadable METADATA.XML"
    values = tree.xpath("//rim:Slot[@name='action']/rim:ValueList/rim:Value/text()", namespaces=_RIM)
    return str(values[0]) if values else "none"


def _hl7_message(
    run: StepRun, t: Transmission, delivery: Delivery, built: BuiltReport, check: Check, where: str
) -> str | None:
    n = run.step.index
    expect = run.step.expect
    assert built.documents is not None
    control_id = str((t.ack_detail or {}).get("control_id", ""))
    message = next((m for m in run.hl7 if m.control_id == control_id), None)
    if message is None:
        check.add(False, f"{where}: the PFI holds no message {control_id}", n)
        return None
    check.add(
        message.cda == built.documents.n3, f"{where}: the CDA in OBX-5 is the N3 built, byte for byte", n
    )
    action = delivery.action.value
    check.same(f"{where}: OBX-11 ({action})", message.event, _OBX11[action], n)
    if expect.obx11 is not None:
        check.same(f"{where}: OBX-11", message.event, expect.obx11, n)
    flags = dict(delivery.metadata.get("flags") or {})
    check.same(f"{where}: metadata OBX flags in the volet's order", list(message.flags), list(FLAG_ORDER), n)
    check.same(
        f"{where}: metadata OBX flags as planned",
        _flag_text(message.flags),
        _flag_text({code: flags.get(code, "?") for code in FLAG_ORDER}),
        n,
    )
    for code, value in expect.hl7_flags.items():
        check.same(f"{where}: {code}", message.flags.get(code), value, n)
    recipients = [r["address"] for r in delivery.metadata.get("mssante_recipients") or []]
    check.same(f"{where}: PRT RCT recipients", len(message.recipients), len(recipients), n)
    check.add(list(message.recipients) == recipients, f"{where}: PRT RCT recipients are the planned ones", n)
    check.same(f"{where}: NTE FIN (no reply)", message.no_reply, bool(delivery.metadata.get("no_reply")), n)
    return control_id


def _flag_text(flags: Mapping[str, str]) -> str:
    return " ".join(f"{code}={value}" for code, value in flags.items())


def _nothing_else(run: StepRun, accounted: Mapping[str, set[str]], check: Check) -> None:
    """Servers received nothing the journal does not account for: suppressions really held."""
    n = run.step.index
    label = run.step.label
    for transaction in ("ITI-41", "ITI-57"):
        stored = sum(1 for r in run.dmp_requests if r.transaction == transaction and r.outcome == "success")
        planned = sum(1 for entry in accounted["dmp"] if entry.startswith(transaction))
        check.same(
            f"step {label}: {transaction} requests the DMP accepted (one per DMP delivery)",
            stored,
            planned,
            n,
        )
    mails = [m.message_id for m in run.mails] + [m.message_id or "" for m in run.api_messages]
    extra = [m for m in mails if m not in accounted["mail"]]
    duplicates = [m for m, count in Counter(mails).items() if count > 1]
    check.add(
        not extra, f"step {label}: every mail received is a planned delivery ({len(mails)} received)", n
    )
    check.add(not duplicates, f"step {label}: no mail received twice", n)
    hl7 = [m.control_id for m in run.hl7]
    check.add(
        all(c in accounted["hl7"] for c in hl7) and len(set(hl7)) == len(hl7),
        f"step {label}: every HL7 message received is a planned delivery, once ({len(hl7)} received)",
        n,
    )


# --- lifecycle -------------------------------------------------------------------------------------


def _lifecycle(evidence: Evidence, run: StepRun, check: Check) -> None:
    n = run.step.index
    label = run.step.label
    for key, wanted in run.step.expect.dmp_status.items():
        check.same(f"step {label}: DMP entry of {key}", _status(run, key), wanted, n)
    if run.plan is None:
        return
    deliveries = {d.key: d for d in run.plan.deliveries}
    for t in run.transmissions:
        dest = destination(t.channel, t.recipient_kind)
        _trail(t, run.events.get(t.key, []), check, f"step {label}: {dest}", n)
        delivery = deliveries.get(t.key)
        if delivery is None or t.state != "acknowledged" or t.channel != "dmp":
            continue
        built = evidence.report_of(t.document_id)
        key = built.spec.key if built is not None else "?"
        if delivery.action.value == "delete":
            check.same(
                f"step {label}: DMP entry of {key} after the deletion", _status(run, key), "Deleted", n
            )
            continue
        check.same(f"step {label}: DMP entry of {key} once stored", _status(run, key), "Approved", n)
        if delivery.action.value == "replace":
            old = evidence.report_of(delivery.replaces or "")
            old_key = old.spec.key if old is not None else "?"
            check.same(
                f"step {label}: DMP entry of {old_key} once replaced", _status(run, old_key), "Deprecated", n
            )
    _order(evidence, run, check)


def _status(run: StepRun, key: str) -> str:
    entry = run.dmp_entries.get(key)
    if entry is None:
        return "absent"
    return entry.status.rsplit(":", 1)[-1]  # …StatusType:Approved, also under the ASIP namespace


def _trail(t: Transmission, events: list[dict[str, Any]], check: Check, where: str, n: int) -> None:
    names = [e["event"] for e in events]
    sends = names.count("sending") - names.count("released")
    final = {"acknowledged": ("acknowledged", "recovered"), "dead": ("dead",)}.get(t.state, ())
    ok = bool(names) and names[0] == "queued" and sends == t.attempts and bool(final) and names[-1] in final
    retries = names.count("retry-scheduled")
    check.add(
        ok and retries == t.attempts - 1,
        f"{where}: journal trail queued → {t.attempts} attempt(s), {retries} retry(ies)"
        f" → {names[-1] if names else '?'}",
        n,
    )


def _order(evidence: Evidence, run: StepRun, check: Check) -> None:
    """A replacement or deletion was sent only once the version it targets was acknowledged there."""
    earlier = [
        t for other in evidence.steps if other.step.index < run.step.index for t in other.transmissions
    ]
    deliveries = {d.key: d for d in run.plan.deliveries} if run.plan is not None else {}
    for t in run.transmissions:
        delivery = deliveries.get(t.key)
        if delivery is None or delivery.action.value == "submit" or t.sent_at is None:
            continue
        target = delivery.replaces if delivery.action.value == "replace" else delivery.document_id
        targets = list(_targets(earlier, target, t))
        if not targets:
            continue  # the target version was sent by another system: nothing to wait for
        before = [e for e in targets if e.acknowledged_at is not None and e.acknowledged_at <= t.sent_at]
        check.add(
            bool(before),
            f"step {run.step.label}: {destination(t.channel, t.recipient_kind)}: {delivery.action.value}"
            " sent after the version it targets was acknowledged there",
            run.step.index,
        )


def _targets(
    earlier: Iterable[Transmission], document_id: str | None, t: Transmission
) -> Iterator[Transmission]:
    for e in earlier:
        if e.document_id == document_id and e.channel == t.channel and e.recipient == t.recipient:
            yield e
