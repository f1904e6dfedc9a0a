"""The outbox and transmission journal on PostgreSQL, for workers on several machines.

Same states, idempotency keys, leases, ordering and journal as the SQLite
:class:`~crbio.dispatch.outbox.Outbox` (see that module), with PostgreSQL's row locks instead
of SQLite's single write lock: a claim is one transaction that picks due rows with
``SELECT … FOR UPDATE SKIP LOCKED`` (so concurrent workers skip each other's rows instead of
waiting) and marks them ``sending`` under a lease. A worker that dies leaves its rows
``sending``; when the lease expires they are claimable again, in doubt.

Times (due dates, leases, journal stamps) come from the database server's clock, so workers on
machines whose clocks disagree still agree on when a lease expires; tests may inject a clock
instead, which is then used for every time this outbox writes.

The driver is psycopg 3 (``pip install "crbio[postgresql]"``).
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from crbio.dispatch import journal_chain as chain
from crbio.dispatch.delivery import Acknowledgement, Channel, Delivery
from crbio.dispatch.outbox import (
    _SUPPRESSION_COLUMNS,
    SCHEMA_VERSION,
    Claim,
    Outbox,
    Transmission,
    _chained,
    _iso,
    _position,
    delivery_params,
    document_row,
    failure_detail,
    json_detail,
    previous_target,
    return_event,
    suppression_params,
    transmission_from_row,
    with_reports,
)
from crbio.dispatch.plan import Plan
from crbio.errors import ConfigurationError, OutboxError

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresOutbox", "dsn_location"]

log = logging.getLogger("crbio.dispatch.outbox_pg")

# pg_advisory_xact_lock key serialising schema creation between processes starting together
# (CREATE TABLE IF NOT EXISTS alone races on the catalog's unique indexes).
_SCHEMA_LOCK = 0x63726269_6F_6F7574 & 0x7FFF_FFFF_FFFF_FFFF

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE documents (
        document_id TEXT PRIMARY KEY,
        set_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        replaces TEXT,
        confidentiality TEXT NOT NULL,
        n3 BYTEA NOT NULL,
        pdf BYTEA NOT NULL,
        stored_at TEXT NOT NULL
    )""",
    """CREATE TABLE deliveries (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
        due DOUBLE PRECISION NOT NULL,
        lease_owner TEXT,
        queued_at TEXT NOT NULL,
        sent_at TEXT,
        acknowledged_at TEXT,
        dead_at TEXT,
        last_error TEXT,
        ack_summary TEXT,
        ack_detail TEXT
    )""",
    "CREATE INDEX deliveries_due ON deliveries (due) WHERE state IN ('queued', 'retrying', 'sending')",
    "CREATE INDEX deliveries_document ON deliveries (document_id)",
    "CREATE INDEX deliveries_after ON deliveries (after_key) WHERE after_key IS NOT NULL",
    """CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id BIGINT NOT NULL REFERENCES deliveries (id),
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        worker TEXT,
        detail TEXT
    )""",
    "CREATE INDEX events_delivery ON events (delivery_id)",
    """CREATE TABLE suppressions (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        document_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        channel TEXT NOT NULL,
        recipient TEXT,
        reason TEXT NOT NULL,
        explanation TEXT NOT NULL,
        at TEXT NOT NULL,
        UNIQUE (document_id, channel, recipient, reason)
    )""",
    """CREATE TABLE return_reports (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id BIGINT NOT NULL REFERENCES deliveries (id),
        report_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('dsn', 'mdn')),
        recipient TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT,
        diagnostic TEXT,
        reported_at TEXT,
        recorded_at TEXT NOT NULL,
        UNIQUE (delivery_id, report_id, recipient)
    )""",
)
# Schema 3: the journal's hash chain, as on SQLite (see crbio.dispatch.journal_chain).
_CHAIN_SCHEMA = chain.chain_schema("BIGINT")
_PENDING = "('queued', 'retrying', 'sending')"
# What the chain reads of a delivery: its id and its journal columns.
_JOURNAL_COLUMNS = ", ".join(("id", *chain.DELIVERY_JOURNAL_COLUMNS))


