"""The outbox and transmission journal on PostgreSQL, for workers on several machines.

Same states, idempotency keys, leases, ordering and journal as the SQLite
:class:`~crbio.dispatch.outbox.Outbox` — the very same code: :class:`PostgresOutbox` is that
class on the :class:`PostgresDialect` below (see :mod:`crbio.dispatch.outbox_sql`). PostgreSQL's
row locks take the place of SQLite's single write lock: a claim is one transaction that picks
due rows with ``SELECT … FOR UPDATE SKIP LOCKED`` (so concurrent workers skip each other's rows
instead of waiting) and marks them ``sending`` under a lease. A worker that dies leaves its rows
``sending``; when the lease expires they are claimable again, in doubt.

Times (due dates, leases, journal stamps) come from the database server's clock, so workers on
machines whose clocks disagree still agree on when a lease expires; tests may inject a clock
instead, which is then used for every time this outbox writes.

The driver is psycopg 3 (``pip install "crbio[postgresql]"``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from crbio.dispatch import journal_chain as chain
from crbio.dispatch.outbox import Outbox
from crbio.dispatch.outbox_sql import JOURNAL_COLUMNS, SCHEMA_VERSION, Cursor, Dialect, outbox_schema
from crbio.errors import ConfigurationError, OutboxError

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresDialect", "PostgresOutbox", "dsn_location"]

log = logging.getLogger("crbio.dispatch.outbox_pg")

# pg_advisory_xact_lock key serialising schema creation between processes starting together
# (CREATE TABLE IF NOT EXISTS alone races on the catalog's unique indexes).
_SCHEMA_LOCK = 0x63726269_6F_6F7574 & 0x7FFF_FFFF_FFFF_FFFF

_V1, _V2 = outbox_schema(
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    integer="BIGINT",
    blob="BYTEA",
    real="DOUBLE PRECISION",
)
# Schema 2 (PostgreSQL outboxes started there), with an index SQLite does without.
_SCHEMA = (*_V1, "CREATE INDEX deliveries_after ON deliveries (after_key) WHERE after_key IS NOT NULL", *_V2)
# Schema 3: the journal's hash chain, as on SQLite (see crbio.dispatch.journal_chain).
_CHAIN_SCHEMA = chain.chain_schema("BIGINT")
# The schema versions a database is upgraded from in place (schema 1 never ran on PostgreSQL).
_MIGRATIONS = {"2": ("3", _CHAIN_SCHEMA)}


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

    It is an :class:`Outbox` for callers: the same methods, run on :class:`PostgresDialect`.

    Raises:
        ConfigurationError: psycopg is not installed.
        OutboxError: the server cannot be reached, the database holds an outbox of an unknown
            schema version, or crbio tables without the outbox's ``meta`` table.
    """

    def __init__(  # noqa: D107 (the class docstring says it)
        self, dsn: str, *, lease_seconds: float = 120.0, clock: Callable[[], float] | None = None
    ) -> None:
        dialect = PostgresDialect(dsn, clock)
        self.location = dialect.location
        self._open(dialect, lease_seconds)


