"""The PostgreSQL outbox: configuration, schema, leases on the database clock, and SIGKILLed workers.

The behaviour it shares with the SQLite outbox is tested by ``test_outbox.py`` on both backends;
here is what is PostgreSQL's own. Every test runs against a real PostgreSQL server started for the
session (``pg_server``); without one they are skipped with the reason.
"""

from __future__ import annotations

import inspect
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import sample_files
from crbio.dispatch import Acknowledgement, Channel, DispatchConfig, Outbox, dispatch
from crbio.dispatch.outbox import SqliteDialect
from crbio.dispatch.outbox_backends import open_outbox, outbox_identity
from crbio.dispatch.outbox_pg import PostgresDialect, PostgresOutbox
from crbio.documents.build import Documents, build
from crbio.documents.context import BuildContext
from crbio.errors import ConfigurationError, OutboxError
from crbio.input import load_report
from crbio.model import Report
from crbio.simulators.base import Fault
from crbio.simulators.run import Simulation

if TYPE_CHECKING:
    from pg_server import PostgresServer

pytest_plugins = ["pg_server"]
psycopg = pytest.importorskip("psycopg", reason='needs psycopg 3 (pip install "crbio[postgresql]")')

LAB = {"finess": "920000015", "name": "Laboratoire des Charmes", "oid": "1.2.250.1.999.1"}


def _config(outbox: dict[str, Any], base_dir: Path | None = None) -> DispatchConfig:
    return DispatchConfig.from_mapping(
        {"laboratory": LAB, "outbox": outbox, "destinations": {"dmp": {}, "mssante": {}, "hl7v2": {}}},
        base_dir=base_dir,
    )


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> str:
    return postgres_server.database()


@pytest.fixture
def documents(sample_report: Callable[[str], Report], context: BuildContext) -> Documents:
    return build(sample_report("01-biochimie.json"), context=context, validate=False)


def test_postgresql_runs_the_one_outbox_logic_on_its_own_dialect(dsn: str) -> None:
    # One implementation of the outbox for both databases: PostgresOutbox only opens its dialect,
    # so a fix to the logic cannot miss a backend; none of the SQLite dialect runs on it.
    assert {name for name, value in vars(PostgresOutbox).items() if inspect.isfunction(value)} == {"__init__"}
    with PostgresOutbox(dsn) as outbox:
        assert type(outbox._sql) is PostgresDialect
        assert not isinstance(outbox._sql, SqliteDialect)


def test_the_configuration_selects_the_backend_and_reads_the_dsn_as_a_secret(
    tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "outbox.dsn").write_text(dsn + "\n", "utf-8")
    from_file = _config({"backend": "postgresql", "dsn_file": "outbox.dsn"}, base_dir=tmp_path)
    assert from_file.outbox_backend == "postgresql" and from_file.outbox_dsn == dsn
    assert dsn not in repr(from_file)
    monkeypatch.setenv("CRBIO_TEST_OUTBOX_DSN", dsn)
    from_env = _config({"backend": "postgresql", "dsn_env": "CRBIO_TEST_OUTBOX_DSN", "lease_seconds": 7})
    with open_outbox(from_env) as outbox:
        assert isinstance(outbox, PostgresOutbox) and outbox.lease_seconds == 7
        assert outbox.counts() == {}
    with open_outbox(dsn) as by_location:
        assert isinstance(by_location, PostgresOutbox)
    assert outbox_identity(from_env).startswith("postgresql://127.0.0.1:")
    with open_outbox(_config({"path": str(tmp_path / "o.sqlite")})) as sqlite:
        assert type(sqlite) is Outbox

    with pytest.raises(ConfigurationError, match=r"outbox\.dsn_env: .* not set"):
        _config({"backend": "postgresql", "dsn_env": "CRBIO_TEST_NOT_SET"})
    with pytest.raises(ConfigurationError, match=r"outbox\.dsn: only for backend"):
        _config({"dsn": dsn})
    with pytest.raises(ConfigurationError, match=r"outbox\.backend: must be"):
        _config({"backend": "mysql"})
    with pytest.raises(ConfigurationError, match=r"outbox\.path: only for backend"):
        _config({"backend": "postgresql", "dsn": dsn, "path": "x.sqlite"})


