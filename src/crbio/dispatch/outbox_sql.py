"""What differs between the outbox's two databases, and the schema routines both share.

:class:`~crbio.dispatch.outbox.Outbox` holds the outbox's logic once, written in one SQL: ``?``
placeholders, ``INSERT … ON CONFLICT … DO NOTHING RETURNING``, ``UPDATE … RETURNING``, which
SQLite (3.35 on) and PostgreSQL both run as written. A :class:`Dialect` is the rest, kept small
and explicit: opening a connection and creating or upgrading the schema, the transaction
(SQLite's ``BEGIN IMMEDIATE`` write lock, PostgreSQL's row locks), the clock (the injected one,
or the database server's), the lock a claim takes on the rows it picks (``FOR UPDATE SKIP
LOCKED``), lists of values (``IN (?, …)`` in batches, or ``= ANY(?)``), the key prefix match,
how the journal's head is locked and appended to, the snapshot ``verify_journal`` reads, and
the translation of driver errors into :class:`~crbio.errors.OutboxError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from crbio.dispatch import journal_chain as chain

__all__ = ["JOURNAL_COLUMNS", "SCHEMA_VERSION", "Cursor", "Dialect", "iso", "outbox_schema"]

SCHEMA_VERSION = "3"

# What the chain reads of a delivery: its id and its journal columns.
JOURNAL_COLUMNS = ", ".join(("id", *chain.DELIVERY_JOURNAL_COLUMNS))


def outbox_schema(
    *, serial: str, integer: str, blob: str, real: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The statements creating schema 1 and those schema 2 adds (the return reports), in a database's types.

    ``serial`` is an id column's type (a generated primary key), ``integer`` a reference to it,
    ``blob`` bytes and ``real`` a double. Schema 3 (the chain) is added to both by
    :func:`~crbio.dispatch.journal_chain.chain_schema`.
    """
    types = {"serial": serial, "integer": integer, "blob": blob, "real": real}

    def statements(script: str) -> tuple[str, ...]:
        return tuple(statement.format(**types) for statement in script.split(";") if statement.strip())

    return statements(_SCHEMA_1), statements(_SCHEMA_2)


