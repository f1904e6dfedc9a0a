"""The journal's hash chain: every journaled row is linked to the one before, so a change shows.

What is chained is what the journal must be able to prove — who received what, when, and why
someone did not:

* ``events``: every state change of every delivery (queued, sending, acknowledged with the
  acknowledgement's detail, retry-scheduled, dead with the reason, released, recovered, and the
  return-report events), each bound to its delivery by the delivery's idempotency key and to the
  delivery row's journal columns as they stood when the event was chained (``delivery_state``,
  a SHA-256 over them). The ``deliveries`` table is the current view of those events; its
  operational columns (``due``, ``lease_owner``, ``after_key``) are not journal facts and are left
  out, the others must equal what the delivery's last event recorded;
* ``return_reports``: what recipients' systems reported afterwards (DSN, MDN);
* ``suppressions``: who did not receive a document, and why;
* ``documents``: each stored version's metadata and the SHA-256 of its N3 and PDF bytes, so the
  bytes sent can be proven to be the bytes stored.

Each chained row carries ``chain_seq`` (its position, 1, 2, 3… across all four tables) and
``chain_hash = SHA-256(previous chain_hash || canonical encoding of the row)``; the first row's
previous hash is 32 zero bytes. The canonical encoding is the UTF-8 JSON (sorted keys, no
spaces) of ``[table, position, {field: value}]`` where the values are the stored text and
integers — never a backend's surrogate ids, so the same operations give the same chain on SQLite
and on PostgreSQL. The head (last position and hash) is kept in the one-row ``journal_head``
table and updated in the same transaction, so a deleted last row is noticed too.

Rows are chained when their transaction commits, under the lock that already serialises writers
(SQLite) or under a row lock on ``journal_head`` (PostgreSQL). An outbox upgraded from an older
schema has its existing rows chained at upgrade time (``journal_head.started_at``): the chain
vouches that nothing changed since then, not for what was written before.

The chain has no secret: someone able to rewrite the database can rewrite the whole chain. Keep
the head printed by ``crbio journal --verify`` somewhere else (an audit log, a ticket) to make a
later rewrite visible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from crbio.errors import OutboxError

__all__ = [
    "chain_schema",
    "DELIVERY_JOURNAL_COLUMNS",
    "GENESIS",
    "JournalBreak",
    "JournalBroken",
    "JournalVerification",
    "Link",
    "canonical",
    "delivery_state",
    "document_fields",
    "link_hash",
    "return_fields",
    "suppression_fields",
    "verify_chain",
]

GENESIS = "0" * 64  # the "previous hash" of the first row

# The columns of a deliveries row that are journal facts (all but id, due, lease_owner, after_key).
DELIVERY_JOURNAL_COLUMNS = (
    "key",
    "document_id",
    "version",
    "channel",
    "action",
    "recipient_kind",
    "recipient",
    "recipient_id",
    "sender",
    "delivery",
    "state",
    "attempts",
    "queued_at",
    "sent_at",
    "acknowledged_at",
    "dead_at",
    "last_error",
    "ack_summary",
    "ack_detail",
)
SUPPRESSION_COLUMNS = ("document_id", "version", "channel", "recipient", "reason", "explanation", "at")
RETURN_COLUMNS = (
    "report_id",
    "kind",
    "recipient",
    "action",
    "status",
    "diagnostic",
    "reported_at",
    "recorded_at",
)
EVENT_COLUMNS = ("at", "event", "attempt", "worker", "detail")
DOCUMENT_COLUMNS = ("document_id", "set_id", "version", "replaces", "confidentiality", "stored_at")


def chain_schema(integer: str) -> tuple[str, ...]:
    """The statements adding schema 3 (the chain's columns and ``journal_head``) to an outbox.

    ``integer`` is the backend's type for positions (SQLite ``INTEGER``, PostgreSQL ``BIGINT``).
    New outboxes get them by the same ALTERs as upgraded ones, so both have the very same tables.
    """
    return (
        *(
            f"ALTER TABLE {table} ADD COLUMN {column} {kind}"
            for table in ("documents", "events", "suppressions", "return_reports")
            for column, kind in (("chain_seq", integer), ("chain_hash", "TEXT"))
        ),
        "ALTER TABLE events ADD COLUMN delivery_state TEXT",
        f"""CREATE TABLE journal_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq {integer} NOT NULL,
        hash TEXT NOT NULL,
        started_at TEXT NOT NULL,
        migrated_rows {integer} NOT NULL
    )""",
    )


class JournalBroken(OutboxError):
    """The journal's hash chain does not verify: a journaled row was changed, removed or reordered."""

    code = "dispatch.journal-broken"


