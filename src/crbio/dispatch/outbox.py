"""The durable outbox and transmission journal, on SQLite in WAL mode (or on PostgreSQL).

Every state change is one transaction::

    queued ──claim──▶ sending ──ack──▶ acknowledged
       ▲                 │
       └── retrying ◀────┤ retryable failure (backoff with jitter)
                         └──▶ dead      permanent failure, or retries exhausted

A delivery's idempotency key (document, version, destination, action) is unique, so queuing
the same plan twice, or after a restart, adds nothing. Claiming is one ``UPDATE … RETURNING``
under SQLite's write lock (PostgreSQL: row locks), so two workers never hold the same
delivery; a claim is a lease: if its worker dies, the delivery becomes claimable again when the
lease expires, marked *in doubt* so the next worker first asks the destination whether it
already has it.

The journal (GBUI VII-2) is the ``deliveries`` rows (who, what, when, acknowledgement,
outcome), the ``events`` of each, and the ``suppressions``: who did not receive and why.
The ``return_reports`` are what came back afterwards from MSSanté recipients' systems:
delivery status notifications and read receipts (see :mod:`crbio.dispatch.returns`).

:class:`Outbox` holds this logic once for both databases; :class:`SqliteDialect` (here) and
:class:`~crbio.dispatch.outbox_pg.PostgresDialect` hold what differs between them (see
:mod:`crbio.dispatch.outbox_sql`).
"""

from __future__ import annotations

import heapq
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from crbio.dispatch import journal_chain as chain
from crbio.dispatch.delivery import Acknowledgement, Action, Channel, Delivery
from crbio.dispatch.outbox_file import APPLICATION_ID, check_outbox_file, create_outbox_file
from crbio.dispatch.outbox_sql import SCHEMA_VERSION, Cursor, Dialect, outbox_schema
from crbio.dispatch.outbox_sql import iso as _iso
from crbio.dispatch.plan import Plan
from crbio.errors import OutboxError

__all__ = ["SCHEMA_VERSION", "Claim", "Outbox", "Transmission", "new_worker_id"]


# Schema 1, and what schema 2 added (the return reports, appended to a version 1 outbox by the
# upgrade, created with the rest in a new one).
_SCHEMA, _RETURNS_SCHEMA = outbox_schema(
    serial="INTEGER PRIMARY KEY", integer="INTEGER", blob="BLOB", real="REAL"
)
# Schema 3: the journal's hash chain (see crbio.dispatch.journal_chain): each journaled row's
# position and hash, the delivery row an event left, and the chain's head. Added by ALTER to new
# outboxes too, so that a new and an upgraded outbox have the very same tables.
_CHAIN_SCHEMA = (*chain.chain_schema("INTEGER"), f"PRAGMA application_id = {APPLICATION_ID}")
# The schema versions an outbox is upgraded from in place: to which version, with which statements.
_MIGRATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "1": ("2", _RETURNS_SCHEMA),
    "2": ("3", _CHAIN_SCHEMA),
}
# The tables that make a database a crbio outbox (of any schema version).
_OUTBOX_TABLES = frozenset({"meta", "documents", "deliveries", "events", "suppressions"})
# Which return decides a delivery's outcome in the journal, most telling first: failures
# before successes, what the reader did before what the servers did.
_OUTCOME_ORDER = (
    ("dsn", "failed", "bounced"),
    ("mdn", "error", "rejected"),
    ("mdn", "denied", "rejected"),
    ("mdn", "failed", "rejected"),
    ("mdn", "displayed", "displayed"),
    ("mdn", "processed", "processed"),
    ("mdn", "dispatched", "dispatched"),
    ("mdn", "deleted", "deleted"),
    ("dsn", "delivered", "delivered"),
    ("dsn", "relayed", "relayed"),
    ("dsn", "expanded", "expanded"),
    ("dsn", "delayed", "delayed"),
)


def new_worker_id() -> str:
    """A worker id unique across hosts and processes, for leases and the journal."""
    return f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery leased to one worker: make it, then acknowledge it or report the failure."""

    row_id: int
    delivery: Delivery
    sender: str
    attempt: int
    in_doubt: bool  # an earlier attempt was cut off mid-send: the destination may already have it
    worker: str


@dataclass(frozen=True, slots=True)
class Transmission:
    """One journal line: a delivery, its state and acknowledgement."""

    document_id: str
    version: int
    channel: str
    action: str
    recipient_kind: str
    recipient: str
    recipient_id: str | None
    sender: str
    state: str
    attempts: int
    queued_at: str
    sent_at: str | None
    acknowledged_at: str | None
    dead_at: str | None
    ack_summary: str | None
    ack_detail: Mapping[str, Any] | None
    last_error: str | None
    key: str
    outcome: str = ""  # the state, or what the return reports say (bounced, displayed, delivered…)
    returns: str | None = None  # the return reports in one line: "delivered 2026-11-23T10:12Z; …"
    return_reports: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The transmission as JSON-serialisable data."""
        return {name: getattr(self, name) for name in self.__slots__}


