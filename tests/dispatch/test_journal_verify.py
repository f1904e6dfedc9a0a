"""The journal's hash chain: an untouched journal verifies, every kind of tampering is named.

Each test that takes ``outbox_table`` runs on a real SQLite file and again on a real PostgreSQL
server (``pg_server``). The outbox is filled through its public API (queue, claim, acknowledge,
retry, dead-letter, return report) and then changed behind its back with plain SQL, the way a
person with access to the database would.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from crbio.cli import main
from crbio.dispatch import Acknowledgement, Channel, DispatchConfig, Outbox, dispatch, plan_dispatch
from crbio.dispatch.journal_chain import JournalBroken
from crbio.dispatch.outbox_backends import open_outbox
from crbio.documents.build import Documents, build
from crbio.documents.context import BuildContext
from crbio.model import Report

pytest_plugins = ["pg_server"]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "outbox"
LAB = {"finess": "920000015", "name": "Laboratoire des Charmes", "oid": "1.2.250.1.999.1"}


def make_config(outbox: dict[str, Any]) -> DispatchConfig:
    return DispatchConfig.from_mapping(
        {
            "laboratory": LAB,
            "outbox": outbox,
            "destinations": {"dmp": {}, "mssante": {}, "hl7v2": {"name": "pfi"}},
        }
    )


@pytest.fixture
def two_documents(sample_report: Callable[[str], Report], context: BuildContext) -> list[Documents]:
    # The second has no qualified INS: its DMP and patient deliveries are suppressions.
    return [
        build(sample_report(name), context=context, validate=False)
        for name in ("01-biochimie.json", "13-identite-provisoire.json")
    ]


def fixed_clock() -> float:
    # One instant for every write, so that the chains of both backends can be compared.
    return 1_795_000_000.0


def populate(outbox: Outbox, config: DispatchConfig, documents: list[Documents]) -> None:
    """Every kind of journal row: deliveries, suppressions, each state change, a return report."""
    for docs in documents:
        dispatch(docs, config, outbox=outbox)
    claims = outbox.claim("w1", limit=100)
    assert len(claims) >= 6
    first, retried, dead, *rest = claims
    outbox.acknowledge(first, Acknowledgement("ok", {"message_id": "m1", "entry_uuid": "urn:uuid:1"}))
    outbox.fail(retried, retryable=True, reason="dispatch.transient: HTTP 503", retry_in=0)
    outbox.fail(dead, retryable=False, reason="dispatch.permanent: XDSUnknownPatientId")
    for claim in rest:
        outbox.acknowledge(claim, Acknowledgement("ok", {"message_id": claim.delivery.key[:32]}))
    mail = next(c for c in rest if c.delivery.channel is Channel.MSSANTE)
    assert outbox.record_return(
        mail.delivery.key,
        report_id="<dsn-1@mta.example>",
        kind="dsn",
        recipient=mail.delivery.recipient.address,
        action="delivered",
        status="2.0.0",
        reported_at="2026-11-20T09:05:00Z",
    )
    (again,) = outbox.claim("w2", limit=10)
    assert again.delivery.key == retried.delivery.key
    # The last journal row is an event: the acknowledgement of the retried delivery.
    outbox.acknowledge(again, Acknowledgement("ok after retry", {"message_id": "m2"}))


@pytest.fixture
def filled(
    outbox_table: Callable[..., dict[str, Any]], two_documents: list[Documents]
) -> Iterator[DispatchConfig]:
    config = make_config(outbox_table())
    with open_outbox(config) as outbox:
        populate(outbox, config, two_documents)
    yield config


class Raw:
    """Plain SQL on the outbox's database, behind crbio's back (``?`` placeholders on both)."""

    def __init__(self, config: DispatchConfig) -> None:
        self.postgres = config.outbox_backend == "postgresql"
        if self.postgres:
            import psycopg

            self.db: Any = psycopg.connect(config.outbox_dsn or "", autocommit=True)
        else:
            self.db = sqlite3.connect(config.outbox_path, isolation_level=None)

    def __call__(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.postgres:
            statement = statement.replace("?", "%s")
        cursor = self.db.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []

    def close(self) -> None:
        self.db.close()


def tamper(config: DispatchConfig, *statements: tuple[Any, ...]) -> None:
    raw = Raw(config)
    try:
        for statement, *params in statements:
            raw(statement, *params)
    finally:
        raw.close()


def verification(config: DispatchConfig) -> Any:
    with open_outbox(config) as outbox:
        return outbox.verify_journal()


def test_an_untouched_journal_verifies(filled: DispatchConfig) -> None:
    result = verification(filled)
    raw = Raw(filled)
    try:
        counts = sum(
            raw(f"SELECT count(*) FROM {table}")[0][0]
            for table in ("documents", "events", "suppressions", "return_reports")
        )
        (head,) = raw("SELECT seq, hash FROM journal_head")
        suppressed = raw("SELECT count(*) FROM suppressions")[0][0]
    finally:
        raw.close()
    assert suppressed >= 1  # the journal holds who did not receive too
    assert result.ok and result.broken is None and result.rows == counts == head[0]
    assert result.head == head[1] and len(result.head) == 64
    assert result.summary() == f"journal verified: {counts} rows, head {result.head}"
    assert result.migrated_rows == 0
    result.raise_if_broken()


def _nth(raw: Raw, table: str, where: str = "1=1", offset: int = 0) -> Any:
    return raw(f"SELECT id FROM {table} WHERE {where} ORDER BY id LIMIT 1 OFFSET {offset}")[0][0]


def _swap_two_events(raw: Raw) -> None:
    # Two neighbouring events change places in the chain, each keeping its own hash.
    (a, seq_a, hash_a), (b, seq_b, hash_b) = raw(
        "SELECT id, chain_seq, chain_hash FROM events ORDER BY id LIMIT 2 OFFSET 4"
    )
    raw("UPDATE events SET chain_seq = ?, chain_hash = ? WHERE id = ?", seq_b, hash_b, a)
    raw("UPDATE events SET chain_seq = ?, chain_hash = ? WHERE id = ?", seq_a, hash_a, b)


# Each: how the journal is tampered with, the table named in the break, and what the reason says.
TAMPERING: dict[str, tuple[Callable[[Raw], Any], str, str]] = {
    "an event's detail": (
        lambda raw: raw(
            'UPDATE events SET detail = \'{"summary": "forged"}\' WHERE id = ?',
            _nth(raw, "events", "event = 'acknowledged'"),
        ),
        "events",
        "does not match",
    ),
    "an acknowledgement on the delivery": (
        lambda raw: raw(
            "UPDATE deliveries SET ack_summary = 'forged' WHERE id = ?",
            _nth(raw, "deliveries", "state = 'acknowledged'"),
        ),
        "deliveries",
        "differ from what its last journal event",
    ),
    "an acknowledgement's detail on the delivery": (
        lambda raw: raw(
            "UPDATE deliveries SET ack_detail = '{}' WHERE id = ?",
            _nth(raw, "deliveries", "state = 'acknowledged'", 1),
        ),
        "deliveries",
        "differ from",
    ),
    "a delivery's state": (
        lambda raw: raw("UPDATE deliveries SET state = 'acknowledged', dead_at = NULL WHERE state = 'dead'"),
        "deliveries",
        "differ from",
    ),
    "an event's state change": (
        lambda raw: raw("UPDATE events SET event = 'acknowledged' WHERE event = 'dead'"),
        "events",
        "does not match",
    ),
    "a deleted middle event": (
        lambda raw: raw("DELETE FROM events WHERE id = ?", _nth(raw, "events", offset=3)),
        "*",  # the break is at the row after the gap, of whichever table
        "the row before it was removed",
    ),
    "a deleted last event": (
        lambda raw: raw("DELETE FROM events WHERE id = (SELECT max(id) FROM events)"),
        "journal_head",
        "the last row was removed",
    ),
    "two events swapped": (_swap_two_events, "events", "reordered"),
    "a suppression's explanation": (
        lambda raw: raw(
            "UPDATE suppressions SET explanation = 'forged' WHERE id = ?", _nth(raw, "suppressions")
        ),
        "suppressions",
        "does not match",
    ),
    "a return report's status": (
        lambda raw: raw("UPDATE return_reports SET status = '5.1.1', action = 'failed'"),
        "return_reports",
        "does not match",
    ),
    "an event added by hand": (
        lambda raw: raw(
            "INSERT INTO events (delivery_id, at, event, attempt) VALUES (?, ?, 'acknowledged', 1)",
            _nth(raw, "deliveries"),
            "2026-11-23T10:00:00.000+00:00",
        ),
        "events",
        "not in the journal's chain",
    ),
}


@pytest.mark.parametrize("case", TAMPERING)
def test_each_kind_of_tampering_is_named(filled: DispatchConfig, case: str) -> None:
    change, table, reason = TAMPERING[case]
    raw = Raw(filled)
    try:
        change(raw)
    finally:
        raw.close()
    result = verification(filled)
    assert not result.ok and result.broken is not None
    assert table in {"*", result.broken.table} and reason in result.broken.reason, result.summary()
    with pytest.raises(JournalBroken, match=reason) as raised:
        result.raise_if_broken()
    assert raised.value.code == "dispatch.journal-broken"


def test_edited_document_bytes_are_detected(filled: DispatchConfig, two_documents: list[Documents]) -> None:
    document_id = two_documents[1].document_id
    pdf = bytearray(two_documents[1].pdf)
    pdf[len(pdf) // 2] ^= 0x01  # one bit in the middle of the stored PDF
    tamper(filled, ("UPDATE documents SET pdf = ? WHERE document_id = ?", bytes(pdf), document_id))
    broken = verification(filled).broken
    assert broken is not None and (broken.table, broken.row_id) == ("documents", document_id)
    assert "does not match" in broken.reason


def test_the_break_names_the_row_and_the_delivery_key_not_the_patient(
    filled: DispatchConfig, two_documents: list[Documents]
) -> None:
    raw = Raw(filled)
    try:
        ((event_id, key),) = raw(
            "SELECT e.id, d.key FROM events e JOIN deliveries d ON d.id = e.delivery_id"
            " WHERE e.event = 'dead'"
        )
        raw("UPDATE events SET worker = 'someone-else' WHERE id = ?", event_id)
    finally:
        raw.close()
    summary = verification(filled).summary()
    assert f"events id {event_id}" in summary and f"delivery {key}" in summary
    patient = two_documents[0].report.patient
    assert patient.ins is not None
    for word in (patient.ins.matricule, patient.birth_family_name, patient.first_birth_given_name):
        assert word not in summary


def test_the_same_operations_give_the_same_chain_on_both_backends(
    tmp_path: Path, postgres_server: Any, two_documents: list[Documents]
) -> None:
    chains = []
    for outbox in (
        {"path": str(tmp_path / "o.sqlite")},
        {"backend": "postgresql", "dsn": postgres_server.database()},
    ):
        config = make_config(outbox)
        with open_outbox(config, clock=fixed_clock) as box:
            populate(box, config, two_documents)
        raw = Raw(config)
        try:
            rows = sorted(
                (seq, table, digest)
                for table in ("documents", "events", "suppressions", "return_reports")
                for seq, digest in raw(f"SELECT chain_seq, chain_hash FROM {table}")
            )
        finally:
            raw.close()
        chains.append((verification(config).head, rows))
    assert chains[0] == chains[1]
    assert len(chains[0][1]) > 20


def test_concurrent_workers_append_to_one_chain(
    outbox_table: Callable[..., dict[str, Any]], two_documents: list[Documents]
) -> None:
    config = make_config(outbox_table(lease_seconds=30))
    docs = two_documents[0]
    plan = plan_dispatch(docs.report, config)
    with open_outbox(config) as outbox:
        dispatch(docs, config, outbox=outbox)
        many = replace(
            plan,
            deliveries=tuple(
                replace(d, recipient=replace(d.recipient, address=f"{i}.{d.recipient.address}"))
                for i in range(40)
                for d in plan.deliveries
            ),
        )
        outbox.enqueue(many, dict.fromkeys(Channel, "x"))

    def work(slot: int) -> None:
        with open_outbox(config) as own:
            while batch := own.claim(f"w{slot}", limit=3):
                for n, claim in enumerate(batch):
                    if n == 1:
                        own.fail(claim, retryable=True, reason="busy", retry_in=0)
                    else:
                        own.acknowledge(claim, Acknowledgement("ok", {"slot": slot}))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verification(config)
    with open_outbox(config) as outbox:
        assert outbox.counts() == {"acknowledged": len(many.deliveries) + len(plan.deliveries)}
    assert result.ok, result.summary()


# -- the command line -----------------------------------------------------------------------------


def write_config(tmp_path: Path, config: DispatchConfig) -> Path:
    path = tmp_path / "crbio.toml"
    if config.outbox_backend == "postgresql":
        outbox = f'backend = "postgresql"\ndsn = "{config.outbox_dsn}"'
    else:
        outbox = f'path = "{config.outbox_path}"'
    path.write_text(
        '[laboratory]\nfiness = "920000015"\nname = "Laboratoire des Charmes"\noid = "1.2.250.1.999.1"\n'
        f"[outbox]\n{outbox}\n[destinations.dmp]\n[destinations.mssante]\n",
        "utf-8",
    )
    return path


def test_crbio_journal_verify(
    tmp_path: Path, filled: DispatchConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = write_config(tmp_path, filled)
    assert main(["journal", "--config", str(toml), "--verify"]) == 0
    out = capsys.readouterr().out.strip()
    head = verification(filled).head
    assert out.startswith("journal verified: ") and out.endswith(f" rows, head {head}")
    assert main(["journal", "--config", str(toml), "--verify", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True

    tamper(filled, ("UPDATE suppressions SET reason = 'forged'",))
    assert main(["journal", "--config", str(toml), "--verify"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("crbio: journal broken at suppressions id ") and "does not match" in line
    assert main(["journal", "--config", str(toml), "--verify", "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verified"] is False and report["broken"]["table"] == "suppressions"

    assert main(["journal", "--config", str(toml), "--verify", "--state", "dead"]) == 2
    assert "--verify" in capsys.readouterr().err


# -- upgrading outboxes written by earlier versions -----------------------------------------------


def _journal(outbox: Outbox) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    lines = outbox.transmissions()
    return (
        [t.to_dict() for t in lines],
        {t.key: outbox.events(t.key) for t in lines},
        outbox.suppressions(),
    )


@pytest.mark.parametrize("schema", ["1", "2"])
def test_an_outbox_of_an_earlier_schema_is_upgraded_and_chained(tmp_path: Path, schema: str) -> None:
    path = tmp_path / "outbox.sqlite"
    shutil.copyfile(FIXTURES / f"schema{schema}.sqlite", path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (schema,)
        counts = {
            t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("deliveries", "events", "suppressions")
        }
    db.close()
    with Outbox(path) as upgraded:
        journal = _journal(upgraded)
        result = upgraded.verify_journal()
        assert result.ok, result.summary()
        assert result.migrated_rows == result.rows >= counts["events"] + counts["suppressions"] + 2
        assert result.started_at is not None
        # Written after the upgrade: chained after the migrated rows.
        (claim,) = upgraded.claim("new-worker", limit=1)
        upgraded.acknowledge(claim, Acknowledgement("ok", {}))
        assert upgraded.verify_journal().rows == result.rows + 2
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
        assert {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in counts} == {
            **counts,
            "events": counts["events"] + 2,
        }
        assert db.execute("PRAGMA application_id").fetchone() == (0x4352424F,)
    db.close()
    with Outbox(path) as reopened:  # opening again changes nothing
        lines, events, suppressions = _journal(reopened)
        assert suppressions == journal[2]
        assert [line for line in lines if line["key"] != claim.delivery.key] == [
            line for line in journal[0] if line["key"] != claim.delivery.key
        ]
        assert reopened.verify_journal().ok


def test_a_postgresql_outbox_of_schema_2_is_upgraded_and_chained(
    tmp_path: Path, postgres_server: Any
) -> None:
    import psycopg

    from crbio.dispatch.outbox_pg import _SCHEMA, PostgresOutbox

    dsn = postgres_server.database()
    # A schema 2 database (_SCHEMA is still the schema 2 DDL; schema 3 adds to it) holding the
    # rows crbio 6106bd4 wrote in the schema 2 fixture.
    source = sqlite3.connect(FIXTURES / "schema2.sqlite")
    source.row_factory = sqlite3.Row
    with psycopg.connect(dsn, autocommit=True) as db:
        for statement in _SCHEMA:
            db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('schema', '2')")
        for table in ("documents", "deliveries", "events", "suppressions", "return_reports"):
            cursor = source.execute(f"SELECT * FROM {table} ORDER BY rowid")
            for row in cursor:
                names = [description[0] for description in cursor.description]
                # The ids the old code gave are kept (the events point at them).
                identity = "" if table == "documents" else " OVERRIDING SYSTEM VALUE"
                marks = ", ".join(["%s"] * len(names))
                db.execute(
                    f"INSERT INTO {table} ({', '.join(names)}){identity} VALUES ({marks})",
                    [row[n] for n in names],
                )
    source.close()
    with PostgresOutbox(dsn) as upgraded:
        result = upgraded.verify_journal()
        assert result.ok and result.migrated_rows == result.rows > 10, result.summary()
        pg_journal = _journal(upgraded)
    with psycopg.connect(dsn) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
    # The same file upgraded on SQLite: the same journal, and the very same chain.
    shutil.copyfile(FIXTURES / "schema2.sqlite", tmp_path / "outbox.sqlite")
    with Outbox(tmp_path / "outbox.sqlite") as on_sqlite:
        assert _journal(on_sqlite) == pg_journal and len(pg_journal[0]) == 6
        assert on_sqlite.verify_journal().head == result.head
