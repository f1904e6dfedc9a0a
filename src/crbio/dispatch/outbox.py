"""The durable outbox and transmission journal, on SQLite in WAL mode.

Every state change is one transaction::

    queued ──claim──▶ sending ──ack──▶ acknowledged
       ▲                 │
       └── retrying ◀────┤ retryable failure (backoff with jitter)
                         └──▶ dead      permanent failure, or retries exhausted

A delivery's idempotency key (document, version, destination, action) is unique, so queuing
the same plan twice, or after a restart, adds nothing. Claiming is one ``UPDATE … RETURNING``
under SQLite's write lock, so two workers never hold the same delivery; a claim is a lease:
if its worker dies, the delivery becomes claimable again when the lease expires, marked
*in doubt* so the next worker first asks the destination whether it already has it.

The journal (GBUI VII-2) is the ``deliveries`` rows (who, what, when, acknowledgement,
outcome), the ``events`` of each, and the ``suppressions``: who did not receive and why.
The ``return_reports`` are what came back afterwards from MSSanté recipients' systems:
delivery status notifications and read receipts (see :mod:`crbio.dispatch.returns`).
"""

from __future__ import annotations

import heapq
import json
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crbio.dispatch import journal_chain as chain
from crbio.dispatch.delivery import Acknowledgement, Action, Channel, Delivery
from crbio.dispatch.outbox_file import APPLICATION_ID, check_outbox_file, create_outbox_file
from crbio.dispatch.plan import Plan, Suppressed
from crbio.errors import OutboxError

__all__ = ["Claim", "Outbox", "Transmission", "new_worker_id"]

SCHEMA_VERSION = "3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    document_id TEXT PRIMARY KEY,
    set_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    replaces TEXT,
    confidentiality TEXT NOT NULL,
    n3 BLOB NOT NULL,
    pdf BLOB NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL REFERENCES documents (document_id),
    version INTEGER NOT NULL,
    channel TEXT NOT NULL,
    action TEXT NOT NULL,
    recipient_kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    recipient_id TEXT,
    sender TEXT NOT NULL,
    delivery TEXT NOT NULL,
    after_key TEXT,
    state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'retrying', 'acknowledged', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    lease_owner TEXT,
    queued_at TEXT NOT NULL,
    sent_at TEXT,
    acknowledged_at TEXT,
    dead_at TEXT,
    last_error TEXT,
    ack_summary TEXT,
    ack_detail TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (due)
    WHERE state IN ('queued', 'retrying', 'sending');