class PostgresDialect(Dialect):
    """A PostgreSQL database: row locks, the server's clock, ``= ANY(?)`` lists, server-side cursors."""

    # SKIP LOCKED: rows another worker is claiming right now are skipped, not waited for.
    claim_lock = " FOR UPDATE OF d SKIP LOCKED"
    share_lock = " FOR SHARE"
    batch_size = None  # one array parameter, whatever its length

    def __init__(self, dsn: str, clock: Callable[[], float] | None) -> None:
        driver = _driver()
        from psycopg.rows import dict_row

        self.location = dsn_location(dsn)
        self._injected = clock
        self._psycopg = driver
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
        with self.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            found = cur.execute(
                "SELECT to_regclass('meta') AS meta, to_regclass('deliveries') AS deliveries"
            ).fetchone()
            if found["meta"] is None:
                if found["deliveries"] is not None:
                    raise OutboxError(f"{self.location}: this database is not a crbio outbox")
                self.create(cur, (*_SCHEMA, *_CHAIN_SCHEMA))
                log.info("created the outbox schema in %s", self.location)
                return
            version = cur.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            # An earlier schema is upgraded in place, under the schema lock.
            if (
                version is not None
                and version["value"] in _MIGRATIONS
                and self.upgrade(cur, _MIGRATIONS) == SCHEMA_VERSION
            ):
                log.info("upgraded the outbox schema in %s to version %s", self.location, SCHEMA_VERSION)
                return
            if version is None or version["value"] != SCHEMA_VERSION:
                raise OutboxError(f"{self.location}: unknown outbox schema version")

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A transaction on the connection (autocommit outside it); driver errors become OutboxError."""
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield _Cursor(cur)
        except self._psycopg.OperationalError as exc:
            # The server went away or the connection broke: the transaction did not happen.
            raise OutboxError(f"{self.location}: outbox database error ({_first_line(exc)})") from None

    @contextmanager
    def snapshot(self) -> Iterator[Cursor]:
        """A repeatable-read, read-only transaction."""
        with self.transaction() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cur

    def stream(self, name: str, query: str) -> Iterator[Mapping[str, Any]]:
        """A server-side cursor: rows come in batches, not all at once."""
        with self._conn.cursor(name=name) as cursor:
            cursor.itersize = 2000
            cursor.execute(query)
            yield from cursor

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one statement, in a transaction of its own."""
        with self.transaction() as cur:
            rows: list[Any] = cur.execute(sql, params).fetchall()
        return rows

    def now(self, cur: Cursor) -> float:
        """The injected clock's time, else the database server's (so all workers' leases agree)."""
        if self._injected is not None:
            return float(self._injected())
        return float(
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8 AS now").fetchone()["now"]
        )

    def match(self, column: str, values: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
        """``column = ANY(?)`` with the values as one array."""
        return f"{column} = ANY(?)", (list(values),)

    def prefix(self, column: str, prefix: str) -> tuple[str, tuple[Any, ...]]:
        """``starts_with``, not a range: a range on TEXT would depend on the database's collation."""
        return f"starts_with({column}, ?)", (prefix,)

    def lock_head(self, cur: Cursor, ids: Sequence[int]) -> tuple[int, str, dict[int, Any]]:
        """The head, locked ``FOR UPDATE`` (serialising the appends), and the deliveries: one round trip."""
        found = cur.execute(
            "WITH head AS (SELECT seq, hash FROM journal_head WHERE id = 1 FOR UPDATE)"
            f" SELECT head.seq AS head_seq, head.hash AS head_hash, d.* FROM head LEFT JOIN"
            f" (SELECT {JOURNAL_COLUMNS} FROM deliveries WHERE id = ANY(?)) d ON true",
            (list(ids),),
        ).fetchall()
        rows = {r["id"]: r for r in found if r["id"] is not None}
        return int(found[0]["head_seq"]), str(found[0]["head_hash"]), rows

    def append(self, cur: Cursor, events: list[tuple[Any, ...]], seq: int, last: str) -> None:
        """The events and the new head in one statement: one round trip while the head's lock is held."""
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(events))
        cur.execute(
            "WITH head AS (UPDATE journal_head SET seq = ?, hash = ? WHERE id = 1) "
            + (
                "INSERT INTO events (delivery_id, at, event, attempt, worker, detail, chain_seq, chain_hash,"
                f" delivery_state) VALUES {values}"
                if events
                else "SELECT 1"
            ),
            (seq, last, *(value for event in events for value in event)),
        )

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class _Cursor:
    """A psycopg cursor taking the outbox's ``?`` placeholders (its SQL has no other ``?`` nor ``%``)."""

    __slots__ = ("_cur",)

    def __init__(self, cur: psycopg.Cursor[dict[str, Any]]) -> None:
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _Cursor:
        self._cur.execute(sql.replace("?", "%s"), params or None)
        return self

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> None:
        self._cur.executemany(sql.replace("?", "%s"), params)

    def fetchone(self) -> dict[str, Any] | None:
        return self._cur.fetchone()

    def fetchall(self) -> list[dict[str, Any]]:
        return self._cur.fetchall()


def _first_line(exc: BaseException) -> str:
    """The first line of a driver error (the rest may echo connection parameters)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
