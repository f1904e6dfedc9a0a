"""The dispatch entry points: queue a built report's deliveries, queue a deletion, deliver now.

``dispatch`` and ``delete`` only *queue*: the outbox is the single source of truth and the
workers make the deliveries, so a crash between queuing and sending loses nothing.
``deliver`` runs a worker in-process until given deliveries have settled, which is what
``crbio send`` does for an operator who wants to see the outcome at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from crbio.dispatch.config import DispatchConfig
from crbio.dispatch.delivery import Action, Channel, Delivery
from crbio.dispatch.outbox import Outbox
from crbio.dispatch.outbox_backends import open_outbox
from crbio.dispatch.plan import Plan, plan_deletion, plan_dispatch
from crbio.dispatch.worker import Worker, WorkerStats
from crbio.documents.build import Documents
from crbio.errors import DispatchError

__all__ = ["DispatchResult", "delete", "deliver", "dispatch"]

_SETTLED = frozenset({"acknowledged", "dead"})


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """What queuing did: the plan, the delivery keys newly queued and those already queued before."""

    plan: Plan
    queued: tuple[str, ...]
    already_queued: tuple[str, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """Every delivery key of the plan."""
        return tuple(d.key for d in self.plan.deliveries)


def _senders(config: DispatchConfig) -> dict[Channel, str]:
    return {channel: dest.sender for channel, dest in config.destinations.items()}


def _reconcile_replacements(plan: Plan, outbox: Outbox) -> Plan:
    """Send a replacement as a first send to recipients that never got the version it replaces.

    An "annule et remplace" only makes sense to someone who received the earlier version;
    when the outbox holds that version but no delivery of it to a recipient (newly copied
    prescriber, INS qualified since…), that recipient gets a plain first send. When the outbox
    does not know the earlier version at all (sent by another system), the replacement stands.
    """
    if plan.action is not Action.REPLACE:
        return plan
    previous = plan.deliveries[0].replaces if plan.deliveries else None
    if previous is None or outbox.document_version(previous) is None:
        return plan
    reached = outbox.known_recipients(previous)
    deliveries = tuple(
        d
        if (d.channel.value, d.recipient.address) in reached
        else replace(d, action=Action.SUBMIT, replaces=None)
        for d in plan.deliveries
    )
    return replace(plan, deliveries=deliveries)


def dispatch(documents: Documents, config: DispatchConfig, *, outbox: Outbox | None = None) -> DispatchResult:
    """Plan a built report's deliveries and queue them in the outbox, with the suppressions.

    Idempotent: dispatching the same documents again queues nothing new. The workers
    (``crbio worker`` or :func:`deliver`) then make the deliveries.

    Raises:
        OutboxError: the outbox database is unusable.
    """
    own = outbox is None
    box = outbox or open_outbox(config)
    try:
        report = documents.report
        doc = report.document
        previous = box.document_confidentiality(doc.replaces) if doc.replaces else None
        plan = _reconcile_replacements(plan_dispatch(report, config, previous_confidentiality=previous), box)
        box.store_document(
            document_id=documents.document_id,
            set_id=doc.set_id or "",
            version=doc.version,
            replaces=doc.replaces,
            confidentiality=[doc.confidentiality.value, *doc.masking.codes()],
            n3=documents.n3,
            pdf=documents.pdf,
        )
        added, existing = box.enqueue(plan, _senders(config))
    finally:
        if own:
            box.close()
    return DispatchResult(plan, tuple(added), tuple(existing))


def delete(document_id: str, config: DispatchConfig, *, outbox: Outbox | None = None) -> DispatchResult:
    """Queue the deletion of a document version on every channel and recipient that acknowledged it.

    Raises:
        DispatchError: the outbox has no record of that document.
    """
    own = outbox is None
    box = outbox or open_outbox(config)
    try:
        version = box.document_version(document_id)
        if version is None:
            raise DispatchError(
                f"document {document_id} is not in the outbox", code="dispatch.unknown-document"
            )
        delivered: list[Delivery] = [d for d, _ in box.acknowledged(document_id)]
        plan = plan_deletion(document_id, version, delivered)
        added, existing = box.enqueue(plan, _senders(config))
    finally:
        if own:
            box.close()
    return DispatchResult(plan, tuple(added), tuple(existing))


def deliver(
    config: DispatchConfig, keys: Iterable[str] | None = None, *, timeout: float = 60.0
) -> tuple[dict[str, str], WorkerStats]:
    """Run a worker in this process until the given deliveries settle (or ``timeout`` passes).

    A delivery is settled when acknowledged or dead. Without ``keys``, it works until nothing
    is due now. Returns the state of each key and what the worker did; deliveries still
    retrying stay in the outbox for ``crbio worker``.
    """
    wanted = list(keys or [])
    deadline = time.monotonic() + timeout
    with Worker(config) as worker:
        while time.monotonic() < deadline:
            processed = worker.run_once()
            if wanted and all(state in _SETTLED for state in worker.outbox.states(wanted).values()):
                break
            if processed:
                continue
            due = worker.outbox.next_due()
            if not wanted or due is None or due - time.time() > deadline - time.monotonic():
                break  # nothing more to do now, or the next retry is past the time limit
            time.sleep(min(0.2, max(0.02, due - time.time())))
        states = worker.outbox.states(wanted) if wanted else {}
        return states, worker.stats
