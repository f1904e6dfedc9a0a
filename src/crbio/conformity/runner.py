"""Run one scenario end to end and collect its evidence: what was built, planned, sent and received.

Each scenario runs against its own :class:`~crbio.simulators.run.Simulation` in a scratch
directory (its throw-away PKI never reaches the evidence bundle). The runner builds and
validates every report first, then runs the steps in order: it injects the step's faults,
queues the step with :func:`crbio.dispatch.dispatch` or :func:`crbio.dispatch.delete`, lets
:func:`crbio.dispatch.deliver` work until the deliveries settle, and records the plan, the
journal and what each simulator received during the step. It judges nothing: the verdicts
are :mod:`crbio.conformity.checks`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crbio.conformity.pictures import first_page_png
from crbio.conformity.scenario import ReportSpec, Scenario, Step, report_json
from crbio.dispatch import DispatchConfig, Plan, Transmission, delete, deliver, dispatch
from crbio.dispatch.outbox_backends import open_outbox
from crbio.documents.build import Documents, build
from crbio.errors import ConfigurationError, CrbioError
from crbio.presentation import render_html
from crbio.validation.report import ValidationReport
from crbio.validation.validate import validate_document

if TYPE_CHECKING:
    from crbio.simulators.mllp import ReceivedMessage as HL7Message
    from crbio.simulators.mllp import RefusedMessage
    from crbio.simulators.operator_api import StoredMessage
    from crbio.simulators.run import Simulation
    from crbio.simulators.smtp import ReceivedMessage as MailMessage
    from crbio.simulators.xds import XdsEntry, XdsRequest
    from crbio.validation.anskit import AnsKit

__all__ = ["BuildCache", "BuiltReport", "Evidence", "StepRun", "run_scenario"]

log = logging.getLogger("crbio.conformity.runner")

RETRY_DELAY = 0.05
"""The simulation's first retry delay (seconds): a fault that heals costs a fraction of a second."""


@dataclass
class BuiltReport:
    """One report of a scenario, built, validated and pictured.

    Attributes:
        spec: The report as the scenario gives it.
        documents: The N3, N1 and PDF (None when the build failed).
        error: Why the build failed.
        validation: The validation report of each document, ``n3`` and ``n1``.
        html: The N3 rendered through crbio's stylesheet.
        page_png: The PDF's first page as a PNG.
        pages: The PDF's page count.
        problems: What went wrong while validating, rendering or picturing (not the build).
    """

    spec: ReportSpec
    documents: Documents | None = None
    error: str | None = None
    validation: dict[str, ValidationReport] = field(default_factory=dict)
    html: bytes | None = None
    page_png: bytes | None = None
    pages: int | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class StepRun:
    """What one step did, as the outbox and the simulators recorded it.

    Attributes:
        step: The step.
        document_id: The document it sent or deleted.
        plan: The routing plan queued (None when the step failed before).
        keys: The delivery keys of the plan.
        states: The state of each key once the deliveries settled (or the time ran out).
        transmissions: The journal lines of the step's deliveries.
        events: The event trail of each delivery key.
        suppressions: The journal's suppressions of the document.
        faults_queued: The faults the step injected, per server.
        faults_drawn: The faults the simulators actually answered with during the step, per server.
        dmp_requests: The HTTP requests the DMP received during the step.
        dmp_entries: Each report's DMP entry after the step (None: the DMP holds none).
        mails: The mails the SMTP server accepted during the step.
        api_messages: The messages the operator API accepted during the step.
        hl7: The HL7 messages the PFI accepted during the step.
        hl7_refused: The HL7 messages the PFI refused during the step.
        error: Why the step could not run to its end.
        seconds: How long it took.
    """

    step: Step
    document_id: str | None = None
    plan: Plan | None = None
    keys: tuple[str, ...] = ()
    states: dict[str, str] = field(default_factory=dict)
    transmissions: list[Transmission] = field(default_factory=list)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    suppressions: list[dict[str, Any]] = field(default_factory=list)
    faults_queued: dict[str, list[str]] = field(default_factory=dict)
    faults_drawn: dict[str, list[str]] = field(default_factory=dict)
    dmp_requests: list[XdsRequest] = field(default_factory=list)
    dmp_entries: dict[str, XdsEntry | None] = field(default_factory=dict)
    mails: list[MailMessage] = field(default_factory=list)
    api_messages: list[StoredMessage] = field(default_factory=list)
    hl7: list[HL7Message] = field(default_factory=list)
    hl7_refused: list[RefusedMessage] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Evidence:
    """Everything one scenario produced, for the checks and the bundle.

    Attributes:
        scenario: The scenario.
        reports: Each report, built.
        steps: Each step run, in order (steps after a failed one are absent).
        config: The dispatch configuration the simulation wrote (rules, NIL…).
        received: The files the simulators stored, by path relative to their ``received/``.
        ans_kit: What ran as the ANS kit, or None when no kit was given.
        error: Why the scenario could not run to its end.
        seconds: How long it took.
    """

    scenario: Scenario
    reports: dict[str, BuiltReport]
    steps: list[StepRun] = field(default_factory=list)
    config: DispatchConfig | None = None
    received: dict[str, bytes] = field(default_factory=dict)
    ans_kit: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def report_of(self, document_id: str) -> BuiltReport | None:
        """The built report whose N3 has this document id."""
        for built in self.reports.values():
            if built.documents is not None and built.documents.document_id == document_id:
                return built
        return None