def dsn_location(dsn: str) -> str:
    """Where a DSN points, for messages and logs: ``postgresql://host:port/dbname``, never a password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
    except ImportError:
        return "postgresql outbox"
    except Exception:  # a malformed DSN: say so without echoing it (it may hold a password)
        return "postgresql outbox (unreadable DSN)"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    return f"postgresql://{host}:{port}/{parts.get('dbname') or ''}"


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigurationError(
            'outbox.backend: "postgresql" needs psycopg 3: pip install "crbio[postgresql]"'
            ' (or "psycopg[binary]>=3.1")',
            code="config.dependency",
        ) from None
    return psycopg


class PostgresOutbox(Outbox):
    """The outbox on a PostgreSQL database; one instance per thread (one connection each).

    It is an :class:`Outbox` for callers (same public methods and semantics); every method is
    implemented here on PostgreSQL, none falls back to SQLite.

    Raises:
        ConfigurationError: psycopg is not installed.
        OutboxError: the server cannot be reached, the database holds an outbox of an unknown
            schema version, or crbio tables without the outbox's ``meta`` table.
    """

    def __init__(  # noqa: D107 (the class docstring says it)
        self, dsn: str, *, lease_seconds: float = 120.0, clock: Callable[[], float] | None = None
    ) -> None:
        driver = _driver()
        from psycopg.rows import dict_row

        self.location = dsn_location(dsn)
        self.lease_seconds = lease_seconds
        self._injected = clock
        self._psycopg = driver
        self._links: list[chain.Link] = []  # journal rows of the open transaction, chained at commit
        try:
            self._conn: psycopg.Connection[dict[str, Any]] = driver.connect(
                dsn, autocommit=True, row_factory=dict_row, application_name="crbio-outbox"
            )
        except driver.Error as exc:
            raise OutboxError(f"{self.location}: cannot connect to the outbox ({_first_line(exc)})") from None
        try:
            self._check_and_create()
        except BaseException:
            self._conn.close()
            raise

    def _check_and_create(self) -> None:
        with self._transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cur.execute("SELECT to_regclass('meta') AS meta, to_regclass('deliveries') AS deliveries")
            found = cur.fetchone() or {}
            if found.get("meta") is None:
                if found.get("deliveries") is not None:
                    raise OutboxError(f"{self.location}: this database is not a crbio outbox")
                for statement in (*_SCHEMA, *_CHAIN_SCHEMA):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO journal_head VALUES (1, 0, %s, %s, 0)", (chain.GENESIS, _iso(self._now(cur)))
                )
                cur.execute("INSERT INTO meta VALUES ('schema', %s)", (SCHEMA_VERSION,))
                log.info("created the outbox schema in %s", self.location)
                return
            cur.execute("SELECT value FROM meta WHERE key = 'schema'")
            version = cur.fetchone()
            if version is not None and version["value"] == "2":
                # Schema 2 (before the journal's chain): upgraded in place, under the schema lock.
                for statement in _CHAIN_SCHEMA:
                    cur.execute(statement)
                self._chain_existing_pg(cur)
                cur.execute("UPDATE meta SET value = %s WHERE key = 'schema'", (SCHEMA_VERSION,))
                log.info("upgraded the outbox schema in %s to version %s", self.location, SCHEMA_VERSION)
                return
            if version is None or version["value"] != SCHEMA_VERSION:
                raise OutboxError(f"{self.location}: unknown outbox schema version")

    def _chain_existing_pg(self, cur: psycopg.Cursor[dict[str, Any]]) -> None:
        """Start the journal's chain over the rows a schema 2 outbox holds, as the SQLite outbox does."""
        cur.execute("SELECT document_id FROM documents ORDER BY stored_at, document_id")
        documents = []
        for document_id in [r["document_id"] for r in cur.fetchall()]:
            cur.execute("SELECT * FROM documents WHERE document_id = %s", (document_id,))
            row = cur.fetchone()
            assert row is not None
            documents.append(chain.document_link(row, bytes(row["n3"]), bytes(row["pdf"])))
        seq, last = chain.chain(documents, 0, chain.GENESIS, {})
        cur.executemany(
            "UPDATE documents SET chain_seq = %s, chain_hash = %s WHERE document_id = %s",
            [(link.seq, link.hash, link.row[1]) for link in documents if link.row],
        )
        for table in ("events", "suppressions", "return_reports"):
            after = 0
            while True:
                cur.execute(f"SELECT * FROM {table} WHERE id > %s ORDER BY id LIMIT 2000", (after,))
                rows = cur.fetchall()
                if not rows:
                    break
                after = rows[-1]["id"]
                links = [chain.existing_link(table, r) for r in rows]
                ids = sorted({link.delivery_id for link in links if link.delivery_id is not None})
                cur.execute(f"SELECT {_JOURNAL_COLUMNS} FROM deliveries WHERE id = ANY(%s)", (ids,))
                seq, last = chain.chain(links, seq, last, {r["id"]: r for r in cur.fetchall()})
                cur.executemany(
                    f"UPDATE {table} SET chain_seq = %s, chain_hash = %s"
                    + (", delivery_state = %s WHERE id = %s" if table == "events" else " WHERE id = %s"),
                    [
                        (link.seq, link.hash, *((link.state,) if table == "events" else ()), row["id"])
                        for link, row in zip(links, rows, strict=True)
                    ],
                )
        cur.execute(
            "INSERT INTO journal_head VALUES (1, %s, %s, %s, %s)", (seq, last, _iso(self._now(cur)), seq)
        )

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> PostgresOutbox:
        return self

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:  # type: ignore[override]
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
                if self._links:
                    self._chain_links_pg(cur)
        except self._psycopg.OperationalError as exc:
            # The server went away or the connection broke: the transaction did not happen.
            raise OutboxError(f"{self.location}: outbox database error ({_first_line(exc)})") from None
        finally:
            self._links.clear()

    def _chain_links_pg(self, cur: psycopg.Cursor[dict[str, Any]]) -> None:
        """Chain the journal rows of the transaction about to commit, one transaction at a time.

        The row lock on ``journal_head`` serialises the appends of concurrent workers (the chain
        never forks); it is taken last, so it is held only for two statements and the commit.
        The deliveries are read in the statement that takes it: each is one this transaction
        changed (so locked and seen as changed) or, for a return report, one it locked with
        ``FOR SHARE`` (so no other worker can change it before this commit).
        """
        links, self._links = self._links, []
        ids = sorted({link.delivery_id for link in links if link.delivery_id is not None})
        cur.execute(
            "WITH head AS (SELECT seq, hash FROM journal_head WHERE id = 1 FOR UPDATE)"
            f" SELECT head.seq AS head_seq, head.hash AS head_hash, d.* FROM head LEFT JOIN"
            f" (SELECT {_JOURNAL_COLUMNS} FROM deliveries WHERE id = ANY(%s)) d ON true",
            (ids,),
        )
        found = cur.fetchall()
        rows = {r["id"]: r for r in found if r["id"] is not None}
        seq, last = chain.chain(links, int(found[0]["head_seq"]), str(found[0]["head_hash"]), rows)
        events = [
            (*link.insert, link.seq, link.hash, link.state) for link in links if link.insert is not None
        ]
        for link in links:
            if link.row is not None:
                column, value = link.row
                cur.execute(
                    f"UPDATE {link.table} SET chain_seq = %s, chain_hash = %s WHERE {column} = %s",
                    (link.seq, link.hash, value),
                )
        # The events and the new head in one statement: one round trip while the lock is held.
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(events))
        cur.execute(
            "WITH head AS (UPDATE journal_head SET seq = %s, hash = %s WHERE id = 1) "
            + (
                "INSERT INTO events (delivery_id, at, event, attempt, worker, detail, chain_seq, chain_hash,"
                f" delivery_state) VALUES {values}"
                if events
                else "SELECT 1"
            ),
            (seq, last, *(value for event in events for value in event)),
        )

    def _now(self, cur: psycopg.Cursor[dict[str, Any]]) -> float:
        if self._injected is not None:
            return float(self._injected())
        cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now")
        row = cur.fetchone()
        assert row is not None
        return float(row["now"])

    def _add_event(
        self,
        cur: psycopg.Cursor[dict[str, Any]],
        now: float,
        delivery_id: int,
        event: str,
        attempt: int,
        worker: str | None,
        detail: Any = None,
    ) -> None:
        # Inserted when the transaction commits, already chained (see _chain_links).
        self._links.append(
            chain.event_link(delivery_id, _iso(now), event, attempt, worker, json_detail(detail))
        )

    def _rows(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[dict[str, Any]]:
        with self._transaction() as cur:
            cur.execute(query, params)
            return cur.fetchall()

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
            row = document_row(document_id, set_id, version, replaces, confidentiality, _iso(self._now(cur)))
            cur.execute(
                "INSERT INTO documents (document_id, set_id, version, replaces, confidentiality, n3, pdf,"
                " stored_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (document_id) DO NOTHING",
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
            now = self._now(cur)
            for d in plan.deliveries:
                cur.execute(
                    """INSERT INTO deliveries (key, document_id, version, channel, action, recipient_kind,
                       recipient, recipient_id, sender, delivery, state, due, queued_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s)
                       ON CONFLICT (key) DO NOTHING RETURNING id""",
                    delivery_params(d, senders[d.channel], now),
                )
                row = cur.fetchone()
                if row is None:
                    existing.append(d.key)
                    continue
                self._order_after(cur, d)
                added.append(d.key)
                self._add_event(cur, now, int(row["id"]), "queued", 0, None)
            for s in plan.suppressed:
                params = suppression_params(plan, s, now)
                cur.execute(
                    "INSERT INTO suppressions (document_id, version, channel, recipient, reason, explanation,"
                    " at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
                    params,
                )
                added_row = cur.fetchone()
                if added_row is not None:
                    self._links.append(chain.suppression_link(int(added_row["id"]), params))
        return added, existing

    @staticmethod
    def _order_after(cur: psycopg.Cursor[dict[str, Any]], delivery: Delivery) -> None:
        # As in the SQLite outbox: a replacement or deletion waits for the delivery of the
        # version it targets to the same recipient.
        target = previous_target(delivery)
        if target is None:
            return
        cur.execute(
            """UPDATE deliveries SET after_key = (
                   SELECT key FROM deliveries WHERE document_id = %s AND channel = %s AND recipient = %s
                   AND action != 'delete' ORDER BY id DESC LIMIT 1)
               WHERE key = %s""",
            (target, delivery.channel.value, delivery.recipient.address, delivery.key),
        )

    # -- working -------------------------------------------------------------------------

    def claim(self, worker: str, *, limit: int = 1) -> list[Claim]:
        """Lease up to ``limit`` due deliveries to ``worker`` (expired leases included, in doubt)."""
        with self._transaction() as cur:
            now = self._now(cur)
            # SKIP LOCKED: rows another worker is claiming right now are skipped, not waited for;
            # the row lock is held to the commit, and the lock re-checks the WHERE on the newest
            # row version, so a row acknowledged meanwhile is not taken.
            cur.execute(
                f"""SELECT d.id, d.state FROM deliveries d
                    WHERE d.state IN {_PENDING} AND d.due <= %s
                    AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.key = d.after_key
                                    AND p.state IN {_PENDING})
                    ORDER BY d.due, d.id LIMIT %s
                    FOR UPDATE OF d SKIP LOCKED""",
                (now, limit),
            )
            due = cur.fetchall()
            if not due:
                return []
            # A row still "sending" is an earlier attempt that never reported back: in doubt.
            in_doubt = {row["id"] for row in due if row["state"] == "sending"}
            cur.execute(
                """UPDATE deliveries
                   SET state = 'sending', lease_owner = %s, attempts = attempts + 1, due = %s,
                       sent_at = COALESCE(sent_at, %s)
                   WHERE id = ANY(%s)
                   RETURNING id, delivery, sender, attempts""",
                (worker, now + self.lease_seconds, _iso(now), [row["id"] for row in due]),
            )
            order = {row["id"]: n for n, row in enumerate(due)}  # RETURNING's order is unspecified
            claims = []
            for row in sorted(cur.fetchall(), key=lambda r: order[r["id"]]):
                doubt = row["id"] in in_doubt
                self._add_event(
                    cur,
                    now,
                    row["id"],
                    "sending",
                    row["attempts"],
                    worker,
                    {"in_doubt": True} if doubt else None,
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
        """Record several acknowledgements in one transaction (see :meth:`Outbox.acknowledge_all`)."""
        results = []
        with self._transaction() as cur:
            now = self._now(cur)
            for claim, ack, recovered in acks:
                cur.execute(
                    """UPDATE deliveries SET state = 'acknowledged', acknowledged_at = %s, ack_summary = %s,
                       ack_detail = %s, lease_owner = NULL, last_error = NULL
                       WHERE id = %s AND state = 'sending' AND lease_owner = %s""",
                    (_iso(now), ack.summary, json_detail(dict(ack.detail)), claim.row_id, claim.worker),
                )
                updated = cur.rowcount
                if updated:
                    self._add_event(
                        cur,
                        now,
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
        state = "retrying" if retryable and retry_in is not None else "dead"
        with self._transaction() as cur:
            now = self._now(cur)
            cur.execute(
                """UPDATE deliveries SET state = %s, due = %s, last_error = %s, lease_owner = NULL,
                   dead_at = CASE WHEN %s = 'dead' THEN %s ELSE NULL END
                   WHERE id = %s AND state = 'sending' AND lease_owner = %s""",
                (state, now + (retry_in or 0), reason, state, _iso(now), claim.row_id, claim.worker),
            )
            if not cur.rowcount:
                return ""
            self._add_event(
                cur,
                now,
                claim.row_id,
                "retry-scheduled" if state == "retrying" else "dead",
                claim.attempt,
                claim.worker,
                failure_detail(state, reason, retry_in, detail),
            )
        return state

    def release(self, claim: Claim) -> None:
        """Give a claimed delivery back untouched (a worker stopping before it sent anything)."""
        with self._transaction() as cur:
            now = self._now(cur)
            cur.execute(
                "UPDATE deliveries SET state = 'retrying', due = %s, attempts = attempts - 1,"
                " lease_owner = NULL WHERE id = %s AND state = 'sending' AND lease_owner = %s",
                (now, claim.row_id, claim.worker),
            )
            if cur.rowcount:
                self._add_event(cur, now, claim.row_id, "released", claim.attempt, claim.worker)

    # -- reading -------------------------------------------------------------------------

    def _document_row(self, document_id: str, columns: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT {columns} FROM documents WHERE document_id = %s", (document_id,))
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
        query = (
            "SELECT delivery, ack_detail FROM deliveries WHERE document_id = %s AND state = 'acknowledged'"
        )
        params: tuple[Any, ...] = (document_id,)
        if channel is not None:
            query += " AND channel = %s"
            params += (channel.value,)
        rows = self._rows(query + " ORDER BY id", params)
        return [(Delivery.from_json(r["delivery"]), json.loads(r["ack_detail"] or "{}")) for r in rows]

    def known_recipients(self, document_id: str) -> set[tuple[str, str]]:
        """(channel, recipient) pairs that any delivery of a document version was queued to."""
        rows = self._rows("SELECT channel, recipient FROM deliveries WHERE document_id = %s", (document_id,))
        return {(r["channel"], r["recipient"]) for r in rows}

    def previous_ack(self, delivery: Delivery) -> dict[str, Any] | None:
        """For a replacement or deletion: the acknowledgement of the target version's send, if any."""
        target = previous_target(delivery)
        if target is None:
            return None
        rows = self._rows(
            """SELECT ack_detail FROM deliveries WHERE document_id = %s AND channel = %s AND recipient = %s
               AND state = 'acknowledged' AND action != 'delete' ORDER BY id DESC LIMIT 1""",
            (target, delivery.channel.value, delivery.recipient.address),
        )
        return dict(json.loads(rows[0]["ack_detail"] or "{}")) if rows else None

    def counts(self) -> dict[str, int]:
        """Number of deliveries per state."""
        rows = self._rows("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}

    def next_due(self) -> float | None:
        """When the next pending delivery becomes due (epoch seconds), or None if none is pending."""
        rows = self._rows(f"SELECT MIN(due) AS due FROM deliveries WHERE state IN {_PENDING}")
        return None if rows[0]["due"] is None else float(rows[0]["due"])

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """The state of each delivery key given."""
        rows = self._rows("SELECT key, state FROM deliveries WHERE key = ANY(%s)", (list(keys),))
        return {r["key"]: r["state"] for r in rows}

    def transmissions(
        self, *, document_id: str | None = None, since: datetime | None = None, state: str | None = None
    ) -> list[Transmission]:
        """The journal: one line per delivery, oldest first, optionally filtered."""
        query, params = "SELECT * FROM deliveries WHERE true", []
        if document_id:
            query += " AND document_id = %s"
            params.append(document_id)
        if since:
            query += " AND queued_at >= %s"
            params.append(since.astimezone(UTC).isoformat(timespec="milliseconds"))
        if state:
            query += " AND state = %s"
            params.append(state)
        rows = self._rows(query + " ORDER BY id", params)
        return self._with_returns(transmission_from_row(r) for r in rows)

    def events(self, key: str) -> list[dict[str, Any]]:
        """The event trail of one delivery, oldest first."""
        rows = self._rows(
            """SELECT e.at, e.event, e.attempt, e.worker, e.detail FROM events e
               JOIN deliveries d ON d.id = e.delivery_id WHERE d.key = %s ORDER BY e.id""",
            (key,),
        )
        return [{**r, "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    def suppressions(self, document_id: str | None = None) -> list[dict[str, Any]]:
        """Who did not receive a document and why."""
        query, params = f"SELECT {_SUPPRESSION_COLUMNS} FROM suppressions", []
        if document_id:
            query += " WHERE document_id = %s"
            params.append(document_id)
        return self._rows(query + " ORDER BY id", params)

    # -- return reports (DSN, MDN) -----------------------------------------------------------

    def mssante_delivery(self, message_id: str) -> tuple[str, Delivery] | None:
        """The MSSanté delivery whose messages carry this 32-hex id (``Job.message_id``), if any."""
        prefix = message_id.lower()
        if len(prefix) != 32 or any(c not in "0123456789abcdef" for c in prefix):
            return None
        # starts_with, not a range: a range on TEXT would depend on the database's collation.
        rows = self._rows(
            "SELECT key, delivery FROM deliveries WHERE starts_with(key, %s) AND channel = %s"
            " ORDER BY id LIMIT 1",
            (prefix, Channel.MSSANTE.value),
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
        """Record one recipient line of a return report (DSN or MDN); see :meth:`Outbox.record_return`.

        Raises:
            OutboxError: no delivery has this key.
        """
        with self._transaction() as cur:
            now = self._now(cur)
            # FOR SHARE: the delivery cannot change before this commits (see _chain_links_pg).
            cur.execute("SELECT id, attempts FROM deliveries WHERE key = %s FOR SHARE", (key,))
            row = cur.fetchone()
            if row is None:
                raise OutboxError(f"delivery {key[:16]} is not in the outbox")
            values = (report_id, kind, recipient, action, status, diagnostic, reported_at, _iso(now))
            cur.execute(
                """INSERT INTO return_reports (delivery_id, report_id, kind, recipient, action, status,
                   diagnostic, reported_at, recorded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (delivery_id, report_id, recipient) DO NOTHING RETURNING id""",
                (row["id"], *values),
            )
            inserted = cur.fetchone()
            added = 0 if inserted is None else 1
            if inserted is not None:
                self._links.append(chain.return_link(int(inserted["id"]), row["id"], values))
                event, detail = return_event(kind, action, status, diagnostic, reported_at)
                self._add_event(cur, now, row["id"], event, row["attempts"], None, detail)
        return bool(added)

    _REPORTS = """SELECT d.key, r.kind, r.recipient, r.action, r.status, r.diagnostic, r.reported_at,
                         r.recorded_at
                  FROM return_reports r JOIN deliveries d ON d.id = r.delivery_id WHERE d.key = ANY(%s)
                  ORDER BY COALESCE(r.reported_at, r.recorded_at), r.id"""

    def returns(self, key: str) -> list[dict[str, Any]]:
        """The return reports recorded for one delivery, in the order they happened."""
        return [{k: v for k, v in r.items() if k != "key"} for r in self._rows(self._REPORTS, ([key],))]

    def _with_returns(self, lines: Iterable[Transmission]) -> list[Transmission]:
        lines = list(lines)
        found: dict[str, list[dict[str, Any]]] = {}
        for report in self._rows(self._REPORTS, ([line.key for line in lines],)):
            found.setdefault(report.pop("key"), []).append(report)
        return with_reports(lines, found)

    # -- the journal's hash chain --------------------------------------------------------------

    def verify_journal(self) -> chain.JournalVerification:
        """Walk the journal's hash chain; see :meth:`Outbox.verify_journal`.

        Reads one snapshot (a repeatable-read, read-only transaction) with server-side cursors,
        so neither concurrent workers nor the size of the journal get in the way.
        """
        from crbio.dispatch.outbox import _CHAINED, _UNCHAINED

        with self._transaction() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT * FROM journal_head WHERE id = 1")
            head = cur.fetchone()
            assert head is not None
            cur.execute(
                "SELECT document_id, chain_seq FROM documents WHERE chain_seq IS NOT NULL ORDER BY chain_seq"
            )
            documents = [str(r["document_id"]) for r in cur.fetchall()]
            unchained = None
            for table, query in _UNCHAINED:
                cur.execute(query)
                found = cur.fetchone()
                if found is not None:
                    unchained = chain.ChainedRow(table, str(found["id"]), None, None, found["key"], None)
                    break
            streams = [self._stream(f"crbio_verify_{table}", query) for table, query in _CHAINED]
            rows = heapq.merge(
                (self._chained_document(cur, document_id) for document_id in documents),
                *(_chained(stream, table) for stream, (table, _) in zip(streams, _CHAINED, strict=True)),
                key=_position,
            )
            walked, broken = chain.verify_chain(
                head,
                rows,
                self._stream("crbio_verify_deliveries", "SELECT * FROM deliveries ORDER BY id"),
                unchained,
            )
        return chain.JournalVerification(
            rows=walked if broken else int(head["seq"]),
            head=str(head["hash"]),
            started_at=head["started_at"],
            migrated_rows=int(head["migrated_rows"]),
            broken=broken,
            location=self.location,
        )

    def _stream(self, name: str, query: str) -> Iterator[dict[str, Any]]:
        # A server-side cursor: rows come in batches, not all at once.
        with self._conn.cursor(name=name) as cursor:
            cursor.itersize = 2000
            cursor.execute(query)
            yield from cursor

    @staticmethod
    def _chained_document(cur: psycopg.Cursor[dict[str, Any]], document_id: str) -> chain.ChainedRow:
        cur.execute("SELECT * FROM documents WHERE document_id = %s", (document_id,))
        row = cur.fetchone()
        assert row is not None
        return chain.chained_row("documents", row)


def _first_line(exc: BaseException) -> str:
    """The first line of a driver error (the rest may echo connection parameters)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