def canonical(table: str, seq: int, fields: Mapping[str, Any]) -> bytes:
    """The unambiguous bytes a journal row is hashed as (sorted-key JSON of table, position, fields)."""
    return json.dumps([table, seq, fields], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def link_hash(previous: str, table: str, seq: int, fields: Mapping[str, Any]) -> str:
    """SHA-256(previous hash || canonical row), in hex."""
    return hashlib.sha256(bytes.fromhex(previous) + canonical(table, seq, fields)).hexdigest()


def delivery_state(row: Mapping[str, Any]) -> str:
    """The SHA-256 of a deliveries row's journal columns (what its last event must have recorded).

    The encoding is the JSON array of the values of :data:`DELIVERY_JOURNAL_COLUMNS`, in that
    order (a fixed order, so no keys are needed; computed on every state change, so kept lean).
    """
    values = [row[name] for name in DELIVERY_JOURNAL_COLUMNS]
    return hashlib.sha256(
        json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    ).hexdigest()


def document_fields(row: Mapping[str, Any], n3: bytes, pdf: bytes) -> dict[str, Any]:
    """The chained fields of a stored document version: its metadata and the digests of its bytes."""
    return {
        **{name: _plain(row[name]) for name in DOCUMENT_COLUMNS},
        "n3_sha256": hashlib.sha256(n3).hexdigest(),
        "pdf_sha256": hashlib.sha256(pdf).hexdigest(),
    }


def suppression_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The chained fields of a suppression (who did not receive a document, and why)."""
    return {name: _plain(row[name]) for name in SUPPRESSION_COLUMNS}


def return_fields(row: Mapping[str, Any], delivery_key: str) -> dict[str, Any]:
    """The chained fields of a return report line, bound to its delivery's key."""
    return {"delivery": delivery_key, **{name: _plain(row[name]) for name in RETURN_COLUMNS}}


def event_fields(row: Mapping[str, Any], delivery_key: str, state: str) -> dict[str, Any]:
    """The chained fields of an event, bound to its delivery's key and the delivery row it left."""
    return {
        "delivery": delivery_key,
        "delivery_state": state,
        **{name: _plain(row[name]) for name in EVENT_COLUMNS},
    }


def _plain(value: Any) -> Any:
    # Both drivers give str/int/None for these columns; a float or bytes here would be a bug.
    if value is None or isinstance(value, str | int):
        return value
    raise TypeError(f"journal value of type {type(value).__name__} cannot be chained")


@dataclass(slots=True)
class Link:
    """A journal row waiting to be chained when its transaction commits.

    ``fields`` are the chained fields known when the row was written; for an event or a return
    report, ``delivery_id`` names the delivery whose key (and, for an event, whose row) are read
    at commit time. ``row`` identifies an already inserted row (column, value) to stamp; an event
    has ``insert`` instead: it is inserted at commit, already stamped (one write instead of two).
    """

    table: str
    fields: dict[str, Any]
    delivery_id: int | None = None
    row: tuple[str, Any] | None = None
    insert: tuple[Any, ...] | None = None
    seq: int = 0
    hash: str = ""
    state: str | None = None


def event_link(
    delivery_id: int, at: str, event: str, attempt: int, worker: str | None, detail: str | None
) -> Link:
    """A new event, inserted and chained when its transaction commits."""
    return Link(
        "events",
        {"at": at, "event": event, "attempt": attempt, "worker": worker, "detail": detail},
        delivery_id=delivery_id,
        insert=(delivery_id, at, event, attempt, worker, detail),
    )


def document_link(row: Mapping[str, Any], n3: bytes, pdf: bytes) -> Link:
    """An inserted document version (``row`` has :data:`DOCUMENT_COLUMNS`), to stamp at commit."""
    return Link("documents", document_fields(row, n3, pdf), row=("document_id", row["document_id"]))


def suppression_link(row_id: int, values: Iterable[Any]) -> Link:
    """An inserted suppression (its values in :data:`SUPPRESSION_COLUMNS` order), to stamp at commit."""
    return Link(
        "suppressions",
        suppression_fields(dict(zip(SUPPRESSION_COLUMNS, values, strict=True))),
        row=("id", row_id),
    )


def return_link(row_id: int, delivery_id: int, values: Iterable[Any]) -> Link:
    """An inserted return report line (values in :data:`RETURN_COLUMNS` order), to stamp at commit."""
    row = dict(zip(RETURN_COLUMNS, values, strict=True))
    return Link(
        "return_reports", {name: _plain(row[name]) for name in RETURN_COLUMNS}, delivery_id, ("id", row_id)
    )


def existing_link(table: str, row: Mapping[str, Any]) -> Link:
    """A row already in the outbox when the chain starts (an upgrade), to stamp in id order."""
    if table == "events":
        fields = {name: _plain(row[name]) for name in EVENT_COLUMNS}
        return Link("events", fields, delivery_id=int(row["delivery_id"]), row=("id", row["id"]))
    if table == "suppressions":
        return Link("suppressions", suppression_fields(row), row=("id", row["id"]))
    if table == "return_reports":
        fields = {name: _plain(row[name]) for name in RETURN_COLUMNS}
        return Link("return_reports", fields, delivery_id=int(row["delivery_id"]), row=("id", row["id"]))
    raise ValueError(table)


def chain(
    links: Iterable[Link], head_seq: int, head_hash: str, deliveries: Mapping[int, Mapping[str, Any]]
) -> tuple[int, str]:
    """Give each link its position and hash after the head; ``deliveries`` maps ids to their rows.

    Returns the new head (position, hash).
    """
    states: dict[int, str] = {}
    for link in links:
        if link.delivery_id is not None:
            row = deliveries.get(link.delivery_id)
            if row is None:
                raise OutboxError(
                    f"{link.table} row of delivery id {link.delivery_id}: the delivery is missing"
                )
            link.fields["delivery"] = row["key"]
            if link.table == "events":
                state = states.get(link.delivery_id)
                if state is None:
                    state = states[link.delivery_id] = delivery_state(row)
                link.fields["delivery_state"] = link.state = state
        head_seq += 1
        head_hash = link_hash(head_hash, link.table, head_seq, link.fields)
        link.seq, link.hash = head_seq, head_hash
    return head_seq, head_hash


# -- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JournalBreak:
    """The first row where the chain does not verify: where it is (no patient data) and what is wrong."""

    table: str
    row_id: str | None  # the row's id (a document's OID for documents), None for a missing row
    seq: int | None  # its position in the chain, when it has one
    key: str | None  # the delivery key (events, return reports, deliveries) or document OID
    reason: str

    def __str__(self) -> str:
        where = self.table if self.row_id is None else f"{self.table} id {self.row_id}"
        extra = [f"position {self.seq}"] if self.seq is not None else []
        if self.key and self.key != self.row_id:
            extra.append(
                f"{'document' if self.table in {'documents', 'suppressions'} else 'delivery'} {self.key}"
            )
        return f"{where}{' (' + ', '.join(extra) + ')' if extra else ''}: {self.reason}"


@dataclass(frozen=True, slots=True)
class JournalVerification:
    """The result of walking the journal's hash chain."""

    rows: int  # chained rows walked
    head: str  # the recorded head hash
    started_at: str | None  # when the chain started (outbox creation, or upgrade of an older one)
    migrated_rows: int  # rows already there at that upgrade, chained then
    broken: JournalBreak | None = None
    location: str = field(default="")

    @property
    def ok(self) -> bool:
        """Whether the whole journal verified."""
        return self.broken is None

    def summary(self) -> str:
        """One line: ``journal verified: N rows, head <hex>`` or where the chain breaks."""
        if self.broken is None:
            return f"journal verified: {self.rows} rows, head {self.head}"
        return f"journal broken at {self.broken}"

    def raise_if_broken(self) -> None:
        """Raise :class:`JournalBroken` (code ``dispatch.journal-broken``) unless the journal verified."""
        if self.broken is not None:
            prefix = f"{self.location}: " if self.location else ""
            raise JournalBroken(prefix + self.summary())

    def to_dict(self) -> dict[str, Any]:
        """The verification as JSON-serialisable data."""
        broken = None
        if self.broken is not None:
            b = self.broken
            broken = {"table": b.table, "id": b.row_id, "seq": b.seq, "key": b.key, "reason": b.reason}
        return {
            "verified": self.ok,
            "rows": self.rows,
            "head": self.head,
            "started_at": self.started_at,
            "migrated_rows": self.migrated_rows,
            "broken": broken,
        }


@dataclass(frozen=True, slots=True)
class ChainedRow:
    """A chained row as read back for verification, with the fields it was hashed over."""

    table: str
    row_id: str
    seq: int | None
    hash: str | None
    key: str | None
    fields: dict[str, Any] | None  # None: the row cannot be rebuilt (its delivery is gone)
    delivery_id: int | None = None
    problem: str | None = None


def verify_chain(
    head: Mapping[str, Any],
    rows: Iterator[ChainedRow],
    deliveries: Iterable[Mapping[str, Any]],
    unchained: ChainedRow | None,
) -> tuple[int, JournalBreak | None]:
    """Walk the chained rows in position order, then check each delivery row against its last event.

    ``rows`` must come in chain order (each table's rows by position, merged); ``deliveries`` are
    all deliveries rows with their ``id``; ``unchained`` is a journal row without a position, if
    any (a row added outside crbio). Returns the number of rows walked and the first break.
    """
    previous, expected = GENESIS, 1
    last_event: dict[int, tuple[str, str]] = {}  # delivery id -> (state, event row id)
    walked = 0
    for row in rows:
        if row.seq is None or row.seq != expected:
            if row.seq is not None and row.seq > expected:
                # Removed, or moved further on: only the rest of the journal can tell.
                if any(later.seq == expected for later in rows):
                    reason = f"position {expected} expected: rows were reordered"
                elif row.seq == expected + 1:
                    reason = f"position {expected} expected: the row before it was removed"
                else:
                    reason = (
                        f"position {expected} expected: the {row.seq - expected} rows before it were removed"
                    )
            else:
                reason = f"position {expected} expected: rows were reordered or duplicated"
            return walked, JournalBreak(row.table, row.row_id, row.seq, row.key, reason)
        if row.problem is not None or row.fields is None:
            return walked, JournalBreak(row.table, row.row_id, row.seq, row.key, row.problem or "unreadable")
        computed = link_hash(previous, row.table, row.seq, row.fields)
        if computed != row.hash:
            return walked, JournalBreak(
                row.table, row.row_id, row.seq, row.key, "its content does not match the journal's chain"
            )
        if row.table == "events" and row.delivery_id is not None:
            last_event[row.delivery_id] = (str(row.fields["delivery_state"]), row.row_id)
        previous, expected, walked = computed, expected + 1, walked + 1
    head_seq, head_hash = int(head["seq"]), str(head["hash"])
    if walked < head_seq:
        gone = head_seq - walked
        return walked, JournalBreak(
            "journal_head",
            None,
            head_seq,
            None,
            f"the journal ends at position {walked} but its head records {head_seq}: the last row was removed"
            if gone == 1
            else f"the last {gone} rows were removed",
        )
    if previous != head_hash:
        return walked, JournalBreak(
            "journal_head", None, head_seq, None, "the recorded head does not match the chain"
        )
    if unchained is not None:
        return walked, JournalBreak(
            unchained.table,
            unchained.row_id,
            None,
            unchained.key,
            "this row is not in the journal's chain (added outside crbio)",
        )
    for delivery in deliveries:
        seen = last_event.pop(int(delivery["id"]), None)
        key = str(delivery["key"])
        if seen is None:
            return walked, JournalBreak(
                "deliveries", str(delivery["id"]), None, key, "no journal event records this delivery"
            )
        if delivery_state(delivery) != seen[0]:
            return walked, JournalBreak(
                "deliveries",
                str(delivery["id"]),
                None,
                key,
                f"its state or acknowledgement differ from what its last journal event (events id "
                f"{seen[1]}) recorded",
            )
    return walked, None


def chained_row(table: str, row: Mapping[str, Any]) -> ChainedRow:
    """A chained row read back (either backend) with the fields its hash must cover.

    Events and return reports are read joined to their delivery (``delivery_key``, None when
    the delivery row is gone); documents with their bytes.
    """
    seq = row["chain_seq"]
    seq = None if seq is None else int(seq)
    if table == "documents":
        row_id = key = str(row["document_id"])
    else:
        row_id = str(row["id"])
        key = row["document_id"] if table == "suppressions" else row["delivery_key"]
    delivery_id = int(row["delivery_id"]) if table in {"events", "return_reports"} else None
    if table in {"events", "return_reports"} and key is None:
        return ChainedRow(
            table, row_id, seq, row["chain_hash"], None, None, delivery_id, "its delivery is missing"
        )
    try:
        if table == "documents":
            fields = document_fields(row, bytes(row["n3"]), bytes(row["pdf"]))
        elif table == "events":
            fields = event_fields(row, str(key), row["delivery_state"])
        elif table == "suppressions":
            fields = suppression_fields(row)
        else:
            fields = return_fields(row, str(key))
    except TypeError:
        return ChainedRow(
            table, row_id, seq, row["chain_hash"], key, None, delivery_id, "a value has the wrong type"
        )
    return ChainedRow(table, row_id, seq, row["chain_hash"], key, fields, delivery_id)
