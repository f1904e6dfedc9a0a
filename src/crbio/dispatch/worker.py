"""Workers drain the outbox: claim a delivery, hand it to its sender, record what happened.

Any number of workers, in threads, processes or on several machines sharing the database,
can run at once: claims are leases taken under the database's write lock, so a delivery is
held by one worker at a time. A worker that dies mid-send leaves its lease to expire; the
next worker to claim that delivery first asks the destination whether it already has it
(:meth:`~crbio.dispatch.senders.base.Sender.find_delivered`) and otherwise resends it with
the same message ids, which receivers de-duplicate on.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from crbio.dispatch.config import DispatchConfig
from crbio.dispatch.delivery import Acknowledgement, Channel, Job
from crbio.dispatch.outbox import Claim, Outbox, new_worker_id
from crbio.dispatch.outbox_backends import open_outbox
from crbio.dispatch.senders.base import Sender, load_sender
from crbio.errors import ConfigurationError, CrbioError, SendError

__all__ = ["AckGroup", "Worker", "WorkerStats", "run_workers"]

log = logging.getLogger("crbio.dispatch.worker")


@dataclass
class WorkerStats:
    """What a worker did: attempts, acknowledgements, retries scheduled, dead letters."""

    attempts: int = 0
    acknowledged: int = 0
    retried: int = 0
    dead: int = 0
    recovered: int = 0


class Worker:
    """One worker thread's loop over the outbox, with its own database connection and senders."""

    def __init__(
        self,
        config: DispatchConfig,
        *,
        worker_id: str | None = None,
        senders: dict[Channel, Sender] | None = None,
        batch: int = 8,
        seed: int | None = None,
        group: AckGroup | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id or new_worker_id()
        self.outbox = open_outbox(config)
        self._senders: dict[str, Sender] = {}
        self._given = dict(senders or {})
        self.batch = batch
        self._group = group
        self.stats = WorkerStats()
        self._rng = random.Random(seed)
        self._documents: OrderedDict[str, tuple[bytes, bytes]] = OrderedDict()

    def close(self) -> None:
        """Close the senders this worker built and its database connection."""
        for sender in self._senders.values():
            sender.close()
        self.outbox.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sender(self, claim: Claim) -> Sender:
        channel = claim.delivery.channel
        if channel in self._given:
            return self._given[channel]
        if claim.sender not in self._senders:
            destination = self.config.destinations.get(channel)
            if destination is None:
                raise ConfigurationError(
                    f"destinations.{channel.value}: not configured", code="config.missing"
                )
            cls = load_sender(claim.sender)
            self._senders[claim.sender] = cls.from_config(destination.settings, self.config.context)
        return self._senders[claim.sender]

    def _documents_of(self, document_id: str) -> tuple[bytes, bytes]:
        # A document usually has several deliveries in a row: keep the last few in memory.
        if document_id not in self._documents:
            self._documents[document_id] = self.outbox.document(document_id)
            if len(self._documents) > 16:
                self._documents.popitem(last=False)
        return self._documents[document_id]

    def run_once(self) -> int:
        """Claim and process one batch of due deliveries; return how many were processed."""
        claims = self.outbox.claim(self.worker_id, limit=self.batch)
        for claim in claims:
            self._process(claim)
        return len(claims)

    def run(
        self, *, stop: threading.Event | None = None, drain: bool = False, idle: float = 0.5
    ) -> WorkerStats:
        """Process deliveries until ``stop`` is set, or with ``drain`` until nothing is pending.

        While waiting for retries that are not due yet, it sleeps until the next one (at most
        ``idle`` seconds at a time, so a stop request or new work is seen quickly).
        """
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.run_once():
                continue
            due = self.outbox.next_due()
            if due is None and drain:
                break
            # Never spin: a due delivery may be waiting for the one it must follow.
            wait = idle if due is None else min(idle, max(0.02, due - time.time()))
            stop.wait(wait)
        return self.stats

    def _process(self, claim: Claim) -> None:
        delivery = claim.delivery
        self.stats.attempts += 1
        try:
            sender = self._sender(claim)
            n3, pdf = self._documents_of(delivery.document_id)
            job = Job(delivery, claim.attempt, n3, pdf, self.outbox.previous_ack(delivery))
            if claim.in_doubt:
                found = sender.find_delivered(job)
                if found is not None:
                    self._acknowledged(claim, found, recovered=True)
                    return
            ack = sender.send(job)
        except SendError as error:
            self._failed(claim, error.retryable, f"{error.code}: {error.reason}", error.detail)
            return
        except ConfigurationError as error:
            # The lab must fix its configuration; keep the delivery and try again later.
            self._failed(claim, True, f"{error.code}: {error.message}", {})
            return
        except CrbioError as error:
            self._failed(claim, False, f"{error.code}: {error.message}", {})
            return
        except Exception as error:  # a sender bug must not stop the worker nor lose the delivery
            log.exception("delivery %s: unexpected sender failure", delivery.key[:16])
            self._failed(claim, True, f"dispatch.sender-bug: {type(error).__name__}", {})
            return
        self._acknowledged(claim, ack)

    def _acknowledged(self, claim: Claim, ack: Acknowledgement, *, recovered: bool = False) -> None:
        if self._group is not None:
            held = self._group.acknowledge(self.outbox, claim, ack, recovered)
        else:
            held = self.outbox.acknowledge(claim, ack, recovered=recovered)
        if held:
            self.stats.acknowledged += 1
            self.stats.recovered += recovered
            log.info(
                "delivery %s acknowledged (%s %s of %s)",
                claim.delivery.key[:16],
                claim.delivery.channel.value,
                claim.delivery.action.value,
                claim.delivery.document_id,
            )

    def _failed(self, claim: Claim, retryable: bool, reason: str, detail: dict[str, object]) -> None:
        retry_in = None
        policy = self.config.retry
        if retryable and claim.attempt < policy.max_attempts:
            retry_in = policy.delay(claim.attempt, self._rng)
            hinted = detail.get("retry_after")
            if isinstance(hinted, int | float):
                retry_in = max(retry_in, float(hinted))
        elif retryable:
            reason = f"gave up after {claim.attempt} attempts: {reason}"
        state = self.outbox.fail(claim, retryable=retryable, reason=reason, detail=detail, retry_in=retry_in)
        if state == "retrying":
            self.stats.retried += 1
            log.warning("delivery %s failed, retry in %.1f s: %s", claim.delivery.key[:16], retry_in, reason)
        elif state == "dead":
            self.stats.dead += 1
            log.error("delivery %s dead-lettered: %s", claim.delivery.key[:16], reason)


class AckGroup:
    """Group commit of the acknowledgements of the worker threads of one process.

    Every acknowledgement is a durable commit, whose fsync (milliseconds on most disks)
    dominates once the senders are fast, and SQLite takes them one at a time. A thread that
    has an acknowledgement to record either commits it together with every other one waiting
    at that moment, or, if a commit is already under way, waits for the next one, which takes
    its acknowledgement along. Either way it returns only once its acknowledgement is durable,
    so a worker never starts its next send with the previous one unrecorded: a crash leaves
    no more deliveries in doubt than with one commit each.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._waiting: list[tuple[Claim, Acknowledgement, bool, list[bool | BaseException]]] = []
        self._committing = False

    def acknowledge(self, outbox: Outbox, claim: Claim, ack: Acknowledgement, recovered: bool) -> bool:
        """Record ``ack`` durably, with any others waiting, through ``outbox``; as ``Outbox.acknowledge``."""
        result: list[bool | BaseException] = []
        with self._lock:
            self._waiting.append((claim, ack, recovered, result))
            while not result and self._committing:
                self._lock.wait()
            if result:
                return self._outcome(result)
            self._committing = True
            batch, self._waiting = self._waiting, []
        try:
            outcomes: list[bool | BaseException] = list(outbox.acknowledge_all([item[:3] for item in batch]))
        except BaseException as error:
            outcomes = [error] * len(batch)
        with self._lock:
            for item, outcome in zip(batch, outcomes, strict=True):
                item[3].append(outcome)
            self._committing = False
            self._lock.notify_all()
        return self._outcome(result)

    @staticmethod
    def _outcome(result: list[bool | BaseException]) -> bool:
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]


def run_workers(
    config: DispatchConfig, *, threads: int = 1, stop: threading.Event | None = None, drain: bool = False
) -> WorkerStats:
    """Run ``threads`` workers in this process until stopped (or drained); return their total stats.

    Raises:
        OutboxError: a worker could not open or write the outbox (a full disk, a read-only
            file); the other workers are stopped first. Any other error a worker thread
            stopped on is raised here too, never only printed by the thread.
    """
    stop = stop or threading.Event()
    totals = WorkerStats()
    lock = threading.Lock()
    failures: list[BaseException] = []
    group = AckGroup() if threads > 1 else None

    def work() -> None:
        # Each thread opens its own connection and senders: neither is shared across threads.
        try:
            with Worker(config, group=group) as worker:
                worker.run(stop=stop, drain=drain)
        except BaseException as error:  # e.g. the outbox on a full disk: stop all, raise it below
            failures.append(error)
            stop.set()
            return
        with lock:
            for name in ("attempts", "acknowledged", "retried", "dead", "recovered"):
                setattr(totals, name, getattr(totals, name) + getattr(worker.stats, name))

    runners = [threading.Thread(target=work, name=f"crbio-worker-{i}", daemon=True) for i in range(threads)]
    for runner in runners:
        runner.start()
    for runner in runners:
        while runner.is_alive():
            runner.join(0.2)
    if failures:
        raise failures[0]
    return totals