@dataclass(frozen=True)
class _Checked:
    validation: dict[str, ValidationReport]
    html: bytes | None
    page_png: bytes | None
    pages: int | None
    problems: tuple[str, ...]


class BuildCache:
    """What this run already built and validated, so that shared reports cost once.

    Building is deterministic (the same input gives the same bytes): documents are kept by
    the SHA-256 of the input JSON, and their validation (the ANS kit is the slow part),
    rendering and picture by the SHA-256 of the documents. The nominal sample sent with and
    without an opposition, which does not change the CDA, is thus put through the kit once.
    """

    def __init__(self) -> None:
        self._documents: dict[str, Documents | str] = {}
        self._checked: dict[str, _Checked] = {}

    def build(self, spec: ReportSpec, scenario: str, kit: AnsKit | None) -> BuiltReport:
        """Build, validate, render and picture one report of a scenario, reusing earlier work."""
        key = hashlib.sha256(report_json(spec.data)).hexdigest()
        if key not in self._documents:
            try:
                # Validated below, with every check at once, so a non-conformant document is
                # a FAIL with its findings rather than an exception.
                self._documents[key] = build(spec.report, validate=False)
            except CrbioError as error:
                self._documents[key] = f"{type(error).__name__}: {error}"
        documents = self._documents[key]
        if isinstance(documents, str):
            return BuiltReport(spec, error=documents)
        digest = hashlib.sha256(documents.n3 + b"\0" + documents.n1).hexdigest()
        if digest not in self._checked:
            self._checked[digest] = _check(documents, kit)
        checked = self._checked[digest]
        label = f"{scenario}/{spec.key}"
        return BuiltReport(
            spec,
            documents,
            validation={
                kind: dataclasses.replace(report, document=f"{label}.{kind}.xml")
                for kind, report in checked.validation.items()
            },
            html=checked.html,
            page_png=checked.page_png,
            pages=checked.pages,
            problems=list(checked.problems),
        )


def _check(documents: Documents, kit: AnsKit | None) -> _Checked:
    """Validate both documents (with the ANS kit when given), render the N3, picture the PDF."""
    validation: dict[str, ValidationReport] = {}
    problems: list[str] = []
    for kind, data in (("n3", documents.n3), ("n1", documents.n1)):
        try:
            validation[kind] = validate_document(data, label=f"{kind}.xml", ans_kit=kit, pdfa=True)
        except CrbioError as error:
            problems.append(f"{kind}: cannot be validated: {error}")
    html = None
    try:
        html = render_html(documents.n3)
    except CrbioError as error:
        problems.append(f"rendering: {error}")
    png, pages = None, None
    try:
        png, pages = first_page_png(documents.pdf)
    except ValueError as error:
        problems.append(f"picture: {error}")
    return _Checked(validation, html, png, pages, tuple(problems))