class Outbox:
    """The outbox on one SQLite database; one instance per thread (SQLite connections are not shared).

    A new outbox file is created complete (see :func:`~crbio.dispatch.outbox_file.create_outbox_file`);
    an existing one is checked before it is opened (:func:`~crbio.dispatch.outbox_file.check_outbox_file`:
    empty, not SQLite, another application's, truncated, damaged log) and by SQLite's quick check.
    Every method is written once, for both databases: what differs is the :attr:`_sql` dialect
    (see :mod:`crbio.dispatch.outbox_sql`; :class:`~crbio.dispatch.outbox_pg.PostgresOutbox` is
    this class on PostgreSQL's).

    Raises:
        OutboxError: the file cannot be opened, is not a crbio outbox, is empty, truncated or
            damaged, fails SQLite's integrity check, or has a schema this version does not know.
    """

    def __init__(self, path: str | Path, *, lease_seconds: float = 120.0, clock: Any = time.time) -> None:
        self.path = Path(path)
        self._open(SqliteDialect(self.path, clock), lease_seconds)

    def _open(self, dialect: Dialect, lease_seconds: float) -> None:
        self._sql = dialect
        self.lease_seconds = lease_seconds
        self._links: list[chain.Link] = []  # journal rows of the open transaction, chained at commit

    def close(self) -> None:
        """Close the database connection."""
        self._sql.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self._sql.transaction() as cur:
            try:
                yield cur
                if self._links:
                    self._chain_links(cur)
            finally:
                self._links.clear()

    def _event(
        self, now: float, delivery_id: int, event: str, attempt: int, worker: str | None, detail: Any = None
    ) -> None:
        # Inserted when the transaction commits, already chained (see _chain_links).
        self._links.append(
            chain.event_link(delivery_id, _iso(now), event, attempt, worker, json_detail(detail))
        )

    def _chain_links(self, cur: Cursor) -> None:
        """Chain the journal rows of the transaction about to commit, one transaction at a time.

        Under the lock that serialises the chain's appends (SQLite's write lock, or PostgreSQL's
        row lock on ``journal_head``, taken last so it is held only to the commit), so the chain
        never forks. Each delivery read is one this transaction changed, or locked (``FOR
        SHARE``) for a return report: none can change before this commit.
        """
        links, self._links = self._links, []
        ids = sorted({link.delivery_id for link in links if link.delivery_id is not None})
        seq, last, rows = self._sql.lock_head(cur, ids)
        seq, last = chain.chain(links, seq, last, rows)
        for link in links:
            if link.row is not None:
                column, value = link.row
                cur.execute(
                    f"UPDATE {link.table} SET chain_seq = ?, chain_hash = ? WHERE {column} = ?",
                    (link.seq, link.hash, value),
                )
        events = [
            (*link.insert, link.seq, link.hash, link.state) for link in links if link.insert is not None
        ]
        self._sql.append(cur, events, seq, last)

    # -- queuing -------------------------------------------------------------------------

    def store_document(
        self,
        *,
        document_id: str,
        set_id: str,
        version: int,
        replaces: str | None,
        confidentiality: Sequence[str],
        n3: bytes,
        pdf: bytes,
    ) -> None:
        """Keep a document version's bytes, so any worker can send it later (idempotent)."""
        with self._transaction() as cur:
            row = {  # the journaled columns (all but the bytes)
                "document_id": document_id,
                "set_id": set_id,
                "version": version,
                "replaces": replaces,
                "confidentiality": json.dumps(list(confidentiality)),
                "stored_at": _iso(self._sql.now(cur)),
            }
            cur.execute(
                "INSERT INTO documents (document_id, set_id, version, replaces, confidentiality, n3, pdf,"
                " stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (document_id) DO NOTHING",
                (document_id, set_id, version, replaces, row["confidentiality"], n3, pdf, row["stored_at"]),
            )
            if cur.rowcount:
                self._links.append(chain.document_link(row, n3, pdf))

    def enqueue(self, plan: Plan, senders: Mapping[Channel, str]) -> tuple[list[str], list[str]]:
        """Queue a plan's deliveries and record its suppressions, in one transaction.

        ``senders`` names the sender of each channel. The plan's document must be stored.
        Returns the keys newly queued and the keys that were already in the outbox.
        """
        added, existing = [], []
        with self._transaction() as cur:
            now = self._sql.now(cur)
            for d in plan.deliveries:
                row = cur.execute(
                    """INSERT INTO deliveries (key, document_id, version, channel, action, recipient_kind,
                       recipient, recipient_id, sender, delivery, state, due, queued_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)
                       ON CONFLICT (key) DO NOTHING RETURNING id""",
                    (
                        d.key,
                        d.document_id,
                        d.version,
                        d.channel.value,
                        d.action.value,
                        d.recipient.kind.value,
                        d.recipient.address,
                        d.recipient.identifier,
                        senders[d.channel],
                        d.to_json(),
                        now,
                        _iso(now),
                    ),
                ).fetchone()
                if row is None:
                    existing.append(d.key)
                    continue
                self._order_after_previous(cur, d)
                added.append(d.key)
                self._event(now, int(row["id"]), "queued", 0, None)
            for s in plan.suppressed:
                params = (
                    plan.document_id,
                    plan.version,
                    s.channel.value,
                    s.recipient.address,
                    s.reason,
                    s.explanation,
                    _iso(now),
                )
                row = cur.execute(
                    "INSERT INTO suppressions (document_id, version, channel, recipient, reason, explanation,"
                    " at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                    params,
                ).fetchone()
                if row is not None:
                    self._links.append(chain.suppression_link(int(row["id"]), params))
        return added, existing

    @staticmethod
    def _order_after_previous(cur: Cursor, delivery: Delivery) -> None:
        # A replacement or deletion must not overtake the delivery of the version it targets
        # to the same recipient (the DMP needs the earlier entry to exist): it waits for it.
        target = previous_target(delivery)
        if target is None:
            return
        cur.execute(
            """UPDATE deliveries SET after_key = (
                   SELECT key FROM deliveries WHERE document_id = ? AND channel = ? AND recipient = ?
                   AND action != 'delete' ORDER BY id DESC LIMIT 1)
               WHERE key = ?""",
            (target, delivery.channel.value, delivery.recipient.address, delivery.key),
        )

    # -- working -------------------------------------------------------------------------

    def claim(self, worker: str, *, limit: int = 1) -> list[Claim]:
        """Lease up to ``limit`` due deliveries to ``worker`` (expired leases included, in doubt)."""
        with self._transaction() as cur:
            now = self._sql.now(cur)
            # Nobody else can claim these rows before the commit: SQLite's write lock is held,
            # or PostgreSQL's row locks (SKIP LOCKED: rows another worker is claiming right now
            # are skipped, not waited for; the lock re-checks the WHERE on the newest row
            # version, so a row acknowledged meanwhile is not taken).
            due = cur.execute(
                f"""SELECT d.id, d.state FROM deliveries d
                    WHERE d.state IN {_PENDING} AND d.due <= ?
                    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.key = d.after_key
                                    AND p.state IN {_PENDING})
                    ORDER BY d.due, d.id LIMIT ?{self._sql.claim_lock}""",
                (now, limit),
            ).fetchall()
            if not due:
                return []
            # A row still "sending" is an earlier attempt that never reported back: in doubt.
            in_doubt = {row["id"] for row in due if row["state"] == "sending"}
            where, ids = self._sql.match("id", [row["id"] for row in due])
            rows = cur.execute(
                f"""UPDATE deliveries
                    SET state = 'sending', lease_owner = ?, attempts = attempts + 1, due = ?,
                        sent_at = COALESCE(sent_at, ?)
                    WHERE {where}
                    RETURNING id, delivery, sender, attempts""",
                (worker, now + self.lease_seconds, _iso(now), *ids),
            ).fetchall()
            order = {row["id"]: n for n, row in enumerate(due)}  # RETURNING's order is unspecified
            claims = []
            for row in sorted(rows, key=lambda r: order[r["id"]]):
                doubt = row["id"] in in_doubt
                self._event(
                    now, row["id"], "sending", row["attempts"], worker, {"in_doubt": True} if doubt else None
                )
                claims.append(
                    Claim(
                        row["id"],
                        Delivery.from_json(row["delivery"]),
                        row["sender"],
                        row["attempts"],
                        doubt,
                        worker,
                    )
                )
        return claims

    def acknowledge(self, claim: Claim, ack: Acknowledgement, *, recovered: bool = False) -> bool:
        """Record a delivery as acknowledged; False if the lease was lost to another worker meanwhile."""
        return self.acknowledge_all([(claim, ack, recovered)])[0]

    def acknowledge_all(self, acks: Sequence[tuple[Claim, Acknowledgement, bool]]) -> list[bool]:
        """Record several acknowledgements (claim, ack, recovered) in one transaction: one durable commit.

        Each is what :meth:`acknowledge` records; the result says, for each, whether the lease
        was still held. Workers of one process group their acknowledgements this way (see
        :func:`crbio.dispatch.worker.run_workers`), so a commit's fsync is paid once for all.
        """
        results = []
        with self._transaction() as cur:
            now = self._sql.now(cur)
            for claim, ack, recovered in acks:
                updated = cur.execute(
                    """UPDATE deliveries SET state = 'acknowledged', acknowledged_at = ?, ack_summary = ?,
                       ack_detail = ?, lease_owner = NULL, last_error = NULL
                       WHERE id = ? AND state = 'sending' AND lease_owner = ?""",
                    (_iso(now), ack.summary, json_detail(dict(ack.detail)), claim.row_id, claim.worker),
                ).rowcount
                if updated:
                    event = "recovered" if recovered else "acknowledged"
                    detail = {"summary": ack.summary, **dict(ack.detail)}
                    self._event(now, claim.row_id, event, claim.attempt, claim.worker, detail)
                results.append(bool(updated))
        return results

    def fail(
        self,
        claim: Claim,
        *,
        retryable: bool,
        reason: str,
        detail: Mapping[str, Any] | None = None,
        retry_in: float | None = None,
    ) -> str:
        """Record a failed attempt: ``retrying`` after ``retry_in`` seconds, else ``dead``.

        Returns the new state ("" if the lease was lost meanwhile).
        """
        state = "retrying" if retryable and retry_in is not None else "dead"
        with self._transaction() as cur:
            now = self._sql.now(cur)
            updated = cur.execute(
                """UPDATE deliveries SET state = ?, due = ?, last_error = ?, lease_owner = NULL,
                   dead_at = CASE WHEN ? = 'dead' THEN ? ELSE NULL END
                   WHERE id = ? AND state = 'sending' AND lease_owner = ?""",
                (state, now + (retry_in or 0), reason, state, _iso(now), claim.row_id, claim.worker),
            ).rowcount
            if not updated:
                return ""
            event = "retry-scheduled" if state == "retrying" else "dead"
            detail = {
                "reason": reason,
                **({"retry_in": round(retry_in, 3)} if state == "retrying" and retry_in else {}),
                **dict(detail or {}),
            }
            self._event(now, claim.row_id, event, claim.attempt, claim.worker, detail)
        return state

    def release(self, claim: Claim) -> None:
        """Give a claimed delivery back untouched (a worker stopping before it sent anything)."""
        with self._transaction() as cur:
            now = self._sql.now(cur)
            updated = cur.execute(
                "UPDATE deliveries SET state = 'retrying', due = ?, attempts = attempts - 1,"
                " lease_owner = NULL WHERE id = ? AND state = 'sending' AND lease_owner = ?",
                (now, claim.row_id, claim.worker),
            ).rowcount
            if updated:
                self._event(now, claim.row_id, "released", claim.attempt, claim.worker)

    # -- reading -------------------------------------------------------------------------

    def _document_row(self, document_id: str, columns: str) -> Any:
        rows = self._sql.read(f"SELECT {columns} FROM documents WHERE document_id = ?", (document_id,))
        return rows[0] if rows else None

    def document(self, document_id: str) -> tuple[bytes, bytes]:
        """The stored N3 and PDF of a document version."""
        row = self._document_row(document_id, "n3, pdf")
        if row is None:
            raise OutboxError(f"document {document_id} is not in the outbox")
        return bytes(row["n3"]), bytes(row["pdf"])

    def document_confidentiality(self, document_id: str) -> list[str] | None:
        """The confidentiality list a stored version was planned with, or None if unknown."""
        row = self._document_row(document_id, "confidentiality")
        return None if row is None else list(json.loads(row["confidentiality"]))

    def document_version(self, document_id: str) -> int | None:
        """The version number of a stored document, or None if it is not in the outbox."""
        row = self._document_row(document_id, "version")
        return None if row is None else int(row["version"])

    def acknowledged(
        self, document_id: str, channel: Channel | None = None
    ) -> list[tuple[Delivery, dict[str, Any]]]:
        """The acknowledged deliveries of a document version, with their acknowledgement detail."""
        query = "SELECT delivery, ack_detail FROM deliveries WHERE document_id = ? AND state = 'acknowledged'"
        params: tuple[Any, ...] = (document_id,)
        if channel is not None:
            query += " AND channel = ?"
            params += (channel.value,)
        rows = self._sql.read(query + " ORDER BY id", params)
        return [(Delivery.from_json(r["delivery"]), json.loads(r["ack_detail"] or "{}")) for r in rows]

    def known_recipients(self, document_id: str) -> set[tuple[str, str]]:
        """(channel, recipient) pairs that any delivery of a document version was queued to."""
        rows = self._sql.read(
            "SELECT channel, recipient FROM deliveries WHERE document_id = ?", (document_id,)
        )
        return {(r["channel"], r["recipient"]) for r in rows}

    def previous_ack(self, delivery: Delivery) -> dict[str, Any] | None:
        """For a replacement or deletion: the acknowledgement of the target version's send, if any."""
        target = previous_target(delivery)
        if target is None:
            return None
        rows = self._sql.read(
            """SELECT ack_detail FROM deliveries WHERE document_id = ? AND channel = ? AND recipient = ?
               AND state = 'acknowledged' AND action != 'delete' ORDER BY id DESC LIMIT 1""",
            (target, delivery.channel.value, delivery.recipient.address),
        )
        return dict(json.loads(rows[0]["ack_detail"] or "{}")) if rows else None

    def counts(self) -> dict[str, int]:
        """Number of deliveries per state."""
        rows = self._sql.read("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    def next_due(self) -> float | None:
        """When the next pending delivery becomes due (epoch seconds), or None if none is pending."""
        due = self._sql.read(f"SELECT MIN(due) AS due FROM deliveries WHERE state IN {_PENDING}")[0]["due"]
        return None if due is None else float(due)

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """The state of each delivery key given."""
        found: dict[str, str] = {}
        for where, params in self._sql.batches("key", keys):
            for r in self._sql.read(f"SELECT key, state FROM deliveries WHERE {where}", params):
                found[r["key"]] = r["state"]
        return found

    def transmissions(
        self, *, document_id: str | None = None, since: datetime | None = None, state: str | None = None
    ) -> list[Transmission]:
        """The journal: one line per delivery, oldest first, optionally filtered."""
        query, params = "SELECT * FROM deliveries WHERE true", []
        if document_id:
            query += " AND document_id = ?"
            params.append(document_id)
        if since:
            query += " AND queued_at >= ?"
            params.append(since.astimezone(UTC).isoformat(timespec="milliseconds"))
        if state:
            query += " AND state = ?"
            params.append(state)
        return self._with_returns(
            Transmission(
                **{name: r[name] for name in _LINE_COLUMNS},
                ack_detail=json.loads(r["ack_detail"]) if r["ack_detail"] else None,
            )
            for r in self._sql.read(query + " ORDER BY id", params)
        )

    def events(self, key: str) -> list[dict[str, Any]]:
        """The event trail of one delivery, oldest first."""
        rows = self._sql.read(
            """SELECT e.at, e.event, e.attempt, e.worker, e.detail FROM events e
               JOIN deliveries d ON d.id = e.delivery_id WHERE d.key = ? ORDER BY e.id""",
            (key,),
        )
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    def suppressions(self, document_id: str | None = None) -> list[dict[str, Any]]:
        """Who did not receive a document and why."""
        query, params = f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions", []
        if document_id:
            query += " WHERE document_id = ?"
            params.append(document_id)
        return [dict(r) for r in self._sql.read(query + " ORDER BY id", params)]

    # -- the journal's hash chain --------------------------------------------------------------

    def verify_journal(self) -> chain.JournalVerification:
        """Walk the journal's hash chain and check every delivery against its last journaled event.

        Returns a :class:`~crbio.dispatch.journal_chain.JournalVerification`: ``ok``, the rows
        walked, the head, and otherwise the first broken row (table, id, delivery key or document
        OID, what is wrong — never patient data); ``raise_if_broken()`` turns a break into
        :class:`~crbio.dispatch.journal_chain.JournalBroken` (code ``dispatch.journal-broken``).
        Reads one consistent snapshot (a read transaction; on PostgreSQL repeatable-read with
        server-side cursors) while workers go on writing; the stored documents' bytes are hashed
        again, one at a time, so this reads the whole outbox.
        """
        with self._sql.snapshot() as cur:
            head = cur.execute("SELECT * FROM journal_head WHERE id = 1").fetchone()
            documents = [
                str(r["document_id"])
                for r in cur.execute(
                    "SELECT document_id FROM documents WHERE chain_seq IS NOT NULL ORDER BY chain_seq"
                ).fetchall()
            ]
            unchained = None
            for table, query in _UNCHAINED:
                found = cur.execute(query).fetchone()
                if found is not None:
                    unchained = chain.ChainedRow(table, str(found["id"]), None, None, found["key"], None)
                    break
            rows = heapq.merge(
                (_chained_document(cur, document_id) for document_id in documents),
                *(
                    _chained(self._sql.stream(f"crbio_verify_{table}", query), table)
                    for table, query in _CHAINED
                ),
                key=_position,
            )
            deliveries = self._sql.stream("crbio_verify_deliveries", "SELECT * FROM deliveries ORDER BY id")
            walked, broken = chain.verify_chain(head, rows, deliveries, unchained)
        return chain.JournalVerification(
            rows=walked if broken else int(head["seq"]),
            head=str(head["hash"]),
            started_at=head["started_at"],
            migrated_rows=int(head["migrated_rows"]),
            broken=broken,
            location=self._sql.location,
        )

    # -- return reports (DSN, MDN) -----------------------------------------------------------

    def mssante_delivery(self, message_id: str) -> tuple[str, Delivery] | None:
        """The MSSanté delivery whose messages carry this 32-hex id (``Job.message_id``), if any."""
        prefix = message_id.lower()
        if len(prefix) != 32 or any(c not in "0123456789abcdef" for c in prefix):
            return None
        where, params = self._sql.prefix("key", prefix)
        rows = self._sql.read(
            f"SELECT key, delivery FROM deliveries WHERE {where} AND channel = ? ORDER BY id LIMIT 1",
            (*params, Channel.MSSANTE.value),
        )
        return (str(rows[0]["key"]), Delivery.from_json(rows[0]["delivery"])) if rows else None

    def record_return(
        self,
        key: str,
        *,
        report_id: str,
        kind: str,
        recipient: str,
        action: str,
        status: str | None = None,
        diagnostic: str | None = None,
        reported_at: str | None = None,
    ) -> bool:
        """Record one recipient line of a return report (DSN or MDN) and add it to the event trail.

        Idempotent: the same (delivery, report id, recipient) is recorded once; False when it
        was already there. A bounce (DSN ``failed``) or a refusal (MDN ``…/error``) is journaled
        as a ``bounced`` / ``rejected`` event; the delivery's state is left as it is (see
        :attr:`Transmission.outcome`): nothing is resent automatically.
        ``diagnostic`` must already be redacted.

        Raises:
            OutboxError: no delivery has this key.
        """
        with self._transaction() as cur:
            now = self._sql.now(cur)
            # share_lock: the delivery cannot change before this commits (see _chain_links).
            row = cur.execute(
                f"SELECT id, attempts FROM deliveries WHERE key = ?{self._sql.share_lock}", (key,)
            ).fetchone()
            if row is None:
                raise OutboxError(f"delivery {key[:16]} is not in the outbox")
            values = (report_id, kind, recipient, action, status, diagnostic, reported_at, _iso(now))
            inserted = cur.execute(
                """INSERT INTO return_reports (delivery_id, report_id, kind, recipient, action, status,
                   diagnostic, reported_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (delivery_id, report_id, recipient) DO NOTHING RETURNING id""",
                (row["id"], *values),
            ).fetchone()
            if inserted is not None:
                self._links.append(chain.return_link(int(inserted["id"]), row["id"], values))
                event, detail = _return_event(kind, action, status, diagnostic, reported_at)
                self._event(now, row["id"], event, row["attempts"], None, detail)
        return inserted is not None

    def returns(self, key: str) -> list[dict[str, Any]]:
        """The return reports recorded for one delivery, in the order they happened."""
        return [dict(r) for r in self._sql.read(_REPORTS.format(key="", where="d.key = ?"), (key,))]

    def _with_returns(self, lines: Iterable[Transmission]) -> list[Transmission]:
        """Journal lines with their return reports and the outcome those make."""
        lines = list(lines)
        found: dict[str, list[dict[str, Any]]] = {}
        for where, params in self._sql.batches("d.key", [line.key for line in lines]):
            for r in self._sql.read(_REPORTS.format(key="d.key, ", where=where), params):
                report = dict(r)
                found.setdefault(report.pop("key"), []).append(report)
        result = []
        for line in lines:
            reports = found.get(line.key, [])
            returns = "; ".join(_return_summary(r) for r in reports) or None
            outcome = _outcome(line.state, reports)
            result.append(replace(line, outcome=outcome, returns=returns, return_reports=tuple(reports)))
        return result


_PENDING = "('queued', 'retrying', 'sending')"
# The fields of a journal line read as they are from its deliveries row.
_LINE_COLUMNS = [
    f.name
    for f in fields(Transmission)
    if f.name not in {"ack_detail", "outcome", "returns", "return_reports"}
]
# The return reports of some deliveries, in the order they happened.
_REPORTS = """SELECT {key}r.kind, r.recipient, r.action, r.status, r.diagnostic, r.reported_at, r.recorded_at
    FROM return_reports r JOIN deliveries d ON d.id = r.delivery_id WHERE {where}
    ORDER BY COALESCE(r.reported_at, r.recorded_at), r.id"""


# What suppressions() returns (the chain's own columns are not part of a suppression).
_SUPPRESSION_COLUMNS = ", ".join(("id", *chain.SUPPRESSION_COLUMNS))
# The first journal row of each table outside the chain (a row added by hand), for verify_journal.
_UNCHAINED = (
    (
        "documents",
        "SELECT document_id AS id, document_id AS key FROM documents WHERE chain_seq IS NULL LIMIT 1",
    ),
    (
        "events",
        "SELECT e.id, d.key FROM events e LEFT JOIN deliveries d ON d.id = e.delivery_id"
        " WHERE e.chain_seq IS NULL LIMIT 1",
    ),
    ("suppressions", "SELECT id, document_id AS key FROM suppressions WHERE chain_seq IS NULL LIMIT 1"),
    (
        "return_reports",
        "SELECT r.id, d.key FROM return_reports r LEFT JOIN deliveries d ON d.id = r.delivery_id"
        " WHERE r.chain_seq IS NULL LIMIT 1",
    ),
)


def _position(row: chain.ChainedRow) -> int:
    return -1 if row.seq is None else row.seq


# The chained rows of the other tables, in chain order (id order is chain order: rows are inserted
# or stamped in position order under the write lock; a row out of order is reported as such).
_CHAINED = (
    (
        "events",
        "SELECT e.*, d.key AS delivery_key FROM events e LEFT JOIN deliveries d ON d.id = e.delivery_id"
        " WHERE e.chain_seq IS NOT NULL ORDER BY e.id",
    ),
    ("suppressions", "SELECT * FROM suppressions WHERE chain_seq IS NOT NULL ORDER BY id"),
    (
        "return_reports",
        "SELECT r.*, d.key AS delivery_key FROM return_reports r LEFT JOIN deliveries d"
        " ON d.id = r.delivery_id WHERE r.chain_seq IS NOT NULL ORDER BY r.id",
    ),
)


def _chained(rows: Iterable[Mapping[str, Any]], table: str) -> Iterator[chain.ChainedRow]:
    """Chained rows of one table (either backend) as the verifier reads them."""
    for row in rows:
        yield chain.chained_row(table, row)


def _chained_document(cur: Cursor, document_id: str) -> chain.ChainedRow:
    # The bytes are read one document at a time: an outbox holds gigabytes of them.
    row = cur.execute("SELECT * FROM documents WHERE document_id = ?", (document_id,)).fetchone()
    return chain.chained_row("documents", row)


def previous_target(delivery: Delivery) -> str | None:
    """The document a replacement or deletion acts on (its earlier delivery comes first), else None."""
    if delivery.action is Action.SUBMIT:
        return None
    return delivery.replaces if delivery.action is Action.REPLACE else delivery.document_id


def _return_event(
    kind: str, action: str, status: str | None, diagnostic: str | None, reported_at: str | None
) -> tuple[str, dict[str, Any]]:
    """The journal event (name and detail) of one recorded return report line."""
    base = action.partition("/")[0]
    if kind == "dsn" and action == "failed":
        event = "bounced"
    elif kind == "mdn" and (action.endswith("/error") or base in {"denied", "failed"}):
        event = "rejected"
    else:
        event = "delivery-status" if kind == "dsn" else "disposition"
    detail: dict[str, Any] = {"kind": kind, "action": action, "status": status, "reported_at": reported_at}
    if diagnostic:
        detail["diagnostic"] = diagnostic
    return event, detail


def json_detail(detail: Any) -> str | None:
    """An event or acknowledgement detail as stored: sorted JSON, or NULL."""
    return None if detail is None else json.dumps(detail, ensure_ascii=False, sort_keys=True)


def _outcome(state: str, reports: Sequence[Mapping[str, Any]]) -> str:
    """What happened to a delivery in one word: its state, unless the recipients' side said more."""
    seen = set()
    for report in reports:
        base, _, modifier = str(report["action"]).partition("/")
        seen.add((report["kind"], base))
        if modifier:
            seen.add((report["kind"], modifier))
    for kind, action, outcome in _OUTCOME_ORDER:
        if (kind, action) in seen:
            return outcome
    return state


def _return_summary(report: Mapping[str, Any]) -> str:
    """One return report for the journal: ``failed 5.1.1 2026-11-23T10:12Z``."""
    words = [str(report["action"])]
    status = report.get("status")
    if status and not str(status).startswith("2."):
        words.append(str(status))
    when = report.get("reported_at")
    if when:
        # Minutes are enough for a person reading the journal; the JSON keeps the seconds.
        words.append(str(when)[:16] + "Z" if len(str(when)) >= 16 else str(when))
    return " ".join(words)


class SqliteDialect(Dialect):
    """The outbox's SQLite file: WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` transactions.

    Raises:
        OutboxError: see :class:`Outbox`.
    """

    claim_lock = share_lock = ""  # the write lock, taken at BEGIN IMMEDIATE, already excludes the others
    batch_size = 500  # values in one IN list, well under SQLite's limit on variables

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path, self.location, self._clock = path, str(path), clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                create_outbox_file(path, self._create_schema)
            check_outbox_file(path)
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            try:
                self.db.row_factory = sqlite3.Row
                self._recognise()  # before the first write: switching to WAL changes the file
                self.db.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed state change survives a power loss, not only a crash.
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.execute("PRAGMA foreign_keys=ON")
                self._check_and_create()
            except BaseException:
                self.db.close()
                raise
        except sqlite3.OperationalError as exc:  # a full disk, a read-only file: not the file's fault
            raise OutboxError(f"{path}: cannot open the outbox for writing ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{path}: not a usable outbox database ({exc})") from None
        except OSError as exc:
            raise OutboxError(f"{path}: cannot open the outbox ({exc.strerror})") from None

    def _recognise(self) -> None:
        """Refuse a database that is not a crbio outbox, before anything is written to it."""
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # An empty database here was not created by crbio (create_outbox_file never leaves one):
        # refuse it rather than build an outbox inside someone else's file.
        if not tables:
            raise OutboxError(
                f"{self.path}: an empty SQLite database, not a crbio outbox (delete it to start a new outbox)"
            )
        if not tables >= _OUTBOX_TABLES:
            raise OutboxError(f"{self.path}: this SQLite database is not a crbio outbox")

    def _check_and_create(self) -> None:
        check = self.db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise OutboxError(f"{self.path}: the outbox database is corrupted ({check.splitlines()[0]})")
        version = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is not None and version[0] in _MIGRATIONS:
            with self.transaction() as cur:  # under the write lock: another process may have upgraded it
                version = (self.upgrade(cur, _MIGRATIONS),)
        if version is None or version[0] != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: unknown outbox schema version")

    def _create_schema(self, db: sqlite3.Connection) -> None:
        """Build a new, empty outbox of the current schema on a fresh database."""
        db.execute("BEGIN IMMEDIATE")
        self.create(db.cursor(), (*_SCHEMA, *_RETURNS_SCHEMA, *_CHAIN_SCHEMA))
        db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A write transaction, holding the write lock from the start.

        IMMEDIATE takes the lock up front, so two workers cannot both read a row as claimable
        and then both update it.
        """
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db.cursor()
            except BaseException:
                if self.db.in_transaction:  # SQLite may have rolled back itself (a full disk)
                    self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            # A full disk, a read-only file, a lock held too long: the transaction left nothing.
            raise OutboxError(f"{self.path}: cannot write the outbox ({exc})") from None

    @contextmanager
    def snapshot(self) -> Iterator[Cursor]:
        """A read transaction (deferred: it takes no lock), one snapshot while workers write."""
        self.db.execute("BEGIN")
        try:
            yield self.db.cursor()
        finally:
            self.db.execute("COMMIT")

    def stream(self, name: str, query: str) -> Iterator[Mapping[str, Any]]:
        """The rows of a query on a cursor of its own, stepped as they are read."""
        return iter(self.db.execute(query))

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one statement, outside any transaction (WAL readers take no lock)."""
        return self.db.execute(sql, params).fetchall()

    def now(self, cur: Cursor) -> float:
        """The clock's time (the machine's, or the one a test injected)."""
        return float(self._clock())

    def match(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """``column IN (?, ?, …)``."""
        return f"{column} IN ({','.join('?' * len(values))})", tuple(values)

    def prefix(self, column: str, prefix: str) -> tuple[str, tuple[Any, ...]]:
        """A range on the column's index: lower-case hex keys with this prefix sort below ``prefix + "g"``."""
        return f"{column} >= ? AND {column} < ?", (prefix, prefix + "g")

    def close(self) -> None:
        """Close the connection."""
        self.db.close()