CREATE INDEX IF NOT EXISTS deliveries_document ON deliveries (document_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_delivery ON events (delivery_id);
CREATE TABLE IF NOT EXISTS suppressions (
    id INTEGER PRIMARY KEY,
    document_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT,
    reason TEXT NOT NULL,
    explanation TEXT NOT NULL,
    at TEXT NOT NULL,
    UNIQUE (document_id, channel, recipient, reason)
);
"""

# Schema 2: what recipients' systems reported after the delivery (DSN, MDN). Appended to a
# version 1 outbox by _migrate, created with the rest in a new one.
_RETURNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS return_reports (
    id INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    report_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('dsn', 'mdn')),
    recipient TEXT NOT NULL,
    action TEXT NOT NULL,
    status TEXT,
    diagnostic TEXT,
    reported_at TEXT,
    recorded_at TEXT NOT NULL,
    UNIQUE (delivery_id, report_id, recipient)
);
"""
# Schema 3: the journal's hash chain (see crbio.dispatch.journal_chain): each journaled row's
# position and hash, the delivery row an event left, and the chain's head. Added by ALTER to new
# outboxes too, so that a new and an upgraded outbox have the very same tables.
_CHAIN_SCHEMA = (*chain.chain_schema("INTEGER"), f"PRAGMA application_id = {APPLICATION_ID}")
# The schema versions an outbox is upgraded from in place: to which version, with which statements.
_MIGRATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "1": ("2", (_RETURNS_SCHEMA,)),
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


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


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

    Raises:
        OutboxError: the file cannot be opened, is not a crbio outbox, is empty, truncated or
            damaged, fails SQLite's integrity check, or has a schema this version does not know.
    """

    def __init__(self, path: str | Path, *, lease_seconds: float = 120.0, clock: Any = time.time) -> None:
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._links: list[chain.Link] = []  # journal rows of the open transaction, chained at commit
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                create_outbox_file(self.path, self._create_schema)
            check_outbox_file(self.path)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            try:
                self._db.row_factory = sqlite3.Row
                self._recognise()  # before the first write: switching to WAL changes the file
                self._db.execute("PRAGMA journal_mode=WAL")
                # FULL: a committed state change survives a power loss, not only a crash.
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._check_and_create()
            except BaseException:
                self._db.close()
                raise
        except sqlite3.OperationalError as exc:  # a full disk, a read-only file: not the file's fault
            raise OutboxError(f"{self.path}: cannot open the outbox for writing ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: not a usable outbox database ({exc})") from None
        except OSError as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox ({exc.strerror})") from None

    def _recognise(self) -> None:
        """Refuse a database that is not a crbio outbox, before anything is written to it."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        # An empty database here was not created by crbio (create_outbox_file never leaves one):
        # refuse it rather than build an outbox inside someone else's file.
        if not tables:
            raise OutboxError(
                f"{self.path}: an empty SQLite database, not a crbio outbox (delete it to start a new outbox)"
            )
        if not tables >= _OUTBOX_TABLES:
            raise OutboxError(f"{self.path}: this SQLite database is not a crbio outbox")

    def _check_and_create(self) -> None:
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise OutboxError(f"{self.path}: the outbox database is corrupted ({check.splitlines()[0]})")
        version = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is not None and version[0] in _MIGRATIONS:
            self._migrate()
            return
        if version is None or version[0] != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: unknown outbox schema version")

    def _create_schema(self, db: sqlite3.Connection) -> None:
        """Build a new, empty outbox of the current schema on a fresh database."""
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + _RETURNS_SCHEMA)  # the transaction stays open
        for statement in _CHAIN_SCHEMA:
            db.execute(statement)
        db.execute("INSERT INTO journal_head VALUES (1, 0, ?, ?, 0)", (chain.GENESIS, _iso(self._clock())))
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two workers cannot both read a row as
        # claimable and then both update it.
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                if self._links:
                    self._chain_links()
            except BaseException:
                self._links.clear()
                if self._db.in_transaction:  # SQLite may have rolled back itself (a full disk)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            # A full disk, a read-only file, a lock held too long: the transaction left nothing.
            raise OutboxError(f"{self.path}: cannot write the outbox ({exc})") from None

    def _event(
        self, delivery_id: int, event: str, attempt: int, worker: str | None, detail: Any = None
    ) -> None:
        # Inserted when the transaction commits, already chained (see _chain_links).
        self._links.append(
            chain.event_link(delivery_id, _iso(self._clock()), event, attempt, worker, json_detail(detail))
        )

    def _chain_links(self) -> None:
        """Chain the journal rows of the transaction about to commit (under its write lock)."""
        links, self._links = self._links, []
        ids = sorted({link.delivery_id for link in links if link.delivery_id is not None})
        rows: dict[int, Any] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._db.execute(
                f"SELECT {_JOURNAL_COLUMNS} FROM deliveries WHERE id IN ({marks})", chunk
            ):
                rows[r["id"]] = r
        head = self._db.execute("SELECT seq, hash FROM journal_head").fetchone()
        seq, last = chain.chain(links, head["seq"], head["hash"], rows)
        self._db.executemany(
            "INSERT INTO events (delivery_id, at, event, attempt, worker, detail, chain_seq, chain_hash,"
            " delivery_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*link.insert, link.seq, link.hash, link.state) for link in links if link.insert is not None],
        )
        for link in links:
            if link.row is not None:
                column, value = link.row
                self._db.execute(
                    f"UPDATE {link.table} SET chain_seq = ?, chain_hash = ? WHERE {column} = ?",
                    (link.seq, link.hash, value),
                )
        self._db.execute("UPDATE journal_head SET seq = ?, hash = ?", (seq, last))

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
        row = document_row(document_id, set_id, version, replaces, confidentiality, _iso(self._clock()))
        with self._transaction() as db:
            added = db.execute(
                "INSERT OR IGNORE INTO documents (document_id, set_id, version, replaces, confidentiality,"
                " n3, pdf, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (document_id, set_id, version, replaces, row["confidentiality"], n3, pdf, row["stored_at"]),
            ).rowcount
            if added:
                self._links.append(chain.document_link(row, n3, pdf))

    def enqueue(self, plan: Plan, senders: Mapping[Channel, str]) -> tuple[list[str], list[str]]:
        """Queue a plan's deliveries and record its suppressions, in one transaction.

        ``senders`` names the sender of each channel. The plan's document must be stored.
        Returns the keys newly queued and the keys that were already in the outbox.
        """
        now = self._clock()
        added, existing = [], []
        with self._transaction() as db:
            for d in plan.deliveries:
                cursor = db.execute(
                    """INSERT OR IGNORE INTO deliveries (key, document_id, version, channel, action,
                       recipient_kind, recipient, recipient_id, sender, delivery, state, due, queued_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)""",
                    delivery_params(d, senders[d.channel], now),
                )
                if cursor.rowcount:
                    self._order_after_previous(d)
                    added.append(d.key)
                    self._event(int(cursor.lastrowid or 0), "queued", 0, None)
                else:
                    existing.append(d.key)
            for s in plan.suppressed:
                params = suppression_params(plan, s, now)
                cursor = db.execute(
                    "INSERT OR IGNORE INTO suppressions (document_id, version, channel, recipient, reason,"
                    " explanation, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    params,
                )
                if cursor.rowcount:
                    self._links.append(chain.suppression_link(int(cursor.lastrowid or 0), params))
        return added, existing

    def _order_after_previous(self, delivery: Delivery) -> None:
        # A replacement or deletion must not overtake the delivery of the version it targets
        # to the same recipient (the DMP needs the earlier entry to exist): it waits for it.
        target = previous_target(delivery)
        if target is None:
            return
        self._db.execute(
            """UPDATE deliveries SET after_key = (
                   SELECT key FROM deliveries WHERE document_id = ? AND channel = ? AND recipient = ?
                   AND action != 'delete' ORDER BY id DESC LIMIT 1)
               WHERE key = ?""",
            (target, delivery.channel.value, delivery.recipient.address, delivery.key),
        )

    # -- working -------------------------------------------------------------------------

    def claim(self, worker: str, *, limit: int = 1) -> list[Claim]:
        """Lease up to ``limit`` due deliveries to ``worker`` (expired leases included, in doubt)."""
        now = self._clock()
        with self._transaction() as db:
            # Under the write lock: nobody else can claim these rows between the two statements.
            due = db.execute(
                """SELECT d.id, d.state FROM deliveries d
                   WHERE d.state IN ('queued', 'retrying', 'sending') AND d.due <= ?
                   AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.key = d.after_key
                                   AND p.state IN ('queued', 'retrying', 'sending'))
                   ORDER BY d.due, d.id LIMIT ?""",
                (now, limit),
            ).fetchall()
            if not due:
                return []
            # A row still "sending" is an earlier attempt that never reported back: in doubt.
            in_doubt = {row["id"] for row in due if row["state"] == "sending"}
            marks = ",".join("?" * len(due))
            rows = db.execute(
                f"""UPDATE deliveries
                    SET state = 'sending', lease_owner = ?, attempts = attempts + 1, due = ?,
                        sent_at = COALESCE(sent_at, ?)
                    WHERE id IN ({marks})
                    RETURNING id, delivery, sender, attempts""",
                (worker, now + self.lease_seconds, _iso(now), *(row["id"] for row in due)),
            ).fetchall()
            order = {row["id"]: n for n, row in enumerate(due)}  # RETURNING's order is unspecified
            claims = []
            for row in sorted(rows, key=lambda r: order[r["id"]]):
                doubt = row["id"] in in_doubt
                self._event(
                    row["id"], "sending", row["attempts"], worker, {"in_doubt": True} if doubt else None
                )
                claim = Claim(
                    row["id"],
                    Delivery.from_json(row["delivery"]),
                    row["sender"],
                    row["attempts"],
                    doubt,
                    worker,
                )
                claims.append(claim)
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
        now = self._clock()
        results = []
        with self._transaction() as db:
            for claim, ack, recovered in acks:
                updated = db.execute(
                    """UPDATE deliveries SET state = 'acknowledged', acknowledged_at = ?, ack_summary = ?,
                       ack_detail = ?, lease_owner = NULL, last_error = NULL
                       WHERE id = ? AND state = 'sending' AND lease_owner = ?""",
                    (_iso(now), ack.summary, json_detail(dict(ack.detail)), claim.row_id, claim.worker),
                ).rowcount
                if updated:
                    self._event(
                        claim.row_id,
                        "recovered" if recovered else "acknowledged",
                        claim.attempt,
                        claim.worker,
                        {"summary": ack.summary, **dict(ack.detail)},
                    )
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
        now = self._clock()
        state = "retrying" if retryable and retry_in is not None else "dead"
        with self._transaction() as db:
            updated = db.execute(
                """UPDATE deliveries SET state = ?, due = ?, last_error = ?, lease_owner = NULL,
                   dead_at = CASE WHEN ? = 'dead' THEN ? ELSE NULL END
                   WHERE id = ? AND state = 'sending' AND lease_owner = ?""",
                (state, now + (retry_in or 0), reason, state, _iso(now), claim.row_id, claim.worker),
            ).rowcount
            if not updated:
                return ""
            self._event(
                claim.row_id,
                "retry-scheduled" if state == "retrying" else "dead",
                claim.attempt,
                claim.worker,
                failure_detail(state, reason, retry_in, detail),
            )
        return state

    def release(self, claim: Claim) -> None:
        """Give a claimed delivery back untouched (a worker stopping before it sent anything)."""
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE deliveries SET state = 'retrying', due = ?, attempts = attempts - 1,"
                " lease_owner = NULL"
                " WHERE id = ? AND state = 'sending' AND lease_owner = ?",
                (self._clock(), claim.row_id, claim.worker),
            ).rowcount
            if updated:
                self._event(claim.row_id, "released", claim.attempt, claim.worker)

    # -- reading -------------------------------------------------------------------------

    def document(self, document_id: str) -> tuple[bytes, bytes]:
        """The stored N3 and PDF of a document version."""
        row = self._db.execute(
            "SELECT n3, pdf FROM documents WHERE document_id = ?", (document_id,)
        ).fetchone()
        if row is None:
            raise OutboxError(f"document {document_id} is not in the outbox")
        return bytes(row["n3"]), bytes(row["pdf"])

    def document_confidentiality(self, document_id: str) -> list[str] | None:
        """The confidentiality list a stored version was planned with, or None if unknown."""
        row = self._db.execute(
            "SELECT confidentiality FROM documents WHERE document_id = ?", (document_id,)
        ).fetchone()
        return None if row is None else list(json.loads(row["confidentiality"]))

    def document_version(self, document_id: str) -> int | None:
        """The version number of a stored document, or None if it is not in the outbox."""
        row = self._db.execute(
            "SELECT version FROM documents WHERE document_id = ?", (document_id,)
        ).fetchone()
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
        rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return [(Delivery.from_json(r["delivery"]), json.loads(r["ack_detail"] or "{}")) for r in rows]

    def known_recipients(self, document_id: str) -> set[tuple[str, str]]:
        """(channel, recipient) pairs that any delivery of a document version was queued to."""
        rows = self._db.execute(
            "SELECT channel, recipient FROM deliveries WHERE document_id = ?", (document_id,)
        ).fetchall()
        return {(r["channel"], r["recipient"]) for r in rows}

    def previous_ack(self, delivery: Delivery) -> dict[str, Any] | None:
        """For a replacement or deletion: the acknowledgement of the target version's send, if any."""
        target = previous_target(delivery)
        if target is None:
            return None
        row = self._db.execute(
            """SELECT ack_detail FROM deliveries WHERE document_id = ? AND channel = ? AND recipient = ?
               AND state = 'acknowledged' AND action != 'delete' ORDER BY id DESC LIMIT 1""",
            (target, delivery.channel.value, delivery.recipient.address),
        ).fetchone()
        return None if row is None else dict(json.loads(row["ack_detail"] or "{}"))

    def counts(self) -> dict[str, int]:
        """Number of deliveries per state."""
        rows = self._db.execute("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}

    def next_due(self) -> float | None:
        """When the next pending delivery becomes due (epoch seconds), or None if none is pending."""
        row = self._db.execute(
            "SELECT MIN(due) FROM deliveries WHERE state IN ('queued', 'retrying', 'sending')"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """The state of each delivery key given."""
        wanted = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._db.execute(f"SELECT key, state FROM deliveries WHERE key IN ({marks})", chunk):
                found[r["key"]] = r["state"]
        return found

    def transmissions(
        self, *, document_id: str | None = None, since: datetime | None = None, state: str | None = None
    ) -> list[Transmission]:
        """The journal: one line per delivery, oldest first, optionally filtered."""
        query, params = "SELECT * FROM deliveries WHERE 1=1", []
        if document_id:
            query += " AND document_id = ?"
            params.append(document_id)
        if since:
            query += " AND queued_at >= ?"
            params.append(since.astimezone(UTC).isoformat(timespec="milliseconds"))
        if state:
            query += " AND state = ?"
            params.append(state)
        rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        return self._with_returns(transmission_from_row(r) for r in rows)

    def events(self, key: str) -> list[dict[str, Any]]:
        """The event trail of one delivery, oldest first."""
        rows = self._db.execute(
            """SELECT e.at, e.event, e.attempt, e.worker, e.detail FROM events e
               JOIN deliveries d ON d.id = e.delivery_id WHERE d.key = ? ORDER BY e.id""",
            (key,),
        ).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    def suppressions(self, document_id: str | None = None) -> list[dict[str, Any]]:
        """Who did not receive a document and why."""
        query, params = f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions", []
        if document_id:
            query += " WHERE document_id = ?"
            params.append(document_id)
        return [dict(r) for r in self._db.execute(query + " ORDER BY id", params)]

    # -- return reports (DSN, MDN) -----------------------------------------------------------

    def _migrate(self) -> None:
        """Upgrade an outbox of an earlier schema version in place, keeping every row."""
        with self._transaction() as db:
            # Under the write lock: another process may have upgraded it meanwhile.
            version = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
            while version in _MIGRATIONS:
                version, statements = _MIGRATIONS[version]
                for statement in statements:
                    db.execute(statement)
                if version == "3":
                    self._chain_existing()
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
        if version != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: unknown outbox schema version")

    def _chain_existing(self) -> None:
        """Start the journal's chain over the rows an outbox of schema 1 or 2 already holds.

        Documents first (by storage time), then events, suppressions and return reports, each in
        id order; the head records how many rows were chained this way, and when.
        """
        db = self._db
        documents = [
            chain.document_link(r, bytes(r["n3"]), bytes(r["pdf"]))
            for r in db.execute("SELECT * FROM documents ORDER BY stored_at, document_id")
        ]
        seq, last = chain.chain(documents, 0, chain.GENESIS, {})
        db.executemany(
            "UPDATE documents SET chain_seq = ?, chain_hash = ? WHERE document_id = ?",
            [(link.seq, link.hash, link.row[1]) for link in documents if link.row],
        )
        for table in ("events", "suppressions", "return_reports"):
            after = 0
            while rows := db.execute(
                f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT 2000", (after,)
            ).fetchall():
                after = rows[-1]["id"]
                links = [chain.existing_link(table, r) for r in rows]
                ids = sorted({link.delivery_id for link in links if link.delivery_id is not None})
                deliveries = {
                    r["id"]: r
                    for r in db.execute(
                        f"SELECT * FROM deliveries WHERE id IN ({','.join('?' * len(ids))})", ids
                    )
                }
                seq, last = chain.chain(links, seq, last, deliveries)
                db.executemany(
                    f"UPDATE {table} SET chain_seq = ?, chain_hash = ?"
                    + (", delivery_state = ? WHERE id = ?" if table == "events" else " WHERE id = ?"),
                    [
                        (link.seq, link.hash, *((link.state,) if table == "events" else ()), row["id"])
                        for link, row in zip(links, rows, strict=True)
                    ],
                )
        db.execute("INSERT INTO journal_head VALUES (1, ?, ?, ?, ?)", (seq, last, _iso(self._clock()), seq))

    # -- the journal's hash chain --------------------------------------------------------------

    def verify_journal(self) -> chain.JournalVerification:
        """Walk the journal's hash chain and check every delivery against its last journaled event.

        Returns a :class:`~crbio.dispatch.journal_chain.JournalVerification`: ``ok``, the rows
        walked, the head, and otherwise the first broken row (table, id, delivery key or document
        OID, what is wrong — never patient data); ``raise_if_broken()`` turns a break into
        :class:`~crbio.dispatch.journal_chain.JournalBroken` (code ``dispatch.journal-broken``).
        Reads one consistent snapshot (a read transaction); the stored documents' bytes are
        hashed again, so this reads the whole outbox.
        """
        db = self._db
        db.execute("BEGIN")  # one snapshot for the whole walk, while workers go on writing
        try:
            head = db.execute("SELECT * FROM journal_head").fetchone()
            documents = db.execute(
                "SELECT document_id, chain_seq FROM documents WHERE chain_seq IS NOT NULL ORDER BY chain_seq"
            ).fetchall()
            rows = heapq.merge(
                (_chained_document(db, r["document_id"]) for r in documents),
                *(_chained(db.execute(query), table) for table, query in _CHAINED),
                key=_position,
            )
            unchained = None
            for table, query in _UNCHAINED:
                found = db.execute(query).fetchone()
                if found is not None:
                    unchained = chain.ChainedRow(table, str(found["id"]), None, None, found["key"], None)
                    break
            walked, broken = chain.verify_chain(
                head, rows, db.execute("SELECT * FROM deliveries ORDER BY id"), unchained
            )
        finally:
            db.execute("COMMIT")
        return chain.JournalVerification(
            rows=walked if broken else int(head["seq"]),
            head=str(head["hash"]),
            started_at=head["started_at"],
            migrated_rows=int(head["migrated_rows"]),
            broken=broken,
            location=str(self.path),
        )

    def mssante_delivery(self, message_id: str) -> tuple[str, Delivery] | None:
        """The MSSanté delivery whose messages carry this 32-hex id (``Job.message_id``), if any."""
        prefix = message_id.lower()
        if len(prefix) != 32 or any(c not in "0123456789abcdef" for c in prefix):
            return None
        # Keys are lower-case hex: every key starting with the prefix sorts in [prefix, prefix + "g").
        row = self._db.execute(
            "SELECT key, delivery FROM deliveries WHERE key >= ? AND key < ? AND channel = ?"
            " ORDER BY id LIMIT 1",
            (prefix, prefix + "g", Channel.MSSANTE.value),
        ).fetchone()
        return None if row is None else (str(row["key"]), Delivery.from_json(row["delivery"]))

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
        now = self._clock()
        with self._transaction() as db:
            row = db.execute("SELECT id, attempts FROM deliveries WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise OutboxError(f"delivery {key[:16]} is not in the outbox")
            values = (report_id, kind, recipient, action, status, diagnostic, reported_at, _iso(now))
            cursor = db.execute(
                """INSERT OR IGNORE INTO return_reports (delivery_id, report_id, kind, recipient, action,
                   status, diagnostic, reported_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (row["id"], *values),
            )
            added = cursor.rowcount
            if added:
                self._links.append(chain.return_link(int(cursor.lastrowid or 0), row["id"], values))
                event, detail = return_event(kind, action, status, diagnostic, reported_at)
                self._event(row["id"], event, row["attempts"], None, detail)
        return bool(added)

    def returns(self, key: str) -> list[dict[str, Any]]:
        """The return reports recorded for one delivery, in the order they happened."""
        rows = self._db.execute(
            """SELECT r.kind, r.recipient, r.action, r.status, r.diagnostic, r.reported_at, r.recorded_at
               FROM return_reports r JOIN deliveries d ON d.id = r.delivery_id WHERE d.key = ?
               ORDER BY COALESCE(r.reported_at, r.recorded_at), r.id""",
            (key,),
        ).fetchall()
        return [dict(r) for r in rows]

    def _with_returns(self, lines: Iterable[Transmission]) -> list[Transmission]:
        """Journal lines with their return reports and the outcome those make."""
        lines = list(lines)
        found: dict[str, list[dict[str, Any]]] = {}
        keys = [line.key for line in lines]
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._db.execute(
                f"""SELECT d.key, r.kind, r.recipient, r.action, r.status, r.diagnostic, r.reported_at,
                          r.recorded_at
                    FROM return_reports r JOIN deliveries d ON d.id = r.delivery_id
                    WHERE d.key IN ({marks})
                    ORDER BY COALESCE(r.reported_at, r.recorded_at), r.id""",
                chunk,
            ):
                report = dict(r)
                found.setdefault(report.pop("key"), []).append(report)
        return with_reports(lines, found)


# What the chain reads of a delivery: its id and its journal columns.
_JOURNAL_COLUMNS = ", ".join(("id", *chain.DELIVERY_JOURNAL_COLUMNS))
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


def _chained_document(db: sqlite3.Connection, document_id: str) -> chain.ChainedRow:
    # The bytes are read one document at a time: an outbox holds gigabytes of them.
    row = db.execute("SELECT * FROM documents WHERE document_id = ?", (document_id,)).fetchone()
    return chain.chained_row("documents", row)


def document_row(
    document_id: str,
    set_id: str,
    version: int,
    replaces: str | None,
    confidentiality: Sequence[str],
    stored_at: str,
) -> dict[str, Any]:
    """The journaled columns of a new ``documents`` row (all but its bytes)."""
    return {
        "document_id": document_id,
        "set_id": set_id,
        "version": version,
        "replaces": replaces,
        "confidentiality": json.dumps(list(confidentiality)),
        "stored_at": stored_at,
    }


def previous_target(delivery: Delivery) -> str | None:
    """The document a replacement or deletion acts on (its earlier delivery comes first), else None."""
    if delivery.action is Action.SUBMIT:
        return None
    return delivery.replaces if delivery.action is Action.REPLACE else delivery.document_id


def delivery_params(d: Delivery, sender: str, now: float) -> tuple[Any, ...]:
    """The values of a new ``deliveries`` row, in the order both backends' INSERT lists them."""
    recipient = d.recipient
    return (
        d.key,
        d.document_id,
        d.version,
        d.channel.value,
        d.action.value,
        recipient.kind.value,
        recipient.address,
        recipient.identifier,
        sender,
        d.to_json(),
        now,
        _iso(now),
    )


def suppression_params(plan: Plan, s: Suppressed, now: float) -> tuple[Any, ...]:
    """The values of a ``suppressions`` row: who did not receive a plan's document, and why."""
    when = _iso(now)
    return (
        plan.document_id,
        plan.version,
        s.channel.value,
        s.recipient.address,
        s.reason,
        s.explanation,
        when,
    )


def transmission_from_row(r: Mapping[str, Any]) -> Transmission:
    """A journal line from a ``deliveries`` row (either backend), before its return reports."""
    detail = r["ack_detail"]
    return Transmission(
        document_id=r["document_id"],
        version=r["version"],
        channel=r["channel"],
        action=r["action"],
        recipient_kind=r["recipient_kind"],
        recipient=r["recipient"],
        recipient_id=r["recipient_id"],
        sender=r["sender"],
        state=r["state"],
        attempts=r["attempts"],
        queued_at=r["queued_at"],
        sent_at=r["sent_at"],
        acknowledged_at=r["acknowledged_at"],
        dead_at=r["dead_at"],
        ack_summary=r["ack_summary"],
        ack_detail=json.loads(detail) if detail else None,
        last_error=r["last_error"],
        key=r["key"],
    )


def with_reports(
    lines: Iterable[Transmission], found: Mapping[str, list[dict[str, Any]]]
) -> list[Transmission]:
    """Journal lines completed with their return reports (by delivery key) and the outcome those make."""
    result = []
    for line in lines:
        reports = found.get(line.key, [])
        result.append(
            replace(
                line,
                outcome=_outcome(line.state, reports),
                returns="; ".join(_return_summary(r) for r in reports) or None,
                return_reports=tuple(reports),
            )
        )
    return result


def failure_detail(
    state: str, reason: str, retry_in: float | None, detail: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The detail of a ``retry-scheduled`` or ``dead`` event."""
    return {
        "reason": reason,
        **({"retry_in": round(retry_in, 3)} if state == "retrying" and retry_in else {}),
        **dict(detail or {}),
    }


def return_event(
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
