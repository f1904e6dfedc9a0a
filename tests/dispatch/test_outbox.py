"""The outbox and its workers: idempotent queuing, leases, retries, dead letters, the journal.

The destination here is a scripted :class:`Sender` written for the test (the role httpx's
MockTransport plays); the outbox, plan and worker are crbio's real code on a real SQLite file
and, for each test that takes ``outbox_table``, again on a real PostgreSQL server (see
``pg_server``). The protocol senders are tested against the simulators elsewhere.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import pytest

from crbio.dispatch import (
    Acknowledgement,
    Channel,
    DispatchConfig,
    Job,
    Outbox,
    Sender,
    SenderContext,
    Worker,
    plan_dispatch,
)
from crbio.dispatch.api import delete, dispatch
from crbio.dispatch.outbox_backends import open_outbox
from crbio.documents.build import Documents, build
from crbio.documents.context import BuildContext
from crbio.errors import OutboxError, PermanentSendError, TransientSendError
from crbio.model import Report

# The PostgreSQL server and the per-backend outbox table (a dispatch conftest would shadow the root one).
pytest_plugins = ["pg_server"]

Outcome = Callable[[Job], Acknowledgement]


class ScriptedDestination(Sender):
    """A destination whose answers the test scripts, per delivery key, and which records jobs."""

    channel = Channel.DMP

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.script: dict[str, list[Outcome]] = {}
        self.already: set[str] = set()
        self.lock = threading.Lock()

    @classmethod
    def from_config(cls, section: Mapping[str, Any], context: SenderContext) -> Self:
        return cls()

    def send(self, job: Job) -> Acknowledgement:
        with self.lock:
            self.jobs.append(job)
            outcomes = self.script.get(job.key)
            outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            return outcome(job)
        return Acknowledgement("ok", {"message_id": job.message_id, "entry_uuid": f"urn:uuid:{job.key[:8]}"})

    def find_delivered(self, job: Job) -> Acknowledgement | None:
        return Acknowledgement("found", {"message_id": job.message_id}) if job.key in self.already else None


def transient(reason: str = "XDSRegistryBusy", **detail: Any) -> Outcome:
    def fail(job: Job) -> Acknowledgement:
        raise TransientSendError("busy", reason=reason, detail=detail)

    return fail


def permanent(reason: str) -> Outcome:
    def fail(job: Job) -> Acknowledgement:
        raise PermanentSendError("refused", reason=reason)

    return fail


def crash(job: Job) -> Acknowledgement:
    raise RuntimeError("sender bug")


def make_config(outbox: Callable[..., dict[str, Any]], **retry: Any) -> DispatchConfig:
    return DispatchConfig.from_mapping(
        {
            "laboratory": {
                "finess": "920000015",
                "name": "Laboratoire des Charmes",
                "oid": "1.2.250.1.999.1",
            },
            "outbox": outbox(lease_seconds=30),
            "retry": {"initial_delay": 0.01, "max_delay": 0.05, "max_attempts": 4, **retry},
            "destinations": {"dmp": {}, "mssante": {}, "hl7v2": {"name": "pfi"}},
        }
    )


@pytest.fixture
def documents(sample_report: Callable[[str], Report], context: BuildContext) -> Documents:
    return build(sample_report("01-biochimie.json"), context=context, validate=False)


@pytest.fixture
def destination() -> ScriptedDestination:
    return ScriptedDestination()


def worker(config: DispatchConfig, destination: ScriptedDestination, **kwargs: Any) -> Worker:
    return Worker(config, senders={c: destination for c in Channel}, **kwargs)


def test_queuing_is_idempotent_and_keeps_the_suppressions(
    tmp_path: Path, outbox_table: Callable[..., dict[str, Any]], documents: Documents
) -> None:
    config = make_config(outbox_table)
    first = dispatch(documents, config)
    assert len(first.queued) == 4 and not first.already_queued
    again = dispatch(documents, config)
    assert not again.queued and set(again.already_queued) == set(first.queued)
    with open_outbox(config) as outbox:
        assert outbox.counts() == {"queued": 4}
        assert outbox.document(documents.document_id) == (documents.n3, documents.pdf)


def test_a_worker_delivers_and_the_journal_tells_who_got_what(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    result = dispatch(documents, config)
    with worker(config, destination) as w:
        stats = w.run(drain=True)
    assert stats.acknowledged == 4 and len(destination.jobs) == 4
    assert {j.n3 for j in destination.jobs} == {documents.n3}
    with open_outbox(config) as outbox:
        lines = outbox.transmissions(document_id=documents.document_id)
        assert {t.state for t in lines} == {"acknowledged"}
        assert {t.channel for t in lines} == {"dmp", "mssante", "hl7v2"}
        assert all(t.queued_at <= (t.sent_at or "") <= (t.acknowledged_at or "") for t in lines)
        assert all(t.ack_detail and t.ack_detail["message_id"] for t in lines)
        events = outbox.events(result.queued[0])
        assert [e["event"] for e in events] == ["queued", "sending", "acknowledged"]


def test_transient_failures_are_retried_with_backoff_then_acknowledged(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    result = dispatch(documents, config)
    key = result.queued[0]
    destination.script[key] = [transient(), transient("HTTP 503")]
    with worker(config, destination) as w:
        w.run(drain=True)
    with open_outbox(config) as outbox:
        events = [e["event"] for e in outbox.events(key)]
        assert events == [
            "queued",
            "sending",
            "retry-scheduled",
            "sending",
            "retry-scheduled",
            "sending",
            "acknowledged",
        ]
        retry = outbox.events(key)[2]["detail"]
        assert retry["reason"] == "dispatch.transient: XDSRegistryBusy" and retry["retry_in"] > 0
        assert outbox.counts() == {"acknowledged": 4}


def test_a_server_retry_after_hint_is_honoured(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    key = dispatch(documents, config).queued[0]
    destination.script[key] = [transient("HTTP 429", retry_after=30)]
    with worker(config, destination) as w:
        w.run_once()
    with open_outbox(config) as outbox:
        detail = outbox.events(key)[2]["detail"]
        assert detail["retry_in"] >= 30
        assert outbox.next_due() is not None and outbox.next_due() > time.time() + 25  # type: ignore[operator]


def test_permanent_failures_go_to_the_dead_letter_with_the_reason(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    key = dispatch(documents, config).queued[0]
    destination.script[key] = [permanent("XDSUnknownPatientId")]
    with worker(config, destination) as w:
        stats = w.run(drain=True)
    assert stats.dead == 1 and stats.acknowledged == 3
    with open_outbox(config) as outbox:
        dead = outbox.transmissions(state="dead")
        assert len(dead) == 1 and dead[0].last_error == "dispatch.permanent: XDSUnknownPatientId"
        assert dead[0].attempts == 1 and dead[0].dead_at


def test_retries_end_after_max_attempts(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table, max_attempts=3)
    key = dispatch(documents, config).queued[0]
    destination.script[key] = [transient()] * 5
    with worker(config, destination) as w:
        w.run(drain=True)
    with open_outbox(config) as outbox:
        (dead,) = outbox.transmissions(state="dead")
        assert dead.attempts == 3 and dead.last_error.startswith("gave up after 3 attempts")  # type: ignore[union-attr]


def test_a_sender_bug_does_not_lose_the_delivery(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    key = dispatch(documents, config).queued[0]
    destination.script[key] = [crash]
    with worker(config, destination) as w:
        w.run(drain=True)
    with open_outbox(config) as outbox:
        assert outbox.states([key]) == {key: "acknowledged"}
        assert outbox.events(key)[2]["detail"]["reason"] == "dispatch.sender-bug: RuntimeError"


def test_an_expired_lease_is_reclaimed_in_doubt_and_not_sent_twice(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    dispatch(documents, config)
    with open_outbox(config, lease_seconds=0.05) as dying:
        (claim,) = dying.claim("dead-worker", limit=1)
    time.sleep(0.1)  # the worker "died" holding the lease; the lease expires
    destination.already.add(claim.delivery.key)  # it had reached the destination
    with worker(config, destination) as w:
        stats = w.run(drain=True)
    assert stats.recovered == 1 and stats.acknowledged == 4
    assert claim.delivery.key not in {j.key for j in destination.jobs}
    with open_outbox(config) as outbox:
        events = outbox.events(claim.delivery.key)
        assert [e["event"] for e in events] == ["queued", "sending", "sending", "recovered"]
        assert events[2]["detail"] == {"in_doubt": True}
        # The dead worker's late acknowledgement is refused: the lease is no longer its own.
        assert not outbox.acknowledge(claim, Acknowledgement("late"))


def test_a_replacement_waits_for_the_delivery_of_the_version_it_replaces(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    sample_report: Callable[[str], Report],
    context: BuildContext,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    v1 = build(sample_report("08a-diabete-v1.json"), context=context, validate=False)
    v2 = build(sample_report("08b-diabete-v2.json"), context=context, validate=False)
    first = dispatch(v1, config)
    second = dispatch(v2, config)
    with open_outbox(config) as outbox:
        claimed = outbox.claim("w", limit=100)
        assert {c.delivery.key for c in claimed} == set(first.queued)
        for claim in claimed:
            outbox.acknowledge(claim, Acknowledgement("ok"))
        assert {c.delivery.key for c in outbox.claim("w", limit=100)} == set(second.queued)


def test_concurrent_claims_never_overlap(
    tmp_path: Path, outbox_table: Callable[..., dict[str, Any]], documents: Documents, sample_report: Any
) -> None:
    config = make_config(outbox_table)
    plan = plan_dispatch(documents.report, config)
    with open_outbox(config) as outbox:
        outbox.store_document(
            document_id=documents.document_id,
            set_id="1.2.3",
            version=1,
            replaces=None,
            confidentiality=["N"],
            n3=documents.n3,
            pdf=documents.pdf,
        )
        from dataclasses import replace

        many = replace(
            plan,
            deliveries=tuple(
                replace(d, recipient=replace(d.recipient, address=f"{i}.{d.recipient.address}"))
                for i in range(100)
                for d in plan.deliveries
            ),
        )
        outbox.enqueue(many, {c: "x" for c in Channel})
    claimed: list[list[int]] = [[] for _ in range(4)]

    def claim_all(slot: int) -> None:
        with open_outbox(config) as own:
            while batch := own.claim(f"w{slot}", limit=3):
                claimed[slot].extend(c.row_id for c in batch)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [row for rows in claimed for row in rows]
    assert len(everything) == len(set(everything)) == 400


def test_deletion_is_queued_for_every_acknowledged_recipient(
    tmp_path: Path,
    outbox_table: Callable[..., dict[str, Any]],
    documents: Documents,
    destination: ScriptedDestination,
) -> None:
    config = make_config(outbox_table)
    dispatch(documents, config)
    with worker(config, destination) as w:
        w.run(drain=True)
    result = delete(documents.document_id, config)
    assert len(result.queued) == 4
    with worker(config, destination) as w:
        w.run(drain=True)
    deletions = [j for j in destination.jobs if j.delivery.action.value == "delete"]
    assert len(deletions) == 4
    dmp = next(j for j in deletions if j.delivery.channel is Channel.DMP)
    assert dmp.previous is not None and dmp.previous["entry_uuid"].startswith("urn:uuid:")


# -- a damaged or foreign outbox file at start-up (SQLite) -------------------------------------------


@pytest.fixture
def outbox_file(tmp_path: Path, documents: Documents) -> tuple[DispatchConfig, bytes]:
    """A real outbox file with deliveries in it, closed (its log checkpointed), and its bytes."""
    config = make_config(lambda **more: {"path": str(tmp_path / "outbox.sqlite"), **more})
    dispatch(documents, config)
    assert not Path(f"{config.outbox_path}-wal").exists()
    return config, config.outbox_path.read_bytes()


def refused(config: DispatchConfig, capsys: pytest.CaptureFixture[str], match: str) -> str:
    """Assert the outbox is refused by the library and by two commands, the file left as it was."""
    before = config.outbox_path.read_bytes()
    with pytest.raises(OutboxError, match=match) as error:
        open_outbox(config)
    message = str(error.value)
    assert str(config.outbox_path) in message and "\n" not in message
    toml = config.outbox_path.parent / "crbio.toml"
    toml.write_text(
        '[laboratory]\nfiness = "920000015"\nname = "Laboratoire des Charmes"\noid = "1.2.250.1.999.1"\n'
        f'[outbox]\npath = "{config.outbox_path}"\n[destinations.dmp]\n',
        "utf-8",
    )
    from crbio.cli import main

    for command in (["worker", "--drain"], ["journal"], ["journal", "--verify"]):
        assert main([*command, "--config", str(toml)]) == 2
        captured = capsys.readouterr()
        (line,) = captured.err.strip().splitlines()
        assert line.startswith(f"crbio: {config.outbox_path}: ") and "Traceback" not in captured.err
    assert config.outbox_path.read_bytes() == before  # never re-initialised over the user's data
    return message


@pytest.mark.parametrize(
    ("where", "match"),
    [
        (lambda size: 100, "truncated"),  # the header only
        (lambda size: 4096, "truncated"),  # the first page
        (lambda size: 4096 * 3 + 1000, "truncated"),  # in the middle of a page
        (lambda size: size // 2 // 4096 * 4096, "truncated"),  # whole pages, half of them
        (lambda size: size - 1, "truncated"),
        (lambda size: 40, "not an SQLite database"),  # less than the header
    ],
)
def test_a_truncated_outbox_is_refused_naming_the_file(
    outbox_file: tuple[DispatchConfig, bytes],
    capsys: pytest.CaptureFixture[str],
    where: Callable[[int], int],
    match: str,
) -> None:
    config, data = outbox_file
    config.outbox_path.write_bytes(data[: where(len(data))])
    refused(config, capsys, match)


def test_an_empty_outbox_file_is_refused_not_recreated(
    outbox_file: tuple[DispatchConfig, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    # A zero-byte file is what a truncation leaves: SQLite would read it as an empty database
    # and crbio would forget every delivery made. crbio never leaves an empty outbox (it is
    # created beside and linked into place complete), so an empty file is refused.
    config, _ = outbox_file
    config.outbox_path.write_bytes(b"")
    assert "empty (0 bytes)" in refused(config, capsys, "empty")
    config.outbox_path.unlink()  # what the message says to do to start afresh
    with open_outbox(config) as outbox:
        assert outbox.counts() == {}


@pytest.mark.parametrize("seed", range(6))
def test_overwritten_pages_are_detected(
    outbox_file: tuple[DispatchConfig, bytes], capsys: pytest.CaptureFixture[str], seed: int
) -> None:
    import random

    config, data = outbox_file
    rng = random.Random(seed)
    pages = len(data) // 4096
    damaged = bytearray(data)
    for page in rng.sample(range(1, pages), 3):  # never page 0: its header is another test
        damaged[page * 4096 : (page + 1) * 4096] = rng.randbytes(4096)
    config.outbox_path.write_bytes(bytes(damaged))
    refused(config, capsys, "corrupted|malformed|not a usable")


def test_a_damaged_write_ahead_log_is_refused_not_silently_rolled_back(
    tmp_path: Path, documents: Documents, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(lambda **more: {"path": str(tmp_path / "live" / "outbox.sqlite"), **more})
    with open_outbox(config) as outbox:
        dispatch(documents, config, outbox=outbox)
        # The log starts empty.
        outbox._sql.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
        for claim in outbox.claim("w", limit=10):  # then four committed acknowledgements, and more
            outbox.acknowledge(claim, Acknowledgement("ok"))
        # What a crash leaves: the file and its log, as they are while the outbox is open.
        copy = make_config(lambda **more: {"path": str(tmp_path / "outbox.sqlite"), **more})
        shutil.copyfile(config.outbox_path, copy.outbox_path)
        wal = Path(f"{copy.outbox_path}-wal")
        shutil.copyfile(f"{config.outbox_path}-wal", wal)
    log = bytearray(wal.read_bytes())
    assert len(log) > 32 + 5 * (24 + 4096)
    with open_outbox(copy) as intact:  # the log as written is replayed: nothing lost
        assert intact.counts() == {"acknowledged": 4}
        assert intact.verify_journal().ok
    wal.write_bytes(bytes(log))  # (closing checkpointed and removed it)
    log[32 + 24 + 100] ^= 0xFF  # one byte of the first frame's page
    wal.write_bytes(bytes(log))
    message = refused(copy, capsys, "write-ahead log")
    assert "damaged at frame 1" in message and "would be silently lost" in message


def test_a_file_that_is_not_an_outbox_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(lambda **more: {"path": str(tmp_path / "outbox.sqlite"), **more})
    config.outbox_path.write_bytes(b"this is not a database at all" * 1000)
    refused(config, capsys, "not an SQLite database")


@pytest.mark.parametrize(
    ("statements", "match"),
    [
        (["CREATE TABLE patients (id)"], "not a crbio outbox"),
        # Another application's tables, with a meta table that even says schema 1.
        (
            [
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
                "INSERT INTO meta VALUES ('schema', '1')",
            ],
            "not a crbio outbox",
        ),
        (["PRAGMA application_id = 1196444237", "CREATE TABLE features (id)"], "another application"),
        ([], "empty SQLite database"),
    ],
)
def test_an_sqlite_database_of_another_application_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statements: list[str], match: str
) -> None:
    config = make_config(lambda **more: {"path": str(tmp_path / "outbox.sqlite"), **more})
    db = sqlite3.connect(config.outbox_path)
    db.execute("PRAGMA user_version = 7")  # a database with a header, even without tables
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    refused(config, capsys, match)


def test_processes_starting_together_on_a_new_outbox_all_open_it(tmp_path: Path) -> None:
    # A new outbox is created complete and linked into place: a process starting at the same
    # moment never sees an empty file (which would be refused).
    import subprocess
    import sys

    path = tmp_path / "new" / "outbox.sqlite"
    code = (
        "import sys\nfrom crbio.dispatch import Outbox\n"
        "with Outbox(sys.argv[1]) as o:\n    print(o.counts())\n"
    )
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    results = [(p.wait(timeout=60), p.communicate()) for p in starters]
    assert [rc for rc, _ in results] == [0] * 6, [err for _, (_, err) in results]
    assert sorted(p.name for p in path.parent.iterdir()) == ["outbox.sqlite"]
    with Outbox(path) as outbox:
        assert outbox.verify_journal().ok