def run_scenario(
    scenario: Scenario, work_dir: Path, *, kit: AnsKit | None = None, cache: BuildCache | None = None
) -> Evidence:
    """Run a scenario in its own simulation under ``work_dir`` and collect its evidence.

    ``cache`` shares the reports built by the earlier scenarios of a run.

    Raises:
        ConfigurationError: the simulators cannot start (a missing extra, …).
    """
    from crbio.simulators.run import Simulation

    started = time.monotonic()
    builds = cache or BuildCache()
    reports = {key: builds.build(spec, scenario.name, kit) for key, spec in scenario.reports.items()}
    evidence = Evidence(scenario, reports, ans_kit=kit.version if kit is not None else None)
    known = scenario.simulation.dmp_known_patients
    directory = work_dir / "simulation"
    sim = Simulation(
        directory,
        mssante=scenario.simulation.mssante,
        known_patients=set(known) if known is not None else None,
        retry_delay=RETRY_DELAY,
    )
    with sim:
        evidence.config = sim.config
        for step in scenario.steps:
            run = _run_step(step, sim, evidence.config, reports)
            evidence.steps.append(run)
            if run.error is not None:
                evidence.error = f"step {step.label}: {run.error}"
                break
    received = directory / "received"
    if received.is_dir():
        for path in sorted(received.rglob("*")):
            if path.is_file():
                evidence.received[path.relative_to(received).as_posix()] = path.read_bytes()
    evidence.seconds = time.monotonic() - started
    log.info("scenario %s ran in %.1f s", scenario.name, evidence.seconds)
    return evidence


def _fault_plans(sim: Simulation, mssante: str) -> Mapping[str, Any]:
    return {
        "dmp": sim.xds.faults,
        "mssante": sim.smtp.faults if mssante == "smtp" else sim.operator.faults,
        "hl7v2": sim.mllp.faults,
    }


def _run_step(
    step: Step, sim: Simulation, config: DispatchConfig, reports: Mapping[str, BuiltReport]
) -> StepRun:
    started = time.monotonic()
    run = StepRun(step)
    built = reports[step.report]
    if built.documents is None:
        run.error = f"report {step.report} could not be built"
        return run
    documents = built.documents
    run.document_id = documents.document_id
    plans = _fault_plans(sim, sim.mssante)
    drawn_before = {server: len(plan.injected) for server, plan in plans.items()}
    seen = (
        len(sim.xds.requests),
        len(sim.smtp.messages),
        len(sim.operator.messages),
        len(sim.mllp.messages),
        len(sim.mllp.refused),
    )
    for fault in step.faults:
        plans[fault.server].queue(fault.fault, fault.times)
        run.faults_queued.setdefault(fault.server, []).extend([fault.fault.value] * fault.times)
    try:
        if step.action == "delete":
            result = delete(documents.document_id, config)
        else:
            result = dispatch(documents, config)
        run.plan = result.plan
        run.keys = result.keys
        run.states, _ = deliver(config, result.keys, timeout=step.timeout)
    except ConfigurationError:
        raise
    except CrbioError as error:
        run.error = f"{type(error).__name__}: {error}"
    finally:
        for server, plan in plans.items():
            drawn = [str(f.value) for f in plan.injected[drawn_before[server] :]]
            if drawn:
                run.faults_drawn[server] = drawn
            plan.clear()  # a fault the step did not use must not fall on the next step
    with open_outbox(config) as outbox:
        wanted = set(run.keys)
        run.transmissions = [t for t in outbox.transmissions() if t.key in wanted]
        run.events = {key: outbox.events(key) for key in run.keys}
        run.suppressions = outbox.suppressions(documents.document_id)
    run.dmp_requests = sim.xds.requests[seen[0] :]
    run.mails = sim.smtp.messages[seen[1] :]
    run.api_messages = list(sim.operator.messages[seen[2] :])
    run.hl7 = list(sim.mllp.messages[seen[3] :])
    run.hl7_refused = list(sim.mllp.refused[seen[4] :])
    for key, other in reports.items():
        if other.documents is not None:
            run.dmp_entries[key] = sim.xds.entry(other.documents.document_id)
    run.seconds = time.monotonic() - started
    return run
