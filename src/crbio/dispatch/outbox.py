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

from crbio.dispatch.delivery import Acknowledgement, Action, Channel, Delivery
from crbio.dispatch.plan import Plan, Suppressed
from crbio.errors import OutboxError

__all__ = ["Claim", "Outbox", "Transmission", "new_worker_id"]

SCHEMA_VERSION = "2"

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
# The schema versions an outbox is upgraded from in place: to which version, with which statements.
_MIGRATIONS: dict[str, tuple[str, tuple[str, ...]]] = {"1": ("2", (_RETURNS_SCHEMA,))}
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

    Raises:
        OutboxError: the file cannot be opened, is not a crbio outbox, fails SQLite's integrity
            check, or has a schema this version does not know.
    """

    def __init__(self, path: str | Path, *, lease_seconds: float = 120.0, clock: Any = time.time) -> None:
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed state change survives a power loss, not only a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._check_and_create()
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"{self.path}: not a usable outbox database ({exc})") from None
        except OSError as exc:
            raise OutboxError(f"{self.path}: cannot open the outbox ({exc.strerror})") from None

    def _check_and_create(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise OutboxError(f"{self.path}: this SQLite database is not a crbio outbox")
        if tables:
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise OutboxError(f"{self.path}: the outbox database is corrupted ({check})")
            version = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is not None and version[0] in _MIGRATIONS:
                self._migrate()
                return
            if version is None or version[0] != SCHEMA_VERSION:
                raise OutboxError(f"{self.path}: unknown outbox schema version")
            return
        # One write transaction, so a second process starting at the same time waits for a
        # complete schema instead of seeing half of it.
        self._db.executescript(
            f"BEGIN IMMEDIATE; {_SCHEMA} {_RETURNS_SCHEMA}"
            f" INSERT OR IGNORE INTO meta VALUES ('schema', '{SCHEMA_VERSION}'); COMMIT;"
        )

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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _event(
        self, delivery_id: int, event: str, attempt: int, worker: str | None, detail: Any = None
    ) -> None:
        self._db.execute(
            "INSERT INTO events (delivery_id, at, event, attempt, worker, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (
                delivery_id,
                _iso(self._clock()),
                event,
                attempt,
                worker,
                json_detail(detail),
            ),
        )

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
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (document_id, set_id, version, replaces, json.dumps(list(confidentiality)), n3, pdf)
                + (_iso(self._clock()),),
            )

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
                db.execute(
                    "INSERT OR IGNORE INTO suppressions (document_id, version, channel, recipient, reason,"
                    " explanation, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    suppression_params(plan, s, now),
                )
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
        now = self._clock()
        with self._transaction() as db:
            updated = db.execute(
                """UPDATE deliveries SET state = 'acknowledged', acknowledged_at = ?, ack_summary = ?,
                   ack_detail = ?, lease_owner = NULL, last_error = NULL
                   WHERE id = ? AND state = 'sending' AND lease_owner = ?""",
                (
                    _iso(now),
                    ack.summary,
                    json_detail(dict(ack.detail)),
                    claim.row_id,
                    claim.worker,
                ),
            ).rowcount
            if updated:
                self._event(
                    claim.row_id,
                    "recovered" if recovered else "acknowledged",
                    claim.attempt,
                    claim.worker,
                    {"summary": ack.summary, **dict(ack.detail)},
                )
        return bool(updated)

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
        query, params = "SELECT * FROM suppressions", []
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
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
        if version != SCHEMA_VERSION:
            raise OutboxError(f"{self.path}: unknown outbox schema version")

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
            added = db.execute(
                """INSERT OR IGNORE INTO return_reports (delivery_id, report_id, kind, recipient, action,
                   status, diagnostic, reported_at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (row["id"], report_id, kind, recipient, action, status, diagnostic, reported_at, _iso(now)),
            ).rowcount
            if added:
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