def test_without_psycopg_the_postgresql_backend_says_what_to_install(tmp_path: Path) -> None:
    # A fresh interpreter where importing psycopg fails, as when it is not installed.
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from crbio.dispatch import DispatchConfig\n"
        "from crbio.dispatch.outbox_backends import open_outbox\n"
        "from crbio.errors import ConfigurationError\n"
        "config = DispatchConfig.from_mapping({'laboratory': {'finess': '1', 'name': 'n', 'oid': '1.2'},"
        " 'outbox': {'backend': 'postgresql', 'dsn': 'postgresql://127.0.0.1:1/x'}})\n"
        "try:\n    open_outbox(config)\nexcept ConfigurationError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "psycopg" in out and "crbio[postgresql]" in out


def test_an_unreachable_server_or_a_foreign_database_is_refused(
    postgres_server: PostgresServer, dsn: str
) -> None:
    with pytest.raises(OutboxError, match="cannot connect") as refused:
        PostgresOutbox("postgresql://postgres:s3cret@127.0.0.1:1/nothing")
    assert "s3cret" not in str(refused.value)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE deliveries (id INTEGER)")
    with pytest.raises(OutboxError, match="not a crbio outbox"):
        PostgresOutbox(dsn)
    other = postgres_server.database()
    PostgresOutbox(other).close()
    with psycopg.connect(other, autocommit=True) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(OutboxError, match="unknown outbox schema version"):
        PostgresOutbox(other)