_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (
    document_id TEXT PRIMARY KEY,
    set_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    replaces TEXT,
    confidentiality TEXT NOT NULL,
    n3 {blob} NOT NULL,
    pdf {blob} NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE deliveries (
    id {serial},
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
    due {real} NOT NULL,
    lease_owner TEXT,
    queued_at TEXT NOT NULL,
    sent_at TEXT,
    acknowledged_at TEXT,
    dead_at TEXT,
    last_error TEXT,
    ack_summary TEXT,
    ack_detail TEXT
);
CREATE INDEX deliveries_due ON deliveries (due)
    WHERE state IN ('queued', 'retrying', 'sending');
CREATE INDEX deliveries_document ON deliveries (document_id);
CREATE TABLE events (
    id {serial},
    delivery_id {integer} NOT NULL REFERENCES deliveries (id),
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT,
    detail TEXT
);
CREATE INDEX events_delivery ON events (delivery_id);
CREATE TABLE suppressions (
    id {serial},
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
_SCHEMA_2 = """
CREATE TABLE return_reports (
    id {serial},
    delivery_id {integer} NOT NULL REFERENCES deliveries (id),
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


def iso(epoch: float) -> str:
    """An epoch time as the outbox stores it: ISO 8601, UTC, milliseconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class Cursor(Protocol):
    """The part of a DB-API cursor the outbox uses; statements take ``?`` placeholders."""

    @property
    def rowcount(self) -> int: ...  # noqa: D102

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...  # noqa: D102

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...  # noqa: D102

    def fetchone(self) -> Any: ...  # noqa: D102

    def fetchall(self) -> list[Any]: ...  # noqa: D102


class Dialect(ABC):
    """One database behind the outbox: its connection, locks, clock and SQL differences."""

    location: str  # where the outbox is, for messages: a path, or postgresql://host:port/db
    claim_lock: str  # appended to a claim's SELECT: the lock it takes on the rows it picks
    share_lock: str  # appended to a SELECT of a delivery that must not change before the commit
    batch_size: int | None  # most values in one list of values (None: no limit)

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Cursor]:
        """A write transaction (committed on success); driver errors become ``OutboxError``."""

    @abstractmethod
    def snapshot(self) -> AbstractContextManager[Cursor]:
        """A read transaction: one consistent snapshot while others go on writing."""

    @abstractmethod
    def stream(self, name: str, query: str) -> Iterator[Mapping[str, Any]]:
        """The rows of a query inside :meth:`snapshot`, read as they are needed."""

    @abstractmethod
    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read-only statement."""

    @abstractmethod
    def now(self, cur: Cursor) -> float:
        """The time (epoch seconds) for what the open transaction writes."""

    @abstractmethod
    def match(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """A condition (and its parameters) that ``column`` is one of ``values`` (one or more)."""

    @abstractmethod
    def prefix(self, column: str, prefix: str) -> tuple[str, tuple[Any, ...]]:
        """A condition (and its parameters) that a TEXT ``column`` starts with ``prefix`` (hex)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    def batches(self, column: str, values: Iterable[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """:meth:`match` over ``values`` in as many statements as the database needs (none if empty)."""
        values = list(values)
        step = self.batch_size or len(values)
        for start in range(0, len(values), step or 1):
            yield self.match(column, values[start : start + step])

    def lock_head(self, cur: Cursor, ids: Sequence[int]) -> tuple[int, str, dict[int, Any]]:
        """Lock the journal's head for the commit: its position and hash, and these deliveries' rows."""
        rows = self.deliveries(cur, ids)
        head = cur.execute("SELECT seq, hash FROM journal_head").fetchone()
        return int(head["seq"]), str(head["hash"]), rows

    def deliveries(self, cur: Cursor, ids: Sequence[int]) -> dict[int, Any]:
        """The journal columns of these deliveries, by id."""
        rows = {}
        for where, params in self.batches("id", ids):
            for r in cur.execute(
                f"SELECT {JOURNAL_COLUMNS} FROM deliveries WHERE {where}", params
            ).fetchall():
                rows[r["id"]] = r
        return rows

    def append(self, cur: Cursor, events: list[tuple[Any, ...]], seq: int, last: str) -> None:
        """Insert the transaction's chained events and move the journal's head."""
        cur.executemany(
            "INSERT INTO events (delivery_id, at, event, attempt, worker, detail, chain_seq, chain_hash,"
            " delivery_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        cur.execute("UPDATE journal_head SET seq = ?, hash = ?", (seq, last))

    # -- schema --------------------------------------------------------------------------------

    def create(self, cur: Cursor, statements: Iterable[str]) -> None:
        """Build a new, empty outbox of the current schema (in the caller's transaction)."""
        for statement in statements:
            cur.execute(statement)
        cur.execute("INSERT INTO journal_head VALUES (1, 0, ?, ?, 0)", (chain.GENESIS, iso(self.now(cur))))
        cur.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))

    def upgrade(self, cur: Cursor, migrations: Mapping[str, tuple[str, Sequence[str]]]) -> str:
        """Upgrade an outbox of an earlier schema in place, keeping every row; returns the version reached.

        ``migrations`` maps a version to the next one and its statements; reaching version 3
        starts the journal's chain over the rows already there. Run under the lock that
        serialises schema changes (the version is read again under it).
        """
        version = str(cur.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()["value"])
        while version in migrations:
            version, statements = migrations[version]
            for statement in statements:
                cur.execute(statement)
            if version == "3":
                self._chain_existing(cur)
            cur.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (version,))
        return version

    def _chain_existing(self, cur: Cursor) -> None:
        """Start the journal's chain over the rows an outbox of schema 1 or 2 already holds.

        Documents first (by storage time, their bytes read one at a time), then events,
        suppressions and return reports, each in id order; the head records how many rows were
        chained this way, and when.
        """
        documents = []
        query = "SELECT document_id FROM documents ORDER BY stored_at, document_id"
        for document_id in [r["document_id"] for r in cur.execute(query).fetchall()]:
            row = cur.execute("SELECT * FROM documents WHERE document_id = ?", (document_id,)).fetchone()
            documents.append(chain.document_link(row, bytes(row["n3"]), bytes(row["pdf"])))
        seq, last = chain.chain(documents, 0, chain.GENESIS, {})
        cur.executemany(
            "UPDATE documents SET chain_seq = ?, chain_hash = ? WHERE document_id = ?",
            [(link.seq, link.hash, link.row[1]) for link in documents if link.row],
        )
        for table in ("events", "suppressions", "return_reports"):
            after = 0
            while rows := cur.execute(
                f"SELECT * FROM {table} WHERE id > ? ORDER BY id LIMIT 2000", (after,)
            ).fetchall():
                after = rows[-1]["id"]
                links = [chain.existing_link(table, r) for r in rows]
                ids = sorted({link.delivery_id for link in links if link.delivery_id is not None})
                seq, last = chain.chain(links, seq, last, self.deliveries(cur, ids))
                cur.executemany(
                    f"UPDATE {table} SET chain_seq = ?, chain_hash = ?"
                    + (", delivery_state = ? WHERE id = ?" if table == "events" else " WHERE id = ?"),
                    [
                        (link.seq, link.hash, *((link.state,) if table == "events" else ()), row["id"])
                        for link, row in zip(links, rows, strict=True)
                    ],
                )
        cur.execute("INSERT INTO journal_head VALUES (1, ?, ?, ?, ?)", (seq, last, iso(self.now(cur)), seq))