def test_processes_starting_together_create_the_schema_once(dsn: str) -> None:
    code = (
        "import sys\nfrom crbio.dispatch.outbox_pg import PostgresOutbox\n"
        "with PostgresOutbox(sys.argv[1]) as outbox:\n    print(outbox.counts())\n"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", code, dsn], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=60), p.communicate()) for p in starters]
    assert [rc for rc, _ in results] == [0] * 4, [err for _, (_, err) in results]
    with psycopg.connect(dsn) as db:
        assert db.execute("SELECT key, value FROM meta").fetchall() == [("schema", "3")]


def test_leases_follow_the_injected_clock(tmp_path: Path, dsn: str, documents: Documents) -> None:
    now = [1_000_000.0]
    config = _config({"backend": "postgresql", "dsn": dsn, "lease_seconds": 60})
    with open_outbox(config, clock=lambda: now[0]) as outbox:
        dispatch(documents, config, outbox=outbox)
        claimed = outbox.claim("first", limit=100)
        assert len(claimed) == 4 and not outbox.claim("second", limit=100)
        now[0] += 59
        assert not outbox.claim("second", limit=100)  # the lease still runs
        now[0] += 2
        again = outbox.claim("second", limit=100)
        assert {c.row_id for c in again} == {c.row_id for c in claimed} and all(c.in_doubt for c in again)
        assert not outbox.acknowledge(claimed[0], Acknowledgement("late"))
        assert outbox.acknowledge(again[0], Acknowledgement("ok"))
        line = outbox.transmissions(state="acknowledged")[0]
        assert line.sent_at == "1970-01-12T13:46:40.000+00:00" and line.attempts == 2


def test_threads_on_one_database_claim_disjoint_rows_while_others_acknowledge(
    dsn: str, documents: Documents
) -> None:
    config = _config({"backend": "postgresql", "dsn": dsn, "lease_seconds": 30})
    for n in range(30):  # 30 versions' worth of deliveries, each needing its own row locks
        with open_outbox(config) as outbox:
            outbox.store_document(
                document_id=f"{documents.document_id}.{n}",
                set_id="1.2.3",
                version=1,
                replaces=None,
                confidentiality=["N"],
                n3=documents.n3,
                pdf=documents.pdf,
            )
    from dataclasses import replace

    from crbio.dispatch import plan_dispatch

    plan = plan_dispatch(documents.report, config)
    with open_outbox(config) as outbox:
        for n in range(30):
            copy = replace(
                plan,
                document_id=f"{documents.document_id}.{n}",
                deliveries=tuple(
                    replace(d, document_id=f"{documents.document_id}.{n}") for d in plan.deliveries
                ),
            )
            outbox.enqueue(copy, dict.fromkeys(Channel, "x"))
        total = sum(outbox.counts().values())
    acked: list[list[int]] = [[] for _ in range(6)]

    def work(slot: int) -> None:
        with open_outbox(config) as own:
            while batch := own.claim(f"w{slot}", limit=2):
                for claim in batch:
                    assert own.acknowledge(claim, Acknowledgement("ok"))
                    acked[slot].append(claim.row_id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [row for rows in acked for row in rows]
    assert len(everything) == len(set(everything)) == total == 120


def _worker(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "crbio.cli", "worker", "--config", str(config), "--drain", "--threads", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkilled_workers_on_several_processes_deliver_everything_exactly_once(
    tmp_path: Path, dsn: str
) -> None:
    lease = 1.0
    with Simulation(tmp_path / "sim", retry_delay=0.05) as sim:
        # The simulation's configuration, with its outbox moved to PostgreSQL (the DSN read from
        # a file beside it, as a deployment would) and short leases.
        (sim.config_path.parent / "outbox.dsn").write_text(dsn, "utf-8")
        toml = sim.config_path.read_text("utf-8")
        start = toml.index("[outbox]")
        end = toml.index("[", start + 1)
        outbox_section = (
            f'[outbox]\nbackend = "postgresql"\ndsn_file = "outbox.dsn"\nlease_seconds = {lease}\n\n'
        )
        sim.config_path.write_text(toml[:start] + outbox_section + toml[end:], "utf-8")
        for plan in sim.fault_plans:
            plan.latency = 0.05
            plan.set_rate(0.5, (Fault.LATENCY,))
        config = sim.config
        assert config.outbox_backend == "postgresql"
        for path in sample_files():
            dispatch(build(load_report(path)), config)
        with open_outbox(config) as outbox:
            expected = {t.key for t in outbox.transmissions()}

        rng = random.Random(20261123)
        kills = 0
        for _ in range(12):
            workers = [_worker(sim.config_path) for _ in range(3)]
            # Each worker dies at its own random moment, the others go on meanwhile.
            for worker in sorted(workers, key=lambda _: rng.random()):
                time.sleep(rng.uniform(0.2, 0.7))
                if worker.poll() is None:
                    worker.kill()
                    kills += 1
            for worker in workers:
                worker.wait()
            with open_outbox(config) as outbox:
                if outbox.counts() == {"acknowledged": len(expected)}:
                    break
        with psycopg.connect(dsn) as db:
            held = db.execute("SELECT count(*) FROM deliveries WHERE state = 'sending'").fetchone()
        # Whatever the killed workers held is claimable again once the lease has run out.
        time.sleep(lease + 0.2)
        finishers = [_worker(sim.config_path) for _ in range(3)]
        assert [w.wait(timeout=120) for w in finishers] == [0, 0, 0]

        with open_outbox(config) as outbox:
            dead = [(t.channel, t.last_error) for t in outbox.transmissions(state="dead")]
            assert outbox.counts() == {"acknowledged": len(expected)}, dead
            doubted = 0
            for key in expected:
                events = outbox.events(key)
                names = [e["event"] for e in events]
                assert sum(e in {"acknowledged", "recovered"} for e in names) == 1, names
                doubted += any(e["detail"] == {"in_doubt": True} for e in events)
            lines = outbox.transmissions()
            # Workers appended to the journal concurrently and were killed mid-way: one unbroken chain.
            journal = outbox.verify_journal()
            assert journal.ok, journal.summary()
        with psycopg.connect(dsn) as db:
            leases = db.execute("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL").fetchone()
            chained = db.execute(
                "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM documents)"
                " + (SELECT count(*) FROM suppressions) + (SELECT count(*) FROM return_reports)"
            ).fetchone()
        assert leases == (0,) and chained == (journal.rows,)
        assert kills >= 5 and doubted >= 1, (kills, doubted, held)

        # Each destination holds each delivery once; resends after a kill are recognised.
        dmp = [t for t in lines if t.channel == Channel.DMP.value]
        stored = Counter(e.unique_id for e in sim.xds.entries)
        assert sorted(stored) == sorted(t.document_id for t in dmp) and set(stored.values()) == {1}
        mails = [t for t in lines if t.channel == Channel.MSSANTE.value]
        fresh = Counter(m.message_id for m in sim.smtp.messages if not m.duplicate)
        assert len(fresh) == len(mails) and set(fresh.values()) == {1}
        hl7 = [t for t in lines if t.channel == Channel.HL7V2.value]
        fresh_hl7 = Counter(m.control_id for m in sim.mllp.messages if not m.duplicate)
        assert len(fresh_hl7) == len(hl7) and set(fresh_hl7.values()) == {1}
